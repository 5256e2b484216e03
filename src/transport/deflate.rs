//! permessage-deflate (RFC 7692) for the WebSocket transport: the offer and
//! response of the opening handshake, and the per-connection compressor and
//! decompressor (raw DEFLATE on zlib-rs, through flate2).
//!
//! Memory: a compressor with a window of 2^w bytes holds about 2^(w+2) +
//! 128 KiB, a decompressor about 2^w + 7 KiB (zlib's figures for memLevel 8).
//! [`Params::memory`] is that estimate; the connection charges it to the
//! router-wide budget `limits.max_deflate_memory` and declines the extension
//! when the budget is spent.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// A listener's `[listener.deflate]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
    /// The largest window (9..=15 bits) the router compresses with or lets
    /// its clients compress with.
    pub max_window_bits: u8,
    /// False: every message is compressed on its own, and clients are asked
    /// to do the same (`*_no_context_takeover`).
    pub context_takeover: bool,
    /// zlib's compression level, 1 (fastest) to 9.
    pub level: u32,
}

/// What one connection negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The window the router compresses with (8 is compressed as 9 bits,
    /// messages of at most 256 bytes only, each on its own: zlib cannot
    /// write a 256-byte window).
    pub server_bits: u8,
    /// The window the client compresses with.
    pub client_bits: u8,
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
}

impl Params {
    /// Estimated bytes of compressor and decompressor state.
    pub fn memory(&self) -> usize {
        let s = self.server_bits.max(9) as u32;
        (1usize << (s + 2)) + (128 << 10) + (1usize << self.client_bits as u32) + (7 << 10)
    }
}

/// The parameters of one offer.
#[derive(Debug, Default)]
struct Offer {
    server_bits: Option<u8>,
    /// Offered, with or without a value.
    client_bits: Option<Option<u8>>,
    server_nct: bool,
    client_nct: bool,
}

/// One offer's parameters, or `None` when the offer cannot be accepted
/// (an unknown or repeated parameter, a bad value).
fn parse_offer(params: &[&str]) -> Option<Offer> {
    let (mut server_bits, mut client_bits, mut server_nct, mut client_nct) = (None, None, false, false);
    for p in params {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p.trim(), None),
        };
        let bits = |v: Option<&str>| -> Option<u8> { v?.parse::<u8>().ok().filter(|b| (8..=15).contains(b)) };
        match name {
            "server_no_context_takeover" if value.is_none() && !server_nct => server_nct = true,
            "client_no_context_takeover" if value.is_none() && !client_nct => client_nct = true,
            "server_max_window_bits" if server_bits.is_none() => server_bits = Some(bits(value)?),
            "client_max_window_bits" if client_bits.is_none() => {
                client_bits = Some(match value {
                    None => None,
                    v => Some(bits(v)?),
                })
            }
            _ => return None,
        }
    }
    Some(Offer {
        server_bits,
        client_bits,
        server_nct,
        client_nct,
    })
}

/// Picks the first offer of `Sec-WebSocket-Extensions` values (in order)
/// that this listener can accept; returns what was negotiated and the
/// response header value.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>, ours: &Settings) -> Option<(Params, String)> {
    for offer in values.into_iter().flat_map(|v| v.split(',')) {
        let mut parts = offer.split(';').map(str::trim);
        if parts.next() != Some("permessage-deflate") {
            continue;
        }
        let params: Vec<&str> = parts.filter(|p| !p.is_empty()).collect();
        let Some(Offer {
            server_bits,
            client_bits,
            server_nct,
            client_nct,
        }) = parse_offer(&params)
        else {
            continue;
        };
        let max = ours.max_window_bits.clamp(9, 15);
        let p = Params {
            server_bits: server_bits.map_or(max, |b| b.min(max)),
            // a client that did not offer client_max_window_bits may use 15
            client_bits: match client_bits {
                Some(b) => b.unwrap_or(15).min(max),
                None => 15,
            },
            server_no_context_takeover: server_nct || !ours.context_takeover,
            client_no_context_takeover: client_nct || !ours.context_takeover,
        };
        let mut header = String::from("permessage-deflate");
        if p.server_no_context_takeover {
            header.push_str("; server_no_context_takeover");
        }
        if p.client_no_context_takeover {
            header.push_str("; client_no_context_takeover");
        }
        if server_bits.is_some() || p.server_bits < 15 {
            header.push_str(&format!("; server_max_window_bits={}", p.server_bits));
        }
        if client_bits.is_some() {
            header.push_str(&format!("; client_max_window_bits={}", p.client_bits));
        }
        return Some((p, header));
    }
    None
}

/// The four octets a sync flush ends with, which permessage-deflate leaves
/// off each message (RFC 7692 7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Decompresses the messages a client sends.
pub struct Inflater {
    d: Decompress,
    no_context_takeover: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inflater")
    }
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The compressed data is not valid DEFLATE.
    Invalid,
    /// It inflates to more than the limit.
    TooBig,
}

impl Inflater {
    pub fn new(p: &Params) -> Self {
        Inflater {
            // a window at least as large as the client's reads its data
            d: Decompress::new_with_window_bits(false, p.client_bits.max(9)),
            no_context_takeover: p.client_no_context_takeover,
        }
    }

    /// Inflates one message; at most `max` bytes come out.
    pub fn inflate(&mut self, data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::with_capacity((data.len() * 3).clamp(256, 64 << 10));
        let mut ended = false;
        'input: for input in [data, &TAIL[..]] {
            let mut pos = 0;
            loop {
                // room to write, growing with what came out so far (at most
                // 1 MiB past the limit)
                if out.capacity() - out.len() < 256 {
                    out.reserve(out.len().clamp(4096, 1 << 20));
                }
                let (in0, out0) = (self.d.total_in(), self.d.total_out());
                let result = self.d.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
                let status = result.map_err(|_| {
                    self.d.reset(false);
                    InflateError::Invalid
                })?;
                pos += (self.d.total_in() - in0) as usize;
                if out.len() > max {
                    self.d.reset(false);
                    return Err(InflateError::TooBig);
                }
                if status == Status::StreamEnd {
                    // a final block (BFINAL): the stream starts anew
                    ended = true;
                    break 'input;
                }
                let produced = self.d.total_out() != out0;
                if !produced && (pos == input.len() || self.d.total_in() == in0) {
                    break;
                }
            }
        }
        if self.no_context_takeover || ended {
            self.d.reset(false);
        }
        Ok(out)
    }
}

/// Compresses the messages the router sends.
pub struct Deflater {
    c: Compress,
    threshold: usize,
    /// Each message on its own (negotiated, or a 256-byte window).
    no_context_takeover: bool,
    /// The largest message compressed (a 256-byte window: 256).
    max_len: usize,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deflater")
    }
}

impl Deflater {
    pub fn new(p: &Params, threshold: usize, level: u32) -> Self {
        let small = p.server_bits < 9;
        Deflater {
            c: Compress::new_with_window_bits(Compression::new(level.clamp(1, 9)), false, p.server_bits.max(9)),
            threshold,
            no_context_takeover: p.server_no_context_takeover || small,
            max_len: if small { 256 } else { usize::MAX },
        }
    }

    /// Appends the compressed form of `msg` to `out` and returns true, or
    /// returns false (nothing appended) when `msg` goes out as it is.
    pub fn compress(&mut self, msg: &[u8], out: &mut Vec<u8>) -> bool {
        if msg.len() < self.threshold || msg.len() > self.max_len {
            return false;
        }
        let start = out.len();
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve((msg.len() - pos) / 2 + 256);
            }
            let before = self.c.total_in();
            if self.c.compress_vec(&msg[pos..], out, FlushCompress::Sync).is_err() {
                out.truncate(start);
                self.c.reset();
                return false;
            }
            pos += (self.c.total_in() - before) as usize;
            // everything in, and the flush fitted with room to spare
            if pos == msg.len() && out.capacity() - out.len() >= 64 {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.no_context_takeover {
            self.c.reset();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            threshold: 0,
            max_window_bits: 15,
            context_takeover: true,
            level: 2,
        }
    }

    #[test]
    fn negotiates_rfc7692_offers() {
        let n = |h: &str| negotiate([h], &settings()).map(|(_, r)| r);
        assert_eq!(n("permessage-deflate").as_deref(), Some("permessage-deflate"));
        assert_eq!(
            n("permessage-deflate; client_max_window_bits").as_deref(),
            Some("permessage-deflate; client_max_window_bits=15")
        );
        assert_eq!(
            n("permessage-deflate; server_max_window_bits=10; client_no_context_takeover").as_deref(),
            Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=10")
        );
        // the first acceptable offer wins; bad ones are passed over
        assert_eq!(
            n("permessage-deflate; server_max_window_bits=7, permessage-deflate; foo, x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover").as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
        assert_eq!(
            n("permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
            None
        );
        assert_eq!(n("permessage-deflate; client_no_context_takeover=1"), None);
        assert_eq!(n("x-webkit-deflate-frame"), None);
        // the listener's own limits
        let small = Settings {
            threshold: 0,
            max_window_bits: 10,
            context_takeover: false,
            level: 2,
        };
        let (p, h) = negotiate(["permessage-deflate; client_max_window_bits"], &small).unwrap();
        assert_eq!(
            h,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=10"
        );
        assert_eq!((p.server_bits, p.client_bits), (10, 10));
        assert!(p.memory() < (1 << 18));
    }

    #[test]
    fn round_trips_with_and_without_context_takeover() {
        for (nct, bits) in [(false, 15), (true, 15), (false, 9), (true, 8)] {
            let p = Params {
                server_bits: bits,
                client_bits: bits,
                server_no_context_takeover: nct,
                client_no_context_takeover: nct,
            };
            let mut d = Deflater::new(&p, 0, 2);
            let mut i = Inflater::new(&p);
            for n in [10usize, 200, 250, 5000] {
                let msg: Vec<u8> = (0..n).map(|k| b"abcabcabd"[k % 9]).collect();
                let mut out = Vec::new();
                let compressed = d.compress(&msg, &mut out);
                assert_eq!(compressed, bits > 8 || n <= 256, "{bits} {n}");
                if compressed {
                    assert!(!out.ends_with(&TAIL));
                    assert_eq!(i.inflate(&out, 1 << 20).unwrap(), msg);
                }
            }
        }
    }

    #[test]
    fn inflation_is_bounded_and_garbage_refused() {
        let p = Params {
            server_bits: 15,
            client_bits: 15,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
        };
        let mut d = Deflater::new(&p, 0, 2);
        let mut out = Vec::new();
        assert!(d.compress(&vec![b'a'; 100_000], &mut out));
        assert!(out.len() < 1000);
        assert_eq!(Inflater::new(&p).inflate(&out, 65536), Err(InflateError::TooBig));
        assert_eq!(Inflater::new(&p).inflate(&out, 100_000).unwrap().len(), 100_000);
        assert_eq!(Inflater::new(&p).inflate(&[0xff, 0xff, 0xff], 1000), Err(InflateError::Invalid));
    }
}

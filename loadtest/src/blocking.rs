//! The reference floor: the plainest client and forwarder there are, on
//! blocking sockets. One OS thread per endpoint sits in `read(2)` and is
//! woken by the kernel the moment bytes arrive; there is no executor, no
//! io_uring, no timer and no task switch between the socket and the code.
//! `loadtest ceiling --client blocking` runs the ping-pong (or RPC) pair on
//! these threads, `--forwarder blocking` forwards on them, so the glommio
//! client and forwarder can be held against what the kernel itself costs.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::run::{new_hist, now_ns, Shared};

/// Pins the calling thread to `cpu` (best effort: a failure leaves it
/// where it was).
fn pin_to(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        let _ = switchyard::shard::pin_current_thread(cpu);
    }
}

/// Reads RawSocket frames off a blocking socket, as few `read(2)` calls as
/// the kernel allows.
struct Frames {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    at: usize,
}

impl Frames {
    fn new() -> Frames {
        Frames {
            buf: Vec::with_capacity(64 * 1024),
            at: 0,
        }
    }

    /// Length of the complete frame (header included) at the front, if any.
    fn complete(&self) -> Option<usize> {
        let b = &self.buf[self.at..];
        if b.len() < 4 {
            return None;
        }
        let len = 4 + (usize::from(b[1]) << 16 | usize::from(b[2]) << 8 | usize::from(b[3]));
        (b.len() >= len).then_some(len)
    }

    /// Reads until at least one complete frame is buffered. `Ok(false)` on
    /// a clean end of stream; a read timeout comes back as its error.
    fn fill(&mut self, s: &mut TcpStream) -> io::Result<bool> {
        while self.complete().is_none() {
            if self.at > 0 {
                // keep only the unread part of a frame
                self.buf.drain(..self.at);
                self.at = 0;
            }
            let start = self.buf.len();
            self.buf.resize(start + 64 * 1024, 0);
            let n = match s.read(&mut self.buf[start..]) {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            };
            self.buf.truncate(start + n);
            if n == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every complete frame buffered, as one slice.
    fn take_all(&mut self) -> &[u8] {
        let from = self.at;
        while let Some(n) = self.complete() {
            self.at += n;
        }
        &self.buf[from..self.at]
    }

    /// The next complete frame's body.
    fn take_one(&mut self) -> Option<&[u8]> {
        let n = self.complete()?;
        let from = self.at;
        self.at += n;
        Some(&self.buf[from + 4..from + n])
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    // RawSocket handshake: MessagePack, the largest frames
    s.write_all(&[0x7f, 0xf2, 0, 0])?;
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply)?;
    if reply[0] != 0x7f || reply[1] & 0x0f == 0 {
        return Err(io::Error::other("RawSocket handshake refused"));
    }
    Ok(s)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// One frame of `size` body bytes carrying its send time and sequence.
fn frame(out: &mut Vec<u8>, size: usize, ts: u64, seq: u64) {
    let len = size.max(16);
    out.extend_from_slice(&[0, (len >> 16) as u8, (len >> 8) as u8, len as u8]);
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.resize(out.len() + len - 16, b'x');
}

/// Waits on the calling thread until the load may start.
fn wait_go(shared: &Shared) -> bool {
    while !shared.go.load(Ordering::Acquire) {
        if shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// The ping-pong pair on two blocking threads pinned to `cpu`: A sends
/// frames of `size` bytes, `window` in flight, B echoes, A records each
/// round trip. Returns the threads; A's gives the histogram.
pub fn pingpong_pair(
    addr: SocketAddr,
    shared: Arc<Shared>,
    size: usize,
    window: u64,
    cpu: Option<usize>,
) -> Vec<JoinHandle<Histogram<u64>>> {
    let pair = connect(addr).and_then(|a| Ok((a, connect(addr)?)));
    shared.ready.fetch_add(2, Ordering::AcqRel);
    let (mut a, mut b) = match pair {
        Ok(p) => p,
        Err(e) => {
            shared.fail(format!("ceiling (blocking client): {e}"));
            return Vec::new();
        }
    };
    // a short read timeout so that neither thread waits past the run
    let _ = a.set_read_timeout(Some(Duration::from_millis(20)));
    let _ = b.set_read_timeout(Some(Duration::from_millis(20)));
    let sh = shared.clone();
    let echo = std::thread::spawn(move || {
        pin_to(cpu);
        let mut frames = Frames::new();
        if !wait_go(&sh) {
            return new_hist();
        }
        loop {
            match frames.fill(&mut b) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if is_timeout(&e) && !sh.done.load(Ordering::Relaxed) => continue,
                Err(_) => break,
            }
            if b.write_all(frames.take_all()).is_err() {
                break;
            }
        }
        new_hist()
    });
    let caller = std::thread::spawn(move || {
        pin_to(cpu);
        let mut hist = new_hist();
        let mut frames = Frames::new();
        let mut out = Vec::with_capacity(64 * 1024);
        if !wait_go(&shared) {
            return hist;
        }
        let (mut seq, mut outstanding) = (0u64, 0u64);
        while !shared.stop.load(Ordering::Relaxed) {
            out.clear();
            while outstanding < window {
                seq += 1;
                outstanding += 1;
                frame(&mut out, size, now_ns(), seq);
                shared.sent.add(1);
            }
            if !out.is_empty() && a.write_all(&out).is_err() {
                break;
            }
            match frames.fill(&mut a) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if is_timeout(&e) => continue,
                Err(_) => break,
            }
            let now = now_ns();
            while let Some(body) = frames.take_one() {
                let mut t = [0u8; 8];
                t.copy_from_slice(&body[..8]);
                let sent = u64::from_be_bytes(t);
                if shared.in_window(sent) {
                    let _ = hist.record(now.saturating_sub(sent).max(1));
                }
                outstanding = outstanding.saturating_sub(1);
                shared.received.add(1);
            }
        }
        hist
    });
    vec![caller, echo]
}

/// A null forwarder on blocking sockets: connections are paired in the
/// order they arrive (A, B), and one thread per direction copies every
/// complete frame from one to the other. Threads are pinned to `cpu` and
/// end with the process.
pub fn start_forwarder(cpu: Option<usize>) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("forwarder cannot listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("ceiling-forwarder".into())
        .spawn(move || {
            pin_to(cpu);
            let _ = tx.send(());
            let mut waiting: Option<TcpStream> = None;
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let _ = s.set_nodelay(true);
                let mut hs = [0u8; 4];
                if s.read_exact(&mut hs).is_err() || s.write_all(&[0x7f, 0xf0 | (hs[1] & 0x0f), 0, 0]).is_err() {
                    continue;
                }
                match waiting.take() {
                    None => waiting = Some(s),
                    Some(first) => {
                        for (from, to) in [(first.try_clone(), s.try_clone()), (Ok(s), Ok(first))] {
                            if let (Ok(from), Ok(to)) = (from, to) {
                                let _ = std::thread::Builder::new().name("forward".into()).spawn(move || {
                                    pin_to(cpu);
                                    copy_frames(from, to)
                                });
                            }
                        }
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the forwarder: {e}"))?;
    rx.recv().map_err(|_| "forwarder thread died".to_string())?;
    Ok(addr)
}

fn copy_frames(mut from: TcpStream, mut to: TcpStream) {
    let mut frames = Frames::new();
    while let Ok(true) = frames.fill(&mut from) {
        if to.write_all(frames.take_all()).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_join() {
        let mut out = Vec::new();
        frame(&mut out, 20, 7, 1);
        frame(&mut out, 16, 9, 2);
        let mut f = Frames::new();
        f.buf.extend_from_slice(&out[..10]);
        assert!(f.complete().is_none());
        f.buf.extend_from_slice(&out[10..]);
        assert_eq!(f.complete(), Some(24));
        let one = f.take_one().expect("first").to_vec();
        assert_eq!(one.len(), 20);
        assert_eq!(&one[..8], &7u64.to_be_bytes());
        assert_eq!(f.take_all().len(), 20);
        assert!(f.take_one().is_none());
    }

    #[test]
    fn pingpong_through_the_blocking_forwarder() {
        let addr = start_forwarder(None).expect("forwarder");
        let shared = Shared::new(1);
        shared.window_start.store(0, Ordering::SeqCst);
        let threads = pingpong_pair(addr, shared.clone(), 32, 4, None);
        assert_eq!(threads.len(), 2);
        shared.go.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while shared.received.get() < 200 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        shared.stop.store(true, Ordering::SeqCst);
        shared.done.store(true, Ordering::SeqCst);
        let mut recorded = 0;
        for t in threads {
            recorded += t.join().expect("thread").len();
        }
        assert!(recorded >= 200, "{recorded} round trips recorded");
        assert!(shared.sent.get() >= shared.received.get());
    }
}

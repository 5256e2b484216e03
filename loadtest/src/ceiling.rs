//! The physical ceiling: a null forwarder over loopback that moves frames of
//! the same size and batching as the router, with no routing logic. Clients
//! connect in pairs (A, B): every RawSocket frame A sends is written to B and
//! the other way round. A pub/sub run sends from A and counts at B; a
//! ping-pong run sends from A, B echoes, and A measures the round trip, the
//! same two loopback hops a routed call takes.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use switchyard::session::outbox::{Outbox, Outgoing};

use crate::client::{self, Reader, Target, Writer};
use crate::run::{now_ns, record, Hist, Shared};

/// Starts the forwarder on its own thread (pinned to `cpu` when given,
/// spinning `spin_us` before it parks, as a shard with that
/// `router.spin_before_park_us` does) and returns its address. The thread
/// ends with the process.
pub fn start_forwarder(cpu: Option<usize>, spin_us: u64) -> Result<SocketAddr, String> {
    let (tx, rx) = mpsc::channel();
    let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
    LocalExecutorBuilder::new(placement)
        .name("ceiling-forwarder")
        .preempt_timer(Duration::from_micros(500))
        .spin_before_park(Duration::from_micros(spin_us))
        .spawn(move || async move {
            let _kicked = crate::run::watchdog().map(|w| w.register());
            let listener = match TcpListener::bind("127.0.0.1:0") {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(format!("forwarder cannot listen: {e}")));
                    return;
                }
            };
            let _ = tx.send(listener.local_addr().map_err(|e| e.to_string()));
            let mut waiting: Option<Rc<RefCell<Option<Rc<Outbox>>>>> = None;
            let mut waiting_out: Option<Rc<Outbox>> = None;
            while let Ok(stream) = listener.accept().await {
                let stream = stream;
                let mine = Rc::new(Outbox::new(usize::MAX));
                let peer_slot: Rc<RefCell<Option<Rc<Outbox>>>> = Rc::new(RefCell::new(None));
                match (waiting.take(), waiting_out.take()) {
                    (Some(first_slot), Some(first_out)) => {
                        // pair: first -> mine, mine -> first
                        *first_slot.borrow_mut() = Some(mine.clone());
                        *peer_slot.borrow_mut() = Some(first_out);
                    }
                    _ => {
                        waiting = Some(peer_slot.clone());
                        waiting_out = Some(mine.clone());
                    }
                }
                glommio::spawn_local(forward(stream, mine, peer_slot)).detach();
            }
        })
        .map_err(|e| format!("cannot start the forwarder: {e}"))?;
    rx.recv().map_err(|_| "forwarder thread died".to_string())?
}

async fn forward(mut stream: TcpStream, mine: Rc<Outbox>, peer: Rc<RefCell<Option<Rc<Outbox>>>>) {
    let _ = stream.set_nodelay(true);
    let mut hs = [0u8; 4];
    if stream.read_exact(&mut hs).await.is_err() {
        return;
    }
    if stream.write_all(&[0x7f, 0xf0 | (hs[1] & 0x0f), 0, 0]).await.is_err() {
        return;
    }
    let (mut r, mut w) = futures_lite::io::split(stream);
    let out = mine.clone();
    let writer = glommio::spawn_local(async move {
        let mut batch = Vec::new();
        let mut buf = Vec::with_capacity(64 * 1024);
        while out.next_batch(&mut batch).await {
            buf.clear();
            for item in batch.drain(..) {
                if let Outgoing::Wamp(b) = item {
                    buf.extend_from_slice(&b);
                }
            }
            if w.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let start = buf.len();
        buf.resize(start + 64 * 1024, 0);
        // begun again every 20 ms: a glommio executor on a busy machine
        // sometimes misses a socket's wake-up (ARCHITECTURE.md, "Missed
        // wake-ups"), and a forwarder that sleeps through the last frames
        // of a run loses them (once in a CI smoke run)
        let n = loop {
            let read = futures_lite::future::or(async { Some(r.read(&mut buf[start..]).await) }, async {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                None
            })
            .await;
            if let Some(read) = read {
                break read.unwrap_or(0);
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            break;
        }
        // forward every complete frame, headers included, as one chunk
        let mut complete = 0;
        while buf.len() >= complete + 4 {
            let len = u32::from_be_bytes([0, buf[complete + 1], buf[complete + 2], buf[complete + 3]]) as usize;
            if buf.len() < complete + 4 + len {
                break;
            }
            complete += 4 + len;
        }
        if complete > 0 {
            let chunk: Bytes = buf.split_to(complete).freeze();

            if let Some(p) = peer.borrow().as_ref() {
                p.push(chunk);
            }
        }
    }
    mine.close(None);
    let _ = writer.await;
}

fn frame_body(len: usize, ts: u64, seq: u64) -> Vec<u8> {
    let mut body = vec![b'x'; len.max(16)];
    body[..8].copy_from_slice(&ts.to_be_bytes());
    body[8..16].copy_from_slice(&seq.to_be_bytes());
    body
}

fn body_ts(b: &[u8]) -> u64 {
    let mut t = [0u8; 8];
    if let Some(ts) = b.get(..8) {
        t.copy_from_slice(ts);
    }
    u64::from_be_bytes(t)
}

/// Connects the two RawSocket clients (A, then B) of one pair to the
/// forwarder and reports both ready.
async fn connect_pair(addr: SocketAddr, shared: &Shared) -> std::io::Result<((Reader, Writer), (Reader, Writer))> {
    let target = Target {
        addr,
        framing: switchyard::transport::Framing::RawSocket,
        host: addr.to_string(),
        path: "/".into(),
        tls: None,
        batched: false,
    };
    let ser = switchyard::wamp::message::Serializer::MsgPack;
    let pair = async {
        let a = client::connect(&target, ser).await?;
        let b = client::connect(&target, ser).await?;
        Ok((a, b))
    }
    .await;
    shared.ready.fetch_add(2, Ordering::AcqRel);
    pair
}

/// One pub/sub pair: A sends frames of `size` bytes within `window`, B counts.
pub async fn pubsub_pair(addr: SocketAddr, shared: Arc<Shared>, size: usize, window: u64, hist: Hist) {
    let pair = connect_pair(addr, &shared).await;
    let ((_ar, mut aw), (mut br, _bw)) = match pair {
        Ok(p) => p,
        Err(e) => return shared.fail(format!("ceiling: {e}")),
    };
    if !shared.wait_go().await {
        return;
    }
    let receiver = async {
        loop {
            let m = shared.next_or_done(&mut br).await;
            match m {
                Some(Ok(m)) => {
                    let mut got = 1;
                    let now = now_ns();
                    record(&hist, &shared, body_ts(&m), now);
                    while let Ok(Some(m)) = br.try_next() {
                        record(&hist, &shared, body_ts(&m), now);
                        got += 1;
                    }
                    shared.received.add(got);
                    shared.received_from[0].add(got);
                }
                Some(Err(_)) | None => return,
            }
        }
    };
    let sender = async {
        let mut seq = 0;
        while !shared.stop.load(Ordering::Relaxed) {
            let inflight = shared.sent_by[0].get().saturating_sub(shared.received_from[0].get());
            if inflight >= window {
                glommio::timer::sleep(Duration::from_micros(20)).await;
                continue;
            }
            let n = (window - inflight).min(64);
            for _ in 0..n {
                seq += 1;
                aw.queue(&frame_body(size, now_ns(), seq));
            }
            shared.sent_by[0].add(n);
            shared.sent.add(n);
            if aw.flush().await.is_err() {
                return;
            }
        }
    };
    futures_lite::future::zip(receiver, sender).await;
}

/// One ping-pong pair: A sends a frame of `size` bytes, B echoes it, A
/// measures the round trip; `window` frames in flight.
pub async fn pingpong_pair(addr: SocketAddr, shared: Arc<Shared>, size: usize, window: u64, hist: Hist) {
    let pair = connect_pair(addr, &shared).await;
    let ((mut ar, mut aw), (mut br, mut bw)) = match pair {
        Ok(p) => p,
        Err(e) => return shared.fail(format!("ceiling: {e}")),
    };
    if !shared.wait_go().await {
        return;
    }
    let echo = async {
        loop {
            let m = shared.next_or_done(&mut br).await;
            match m {
                Some(Ok(m)) => {
                    bw.queue(&m);
                    while let Ok(Some(m)) = br.try_next() {
                        bw.queue(&m);
                    }
                    if bw.flush().await.is_err() {
                        return;
                    }
                }
                Some(Err(_)) | None => return,
            }
        }
    };
    let caller = async {
        let mut seq = 0;
        let mut outstanding = 0;
        while !shared.stop.load(Ordering::Relaxed) {
            while outstanding < window {
                seq += 1;
                outstanding += 1;
                aw.queue(&frame_body(size, now_ns(), seq));
                shared.sent.add(1);
            }
            if aw.flush().await.is_err() {
                return;
            }
            let Some(Ok(m)) = shared.next_or_done(&mut ar).await else { return };
            let now = now_ns();
            record(&hist, &shared, body_ts(&m), now);
            outstanding -= 1;
            shared.received.add(1);
            while let Ok(Some(m)) = ar.try_next() {
                record(&hist, &shared, body_ts(&m), now);
                outstanding -= 1;
                shared.received.add(1);
            }
        }
    };
    futures_lite::future::zip(echo, caller).await;
}

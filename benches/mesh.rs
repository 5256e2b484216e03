//! One cross-shard queue hop: two glommio executors on their own threads
//! (`Placement::Unbound`), connected by the real mesh (`shard::mesh::build` +
//! `MeshSeed::connect`), play ping-pong with a small message through
//! `Mesh::send` and `Inbound::drain`. The reported time is per hop, i.e.
//! half a round trip.
//!
//! - `hop_spin`: both consumers busy-poll their queue (a busy shard; the
//!   doorbell is never rung).
//! - `hop_park`: both consumers park on the doorbell whenever their queue is
//!   empty (an idle shard woken by a producer; executors without
//!   `spin_before_park`), so every hop pays a cross-thread wake-up.
//!
//! The driver executor runs K round trips per `iter_custom` call and returns
//! their elapsed time / 2.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use glommio::{LocalExecutorBuilder, Placement};
use switchyard::metrics::ShardStats;
use switchyard::shard::mesh::{self, Inbound, Mesh};

/// The router binary's allocator, so allocation costs match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug)]
enum Ping {
    Seq(u64),
    Stop,
}

impl mesh::MeshMessage for Ping {
    fn droppable(&self) -> bool {
        false
    }
}

/// Waits for the next message from the peer, spinning or parking.
/// Spinning, the thread gives its CPU away this often (in empty polls), so a
/// descheduled peer on an oversubscribed machine gets to run.
const SPINS_BEFORE_YIELD: u32 = 1 << 12;

async fn recv(inbound: &Inbound<Ping>, batch: &mut Vec<Ping>, park: bool) -> Option<Ping> {
    let mut spins = 0u32;
    loop {
        if inbound.drain(batch, 1) > 0 {
            return batch.pop();
        }
        if park {
            if !inbound.park().await {
                return None;
            }
        } else {
            spins += 1;
            if spins.is_multiple_of(SPINS_BEFORE_YIELD) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Shard 1: sends every `Seq` straight back until `Stop`.
async fn echo(mesh: Mesh<Ping>, inbound: Vec<Inbound<Ping>>, park: bool) {
    let inbound = &inbound[0];
    let mut batch = Vec::with_capacity(1);
    while let Some(Ping::Seq(n)) = recv(inbound, &mut batch, park).await {
        mesh.send(0, Ping::Seq(n));
    }
}

/// Two shards: shard 0 runs round trips on request, shard 1 echoes.
struct PingPong {
    cmd: mpsc::Sender<u64>,
    done: mpsc::Receiver<Duration>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl PingPong {
    fn start(park: bool) -> Self {
        let mut seeds = mesh::build::<Ping>(2, 1024).into_iter();
        let (seed0, seed1) = (seeds.next().unwrap(), seeds.next().unwrap());
        let (cmd_tx, cmd_rx) = mpsc::channel::<u64>();
        let (done_tx, done_rx) = mpsc::channel::<Duration>();
        let echo_thread = LocalExecutorBuilder::new(Placement::Unbound)
            .name("mesh-echo")
            .spawn(move || async move {
                let ends = seed1.connect(Arc::new(ShardStats::default()), 1024).await;
                let (mesh, inbound) = (ends.mesh, ends.inbound);
                echo(mesh, inbound, park).await
            })
            .expect("echo executor");
        let driver_thread = LocalExecutorBuilder::new(Placement::Unbound)
            .name("mesh-driver")
            .spawn(move || async move {
                let ends = seed0.connect(Arc::new(ShardStats::default()), 1024).await;
                let (mesh, inbound) = (ends.mesh, ends.inbound);
                let inbound = &inbound[0];
                let mut batch = Vec::with_capacity(1);
                let mut seq = 0u64;
                // Blocking on the command channel is fine: nothing else runs here.
                while let Ok(k) = cmd_rx.recv() {
                    let t0 = Instant::now();
                    for _ in 0..k {
                        seq += 1;
                        mesh.send(1, Ping::Seq(seq));
                        match recv(inbound, &mut batch, park).await {
                            Some(Ping::Seq(n)) => assert_eq!(n, seq, "ping-pong out of order"),
                            other => panic!("unexpected reply {other:?}"),
                        }
                    }
                    let elapsed = t0.elapsed();
                    if done_tx.send(elapsed).is_err() {
                        break;
                    }
                }
                mesh.send(1, Ping::Stop);
            })
            .expect("driver executor");
        PingPong {
            cmd: cmd_tx,
            done: done_rx,
            threads: vec![echo_thread, driver_thread],
        }
    }

    /// Runs `k` round trips; returns their total time.
    fn round_trips(&self, k: u64) -> Duration {
        self.cmd.send(k).expect("driver alive");
        self.done.recv().expect("driver alive")
    }

    fn stop(self) {
        drop(self.cmd);
        for t in self.threads {
            t.join().expect("executor thread");
        }
    }
}

fn hop(c: &mut Criterion) {
    let mut g = c.benchmark_group("mesh");
    g.sample_size(50);
    for (name, park) in [("hop_spin", false), ("hop_park", true)] {
        let pp = PingPong::start(park);
        // Check once that messages make the trip (the driver asserts order).
        assert!(pp.round_trips(1000) > Duration::ZERO);
        g.bench_function(name, |b| b.iter_custom(|iters| pp.round_trips(iters) / 2));
        pp.stop();
    }
    g.finish();
}

criterion_group!(benches, hop);
criterion_main!(benches);

//! The threads that run costly authentication checks (password hashes,
//! signatures) away from the shards, so that a shard's other sessions keep
//! their latency while many clients log in at once.
//!
//! One bounded queue (`router.auth_queue` jobs) feeds `router.auth_threads`
//! threads; each job carries the sender of its shard's result channel, which
//! wakes the shard's task that hands verdicts to the router core. A full queue
//! fails the login at once (counted as `auth_queue_full`).

use std::thread::JoinHandle;

/// A check to run: true when the credentials hold.
pub type Check = Box<dyn FnOnce() -> bool + Send>;

/// The verdict of one check, for the connection that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub conn: u64,
    pub ok: bool,
}

struct Job {
    check: Check,
    conn: u64,
    reply: flume::Sender<Verdict>,
}

/// The pool; dropping it ends its threads once the queue is drained.
pub struct Pool {
    tx: Option<flume::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Set when the pool drops: the workers stop even if a submitter was
    /// never dropped (a task leaked by a stopped shard), within `POLL`.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How often an idle worker looks at the stop flag.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "auth::Pool({} threads)", self.threads.len())
    }
}

/// What a shard's router holds to submit checks.
#[derive(Clone)]
pub struct Submitter {
    tx: flume::Sender<Job>,
    reply: flume::Sender<Verdict>,
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("auth::Submitter")
    }
}

impl Submitter {
    /// Queues `check` for `conn`; false when the queue is full.
    pub fn submit(&self, conn: u64, check: Check) -> bool {
        let job = Job {
            check,
            conn,
            reply: self.reply.clone(),
        };
        self.tx.try_send(job).is_ok()
    }
}

impl Pool {
    /// Starts `threads` workers behind a queue of `capacity` jobs, pinned
    /// to `cpus` (round-robin; empty: wherever the kernel puts them).
    pub fn start(threads: usize, capacity: usize, cpus: &[usize]) -> std::io::Result<Pool> {
        let (tx, rx) = flume::bounded::<Job>(capacity.max(1));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let stop = stop.clone();
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let h = std::thread::Builder::new().name(format!("switchyard-auth-{i}")).spawn(move || {
                if let Some(cpu) = cpu {
                    pin_to(cpu);
                }
                // key derivation is throughput work: it yields the CPU to
                // the shards and whatever else shares it
                lower_priority();
                loop {
                    let job = match rx.recv_timeout(POLL) {
                        Ok(job) => job,
                        Err(flume::RecvTimeoutError::Timeout) if !stop.load(std::sync::atomic::Ordering::Acquire) => continue,
                        Err(_) => break,
                    };
                    let check = job.check;
                    // a panicking check fails the login, not the thread
                    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or(false);
                    let _ = job.reply.send(Verdict { conn: job.conn, ok });
                }
            })?;
            handles.push(h);
        }
        Ok(Pool {
            tx: Some(tx),
            threads: handles,
            stop,
        })
    }

    /// A submitter whose verdicts arrive on the returned receiver (one per
    /// shard). The result channel holds at most `capacity` verdicts.
    pub fn submitter(&self, capacity: usize) -> Option<(Submitter, flume::Receiver<Verdict>)> {
        let tx = self.tx.clone()?;
        let (reply, rx) = flume::bounded(capacity.max(1));
        Some((Submitter { tx, reply }, rx))
    }
}

/// Pins the calling thread to `cpu` (best effort: a failure leaves it where
/// it was, with a log line).
fn pin_to(cpu: usize) {
    if let Err(error) = crate::shard::pin_current_thread(cpu) {
        tracing::warn!(cpu, %error, "authentication thread not pinned");
    }
}

/// Lowers the calling thread's priority (nice 10), best effort.
fn lower_priority() {
    // SAFETY: gettid and setpriority take plain integers; on Linux a
    // thread's id names the thread itself to PRIO_PROCESS.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 10) != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "authentication thread priority not lowered");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx = None;
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_run_off_thread_and_a_full_queue_refuses() {
        let pool = Pool::start(1, 1, &[]).unwrap();
        let (sub, rx) = pool.submitter(4).unwrap();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        // the first job holds the only thread until the gate opens
        assert!(sub.submit(1, Box::new(move || gate_rx.recv().is_ok())));
        // wait until the worker took it, so the queue's one slot is free
        let mut queued = false;
        for _ in 0..1000 {
            if sub.submit(2, Box::new(|| false)) {
                queued = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(queued);
        assert!(!sub.submit(3, Box::new(|| true)), "a full queue refuses");
        gate_tx.send(()).unwrap();
        assert_eq!(rx.recv().unwrap(), Verdict { conn: 1, ok: true });
        assert_eq!(rx.recv().unwrap(), Verdict { conn: 2, ok: false });
    }

    #[test]
    fn the_pool_stops_though_a_submitter_outlives_it() {
        let pool = Pool::start(2, 4, &[]).unwrap();
        let (sub, _rx) = pool.submitter(4).unwrap();
        // dropping joins the workers; with `sub` alive their channel stays
        // open, and only the stop flag ends them
        drop(pool);
        assert!(!sub.submit(1, Box::new(|| true)), "no worker takes jobs after the drop");
    }
}

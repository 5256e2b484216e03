//! What every scenario shares: the clock, the counters, the worker threads
//! (glommio executors, optionally pinned) and the measurement window.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

static BASE: OnceLock<Instant> = OnceLock::new();

/// The router's safety net against glommio executors that miss a wake-up
/// (see the router's ARCHITECTURE.md, "Missed wake-ups"): every load thread
/// and the ceiling forwarder register with it. Without it the forwarder
/// sometimes slept through the last frames of a run.
pub fn watchdog() -> Option<&'static switchyard::shard::watchdog::Watchdog> {
    static DOG: OnceLock<Option<switchyard::shard::watchdog::Watchdog>> = OnceLock::new();
    DOG.get_or_init(|| switchyard::shard::watchdog::Watchdog::start(Duration::from_millis(10)).ok())
        .as_ref()
}

/// Nanoseconds on the process-wide monotonic clock every thread shares; also
/// what the payload timestamps carry.
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A relaxed counter on its own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counter(pub AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// State shared by the main thread and every worker.
#[derive(Debug)]
pub struct Shared {
    /// Roles that finished setting up (successfully or not).
    pub ready: AtomicUsize,
    /// Set when the load may start.
    pub go: AtomicBool,
    /// Set when senders must stop.
    pub stop: AtomicBool,
    /// Set when receivers must stop waiting for stragglers.
    pub done: AtomicBool,
    /// Start of the measurement window (ns, see [`now_ns`]).
    pub window_start: AtomicU64,
    /// End of the measurement window.
    pub window_end: AtomicU64,
    pub sent: Counter,
    pub received: Counter,
    pub out_of_order: Counter,
    pub errors: Counter,
    /// Per sender: messages received that it sent (for in-flight windows).
    pub received_from: Vec<Counter>,
    /// Per sender: messages it sent.
    pub sent_by: Vec<Counter>,
    pub failures: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(senders: usize) -> Arc<Self> {
        Arc::new(Shared {
            ready: AtomicUsize::new(0),
            go: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            done: AtomicBool::new(false),
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
            sent: Counter::default(),
            received: Counter::default(),
            out_of_order: Counter::default(),
            errors: Counter::default(),
            received_from: (0..senders).map(|_| Counter::default()).collect(),
            sent_by: (0..senders).map(|_| Counter::default()).collect(),
            failures: Mutex::new(Vec::new()),
        })
    }

    /// Records a failure to report.
    pub fn fail(&self, what: String) {
        if let Ok(mut f) = self.failures.lock() {
            if f.len() < 20 {
                f.push(what);
            }
        }
    }

    /// True while `t` (ns) lies in the measurement window.
    pub fn in_window(&self, t: u64) -> bool {
        t >= self.window_start.load(Ordering::Relaxed) && t < self.window_end.load(Ordering::Relaxed)
    }

    /// The next message, or `None` once the run is over (so that no task
    /// waits for ever on an answer that will not come). A read that waits
    /// is begun again every 20 ms, which also serves a glommio executor on a
    /// busy machine that missed a socket's wake-up (ARCHITECTURE.md,
    /// "Missed wake-ups"): reads with no timer lost the last window of a
    /// 2-shard pub/sub run in 2 of 30 runs under CPU load.
    pub async fn next_or_done(&self, r: &mut crate::client::Reader) -> Option<std::io::Result<bytes::Bytes>> {
        loop {
            let m = futures_lite::future::or(async { Some(r.next().await) }, async {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                None
            })
            .await;
            match m {
                Some(m) => return Some(m),
                None if self.done.load(Ordering::Relaxed) => return None,
                None => {}
            }
        }
    }

    /// Waits (on a worker) until the load may start; false if it never will.
    pub async fn wait_go(&self) -> bool {
        while !self.go.load(Ordering::Acquire) {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        true
    }
}

/// A latency histogram in nanoseconds, one per worker thread.
pub type Hist = Rc<RefCell<Histogram<u64>>>;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("histogram with 3 significant digits"))
}

/// Records one latency sample if its send time lies in the window.
pub fn record(h: &Hist, shared: &Shared, sent_ns: u64, now: u64) {
    if shared.in_window(sent_ns) {
        let _ = h.borrow_mut().record(now.saturating_sub(sent_ns).max(1));
    }
}

/// Runs `threads` glommio executors (pinned to `cpus` round-robin when given);
/// each runs `work(thread_index, histogram)` and spins `spin_us` before it
/// parks. Returns the merged histogram.
pub fn spawn_workers<F, Fut>(
    threads: usize,
    cpus: &[usize],
    spin_us: u64,
    work: F,
) -> Result<Vec<glommio::ExecutorJoinHandle<Histogram<u64>>>, String>
where
    F: Fn(usize, Hist) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut handles = Vec::new();
    for t in 0..threads {
        let placement = if cpus.is_empty() {
            Placement::Unbound
        } else {
            Placement::Fixed(cpus[t % cpus.len()])
        };
        let work = work.clone();
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("load-{t}"))
            .preempt_timer(Duration::from_micros(500))
            .spin_before_park(Duration::from_micros(spin_us))
            .spawn(move || async move {
                let _kicked = watchdog().map(|w| w.register());
                let hist: Hist = Rc::new(RefCell::new(new_hist()));
                work(t, hist.clone()).await;
                let h = hist.borrow().clone();
                h
            })
            .map_err(|e| format!("cannot start load thread {t}: {e}"))?;
        handles.push(h);
    }
    Ok(handles)
}

/// Joins the workers and merges their histograms.
pub fn join_workers(handles: Vec<glommio::ExecutorJoinHandle<Histogram<u64>>>) -> Histogram<u64> {
    let mut all = new_hist();
    for h in handles {
        if let Ok(hist) = h.join() {
            let _ = all.add(&hist);
        }
    }
    all
}

/// Reads the resident set size of a process, in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A process's CPU time and memory at one moment.
#[derive(Debug, Clone, Copy)]
pub struct ProcUsage {
    /// User plus system time of all its threads, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_bytes: Option<u64>,
}

/// Reads `/proc/PID/stat` (utime + stime) and the RSS; `None` when the
/// process is gone or not readable.
pub fn proc_usage(pid: u32) -> Option<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcUsage {
        cpu_ticks: cpu_ticks_in(&stat)?,
        rss_bytes: rss_of(pid),
    })
}

/// utime + stime from the text of `/proc/PID/stat`: fields 14 and 15,
/// counted after the command name (which may hold spaces and parentheses).
fn cpu_ticks_in(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second, the unit of `/proc/PID/stat` times.
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_from_stat() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 3 0 100 1000 200 18446744073709551615";
        assert_eq!(cpu_ticks_in(stat), Some(325));
        assert_eq!(cpu_ticks_in("garbage"), None);
        assert_eq!(cpu_ticks_in("1 (x) S 1 2"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let u = proc_usage(std::process::id()).expect("own /proc/PID/stat");
        assert!(u.rss_bytes.unwrap_or(0) > 0);
        assert!(clock_ticks_per_s() > 0.0);
    }
}

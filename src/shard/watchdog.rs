//! A safety net under the executors' sleep: a thread that interrupts every
//! shard's thread with a signal at a fixed interval.
//!
//! glommio parks an idle executor in `io_uring_enter` on its main ring, with
//! the latency ring (timers) linked in through a poll on that ring's fd. Under
//! heavy load on few cores we saw that wait miss its wake-up: a shard slept
//! for seconds with readable sockets and expired timers, until anything
//! interrupted the syscall (attaching a debugger was enough). The signal has
//! a handler that does nothing; its only effect is that the wait returns and
//! the executor looks at its rings again. An idle shard pays one wake-up per
//! interval; a busy one is rarely in the wait at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

/// The signal used; nothing else in the process uses it (TCP urgent data is
/// delivered as SIGURG only to a socket's owner set with F_SETOWN).
const KICK: libc::c_int = libc::SIGURG;

type Table = Arc<Mutex<Vec<Option<libc::pthread_t>>>>;

/// The kicking thread; stops when dropped. Any glommio thread may register,
/// the load generator's included.
#[derive(Debug)]
pub struct Watchdog {
    table: Table,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One thread on the watchdog's list; taken off when dropped, which must
/// happen on that thread before it ends.
#[derive(Debug)]
pub struct Registration {
    table: Table,
    slot: usize,
}

impl Watchdog {
    /// Starts the watchdog; `interval` zero disables it.
    pub fn start(interval: Duration) -> std::io::Result<Watchdog> {
        let table: Table = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut dog = Watchdog {
            table: table.clone(),
            stop: stop.clone(),
            thread: None,
        };
        if interval.is_zero() {
            return Ok(dog);
        }
        install_handler()?;
        let thread = std::thread::Builder::new().name("watchdog".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                let threads = table.lock().unwrap_or_else(|e| e.into_inner());
                for t in threads.iter().flatten() {
                    // SAFETY: a registered thread is alive: it removes itself
                    // under this lock before it ends.
                    unsafe {
                        libc::pthread_kill(*t, KICK);
                    }
                }
            }
        })?;
        dog.thread = Some(thread);
        Ok(dog)
    }

    /// Puts the calling thread on the list.
    pub fn register(&self) -> Registration {
        let mut threads = self.table.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: pthread_self has no preconditions.
        let me = Some(unsafe { libc::pthread_self() });
        let slot = match threads.iter().position(Option::is_none) {
            Some(free) => {
                threads[free] = me;
                free
            }
            None => {
                threads.push(me);
                threads.len() - 1
            }
        };
        Registration {
            table: self.table.clone(),
            slot,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut threads = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = threads.get_mut(self.slot) {
            *t = None;
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Interrupts every thread of this process whose name starts with
/// `prefix`, as the watchdog does the registered ones. For threads that
/// cannot have registered yet: we saw a shard's executor park in
/// `io_uring_enter` before it ever polled its first task (so before the
/// task could register), about once in a few hundred starts under load;
/// any interruption of that wait lets it run. Returns how many were
/// signalled. Needs the handler ([`Watchdog::start`] with an interval).
pub fn kick_threads_named(prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut n = 0;
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            // SAFETY: tgkill with this process's ID only reaches its own
            // threads; a thread that ended meanwhile gets ESRCH.
            unsafe {
                libc::syscall(libc::SYS_tgkill, pid, tid, KICK);
            }
            n += 1;
        }
    }
    n
}

fn install_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        // SAFETY: the action does nothing, which is async-signal-safe.
        result = unsafe { signal_hook::low_level::register(KICK, || {}) }.map(|_| ());
    });
    result
}

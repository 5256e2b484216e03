//! Thread-per-core plumbing: one glommio executor per shard, pinned to its
//! CPU; every shard binds every listener (SO_REUSEPORT) and owns the
//! connections it accepts; the mesh connects the shards.

pub mod mesh;
pub mod watchdog;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{debug, error, info, warn};

use crate::config::{Bind, Validated};
use crate::metrics::ShardStats;
use crate::router::{Router, RouterConfig, ShardLink, ShardMsg};
use crate::session::{connection, longpoll, ConnCtx, ConnLimits};

/// What every task on a shard shares. Connections get only `conns`, the
/// narrow handle of `session/handle.rs`.
#[derive(Debug)]
pub struct ShardCtx {
    pub router: Rc<RefCell<Router>>,
    pub stats: Arc<ShardStats>,
    /// Router-wide mesh congestion (the mesh drains wake paused readers).
    pub congestion: Rc<mesh::Congestion>,
    /// What the connection tasks of this shard hold.
    pub conns: Rc<ConnCtx>,
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "CPU number too large"));
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO / CPU_SET write within it
    // (cpu is checked against its size above), and sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit, as servers that
/// hold many sockets do; returns the limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct passed; nothing
    // else is touched.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Ok(lim.rlim_cur);
            }
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}

/// How the process steers a running router.
pub struct Control {
    /// Set (SIGINT, SIGTERM): shut down gracefully.
    pub shutdown: Arc<AtomicBool>,
    /// Set (SIGHUP): read the configuration again and take it over.
    pub reload: Arc<AtomicBool>,
    /// Reads the configuration again (file, command-line overrides,
    /// validation); `None`: nothing to reload.
    pub reloader: Option<Box<dyn FnMut() -> Result<Validated, String>>>,
    /// Tells the service manager the router's state (sd_notify lines such
    /// as `READY=1`); does nothing when not run under one.
    pub notify: fn(&str),
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("shutdown", &self.shutdown)
            .field("reload", &self.reload)
            .field("reloader", &self.reloader.is_some())
            .finish()
    }
}

impl Control {
    /// Shuts down when `shutdown` is set; no reload, no service manager.
    pub fn new(shutdown: Arc<AtomicBool>) -> Control {
        Control {
            shutdown,
            reload: Arc::new(AtomicBool::new(false)),
            reloader: None,
            notify: |_| {},
        }
    }
}

/// What the main thread sends a shard after start-up.
enum Step {
    /// Take over this configuration (answer with what changed), and each
    /// TLS listener's new certificates (when the listeners are unchanged).
    Prepare(Arc<RouterConfig>, ConnLimits, Option<Tls>),
    /// Every shard has it: open the new realms.
    Open,
    /// The outcome of a session's `switchyard.router.reload`.
    Answer(crate::router::ReloadRequest, Result<crate::wamp::Dict, String>),
}

/// The TLS set-up of each listener, in config order.
type Tls = Vec<Option<Arc<rustls::ServerConfig>>>;

/// Starts every shard, reports readiness, and runs until `shutdown` is set
/// and every shard has finished its graceful shutdown; reloads the
/// configuration on `reload` and on `switchyard.router.reload`.
pub fn run(v: Validated, control: Control) -> Result<(), String> {
    let Control {
        shutdown,
        reload,
        mut reloader,
        notify,
    } = control;
    // The shards bind with SO_REUSEPORT, which would also let them join the
    // listening group of another process on the same port. Bind each address
    // once without it first, so a port in use is an error, not a silent share.
    //
    // Port 0 asks for any free port: it is reserved here by a socket in the
    // SO_REUSEPORT group that never listens (so it takes no connections),
    // held until every shard has bound the same address.
    let mut v = v;
    let mut reserved = Vec::new();
    for (l, bind) in v.listeners.iter_mut() {
        let shown = bind.to_string();
        let fail = |e: std::io::Error| format!("cannot listen on {shown} ({:?}): {e}", l.kind);
        match bind {
            Bind::Tcp(addr) if addr.port() == 0 => {
                let sock = reserve_any_port(*addr).map_err(fail)?;
                *addr = sock.local_addr().map_err(fail)?;
                reserved.push(sock);
            }
            Bind::Tcp(addr) => drop(std::net::TcpListener::bind(*addr).map_err(fail)?),
            Bind::Unix(path) => clear_stale_socket(path).map_err(fail)?,
        }
    }
    // Unix listeners are bound once, by shard 0, which hands each accepted
    // connection to the shard with the fewest open ones over these queues.
    let handover: Vec<(flume::Sender<Handover>, flume::Receiver<Handover>)> = (0..v.shard_cpus.len())
        .map(|_| flume::bounded(v.config.router.unix_handover_queue.max(1)))
        .collect();
    let handover_to: Arc<Vec<flume::Sender<Handover>>> = Arc::new(handover.iter().map(|(tx, _)| tx.clone()).collect());
    // requests for a long-poll transport that arrive on another shard than its own
    let lp_calls: Vec<(flume::Sender<longpoll::Call>, flume::Receiver<longpoll::Call>)> = (0..v.shard_cpus.len())
        .map(|_| flume::bounded(v.config.router.longpoll_call_queue.max(1)))
        .collect();
    let lp_to: Arc<Vec<flume::Sender<longpoll::Call>>> = Arc::new(lp_calls.iter().map(|(tx, _)| tx.clone()).collect());
    // the main thread's steps for each shard, the shards' answers, and the
    // reloads sessions ask for
    let steps: Vec<(flume::Sender<Step>, flume::Receiver<Step>)> = (0..v.shard_cpus.len()).map(|_| flume::unbounded()).collect();
    let (acks_tx, acks) = flume::unbounded::<(usize, crate::router::Reconfigured)>();
    let (asks_tx, asks) = flume::bounded::<crate::router::ReloadRequest>(64);
    match raise_open_file_limit() {
        Ok(files) => debug!(files, "open file limit"),
        Err(e) => warn!(error = %e, "cannot read the open file limit"),
    }
    let n = v.shard_cpus.len();
    let cfg = &v.config;
    let all_stats: Arc<Vec<Arc<ShardStats>>> = Arc::new((0..n).map(|_| Arc::new(ShardStats::default())).collect());
    let seeds = mesh::build::<ShardMsg>(n, cfg.router.mesh_queue_capacity);
    let router_cfg = RouterConfig {
        realms: cfg.realms.clone(),
        limits: cfg.limits.clone(),
    };
    let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, String>>();
    let open_connections = Arc::new(AtomicUsize::new(0));
    let bridge_nonces = Arc::new(crate::session::bridge::Nonces::new(cfg.limits.max_bridge_nonces));
    let watchdog = Arc::new(
        watchdog::Watchdog::start(Duration::from_millis(cfg.router.wake_interval_ms))
            .map_err(|e| format!("cannot start the watchdog thread: {e}"))?,
    );
    // a durable history: its store, and what it kept, before any shard starts
    let mut store = if cfg.router.history_path.is_empty() {
        None
    } else {
        Some(crate::history_store::Store::open(
            std::path::Path::new(&cfg.router.history_path),
            cfg.router.history_queue,
        )?)
    };
    let history: Option<(crate::history_store::StoreHandle, Arc<Vec<crate::history_store::StoredEvent>>)> =
        store.as_mut().map(|s| (s.handle.clone(), Arc::new(std::mem::take(&mut s.loaded))));
    if let Some((_, kept)) = &history {
        info!(path = %cfg.router.history_path, events = kept.len(), "durable event history opened");
    }
    // the threads for costly login checks, shared by every shard
    let auth_pool = crate::auth::pool::Pool::start(cfg.router.auth_threads, cfg.router.auth_queue, &v.auth_cpus)
        .map_err(|e| format!("cannot start the authentication threads: {e}"))?;
    let tls = crate::transport::tls::acceptors(&v.listeners)?;
    // the cluster's node thread, and each shard's end of it
    let (mut cluster_ends, node_thread) = match &cfg.cluster {
        Some(c) => {
            let (links, from_node, thread) = crate::cluster::start(c, n, all_stats.to_vec())?;
            (links.into_iter().zip(from_node).map(Some).collect::<Vec<_>>(), Some(thread))
        }
        None => ((0..n).map(|_| None).collect(), None),
    };
    let mut handles = Vec::new();
    for (me, seed) in seeds.into_iter().enumerate() {
        let cluster = cluster_ends[me].take();
        let auth = auth_pool.submitter(cfg.router.auth_queue);
        let tls = tls.clone();
        let cpu = v.shard_cpus[me];
        let v = v.clone();
        let all_stats = all_stats.clone();
        let router_cfg = router_cfg.clone();
        let ready = ready_tx.clone();
        let shutdown = shutdown.clone();
        let open_connections = open_connections.clone();
        let bridge_nonces = bridge_nonces.clone();
        let watchdog = watchdog.clone();
        let history = history.clone();
        let handover = (handover_to.clone(), handover[me].1.clone());
        let longpoll_calls = (lp_to.clone(), lp_calls[me].1.clone());
        let control = (steps[me].1.clone(), acks_tx.clone(), reloader.is_some().then(|| asks_tx.clone()));
        let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{me}"))
            .spin_before_park(Duration::from_micros(v.config.router.spin_before_park_us))
            .preempt_timer(Duration::from_micros(v.config.router.preempt_timer_us))
            .ring_depth(v.config.router.ring_depth);
        let handle = builder
            .spawn(move || async move {
                let _kicked = watchdog.register();
                drop(watchdog);
                let extras = ShardExtras {
                    history,
                    auth,
                    tls,
                    handover,
                    longpoll_calls,
                    control,
                    bridge_nonces,
                    cluster,
                };
                // every event logged on this thread names its shard
                let _span = tracing::info_span!("shard", shard = me).entered();
                shard_main(me, n, seed, v, all_stats, router_cfg, ready, shutdown, open_connections, extras).await
            })
            .map_err(|e| format!("cannot start shard {me} on CPU {cpu}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut failure = None;
    let mut ready = 0;
    while ready < n {
        match ready_rx.recv_timeout(Duration::from_millis(250)) {
            Ok(Ok(_)) => ready += 1,
            Ok(Err(e)) => {
                failure.get_or_insert(e);
                ready += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // a shard slow to start may be parked before its first poll,
                // where the watchdog cannot reach it yet (watchdog.rs)
                let kicked = watchdog::kick_threads_named("shard-");
                info!(ready, shards = n, kicked, "shards not ready after 250 ms: interrupted their waits");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failure.get_or_insert("a shard stopped during start-up".to_string());
                break;
            }
        }
    }
    if let Some(e) = failure {
        shutdown.store(true, Ordering::SeqCst);
        for h in handles {
            let _ = h.join();
        }
        drop(history);
        if let Some(s) = store {
            s.close();
        }
        if let Some(t) = node_thread {
            t.stop();
        }
        return Err(e);
    }
    drop(reserved);
    let addrs: Vec<String> = v
        .listeners
        .iter()
        .map(|(l, a)| format!("{:?}{} {a}", l.kind, if l.tls.is_some() { "+TLS" } else { "" }))
        .collect();
    let unix_paths: Vec<std::path::PathBuf> = v
        .listeners
        .iter()
        .filter_map(|(_, b)| match b {
            Bind::Unix(p) => Some(p.clone()),
            Bind::Tcp(_) => None,
        })
        .collect();
    info!(shards = n, cpus = ?v.shard_cpus, listeners = ?addrs, "switchyard ready");
    notify(&format!("READY=1\nSTATUS=serving {} on {n} shards", addrs.join(", ")));
    drop(asks_tx);
    let steps: Vec<flume::Sender<Step>> = steps.into_iter().map(|(tx, _)| tx).collect();
    while !shutdown.load(Ordering::Relaxed) {
        let asked = asks.recv_timeout(Duration::from_millis(20)).ok();
        if !(reload.swap(false, Ordering::Relaxed) || asked.is_some()) {
            continue;
        }
        let Some(reloader) = reloader.as_mut() else { continue };
        notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        let outcome = reloader().and_then(|new| take_over(&v, &new, &steps, &acks));
        match &outcome {
            Ok(_) => {}
            Err(e) => error!(error = %e, "configuration reload refused; the running configuration stays"),
        }
        for a in asked.into_iter().chain(std::iter::from_fn(|| asks.try_recv().ok())) {
            let _ = steps[a.shard].send(Step::Answer(a, outcome.clone()));
        }
        match &outcome {
            Ok(_) => notify("READY=1\nSTATUS=configuration reloaded"),
            // (systemd has no failed-reload state: STATUS says it)
            Err(e) => notify(&format!("READY=1\nSTATUS=configuration reload refused: {}", e.replace('\n', " "))),
        }
    }
    notify("STOPPING=1");
    let mut failed = false;
    for h in handles {
        failed |= h.join().is_err();
    }
    for p in unix_paths {
        let _ = std::fs::remove_file(p);
    }
    // every session has left: the other nodes are told this one goes
    if let Some(t) = node_thread {
        t.stop();
    }
    // every shard has stopped: the store writes what is queued and closes
    drop(history);
    if let Some(s) = store {
        s.close();
    }
    if failed {
        return Err("a shard failed".into());
    }
    Ok(())
}

/// What a shard gets besides its mesh: the durable history, its submitter
/// to the authentication threads and where their verdicts arrive, the TLS
/// set-up of each listener.
struct ShardExtras {
    history: Option<(crate::history_store::StoreHandle, Arc<Vec<crate::history_store::StoredEvent>>)>,
    auth: Option<(crate::auth::pool::Submitter, flume::Receiver<crate::auth::pool::Verdict>)>,
    tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    /// Every shard's queue of handed-over Unix connections, and this one's.
    handover: (Arc<Vec<flume::Sender<Handover>>>, flume::Receiver<Handover>),
    /// Every shard's queue of long-poll requests, and this one's.
    longpoll_calls: (Arc<Vec<flume::Sender<longpoll::Call>>>, flume::Receiver<longpoll::Call>),
    /// The main thread's steps, where this shard answers them, and where
    /// sessions' reload requests go (none: nothing to reload).
    control: ShardControl,
    /// The nonces of signed HTTP bridge requests (router-wide).
    bridge_nonces: Arc<crate::session::bridge::Nonces>,
    /// This shard's end of the cluster's node thread (none: no cluster).
    cluster: Option<(crate::cluster::ClusterLink, flume::Receiver<crate::cluster::FromNode>)>,
}

/// A shard's end of the control plane: the main thread's steps, where it
/// answers them, and where sessions' reload requests go.
type ShardControl = (
    flume::Receiver<Step>,
    flume::Sender<(usize, crate::router::Reconfigured)>,
    Option<flume::Sender<crate::router::ReloadRequest>>,
);

/// A connection accepted on a Unix listener by shard 0, for another shard.
struct Handover {
    listener: usize,
    stream: glommio::net::AcceptedUnixStream,
}

/// CLOCK_MONOTONIC in µs (what sd_notify's `MONOTONIC_USEC` names).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the struct passed and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Has every shard take over `new` (validated), in two steps: each takes
/// the settings, then, once all have, opens the realms it added. What only
/// a restart changes (listeners, `[router]`) is named in the answer.
fn take_over(
    running: &Validated,
    new: &Validated,
    steps: &[flume::Sender<Step>],
    acks: &flume::Receiver<(usize, crate::router::Reconfigured)>,
) -> Result<crate::wamp::Dict, String> {
    use crate::wamp::{Dict, Value};
    let cfg = Arc::new(RouterConfig {
        realms: new.config.realms.clone(),
        limits: new.config.limits.clone(),
    });
    let limits = conn_limits(&new.config);
    // the same listeners: certificate files are read again (renewed
    // certificates apply to new connections)
    let same_listeners = format!("{:?}", running.config.listeners) == format!("{:?}", new.config.listeners);
    let tls = if same_listeners {
        Some(crate::transport::tls::acceptors(&new.listeners)?)
    } else {
        None
    };
    while acks.try_recv().is_ok() {}
    for s in steps {
        s.send(Step::Prepare(cfg.clone(), limits, tls.clone()))
            .map_err(|_| "a shard has stopped".to_string())?;
    }
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.len() < steps.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match acks.recv_timeout(left) {
            Ok(d) => done.push(d),
            Err(_) => return Err("a shard did not take the new configuration within 10 s".into()),
        }
    }
    for s in steps {
        let _ = s.send(Step::Open);
    }
    done.sort_by_key(|(shard, _)| *shard);
    let first = done.first().map(|(_, d)| d.clone()).unwrap_or_default();
    let closed: usize = done.iter().map(|(_, d)| d.closed).sum();
    let mut restart = Vec::new();
    if !same_listeners {
        restart.push("listener");
    }
    // (shutdown_grace_ms is taken over with the connection limits)
    let mut router = new.config.router.clone();
    router.shutdown_grace_ms = running.config.router.shutdown_grace_ms;
    if format!("{:?}", running.config.router) != format!("{router:?}") {
        restart.push("router");
    }
    let hooks = |c: &crate::config::Config| c.realms.iter().map(|r| (r.name.clone(), r.webhooks.clone())).collect::<Vec<_>>();
    if hooks(&running.config) != hooks(&new.config) {
        restart.push("realm.webhook");
    }
    for key in &restart {
        warn!(section = key, "changed in the configuration file: takes effect at the next restart");
    }
    info!(
        realms = new.config.realms.len(),
        added = ?first.added,
        removed = ?first.removed,
        sessions_closed = closed,
        restart_needed = ?restart,
        "configuration reloaded"
    );
    let names = |v: Vec<String>| Value::List(v.into_iter().map(Value::Str).collect());
    Ok(Dict::new()
        .with("realms", names(new.config.realms.iter().map(|r| r.name.clone()).collect()))
        .with("added", names(first.added))
        .with("removed", names(first.removed))
        .with("sessions_closed", Value::UInt(closed as u64))
        .with("restart_needed", names(restart.into_iter().map(String::from).collect())))
}

/// The connection limits of a configuration.
fn conn_limits(cfg: &crate::config::Config) -> ConnLimits {
    ConnLimits {
        max_message_size: cfg.limits.max_message_size,
        max_outbound_bytes: cfg.limits.max_outbound_bytes,
        handshake_timeout: Duration::from_millis(cfg.limits.handshake_timeout_ms),
        shutdown_grace: Duration::from_millis(cfg.router.shutdown_grace_ms),
        ping_interval: (cfg.limits.ping_interval_ms > 0).then(|| Duration::from_millis(cfg.limits.ping_interval_ms)),
        max_connections: cfg.limits.max_connections,
        max_connections_per_shard: cfg.limits.max_connections_per_shard,
        max_deflate_memory: cfg.limits.max_deflate_memory,
    }
}

/// A bound, not listening, SO_REUSEPORT socket on a free port of `addr`'s
/// address: the shards bind the same port and listen.
fn reserve_any_port(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

#[allow(clippy::too_many_arguments)]
async fn shard_main(
    me: usize,
    n: usize,
    seed: mesh::MeshSeed<ShardMsg>,
    v: Validated,
    all_stats: Arc<Vec<Arc<ShardStats>>>,
    router_cfg: RouterConfig,
    ready: mpsc::Sender<Result<usize, String>>,
    shutdown: Arc<AtomicBool>,
    open_connections: Arc<AtomicUsize>,
    extras: ShardExtras,
) {
    let ShardExtras {
        history,
        auth,
        tls,
        handover,
        longpoll_calls,
        control,
        bridge_nonces,
        cluster,
    } = extras;
    let (steps, acks, asks) = control;
    let (lp_to, lp_calls) = longpoll_calls;
    let stats = all_stats[me].clone();
    let cfg = &v.config;
    let ends = seed.connect(stats.clone(), cfg.router.mesh_overflow_limit).await;
    let congestion = ends.mesh.congestion();
    let mut core = Router::new(me, n, &router_cfg, ShardLink::Mesh(ends.mesh), stats.clone());
    if let Some((store, kept)) = history {
        core.load_history(kept.iter());
        core.set_history_store(store);
    }
    if let Some(asks) = asks {
        core.set_control(asks);
    }
    let from_node = cluster.map(|(link, rx)| {
        core.set_cluster(link);
        rx
    });
    let verdicts = auth.map(|(submitter, verdicts)| {
        core.set_auth_pool(submitter);
        verdicts
    });
    let router = Rc::new(RefCell::new(core));
    let conns = Rc::new(ConnCtx {
        router: router.clone(),
        stats: stats.clone(),
        all_stats,
        congestion: congestion.clone(),
        limits: std::cell::Cell::new(conn_limits(cfg)),
        open_connections,
        longpoll: longpoll::Hub::new(me, lp_to),
        bridge_nonces,
    });
    let ctx = Rc::new(ShardCtx {
        router,
        stats,
        congestion,
        conns,
    });

    let mut listeners = Vec::new();
    for (l, bind) in &v.listeners {
        let bound = match bind {
            Bind::Tcp(addr) if l.served_by(me) => bind_listener(*addr).map(|s| Some(Socket::Tcp(s))),
            Bind::Tcp(_) => Ok(None),
            Bind::Unix(path) if me == 0 => bind_unix(path, l.mode.as_deref()).map(|s| Some(Socket::Unix(s))),
            Bind::Unix(_) => Ok(None),
        };
        match bound {
            Ok(sock) => listeners.push((l.clone(), sock)),
            Err(e) => {
                let _ = ready.send(Err(format!("cannot listen on {bind} ({:?}): {e}", l.kind)));
                return;
            }
        }
    }

    let mut tasks = Vec::new();
    let (budget, spin) = (cfg.router.mesh_batch, Duration::from_micros(cfg.router.mesh_spin_us));
    for inb in ends.inbound {
        let inb = Rc::new(inb);
        let name = format!("mesh drain from shard {}", inb.from);
        let c = ctx.clone();
        tasks.push(spawn_contained(&ctx, name, move || {
            drain_peer(c.clone(), inb.clone(), budget, spin)
        }));
    }
    for flusher in ends.flushers {
        let flusher = Rc::new(flusher);
        let name = format!("mesh flusher to shard {}", flusher.to);
        tasks.push(spawn_contained(&ctx, name, move || {
            let f = flusher.clone();
            async move { f.run().await }
        }));
    }
    let c = ctx.clone();
    tasks.push(spawn_contained(&ctx, "memory give-back".into(), move || {
        give_back_memory(c.clone())
    }));
    let c = ctx.clone();
    tasks.push(spawn_contained(&ctx, "router timers".into(), move || run_timers(c.clone())));
    if let Some(rx) = from_node {
        tasks.push(spawn_drain(&ctx, "cluster", rx, Router::on_cluster));
    }
    if let Some(rx) = verdicts {
        tasks.push(spawn_drain(&ctx, "login verdicts", rx, Router::auth_verdict));
    }
    let settings: Rc<Vec<Rc<connection::Listener>>> = Rc::new(
        listeners
            .iter()
            .zip(tls.iter())
            .map(|((l, _), tls)| {
                Rc::new(connection::Listener {
                    kind: l.kind,
                    path: l.path.as_str().into(),
                    metrics: l.metrics,
                    tls: std::cell::RefCell::new(tls.clone()),
                    deflate: l.deflate.as_ref().map(|d| d.settings()),
                    longpoll: l.longpoll.as_ref().map(|d| d.settings()),
                    bridge: l.bridge.as_ref().map(|b| b.settings()),
                })
            })
            .collect(),
    );
    let (c, reloadable) = (ctx.clone(), settings.clone());
    tasks.push(spawn_contained(&ctx, "reconfiguration".into(), move || {
        let (c, steps, acks, listeners) = (c.clone(), steps.clone(), acks.clone(), reloadable.clone());
        async move {
            while let Ok(step) = steps.recv_async().await {
                match step {
                    Step::Prepare(cfg, limits, tls) => {
                        let done = c.router.borrow_mut().reconfigure(&cfg);
                        c.conns.limits.set(limits);
                        for (l, new) in listeners.iter().zip(tls.into_iter().flatten()) {
                            let mut now = l.tls.borrow_mut();
                            if now.is_some() && new.is_some() {
                                *now = new;
                            }
                        }
                        let _ = acks.send((me, done));
                    }
                    Step::Open => c.router.borrow_mut().open_realms(),
                    Step::Answer(asked, outcome) => c.router.borrow_mut().reload_answer(asked.session, asked.request, outcome),
                }
            }
        }
    }));
    let (handover_to, handed) = handover;
    let accepting = tasks.len();
    tasks.push(glommio::spawn_local(take_handovers(ctx.conns.clone(), handed, settings.clone())));
    tasks.push(glommio::spawn_local(longpoll::serve_calls(ctx.conns.clone(), lp_calls)));
    for (k, (_, sock)) in listeners.into_iter().enumerate() {
        let settings = settings[k].clone();
        match sock {
            Some(Socket::Tcp(sock)) => tasks.push(glommio::spawn_local(accept_loop(ctx.conns.clone(), sock, settings))),
            Some(Socket::Unix(sock)) => tasks.push(glommio::spawn_local(accept_unix(
                ctx.conns.clone(),
                sock,
                (k, settings),
                handover_to.clone(),
            ))),
            None => {}
        }
    }
    // webhooks: sessions of shard 0, each with its delivery thread
    if me == 0 {
        for r in &cfg.realms {
            for w in &r.webhooks {
                match crate::session::webhook::start_delivery(&r.name, w, ctx.stats.clone()) {
                    Ok(queue) => {
                        let role = w.role.clone().unwrap_or_else(|| r.anonymous_role.clone());
                        let run = crate::session::webhook::run(ctx.conns.clone(), r.name.clone(), w.clone(), role, queue);
                        glommio::spawn_local(run).detach();
                    }
                    Err(e) => error!(realm = %r.name, topic = %w.topic, error = %e, "cannot start a webhook's delivery thread"),
                }
            }
        }
    }
    let _ = ready.send(Ok(me));

    while !shutdown.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    debug!(shard = me, "shutting down");
    // Stop accepting, say GOODBYE to every session, wait for them to go.
    drop(tasks.split_off(accepting));
    ctx.router.borrow_mut().shutdown();
    // Long-poll clients cannot answer the GOODBYE (the listeners are
    // closed): their transports close now, a receive that waits gets the
    // GOODBYE first (and the connection slots they hold, which hold this
    // shard's context, go).
    ctx.conns.longpoll.clear(&ctx.conns);
    let deadline = Instant::now() + ctx.conns.limits().shutdown_grace;
    while ctx.router.borrow().connection_count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    // and the connection tasks that are not sessions (an HTTP request, a
    // long-poll request waiting on another shard's answer) end as well
    while ctx.stats.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let left = ctx.router.borrow().connection_count();
    if left > 0 {
        warn!(
            shard = me,
            connections = left,
            "closing connections that did not finish in the shutdown grace period"
        );
        ctx.router.borrow_mut().kill_all();
        // Killed connections end at their next turn; wait for their tasks
        // (briefly: one still in its handshake ends by its own timeout).
        let deadline = Instant::now() + Duration::from_millis(500);
        while ctx.stats.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }
    drop(tasks);
}

/// A listening socket of one shard.
enum Socket {
    Tcp(TcpListener),
    Unix(glommio::net::UnixListener),
}

async fn accept_loop(ctx: Rc<ConnCtx>, listener: TcpListener, settings: Rc<connection::Listener>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let addr = stream.peer_addr().ok();
                glommio::spawn_local(connection::serve(ctx.clone(), stream, addr, settings.clone())).detach();
            }
            Err(e) => {
                error!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Accepts on a Unix listener (shard 0 only: a Unix socket cannot be bound
/// once per shard as a TCP port is with SO_REUSEPORT) and gives each
/// connection to the shard with the fewest connections, counting those
/// handed over and not yet taken up; ties go to the lowest shard, this one
/// first. A shard whose queue is full is passed over.
async fn accept_unix(
    ctx: Rc<ConnCtx>,
    listener: glommio::net::UnixListener,
    (k, settings): (usize, Rc<connection::Listener>),
    shards: Arc<Vec<flume::Sender<Handover>>>,
) {
    let me = 0;
    loop {
        match listener.shared_accept().await {
            Ok(stream) => {
                let load = |i: usize| ctx.all_stats[i].connections.load(Ordering::Relaxed) as usize + shards[i].len();
                let to = (0..shards.len()).min_by_key(|&i| (load(i), i != me, i)).unwrap_or(me);
                let stream = if to == me {
                    stream
                } else {
                    match shards[to].try_send(Handover { listener: k, stream }) {
                        Ok(()) => continue,
                        Err(e) => {
                            ShardStats::inc(&ctx.stats.unix_handover_full);
                            e.into_inner().stream
                        }
                    }
                };
                ShardStats::inc(&ctx.stats.unix_accepted);
                glommio::spawn_local(connection::serve(ctx.clone(), stream.bind_to_executor(), None, settings.clone())).detach();
            }
            Err(e) => {
                error!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves the Unix connections shard 0 hands to this shard.
async fn take_handovers(ctx: Rc<ConnCtx>, queue: flume::Receiver<Handover>, settings: Rc<Vec<Rc<connection::Listener>>>) {
    while let Ok(h) = queue.recv_async().await {
        let Some(listener) = settings.get(h.listener) else { continue };
        ShardStats::inc(&ctx.stats.unix_accepted);
        glommio::spawn_local(connection::serve(ctx.clone(), h.stream.bind_to_executor(), None, listener.clone())).detach();
    }
}

/// A socket file left at `path` by a router that is gone is removed; one a
/// live process still accepts on, or a file that is not a socket, is an
/// error (never removed).
fn clear_stale_socket(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another process accepts on this socket",
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

/// Binds a Unix listener at `path`, with the permission bits `mode` (octal).
fn bind_unix(path: &std::path::Path, mode: Option<&str>) -> std::io::Result<glommio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let listener = glommio::net::UnixListener::bind(path)?;
    if let Some(mode) = mode {
        let bits = u32::from_str_radix(mode, 8).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "mode is not octal"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits))?;
    }
    Ok(listener)
}

/// Drains one peer's queue in budgeted batches; spins briefly when it runs
/// dry, then parks on the doorbell. Every turn it also wakes this shard's
/// paused readers if the router's congestion is over (the shard that cleared
/// it rings every doorbell).
///
/// A message whose handling panics is dropped; the panic is counted and the
/// local sessions the message was for are closed, so their state leaves the
/// tables on every shard; the other messages of the batch go on.
async fn drain_peer(ctx: Rc<ShardCtx>, inbound: Rc<mesh::Inbound<ShardMsg>>, budget: usize, spin: Duration) {
    let mut batch = Vec::with_capacity(budget);
    loop {
        ctx.congestion.wake_if_clear();
        let n = inbound.drain(&mut batch, budget);
        if n > 0 {
            ctx.stats.mesh_received.fetch_add(n as u64, Ordering::Relaxed);
            {
                let mut router = ctx.router.borrow_mut();
                for msg in batch.drain(..) {
                    let hit = msg.concerns();
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| router.on_shard_message(msg)));
                    if handled.is_err() {
                        ShardStats::inc(&ctx.stats.panics);
                        error!(
                            from = inbound.from,
                            "handling a message from another shard panicked; its sessions are closed"
                        );
                        router.contain_panic(hit);
                    }
                }
            }
            futures_lite::future::yield_now().await;
            continue;
        }
        if !spin.is_zero() {
            let until = Instant::now() + spin;
            while !inbound.has_pending() && Instant::now() < until {
                futures_lite::future::yield_now().await;
            }
            if inbound.has_pending() {
                continue;
            }
        }
        if !inbound.park().await {
            debug!(from = inbound.from, "peer shard gone");
            return;
        }
    }
}

/// Runs the router core's timers (call timeouts): sleeps until the earliest
/// deadline, or until the core sets an earlier one, then hands it the time.
async fn run_timers(ctx: Rc<ShardCtx>) {
    loop {
        let next = ctx.router.borrow().next_deadline();
        let sleep = async {
            match next {
                Some(deadline) => {
                    let now = Instant::now();
                    if deadline > now {
                        glommio::timer::sleep(deadline - now).await;
                    }
                }
                None => futures_lite::future::pending::<()>().await,
            }
        };
        let earlier = std::future::poll_fn(|cx| {
            let mut router = ctx.router.borrow_mut();
            if router.next_deadline() != next {
                return std::task::Poll::Ready(());
            }
            router.set_timer_waker(cx.waker());
            std::task::Poll::Pending
        });
        futures_lite::future::or(sleep, earlier).await;
        ctx.router.borrow_mut().on_time(Instant::now());
    }
}

/// Spawns a shard task that is restarted if it panics (counted, logged): a
/// mesh drain or flusher that died would stall its peer for good.
/// A task that hands everything another thread sends on `rx` to the
/// router (`handle`), in order: what is queued in one go (up to 256), then
/// a turn for the other tasks.
fn spawn_drain<T: 'static>(ctx: &Rc<ShardCtx>, name: &str, rx: flume::Receiver<T>, handle: fn(&mut Router, T)) -> glommio::Task<()> {
    let c = ctx.clone();
    spawn_contained(ctx, name.into(), move || {
        let (c, rx) = (c.clone(), rx.clone());
        async move {
            while let Ok(m) = rx.recv_async().await {
                handle(&mut c.router.borrow_mut(), m);
                for _ in 0..256 {
                    let Ok(m) = rx.try_recv() else { break };
                    handle(&mut c.router.borrow_mut(), m);
                }
                glommio::yield_if_needed().await;
            }
        }
    })
}

fn spawn_contained<F, Fut>(ctx: &Rc<ShardCtx>, name: String, make: F) -> glommio::Task<()>
where
    F: Fn() -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let stats = ctx.stats.clone();
    glommio::spawn_local(async move {
        loop {
            let run = futures_lite::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(make()));
            match run.await {
                Ok(()) => return,
                Err(_) => {
                    ShardStats::inc(&stats.panics);
                    error!(task = %name, "a shard task panicked; restarted");
                }
            }
        }
    })
}

/// A listening socket of one shard: `SO_REUSEPORT` so every shard joins the
/// address, and `SO_REUSEADDR` so the connections it closes leave TIME_WAIT
/// entries that a restarted router may bind over (Linux refuses a bind
/// without it while a TIME_WAIT socket of the port lacks it).
fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    // SAFETY: the descriptor is a listening TCP socket that nothing else owns.
    Ok(unsafe { TcpListener::from_raw_fd(sock.into_raw_fd()) })
}

/// After many of this shard's connections went away (a reconnect storm, a
/// load test), asks the allocator to return the freed pages to the system:
/// an idle shard does not allocate, and mimalloc purges only when called.
/// Steady traffic never triggers it, so it costs nothing on the hot path.
async fn give_back_memory(ctx: Rc<ShardCtx>) {
    let mut peak = 0u64;
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let now = ctx.stats.connections.load(Ordering::Relaxed).max(0) as u64;
        peak = peak.max(now);
        if peak - now >= 256 && now <= peak / 2 {
            ctx.router.borrow_mut().shrink_to_fit();
            // SAFETY: mi_collect has no preconditions; it works on the
            // calling thread's heap and the process-wide free lists.
            unsafe { libmimalloc_sys::mi_collect(true) };
            debug!(connections = now, peak, "gave freed memory back to the system");
            peak = now;
        }
    }
}

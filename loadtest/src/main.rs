//! `loadtest`: a load generator for WAMP routers.
//!
//! Speaks plain WAMP over WebSocket and RawSocket (JSON or MessagePack), so it
//! drives any router. Scenarios: `pubsub`, `fanout`, `rpc`, `connect`, and
//! `ceiling` (a null forwarder: the physical limit of this machine for the
//! same frames). Closed loop (maximum rate within an in-flight window) or open
//! loop (`--rate`, latency from each message's intended send time, free of
//! coordinated omission). Latencies go into HDR histograms. `--json` writes
//! every figure, with the percentile curve and a timeline of throughput (and,
//! with `--router-pid`, the router's CPU and RSS); `loadtest report` turns
//! such files into one self-contained HTML page (or SVG) for comparison.

mod blocking;
mod ceiling;
mod client;
mod report;
mod run;
mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use switchyard::wamp::message::Serializer;

use crate::run::{join_workers, now_ns, spawn_workers, Shared};
use crate::scenario::{Pace, Setup};

#[derive(Debug, Parser)]
#[command(version, about = "Load generator for WAMP routers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// P publishers, S subscribers, T topics.
    Pubsub {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        #[arg(long, default_value_t = 1)]
        topics: usize,
    },
    /// One publisher to S subscribers on one topic.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
    },
    /// C callers, K callees; N calls in flight per caller (--window).
    Rpc {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        callers: usize,
        #[arg(long, default_value_t = 1)]
        callees: usize,
    },
    /// Open N sessions and hold them; with --router-pid (or --pid), the
    /// router's RSS per session.
    Connect {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Connections opened at once per load thread.
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
    },
    /// The physical ceiling: the same frames through a null forwarder.
    Ceiling {
        #[command(flatten)]
        common: Common,
        /// What to mirror: pub/sub throughput or RPC ping-pong.
        #[arg(long, value_enum, default_value_t = CeilingKind::Pubsub)]
        mode: CeilingKind,
        /// CPU to pin the forwarder to (the router's CPU in a comparison).
        #[arg(long)]
        forwarder_cpu: Option<usize>,
        /// The glommio forwarder's spin before park in µs: the value of the
        /// router's `router.spin_before_park_us` it stands for.
        #[arg(long, default_value_t = 0)]
        forwarder_spin_us: u64,
        /// The ping-pong's endpoints: this load generator's glommio client,
        /// or the reference of plain blocking sockets on OS threads.
        #[arg(long, value_enum, default_value_t = Impl::Glommio)]
        client: Impl,
        /// The forwarder: glommio (as the router runs) or blocking threads.
        #[arg(long, value_enum, default_value_t = Impl::Glommio)]
        forwarder: Impl,
    },
    /// One self-contained HTML page (or SVG) of runs' --json files, overlaid.
    ///
    /// Latency percentile curves, throughput, router CPU and RSS over time
    /// (several runs overlaid, one colour each) and a table of each run's
    /// figures. Exit status 2 when a file is missing or not a loadtest run.
    Report {
        /// JSON files written by --json, one per run.
        #[arg(required = true, value_name = "RUN.json")]
        runs: Vec<PathBuf>,
        /// Where to write the report (default: report.html or report.svg).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = report::Format::Html)]
        format: report::Format,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum CeilingKind {
    Pubsub,
    /// A round trip through the forwarder and back, CALL-sized frames
    /// (`rpc` is the same, with `--inflight N` for the window).
    #[value(alias = "rpc")]
    Pingpong,
}

/// How the ceiling's client or forwarder is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Impl {
    Glommio,
    Blocking,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SerArg {
    Json,
    Msgpack,
    Cbor,
}

#[derive(Debug, Clone, Args)]
struct Common {
    /// Router URL: ws://HOST:PORT/PATH or rs://HOST:PORT.
    #[arg(long, default_value = "rs://127.0.0.1:8081")]
    url: String,
    /// Where subscribers and callees connect (default: --url), e.g. another
    /// node of a cluster, to measure what crosses nodes; publishers and
    /// callers use --url.
    #[arg(long)]
    receiver_url: Option<String>,
    /// How long the senders wait once every receiver is ready, in ms (a
    /// cluster learns of subscriptions and registrations one NATS round
    /// trip after they are acknowledged).
    #[arg(long, default_value_t = 0)]
    settle_ms: u64,
    /// The URIs' prefix: `<prefix>.topic.N`, `<prefix>.echo.N` (several
    /// load generators on one router or cluster keep apart by it).
    #[arg(long, default_value = "loadtest")]
    uri_prefix: String,
    #[arg(long, value_enum, default_value_t = SerArg::Msgpack)]
    serializer: SerArg,
    #[arg(long, default_value = "realm1")]
    realm: String,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Open loop: total messages per second over all senders.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: messages in flight per sender (`--inflight` is the
    /// same option).
    #[arg(long, alias = "inflight")]
    window: Option<u64>,
    /// Payload padding in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Load threads (default: one per CPU in --cpus, else 1).
    #[arg(long)]
    threads: Option<usize>,
    /// CPUs to pin the load threads to, e.g. "1" or "2-3".
    #[arg(long)]
    cpus: Option<String>,
    /// How long an idle load thread polls before it sleeps in the kernel,
    /// in µs (glommio's spin_before_park). Waking a sleeping thread costs
    /// tens of µs on a VM; spinning keeps that out of the measured latency
    /// at the price of a busy load core.
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Write every figure as JSON to this file (for scripts and `loadtest report`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The run's name in reports (default: the URL and the scenario).
    #[arg(long)]
    label: Option<String>,
    /// PID of the router: its CPU and RSS are sampled once per timeline
    /// interval (Linux /proc). `--pid` is the same option.
    #[arg(long, alias = "pid", value_name = "PID")]
    router_pid: Option<u32>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Log every session in with WAMP-Ticket as this authid (with --ticket).
    #[arg(long)]
    authid: Option<String>,
    #[arg(long)]
    ticket: Option<String>,
    /// PEM file of the CAs to trust for wss:// and rss:// URLs.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// WAMP-over-Batched-WebSocket (wamp.2.*.batched): what one flush sends
    /// goes as one WebSocket message.
    #[arg(long)]
    batched: bool,
}

/// Latency percentiles in microseconds (read back by `report`).
#[derive(Debug, Serialize, serde::Deserialize)]
struct Latency {
    samples: u64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

impl Latency {
    fn from(h: &Histogram<u64>) -> Latency {
        let us = |v: u64| v as f64 / 1000.0;
        Latency {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// One point of the latency distribution.
#[derive(Debug, Serialize)]
struct Percentile {
    percentile: f64,
    us: f64,
}

/// Points per decade of "nines" in [`percentiles`].
const PERCENTILE_STEPS_PER_NINE: u32 = 10;
/// The last percentile before the maximum: 99.999 %.
const PERCENTILE_NINES: u32 = 5;

/// The latency distribution on a log scale of nines: 0 %, then
/// `PERCENTILE_STEPS_PER_NINE` points per decade (90 %, 99 %, ... and the
/// points between) up to 99.999 %, then 100 % (the maximum).
fn percentiles(h: &Histogram<u64>) -> Vec<Percentile> {
    if h.is_empty() {
        return Vec::new();
    }
    let steps = PERCENTILE_STEPS_PER_NINE * PERCENTILE_NINES;
    let mut out: Vec<Percentile> = (0..=steps)
        .map(|i| {
            let nines = f64::from(i) / f64::from(PERCENTILE_STEPS_PER_NINE);
            let q = 1.0 - 10f64.powf(-nines);
            Percentile {
                percentile: (q * 100.0 * 1e6).round() / 1e6,
                us: h.value_at_quantile(q) as f64 / 1000.0,
            }
        })
        .collect();
    out.push(Percentile {
        percentile: 100.0,
        us: h.max() as f64 / 1000.0,
    });
    out
}

/// One interval of the measurement.
#[derive(Debug, Serialize)]
struct TimelinePoint {
    /// End of the interval, seconds since the measurement started.
    t_s: f64,
    sent_per_s: f64,
    received_per_s: f64,
    /// The router's CPU over the interval, % of one core (with --router-pid).
    #[serde(skip_serializing_if = "Option::is_none")]
    router_cpu_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    router_rss_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Timeline {
    /// Length of one interval (the last one may be shorter).
    interval_s: f64,
    points: Vec<TimelinePoint>,
}

/// The sampling interval for a measurement of `secs`: the shortest of a few
/// round values that gives at most 300 points.
fn timeline_interval(secs: f64) -> f64 {
    [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|i| secs / i <= 300.0)
        .unwrap_or(10.0)
}

/// The router process over the measurement (with --router-pid).
#[derive(Debug, Serialize)]
struct RouterUsage {
    pid: u32,
    /// CPU time over the whole measurement, % of one core.
    cpu_pct_mean: f64,
    /// The busiest interval.
    cpu_pct_max: f64,
    rss_start_bytes: u64,
    rss_end_bytes: u64,
    rss_max_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    /// The run's name in reports (--label).
    label: String,
    scenario: String,
    target: String,
    serializer: String,
    mode: String,
    duration_s: f64,
    payload_bytes: usize,
    sent: u64,
    received: u64,
    /// Deliveries expected but not seen (pub/sub).
    lost: Option<u64>,
    out_of_order: u64,
    errors: u64,
    sent_per_s: f64,
    received_per_s: f64,
    latency: Latency,
    /// The latency distribution (see [`percentiles`]).
    percentiles: Vec<Percentile>,
    timeline: Timeline,
    #[serde(skip_serializing_if = "Option::is_none")]
    router: Option<RouterUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_before_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_after_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_per_session_bytes: Option<f64>,
    /// Seconds from the start until every session was set up (for
    /// `connect`, the time to open them all).
    setup_s: f64,
    /// `connect`: sessions opened (WELCOME received) per second of set-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions_per_s: Option<f64>,
}

fn parse_cpus(s: &Option<String>) -> Result<Vec<usize>, String> {
    match s {
        None => Ok(Vec::new()),
        Some(s) => switchyard::config::parse_cpu_list(s).map_err(|e| format!("--cpus: {e}")),
    }
}

struct Plan {
    label: String,
    senders: usize,
    /// Deliveries each sent message should produce (pub/sub), for loss.
    fanout_per_sender: Vec<u64>,
    roles: usize,
}

fn execute<F, Fut>(common: &Common, plan: Plan, pace: Pace, work: F) -> Result<Report, String>
where
    F: Fn(usize, usize, Arc<Shared>, run::Hist) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let cpus = parse_cpus(&common.cpus)?;
    if let Some(pid) = common.router_pid {
        if run::proc_usage(pid).is_none() {
            return Err(format!("--router-pid {pid}: cannot read /proc/{pid}/stat"));
        }
    }
    let threads = common.threads.unwrap_or(cpus.len().max(1)).max(1);
    let shared = Shared::new(plan.senders.max(1));
    let s2 = shared.clone();
    let w = work.clone();
    let handles = spawn_workers(threads, &cpus, common.spin_us, move |t, hist| {
        let shared = s2.clone();
        let w = w.clone();
        async move { w(t, threads, shared, hist).await }
    })?;

    // setup: wait for every role
    let setup_start = Instant::now();
    let deadline = setup_start + Duration::from_secs(60);
    while shared.ready.load(Ordering::Acquire) < plan.roles {
        if Instant::now() > deadline {
            shared.stop.store(true, Ordering::SeqCst);
            shared.done.store(true, Ordering::SeqCst);
            join_workers(handles);
            return Err(format!(
                "only {} of {} sessions were set up within 60 s",
                shared.ready.load(Ordering::Relaxed),
                plan.roles
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let failures = shared.failures.lock().map(|f| f.clone()).unwrap_or_default();
    if !failures.is_empty() {
        shared.stop.store(true, Ordering::SeqCst);
        shared.done.store(true, Ordering::SeqCst);
        join_workers(handles);
        return Err(format!("setup failed: {}", failures.join("; ")));
    }

    let setup_s = setup_start.elapsed().as_secs_f64();
    let warm = Duration::from_secs_f64(common.warmup.max(0.0));
    let dur = Duration::from_secs_f64(common.duration.max(0.1));
    let t0 = now_ns();
    shared.window_start.store(t0 + warm.as_nanos() as u64, Ordering::SeqCst);
    shared.window_end.store(t0 + (warm + dur).as_nanos() as u64, Ordering::SeqCst);
    shared.go.store(true, Ordering::Release);

    let bar = if common.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new((warm + dur).as_millis() as u64);
        b.set_style(ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        b
    };
    let start = Instant::now();
    let window_at = start + warm;
    let end_at = window_at + dur;
    let progress = |last: &mut (Instant, u64, u64)| {
        let (t, s, r) = (Instant::now(), shared.sent.get(), shared.received.get());
        let dt = t.duration_since(last.0).as_secs_f64().max(1e-9);
        bar.set_position(start.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "{}: sent {:.0}/s received {:.0}/s errors {}",
            plan.label,
            (s - last.1) as f64 / dt,
            (r - last.2) as f64 / dt,
            shared.errors.get()
        ));
        *last = (t, s, r);
    };
    // warm-up
    let mut shown = (start, 0u64, 0u64);
    while Instant::now() < window_at {
        std::thread::sleep(Duration::from_millis(100).min(window_at.saturating_duration_since(Instant::now())));
        progress(&mut shown);
    }
    // measurement: one timeline point per interval
    let interval = timeline_interval(dur.as_secs_f64());
    let tick_hz = run::clock_ticks_per_s();
    let begin = (Instant::now(), shared.sent.get(), shared.received.get());
    let router_begin = common.router_pid.and_then(run::proc_usage);
    let mut router_last = router_begin;
    let mut rss_max = router_begin.and_then(|u| u.rss_bytes);
    let mut cpu_max = 0.0f64;
    let mut last = begin;
    let mut points = Vec::new();
    for k in 1u32.. {
        let tick = (window_at + Duration::from_secs_f64(interval * f64::from(k))).min(end_at);
        while Instant::now() < tick {
            std::thread::sleep(Duration::from_millis(100).min(tick.saturating_duration_since(Instant::now())));
            progress(&mut shown);
        }
        let now = (Instant::now(), shared.sent.get(), shared.received.get());
        let dt = now.0.duration_since(last.0).as_secs_f64().max(1e-9);
        let usage = common.router_pid.and_then(run::proc_usage);
        let cpu = match (router_last, usage) {
            (Some(a), Some(b)) => Some(b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / tick_hz / dt * 100.0),
            _ => None,
        };
        if let Some(c) = cpu {
            cpu_max = cpu_max.max(c);
        }
        if let Some(r) = usage.and_then(|u| u.rss_bytes) {
            rss_max = Some(rss_max.map_or(r, |m| m.max(r)));
        }
        if usage.is_some() {
            router_last = usage;
        }
        points.push(TimelinePoint {
            t_s: now.0.duration_since(begin.0).as_secs_f64(),
            sent_per_s: (now.1 - last.1) as f64 / dt,
            received_per_s: (now.2 - last.2) as f64 / dt,
            router_cpu_pct: cpu,
            router_rss_bytes: usage.and_then(|u| u.rss_bytes),
        });
        last = now;
        if tick >= end_at {
            break;
        }
    }
    let end = last;
    shared.stop.store(true, Ordering::SeqCst);
    bar.finish_and_clear();
    let secs = end.0.duration_since(begin.0).as_secs_f64().max(1e-9);
    let router = match (common.router_pid, router_begin, router_last) {
        (Some(pid), Some(a), Some(b)) => Some(RouterUsage {
            pid,
            cpu_pct_mean: b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / tick_hz / secs * 100.0,
            cpu_pct_max: cpu_max,
            rss_start_bytes: a.rss_bytes.unwrap_or(0),
            rss_end_bytes: b.rss_bytes.unwrap_or(0),
            rss_max_bytes: rss_max.unwrap_or(0),
        }),
        _ => None,
    };

    // let in-flight messages arrive, then end every session
    let expected = |sh: &Shared| -> u64 {
        (0..plan.senders)
            .map(|i| sh.sent_by[i].get() * plan.fanout_per_sender.get(i).copied().unwrap_or(0))
            .sum()
    };
    let drain_deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < drain_deadline && !plan.fanout_per_sender.is_empty() && shared.received.get() < expected(&shared) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if plan.fanout_per_sender.is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    shared.done.store(true, Ordering::SeqCst);
    let hist = join_workers(handles);
    let lost = (!plan.fanout_per_sender.is_empty()).then(|| expected(&shared).saturating_sub(shared.received.get()));
    Ok(Report {
        label: common.label.clone().unwrap_or_else(|| format!("{} {}", common.url, plan.label)),
        scenario: plan.label,
        target: common.url.clone(),
        serializer: format!("{:?}", common.serializer).to_lowercase(),
        mode: match pace {
            Pace::Closed { window } => format!("closed loop, window {window}"),
            Pace::Open { per_sender } => format!("open loop, {per_sender:.0}/s per sender"),
        },
        duration_s: secs,
        payload_bytes: common.payload,
        sent: shared.sent.get(),
        received: shared.received.get(),
        lost,
        out_of_order: shared.out_of_order.get(),
        errors: shared.errors.get(),
        sent_per_s: (end.1 - begin.1) as f64 / secs,
        received_per_s: (end.2 - begin.2) as f64 / secs,
        latency: Latency::from(&hist),
        percentiles: percentiles(&hist),
        timeline: Timeline {
            interval_s: interval,
            points,
        },
        router,
        rss_before_bytes: None,
        rss_after_bytes: None,
        rss_per_session_bytes: None,
        setup_s,
        sessions_per_s: None,
    })
}

/// The receivers' set-up: `setup` itself, or the same at `--receiver-url`.
fn receiver_setup(common: &Common, setup: &Arc<Setup>) -> Result<Arc<Setup>, String> {
    let Some(url) = &common.receiver_url else {
        return Ok(setup.clone());
    };
    let mut target = client::parse_url(url)?;
    target.batched = setup.target.batched;
    target.tls = setup.target.tls.clone();
    if (url.starts_with("wss://") || url.starts_with("rss://")) && target.tls.is_none() {
        return Err("a wss:// or rss:// --receiver-url needs a TLS --url (and --ca)".into());
    }
    Ok(Arc::new(Setup {
        target,
        ..(**setup).clone()
    }))
}

/// Waits `--settle-ms` before the senders start.
async fn settle(common_settle_ms: u64) {
    if common_settle_ms > 0 {
        glommio::timer::sleep(Duration::from_millis(common_settle_ms)).await;
    }
}

fn setup_for(common: &Common, senders: usize, default_window: u64) -> Result<(Arc<Setup>, Pace), String> {
    let mut target = client::parse_url(&common.url)?;
    target.batched = common.batched;
    if common.batched && target.framing != switchyard::transport::Framing::WebSocket {
        return Err("--batched needs a ws:// or wss:// URL".into());
    }
    if common.url.starts_with("wss://") || common.url.starts_with("rss://") {
        let ca = common.ca.as_ref().ok_or("wss:// and rss:// need --ca FILE (the CAs to trust)")?;
        target.tls = Some(client::tls_config(ca)?);
    }
    let pace = match common.rate {
        Some(r) if r > 0.0 => Pace::Open {
            per_sender: r / senders.max(1) as f64,
        },
        Some(_) => return Err("--rate must be positive".into()),
        None => Pace::Closed {
            window: common.window.unwrap_or(default_window).max(1),
        },
    };
    let ser = match common.serializer {
        SerArg::Json => Serializer::Json,
        SerArg::Msgpack => Serializer::MsgPack,
        SerArg::Cbor => Serializer::Cbor,
    };
    Ok((
        Arc::new(Setup {
            target,
            ser,
            realm: common.realm.clone(),
            pace,
            pad: common.payload,
            ticket: common.authid.clone().zip(common.ticket.clone()),
        }),
        pace,
    ))
}

fn pubsub(common: &Common, label: &str, publishers: usize, subscribers: usize, topics: usize) -> Result<Report, String> {
    if publishers == 0 || topics == 0 {
        return Err("--publishers and --topics must be at least 1".into());
    }
    let (setup, pace) = setup_for(common, publishers, 64)?;
    let rx = receiver_setup(common, &setup)?;
    let settle_ms = common.settle_ms;
    // (the closures are copied into every connection's task)
    let prefix: &'static str = Box::leak(common.uri_prefix.clone().into_boxed_str());
    let topic = move |i: usize| format!("{prefix}.topic.{}", i % topics);
    let subs_on = |t: usize| (0..subscribers).filter(|s| s % topics == t).count() as u64;
    let plan = Plan {
        label: label.into(),
        senders: publishers,
        fanout_per_sender: (0..publishers).map(|p| subs_on(p % topics)).collect(),
        roles: publishers + subscribers,
    };
    execute(common, plan, pace, move |t, threads, shared, hist| {
        let (setup, rx) = (setup.clone(), rx.clone());
        async move {
            let mut tasks = Vec::new();
            for s in (0..subscribers).filter(|s| s % threads == t) {
                tasks.push(glommio::spawn_local(scenario::subscriber(
                    rx.clone(),
                    shared.clone(),
                    s,
                    topic(s),
                    hist.clone(),
                )));
            }
            // publishers start once every subscriber holds SUBSCRIBED
            while shared.ready.load(Ordering::Acquire) < subscribers && !shared.stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            settle(settle_ms).await;
            for p in (0..publishers).filter(|p| (p + subscribers) % threads == t) {
                let fanout = (0..subscribers).filter(|s| s % topics == p % topics).count() as u64;
                tasks.push(glommio::spawn_local(scenario::publisher(
                    setup.clone(),
                    shared.clone(),
                    p,
                    topic(p),
                    fanout,
                )));
            }
            for task in tasks {
                task.await;
            }
        }
    })
}

fn rpc(common: &Common, callers: usize, callees: usize) -> Result<Report, String> {
    if callers == 0 || callees == 0 {
        return Err("--callers and --callees must be at least 1".into());
    }
    let (setup, pace) = setup_for(common, callers, 1)?;
    let rx = receiver_setup(common, &setup)?;
    let settle_ms = common.settle_ms;
    // One procedure per callee; callers spread over them.
    let prefix: &'static str = Box::leak(common.uri_prefix.clone().into_boxed_str());
    let procedure = move |i: usize| format!("{prefix}.echo.{}", i % callees);
    let plan = Plan {
        label: "rpc".into(),
        senders: callers,
        fanout_per_sender: Vec::new(),
        roles: callers + callees,
    };
    execute(common, plan, pace, move |t, threads, shared, hist| {
        let (setup, rx) = (setup.clone(), rx.clone());
        async move {
            let mut tasks = Vec::new();
            for k in (0..callees).filter(|k| k % threads == t) {
                tasks.push(glommio::spawn_local(scenario::callee(rx.clone(), shared.clone(), k, procedure(k))));
            }
            while shared.ready.load(Ordering::Acquire) < callees && !shared.stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            settle(settle_ms).await;
            for c in (0..callers).filter(|c| (c + callees) % threads == t) {
                tasks.push(glommio::spawn_local(scenario::caller(
                    setup.clone(),
                    shared.clone(),
                    c,
                    procedure(c),
                    hist.clone(),
                )));
            }
            for task in tasks {
                task.await;
            }
        }
    })
}

fn connect(common: &Common, sessions: usize, concurrency: usize) -> Result<Report, String> {
    let (setup, pace) = setup_for(common, 1, 1)?;
    let pid = common.router_pid;
    let before = pid.and_then(run::rss_of);
    if pid.is_some() && before.is_none() {
        return Err(format!("cannot read /proc/{}/status", pid.unwrap_or(0)));
    }
    let plan = Plan {
        label: "connect".into(),
        senders: 0,
        fanout_per_sender: Vec::new(),
        roles: sessions,
    };
    let mut common = common.clone();
    common.warmup = 0.0;
    let after = Arc::new(std::sync::Mutex::new(None));
    let after2 = after.clone();
    let mut report = execute(&common, plan, pace, move |t, threads, shared, hist| {
        let setup = setup.clone();
        let after = after2.clone();
        async move {
            let queue = std::rc::Rc::new(std::cell::RefCell::new(
                (0..sessions).filter(|i| i % threads == t).rev().collect::<Vec<_>>(),
            ));
            let held: scenario::Held = Default::default();
            let mut tasks = Vec::new();
            for _ in 0..concurrency.max(1) {
                tasks.push(glommio::spawn_local(scenario::connector(
                    setup.clone(),
                    shared.clone(),
                    queue.clone(),
                    hist.clone(),
                    held.clone(),
                )));
            }
            tasks.push(glommio::spawn_local(scenario::release(setup.clone(), shared.clone(), held)));
            if t == 0 {
                // once everything is open, sample the router's memory
                while shared.ready.load(Ordering::Acquire) < sessions {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                glommio::timer::sleep(Duration::from_millis(300)).await;
                if let (Some(p), Ok(mut a)) = (pid, after.lock()) {
                    *a = run::rss_of(p);
                }
            }
            for task in tasks {
                task.await;
            }
        }
    })?;
    report.rss_before_bytes = before;
    let rss_after = after.lock().ok().and_then(|a| *a);
    report.rss_after_bytes = rss_after;
    report.sessions_per_s = Some(report.received as f64 / report.setup_s.max(1e-9));
    if let (Some(b), Some(a)) = (before, rss_after) {
        report.rss_per_session_bytes = Some((a as f64 - b as f64) / sessions.max(1) as f64);
    }
    Ok(report)
}

/// `forwarder_at`: the forwarder's CPU and spin before park (µs).
fn ceiling(
    common: &Common,
    mode: CeilingKind,
    forwarder_at: (Option<usize>, u64),
    client: Impl,
    forwarder: Impl,
) -> Result<Report, String> {
    let (forwarder_cpu, forwarder_spin_us) = forwarder_at;
    if client == Impl::Blocking && !matches!(mode, CeilingKind::Pingpong) {
        return Err("--client blocking runs the ping-pong (--mode pingpong or rpc) only".into());
    }
    let addr = match forwarder {
        Impl::Glommio => ceiling::start_forwarder(forwarder_cpu, forwarder_spin_us)?,
        Impl::Blocking => blocking::start_forwarder(forwarder_cpu)?,
    };
    let window = common.window.unwrap_or(match mode {
        CeilingKind::Pubsub => 64,
        CeilingKind::Pingpong => 1,
    });
    // frames of the size the router moves for this payload (a PUBLISH / CALL)
    let ser = match common.serializer {
        SerArg::Json => Serializer::Json,
        SerArg::Msgpack => Serializer::MsgPack,
        SerArg::Cbor => Serializer::Cbor,
    };
    let pad = "x".repeat(common.payload);
    let args = switchyard::wamp::Value::List(vec![
        switchyard::wamp::Value::UInt(0),
        switchyard::wamp::Value::UInt(1),
        switchyard::wamp::Value::UInt(now_ns()),
        switchyard::wamp::Value::Str(pad),
    ]);
    let size = match mode {
        CeilingKind::Pubsub => client::msg::publish(ser, 1, "loadtest.topic.0", false, &args).len(),
        CeilingKind::Pingpong => client::msg::call(ser, 1, "loadtest.echo.0", &args).len(),
    };
    let mut label = format!("ceiling-{}", format!("{mode:?}").to_lowercase());
    if client == Impl::Blocking || forwarder == Impl::Blocking {
        label += &format!(" ({client:?} client, {forwarder:?} forwarder)").to_lowercase();
    }
    let client_cpu = parse_cpus(&common.cpus)?.first().copied();
    let plan = Plan {
        label,
        senders: 1,
        fanout_per_sender: match mode {
            CeilingKind::Pubsub => vec![1],
            CeilingKind::Pingpong => Vec::new(),
        },
        roles: 2,
    };
    let pace = Pace::Closed { window };
    let mut common = common.clone();
    common.url = format!("rs://{addr} (null forwarder)");
    common.threads = Some(1);
    execute(&common, plan, pace, move |t, _threads, shared, hist| async move {
        if t == 0 {
            match (mode, client) {
                (_, Impl::Blocking) => {
                    // the pair runs on its own threads; this task waits for them
                    let threads = blocking::pingpong_pair(addr, shared, size, window, client_cpu);
                    while !threads.iter().all(|t| t.is_finished()) {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                    for t in threads {
                        if let Ok(h) = t.join() {
                            let _ = hist.borrow_mut().add(&h);
                        }
                    }
                }
                (CeilingKind::Pubsub, Impl::Glommio) => ceiling::pubsub_pair(addr, shared, size, window, hist).await,
                (CeilingKind::Pingpong, Impl::Glommio) => ceiling::pingpong_pair(addr, shared, size, window, hist).await,
            }
        }
    })
}

fn print(r: &Report) {
    println!("scenario        {}", r.scenario);
    println!("label           {}", r.label);
    println!("target          {} ({})", r.target, r.serializer);
    println!("mode            {}, payload {} B", r.mode, r.payload_bytes);
    println!("measured        {:.2} s", r.duration_s);
    println!("sent            {} ({:.0}/s)", r.sent, r.sent_per_s);
    println!("received        {} ({:.0}/s)", r.received, r.received_per_s);
    if let Some(l) = r.lost {
        println!("lost            {l}");
    }
    println!("out of order    {}", r.out_of_order);
    println!("errors          {}", r.errors);
    let l = &r.latency;
    println!(
        "latency (µs)    p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  ({} samples)",
        l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.samples
    );
    if let Some(rate) = r.sessions_per_s {
        println!("sessions        {} opened in {:.3} s ({rate:.0}/s)", r.received, r.setup_s);
    }
    if let (Some(b), Some(a)) = (r.rss_before_bytes, r.rss_after_bytes) {
        println!(
            "router RSS      {:.1} MiB -> {:.1} MiB ({:.0} B per session)",
            b as f64 / 1048576.0,
            a as f64 / 1048576.0,
            r.rss_per_session_bytes.unwrap_or(0.0)
        );
    }
    if let Some(u) = &r.router {
        println!(
            "router          CPU {:.0} % of a core (busiest {:.1} s interval {:.0} %), RSS {:.1} MiB (max {:.1} MiB)",
            u.cpu_pct_mean,
            r.timeline.interval_s,
            u.cpu_pct_max,
            u.rss_end_bytes as f64 / 1048576.0,
            u.rss_max_bytes as f64 / 1048576.0
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    now_ns();
    // many sessions need many sockets
    let _ = switchyard::shard::raise_open_file_limit();
    let (common, result) = match &cli.cmd {
        Cmd::Pubsub {
            common,
            publishers,
            subscribers,
            topics,
        } => (common, pubsub(common, "pubsub", *publishers, *subscribers, *topics)),
        Cmd::Fanout { common, subscribers } => (common, pubsub(common, "fanout", 1, *subscribers, 1)),
        Cmd::Rpc { common, callers, callees } => (common, rpc(common, *callers, *callees)),
        Cmd::Connect {
            common,
            sessions,
            concurrency,
        } => (common, connect(common, *sessions, *concurrency)),
        Cmd::Ceiling {
            common,
            mode,
            forwarder_cpu,
            forwarder_spin_us,
            client,
            forwarder,
        } => (
            common,
            ceiling(common, *mode, (*forwarder_cpu, *forwarder_spin_us), *client, *forwarder),
        ),
        Cmd::Report { runs, out, format } => return report::main(runs, out.as_deref(), *format),
    };
    match result {
        Ok(report) => {
            print(&report);
            if let Some(path) = &common.json {
                let text = serde_json::to_string_pretty(&report).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("loadtest: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            if report.errors > 0 {
                eprintln!("loadtest: {} errors during the run", report.errors);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_on_a_scale_of_nines() {
        let mut h = run::new_hist();
        for us in 1..=100_000u64 {
            h.record(us * 1000).expect("record");
        }
        let p = percentiles(&h);
        assert_eq!(p.len() as u32, PERCENTILE_STEPS_PER_NINE * PERCENTILE_NINES + 2);
        assert_eq!(p[0].percentile, 0.0);
        for want in [90.0, 99.0, 99.9, 99.99, 99.999] {
            assert!(p.iter().any(|x| x.percentile == want), "{want} missing");
        }
        let last = p.last().expect("max");
        assert_eq!(last.percentile, 100.0);
        assert!((last.us - h.max() as f64 / 1000.0).abs() < 1e-9);
        assert!(p.windows(2).all(|w| w[0].percentile < w[1].percentile && w[0].us <= w[1].us));
        let p99 = p.iter().find(|x| x.percentile == 99.0).map(|x| x.us).unwrap_or(0.0);
        assert!((p99 - 99_000.0).abs() < 100.0, "{p99}");
        assert!(percentiles(&run::new_hist()).is_empty());
    }

    #[test]
    fn timeline_intervals() {
        assert_eq!(timeline_interval(1.5), 0.1);
        assert_eq!(timeline_interval(30.0), 0.1);
        assert_eq!(timeline_interval(60.0), 0.2);
        assert_eq!(timeline_interval(300.0), 1.0);
        assert_eq!(timeline_interval(100_000.0), 10.0);
    }

    #[test]
    fn options() {
        let cli = Cli::try_parse_from(["loadtest", "connect", "--pid", "7", "--label", "x"]).expect("--pid");
        let Cmd::Connect { common, .. } = cli.cmd else { panic!("connect") };
        assert_eq!(common.router_pid, Some(7));
        assert_eq!(common.label.as_deref(), Some("x"));
        let cli = Cli::try_parse_from(["loadtest", "rpc", "--router-pid", "8"]).expect("--router-pid");
        let Cmd::Rpc { common, .. } = cli.cmd else { panic!("rpc") };
        assert_eq!(common.router_pid, Some(8));
        assert!(Cli::try_parse_from(["loadtest", "report"]).is_err());
        let cli = Cli::try_parse_from(["loadtest", "report", "a.json", "b.json", "--format", "svg"]).expect("report");
        assert!(matches!(cli.cmd, Cmd::Report { ref runs, format: report::Format::Svg, .. } if runs.len() == 2));
    }
}

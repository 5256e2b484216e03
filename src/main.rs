//! The `switchyard` binary: command line, configuration, logging, start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use switchyard::config::{Config, Overrides};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A sharded, thread-per-core WAMP v2 router.
///
/// With no arguments it serves its embedded default configuration: realm
/// `realm1`, anonymous, WebSocket on 127.0.0.1:8080 path /ws and RawSocket on
/// 127.0.0.1:8081, one shard per usable CPU.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (default: the embedded configuration).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Number of shards (0 = one per CPU).
    #[arg(long)]
    shards: Option<usize>,
    /// CPUs to pin shards to, e.g. "0-3,6".
    #[arg(long, value_name = "LIST")]
    cpus: Option<String>,
    /// Address of the WebSocket listener (overrides the config).
    #[arg(long, value_name = "ADDR")]
    websocket: Option<String>,
    /// Address of the RawSocket listener (overrides the config).
    #[arg(long, value_name = "ADDR")]
    rawsocket: Option<String>,
    /// Log filter, e.g. "info" or "switchyard=debug".
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn usable_cpus() -> Vec<usize> {
    match glommio::CpuSet::online() {
        Ok(set) => {
            let mut v: Vec<usize> = set.into_iter().map(|l| l.cpu).collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", switchyard::config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    let mut config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("switchyard: configuration error: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::embedded(),
    };
    config.apply(&Overrides {
        shards: cli.shards,
        cpus: cli.cpus.clone(),
        websocket: cli.websocket.clone(),
        rawsocket: cli.rawsocket.clone(),
        log: cli.log.clone(),
    });
    let validated = match config.validate(&usable_cpus()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("switchyard: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter =
        tracing_subscriber::EnvFilter::try_new(&validated.config.router.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, shutdown.clone()) {
            eprintln!("switchyard: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    match switchyard::shard::run(validated, shutdown) {
        Ok(()) => {
            tracing::info!("switchyard stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::FAILURE
        }
    }
}

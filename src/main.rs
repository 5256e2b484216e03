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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check a configuration file as the router would at start (and at a
    /// reload) and exit: 0 when it is valid, 2 with the key and the problem
    /// when not.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Derive what a principal's config keeps from a password read from
    /// standard input (its first line), and print it as TOML.
    Secret {
        #[command(subcommand)]
        method: SecretMethod,
    },
}

#[derive(Debug, clap::Subcommand)]
enum SecretMethod {
    /// `token_sha256 = "..."`: what a `[[realm.bridge_key]]` keeps of an
    /// HTTP bridge bearer token.
    Bearer,
    /// `ticket = "..."`: an argon2id PHC hash.
    Ticket {
        /// argon2 memory in KiB (default: argon2's 19456).
        #[arg(long)]
        memory: Option<u32>,
        /// argon2 iterations (default: 2).
        #[arg(long)]
        iterations: Option<u32>,
    },
    /// `wampcra = { ... }`: a salted WAMP-CRA secret (PBKDF2-HMAC-SHA256).
    Wampcra {
        /// Salt (default: 16 random bytes, base64).
        #[arg(long)]
        salt: Option<String>,
        #[arg(long, default_value_t = 1000)]
        iterations: u32,
        #[arg(long, default_value_t = 32)]
        keylen: u32,
    },
    /// `scram = { ... }`: WAMP-SCRAM stored and server keys.
    Scram {
        /// argon2id13 (the spec's), argon2id-13 (autobahn's and Crossbar's)
        /// or pbkdf2.
        #[arg(long, default_value = "argon2id13")]
        kdf: String,
        /// Iterations (argon2: time cost; default 3; pbkdf2: default 4096).
        #[arg(long)]
        iterations: Option<u32>,
        /// argon2 memory in KiB.
        #[arg(long, default_value_t = 65536)]
        memory: u32,
    },
}

/// `switchyard secret ...`
fn secret(method: &SecretMethod) -> ExitCode {
    use switchyard::auth;
    let mut password = String::new();
    if std::io::stdin().read_line(&mut password).is_err() {
        eprintln!("switchyard: cannot read the password from standard input");
        return ExitCode::from(2);
    }
    let password = password.trim_end_matches(['\r', '\n']);
    let salt = || auth::b64(&rand::random::<[u8; 16]>());
    match method {
        SecretMethod::Bearer => {
            use sha2::Digest;
            println!("token_sha256 = \"{}\"", hex::encode(sha2::Sha256::digest(password.as_bytes())));
        }
        SecretMethod::Ticket { memory, iterations } => {
            let cost = (memory.is_some() || iterations.is_some()).then(|| (memory.unwrap_or(19456), iterations.unwrap_or(2)));
            println!("ticket = \"{}\"", auth::hash_ticket(password, cost));
        }
        SecretMethod::Wampcra {
            salt: s,
            iterations,
            keylen,
        } => {
            let s = s.clone().unwrap_or_else(salt);
            let key = auth::derive_cra_key(password, &s, *iterations, *keylen);
            println!("wampcra = {{ salt = \"{s}\", iterations = {iterations}, keylen = {keylen}, key = \"{key}\" }}");
        }
        SecretMethod::Scram { kdf, iterations, memory } => {
            let Some(k) = auth::Kdf::parse(kdf) else {
                eprintln!("switchyard: --kdf: '{kdf}' is not argon2id13, argon2id-13 or pbkdf2");
                return ExitCode::from(2);
            };
            let iterations = iterations.unwrap_or(if k == auth::Kdf::Pbkdf2 { 4096 } else { 3 });
            let s = salt();
            let Some(salted) = auth::scram_salted_password(password, k, &s, iterations, *memory) else {
                eprintln!("switchyard: these argon2 parameters are refused");
                return ExitCode::from(2);
            };
            let (_, stored, server) = auth::scram_keys(&salted);
            let memory = if k == auth::Kdf::Pbkdf2 {
                String::new()
            } else {
                format!(", memory = {memory}")
            };
            println!(
                "scram = {{ kdf = \"{kdf}\", salt = \"{s}\", iterations = {iterations}{memory}, stored_key = \"{}\", server_key = \"{}\" }}",
                auth::b64(&stored),
                auth::b64(&server)
            );
        }
    }
    ExitCode::SUCCESS
}

/// The CPUs this process may run on: online, and in its affinity mask
/// (`taskset`, systemd's `CPUAffinity=`, a cgroup cpuset).
fn usable_cpus() -> Vec<usize> {
    let mut v: Vec<usize> = match glommio::CpuSet::online() {
        Ok(set) => set.into_iter().map(|l| l.cpu).collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    };
    v.sort_unstable();
    v.dedup();
    // SAFETY: sched_getaffinity writes at most the size given into the
    // zeroed set; CPU_ISSET reads it within its bounds.
    let allowed = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0).then_some(set)
    };
    if let Some(set) = allowed {
        let in_mask: Vec<usize> = v
            .iter()
            .copied()
            .filter(|&c| c < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(c, &set) })
            .collect();
        if !in_mask.is_empty() {
            v = in_mask;
        }
    }
    v
}

/// Reads `path` (or the embedded default), applies the command line, and
/// validates the result, TLS certificates and keys included.
fn load(path: Option<&PathBuf>, overrides: &Overrides) -> Result<switchyard::config::Validated, String> {
    let mut config = match path {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::embedded(),
    };
    config.apply(overrides);
    let validated = config.validate(&usable_cpus()).map_err(|e| e.to_string())?;
    switchyard::transport::tls::acceptors(&validated.listeners)?;
    Ok(validated)
}

/// `switchyard check-config FILE`
fn check_config(file: &PathBuf) -> ExitCode {
    match load(Some(file), &Overrides::default()) {
        Ok(v) => {
            for w in &v.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: valid ({} realms, {} listeners, {} shards)",
                file.display(),
                v.config.realms.len(),
                v.listeners.len(),
                v.shard_cpus.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            // (a read or parse error names the file already)
            let named = e.contains(&file.display().to_string());
            if named {
                eprintln!("{e}");
            } else {
                eprintln!("{}: {e}", file.display());
            }
            ExitCode::from(2)
        }
    }
}

/// Tells systemd (when `NOTIFY_SOCKET` names its socket) the router's
/// state: `READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=...`.
fn sd_notify(state: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Custom(state)]) {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Secret { method }) => return secret(method),
        Some(Command::CheckConfig { file }) => return check_config(file),
        None => {}
    }
    if cli.print_default_config {
        print!("{}", switchyard::config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    let overrides = Overrides {
        shards: cli.shards,
        cpus: cli.cpus.clone(),
        websocket: cli.websocket.clone(),
        rawsocket: cli.rawsocket.clone(),
        log: cli.log.clone(),
    };
    let validated = match load(cli.config.as_ref(), &overrides) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("switchyard: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter =
        tracing_subscriber::EnvFilter::try_new(&validated.config.router.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if validated.config.router.log_format == "json" {
        // one object per line: time, level, target, fields, and the
        // spans' fields (a shard's thread runs in a `shard` span)
        logs.json().with_current_span(false).with_span_list(true).init();
    } else {
        logs.init();
    }

    for w in &validated.warnings {
        tracing::warn!("{w}");
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGINT, &shutdown),
        (signal_hook::consts::SIGTERM, &shutdown),
        (signal_hook::consts::SIGHUP, &reload),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, flag.clone()) {
            eprintln!("switchyard: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let path = cli.config.clone();
    let control = switchyard::shard::Control {
        shutdown,
        reload,
        reloader: Some(Box::new(move || load(path.as_ref(), &overrides))),
        notify: sd_notify,
    };
    match switchyard::shard::run(validated, control) {
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

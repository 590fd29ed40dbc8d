//! `atbus-relay`: the standalone relay. With no arguments it listens on tcp:// and udp://
//! 127.0.0.1:7800 with a development token it prints once; `--config`, flags and `ATBUS_RELAY_*`
//! variables (flags and variables win over the file) configure it; `check-config FILE`
//! validates a file. SIGTERM or Ctrl-C shut it down gracefully.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use atbus_core::engine::Token;
use atbus_relay::{RelayBuilder, RelayConfig};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "atbus-relay",
    version,
    about = "The atbus-rs relay: forwards frames between nodes that have no direct connection",
    long_about = "The atbus-rs relay: nodes connect to it with a shared token and reach each \
                  other through it, with their streams end to end. With no arguments it listens \
                  on tcp://127.0.0.1:7800 and udp://127.0.0.1:7800 and makes up a development \
                  token, printed once. Flags and ATBUS_RELAY_* variables override the file."
)]
struct Cli {
    /// A YAML configuration file (see relay.example.yml); without one, the defaults.
    #[arg(long, short, env = "ATBUS_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Addresses to listen on, comma-separated (e.g. tcp://0.0.0.0:7800,udp://0.0.0.0:7800);
    /// replaces the file's `listen`.
    #[arg(long, env = "ATBUS_RELAY_LISTEN", value_delimiter = ',')]
    listen: Vec<String>,
    /// `ip:port` of the admin HTTP side (health, metrics, JSON views, watch); replaces the
    /// file's `admin` (default 127.0.0.1:7801); `off` for none.
    #[arg(long, env = "ATBUS_RELAY_ADMIN")]
    admin: Option<String>,
    /// Other relays to keep connected, comma-separated; replaces the file's `peers`.
    #[arg(long, env = "ATBUS_RELAY_PEERS", value_delimiter = ',')]
    peer: Vec<String>,
    /// The relay's node name; replaces the file's `name`.
    #[arg(long, env = "ATBUS_RELAY_NAME")]
    name: Option<String>,
    /// A token nodes prove (at least 16 bytes); replaces the file's `tokens`. Prefer the
    /// variable to the flag: command lines are visible to other users.
    #[arg(long, env = "ATBUS_RELAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// etcd client URLs, comma-separated: discovery is served from etcd instead of the relay's
    /// memory; replaces the file's `registry.etcd.endpoints`.
    #[arg(long, env = "ATBUS_RELAY_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Seconds to let queued frames go out on shutdown.
    #[arg(long, default_value_t = 5)]
    drain_seconds: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validates a configuration file and names the first bad field.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return match RelayConfig::from_file(file).and_then(|config| config.check()) {
            Ok(()) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("atbus-relay: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = match &cli.config {
        Some(path) => RelayConfig::from_file(path)?,
        None => RelayConfig::default(),
    };
    // An empty variable means "not set", not one empty address.
    let listen: Vec<String> = cli
        .listen
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    let peers: Vec<String> = cli.peer.iter().filter(|a| !a.is_empty()).cloned().collect();
    if !listen.is_empty() {
        config.listen = listen;
    }
    if !peers.is_empty() {
        config.peers = peers;
    }
    let etcd: Vec<String> = cli.etcd.iter().filter(|a| !a.is_empty()).cloned().collect();
    if !etcd.is_empty() {
        match &mut config.registry.etcd {
            Some(section) => section.endpoints = etcd,
            None => {
                config.registry.etcd = Some(atbus_relay::config::EtcdSection {
                    endpoints: etcd,
                    prefix: None,
                    lease_ttl_seconds: None,
                })
            }
        }
    }
    match cli.admin.as_deref() {
        Some("off") | Some("") => config.admin = String::new(),
        Some(admin) => config.admin = admin.to_string(),
        None => {}
    }
    if let Some(name) = &cli.name {
        config.name = name.clone();
    }
    if let Some(token) = &cli.token {
        config.tokens = vec![token.clone()];
    }
    let mut builder = RelayBuilder::from_config(&config)?;
    if !builder.has_token() {
        let token = development_token()?;
        eprintln!(
            "WARNING: no token configured; nodes must prove this development token (printed \
             once, not stored):\n  ATBUS_TOKEN={token}\nSet tokens in the config file or \
             ATBUS_RELAY_TOKEN for anything but a try-out."
        );
        builder = builder.token(Token::new(&token)?);
    }
    // Signals are caught from before the relay says it is up: a SIGTERM right after that is a
    // graceful stop, not the default death.
    let signal = shutdown_signal()?;
    let relay = builder.start().await?;
    // One line per address on stdout: scripts and tests read them. A closed stdout is no
    // reason to stop relaying: write errors are ignored.
    let mut stdout = std::io::stdout();
    for address in relay.local_addresses() {
        let _ = writeln!(stdout, "listening on {address}");
    }
    if let Some(admin) = relay.admin_address() {
        let _ = writeln!(stdout, "admin on http://{admin}");
    }
    let _ = stdout.flush();
    tracing::info!(name = relay.name(), "relay running");
    signal.await;
    eprintln!("atbus-relay: shutting down");
    relay
        .shutdown_within(Duration::from_secs(cli.drain_seconds))
        .await;
    Ok(())
}

/// A token of 32 random bytes from the system, written in hex: the text itself is the token
/// (as a token from a config file is), so nodes take it as it is printed.
fn development_token() -> Result<String, Box<dyn std::error::Error>> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "the system has no randomness to make a token")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Resolves on SIGTERM or Ctrl-C; the handlers are installed when this is called.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let interrupt = tokio::signal::ctrl_c();
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt => {}
        }
        #[cfg(not(unix))]
        let _ = interrupt.await;
    })
}

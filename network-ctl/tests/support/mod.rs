//! Real processes for the network-ctl tests: an embedded relay on loopback, `network-ctl
//! server` and `network-ctl agent` processes with their config files in a temp directory, and
//! the CLI. Every process is killed when its handle drops.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use atbus_core::engine::Token;
use atbus_relay::Relay;

/// The bus token of every test.
pub const BUS_TOKEN: &str = "the network-ctl tests' shared bus token";
/// The operator token of every test server.
pub const ADMIN_TOKEN: &str = "the network-ctl tests' operator token";

/// The `network-ctl` binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_network-ctl")
}

/// A relay on 127.0.0.1, in this process; returns it and its address.
pub async fn relay() -> (Relay, String) {
    let relay = Relay::builder()
        .name("relay")
        .listen("tcp://127.0.0.1:0")
        .token(Token::new(BUS_TOKEN).unwrap())
        .start()
        .await
        .expect("the relay starts");
    let address = relay.local_addresses()[0].to_string();
    (relay, address)
}

/// A child process killed on drop, its stdout lines arriving on a channel.
pub struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Process {
    fn spawn(mut command: Command, what: &str, stderr: &Path) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr)
            .unwrap();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|error| panic!("{what} does not start: {error}"));
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Process {
            child,
            lines,
            what: what.to_string(),
        }
    }

    /// The next stdout line starting with `prefix`, within `within`.
    pub fn line(&self, prefix: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{} printed no line starting with {prefix:?} within {within:?}",
                    self.what
                ),
            }
        }
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The storage section of a server.yml.
pub enum Storage<'a> {
    /// A SQLite file.
    Sqlite(&'a Path),
    /// etcd at this endpoint, under this prefix.
    Etcd(&'a str, &'a str),
}

/// Writes a server.yml named `name` in `dir`; returns its path.
pub fn server_config(dir: &Path, name: &str, relay: &str, storage: Storage<'_>) -> PathBuf {
    server_config_relays(dir, name, &[relay], storage)
}

/// [`server_config`] with several relays.
pub fn server_config_relays(
    dir: &Path,
    name: &str,
    relays: &[&str],
    storage: Storage<'_>,
) -> PathBuf {
    let relay = relays.join("\", \"");
    let storage = match storage {
        Storage::Sqlite(path) => format!("  sqlite:\n    path: {}\n", path.display()),
        Storage::Etcd(endpoint, prefix) => {
            format!("  etcd:\n    endpoints: [\"{endpoint}\"]\n    prefix: \"{prefix}\"\n")
        }
    };
    let text = format!(
        "bus:\n  name: {name}\n  relays: [\"{relay}\"]\n  busToken: \"{BUS_TOKEN}\"\n\
         adminTokens: [\"{ADMIN_TOKEN}\"]\nnetworkAddr: 10.1.1.0/24\nstorage:\n{storage}"
    );
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `network-ctl server` with `config` and waits until it serves.
pub fn server(config: &Path) -> Process {
    let mut command = Command::new(binary());
    command.arg("server").arg("--config").arg(config);
    let process = Process::spawn(command, "network-ctl server", &config.with_extension("log"));
    process.line("network-manager ", Duration::from_secs(60));
    process
}

/// Writes a client.yml for the agent `name` (work dir `dir/name`); returns its path.
pub fn client_config(
    dir: &Path,
    name: &str,
    relay: &str,
    bootstrap_token: Option<&str>,
) -> PathBuf {
    client_config_relays(dir, name, &[relay], bootstrap_token)
}

/// [`client_config`] with several relays.
pub fn client_config_relays(
    dir: &Path,
    name: &str,
    relays: &[&str],
    bootstrap_token: Option<&str>,
) -> PathBuf {
    let relay = relays.join("\", \"");
    let mut text = format!(
        "bus:\n  name: {name}\n  relays: [\"{relay}\"]\n  busToken: \"{BUS_TOKEN}\"\nworkDir: {}\n",
        dir.join(name).display()
    );
    if let Some(token) = bootstrap_token {
        text.push_str(&format!("bootstrapToken: \"{token}\"\n"));
    }
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `network-ctl agent` with `config`, staying on the bus; returns it and the address
/// line it printed.
pub fn agent(config: &Path) -> (Process, String) {
    let mut command = Command::new(binary());
    command.arg("agent").arg("--config").arg(config);
    let process = Process::spawn(command, "network-ctl agent", &config.with_extension("log"));
    let line = process.line("address ", Duration::from_secs(60));
    (process, line)
}

/// Runs `network-ctl agent --once` with `config` to its end.
pub fn agent_once(config: &Path) -> Output {
    Command::new(binary())
        .arg("agent")
        .arg("--config")
        .arg(config)
        .arg("--once")
        .output()
        .unwrap()
}

/// The address in an agent's `address A/P in network N (...)` line.
pub fn address_of(line: &str) -> String {
    line.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}

/// Runs the CLI through `relay` with `args`, as an operator when `admin`.
pub fn cli(relay: &str, admin: bool, args: &[&str]) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("NETWORK_CTL_RELAY", relay)
        .env("NETWORK_CTL_BUS_TOKEN", BUS_TOKEN)
        .env("NETWORK_CTL_LOG", "warn");
    if admin {
        command.env("NETWORK_CTL_ADMIN_TOKEN", ADMIN_TOKEN);
    } else {
        command.env_remove("NETWORK_CTL_ADMIN_TOKEN");
    }
    command.output().unwrap()
}

/// The CLI's stdout, which must have succeeded.
pub fn cli_ok(relay: &str, args: &[&str]) -> String {
    let output = cli(relay, true, args);
    assert!(
        output.status.success(),
        "network-ctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The CLI's JSON answer.
pub fn cli_json(relay: &str, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    let text = cli_ok(relay, &args);
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{args:?} printed {text:?}: {error}"))
}

/// Polls `node state` through `relay` until the node is in `state` (a failing call counts as
/// not yet: the manager may be moving between relays); returns what the last call said.
pub fn wait_for_state(
    relay: &str,
    token: &str,
    state: &str,
    within: Duration,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let output = cli(relay, true, &["node", "state", token, "--output", "json"]);
        let node: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        if node["state"] == state {
            return node;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node is not {state} within {within:?}: {node} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

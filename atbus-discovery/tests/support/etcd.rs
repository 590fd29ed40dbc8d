//! A real etcd server for integration tests: one single-member cluster per [`EtcdServer`], on
//! free loopback ports, with a fresh data directory of its own.
//!
//! Each server listens on 127.0.0.1 only and picks its ports by binding 127.0.0.1:0, so tests
//! run in parallel without clashes. Its output goes to `etcd.log` in its temp directory (the
//! tail of that log is in every panic message of the harness, and is printed when a test panics
//! while the server is alive). [`EtcdServer::stop`] kills it with SIGKILL and keeps its data;
//! [`EtcdServer::start`] starts it again on the same ports and data, so a test can kill etcd and
//! bring it back. Dropping the server kills the process and removes the temp directory, panics
//! included.
//!
//! The program is `etcd` from `PATH`, or the one the `ETCD` environment variable names. Do not use
//! the server from a test with paused tokio time: its waits use real time and tokio timers.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, CompactionOptions, ConnectOptions};

/// The panic message when there is no etcd to run.
const NOT_INSTALLED: &str =
    "etcd is not installed: apt-get install -y etcd-server (scripts/test does it)";
/// How long etcd has to become healthy after its start.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long between two health probes while etcd starts.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// The member name of every test server.
const MEMBER: &str = "atbus-test";
/// How many times [`EtcdServer::new`] tries fresh ports when another process took one first.
const PORT_ATTEMPTS: usize = 5;
/// How many lines of the etcd log a panic message shows.
const LOG_TAIL_LINES: usize = 40;
/// The interval of watch progress notifications, where etcd supports setting it.
const WATCH_PROGRESS_NOTIFY_INTERVAL: &str = "1s";

/// One etcd process (or, while stopped, its ports and data), killed and removed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    /// The temp directory: `etcd.log` and the etcd data directory `data/`.
    dir: PathBuf,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts a fresh etcd on free loopback ports and waits until it serves requests.
    ///
    /// Panics, with the tail of the etcd log, if it is not healthy within 15 s; panics with
    /// "etcd is not installed: ..." if there is no etcd.
    pub async fn new() -> EtcdServer {
        let features = features();
        for attempt in 1..=PORT_ATTEMPTS {
            let [client_port, peer_port, metrics_port] = free_ports();
            let mut server = EtcdServer {
                client_port,
                peer_port,
                metrics_port,
                dir: fresh_dir(),
                child: None,
            };
            server.spawn(features);
            match server.wait_until_healthy().await {
                Ok(()) => return server,
                // Another process bound one of our ports between our probe and etcd's bind.
                Err(_)
                    if attempt < PORT_ATTEMPTS
                        && server.log().contains("address already in use") =>
                {
                    continue;
                }
                Err(why) => server.fail(&why),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts etcd again after [`stop`](Self::stop), on the same ports and with the same data,
    /// and waits until it serves requests. Does nothing if it is running.
    ///
    /// Panics, with the tail of the etcd log, if it is not healthy within 15 s (for instance
    /// because another process took one of its ports while it was stopped).
    pub async fn start(&mut self) {
        if self.is_running() {
            return;
        }
        self.spawn(features());
        if let Err(why) = self.wait_until_healthy().await {
            self.fail(&why);
        }
    }

    /// Kills etcd with SIGKILL, as a crash would, and keeps its data directory; the ports stay
    /// reserved for [`start`](Self::start). Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // kill fails only if the process already exited; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the etcd process is alive (it may still be starting).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The URL of the metrics and health endpoints, `http://127.0.0.1:PORT` (add `/metrics` or
    /// `/health`).
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    /// The etcd data directory (`--data-dir`); it survives [`stop`](Self::stop).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The file etcd writes its output to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The last `lines` lines of the etcd log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The options [`client`](Self::client) connects with: 2 s to connect, 5 s per request.
    pub fn connect_options() -> ConnectOptions {
        ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
    }

    /// A new client of this server, with [`connect_options`](Self::connect_options).
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], Some(Self::connect_options()))
            .await
            .unwrap_or_else(|err| panic!("cannot connect to etcd at {}: {err}", self.endpoint()))
    }

    /// The current revision of the store.
    pub async fn revision(&self) -> i64 {
        let response = self
            .client()
            .await
            .get("atbus-test-revision-probe", None)
            .await
            .unwrap_or_else(|err| panic!("etcd get at {}: {err}", self.endpoint()));
        response
            .header()
            .expect("a get response has a header")
            .revision()
    }

    /// Compacts the store up to `revision` and waits until the compaction is physically applied.
    pub async fn compact(&self, revision: i64) {
        self.client()
            .await
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap_or_else(|err| panic!("etcd compact to {revision}: {err}"));
    }

    /// The sum of the values of all samples of the metric `name` (every label set) at
    /// `/metrics`; `None` if there is no such sample or the server does not answer.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (status, body) = http_get(self.metrics_port, "/metrics").ok()?;
        if status != 200 {
            return None;
        }
        sum_metric(&body, name)
    }

    /// Polls the metric `name` until `accept` takes its value, for at most `timeout`; returns
    /// that value. Panics with the last value seen if it never comes.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        timeout: Duration,
        accept: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.metric(name);
            if let Some(value) = value.filter(|&value| accept(value)) {
                return value;
            }
            if Instant::now() >= deadline {
                panic!(
                    "etcd metric {name} is {value:?} after {timeout:?}, not what the test waits for"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs etcd; its output is appended to the log file.
    fn spawn(&mut self, features: &Features) {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|err| panic!("cannot open {}: {err}", self.log_path().display()));
        let _ = writeln!(
            log,
            "=== atbus test harness: starting etcd at {}",
            self.endpoint()
        );
        let stderr = log.try_clone().expect("clone the etcd log file");
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(program());
        command
            .arg(format!("--name={MEMBER}"))
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={MEMBER}={peer_url}"))
            .arg("--initial-cluster-state=new")
            // A single member elects itself after one election timeout: keep it short.
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .arg(format!("--listen-metrics-urls={}", self.metrics_url()))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn");
        if let Some(flag) = features.watch_progress_flag {
            command.arg(format!("{flag}={WATCH_PROGRESS_NOTIFY_INTERVAL}"));
        }
        if features.unsafe_no_fsync {
            command.arg("--unsafe-no-fsync");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| spawn_failed(&err));
        self.child = Some(child);
    }

    /// Waits until etcd answers `/health` and a linearizable get on its client URL.
    async fn wait_until_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("etcd exited while starting ({status})"));
            }
            if self.probe().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("etcd is not healthy after {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Whether etcd is healthy and serves a get.
    async fn probe(&self) -> bool {
        let port = self.metrics_port;
        let health = tokio::task::spawn_blocking(move || http_get(port, "/health")).await;
        let Ok(Ok((200, body))) = health else {
            return false;
        };
        if !body.contains(r#""health":"true""#) {
            return false;
        }
        let get = async {
            let mut client =
                Client::connect([self.endpoint()], Some(Self::connect_options())).await?;
            client.get("atbus-test-health-probe", None).await
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), get).await,
            Ok(Ok(_))
        )
    }

    /// Kills etcd and panics with `why`, its addresses and the tail of its log.
    fn fail(&mut self, why: &str) -> ! {
        self.stop();
        panic!(
            "{why}: client {}, peer port {}, metrics {}, data {}; last lines of {}:\n{}",
            self.endpoint(),
            self.peer_port,
            self.metrics_url(),
            self.data_dir().display(),
            self.log_path().display(),
            self.log_tail(LOG_TAIL_LINES)
        );
    }

    /// The whole etcd log, or an empty string if there is none.
    fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if std::thread::panicking() && self.is_running() {
            eprintln!(
                "etcd at {} when the test panicked; last lines of its log:\n{}",
                self.endpoint(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What the installed etcd supports, read once from `etcd --version` and `etcd --help`.
#[derive(Debug)]
struct Features {
    /// The first line of `etcd --version`.
    version: String,
    /// The flag setting the watch progress notify interval, if there is one.
    watch_progress_flag: Option<&'static str>,
    /// Whether `--unsafe-no-fsync` exists (etcd 3.5 and later): test data need not survive a
    /// power cut, only a SIGKILL.
    unsafe_no_fsync: bool,
}

/// The version line of the etcd the harness runs, e.g. "etcd Version: 3.4.23".
pub fn etcd_version() -> &'static str {
    &features().version
}

fn features() -> &'static Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    FEATURES.get_or_init(|| {
        let version = run_etcd("--version");
        let help = run_etcd("--help");
        let watch_progress_flag = if help.contains("--watch-progress-notify-interval") {
            Some("--watch-progress-notify-interval")
        } else if help.contains("--experimental-watch-progress-notify-interval") {
            Some("--experimental-watch-progress-notify-interval")
        } else {
            None
        };
        Features {
            version: version.lines().next().unwrap_or_default().trim().to_owned(),
            watch_progress_flag,
            unsafe_no_fsync: help.contains("--unsafe-no-fsync"),
        }
    })
}

/// The program to run: `$ETCD` or `etcd`.
fn program() -> OsString {
    std::env::var_os("ETCD").unwrap_or_else(|| "etcd".into())
}

/// Runs `etcd ARG` and returns what it printed on stdout and stderr.
fn run_etcd(arg: &str) -> String {
    let output = Command::new(program())
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| spawn_failed(&err));
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

fn spawn_failed(err: &io::Error) -> ! {
    if err.kind() == io::ErrorKind::NotFound {
        panic!("{NOT_INSTALLED}");
    }
    panic!("cannot run {:?}: {err}", program());
}

/// Three distinct free ports on 127.0.0.1, found by binding port 0 (all three listeners are held
/// at once, so the kernel gives three different ports).
fn free_ports() -> [u16; 3] {
    let listeners = [(); 3].map(|()| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|err| panic!("cannot bind a free port on 127.0.0.1: {err}"))
    });
    listeners.map(|listener| listener.local_addr().expect("local address").port())
}

/// A new empty directory, readable only by us, under the system temp directory.
fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let name = format!(
            "atbus-etcd-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(name);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return dir,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => panic!("cannot create {}: {err}", dir.display()),
        }
    }
}

/// A plain HTTP/1.0 GET of `path` on 127.0.0.1:`port`: the status code and the body.
fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut request = String::new();
    let _ = write!(request, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    let response = String::from_utf8_lossy(&bytes);
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response");
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(invalid)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(invalid)?;
    Ok((status, body.to_owned()))
}

/// The sum of the samples of metric `name` in a Prometheus text exposition.
fn sum_metric(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = if rest.starts_with('{') {
            match rest.rfind('}') {
                Some(end) => &rest[end + 1..],
                None => continue,
            }
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            // Another metric whose name starts with `name`.
            continue;
        };
        if let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

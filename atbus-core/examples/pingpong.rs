//! The load example: two nodes in separate processes (this one spawns its peer) echo `--count`
//! messages of `--size` bytes, at most `--window` in flight, and the run prints one line with
//! messages/s, MB/s and the round-trip time's p50/p99. It exits non-zero if a message is missing,
//! duplicated, reordered or corrupted.
//!
//! ```text
//! cargo run --release -p atbus-core --example pingpong -- --transport tcp --count 100000 --size 64
//! ```
//!
//! Transports: `tcp`, `udp`, `unix`, `tls`, `quic`, `mem` (both nodes in this process), and
//! `raw-tcp`: the baseline, a plain tokio TCP echo of length-prefixed messages, no atbus at all.
//! For `tls` and `quic` the run makes a throwaway CA and a certificate for 127.0.0.1 (rcgen) in a
//! temporary folder, and both processes load them from there as PEM files.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atbus_core::engine::Token;
use atbus_core::runtime::{Node, NodeBuilder, TlsSettings};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser, Debug, Clone)]
#[command(about = "Echo messages between two atbus nodes and report the rate and round-trip times")]
struct Args {
    /// tcp, udp, unix, tls, quic, mem, or raw-tcp (the baseline).
    #[arg(long, default_value = "tcp")]
    transport: String,
    /// Messages to echo.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Bytes per message (at least 8).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages in flight at most.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Go through the relay at this address (both nodes connect to it, over its scheme rather
    /// than `--transport`'s, and reach each
    /// other through it); the relay must accept the example's token, e.g.
    /// `scripts/relay --listen tcp://127.0.0.1:7900 --token "the pingpong example's loopback token"`.
    #[arg(long)]
    relay: Option<String>,
    /// Internal: run as the echoing peer.
    #[arg(long, hide = true)]
    echo: bool,
    /// Internal: the folder of the run's CA and certificate (tls, quic).
    #[arg(long, hide = true)]
    tls_dir: Option<PathBuf>,
}

/// The token both processes use: the example runs on loopback only.
fn token() -> Token {
    Token::new("the pingpong example's loopback token").expect("long enough")
}

/// Message `seq`: its number, then bytes derived from it.
fn payload(seq: u64, size: usize) -> Bytes {
    let mut data = Vec::with_capacity(size);
    data.extend_from_slice(&seq.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.push(x as u8);
    }
    data.into()
}

/// The number of a message, if its bytes are intact.
fn check(data: &[u8], size: usize) -> Option<u64> {
    let seq = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    (data.len() == size && data == payload(seq, size)).then_some(seq)
}

fn listen_address(transport: &str) -> String {
    match transport {
        "tcp" => "tcp://127.0.0.1:0".into(),
        "udp" => "udp://127.0.0.1:0".into(),
        "tls" => "tls://127.0.0.1:0".into(),
        "quic" => "quic://127.0.0.1:0".into(),
        "unix" => format!(
            "unix://{}",
            std::env::temp_dir()
                .join(format!("atbus-pingpong-{}.sock", std::process::id()))
                .display()
        ),
        "mem" => format!("mem://pingpong-{}", std::process::id()),
        other => panic!("unknown transport {other}: use tcp, udp, unix, tls, quic, mem or raw-tcp"),
    }
}

/// A throwaway CA and a certificate for 127.0.0.1 signed by it, as PEM files in a fresh
/// temporary folder: `ca.pem`, `node.pem`, `node.key`.
fn make_certificates() -> anyhow_free::Result<PathBuf> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = std::env::temp_dir().join(format!("atbus-pingpong-pki-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?
        .signed_by(&key, &ca)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("node.pem"), cert.pem())?;
    std::fs::write(dir.join("node.key"), key.serialize_pem())?;
    Ok(dir)
}

/// Both nodes' TLS settings: the run's certificate, and its CA to verify the other node.
fn tls_settings(dir: &Path) -> TlsSettings {
    TlsSettings::new()
        .identity_files(dir.join("node.pem"), dir.join("node.key"))
        .ca_file(dir.join("ca.pem"))
}

/// A builder for node `name`, with TLS settings when the run has them.
fn builder(name: &str, args: &Args) -> NodeBuilder {
    let builder = Node::builder().name(name).token(token());
    match &args.tls_dir {
        Some(dir) => builder.tls(tls_settings(dir)),
        None => builder,
    }
}

/// The echoing node: prints its address, then sends every message back to where it came from.
async fn run_echo(args: &Args) -> anyhow_free::Result<()> {
    let node = match &args.relay {
        Some(relay) => {
            let node = builder("pong", args).relay(relay).start().await?;
            wait_for_relay(&node).await?;
            println!("LISTENING {relay}");
            node
        }
        None => {
            let node = builder("pong", args)
                .listen(listen_address(&args.transport))
                .start()
                .await?;
            println!("LISTENING {}", node.local_addresses()[0]);
            node
        }
    };
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    echo_loop(node, args.size).await
}

async fn echo_loop(node: Node, size: usize) -> anyhow_free::Result<()> {
    while let Some(message) = node.recv().await {
        if check(&message.data, size).is_none() {
            return Err(format!("corrupted message from {}", message.source).into());
        }
        node.send(&message.source, message.data).await?;
    }
    Ok(())
}

/// Waits until `node` is connected to its relay: before that, nothing can be routed.
async fn wait_for_relay(node: &Node) -> anyhow_free::Result<()> {
    for _ in 0..500 {
        if node.connection_info().iter().any(|c| c.peer.is_some()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("no connection to the relay within 5 s (does it accept the example's token?)".into())
}

/// Starts the echoing peer: in another process, or (mem) in this one.
async fn start_peer(args: &Args) -> anyhow_free::Result<(String, Option<Child>)> {
    if args.transport == "mem" {
        let node = Node::builder()
            .name("pong")
            .token(token())
            .listen(listen_address("mem"))
            .start()
            .await?;
        let address = node.local_addresses()[0].to_string();
        let size = args.size;
        tokio::spawn(async move { echo_loop(node, size).await.expect("echo") });
        return Ok((address, None));
    }
    let mut command = Command::new(std::env::current_exe()?);
    command.args([
        "--echo",
        "--transport",
        &args.transport,
        "--size",
        &args.size.to_string(),
    ]);
    if let Some(dir) = &args.tls_dir {
        command.arg("--tls-dir").arg(dir);
    }
    if let Some(relay) = &args.relay {
        command.arg("--relay").arg(relay);
    }
    // The peer exits when its stdin closes: when this process ends, however it ends.
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(tokio::process::ChildStdout::from_std(stdout)?).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(address) = line.strip_prefix("LISTENING ") {
            return Ok((address.to_string(), Some(child)));
        }
    }
    Err("the peer exited before listening".into())
}

/// What a run measured.
struct Report {
    elapsed: Duration,
    rtt: Histogram<u64>,
}

async fn run_atbus(args: &Args) -> anyhow_free::Result<Report> {
    let (address, child) = start_peer(args).await?;
    let node = match &args.relay {
        Some(relay) => {
            let node = builder("ping", args).relay(relay).start().await?;
            wait_for_relay(&node).await?;
            node
        }
        None => {
            builder("ping", args)
                .peer("pong", [address])
                .start()
                .await?
        }
    };
    let sender = node.clone();
    let (count, size, window) = (args.count, args.size, args.window.max(1));
    let credits = Arc::new(tokio::sync::Semaphore::new(window));
    let sent_at = Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(window)));
    let start = Instant::now();
    let sending = {
        let credits = credits.clone();
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            for seq in 0..count as u64 {
                credits.acquire().await.expect("open").forget();
                sent_at.lock().expect("times").push_back(Instant::now());
                sender.send("pong", payload(seq, size)).await?;
            }
            Ok::<_, atbus_core::runtime::NodeError>(())
        })
    };
    let mut rtt = Histogram::<u64>::new(3)?;
    for expected in 0..count as u64 {
        let message = tokio::time::timeout(Duration::from_secs(30), node.recv())
            .await
            .map_err(|_| format!("message {expected} missing after 30 s"))?
            .ok_or("the node stopped")?;
        match check(&message.data, size) {
            Some(seq) if seq == expected => {}
            Some(seq) => {
                return Err(format!("expected message {expected}, got {seq}").into());
            }
            None => return Err(format!("message {expected} corrupted").into()),
        }
        let at = sent_at
            .lock()
            .expect("times")
            .pop_front()
            .ok_or("an extra message")?;
        rtt.record(at.elapsed().as_micros() as u64)?;
        credits.add_permits(1);
    }
    let elapsed = start.elapsed();
    sending.await??;
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(100), node.recv()).await {
        return Err(format!("a message arrived twice: {:?}", check(&extra.data, size)).into());
    }
    node.shutdown().await;
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(Report { elapsed, rtt })
}

/// The baseline: length-prefixed messages echoed over one plain TCP connection.
async fn run_raw_tcp(args: &Args) -> anyhow_free::Result<Report> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        socket.set_nodelay(true).expect("nodelay");
        let (mut reader, mut writer) = socket.into_split();
        let mut buffer = Vec::new();
        loop {
            let Ok(len) = reader.read_u32_le().await else {
                return;
            };
            buffer.resize(len as usize, 0);
            reader.read_exact(&mut buffer).await.expect("read");
            writer.write_u32_le(len).await.expect("write");
            writer.write_all(&buffer).await.expect("write");
        }
    });
    let socket = TcpStream::connect(address).await?;
    socket.set_nodelay(true)?;
    let (mut reader, mut writer) = socket.into_split();
    let (count, size, window) = (args.count, args.size, args.window.max(1));
    let credits = Arc::new(tokio::sync::Semaphore::new(window));
    let sent_at = Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(window)));
    let start = Instant::now();
    let sending = {
        let credits = credits.clone();
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            for seq in 0..count as u64 {
                credits.acquire().await.expect("open").forget();
                sent_at.lock().expect("times").push_back(Instant::now());
                let data = payload(seq, size);
                writer.write_u32_le(data.len() as u32).await?;
                writer.write_all(&data).await?;
            }
            Ok::<_, std::io::Error>(())
        })
    };
    let mut rtt = Histogram::<u64>::new(3)?;
    let mut buffer = vec![0; size];
    for expected in 0..count as u64 {
        let len = reader.read_u32_le().await? as usize;
        buffer.resize(len, 0);
        reader.read_exact(&mut buffer).await?;
        if check(&buffer, size) != Some(expected) {
            return Err(format!("message {expected} wrong").into());
        }
        let at = sent_at
            .lock()
            .expect("times")
            .pop_front()
            .ok_or("an extra message")?;
        rtt.record(at.elapsed().as_micros() as u64)?;
        credits.add_permits(1);
    }
    let elapsed = start.elapsed();
    sending.await??;
    Ok(Report { elapsed, rtt })
}

/// `Box<dyn Error>` results, without a dependency.
mod anyhow_free {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.size < 8 {
        eprintln!("--size must be at least 8 (the message number)");
        std::process::exit(2);
    }
    if args.echo {
        if let Err(error) = run_echo(&args).await {
            eprintln!("pingpong echo: {error}");
            std::process::exit(1);
        }
        return;
    }
    let mut certificates = None;
    if matches!(args.transport.as_str(), "tls" | "quic") {
        match make_certificates() {
            Ok(dir) => {
                args.tls_dir = Some(dir.clone());
                certificates = Some(dir);
            }
            Err(error) => {
                eprintln!("pingpong: cannot make the certificates: {error}");
                std::process::exit(1);
            }
        }
    }
    let result = match args.transport.as_str() {
        "raw-tcp" => run_raw_tcp(&args).await,
        _ => run_atbus(&args).await,
    };
    if let Some(dir) = certificates {
        let _ = std::fs::remove_dir_all(dir);
    }
    match result {
        Ok(report) => {
            let seconds = report.elapsed.as_secs_f64();
            let rate = args.count as f64 / seconds;
            println!(
                "transport={}{} count={} size={} window={} elapsed={:.3}s msgs/s={:.0} MB/s={:.1} rtt_p50={}us rtt_p99={}us",
                args.transport,
                args.relay
                    .as_ref()
                    .map_or(String::new(), |relay| format!(" relay={relay}")),
                args.count,
                args.size,
                args.window,
                seconds,
                rate,
                rate * args.size as f64 / 1e6,
                report.rtt.value_at_quantile(0.5),
                report.rtt.value_at_quantile(0.99),
            );
        }
        Err(error) => {
            eprintln!("pingpong over {}: {error}", args.transport);
            std::process::exit(1);
        }
    }
}

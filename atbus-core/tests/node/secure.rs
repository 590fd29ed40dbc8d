//! `tls://` and `quic://`: messages in order and large messages intact over both, mutual TLS
//! (a client without a certificate refused, one with a certificate accepted), a server whose
//! certificate comes from an unknown CA refused, QUIC 0-RTT on a second connection, clear errors
//! for missing files and missing settings, and a YAML `tls` section. The certificates are made
//! at test time with rcgen and read from PEM files, as operators provide them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use atbus_core::engine::EngineConfig;
use atbus_core::runtime::{Node, NodeConfig, NodeError, NodeEvent, TlsSettings};
use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::support::*;

/// A folder of PEM files, removed when dropped.
struct Pki {
    dir: PathBuf,
}

/// The files of one certificate.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("atbus-pki"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self { dir }
    }

    /// A CA named `name`: its certificate at `<name>.pem`, and the issuer to sign leaves with.
    fn ca(&self, name: &str) -> (PathBuf, CertifiedIssuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
            .expect("self-signed CA");
        let path = self.dir.join(format!("{name}.pem"));
        std::fs::write(&path, issuer.pem()).expect("write CA");
        (path, issuer)
    }

    /// A certificate for `localhost` and 127.0.0.1, good for servers and clients, signed by `ca`.
    fn leaf(&self, name: &str, ca: &CertifiedIssuer<'static, KeyPair>) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
            .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, ca).expect("signed");
        let leaf = Leaf {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One CA, and a server and a client certificate signed by it.
struct Trusted {
    pki: Pki,
    ca: PathBuf,
    server: Leaf,
    client: Leaf,
}

fn trusted() -> Trusted {
    let pki = Pki::new();
    let (ca, issuer) = pki.ca("ca");
    let server = pki.leaf("server", &issuer);
    let client = pki.leaf("client", &issuer);
    Trusted {
        pki,
        ca,
        server,
        client,
    }
}

/// The server's settings: its certificate, and the CA when clients must present theirs.
fn server_tls(files: &Trusted, require_client_cert: bool) -> TlsSettings {
    TlsSettings::new()
        .identity_files(&files.server.cert, &files.server.key)
        .ca_file(&files.ca)
        .require_client_cert(require_client_cert)
}

/// A client's settings: the CA, and its certificate if `with_cert`.
fn client_tls(files: &Trusted, with_cert: bool) -> TlsSettings {
    let settings = TlsSettings::new().ca_file(&files.ca);
    if with_cert {
        settings.identity_files(&files.client.cert, &files.client.key)
    } else {
        settings
    }
}

/// A server on `scheme` and a client connected to it, each with its TLS settings.
async fn secure_pair(
    scheme: &str,
    engine: EngineConfig,
    server: TlsSettings,
    client: TlsSettings,
) -> (Node, Node) {
    let server = Node::builder()
        .name("server")
        .token(token())
        .engine(engine.clone())
        .tls(server)
        .listen(listen_address(scheme))
        .start()
        .await
        .expect("server starts");
    let client = Node::builder()
        .name("client")
        .token(token())
        .engine(engine)
        .tls(client)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .peer("server", [server.local_addresses()[0].to_string()])
        .start()
        .await
        .expect("client starts");
    (server, client)
}

/// Whether `node` reports `peer` connected within `within`.
async fn connects(node: &Node, peer: &str, within: Duration) -> bool {
    let mut events = node.events();
    let connected = |node: &Node| {
        node.connections()
            .iter()
            .any(|c| c.2.as_deref() == Some(peer))
    };
    if connected(node) {
        return true;
    }
    let waited = tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::Connected { peer: p, .. }) if p == peer => return,
                Ok(_) => {}
                Err(_) if connected(node) => return,
                Err(_) => {}
            }
        }
    })
    .await;
    waited.is_ok() || connected(node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_in_order_and_intact_over_tls_and_quic() {
    let files = trusted();
    for scheme in ["tls", "quic"] {
        let (server, client) = secure_pair(
            scheme,
            EngineConfig::default(),
            server_tls(&files, false),
            client_tls(&files, false),
        )
        .await;
        let sizes = [0, 1, 64, 1500, 70_000, 1 << 20, 3];
        for (index, size) in sizes.iter().enumerate() {
            client
                .send("server", payload(index, *size))
                .await
                .expect("send");
        }
        for (index, size) in sizes.iter().enumerate() {
            let message = recv(&server).await;
            assert_eq!(message.source, "client", "{scheme}");
            assert_eq!(message.data.len(), *size, "{scheme}: message {index}");
            assert!(
                message.data == payload(index, *size),
                "{scheme}: message {index} differs"
            );
        }
        server.send("client", "pong").await.expect("send back");
        assert_eq!(recv(&client).await.data, Bytes::from("pong"), "{scheme}");
        let counters = client.transport_counters();
        match scheme {
            "tls" => assert!(counters.tls_handshakes >= 1, "{counters:?}"),
            _ => assert!(counters.quic_handshakes >= 1, "{counters:?}"),
        }
        client.shutdown().await;
        server.shutdown().await;
    }
}

/// Limits that let one 64 MiB message through.
fn large_messages() -> EngineConfig {
    let max = 65 << 20;
    EngineConfig {
        max_message_size: max,
        stream_receive_window: max as u64 + (1 << 20),
        peer_receive_budget: 96 << 20,
        ..EngineConfig::default()
    }
}

async fn sixty_four_mebibytes_cross(scheme: &str) {
    let files = trusted();
    let (server, client) = secure_pair(
        scheme,
        large_messages(),
        server_tls(&files, false),
        client_tls(&files, false),
    )
    .await;
    let big = payload(7, 64 << 20);
    client.send("server", big.clone()).await.expect("send");
    let message = tokio::time::timeout(Duration::from_secs(120), server.recv())
        .await
        .expect("the message within 120 s")
        .expect("running");
    assert_eq!(message.data.len(), big.len(), "{scheme}");
    assert!(message.data == big, "{scheme}: the message differs");
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_four_mebibyte_message_crosses_tls_intact() {
    sixty_four_mebibytes_cross("tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_four_mebibyte_message_crosses_quic_intact() {
    sixty_four_mebibytes_cross("quic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate_and_accepts_one_with() {
    let files = trusted();
    for scheme in ["tls", "quic"] {
        // Without a certificate: refused in the TLS handshake, again and again.
        let (server, client) = secure_pair(
            scheme,
            EngineConfig::default(),
            server_tls(&files, true),
            client_tls(&files, false),
        )
        .await;
        client.send("server", "let me in").await.expect("queued");
        assert!(
            !connects(&client, "server", Duration::from_millis(1500)).await,
            "{scheme}: a client without a certificate got through"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(200), server.recv())
                .await
                .is_err(),
            "{scheme}: a message arrived from a refused client"
        );
        let refused = server.transport_counters();
        match scheme {
            "tls" => assert!(refused.tls_handshake_failures >= 1, "{refused:?}"),
            _ => assert!(refused.quic_handshake_failures >= 1, "{refused:?}"),
        }
        client.shutdown_within(Duration::from_millis(200)).await;

        // With one: accepted, and the atbus handshake runs over it as usual.
        let with_cert = Node::builder()
            .name("client")
            .token(token())
            .tls(client_tls(&files, true))
            .peer("server", [server.local_addresses()[0].to_string()])
            .start()
            .await
            .expect("client starts");
        with_cert.send("server", "hello").await.expect("send");
        let message = recv(&server).await;
        assert_eq!(
            (message.source.as_str(), &message.data[..]),
            ("client", &b"hello"[..]),
            "{scheme}"
        );
        with_cert.shutdown().await;
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_unknown_ca_is_refused() {
    let files = trusted();
    let (_, other_ca) = files.pki.ca("other-ca");
    let impostor = files.pki.leaf("impostor", &other_ca);
    for scheme in ["tls", "quic"] {
        let server_settings = TlsSettings::new().identity_files(&impostor.cert, &impostor.key);
        let (server, client) = secure_pair(
            scheme,
            EngineConfig::default(),
            server_settings,
            client_tls(&files, true),
        )
        .await;
        client.send("server", "secret").await.expect("queued");
        assert!(
            !connects(&client, "server", Duration::from_millis(1500)).await,
            "{scheme}: the client trusted a certificate from an unknown CA"
        );
        assert!(
            !connects(&server, "client", Duration::from_millis(10)).await,
            "{scheme}: the server reports the client connected"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(200), server.recv())
                .await
                .is_err(),
            "{scheme}: a message crossed"
        );
        let counters = client.transport_counters();
        match scheme {
            "tls" => assert!(counters.tls_handshake_failures >= 1, "{counters:?}"),
            _ => assert!(counters.quic_handshake_failures >= 1, "{counters:?}"),
        }
        client.shutdown_within(Duration::from_millis(200)).await;
        server.shutdown_within(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_quic_connection_to_the_same_server_uses_zero_rtt() {
    let files = trusted();
    let (server, client) = secure_pair(
        "quic",
        EngineConfig::default(),
        server_tls(&files, false),
        client_tls(&files, false),
    )
    .await;
    client.send("server", "first").await.expect("send");
    assert_eq!(recv(&server).await.data, Bytes::from("first"));
    let before = client.transport_counters();
    assert_eq!(before.quic_zero_rtt_attempted, 0, "{before:?}");

    // Close the first connection; the dial loop dials again with the session it resumed.
    let connections = client.connections();
    assert_eq!(connections.len(), 1, "{connections:?}");
    assert!(client.close_connection(connections[0].0, "test: dial again"));
    let redialed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let now = client.connections();
            if now.len() == 1 && now[0].0 != connections[0].0 && now[0].2.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        redialed.is_ok(),
        "no second connection: {:?}",
        client.connections()
    );
    client.send("server", "second").await.expect("send");
    assert_eq!(recv(&server).await.data, Bytes::from("second"));
    server.send("client", "back").await.expect("send back");
    assert_eq!(recv(&client).await.data, Bytes::from("back"));

    let after = client.transport_counters();
    assert_eq!(after.quic_zero_rtt_attempted, 1, "{after:?}");
    assert_eq!(after.quic_zero_rtt_accepted, 1, "{after:?}");
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_certificate_file_is_an_error_naming_the_file() {
    let files = trusted();
    let missing = files.pki.dir.join("no-such-cert.pem");
    let error = Node::builder()
        .name("server")
        .token(token())
        .tls(TlsSettings::new().identity_files(&missing, &files.server.key))
        .listen(listen_address("tls"))
        .start()
        .await
        .expect_err("no certificate file");
    let text = error.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("certificate chain"), "{text}");

    // A key file that holds a certificate instead.
    let error = Node::builder()
        .name("server")
        .token(token())
        .tls(TlsSettings::new().identity_files(&files.server.cert, &files.server.cert))
        .listen(listen_address("quic"))
        .start()
        .await
        .expect_err("no key");
    let text = error.to_string();
    assert!(text.contains("holds no private key"), "{text}");
    assert!(
        text.contains(&files.server.cert.display().to_string()),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_quic_without_settings_are_configuration_errors() {
    for scheme in ["tls", "quic"] {
        let listening = Node::builder()
            .name("server")
            .token(token())
            .listen(listen_address(scheme))
            .start()
            .await
            .expect_err("no TLS settings");
        assert!(matches!(listening, NodeError::Config(_)), "{listening}");
        assert!(
            listening.to_string().contains("TLS settings"),
            "{listening}"
        );

        let dialing = Node::builder()
            .name("client")
            .token(token())
            .tls(TlsSettings::new())
            .peer("server", [format!("{scheme}://127.0.0.1:1")])
            .start()
            .await
            .expect_err("no CA");
        assert!(matches!(dialing, NodeError::Config(_)), "{dialing}");
        assert!(dialing.to_string().contains("CA"), "{dialing}");
    }
}

/// Writes `text` to `name` in `dir`.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_tls_section_starts_a_node() {
    let files = trusted();
    // Paths relative to the YAML file's folder.
    let yaml = write(
        &files.pki.dir,
        "server.yaml",
        "name: server\n\
         tokens: [\"the runtime tests' shared token\"]\n\
         listen: [\"tls://127.0.0.1:0\", \"quic://127.0.0.1:0\"]\n\
         tls:\n\
         \x20 cert: server.pem\n\
         \x20 key: server.key\n\
         \x20 ca: [ca.pem]\n\
         \x20 require_client_cert: true\n",
    );
    let server = NodeConfig::from_file(&yaml)
        .expect("parses")
        .builder()
        .expect("valid")
        .start()
        .await
        .expect("starts");
    for (index, address) in server.local_addresses().iter().enumerate() {
        let client = NodeConfig::from_yaml(&format!(
            "name: client{index}\n\
             tokens: [\"the runtime tests' shared token\"]\n\
             peers: [{{name: server, addresses: [\"{address}\"]}}]\n\
             tls:\n\
             \x20 cert: {}\n\
             \x20 key: {}\n\
             \x20 ca: {}\n\
             \x20 server_name: localhost\n",
            files.client.cert.display(),
            files.client.key.display(),
            files.ca.display(),
        ))
        .expect("parses")
        .builder()
        .expect("valid")
        .start()
        .await
        .expect("starts");
        client.send("server", "over yaml").await.expect("send");
        let message = recv(&server).await;
        assert_eq!(message.source, format!("client{index}"), "{address}");
        assert_eq!(message.data, Bytes::from("over yaml"), "{address}");
        client.shutdown().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_quic_server_refuses_the_old_sessions_zero_rtt_and_the_client_gets_through() {
    let files = trusted();
    let (server, client) = secure_pair(
        "quic",
        EngineConfig::default(),
        server_tls(&files, false),
        client_tls(&files, false),
    )
    .await;
    client.send("server", "before").await.expect("send");
    assert_eq!(recv(&server).await.data, Bytes::from("before"));
    let address = server.local_addresses()[0].to_string();
    server.shutdown().await;

    // Same port, new process state: the client's session ticket means nothing to it.
    let restarted = Node::builder()
        .name("server")
        .token(token())
        .tls(server_tls(&files, false))
        .listen(address)
        .start()
        .await
        .expect("the server starts again");
    client.send("server", "after").await.expect("send");
    assert_eq!(recv(&restarted).await.data, Bytes::from("after"));
    let counters = client.transport_counters();
    assert!(counters.quic_zero_rtt_attempted >= 1, "{counters:?}");
    assert!(
        counters.quic_zero_rtt_accepted < counters.quic_zero_rtt_attempted,
        "the restarted server took 0-RTT data of a session it never had: {counters:?}"
    );
    client.shutdown().await;
    restarted.shutdown().await;
}

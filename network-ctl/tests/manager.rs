//! The network manager on real SQLite files, with a manual clock: bootstrap token expiry and
//! sweeping, single-use tokens, filling a /24 and reclaiming the least recently used lost
//! node, restarts, unregistering, certificates, and bad input that changes nothing.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use network_ctl::clock::ManualClock;
use network_ctl::manager::{Caller, Manager};
use network_ctl::proto::{self, request::Body as Ask, response::Body as Answer};
use network_ctl::token::RESERVED_NODE_TOKEN;
use network_ctl::{ControlError, Network, NodeState, Plane, SqliteStore};

const ADMIN: &str = "the manager test's operator token";
const START: i64 = 1_800_000_000_000;

fn network(net_token: &str, cidr: &str) -> Network {
    Network::new(net_token, cidr, None, None, START).expect("a valid network")
}

async fn manager(path: &Path, clock: &ManualClock, networks: Vec<Network>) -> Manager {
    let store = SqliteStore::open(path).expect("the database opens");
    Manager::start(
        Arc::new(store),
        Arc::new(clock.clone()),
        &[ADMIN.to_string()],
        networks,
    )
    .await
    .expect("the manager starts")
}

/// A manager on a new SQLite file in a temp dir with one network, its clock at [`START`].
async fn fresh(net_token: &str, cidr: &str) -> (tempfile::TempDir, ManualClock, Manager) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let manager = manager(
        &dir.path().join("nc.db"),
        &clock,
        vec![network(net_token, cidr)],
    )
    .await;
    (dir, clock, manager)
}

/// Everything stored, to show that a refused call changed nothing.
async fn snapshot(manager: &Manager) -> String {
    let store = manager.store();
    format!(
        "{:?}\n{:?}\n{:?}",
        store.networks().await.unwrap(),
        store.bindings(None).await.unwrap(),
        store.bootstrap_tokens().await.unwrap()
    )
}

#[tokio::test]
async fn an_expired_bootstrap_token_is_refused_by_registration_itself_and_then_swept() {
    let (_dir, clock, manager) = fresh("default", "10.1.1.0/24").await;
    let (token, stored) = manager
        .create_token(Some(Duration::from_secs(600)), false)
        .await
        .unwrap();
    assert_eq!(stored.expire_time, Some(START + 600_000));
    assert_ne!(stored.digest, token, "stored hashed");
    let never = manager.create_token(None, false).await.unwrap().0;

    clock.advance(Duration::from_secs(599));
    manager
        .register(&token, "", "agent-a")
        .await
        .expect("still valid at 9:59");
    clock.advance(Duration::from_secs(1));
    let before = snapshot(&manager).await;
    let error = manager.register(&token, "", "agent-b").await.unwrap_err();
    assert_eq!(
        error,
        ControlError::ExpiredBootstrapToken {
            expired_at: START + 600_000
        }
    );
    assert!(
        error
            .to_string()
            .contains("expired at 2027-01-15T08:10:00Z"),
        "{error}"
    );
    assert_eq!(
        snapshot(&manager).await,
        before,
        "a refusal changes nothing"
    );

    // The sweeper is housekeeping: it deletes the expired token, not the one without expiry.
    assert_eq!(manager.sweep().await.unwrap(), 1);
    assert_eq!(manager.store().bootstrap_tokens().await.unwrap().len(), 1);
    let error = manager.register(&token, "", "agent-b").await.unwrap_err();
    assert_eq!(error, ControlError::UnknownBootstrapToken);
    clock.advance(Duration::from_secs(10 * 365 * 24 * 3600));
    manager
        .register(&never, "", "agent-c")
        .await
        .expect("never expires");
}

#[tokio::test]
async fn a_single_use_token_is_refused_on_its_second_use() {
    let (_dir, _clock, manager) = fresh("default", "10.1.1.0/24").await;
    let (token, _) = manager.create_token(None, true).await.unwrap();
    manager
        .register(&token, "", "agent-a")
        .await
        .expect("first use");
    let before = snapshot(&manager).await;
    let error = manager.register(&token, "", "agent-b").await.unwrap_err();
    assert_eq!(error, ControlError::BootstrapTokenUsed);
    assert_eq!(snapshot(&manager).await, before);
    let tokens = manager.store().bootstrap_tokens().await.unwrap();
    assert_eq!((tokens[0].single_use, tokens[0].uses), (true, 1));
}

#[tokio::test]
async fn a_full_slash_24_reclaims_lost_nodes_least_recently_updated_first_and_never_connected_ones()
{
    let (_dir, clock, manager) = fresh("default", "10.1.1.0/24").await;
    let (token, _) = manager.create_token(None, false).await.unwrap();

    // 253 nodes fill 10.1.1.2-254 (.1 is the gateway and the server's own address).
    let mut nodes = Vec::new();
    for i in 0..253 {
        let name = format!("agent-{i}");
        manager.node_seen(&name, true).await.unwrap();
        let registered = manager.register(&token, "", &name).await.unwrap();
        assert_eq!(
            registered.binding.state,
            NodeState::Connected,
            "on the bus already"
        );
        nodes.push((name, registered.binding));
    }
    let ips: HashSet<IpAddr> = nodes.iter().map(|(_, b)| b.ip).collect();
    assert_eq!(ips.len(), 253);
    for never in ["10.1.1.0", "10.1.1.1", "10.1.1.255"] {
        assert!(!ips.contains(&never.parse().unwrap()), "{never} handed out");
    }

    // 47 of them go away, one a second, in a scrambled order.
    let lost_order: Vec<usize> = (0..47).map(|k| (k * 97 + 13) % 253).collect();
    for &i in &lost_order {
        clock.advance(Duration::from_secs(1));
        manager.node_seen(&nodes[i].0, false).await.unwrap();
    }
    // 47 more registrations (300 in all) take exactly their addresses, oldest loss first.
    for (k, &i) in lost_order.iter().enumerate() {
        clock.advance(Duration::from_secs(1));
        let registered = manager
            .register(&token, "", &format!("late-{k}"))
            .await
            .unwrap();
        assert_eq!(
            registered.binding.ip,
            nodes[i].1.ip,
            "registration {} took the wrong address",
            254 + k
        );
        let gone = manager
            .store()
            .binding("default", &nodes[i].1.node_token)
            .await
            .unwrap();
        assert_eq!(gone, None, "the reclaimed node's binding is deleted");
    }
    assert_eq!(manager.store().bindings(None).await.unwrap().len(), 254);

    // The newest registrations never connected: the oldest of them goes next.
    clock.advance(Duration::from_secs(1));
    let next = manager.register(&token, "", "late-47").await.unwrap();
    assert_eq!(next.binding.ip, nodes[lost_order[0]].1.ip);

    // Once every node is connected nothing is reclaimed, and the refusal changes nothing.
    for k in 1..=47 {
        manager.node_seen(&format!("late-{k}"), true).await.unwrap();
    }
    let before = snapshot(&manager).await;
    let error = manager
        .register(&token, "", "one-too-many")
        .await
        .unwrap_err();
    assert!(
        matches!(error, ControlError::PoolExhausted { bound: 254, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("10.1.1.0/24"), "{error}");
    assert_eq!(snapshot(&manager).await, before);
}

#[tokio::test]
async fn bindings_and_the_reserved_token_survive_a_restart_and_unregister_frees_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nc.db");
    let clock = ManualClock::new(START);
    let networks = || {
        vec![
            network("default", "10.1.1.0/24"),
            network("lab", "fd00:1::/64"),
        ]
    };
    let (token, first, v6) = {
        let manager = manager(&path, &clock, networks()).await;
        let (token, _) = manager.create_token(None, false).await.unwrap();
        let first = manager
            .register(&token, "", "agent-a")
            .await
            .unwrap()
            .binding;
        let v6 = manager
            .register(&token, "lab", "agent-a")
            .await
            .unwrap()
            .binding;
        (token, first, v6)
    };
    assert_eq!(v6.ip.to_string(), "fd00:1::2");

    let manager = manager(&path, &clock, networks()).await;
    let again = manager
        .hello(&first.node_token, "", "agent-a")
        .await
        .unwrap();
    assert_eq!(
        again.ip, first.ip,
        "the same node token gets the same address back"
    );
    for net in ["default", "lab"] {
        let reserved = manager
            .store()
            .binding(net, RESERVED_NODE_TOKEN)
            .await
            .unwrap()
            .expect("reserved");
        assert_eq!(
            reserved.ip.to_string(),
            if net == "lab" {
                "fd00:1::1"
            } else {
                "10.1.1.1"
            }
        );
    }
    let error = manager
        .store()
        .unregister("default", RESERVED_NODE_TOKEN)
        .await
        .unwrap_err();
    assert!(matches!(error, ControlError::Reserved(_)), "{error}");

    // A new registration does not get the address of a node that is away.
    let second = manager
        .register(&token, "", "agent-b")
        .await
        .unwrap()
        .binding;
    assert_ne!(second.ip, first.ip);
    let removed = manager
        .store()
        .unregister("default", &first.node_token)
        .await
        .unwrap();
    assert_eq!(removed.ip, first.ip);
    let error = manager
        .hello(&first.node_token, "", "agent-a")
        .await
        .unwrap_err();
    assert!(matches!(error, ControlError::UnknownNode { .. }), "{error}");
    let fresh = manager
        .register(&token, "", "agent-a")
        .await
        .unwrap()
        .binding;
    assert_ne!(fresh.node_token, first.node_token, "a fresh binding");
    assert_ne!(
        fresh.ip, first.ip,
        "a freed address rests while unused ones remain"
    );
}

#[tokio::test]
async fn a_slash_16_takes_10000_registrations_with_distinct_addresses() {
    let (_dir, _clock, manager) = fresh("big", "10.7.0.0/16").await;
    let (token, _) = manager.create_token(None, false).await.unwrap();
    let started = Instant::now();
    let mut ips = HashSet::new();
    for i in 0..10_000 {
        let registered = manager
            .register(&token, "big", &format!("agent-{i}"))
            .await
            .unwrap();
        assert!(
            ips.insert(registered.binding.ip),
            "{} twice",
            registered.binding.ip
        );
    }
    let took = started.elapsed();
    println!(
        "10000 registrations into a /16 (SQLite in WAL mode, two certificates each): {took:.2?}, {:.0} per second",
        10_000.0 / took.as_secs_f64()
    );
    let networks = manager.store().networks().await.unwrap();
    assert_eq!(networks[0].bound, 10_001);
    assert_eq!(networks[0].capacity, 65_533);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_deletes_expired_tokens_on_its_own() {
    let (_dir, clock, manager) = fresh("default", "10.1.1.0/24").await;
    manager
        .create_token(Some(Duration::from_secs(60)), false)
        .await
        .unwrap();
    manager.create_token(None, false).await.unwrap();
    let sweeper = manager.spawn_sweeper(Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        manager.store().bootstrap_tokens().await.unwrap().len(),
        2,
        "nothing expired yet"
    );
    clock.advance(Duration::from_secs(61));
    let deadline = Instant::now() + Duration::from_secs(5);
    while manager.store().bootstrap_tokens().await.unwrap().len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the sweeper did not delete the expired token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sweeper.abort();
}

#[tokio::test]
async fn issued_certificates_verify_against_their_own_plane_ca_only() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    let (dir, clock, manager) = fresh("default", "10.1.1.0/24").await;
    let (token, _) = manager.create_token(None, false).await.unwrap();
    let registered = manager.register(&token, "", "agent-a").await.unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = |ca_pem: &str| {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap()
    };
    let control_ca = manager.authority_pem(Plane::Control).to_string();
    let data_ca = manager.authority_pem(Plane::Data).to_string();
    assert_ne!(control_ca, data_ca, "each plane has its own CA");
    for (set, own, other) in [
        (&registered.control_plane, &control_ca, &data_ca),
        (&registered.data_plane, &data_ca, &control_ca),
    ] {
        assert_eq!(&set.ca_pem, own);
        let cert = CertificateDer::from_pem_slice(set.cert_pem.as_bytes()).unwrap();
        verifier(own)
            .verify_client_cert(&cert, &[], UnixTime::now())
            .expect("verifies against its CA");
        assert!(
            verifier(other)
                .verify_client_cert(&cert, &[], UnixTime::now())
                .is_err(),
            "a certificate must not verify against the other plane's CA"
        );
        let text = String::from_utf8_lossy(&cert);
        assert!(
            text.contains(&registered.binding.node_token),
            "the node token is in the subject"
        );
    }

    // The CAs are stored: a restarted manager signs with the same ones.
    drop(manager);
    let manager = restarted(&dir.path().join("nc.db"), &clock).await;
    assert_eq!(manager.authority_pem(Plane::Control), control_ca);
    let later = manager.register(&token, "", "agent-b").await.unwrap();
    let cert = CertificateDer::from_pem_slice(later.control_plane.cert_pem.as_bytes()).unwrap();
    verifier(&control_ca)
        .verify_client_cert(&cert, &[], UnixTime::now())
        .expect("signed by the stored CA");
}

async fn restarted(path: &Path, clock: &ManualClock) -> Manager {
    manager(path, clock, vec![]).await
}

async fn ask(manager: &Manager, admin: bool, ask: Ask) -> Answer {
    let caller = Caller { name: "cli", admin };
    manager
        .handle(
            caller,
            proto::Request {
                admin_token: String::new(),
                body: Some(ask),
            },
        )
        .await
        .body
        .expect("an answer")
}

fn refusal(answer: Answer) -> (proto::ErrorCode, String) {
    match answer {
        Answer::Error(error) => (
            proto::ErrorCode::try_from(error.code).unwrap(),
            error.message,
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let (_dir, _clock, manager) = fresh("default", "10.1.1.0/24").await;
    let (token, _) = manager.create_token(None, false).await.unwrap();
    manager.register(&token, "", "agent-a").await.unwrap();
    let before = snapshot(&manager).await;

    let create = |cidr: &str| {
        Ask::CreateNetwork(proto::CreateNetworkRequest {
            net_token: "new".into(),
            cidr: cidr.into(),
            ..Default::default()
        })
    };
    let cases = [
        (
            true,
            create("10.9.0.0"),
            proto::ErrorCode::BadRequest,
            "expected address/prefix",
        ),
        (
            true,
            create("10.9.0.1/16"),
            proto::ErrorCode::BadRequest,
            "the network is 10.9.0.0/16",
        ),
        (
            true,
            create("300.1.1.0/24"),
            proto::ErrorCode::BadRequest,
            "not an IPv4 or IPv6 address",
        ),
        (
            true,
            Ask::CreateNetwork(proto::CreateNetworkRequest {
                net_token: "default".into(),
                cidr: "10.2.0.0/16".into(),
                ..Default::default()
            }),
            proto::ErrorCode::Conflict,
            "exists as 10.1.1.0/24",
        ),
        (
            false,
            create("10.9.0.0/16"),
            proto::ErrorCode::Unauthenticated,
            "needs an operator token",
        ),
        (
            false,
            Ask::CreateToken(proto::CreateTokenRequest::default()),
            proto::ErrorCode::Unauthenticated,
            "needs an operator token",
        ),
        (
            false,
            Ask::NodeList(proto::NodeListRequest::default()),
            proto::ErrorCode::Unauthenticated,
            "operator",
        ),
        (
            false,
            Ask::Register(proto::RegisterRequest {
                bootstrap_token: "not a token".into(),
                net_token: String::new(),
            }),
            proto::ErrorCode::UnknownBootstrapToken,
            "unknown bootstrap token",
        ),
        (
            false,
            Ask::Register(proto::RegisterRequest {
                bootstrap_token: token.clone(),
                net_token: "nowhere".into(),
            }),
            proto::ErrorCode::UnknownNetwork,
            "unknown network \"nowhere\"",
        ),
        (
            false,
            Ask::Unregister(proto::NodeRequest {
                node_token: RESERVED_NODE_TOKEN.into(),
                net_token: String::new(),
            }),
            proto::ErrorCode::Unauthenticated,
            "only an operator or the node itself",
        ),
        (
            true,
            Ask::Unregister(proto::NodeRequest {
                node_token: RESERVED_NODE_TOKEN.into(),
                net_token: String::new(),
            }),
            proto::ErrorCode::Reserved,
            "cannot be unregistered",
        ),
        (
            true,
            Ask::CreateToken(proto::CreateTokenRequest {
                expire_seconds: Some(60),
                never_expires: true,
                single_use: false,
            }),
            proto::ErrorCode::BadRequest,
            "both expire and never expire",
        ),
    ];
    for (admin, request, code, says) in cases {
        let what = format!("{request:?}");
        let (got, message) = refusal(ask(&manager, admin, request).await);
        assert_eq!(got, code, "{what}: {message}");
        assert!(message.contains(says), "{what}: {message}");
        assert_eq!(snapshot(&manager).await, before, "{what} changed something");
    }
}

#[tokio::test]
async fn the_schema_is_versioned_in_wal_mode_and_a_newer_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nc.db");
    drop(SqliteStore::open(&path).unwrap());
    let db = rusqlite::Connection::open(&path).unwrap();
    let version: u32 = db
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, SqliteStore::schema_version());
    let mode: String = db
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // The seed's trigger stamps update_time on a change made by hand.
    db.execute(
        r#"insert into "net_token" ("token", "cidr", "gateway", "server_ip") values ('n', '10.0.0.0/8', '10.0.0.1', '10.0.0.1')"#,
        [],
    )
    .unwrap();
    db.execute(
        r#"insert into "network_mgr" ("token", "net_id", "state", "bind_ip", "update_time") values ('t', 1, 0, '10.0.0.2', 5)"#,
        [],
    )
    .unwrap();
    db.execute(
        r#"update "network_mgr" set "state" = 2 where "token" = 't'"#,
        [],
    )
    .unwrap();
    let stamped: i64 = db
        .query_row(
            r#"select "update_time" from "network_mgr" where "token" = 't'"#,
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(
        stamped > START / 2,
        "update_time stamped by the trigger: {stamped}"
    );
    // An address is bound once per network, whatever writes the rows.
    let twice = db.execute(
        r#"insert into "network_mgr" ("token", "net_id", "state", "bind_ip") values ('u', 1, 0, '10.0.0.2')"#,
        [],
    );
    assert!(twice.is_err(), "the same address bound twice");

    // One server per file: a second store on it is refused while the first holds it.
    drop(db);
    let first = SqliteStore::open(&path).unwrap();
    let error = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(
        error.contains("is another network-ctl server using it"),
        "{error}"
    );
    drop(first);
    let db = rusqlite::Connection::open(&path).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let error = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(
        error.contains("schema version 99, newer than this network-ctl knows"),
        "{error}"
    );
}

#[tokio::test]
async fn a_node_token_says_hello_only_from_the_bus_node_that_registered_it() {
    let (_dir, clock, manager) = fresh("default", "10.1.1.0/24").await;
    let (token, _) = manager.create_token(None, false).await.unwrap();
    let binding = manager
        .register(&token, "", "agent-a")
        .await
        .unwrap()
        .binding;

    // The token is in the node's certificates: knowing it proves nothing.
    let before = snapshot(&manager).await;
    let error = manager
        .hello(&binding.node_token, "", "intruder")
        .await
        .unwrap_err();
    assert!(matches!(error, ControlError::Unauthenticated(_)), "{error}");
    assert!(
        error
            .to_string()
            .contains("belongs to the bus node \"agent-a\""),
        "{error}"
    );
    let refused = ask(
        &manager,
        false,
        Ask::Unregister(proto::NodeRequest {
            node_token: binding.node_token.clone(),
            net_token: String::new(),
        }),
    )
    .await;
    assert_eq!(refusal(refused).0, proto::ErrorCode::Unauthenticated);
    assert_eq!(
        snapshot(&manager).await,
        before,
        "the intruder changed nothing"
    );

    // The node itself comes back: a hello that changes nothing keeps its place in the LRU order.
    clock.advance(Duration::from_secs(60));
    let again = manager
        .hello(&binding.node_token, "", "agent-a")
        .await
        .unwrap();
    assert_eq!(again.update_time, binding.update_time);
    let stored = manager
        .store()
        .binding("default", &binding.node_token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, again, "what hello returns is what is stored");
}

#[tokio::test]
async fn a_bootstrap_lifetime_past_a_century_is_refused_in_favour_of_never() {
    let (_dir, _clock, manager) = fresh("default", "10.1.1.0/24").await;
    let error = manager
        .create_token(Some(Duration::from_secs(u64::MAX / 1000)), false)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("or never"), "{error}");
    assert!(manager.store().bootstrap_tokens().await.unwrap().is_empty());
}

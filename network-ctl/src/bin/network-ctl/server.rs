//! `network-ctl server`: the network-manager service as server.yml describes it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use atbus_core::engine::Token;
use atbus_core::runtime::Node;
use network_ctl::Network;
use network_ctl::clock::{Clock, SystemClock};
use network_ctl::config::{ServerConfig, StorageConfig};
use network_ctl::manager::Manager;
use network_ctl::service::Service;
use network_ctl::store::{SqliteStore, Store};
use network_ctl::token::{self, DEFAULT_NET_TOKEN};

/// Runs the service until SIGTERM or Ctrl-C.
pub async fn run(path: &Path) -> Result<()> {
    let config = ServerConfig::load(path)?;
    let clock = Arc::new(SystemClock);
    let store: Arc<dyn Store> = match &config.storage {
        StorageConfig::Sqlite { path } => Arc::new(SqliteStore::open(path)?),
        #[cfg(feature = "etcd")]
        StorageConfig::Etcd(etcd) => {
            Arc::new(network_ctl::store::EtcdStore::connect(etcd.clone()).await?)
        }
    };
    let now = clock.now();
    let mut networks = Vec::new();
    if let Some(cidr) = &config.network_addr {
        networks.push(
            Network::new(DEFAULT_NET_TOKEN, cidr, None, None, now)
                .context("networkAddr in server.yml")?,
        );
    }
    for network in &config.networks {
        networks.push(
            Network::new(
                &network.net_token,
                &network.cidr,
                network.gateway.as_deref(),
                network.server_ip.as_deref(),
                now,
            )
            .with_context(|| format!("network {:?} in server.yml", network.net_token))?,
        );
    }
    let mut admin_tokens = config.admin_tokens.clone();
    if admin_tokens.is_empty() {
        let generated = token::generate(32);
        eprintln!(
            "server.yml has no adminTokens: this run's operator token is {generated} (it changes at every start; configure adminTokens to keep one)"
        );
        admin_tokens.push(generated);
    }
    let manager = Manager::start(store, clock, &admin_tokens, networks).await?;
    let sweeper = manager.spawn_sweeper(Duration::from_secs(config.sweep_interval_seconds));
    let bus_token = Token::new(&config.bus.bus_token).context("bus.busToken in server.yml")?;
    let mut builder = Node::builder().name(&config.bus.name).token(bus_token);
    for relay in &config.bus.relays {
        builder = builder.relay(relay);
    }
    let node = builder.start().await.context("joining the bus")?;
    let service = Service::start(node, manager).await?;
    println!(
        "network-manager {} serving through relay {}",
        config.bus.name,
        service.relay()
    );
    terminated().await;
    sweeper.abort();
    service.shutdown().await;
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

//! `network-ctl`: the network-manager service (`server`), the agent on each machine (`agent`),
//! and the operators' commands (`token`, `network`, `node`), all on the bus through a relay.

mod output;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use network_ctl::client::{Client, ClientOptions, Lifetime};
use network_ctl::config::ClientConfig;
use network_ctl::proto;
use output::Format;

/// The atbus-rs network control plane: bootstrap tokens, stable addresses and certificates.
#[derive(Debug, Parser)]
#[command(name = "network-ctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the network-manager service (until SIGTERM or Ctrl-C).
    Server {
        /// server.yml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Runs the agent: registers once with the bootstrap token, comes back with its node token
    /// afterwards, prints its address and stays on the bus (until SIGTERM or Ctrl-C).
    Agent {
        /// client.yml.
        #[arg(long, short)]
        config: PathBuf,
        /// Exit once the address is printed.
        #[arg(long)]
        once: bool,
    },
    /// Bootstrap tokens.
    Token {
        #[command(flatten)]
        bus: BusArgs,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Networks.
    Network {
        #[command(flatten)]
        bus: BusArgs,
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Registered nodes.
    Node {
        #[command(flatten)]
        bus: BusArgs,
        #[command(subcommand)]
        command: NodeCommand,
    },
}

/// How an operator command reaches the network-manager.
#[derive(Debug, Args)]
struct BusArgs {
    /// A client.yml to take the relays and bus token from.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// A relay address (repeatable); overrides the config file.
    #[arg(
        long = "relay",
        env = "NETWORK_CTL_RELAY",
        global = true,
        value_delimiter = ','
    )]
    relays: Vec<String>,
    /// The bus token; overrides the config file.
    #[arg(
        long,
        env = "NETWORK_CTL_BUS_TOKEN",
        global = true,
        hide_env_values = true
    )]
    bus_token: Option<String>,
    /// An operator token (one of the server's adminTokens).
    #[arg(
        long,
        env = "NETWORK_CTL_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// Table for people, JSON for scripts.
    #[arg(long, short, value_enum, default_value = "table", global = true)]
    output: Format,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Creates a bootstrap token and prints it (once).
    Create {
        /// Its lifetime: 10m, 90s, 2h... or never.
        #[arg(long, default_value = "10m")]
        expire: String,
        /// It registers one node only.
        #[arg(long)]
        single_use: bool,
    },
    /// Lists the stored bootstrap tokens (their ids; the tokens are stored hashed).
    List,
}

#[derive(Debug, Subcommand)]
enum NetworkCommand {
    /// Creates a network (or confirms an identical one).
    Create {
        /// Its range, such as 10.2.0.0/16.
        #[arg(long)]
        cidr: String,
        /// What nodes name it by.
        #[arg(long)]
        net_token: String,
        /// The gateway (default: the first host address).
        #[arg(long)]
        gateway: Option<String>,
        /// The server's address (default: the gateway).
        #[arg(long)]
        server_ip: Option<String>,
    },
    /// Lists the networks.
    List,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Lists bound addresses.
    List {
        /// Only this network.
        #[arg(long = "net")]
        net_token: Option<String>,
        /// Only connected nodes.
        #[arg(long)]
        connected: bool,
    },
    /// Prints the address of a node token.
    Ip(NodeArgs),
    /// Prints a node's state (connected, lost, never connected) and when it was last seen.
    State(NodeArgs),
    /// Unregisters a node: frees its address.
    Unregister(NodeArgs),
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// The node token.
    token: String,
    /// The network (default: default).
    #[arg(long = "net", default_value = "")]
    net_token: String,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(match std::env::var("NETWORK_CTL_LOG").as_deref() {
            Ok("debug") => tracing::Level::DEBUG,
            Ok("warn") => tracing::Level::WARN,
            _ => tracing::Level::INFO,
        })
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    if let Err(error) = result {
        // The causes in one line, without a backtrace: these are for operators.
        eprintln!("network-ctl: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Server { config } => server::run(&config).await,
        Command::Agent { config, once } => agent(&config, once).await,
        Command::Token { bus, command } => {
            let client = connect(&bus).await?;
            let result = token(&client, bus.output, command).await;
            client.shutdown().await;
            result
        }
        Command::Network { bus, command } => {
            let client = connect(&bus).await?;
            let result = network(&client, bus.output, command).await;
            client.shutdown().await;
            result
        }
        Command::Node { bus, command } => {
            let client = connect(&bus).await?;
            let result = node(&client, bus.output, command).await;
            client.shutdown().await;
            result
        }
    }
}

/// A client node for one operator command.
async fn connect(bus: &BusArgs) -> Result<Client> {
    let file = bus.config.as_deref().map(ClientConfig::load).transpose()?;
    let relays = if bus.relays.is_empty() {
        file.as_ref()
            .map(|f| f.bus.relays.clone())
            .unwrap_or_default()
    } else {
        bus.relays.clone()
    };
    if relays.is_empty() {
        bail!("no relay: give --relay ADDRESS, NETWORK_CTL_RELAY or --config client.yml");
    }
    let bus_token = bus
        .bus_token
        .clone()
        .or_else(|| file.as_ref().map(|f| f.bus.bus_token.clone()))
        .context("no bus token: give --bus-token, NETWORK_CTL_BUS_TOKEN or --config client.yml")?;
    let name = format!(
        "network-ctl-cli-{}-{}",
        std::process::id(),
        network_ctl::token::generate(6)
    );
    Ok(Client::connect(ClientOptions {
        name,
        relays,
        bus_token,
        admin_token: bus.admin_token.clone(),
    })
    .await?)
}

async fn token(client: &Client, format: Format, command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create { expire, single_use } => {
            let lifetime = match network_ctl::token::parse_lifetime(&expire) {
                Ok(Some(lifetime)) => Lifetime::For(lifetime),
                Ok(None) => Lifetime::Never,
                Err(message) => bail!("--expire: {message}"),
            };
            output::created_token(format, &client.create_token(lifetime, single_use).await?);
        }
        TokenCommand::List => output::tokens(format, &client.list_tokens().await?),
    }
    Ok(())
}

async fn network(client: &Client, format: Format, command: NetworkCommand) -> Result<()> {
    match command {
        NetworkCommand::Create {
            cidr,
            net_token,
            gateway,
            server_ip,
        } => {
            let network = client
                .create_network(proto::CreateNetworkRequest {
                    net_token,
                    cidr,
                    gateway: gateway.unwrap_or_default(),
                    server_ip: server_ip.unwrap_or_default(),
                })
                .await?;
            output::networks(format, &[network]);
        }
        NetworkCommand::List => output::networks(format, &client.networks().await?),
    }
    Ok(())
}

async fn node(client: &Client, format: Format, command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::List {
            net_token,
            connected,
        } => {
            let bindings = client
                .node_list(net_token.as_deref().unwrap_or(""), connected)
                .await?;
            output::bindings(format, &bindings);
        }
        NodeCommand::Ip(node) => {
            let binding = client.node_ip(&node.token, &node.net_token).await?;
            output::binding(format, &binding, true);
        }
        NodeCommand::State(node) => {
            let binding = client.node_state(&node.token, &node.net_token).await?;
            output::binding(format, &binding, false);
        }
        NodeCommand::Unregister(node) => {
            let binding = client.unregister(&node.token, &node.net_token).await?;
            if format == Format::Table {
                eprintln!(
                    "unregistered: {}/{} is free",
                    binding.ip, binding.prefix_len
                );
            }
            output::binding(format, &binding, false);
        }
    }
    Ok(())
}

/// The agent: enroll, print the address, stay on the bus.
async fn agent(path: &std::path::Path, once: bool) -> Result<()> {
    let config = ClientConfig::load(path)?;
    let client = Client::connect(ClientOptions {
        name: config.bus.name.clone(),
        relays: config.bus.relays.clone(),
        bus_token: config.bus.bus_token.clone(),
        admin_token: None,
    })
    .await?;
    // On the bus first, so the manager counts this node as connected from its registration.
    let record = network_ctl::presence::record(client.node(), network_ctl::presence::AGENT_ROLE);
    let presence = network_ctl::presence::keep_published(client.node(), client.relay(), record)
        .await
        .context("publishing the agent's record at the relay")?;
    let (enrollment, outcome) = network_ctl::agent::enroll(
        &client,
        &config.work_dir,
        config.bootstrap_token.as_deref(),
        config.net_token.as_deref().unwrap_or(""),
    )
    .await?;
    println!(
        "address {}/{} in network {} ({})",
        enrollment.ip,
        enrollment.prefix_len,
        enrollment.net_token,
        match outcome {
            network_ctl::agent::Outcome::Registered => "registered",
            network_ctl::agent::Outcome::Returned => "returned with its node token",
        }
    );
    if !once {
        server::terminated().await;
    }
    presence.abort();
    client.node().shutdown_within(Duration::from_secs(2)).await;
    Ok(())
}

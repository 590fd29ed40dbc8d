//! An echo server and a client in one program: the server sends every message back to its
//! sender; the client sends a few lines and prints what comes back.
//!
//! ```text
//! cargo run -p atbus-core --example echo                       # both, over tcp on loopback
//! cargo run -p atbus-core --example echo -- server tcp://127.0.0.1:7900
//! cargo run -p atbus-core --example echo -- client tcp://127.0.0.1:7900
//! ```
//!
//! Through a relay (`scripts/relay` in another terminal; its development token, or the one it
//! was given, in `ATBUS_TOKEN`):
//!
//! ```text
//! ATBUS_TOKEN=… cargo run -p atbus-core --example echo -- server --relay tcp://127.0.0.1:7800
//! ATBUS_TOKEN=… cargo run -p atbus-core --example echo -- client --relay tcp://127.0.0.1:7800
//! ```

use std::time::Duration;

use atbus_core::engine::Token;
use atbus_core::runtime::Node;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// `ATBUS_TOKEN` if set (a relay's token), else the example's own.
fn token() -> Result<Token> {
    let text = std::env::var("ATBUS_TOKEN")
        .unwrap_or_else(|_| "the echo example's shared token".to_string());
    Ok(Token::new(text)?)
}

/// Where a node meets the other: listening on (server) or dialing (client) an address, or
/// through a relay.
enum Meet<'a> {
    Direct(&'a str),
    Relay(&'a str),
}

async fn server(meet: Meet<'_>) -> Result<Node> {
    let builder = Node::builder().name("echo").token(token()?);
    let node = match meet {
        Meet::Direct(address) => builder.listen(address),
        Meet::Relay(relay) => builder.relay(relay),
    }
    .start()
    .await?;
    match meet {
        Meet::Direct(_) => println!("echo server on {}", node.local_addresses()[0]),
        Meet::Relay(relay) => println!("echo server reachable as \"echo\" through {relay}"),
    }
    let serving = node.clone();
    tokio::spawn(async move {
        while let Some(message) = serving.recv().await {
            if let Err(error) = serving.send(&message.source, message.data).await {
                eprintln!("echo to {}: {error}", message.source);
            }
        }
    });
    Ok(node)
}

async fn client(meet: Meet<'_>) -> Result<()> {
    let builder = Node::builder().name("echo-client").token(token()?);
    let node = match meet {
        Meet::Direct(address) => builder.peer("echo", [address]),
        Meet::Relay(relay) => builder.relay(relay),
    }
    .start()
    .await?;
    if let Meet::Relay(_) = meet {
        // The relay connection comes up first: until then there is no way to echo.
        for _ in 0..100 {
            if node.connection_info().iter().any(|c| c.peer.is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for line in ["hello", "atbus", "goodbye"] {
        node.send("echo", line).await?;
        let reply = tokio::time::timeout(Duration::from_secs(5), node.recv())
            .await?
            .ok_or("the node stopped")?;
        println!(
            "{} said {:?}",
            reply.source,
            String::from_utf8_lossy(&reply.data)
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["server", address] => {
            let _node = server(Meet::Direct(address)).await?;
            tokio::signal::ctrl_c().await?;
        }
        ["server", "--relay", relay] => {
            let _node = server(Meet::Relay(relay)).await?;
            tokio::signal::ctrl_c().await?;
        }
        ["client", address] => client(Meet::Direct(address)).await?,
        ["client", "--relay", relay] => client(Meet::Relay(relay)).await?,
        [] => {
            let node = server(Meet::Direct("tcp://127.0.0.1:0")).await?;
            client(Meet::Direct(&node.local_addresses()[0].to_string())).await?;
            node.shutdown().await;
        }
        _ => {
            return Err("usage: echo [server|client] [ADDRESS | --relay RELAY_ADDRESS]".into());
        }
    }
    Ok(())
}

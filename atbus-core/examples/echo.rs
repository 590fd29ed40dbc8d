//! An echo server and a client in one program: the server sends every message back to its
//! sender; the client sends a few lines and prints what comes back.
//!
//! ```text
//! cargo run -p atbus-core --example echo                       # both, over tcp on loopback
//! cargo run -p atbus-core --example echo -- server tcp://127.0.0.1:7900
//! cargo run -p atbus-core --example echo -- client tcp://127.0.0.1:7900
//! ```

use std::time::Duration;

use atbus_core::engine::Token;
use atbus_core::runtime::Node;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn token() -> Result<Token> {
    Ok(Token::new("the echo example's shared token")?)
}

async fn server(address: &str) -> Result<Node> {
    let node = Node::builder()
        .name("echo")
        .token(token()?)
        .listen(address)
        .start()
        .await?;
    println!("echo server on {}", node.local_addresses()[0]);
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

async fn client(address: &str) -> Result<()> {
    let node = Node::builder()
        .name("echo-client")
        .token(token()?)
        .peer("echo", [address])
        .start()
        .await?;
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
    match args.as_slice() {
        [role, address] if role == "server" => {
            let _node = server(address).await?;
            tokio::signal::ctrl_c().await?;
        }
        [role, address] if role == "client" => client(address).await?,
        [] => {
            let node = server("tcp://127.0.0.1:0").await?;
            client(&node.local_addresses()[0].to_string()).await?;
            node.shutdown().await;
        }
        _ => return Err("usage: echo [server ADDRESS | client ADDRESS]".into()),
    }
    Ok(())
}

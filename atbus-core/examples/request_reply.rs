//! Request and reply: a service answers requests with [`Node::reply`]; a caller makes several
//! requests at once with [`Node::request`] and each gets its own answer (the request id travels
//! in the packet).
//!
//! ```text
//! cargo run -p atbus-core --example request_reply
//! ```

use std::time::Duration;

use atbus_core::engine::Token;
use atbus_core::runtime::Node;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Result<()> {
    let token = Token::new("the request_reply example's token")?;
    let service = Node::builder()
        .name("squares")
        .token(token.clone())
        .listen("mem://squares")
        .start()
        .await?;
    let answering = service.clone();
    tokio::spawn(async move {
        while let Some(request) = answering.recv().await {
            let number: u64 = String::from_utf8_lossy(&request.data).parse().unwrap_or(0);
            let answer = (number * number).to_string();
            if let Err(error) = answering.reply(&request, answer).await {
                eprintln!("reply: {error}");
            }
        }
    });

    let caller = Node::builder()
        .name("caller")
        .token(token)
        .peer("squares", ["mem://squares"])
        .start()
        .await?;
    let asks = (1..=5u64).map(|n| {
        let caller = caller.clone();
        async move {
            let reply = caller
                .request("squares", n.to_string(), Duration::from_secs(5))
                .await?;
            Ok::<_, atbus_core::runtime::NodeError>((
                n,
                String::from_utf8_lossy(&reply.data).into_owned(),
            ))
        }
    });
    for asked in join_all(asks).await {
        let (n, square) = asked?;
        println!("{n}² = {square}");
        assert_eq!(square, (n * n).to_string());
    }
    caller.shutdown().await;
    service.shutdown().await;
    Ok(())
}

/// Runs the futures at once and collects their results in order (a join without a dependency).
async fn join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.expect("the task"));
    }
    outputs
}

//! The background tasks of a running node: the engine's timer, one accept loop per listener (each
//! accepted connection completes its TLS or QUIC handshake, if any, in its own task), and one dial
//! loop per peer address (connect, run the connection, reconnect with capped exponential backoff
//! and jitter).

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::handle::{NodeHandle, Refused};
use super::shared::Shared;
use super::transport::{self, Accepted, Listener, TransportContext, TransportError};
use crate::address::Address;
use crate::engine::ConnectOptions;

/// Sleeps until the engine's next timer, runs it, and starts over; wakes early when an action
/// armed an earlier timer.
pub(crate) async fn timer_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let deadline = {
            let mut state = shared.lock();
            let deadline = state.endpoint.poll_timeout();
            state.armed_timer = deadline;
            deadline
        };
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => shared.with(|state| state.endpoint.handle_timeout(Instant::now())),
            () = shared.timer.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Accepts connections on `listener` until the node stops; each runs in its own task.
pub(crate) async fn accept_loop(
    node: NodeHandle,
    context: Arc<TransportContext>,
    mut listener: Listener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (accepted, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(open_accepted(
            node.clone(),
            context.clone(),
            accepted,
            remote,
        ));
    }
}

/// Completes an accepted connection's opening, registers it with the engine, and runs it.
async fn open_accepted(
    node: NodeHandle,
    context: Arc<TransportContext>,
    accepted: Accepted,
    remote: String,
) {
    let opened = match accepted.open(&context).await {
        Ok(opened) => opened,
        Err(error) => {
            tracing::info!(%error, remote, "incoming connection refused in its handshake");
            return;
        }
    };
    match node.accept(remote.clone(), opened.params()) {
        Ok(handle) => {
            tracing::debug!(connection = handle.id().0, remote, "accepted");
            opened.run(handle).await;
        }
        Err(Refused::Engine(error)) => {
            tracing::warn!(%error, remote, "connection not accepted");
        }
        Err(Refused::ShuttingDown) => {}
    }
}

/// Reconnection delays: from `min`, doubling to `max`, with up to half again of jitter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// `delay` with a random part added, so that many nodes do not reconnect in step.
    fn jittered(delay: Duration) -> Duration {
        let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
        delay + delay.mul_f64((random % 1000) as f64 / 2000.0)
    }
}

/// Keeps one connection to `peer` at `address` up until the node stops.
pub(crate) async fn dial_loop(
    node: NodeHandle,
    context: Arc<TransportContext>,
    address: Address,
    options: ConnectOptions,
    backoff: Backoff,
    stop: watch::Receiver<bool>,
) {
    let mut delay = backoff.min;
    // The last connection was dialed again at once (0-RTT refused) without a backoff.
    let mut redialed = false;
    loop {
        if *stop.borrow() {
            return;
        }
        match transport::connect(&node, &context, &address).await {
            Ok(opened) => {
                let registered =
                    match node.connect(address.to_string(), opened.params(), options.clone()) {
                        Ok(handle) => Some(handle),
                        Err(Refused::Engine(error)) => {
                            tracing::warn!(%error, %address, "connection not opened");
                            None
                        }
                        Err(Refused::ShuttingDown) => None,
                    };
                if let Some(handle) = registered {
                    tracing::debug!(connection = handle.id().0, %address, "connected");
                    let started = Instant::now();
                    let again = opened.run(handle).await;
                    // A connection that lived a while resets the backoff.
                    if started.elapsed() > backoff.max {
                        delay = backoff.min;
                    }
                    // Once in a row, so a server that always refuses cannot make us spin.
                    if again && !redialed && !*stop.borrow() {
                        redialed = true;
                        continue;
                    }
                }
            }
            // A certificate refused is a configuration to fix: said louder than a peer down.
            Err(error @ TransportError::Handshake { .. }) => {
                tracing::warn!(%error, "connect failed");
            }
            Err(error) => tracing::debug!(%error, "connect failed"),
        }
        redialed = false;
        if *stop.borrow() {
            return;
        }
        tokio::time::sleep(Backoff::jittered(delay)).await;
        delay = (delay * 2).min(backoff.max);
    }
}

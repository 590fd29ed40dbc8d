//! What went over each kind of transport: connections opened and closed, bytes and transmits
//! each way. Kept under the node's lock (every byte passes there anyway) and read with
//! [`Node::traffic`](crate::runtime::Node::traffic).

use std::collections::BTreeMap;

/// The schemes counted, in a fixed order.
const SCHEMES: [&str; 6] = ["tcp", "tls", "udp", "quic", "unix", "mem"];

/// Counters of one transport, since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    /// Connections registered with the engine (dialed or accepted).
    pub connections_opened: u64,
    /// Of those, the ones that ended.
    pub connections_closed: u64,
    /// Bytes received and fed to the engine.
    pub bytes_received: u64,
    /// Bytes the engine produced, handed to the transport to send.
    pub bytes_sent: u64,
    /// Transmits handed to the transport (a datagram each on UDP; stream transports batch them
    /// into fewer writes).
    pub transmits_sent: u64,
}

/// The counters of every transport.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    by_scheme: [TrafficCounters; SCHEMES.len()],
}

impl Traffic {
    /// The slot of the transport a remote address (`scheme://…`) uses.
    pub fn slot(remote: &str) -> Option<usize> {
        let scheme = remote.split_once("://")?.0;
        SCHEMES.iter().position(|&known| known == scheme)
    }

    /// The counters of `slot`, if it is one.
    pub fn get_mut(&mut self, slot: Option<usize>) -> Option<&mut TrafficCounters> {
        self.by_scheme.get_mut(slot?)
    }

    /// The counters of the transports that carried a connection, by scheme.
    pub fn snapshot(&self) -> BTreeMap<&'static str, TrafficCounters> {
        SCHEMES
            .iter()
            .zip(&self.by_scheme)
            .filter(|(_, counters)| counters.connections_opened > 0)
            .map(|(&scheme, &counters)| (scheme, counters))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_are_counted_under_their_scheme() {
        let mut traffic = Traffic::default();
        for remote in ["tcp://127.0.0.1:1", "udp://[::1]:2", "mem://x", "tcp://h:3"] {
            let slot = Traffic::slot(remote);
            traffic.get_mut(slot).expect("known").connections_opened += 1;
        }
        assert_eq!(Traffic::slot("gopher://x"), None);
        assert_eq!(Traffic::slot("no scheme"), None);
        let snapshot = traffic.snapshot();
        assert_eq!(snapshot["tcp"].connections_opened, 2);
        assert_eq!(snapshot["udp"].connections_opened, 1);
        assert!(!snapshot.contains_key("quic"));
    }
}

//! How to reach a target, from its record: the same process → its `mem://`
//! address; the same host → its `unix://` address; the same namespace → its internal addresses;
//! another namespace → the gateway whose match fits the caller, lowest priority first; otherwise
//! through a relay.

use crate::policy::{Locality, Tier};
use crate::record::NodeRecord;

/// The way to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// Dial these addresses (one connection each).
    Direct(Vec<String>),
    /// Send through a relay.
    Relay,
}

/// The way from the node with record `me` to the node with record `target`.
///
/// ```
/// use atbus_discovery::NodeRecord;
/// use atbus_discovery::path::{Path, path_to};
///
/// let me = NodeRecord::new("client");
/// let mut target = NodeRecord::new("echo");
/// target.addresses = vec!["mem://echo".into(), "unix:///run/echo.sock".into(), "tcp://10.0.0.5:7810".into()];
/// // NodeRecord::new fills in this process: the same process, so memory.
/// assert_eq!(path_to(&me, &target), Path::Direct(vec!["mem://echo".into()]));
///
/// target.host.pid += 1; // another process on this host
/// assert_eq!(path_to(&me, &target), Path::Direct(vec!["unix:///run/echo.sock".into()]));
/// ```
pub fn path_to(me: &NodeRecord, target: &NodeRecord) -> Path {
    let scheme = |address: &&String| address.split("://").next().unwrap_or_default().to_string();
    let with = |wanted: &dyn Fn(&str) -> bool| -> Vec<String> {
        target
            .addresses
            .iter()
            .filter(|address| wanted(&scheme(address)))
            .cloned()
            .collect()
    };
    let tier = Locality::of(me).proximity(target).tier;
    // The closest way the tier allows, falling back to the next one out.
    if tier == Tier::Process {
        let mem = with(&|scheme| scheme == "mem");
        if !mem.is_empty() {
            return Path::Direct(mem);
        }
    }
    if tier >= Tier::Host {
        let unix = with(&|scheme| scheme == "unix");
        if !unix.is_empty() {
            return Path::Direct(unix);
        }
    }
    if tier >= Tier::Namespace {
        let internal = with(&|scheme| scheme != "mem" && scheme != "unix");
        if !internal.is_empty() {
            return Path::Direct(internal);
        }
    }
    let gateway = target
        .gateways
        .iter()
        .filter(|gateway| {
            gateway
                .match_host
                .as_ref()
                .is_none_or(|host| *host == me.host.hostname)
                && gateway
                    .match_labels
                    .iter()
                    .all(|(key, value)| me.metadata.labels.get(key) == Some(value))
                && !gateway.addresses.is_empty()
        })
        .min_by_key(|gateway| gateway.priority);
    match gateway {
        Some(gateway) => Path::Direct(gateway.addresses.clone()),
        None => Path::Relay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Gateway;

    fn target() -> NodeRecord {
        let mut target = NodeRecord::new("echo");
        target.addresses = vec![
            "mem://echo".into(),
            "unix:///run/echo.sock".into(),
            "tcp://10.0.0.5:7810".into(),
        ];
        target.gateways = vec![
            Gateway {
                priority: 2,
                addresses: vec!["tcp://gw-b:7800".into()],
                ..Default::default()
            },
            Gateway {
                priority: 1,
                addresses: vec!["tcp://gw-eu:7800".into()],
                match_labels: [("area.region".into(), "eu".into())].into(),
                ..Default::default()
            },
        ];
        target
    }

    #[test]
    fn the_path_narrows_from_memory_to_unix_to_internal_to_gateway() {
        let me = NodeRecord::new("client");
        let mut target = target();
        assert_eq!(
            path_to(&me, &target),
            Path::Direct(vec!["mem://echo".into()])
        );
        target.host.pid += 1;
        assert_eq!(
            path_to(&me, &target),
            Path::Direct(vec!["unix:///run/echo.sock".into()])
        );
        target.host.hostname = "another-host".into();
        assert_eq!(
            path_to(&me, &target),
            Path::Direct(vec!["tcp://10.0.0.5:7810".into()])
        );
        target.metadata.namespace = "other".into();
        assert_eq!(
            path_to(&me, &target),
            Path::Direct(vec!["tcp://gw-b:7800".into()])
        );
    }

    #[test]
    fn a_matching_gateway_wins_by_priority_and_no_gateway_means_a_relay() {
        let mut me = NodeRecord::new("client");
        me.metadata.labels.insert("area.region".into(), "eu".into());
        let mut target = target();
        target.metadata.namespace = "other".into();
        assert_eq!(
            path_to(&me, &target),
            Path::Direct(vec!["tcp://gw-eu:7800".into()])
        );
        target.gateways.clear();
        assert_eq!(path_to(&me, &target), Path::Relay);
    }

    #[test]
    fn a_closer_tier_without_its_address_falls_back_outward() {
        let me = NodeRecord::new("client");
        let mut target = target();
        target
            .addresses
            .retain(|address| address.starts_with("tcp"));
        // Same process, but no mem:// nor unix:// address: its internal address.
        assert_eq!(
            path_to(&me, &target),
            Path::Direct(vec!["tcp://10.0.0.5:7810".into()])
        );
    }
}

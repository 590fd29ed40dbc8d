//! Records and watch events on the bus: conversions between [`NodeRecord`] / [`WatchEvent`] and
//! the protobuf messages of `atbus-proto/proto/atbus_discovery.proto`, which nodes and relays
//! exchange for discovery through the relay.

use atbus_proto::discovery as pb;

use crate::record::{AdvertiseRelay, Gateway, HostInfo, Metadata, NodeRecord};
use crate::watch::WatchEvent;

impl From<&NodeRecord> for pb::NodeRecord {
    fn from(record: &NodeRecord) -> Self {
        pb::NodeRecord {
            name: record.name.clone(),
            version: record.version.clone(),
            custom_data: record.custom_data.clone(),
            token_digests: record.token_digests.clone(),
            addresses: record.addresses.clone(),
            host: Some(pb::HostInfo {
                hostname: record.host.hostname.clone(),
                pid: record.host.pid,
            }),
            metadata: Some(pb::Metadata {
                namespace: record.metadata.namespace.clone(),
                api_version: record.metadata.api_version.clone(),
                kind: record.metadata.kind.clone(),
                group: record.metadata.group.clone(),
                labels: record.metadata.labels.clone(),
                annotations: record.metadata.annotations.clone(),
            }),
            gateways: record
                .gateways
                .iter()
                .map(|gateway| pb::Gateway {
                    priority: gateway.priority,
                    addresses: gateway.addresses.clone(),
                    match_host: gateway.match_host.clone().unwrap_or_default(),
                    match_labels: gateway.match_labels.clone(),
                })
                .collect(),
            advertise_relay: record
                .advertise_relay
                .as_ref()
                .map(|relay| pb::AdvertiseRelay {
                    name: relay.name.clone().unwrap_or_default(),
                    labels: relay.labels.clone(),
                }),
        }
    }
}

impl From<pb::NodeRecord> for NodeRecord {
    fn from(record: pb::NodeRecord) -> Self {
        let host = record.host.unwrap_or_default();
        let metadata = record.metadata.unwrap_or_default();
        NodeRecord {
            name: record.name,
            version: record.version,
            custom_data: record.custom_data,
            token_digests: record.token_digests,
            addresses: record.addresses,
            host: HostInfo {
                hostname: host.hostname,
                pid: host.pid,
            },
            metadata: Metadata {
                namespace: metadata.namespace,
                api_version: metadata.api_version,
                kind: metadata.kind,
                group: metadata.group,
                labels: metadata.labels,
                annotations: metadata.annotations,
            },
            gateways: record
                .gateways
                .into_iter()
                .map(|gateway| Gateway {
                    priority: gateway.priority,
                    addresses: gateway.addresses,
                    match_host: Some(gateway.match_host).filter(|host| !host.is_empty()),
                    match_labels: gateway.match_labels,
                })
                .collect(),
            advertise_relay: record.advertise_relay.map(|relay| AdvertiseRelay {
                name: Some(relay.name).filter(|name| !name.is_empty()),
                labels: relay.labels,
            }),
        }
    }
}

impl WatchEvent {
    /// The event on the wire; `None` for [`WatchEvent::Init`], which travels as a snapshot.
    pub fn to_wire(&self) -> Option<pb::WatchEvent> {
        match self {
            WatchEvent::Init { .. } => None,
            WatchEvent::Put { revision, record } => Some(pb::WatchEvent {
                r#type: pb::watch_event::Kind::Put as i32,
                revision: *revision,
                record: Some(record.into()),
                name: record.name.clone(),
            }),
            WatchEvent::Delete { revision, name } => Some(pb::WatchEvent {
                r#type: pb::watch_event::Kind::Delete as i32,
                revision: *revision,
                record: None,
                name: name.clone(),
            }),
        }
    }

    /// An event from the wire; `None` for a put without its record.
    pub fn from_wire(event: pb::WatchEvent) -> Option<Self> {
        match pb::watch_event::Kind::try_from(event.r#type) {
            Ok(pb::watch_event::Kind::Put) => Some(WatchEvent::Put {
                revision: event.revision,
                record: event.record?.into(),
            }),
            Ok(pb::watch_event::Kind::Delete) => Some(WatchEvent::Delete {
                revision: event.revision,
                name: event.name,
            }),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_record_survives_the_wire() {
        let mut record = NodeRecord::new("echo-1");
        record.custom_data = "x".into();
        record.addresses = vec!["unix:///run/echo.sock".into()];
        record.token_digests.push(crate::token_digest(b"secret"));
        record.metadata.namespace = "prod".into();
        record.metadata.kind = "echo".into();
        record.metadata.labels.insert("app".into(), "echo".into());
        record
            .metadata
            .annotations
            .insert("note".into(), "hi".into());
        record.gateways.push(Gateway {
            priority: 2,
            addresses: vec!["tcp://10.0.0.1:7800".into()],
            match_host: Some("edge".into()),
            match_labels: [("zone".into(), "a".into())].into(),
        });
        record.advertise_relay = Some(AdvertiseRelay {
            name: Some("relay-b".into()),
            labels: Default::default(),
        });
        let wire = pb::NodeRecord::from(&record);
        assert_eq!(NodeRecord::from(wire), record);
    }

    #[test]
    fn put_and_delete_events_survive_the_wire() {
        let put = WatchEvent::Put {
            revision: 7,
            record: NodeRecord::new("a"),
        };
        let delete = WatchEvent::Delete {
            revision: 8,
            name: "a".into(),
        };
        for event in [put, delete] {
            let wire = event.to_wire().unwrap();
            assert_eq!(WatchEvent::from_wire(wire), Some(event));
        }
    }
}

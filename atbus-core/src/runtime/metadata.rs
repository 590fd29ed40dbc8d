//! What a node says about itself besides its name: its namespace, labels (what selectors match)
//! and annotations (for tools), checked by the Kubernetes rules of `atbus_discovery::validate`.

use std::collections::BTreeMap;

use atbus_discovery::validate::{validate_label_key, validate_labels, validate_node_name};

use super::error::NodeError;

/// A node's namespace, labels and annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMetadata {
    /// The namespace; `default` unless set.
    pub namespace: String,
    /// Labels, matched by selectors.
    pub labels: BTreeMap<String, String>,
    /// Annotations: free-form values under label-style keys.
    pub annotations: BTreeMap<String, String>,
}

impl Default for NodeMetadata {
    fn default() -> Self {
        Self {
            namespace: "default".to_string(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }
}

impl NodeMetadata {
    /// Checks the namespace (a DNS subdomain), the labels and the annotation keys; the error
    /// names the field and the rule it breaks.
    pub fn validate(&self) -> Result<(), NodeError> {
        validate_node_name(&self.namespace).map_err(|error| {
            NodeError::Config(format!("namespace {:?}: {error}", self.namespace))
        })?;
        validate_labels(&self.labels).map_err(|error| NodeError::Config(error.to_string()))?;
        for key in self.annotations.keys() {
            validate_label_key(key)
                .map_err(|error| NodeError::Config(format!("annotations[{key:?}]: {error}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_namespaces_labels_and_annotation_keys_are_named() {
        assert!(NodeMetadata::default().validate().is_ok());
        let namespace = NodeMetadata {
            namespace: "Prod".into(),
            ..NodeMetadata::default()
        };
        let error = namespace.validate().unwrap_err().to_string();
        assert!(error.contains("namespace"), "{error}");
        let mut labels = NodeMetadata::default();
        labels.labels.insert("tier".into(), "front end".into());
        let error = labels.validate().unwrap_err().to_string();
        assert!(error.contains("labels[\"tier\"]"), "{error}");
        let mut annotations = NodeMetadata::default();
        annotations
            .annotations
            .insert("atbus.io/".into(), "anything at all".into());
        let error = annotations.validate().unwrap_err().to_string();
        assert!(error.contains("annotations"), "{error}");
        annotations.annotations.clear();
        annotations
            .annotations
            .insert("atbus.io/owner".into(), "Team Blue, room 4".into());
        assert!(annotations.validate().is_ok());
    }
}

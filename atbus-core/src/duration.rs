//! Durations as people write them in configuration files: `250ms`, `5s`, `2m`, `1h`, or a bare
//! number of seconds. Both configuration types read them this way: the engine's
//! ([`EngineConfig`](crate::engine::EngineConfig), the YAML `engine:` section) and the node's
//! (`runtime::NodeConfig`'s `reconnect`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written as a number and a unit: `250ms`, `5s`, `2m`, `1h` (a bare number is
/// seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 250ms, 5s, 2m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|error| format!("{text:?}: {error}"))
}

/// Deserializes a duration field (`#[serde(deserialize_with = "…")]`): a string like `5s`, or a
/// number of seconds.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Seconds(f64),
        Text(String),
    }
    match Text::deserialize(deserializer)? {
        Text::Seconds(seconds) => {
            Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
        }
        Text::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

/// The same for an optional duration that is `Some` when the field is present.
pub(crate) fn deserialize_some<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize(deserializer).map(Some)
}

//! Limits of the frame codec: the largest frame body and the protocol versions accepted.

use crate::PROTOCOL_VERSION;

/// The default limit on a frame body (`frame_message`): 2 MiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 2 * 1024 * 1024;

/// The highest value [`CodecConfig::with_max_frame_length`] accepts: 1 GiB.
pub const MAX_FRAME_LENGTH_LIMIT: usize = 1024 * 1024 * 1024;

/// Limits and versions of a [`FrameCodec`](crate::FrameCodec).
///
/// Both sides of a connection should agree on the limit: a frame body over it is refused by the
/// encoder, and by the decoder as soon as the length field arrives.
///
/// ```
/// use atbus_proto::CodecConfig;
///
/// let config = CodecConfig::default().with_max_frame_length(64 * 1024 * 1024)?;
/// assert_eq!(config.max_frame_length(), 64 * 1024 * 1024);
/// assert!(config.accepts_version(atbus_proto::PROTOCOL_VERSION));
/// # Ok::<(), atbus_proto::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecConfig {
    max_frame_length: usize,
    accepted_versions: Vec<u64>,
    version: u64,
}

/// A [`CodecConfig`] setting out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The maximum frame length is above [`MAX_FRAME_LENGTH_LIMIT`].
    #[error("max_frame_length {value} is above the highest supported value {limit}")]
    MaxFrameLengthTooLarge {
        /// The value asked for.
        value: usize,
        /// The highest value allowed.
        limit: usize,
    },
    /// The list of accepted versions is empty, so no frame could ever be decoded.
    #[error("accepted_versions is empty: at least one protocol version must be accepted")]
    NoAcceptedVersion,
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self {
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            accepted_versions: vec![PROTOCOL_VERSION],
            version: PROTOCOL_VERSION,
        }
    }
}

impl CodecConfig {
    /// Sets the largest `frame_message` body, in bytes, that is encoded or decoded (the value of
    /// the length field; the header and CRC come on top).
    pub fn with_max_frame_length(mut self, max: usize) -> Result<Self, ConfigError> {
        if max > MAX_FRAME_LENGTH_LIMIT {
            return Err(ConfigError::MaxFrameLengthTooLarge {
                value: max,
                limit: MAX_FRAME_LENGTH_LIMIT,
            });
        }
        self.max_frame_length = max;
        Ok(self)
    }

    /// Sets the protocol versions the decoder accepts; frames of any other version are refused
    /// with [`DecodeError::UnsupportedVersion`](crate::DecodeError::UnsupportedVersion).
    pub fn with_accepted_versions(
        mut self,
        versions: impl IntoIterator<Item = u64>,
    ) -> Result<Self, ConfigError> {
        let mut versions: Vec<u64> = versions.into_iter().collect();
        if versions.is_empty() {
            return Err(ConfigError::NoAcceptedVersion);
        }
        versions.sort_unstable();
        versions.dedup();
        self.accepted_versions = versions;
        Ok(self)
    }

    /// Sets the protocol version the encoder writes (default [`PROTOCOL_VERSION`]).
    ///
    /// The decoder's accepted versions are set apart, by
    /// [`with_accepted_versions`](Self::with_accepted_versions): a codec that writes a version it
    /// does not accept cannot read its own frames.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// The largest `frame_message` body, in bytes.
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// The protocol versions the decoder accepts, sorted.
    pub fn accepted_versions(&self) -> &[u64] {
        &self.accepted_versions
    }

    /// Whether the decoder accepts frames of `version`.
    pub fn accepts_version(&self, version: u64) -> bool {
        self.accepted_versions.contains(&version)
    }

    /// The protocol version the encoder writes.
    pub fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limit_is_two_mebibytes_and_accepts_only_the_current_version() {
        let config = CodecConfig::default();
        assert_eq!(config.max_frame_length(), 2 * 1024 * 1024);
        assert_eq!(config.accepted_versions(), &[PROTOCOL_VERSION]);
        assert_eq!(config.version(), PROTOCOL_VERSION);
    }

    #[test]
    fn max_frame_length_can_be_raised_to_64_mib_and_beyond_but_not_past_the_limit() {
        let config = CodecConfig::default()
            .with_max_frame_length(64 * 1024 * 1024)
            .unwrap();
        assert_eq!(config.max_frame_length(), 64 * 1024 * 1024);
        assert!(
            CodecConfig::default()
                .with_max_frame_length(MAX_FRAME_LENGTH_LIMIT)
                .is_ok()
        );
        assert_eq!(
            CodecConfig::default().with_max_frame_length(MAX_FRAME_LENGTH_LIMIT + 1),
            Err(ConfigError::MaxFrameLengthTooLarge {
                value: MAX_FRAME_LENGTH_LIMIT + 1,
                limit: MAX_FRAME_LENGTH_LIMIT
            })
        );
    }

    #[test]
    fn accepted_versions_are_sorted_deduplicated_and_never_empty() {
        let config = CodecConfig::default()
            .with_accepted_versions([3, 1, 3, 2])
            .unwrap();
        assert_eq!(config.accepted_versions(), &[1, 2, 3]);
        assert!(config.accepts_version(2));
        assert!(!config.accepts_version(4));
        assert_eq!(
            CodecConfig::default().with_accepted_versions([]),
            Err(ConfigError::NoAcceptedVersion)
        );
    }
}

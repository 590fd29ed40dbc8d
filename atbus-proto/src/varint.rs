//! Reading the LEB128 varints of the frame header, one partial buffer at a time.
//!
//! prost's own varint reader cannot tell "not enough bytes yet" from "too long" or "overflow";
//! an incremental decoder needs all three apart.

use crate::MAX_VARINT_LEN;

/// The outcome of reading a varint at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Varint {
    /// A whole varint: its value and how many bytes it took.
    Complete { value: u64, len: usize },
    /// The buffer ends inside the varint.
    Incomplete,
}

/// Why the bytes at the start of a buffer are not a varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The tenth byte still has its continuation bit set.
    TooLong,
    /// The tenth byte carries bits above bit 63.
    Overflow,
}

/// Reads the varint at the start of `buf`, looking at no more than [`MAX_VARINT_LEN`] bytes.
pub(crate) fn read_varint(buf: &[u8]) -> Result<Varint, VarintError> {
    let mut value: u64 = 0;
    for (index, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        if index == MAX_VARINT_LEN - 1 {
            if byte & 0x80 != 0 {
                return Err(VarintError::TooLong);
            }
            if byte > 1 {
                return Err(VarintError::Overflow);
            }
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Varint::Complete {
                value,
                len: index + 1,
            });
        }
    }
    Ok(Varint::Incomplete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn encoded(value: u64) -> Vec<u8> {
        let mut buf = BytesMut::new();
        prost::encoding::encode_varint(value, &mut buf);
        buf.to_vec()
    }

    #[test]
    fn reads_what_prost_writes_at_every_length() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let bytes = encoded(value);
            assert_eq!(
                read_varint(&bytes),
                Ok(Varint::Complete {
                    value,
                    len: bytes.len()
                }),
                "value {value}"
            );
        }
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let bytes = encoded(u64::MAX);
        assert_eq!(bytes.len(), MAX_VARINT_LEN);
        for end in 0..bytes.len() {
            assert_eq!(read_varint(&bytes[..end]), Ok(Varint::Incomplete));
        }
    }

    #[test]
    fn eleven_byte_varint_is_too_long_after_ten_bytes() {
        let bytes = [0x80u8; 11];
        assert_eq!(read_varint(&bytes[..9]), Ok(Varint::Incomplete));
        assert_eq!(read_varint(&bytes[..10]), Err(VarintError::TooLong));
    }

    #[test]
    fn tenth_byte_above_one_overflows() {
        let mut bytes = [0xffu8; 10];
        bytes[9] = 0x02;
        assert_eq!(read_varint(&bytes), Err(VarintError::Overflow));
    }

    #[test]
    fn non_canonical_padding_is_accepted_as_protobuf_does() {
        assert_eq!(
            read_varint(&[0x81, 0x80, 0x00]),
            Ok(Varint::Complete { value: 1, len: 3 })
        );
    }
}

//! The one canonical binary encoding for everything Peregrine signs, hashes or stores.
//!
//! Rules, chosen so that one value has exactly one encoding:
//! - integers are fixed-size little-endian (`u8`, `u16`, `u32`, `u64`, `u128`); there is no `usize`;
//! - byte strings and lists carry a `u32` length prefix, and every decoder names its own upper bound,
//!   so a hostile length can never make us allocate more than that bound;
//! - enums are a one-byte tag followed by the variant's fields; unknown tags are errors;
//! - `Option<T>` is a tag byte 0 (none) or 1 (some) followed by `T`;
//! - decoding a whole value ([`decode_exact`]) rejects trailing bytes.
//!
//! commonware-codec was considered (consensus uses it), but it writes integers big-endian and the
//! project's rule is little-endian; keeping our own ~150 lines of codec also keeps every persisted
//! format under our control and frozen by conformance vectors in the tests of each type.

use thiserror::Error;

/// Why bytes could not be decoded into a value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended before the value was complete.
    #[error("truncated input: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Bytes still needed.
        needed: usize,
        /// Offset at which the read was attempted.
        offset: usize,
    },
    /// Bytes remained after a complete value.
    #[error("{count} trailing bytes after a complete value")]
    TrailingBytes {
        /// Number of unread bytes.
        count: usize,
    },
    /// A length prefix exceeded the bound the decoder allows.
    #[error("{what}: length {len} exceeds the maximum {max}")]
    TooLong {
        /// What was being decoded.
        what: &'static str,
        /// The declared length.
        len: u64,
        /// The maximum allowed.
        max: u64,
    },
    /// An enum tag was not one of the known variants.
    #[error("{what}: unknown tag {tag}")]
    UnknownTag {
        /// What was being decoded.
        what: &'static str,
        /// The tag read.
        tag: u8,
    },
    /// The bytes were well-formed but the value they describe is not valid.
    #[error("{what}: invalid value")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
    },
}

/// A type with a canonical encoding.
pub trait Encode {
    /// Appends the canonical encoding of `self` to `out`.
    fn encode_to(&self, out: &mut Vec<u8>);

    /// Returns the canonical encoding of `self`.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_to(&mut out);
        out
    }
}

/// A type that can be read back from its canonical encoding.
pub trait Decode: Sized {
    /// Reads one value from the reader, leaving the reader after it.
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// Decodes exactly one `T` from `bytes`: truncated input and trailing bytes are both errors.
pub fn decode_exact<T: Decode>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut reader = Reader::new(bytes);
    let value = T::decode_from(&mut reader)?;
    reader.finish()?;
    Ok(value)
}

/// A cursor over a byte slice with length-checked reads.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }

    /// Reads exactly `len` bytes.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::Truncated {
                needed: len - self.remaining(),
                offset: self.offset,
            });
        }
        let slice = &self.bytes[self.offset..self.offset + len];
        self.offset += len;
        Ok(slice)
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u128`.
    pub fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    /// Reads a `u32` length prefix and checks it against `max`.
    pub fn len_prefix(&mut self, what: &'static str, max: u32) -> Result<usize, DecodeError> {
        let len = self.u32()?;
        if len > max {
            return Err(DecodeError::TooLong {
                what,
                len: len.into(),
                max: max.into(),
            });
        }
        Ok(len as usize)
    }

    /// Reads a length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, what: &'static str, max: u32) -> Result<Vec<u8>, DecodeError> {
        let len = self.len_prefix(what, max)?;
        Ok(self.take(len)?.to_vec())
    }

    /// Reads a length-prefixed list of at most `max` items.
    pub fn list<T: Decode>(&mut self, what: &'static str, max: u32) -> Result<Vec<T>, DecodeError> {
        let len = self.len_prefix(what, max)?;
        // The capacity is bounded by the bytes actually present, so a lying prefix cannot
        // make us allocate more than the input's size.
        let mut items = Vec::with_capacity(len.min(self.remaining()));
        for _ in 0..len {
            items.push(T::decode_from(self)?);
        }
        Ok(items)
    }
}

/// Appends a `u32` length prefix. Callers bound their lengths far below `u32::MAX`.
pub fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("encoded lengths are bounded far below u32::MAX");
    out.extend_from_slice(&len.to_le_bytes());
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends a length-prefixed list.
pub fn put_list<T: Encode>(out: &mut Vec<u8>, items: &[T]) {
    put_len(out, items.len());
    for item in items {
        item.encode_to(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_trailing_are_errors() {
        let mut reader = Reader::new(&[1, 2, 3]);
        assert!(matches!(
            reader.u64(),
            Err(DecodeError::Truncated {
                needed: 5,
                offset: 0
            })
        ));
        let reader = Reader::new(&[1]);
        assert_eq!(
            reader.finish(),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn lying_length_prefix_is_bounded() {
        let mut bytes = Vec::new();
        put_len(&mut bytes, 1_000_000);
        let mut reader = Reader::new(&bytes);
        assert!(matches!(
            reader.bytes("payload", 1024),
            Err(DecodeError::TooLong {
                len: 1_000_000,
                max: 1024,
                ..
            })
        ));
        let mut reader = Reader::new(&bytes);
        assert!(matches!(
            reader.bytes("payload", 2_000_000),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn integers_are_little_endian() {
        let mut out = Vec::new();
        out.extend_from_slice(&0x0102_0304u32.to_le_bytes());
        assert_eq!(out, [4, 3, 2, 1]);
        assert_eq!(Reader::new(&out).u32(), Ok(0x0102_0304));
    }
}

//! Arguments and return values: the canonical little-endian encoding, for contracts and clients.
//!
//! Fixed-size integers are little-endian; addresses are 20 raw bytes; byte strings carry a `u32`
//! little-endian length prefix. [`Args`] reads, [`ArgsBuilder`] writes. A reader never panics: a
//! short or malformed input is an [`ArgsError`], which a contract turns into an abort.

use crate::{Address, ADDRESS_LEN};
use alloc::vec::Vec;

/// Why arguments could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgsError {
    /// The input ended early.
    Short,
    /// Bytes were left after the last argument.
    Trailing,
}

/// Reads arguments in order.
#[derive(Debug, Clone)]
pub struct Args<'a> {
    bytes: &'a [u8],
}

impl<'a> Args<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ArgsError> {
        if self.bytes.len() < n {
            return Err(ArgsError::Short);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ArgsError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, ArgsError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `u128`.
    pub fn u128(&mut self) -> Result<u128, ArgsError> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    /// An address.
    pub fn address(&mut self) -> Result<Address, ArgsError> {
        self.array::<ADDRESS_LEN>()
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], ArgsError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        self.take(len)
    }

    /// Succeeds only if every byte was read.
    pub fn finish(self) -> Result<(), ArgsError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(ArgsError::Trailing)
        }
    }
}

/// Writes arguments in order.
#[derive(Debug, Clone, Default)]
pub struct ArgsBuilder {
    bytes: Vec<u8>,
}

impl ArgsBuilder {
    /// An empty argument list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a `u64`.
    pub fn u64(mut self, value: u64) -> Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends a `u128`.
    pub fn u128(mut self, value: u128) -> Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends an address.
    pub fn address(mut self, address: &Address) -> Self {
        self.bytes.extend_from_slice(address);
        self
    }

    /// Appends a length-prefixed byte string. Panics only past 4 GiB, which no call can carry.
    pub fn bytes(mut self, value: &[u8]) -> Self {
        let len = u32::try_from(value.len()).expect("arguments are far below 4 GiB");
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(value);
        self
    }

    /// The encoded arguments.
    pub fn build(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_and_refuse_bad_input() {
        let to = [7u8; 20];
        let encoded = ArgsBuilder::new()
            .address(&to)
            .u128(5)
            .u64(9)
            .bytes(b"memo")
            .build();
        assert_eq!(encoded.len(), 20 + 16 + 8 + 4 + 4);
        let mut args = Args::new(&encoded);
        assert_eq!(args.address(), Ok(to));
        assert_eq!(args.u128(), Ok(5));
        assert_eq!(args.u64(), Ok(9));
        assert_eq!(args.bytes(), Ok(&b"memo"[..]));
        assert_eq!(args.finish(), Ok(()));

        let mut short = Args::new(&encoded[..30]);
        assert_eq!(short.address(), Ok(to));
        assert_eq!(short.u128(), Err(ArgsError::Short));
        assert_eq!(Args::new(&[1]).finish(), Err(ArgsError::Trailing));
        let huge_len = [0xff, 0xff, 0xff, 0xff, 1];
        assert_eq!(Args::new(&huge_len).bytes(), Err(ArgsError::Short));
    }
}

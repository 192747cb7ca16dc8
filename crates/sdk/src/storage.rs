//! Contract storage: byte keys to byte values, with typed helpers.
#![allow(unsafe_code)]

use crate::env::{len, ptr, storage_read, storage_remove, storage_write};
use alloc::vec;
use alloc::vec::Vec;

/// The value under `key`, if any.
pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; 64];
    // SAFETY: `key` and `out` live across the call; the host copies at most `out.len()` bytes.
    let found = unsafe { storage_read(ptr(key), len(key), out.as_mut_ptr() as i32, len(&out)) };
    if found < 0 {
        return None;
    }
    let found = found as usize;
    if found > out.len() {
        out = vec![0u8; found];
        // SAFETY: as above, with a buffer as long as the value.
        unsafe { storage_read(ptr(key), len(key), out.as_mut_ptr() as i32, len(&out)) };
    }
    out.truncate(found);
    Some(out)
}

/// Stores `value` under `key`.
pub fn set(key: &[u8], value: &[u8]) {
    // SAFETY: both slices live across the call; the host copies them.
    unsafe { storage_write(ptr(key), len(key), ptr(value), len(value)) }
}

/// Removes `key`.
pub fn remove(key: &[u8]) {
    // SAFETY: `key` lives across the call.
    unsafe { storage_remove(ptr(key), len(key)) }
}

/// A `u128` stored little-endian under `key`; `None` if absent or not 16 bytes.
pub fn get_u128(key: &[u8]) -> Option<u128> {
    let bytes: [u8; 16] = get(key)?.try_into().ok()?;
    Some(u128::from_le_bytes(bytes))
}

/// Stores a `u128` little-endian under `key`.
pub fn set_u128(key: &[u8], value: u128) {
    set(key, &value.to_le_bytes());
}

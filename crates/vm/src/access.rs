//! Declared access: what a transaction promised to touch, enforced at every host call.
//!
//! A transaction's access list names contracts and storage key prefixes, each for reading or
//! for reading and writing (`docs/ACCESS.md`). The parallel executor schedules by that promise,
//! so the VM keeps it: reading a key needs an entry for its contract whose prefix starts the key;
//! writing or removing needs such an entry in write mode; calling a contract needs an entry for
//! it. Anything else fails the whole transaction at that host call ([`CallFailure::Undeclared`]),
//! nested callers included: no caller can catch it, so no outcome can depend on an undeclared
//! access.
//!
//! [`CallFailure::Undeclared`]: crate::CallFailure::Undeclared

/// The declared entries of one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    contract: [u8; 20],
    prefix: Vec<u8>,
    write: bool,
}

impl Access {
    /// No entries: nothing may be touched.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry: `contract`'s keys starting with `prefix`, readable, and writable if `write`.
    pub fn allow(mut self, contract: [u8; 20], prefix: Vec<u8>, write: bool) -> Self {
        self.entries.push(Entry {
            contract,
            prefix,
            write,
        });
        self
    }

    /// Whether `contract` may be called.
    pub fn may_call(&self, contract: &[u8; 20]) -> bool {
        self.entries.iter().any(|e| e.contract == *contract)
    }

    /// Whether `key` of `contract` may be read.
    pub fn may_read(&self, contract: &[u8; 20], key: &[u8]) -> bool {
        self.entries
            .iter()
            .any(|e| e.contract == *contract && key.starts_with(&e.prefix))
    }

    /// Whether `key` of `contract` may be written or removed.
    pub fn may_write(&self, contract: &[u8; 20], key: &[u8]) -> bool {
        self.entries
            .iter()
            .any(|e| e.write && e.contract == *contract && key.starts_with(&e.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_modes_decide() {
        let access = Access::new()
            .allow([1; 20], b"b".to_vec(), true)
            .allow([1; 20], vec![], false)
            .allow([2; 20], b"x".to_vec(), false);
        assert!(access.may_call(&[1; 20]) && access.may_call(&[2; 20]));
        assert!(!access.may_call(&[3; 20]));
        assert!(access.may_read(&[1; 20], b"anything"));
        assert!(access.may_write(&[1; 20], b"balance"));
        assert!(!access.may_write(&[1; 20], b"supply"));
        assert!(access.may_read(&[2; 20], b"xy") && !access.may_read(&[2; 20], b"y"));
        assert!(!access.may_write(&[2; 20], b"xy"));
    }
}

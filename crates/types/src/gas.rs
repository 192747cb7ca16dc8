//! Gas: what a transaction may use, and what a block may hold.
//!
//! A transaction's fee is both its price and its budget. A contract transaction (deploy or call)
//! may use up to [`GAS_PER_FEE_UNIT`] gas per unit of fee, capped at [`MAX_TX_GAS`]; it is charged
//! the fee its gas actually used, rounded up, and keeps the rest. A native transfer has a fixed
//! cost and pays its whole fee. A block's transactions may together declare at most
//! [`BLOCK_GAS_LIMIT`], which bounds both its execution time and the size of its receipts (every
//! byte a contract puts into a receipt costs at least [`RECEIPT_BYTE_GAS`]).

/// Gas charged for one native transfer: a fixed price, independent of any engine, so receipts are
/// identical on every node and every version.
pub const NATIVE_TRANSFER_GAS: u64 = 1_000;
/// Gas one unit of fee buys for a contract transaction.
pub const GAS_PER_FEE_UNIT: u64 = 1_000;
/// The most gas one transaction may use.
pub const MAX_TX_GAS: u64 = 50_000_000;
/// The most gas the transactions of one block may declare together.
pub const BLOCK_GAS_LIMIT: u64 = 500_000_000;
/// Gas per byte a contract puts into its receipt (return data, events, abort message). With
/// [`BLOCK_GAS_LIMIT`] it bounds a block's receipts to 50 MB of contract data.
pub const RECEIPT_BYTE_GAS: u64 = 10;

/// The gas a transaction with this payload kind and fee may use.
pub fn tx_gas_limit(is_contract: bool, fee: u64) -> u64 {
    if is_contract {
        fee.saturating_mul(GAS_PER_FEE_UNIT).min(MAX_TX_GAS)
    } else {
        NATIVE_TRANSFER_GAS
    }
}

/// The fee a contract transaction pays for `gas_used`: rounded up, and never more than `fee`.
pub fn fee_for_gas(gas_used: u64, fee: u64) -> u64 {
    gas_used.div_ceil(GAS_PER_FEE_UNIT).min(fee)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_charges() {
        assert_eq!(tx_gas_limit(false, 1_000_000), NATIVE_TRANSFER_GAS);
        assert_eq!(tx_gas_limit(true, 7), 7_000);
        assert_eq!(tx_gas_limit(true, u64::MAX), MAX_TX_GAS);
        assert_eq!(fee_for_gas(0, 5), 0);
        assert_eq!(fee_for_gas(1, 5), 1);
        assert_eq!(fee_for_gas(1_001, 5), 2);
        assert_eq!(fee_for_gas(9_000, 5), 5);
    }
}

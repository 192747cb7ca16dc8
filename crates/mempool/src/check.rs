//! The checks of admission, cheapest first, as functions both the pipeline and the direct path
//! use, so the two cannot disagree.

use crate::filter::Summary;
use crate::pool::{account_of, check_nonce, cost};
use crate::{MempoolConfig, Rejection};
use peregrine_state::{RevisionId, Snapshot};
use peregrine_types::{Account, SignedTransaction};

/// A transaction that passed every check a worker makes, with the state it was checked against.
pub(crate) struct Checked {
    pub tx: SignedTransaction,
    pub account: Account,
    pub state: RevisionId,
}

/// Size and decoding (the decoder refuses anything over `MAX_TX_BYTES` before reading it).
pub(crate) fn decode(bytes: &[u8]) -> Result<SignedTransaction, Rejection> {
    SignedTransaction::from_bytes(bytes).map_err(Rejection::Malformed)
}

/// Chain id and fee floor: no state, no signature.
pub(crate) fn stateless(tx: &SignedTransaction, config: &MempoolConfig) -> Result<(), Rejection> {
    let body = tx.tx();
    if body.chain_id != config.chain_id {
        return Err(Rejection::WrongChain {
            expected: config.chain_id,
            got: body.chain_id,
        });
    }
    if body.fee < config.min_fee {
        return Err(Rejection::FeeTooLow {
            min: config.min_fee,
            got: body.fee,
        });
    }
    Ok(())
}

/// Nonce and balance against a read-only `state` and the sender's `pending` totals in the pool.
///
/// A transaction whose nonce is above every pending one must be covered together with all of
/// them. One that may replace a pending transaction need only be covered alone here; the
/// committer, which sees the transaction it would replace, checks the exact sum.
pub(crate) fn against_state(
    tx: SignedTransaction,
    state: &Snapshot,
    pending: Summary,
    config: &MempoolConfig,
) -> Result<Checked, Rejection> {
    let account = account_of(state, &tx.sender())?;
    let nonce = tx.tx().nonce;
    check_nonce(nonce, account.nonce, config)?;
    let may_replace = pending.len > 0 && nonce <= pending.highest;
    let needed = if may_replace {
        cost(&tx)
    } else {
        pending.cost.saturating_add(cost(&tx))
    };
    if needed > account.balance {
        return Err(Rejection::InsufficientBalance {
            needed,
            available: account.balance,
        });
    }
    Ok(Checked {
        tx,
        account,
        state: state.id(),
    })
}

/// Adds an accepted transaction to a sender's totals, for the next check in the same unit.
pub(crate) fn add_pending(summary: &mut Summary, tx: &SignedTransaction) {
    summary.cost = summary.cost.saturating_add(cost(tx));
    summary.highest = if summary.len == 0 {
        tx.tx().nonce
    } else {
        summary.highest.max(tx.tx().nonce)
    };
    summary.len += 1;
}

//! Receipts: the outcome of one transaction in one block, and the account record.

use crate::codec::{put_bytes, put_list, Decode, DecodeError, Encode, Reader};
use crate::crypto::{Address, Hash};

/// Largest receipt output (return data, a deployed address, or a failure message), in bytes.
pub const MAX_OUTPUT_BYTES: u32 = 64 * 1024;
/// Most events one receipt may carry.
pub const MAX_RECEIPT_EVENTS: u32 = 1_024;
/// Largest topic or data of one event, in bytes.
pub const MAX_EVENT_FIELD_BYTES: u32 = 4 * 1024;

/// Why a contract transaction failed. Its writes and events are discarded; its gas is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The gas limit ran out.
    OutOfGas,
    /// Calls nested deeper than the limit.
    StackOverflow,
    /// The contract aborted; the receipt's output holds its message.
    Aborted,
    /// The contract trapped (unreachable, bad memory access, division by zero, ...).
    Trap,
    /// A host function refused its input, or a size limit was exceeded.
    Limit,
    /// The called method does not exist.
    NoMethod,
    /// No contract is deployed at the called address.
    NoContract,
    /// The deployed code is not an acceptable module.
    InvalidCode,
    /// A storage access or call outside the transaction's declared access list.
    Undeclared,
}

impl Failure {
    const ALL: [Failure; 9] = [
        Failure::OutOfGas,
        Failure::StackOverflow,
        Failure::Aborted,
        Failure::Trap,
        Failure::Limit,
        Failure::NoMethod,
        Failure::NoContract,
        Failure::InvalidCode,
        Failure::Undeclared,
    ];

    fn tag(self) -> u8 {
        Self::ALL.iter().position(|f| *f == self).unwrap_or(0) as u8
    }

    /// A stable lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Failure::OutOfGas => "out_of_gas",
            Failure::StackOverflow => "stack_overflow",
            Failure::Aborted => "aborted",
            Failure::Trap => "trap",
            Failure::Limit => "limit",
            Failure::NoMethod => "no_method",
            Failure::NoContract => "no_contract",
            Failure::InvalidCode => "invalid_code",
            Failure::Undeclared => "undeclared_access",
        }
    }
}

/// An event a contract emitted, with the contract that emitted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// The emitting contract.
    pub contract: Address,
    /// The topic.
    pub topic: Vec<u8>,
    /// The data.
    pub data: Vec<u8>,
}

impl Encode for LogEvent {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.contract.encode_to(out);
        put_bytes(out, &self.topic);
        put_bytes(out, &self.data);
    }
}

impl Decode for LogEvent {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            contract: Address::decode_from(reader)?,
            topic: reader.bytes("event topic", MAX_EVENT_FIELD_BYTES)?,
            data: reader.bytes("event data", MAX_EVENT_FIELD_BYTES)?,
        })
    }
}

/// What happened to an included transaction.
///
/// `Success` and `Failed*` outcomes charge the fee and advance the sender's nonce; `Skipped*`
/// outcomes change nothing at all (the transaction was ordered, but could not be applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Applied in full.
    Success,
    /// The sender could pay the fee but not the amount: fee charged, nothing moved.
    FailedInsufficientBalance,
    /// A deploy or call failed: the fee for its gas is charged, nothing else changes.
    FailedContract(Failure),
    /// The nonce was not the sender's next nonce: nothing changed.
    SkippedBadNonce {
        /// The nonce the sender's account expected.
        expected: u64,
    },
    /// The sender could not pay the fee: nothing changed.
    SkippedFeeUnpayable,
}

impl TxStatus {
    /// Whether the transaction was applied in full.
    pub fn is_success(&self) -> bool {
        matches!(self, TxStatus::Success)
    }

    /// A stable lowercase name, used by the RPC and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            TxStatus::Success => "success",
            TxStatus::FailedInsufficientBalance => "failed_insufficient_balance",
            TxStatus::FailedContract(_) => "failed_contract",
            TxStatus::SkippedBadNonce { .. } => "skipped_bad_nonce",
            TxStatus::SkippedFeeUnpayable => "skipped_fee_unpayable",
        }
    }
}

/// The outcome of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The transaction.
    pub tx_hash: Hash,
    /// The height of the block that included it.
    pub height: u64,
    /// Its position in the block.
    pub index: u32,
    /// What happened.
    pub status: TxStatus,
    /// The fee actually charged.
    pub fee_paid: u64,
    /// Gas consumed (native transfers use a fixed amount; see the VM's schedule).
    pub gas_used: u64,
    /// A call's return data, a deployment's contract address, or a failed contract
    /// transaction's message (the abort message, or what was refused); empty otherwise.
    pub output: Vec<u8>,
    /// The events of a successful contract transaction, in emission order.
    pub events: Vec<LogEvent>,
}

impl Encode for Receipt {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.tx_hash.encode_to(out);
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        match self.status {
            TxStatus::Success => out.push(0),
            TxStatus::FailedInsufficientBalance => out.push(1),
            TxStatus::FailedContract(failure) => {
                out.push(2);
                out.push(failure.tag());
            }
            TxStatus::SkippedBadNonce { expected } => {
                out.push(3);
                out.extend_from_slice(&expected.to_le_bytes());
            }
            TxStatus::SkippedFeeUnpayable => out.push(4),
        }
        out.extend_from_slice(&self.fee_paid.to_le_bytes());
        out.extend_from_slice(&self.gas_used.to_le_bytes());
        put_bytes(out, &self.output);
        put_list(out, &self.events);
    }
}

impl Decode for Receipt {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tx_hash = Hash::decode_from(reader)?;
        let height = reader.u64()?;
        let index = reader.u32()?;
        let status = match reader.u8()? {
            0 => TxStatus::Success,
            1 => TxStatus::FailedInsufficientBalance,
            2 => {
                let tag = reader.u8()?;
                let failure = Failure::ALL.get(usize::from(tag)).copied();
                TxStatus::FailedContract(failure.ok_or(DecodeError::UnknownTag {
                    what: "contract failure",
                    tag,
                })?)
            }
            3 => TxStatus::SkippedBadNonce {
                expected: reader.u64()?,
            },
            4 => TxStatus::SkippedFeeUnpayable,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "receipt status",
                    tag,
                })
            }
        };
        Ok(Self {
            tx_hash,
            height,
            index,
            status,
            fee_paid: reader.u64()?,
            gas_used: reader.u64()?,
            output: reader.bytes("receipt output", MAX_OUTPUT_BYTES)?,
            events: reader.list("receipt events", MAX_RECEIPT_EVENTS)?,
        })
    }
}

/// The state of one account: its balance and its next nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Account {
    /// Spendable balance.
    pub balance: u128,
    /// The nonce the account's next transaction must carry.
    pub nonce: u64,
}

impl Account {
    /// The fixed size of an encoded account.
    pub const ENCODED_LEN: usize = 24;

    /// Decodes a stored account record; a missing record is the empty account.
    pub fn from_record(record: Option<&[u8]>) -> Result<Self, DecodeError> {
        match record {
            None => Ok(Self::default()),
            Some(bytes) => crate::codec::decode_exact(bytes),
        }
    }

    /// The encoded record as an array, for callers that must not allocate.
    pub fn to_record(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..16].copy_from_slice(&self.balance.to_le_bytes());
        out[16..].copy_from_slice(&self.nonce.to_le_bytes());
        out
    }
}

impl Encode for Account {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_record());
    }
}

impl Decode for Account {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            balance: reader.u128()?,
            nonce: reader.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_exact;

    #[test]
    fn receipt_round_trips_every_status() {
        for status in [
            TxStatus::Success,
            TxStatus::FailedInsufficientBalance,
            TxStatus::FailedContract(Failure::OutOfGas),
            TxStatus::FailedContract(Failure::InvalidCode),
            TxStatus::SkippedBadNonce { expected: 9 },
            TxStatus::SkippedFeeUnpayable,
        ] {
            let receipt = Receipt {
                tx_hash: Hash([1; 32]),
                height: 2,
                index: 3,
                status,
                fee_paid: 4,
                gas_used: 5,
                output: vec![6],
                events: vec![LogEvent {
                    contract: Address([7; 20]),
                    topic: b"t".to_vec(),
                    data: vec![8, 9],
                }],
            };
            assert_eq!(decode_exact::<Receipt>(&receipt.encode()), Ok(receipt));
        }
    }

    #[test]
    fn account_conformance() {
        let account = Account {
            balance: 1,
            nonce: 2,
        };
        let bytes = account.encode();
        assert_eq!(bytes.len(), Account::ENCODED_LEN);
        assert_eq!(
            bytes,
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(decode_exact::<Account>(&bytes), Ok(account));
    }
}

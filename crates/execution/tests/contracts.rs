//! Contracts through block execution: a deploy transaction creates the token, calls move it and
//! emit events into receipts, the fee pays for gas used, and every bad contract ends in its own
//! failure receipt with nothing changed but the sender's fee and nonce.

use peregrine_execution::contracts::snapshot_world;
use peregrine_execution::{apply_genesis, BlockExecutor, GenesisAccount, SerialExecutor};
use peregrine_sdk::codec::ArgsBuilder;
use peregrine_state::{Db, RevisionId};
use peregrine_types::gas::GAS_PER_FEE_UNIT;
use peregrine_types::{
    keys, Account, Address, Block, Failure, Hash, Payload, PublicKey, Receipt, SecretKey,
    Transaction, TxStatus,
};
use peregrine_vm::{CallContext, Vm};

const SINK: Address = Address([0xfe; 20]);
const FEE: u64 = 1_000;

fn code(path: &str) -> Vec<u8> {
    let path = format!("{}/../../contracts/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Chain {
    _dir: tempfile::TempDir,
    db: Db,
    head: RevisionId,
    height: u64,
    executor: SerialExecutor,
    vm: Vm,
    key: SecretKey,
    nonce: u64,
}

impl Chain {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        let key = SecretKey::from_seed([1; 32]);
        let genesis = [GenesisAccount {
            address: key.public_key().address(),
            balance: 1_000_000_000,
        }];
        let head = apply_genesis(&db, &genesis).expect("genesis");
        let vm = Vm::new().expect("vm");
        Self {
            _dir: dir,
            db,
            head,
            height: 0,
            executor: SerialExecutor::new(SINK, vm.clone()),
            vm,
            key,
            nonce: 0,
        }
    }

    fn me(&self) -> Address {
        self.key.public_key().address()
    }

    fn account(&self, address: &Address) -> Account {
        let snapshot = self.db.snapshot(self.head).expect("snapshot");
        Account::from_record(snapshot.get(&keys::account(address)).as_deref()).expect("account")
    }

    /// Executes one block of `payloads` from the funded account; returns the receipts.
    fn block(&mut self, payloads: Vec<Payload>) -> Vec<Receipt> {
        let txs = payloads
            .into_iter()
            .map(|payload| {
                let tx = Transaction {
                    chain_id: 1,
                    sender: self.key.public_key(),
                    nonce: self.nonce,
                    fee: FEE,
                    payload,
                    access: vec![],
                };
                self.nonce += 1;
                tx.sign(&self.key)
            })
            .collect();
        self.height += 1;
        let block = Block::new(
            self.height,
            Hash::default(),
            self.height * 1_000,
            PublicKey::default(),
            Hash::default(),
            txs,
        );
        let out = self
            .executor
            .execute(&self.db, self.head, &block)
            .expect("execute");
        self.head = out.revision;
        out.receipts
    }

    fn deploy(&mut self, path: &str) -> Address {
        let receipts = self.block(vec![Payload::Deploy { code: code(path) }]);
        assert_eq!(receipts[0].status, TxStatus::Success, "{receipts:?}");
        Address(receipts[0].output.clone().try_into().expect("an address"))
    }

    fn call(contract: Address, method: &str, args: Vec<u8>) -> Payload {
        Payload::Call {
            contract,
            method: method.as_bytes().to_vec(),
            args,
        }
    }

    /// A read-only call on the head state, as the RPC's `call` runs it.
    fn view(&self, contract: Address, method: &str, args: Vec<u8>) -> Vec<u8> {
        let ctx = CallContext {
            caller: [0; 20],
            contract: contract.0,
            height: self.height,
            time_ms: 0,
            args,
            gas_limit: 1_000_000,
        };
        let snapshot = self.db.snapshot(self.head).expect("snapshot");
        let outcome = self.vm.call(method, ctx, snapshot_world(snapshot));
        outcome.result.expect("view call")
    }
}

fn balance_of(chain: &Chain, token: Address, owner: &Address) -> u128 {
    let args = ArgsBuilder::new().address(&owner.0).build();
    let bytes = chain.view(token, "balance_of", args);
    u128::from_le_bytes(bytes.try_into().expect("16 bytes"))
}

#[test]
fn a_deployed_token_is_called_through_blocks() {
    let mut chain = Chain::new();
    let before = chain.account(&chain.me());
    let token = chain.deploy("token/token.wasm");
    let expected = Transaction {
        chain_id: 1,
        sender: chain.key.public_key(),
        nonce: 0,
        fee: FEE,
        payload: Payload::Deploy { code: vec![] },
        access: vec![],
    }
    .deployed_address();
    assert_eq!(
        token, expected,
        "the address is known before the deploy runs"
    );

    let friend = Address([2; 20]);
    let receipts = chain.block(vec![
        Chain::call(token, "init", ArgsBuilder::new().u128(1_000).build()),
        Chain::call(
            token,
            "transfer",
            ArgsBuilder::new().address(&friend.0).u128(250).build(),
        ),
    ]);
    for receipt in &receipts {
        assert_eq!(receipt.status, TxStatus::Success, "{receipt:?}");
        assert_eq!(receipt.events.len(), 1);
        assert_eq!(receipt.events[0].contract, token);
        assert_eq!(receipt.events[0].topic, b"Transfer");
        // The fee pays for the gas used, rounded up; the rest stays with the sender.
        assert_eq!(
            receipt.fee_paid,
            receipt.gas_used.div_ceil(GAS_PER_FEE_UNIT)
        );
        assert!(receipt.fee_paid < FEE);
    }
    assert_eq!(balance_of(&chain, token, &chain.me()), 750);
    assert_eq!(balance_of(&chain, token, &friend), 250);

    let spent: u64 = chain.account(&SINK).balance as u64;
    let after = chain.account(&chain.me());
    assert_eq!(after.nonce, 3);
    assert_eq!(before.balance - after.balance, u128::from(spent));
}

#[test]
fn every_bad_contract_ends_in_its_own_failure_receipt() {
    let mut chain = Chain::new();
    let bad = chain.deploy("bad/bad.wasm");
    let state_before = chain
        .db
        .snapshot(chain.head)
        .expect("snapshot")
        .commitment();
    let me_before = chain.account(&chain.me());
    let receipts = chain.block(vec![
        Chain::call(bad, "spin", vec![]),
        Chain::call(bad, "memory_bomb", vec![]),
        Chain::call(bad, "recurse", vec![]),
        Chain::call(bad, "trap", vec![]),
        Chain::call(bad, "big_return", vec![]),
        Chain::call(bad, "give_up", vec![]),
        Chain::call(bad, "no_such_method", vec![]),
        Chain::call(Address([0xee; 20]), "anything", vec![]),
        Payload::Deploy {
            code: code("bad_import/bad_import.wasm"),
        },
        Payload::Deploy {
            code: b"\0asm not a module".to_vec(),
        },
        Payload::Call {
            contract: bad,
            method: vec![0xff, 0xfe],
            args: vec![],
        },
    ]);
    let failures: Vec<(TxStatus, String)> = receipts
        .iter()
        .map(|r| (r.status, String::from_utf8_lossy(&r.output).into_owned()))
        .collect();
    let failed = |f| TxStatus::FailedContract(f);
    assert_eq!(
        failures[0],
        (failed(Failure::OutOfGas), "out of gas".into())
    );
    // Memory cannot grow past the limit, so the SDK's allocator gives up and aborts.
    assert_eq!(failures[1].0, failed(Failure::Aborted), "{:?}", failures[1]);
    assert!(
        failures[1].1.contains("memory allocation"),
        "{:?}",
        failures[1]
    );
    assert_eq!(failures[2].0, failed(Failure::StackOverflow));
    assert_eq!(
        failures[3],
        (failed(Failure::Trap), "trap: unreachable executed".into())
    );
    assert_eq!(failures[4].0, failed(Failure::Limit));
    assert_eq!(
        failures[5],
        (failed(Failure::Aborted), "gave up on purpose".into())
    );
    assert_eq!(failures[6].0, failed(Failure::NoMethod));
    assert_eq!(failures[7].0, failed(Failure::NoContract));
    assert_eq!(failures[8].0, failed(Failure::InvalidCode));
    assert!(
        failures[8].1.contains("wasi_snapshot_preview1"),
        "{:?}",
        failures[8]
    );
    assert_eq!(
        failures[9],
        (failed(Failure::InvalidCode), "invalid module".into())
    );
    assert!(receipts.iter().all(|r| r.events.is_empty()));
    assert_eq!(
        receipts[0].gas_used,
        FEE * GAS_PER_FEE_UNIT,
        "out of gas uses it all"
    );
    assert_eq!(receipts[0].fee_paid, FEE);

    // Only the sender's account and the fee sink changed: no contract state, no contracts.
    let me_after = chain.account(&chain.me());
    assert_eq!(me_after.nonce, me_before.nonce + 11);
    let fees: u64 = receipts.iter().map(|r| r.fee_paid).sum();
    assert_eq!(me_before.balance - me_after.balance, u128::from(fees));
    let snapshot = chain.db.snapshot(chain.head).expect("snapshot");
    let contract_keys = snapshot
        .range::<std::ops::RangeFull>(..)
        .filter(|(k, _)| [keys::CONTRACT_PREFIX, keys::STORAGE_PREFIX].contains(&k[0]))
        .count();
    assert_eq!(contract_keys, 1, "only the bad contract's own record");
    assert_ne!(snapshot.commitment(), state_before);
}

//! The committed example contracts on the VM: the token's behaviour and events, and every bad
//! contract ending in the right failure with its writes reverted and its gas charged.

use peregrine_sdk::codec::ArgsBuilder;
use peregrine_vm::wasm::{
    CallContext, CallFailure, Contract, DeployError, Outcome, StorageView, Vm, MAX_CODE_BYTES,
};
use std::collections::BTreeMap;

const GAS: u64 = 10_000_000;

fn code(path: &str) -> Vec<u8> {
    let path = format!("{}/../../contracts/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[derive(Clone, Default)]
struct State(BTreeMap<Vec<u8>, Vec<u8>>);

impl StorageView for State {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }
}

struct Chain {
    vm: Vm,
    contract: Contract,
    state: State,
}

impl Chain {
    fn new(path: &str) -> Self {
        let vm = Vm::new().expect("engine");
        let contract = vm.deploy(&code(path)).expect("deploys");
        Self {
            vm,
            contract,
            state: State::default(),
        }
    }

    /// Calls and, on success, applies the writes, as a block would.
    fn call(&mut self, caller: u8, method: &str, args: Vec<u8>) -> Outcome {
        let ctx = CallContext {
            caller: [caller; 20],
            contract: [0xcc; 20],
            height: 7,
            time_ms: 1_000,
            args,
            gas_limit: GAS,
        };
        let outcome = self
            .vm
            .call(&self.contract, method, ctx, Box::new(self.state.clone()));
        if outcome.result.is_ok() {
            for (key, value) in &outcome.writes {
                match value {
                    Some(v) => self.state.0.insert(key.clone(), v.clone()),
                    None => self.state.0.remove(key),
                };
            }
        }
        assert!(
            outcome.gas_used > 0 && outcome.gas_used <= GAS,
            "{outcome:?}"
        );
        outcome
    }

    fn balance(&mut self, who: u8) -> u128 {
        let out = self.call(
            9,
            "balance_of",
            ArgsBuilder::new().address(&[who; 20]).build(),
        );
        let bytes: [u8; 16] = out
            .result
            .expect("balance_of")
            .try_into()
            .expect("16 bytes");
        u128::from_le_bytes(bytes)
    }
}

fn transfer_args(to: u8, amount: u128) -> Vec<u8> {
    ArgsBuilder::new().address(&[to; 20]).u128(amount).build()
}

fn aborted(outcome: &Outcome) -> String {
    match &outcome.result {
        Err(CallFailure::Aborted(message)) => message.clone(),
        other => panic!("expected an abort, got {other:?}"),
    }
}

#[test]
fn the_token_mints_transfers_approves_and_emits_events() {
    let mut chain = Chain::new("token/token.wasm");
    let init = chain.call(1, "init", ArgsBuilder::new().u128(1_000).build());
    assert_eq!(init.result, Ok(vec![]));
    assert_eq!(init.events.len(), 1);
    assert_eq!(init.events[0].topic, b"Transfer");
    assert_eq!(&init.events[0].data[20..40], &[1; 20]);
    assert_eq!(chain.balance(1), 1_000);

    let sent = chain.call(1, "transfer", transfer_args(2, 300));
    assert!(sent.result.is_ok(), "{sent:?}");
    assert_eq!((chain.balance(1), chain.balance(2)), (700, 300));

    let before = chain.state.0.clone();
    let overdraft = chain.call(2, "transfer", transfer_args(3, 301));
    assert_eq!(aborted(&overdraft), "insufficient balance");
    assert!(overdraft.writes.is_empty() && overdraft.events.is_empty());
    assert_eq!(chain.state.0, before, "a failed call changes nothing");
    assert_eq!(
        aborted(&chain.call(1, "init", ArgsBuilder::new().u128(5).build())),
        "already initialised"
    );
    assert_eq!(
        aborted(&chain.call(1, "transfer", vec![1, 2, 3])),
        "bad arguments"
    );

    let to_self = chain.call(2, "transfer", transfer_args(2, 300));
    assert!(to_self.result.is_ok());
    assert_eq!(chain.balance(2), 300, "a self-transfer keeps the balance");

    let approve = ArgsBuilder::new().address(&[4; 20]).u128(100).build();
    assert!(chain.call(1, "approve", approve).result.is_ok());
    let spend = |amount| {
        ArgsBuilder::new()
            .address(&[1; 20])
            .address(&[5; 20])
            .u128(amount)
            .build()
    };
    assert!(chain.call(4, "transfer_from", spend(60)).result.is_ok());
    assert_eq!(
        aborted(&chain.call(4, "transfer_from", spend(41))),
        "insufficient allowance"
    );
    assert_eq!((chain.balance(1), chain.balance(5)), (640, 60));

    let missing = chain.call(1, "mint", vec![]);
    assert_eq!(missing.result, Err(CallFailure::NoMethod("mint".into())));
}

#[test]
fn the_same_call_costs_the_same_gas() {
    let mut a = Chain::new("token/token.wasm");
    let mut b = Chain::new("token/token.wasm");
    for chain in [&mut a, &mut b] {
        chain.call(1, "init", ArgsBuilder::new().u128(10).build());
    }
    let first = a.call(1, "transfer", transfer_args(2, 3));
    let second = b.call(1, "transfer", transfer_args(2, 3));
    assert_eq!(first, second);
}

#[test]
fn every_bad_contract_fails_its_call_and_nothing_else() {
    let mut chain = Chain::new("bad/bad.wasm");
    let spin = chain.call(1, "spin", vec![]);
    assert_eq!(spin.result, Err(CallFailure::OutOfGas));
    assert_eq!(spin.gas_used, GAS, "running out charges the whole limit");
    let recurse = chain.call(1, "recurse", vec![]);
    assert_eq!(recurse.result, Err(CallFailure::StackOverflow));
    assert!(matches!(
        chain.call(1, "trap", vec![]).result,
        Err(CallFailure::Trap(_))
    ));
    assert!(matches!(
        chain.call(1, "big_return", vec![]).result,
        Err(CallFailure::Limit(_))
    ));
    assert_eq!(
        aborted(&chain.call(1, "give_up", vec![])),
        "gave up on purpose"
    );
    let bomb = chain.call(1, "memory_bomb", vec![]);
    assert!(bomb.result.is_err(), "{:?}", bomb.result);
    for method in [
        "spin",
        "recurse",
        "trap",
        "big_return",
        "give_up",
        "memory_bomb",
    ] {
        let outcome = chain.call(1, method, vec![]);
        assert!(outcome.writes.is_empty(), "{method} kept its writes");
    }
    assert!(chain.state.0.is_empty(), "no failed call wrote anything");
}

#[test]
fn deploy_refuses_bad_code_with_a_typed_error() {
    let vm = Vm::new().expect("engine");
    let refused = vm.deploy(&code("bad_import/bad_import.wasm"));
    assert!(
        matches!(refused, Err(DeployError::Import { .. })),
        "{:?}",
        refused.err()
    );
    assert!(matches!(
        vm.deploy(b"\0asm garbage"),
        Err(DeployError::Invalid(_))
    ));
    let huge = vec![0u8; MAX_CODE_BYTES + 1];
    assert_eq!(
        vm.deploy(&huge).err(),
        Some(DeployError::TooLarge(MAX_CODE_BYTES + 1))
    );
}

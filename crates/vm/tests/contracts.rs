//! The committed example contracts on the VM: the token's behaviour and events, and every bad
//! contract ending in the right failure with its writes reverted and its gas charged.

use peregrine_sdk::codec::ArgsBuilder;
use peregrine_vm::wasm::{
    CallContext, CallFailure, DeployError, Outcome, Vm, CALL_BASE_GAS, MAX_CALL_STACK,
    MAX_CODE_BYTES,
};
use peregrine_vm::{MemoryWorld, VmConfig};
use std::sync::Arc;

const GAS: u64 = 10_000_000;
const CONTRACT: [u8; 20] = [0xcc; 20];

fn code(path: &str) -> Vec<u8> {
    let path = format!("{}/../../contracts/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Chain {
    vm: Vm,
    state: MemoryWorld,
}

impl Chain {
    /// A chain with the contract at `path` deployed at [`CONTRACT`].
    fn new(path: &str) -> Self {
        let mut chain = Self {
            vm: Vm::new().expect("engine"),
            state: MemoryWorld::new(),
        };
        chain.deploy(CONTRACT, path);
        chain
    }

    fn deploy(&mut self, address: [u8; 20], path: &str) {
        let code = code(path);
        let hash = self.vm.install(&code).expect("deploys");
        assert_eq!(self.state.deploy(address, &code), hash);
    }

    fn call(&mut self, caller: u8, method: &str, args: Vec<u8>) -> Outcome {
        self.call_at(CONTRACT, [caller; 20], method, args)
    }

    /// Calls and, on success, applies the writes, as a block would.
    fn call_at(
        &mut self,
        contract: [u8; 20],
        caller: [u8; 20],
        method: &str,
        args: Vec<u8>,
    ) -> Outcome {
        let ctx = CallContext {
            caller,
            contract,
            height: 7,
            time_ms: 1_000,
            args,
            gas_limit: GAS,
        };
        let outcome = self.vm.call(method, ctx, Arc::new(self.state.clone()));
        if outcome.result.is_ok() {
            self.state.apply(&outcome.writes);
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

    let before = chain.state.storage_len();
    let overdraft = chain.call(2, "transfer", transfer_args(3, 301));
    assert_eq!(aborted(&overdraft), "insufficient balance");
    assert!(overdraft.writes.is_empty() && overdraft.events.is_empty());
    assert_eq!(chain.state.storage_len(), before);
    assert_eq!(chain.balance(3), 0, "a failed call changes nothing");
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
    assert_eq!(
        chain.call(1, "trap", vec![]).result,
        Err(CallFailure::Trap("unreachable executed".into()))
    );
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
    assert_eq!(
        chain.state.storage_len(),
        0,
        "no failed call wrote anything"
    );
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

const TOKEN: [u8; 20] = [0x70; 20];
const RELAY: [u8; 20] = [0x71; 20];

/// A token and a relay holding 100 of it.
fn token_and_relay() -> Chain {
    let mut chain = Chain::new("token/token.wasm");
    chain.deploy(TOKEN, "token/token.wasm");
    chain.deploy(RELAY, "relay/relay.wasm");
    let init = ArgsBuilder::new().u128(1_000).build();
    assert!(chain.call_at(TOKEN, [1; 20], "init", init).result.is_ok());
    let fund = ArgsBuilder::new().address(&RELAY).u128(100).build();
    assert!(chain
        .call_at(TOKEN, [1; 20], "transfer", fund)
        .result
        .is_ok());
    chain
}

fn token_balance(chain: &mut Chain, owner: &[u8; 20]) -> u128 {
    let query = ArgsBuilder::new().address(owner).build();
    let out = chain.call_at(TOKEN, [9; 20], "balance_of", query);
    u128::from_le_bytes(out.result.expect("balance").try_into().expect("16 bytes"))
}

fn relay_args(to: u8, amount: u128) -> Vec<u8> {
    ArgsBuilder::new()
        .address(&TOKEN)
        .address(&[to; 20])
        .u128(amount)
        .build()
}

#[test]
fn a_contract_calls_another_as_itself() {
    let mut chain = token_and_relay();
    let sent = chain.call_at(RELAY, [5; 20], "forward", relay_args(3, 40));
    assert!(sent.result.is_ok(), "{sent:?}");
    assert_eq!(token_balance(&mut chain, &RELAY), 60);
    assert_eq!(token_balance(&mut chain, &[3; 20]), 40);
    assert_eq!(
        sent.events.len(),
        1,
        "the token's event reaches the receipt"
    );
    assert_eq!(sent.events[0].contract, TOKEN);
    assert_eq!(
        &sent.events[0].data[..20],
        &RELAY,
        "the relay is the caller"
    );
    assert!(sent.writes.contains_key(&TOKEN) && sent.writes.contains_key(&RELAY));

    let refused = chain.call_at(RELAY, [5; 20], "forward", relay_args(3, 61));
    assert_eq!(aborted(&refused), "insufficient balance");
    assert!(
        refused.gas_used > CALL_BASE_GAS * 2,
        "the callee's gas is charged"
    );
}

#[test]
fn a_failed_callee_reverts_only_its_own_writes() {
    let mut chain = token_and_relay();
    let tried = chain.call_at(RELAY, [5; 20], "try_forward", relay_args(3, 500));
    assert_eq!(tried.result, Ok(b"insufficient balance".to_vec()));
    assert!(
        tried.events.is_empty(),
        "the failed callee's events are gone"
    );
    assert!(!tried.writes.contains_key(&TOKEN), "{:?}", tried.writes);
    assert_eq!(
        tried.writes[&RELAY].get(&b"e"[..]),
        Some(&Some(b"insufficient balance".to_vec()))
    );

    let undone = chain.call_at(RELAY, [5; 20], "forward_then_abort", relay_args(3, 10));
    assert_eq!(aborted(&undone), "changed my mind");
    assert_eq!(
        token_balance(&mut chain, &RELAY),
        100,
        "the callee's transfer is undone"
    );
}

#[test]
fn reentrancy_is_refused_and_the_stack_is_bounded() {
    let mut chain = token_and_relay();
    let reenter = chain.call_at(RELAY, [5; 20], "reenter", vec![]);
    let message = String::from_utf8(reenter.result.expect("the caller handles it")).expect("utf8");
    assert!(message.starts_with("reentrant call refused"), "{message}");

    // Relays at eight more addresses: a chain through n of them nests n + 1 calls.
    let hops: Vec<[u8; 20]> = (0..8u8).map(|i| [0x80 + i; 20]).collect();
    for hop in &hops {
        chain.deploy(*hop, "relay/relay.wasm");
    }
    let through = |n: usize| {
        hops[..n]
            .iter()
            .flat_map(|h| h.to_vec())
            .collect::<Vec<u8>>()
    };
    let deepest = chain.call_at(RELAY, [5; 20], "chain", through(MAX_CALL_STACK - 1));
    assert_eq!(deepest.result, Ok(b"bottom".to_vec()));
    let too_deep = chain.call_at(RELAY, [5; 20], "chain", through(MAX_CALL_STACK));
    assert_eq!(aborted(&too_deep), "call stack limit exceeded");

    let nobody = ArgsBuilder::new().address(&[0xee; 20]).build();
    let missing = chain.call_at(RELAY, [5; 20], "chain", nobody);
    assert_eq!(aborted(&missing), "no contract at the called address");
}

#[test]
fn the_module_cache_is_bounded_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |bytes| VmConfig {
        cache_bytes: bytes,
        cache_dir: Some(dir.path().to_path_buf()),
    };
    let token = code("token/token.wasm");
    let relay = code("relay/relay.wasm");
    let vm = Vm::with_config(config(1)).expect("engine");
    vm.install(&token).expect("token");
    vm.install(&relay).expect("relay");
    let stats = vm.cache_stats();
    assert_eq!((stats.compiled, stats.entries, stats.evicted), (2, 1, 1));

    // A new engine on the same directory loads both from disk, compiling nothing.
    let vm = Vm::with_config(config(1 << 30)).expect("engine");
    let mut world = MemoryWorld::new();
    world.deploy(TOKEN, &token);
    let hash = *blake3::hash(&relay).as_bytes();
    vm.load(&hash, || None).expect("relay from disk");
    let ctx = CallContext {
        caller: [1; 20],
        contract: TOKEN,
        height: 1,
        time_ms: 0,
        args: ArgsBuilder::new().u128(5).build(),
        gas_limit: GAS,
    };
    assert!(vm.call("init", ctx, Arc::new(world)).result.is_ok());
    let stats = vm.cache_stats();
    assert_eq!((stats.compiled, stats.disk_hits), (0, 2), "{stats:?}");

    // A corrupted file is detected and recompiled, never loaded.
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).expect("write");
    }
    let vm = Vm::with_config(config(1 << 30)).expect("engine");
    vm.install(&token).expect("recompiles");
    assert_eq!(vm.cache_stats().compiled, 1);
}

#[test]
fn a_callee_with_a_native_path_gives_the_same_outcome() {
    let mut wasm = token_and_relay();
    let mut native = token_and_relay();
    let token_code = code("token/token.wasm");
    let compiled = native.vm.deploy(&token_code).expect("token");
    let fast =
        peregrine_vm::native::NativeToken::calibrate(&native.vm, &compiled).expect("calibrates");
    native
        .vm
        .register_native(*blake3::hash(&token_code).as_bytes(), Box::new(fast));
    for (method, amount) in [("forward", 40), ("try_forward", 500), ("forward", 61)] {
        let a = wasm.call_at(RELAY, [5; 20], method, relay_args(3, amount));
        let b = native.call_at(RELAY, [5; 20], method, relay_args(3, amount));
        assert_eq!(a, b, "{method} {amount}");
    }
}

/// Calls `method` of `contract` as `caller` limited to `access`, applying a success.
fn call_declared(
    chain: &mut Chain,
    contract: [u8; 20],
    method: &str,
    args: Vec<u8>,
    access: peregrine_vm::Access,
) -> Outcome {
    let ctx = CallContext {
        caller: [1; 20],
        contract,
        height: 7,
        time_ms: 0,
        args,
        gas_limit: GAS,
    };
    let world = Arc::new(chain.state.clone());
    let outcome = chain.vm.call_declared(method, ctx, world, Arc::new(access));
    if outcome.result.is_ok() {
        chain.state.apply(&outcome.writes);
    }
    outcome
}

fn balance_prefix(owner: [u8; 20]) -> Vec<u8> {
    [&b"b"[..], &owner].concat()
}

fn undeclared(outcome: &Outcome) -> bool {
    matches!(outcome.result, Err(CallFailure::Undeclared(_)))
}

#[test]
fn accesses_outside_the_declared_list_fail_the_whole_call() {
    for native in [false, true] {
        let mut chain = token_and_relay();
        if native {
            let token = code("token/token.wasm");
            let compiled = chain.vm.deploy(&token).expect("token");
            let fast = peregrine_vm::native::NativeToken::calibrate(&chain.vm, &compiled)
                .expect("calibrates");
            let hash = *blake3::hash(&token).as_bytes();
            chain.vm.register_native(hash, Box::new(fast));
        }
        let send = ArgsBuilder::new().address(&[2; 20]).u128(10).build();
        let both = peregrine_vm::Access::new()
            .allow(TOKEN, balance_prefix([1; 20]), true)
            .allow(TOKEN, balance_prefix([2; 20]), true);
        let ok = call_declared(&mut chain, TOKEN, "transfer", send.clone(), both);
        assert!(ok.result.is_ok(), "native {native}: {ok:?}");

        let read_only_recipient = peregrine_vm::Access::new()
            .allow(TOKEN, balance_prefix([1; 20]), true)
            .allow(TOKEN, balance_prefix([2; 20]), false);
        let refused = call_declared(
            &mut chain,
            TOKEN,
            "transfer",
            send.clone(),
            read_only_recipient,
        );
        assert!(undeclared(&refused), "native {native}: {refused:?}");
        assert!(refused.writes.is_empty() && refused.gas_used > 0);

        let other_contract = peregrine_vm::Access::new().allow(RELAY, vec![], true);
        let not_called = call_declared(&mut chain, TOKEN, "transfer", send, other_contract);
        assert!(undeclared(&not_called));

        // The relay may not call the token, and cannot catch the refusal: the whole call fails.
        let relay_only = peregrine_vm::Access::new().allow(RELAY, vec![], true);
        let nested = call_declared(
            &mut chain,
            RELAY,
            "try_forward",
            relay_args(3, 1),
            relay_only,
        );
        assert!(undeclared(&nested), "native {native}: {nested:?}");
        assert_eq!(token_balance(&mut chain, &[2; 20]), 10, "native {native}");
    }
}

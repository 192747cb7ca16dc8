//! The differential test of the native token: random calls, valid and invalid, through the WASM
//! path and the native path, must give byte-identical outcomes (return data, events, writes,
//! gas). `PEREGRINE_NATIVE_CASES` sets how many calls (default 2,000).

use peregrine_sdk::codec::ArgsBuilder;
use peregrine_vm::native::{NativeContract, NativeToken};
use peregrine_vm::wasm::{CallContext, Vm};
use peregrine_vm::MemoryWorld;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const TOKEN: [u8; 20] = [0xcc; 20];

fn random_args(rng: &mut impl Rng, method: &str) -> Vec<u8> {
    let account = |rng: &mut dyn rand::RngCore| [rng.gen_range(1..6u8); 20];
    let amount = |rng: &mut dyn rand::RngCore| match rng.gen_range(0..5) {
        0 => 0,
        1 => u128::MAX - rng.gen_range(0..3u128),
        2 => rng.gen_range(0..1_000_000u128),
        _ => rng.gen_range(0..200u128),
    };
    match (method, rng.gen_range(0..12)) {
        (_, 0) => vec![1, 2, 3],
        ("transfer", 1) => ArgsBuilder::new().address(&account(rng)).build(),
        ("transfer", _) => ArgsBuilder::new()
            .address(&account(rng))
            .u128(amount(rng))
            .build(),
        ("balance_of", 1) => ArgsBuilder::new().address(&account(rng)).u64(1).build(),
        ("balance_of", _) => ArgsBuilder::new().address(&account(rng)).build(),
        _ => ArgsBuilder::new().u128(amount(rng)).build(),
    }
}

#[test]
fn native_and_wasm_paths_agree_byte_for_byte() {
    let cases: usize = std::env::var("PEREGRINE_NATIVE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let code = std::fs::read(format!(
        "{}/../../contracts/token/token.wasm",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("committed token");
    let vm = Vm::new().expect("engine");
    let token = vm.deploy(&code).expect("deploys");
    let native = NativeToken::calibrate(&vm, &token).expect("calibrates");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut state = MemoryWorld::new();
    state.deploy(TOKEN, &code);
    let mut handled = 0;
    for i in 0..cases {
        let caller = [rng.gen_range(1..6u8); 20];
        let method = ["transfer", "transfer", "balance_of", "init", "approve"][rng.gen_range(0..5)];
        let ctx = CallContext {
            caller,
            contract: TOKEN,
            height: i as u64,
            time_ms: 0,
            args: random_args(&mut rng, method),
            gas_limit: if rng.gen_range(0..20) == 0 {
                rng.gen_range(1..60_000)
            } else {
                5_000_000
            },
        };
        let wasm = vm.call_compiled(&token, method, ctx.clone(), Arc::new(state.clone()));
        if let Some(fast) = native.call(method, &ctx, &state.view(TOKEN)) {
            assert_eq!(
                fast, wasm,
                "call {i}: {method} by {:?} with {:?}",
                caller[0], ctx.args
            );
            handled += 1;
        }
        if wasm.result.is_ok() {
            state.apply(&wasm.writes);
        }
    }
    assert!(
        handled > cases / 3,
        "the native path handled only {handled} of {cases} calls"
    );
}

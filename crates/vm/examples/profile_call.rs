//! Runs the token's `transfer` on the cached WASM path in a loop, for profilers:
//! `cargo build --release --example profile_call -p peregrine-vm` then
//! `perf record -g target/release/examples/profile_call 200000`. Prints calls per second.

use peregrine_sdk::codec::ArgsBuilder;
use peregrine_vm::{CallContext, MemoryWorld, Vm};
use std::sync::Arc;

const TOKEN: [u8; 20] = [0xcc; 20];

fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let code = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contracts/token/token.wasm"
    ))
    .expect("the committed token");
    let vm = Vm::new().expect("engine");
    let contract = vm.deploy(&code).expect("deploys");
    let mut world = MemoryWorld::new();
    world.deploy(TOKEN, &code);
    for i in 0..64u8 {
        world.set(
            TOKEN,
            [&b"b"[..], &[i; 20]].concat(),
            (1u128 << 100).to_le_bytes().to_vec(),
        );
    }
    let world = Arc::new(world);
    let started = std::time::Instant::now();
    for i in 0..calls {
        let ctx = CallContext {
            caller: [(i % 64) as u8; 20],
            contract: TOKEN,
            height: 1,
            time_ms: 0,
            args: ArgsBuilder::new()
                .address(&[((i + 1) % 64) as u8; 20])
                .u128(1)
                .build(),
            gas_limit: 1_000_000,
        };
        let outcome = vm.call_compiled(&contract, "transfer", ctx, world.clone());
        assert!(outcome.result.is_ok(), "{outcome:?}");
    }
    let rate = f64::from(calls) / started.elapsed().as_secs_f64();
    println!("{rate:.0} calls/s");
}

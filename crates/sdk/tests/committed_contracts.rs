//! The committed example contracts against the ABI: imports only the listed host functions with
//! their exact signatures, exports memory and the documented methods as `() -> ()`. Tests across
//! the project use these committed files, so they must be what `contracts/build.sh` produces
//! from today's sources and SDK (rebuild and commit them together).

use peregrine_sdk::abi::{host_function, ValType, HOST_MODULE};
use std::collections::BTreeSet;
use wasmparser::{Parser, Payload, TypeRef};

struct Module {
    imports: Vec<(String, String, Vec<ValType>, Vec<ValType>)>,
    exported_functions: BTreeSet<String>,
    exports_memory: bool,
    void_exports: bool,
}

fn val(t: wasmparser::ValType) -> ValType {
    match t {
        wasmparser::ValType::I32 => ValType::I32,
        wasmparser::ValType::I64 => ValType::I64,
        other => panic!("unexpected value type {other:?}"),
    }
}

fn read(path: &str) -> Module {
    let bytes = std::fs::read(format!(
        "{}/../../contracts/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut types = Vec::new();
    let mut functions = Vec::new();
    let mut imported = 0u32;
    let mut module = Module {
        imports: Vec::new(),
        exported_functions: BTreeSet::new(),
        exports_memory: false,
        void_exports: true,
    };
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload.expect("valid wasm") {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    let f = ty.expect("function type");
                    let params = f.params().iter().copied().map(val).collect::<Vec<_>>();
                    let results = f.results().iter().copied().map(val).collect::<Vec<_>>();
                    types.push((params, results));
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.expect("import");
                    if let TypeRef::Func(index) = import.ty {
                        let (p, r) = types[index as usize].clone();
                        module
                            .imports
                            .push((import.module.into(), import.name.into(), p, r));
                        imported += 1;
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                functions = reader.into_iter().map(|f| f.expect("function")).collect();
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.expect("export");
                    exports.push((export.name.to_string(), export.kind, export.index));
                }
            }
            _ => {}
        }
    }
    for (name, kind, index) in exports {
        match kind {
            wasmparser::ExternalKind::Func => {
                let ty = functions[(index - imported) as usize];
                let (p, r) = &types[ty as usize];
                module.void_exports &= p.is_empty() && r.is_empty();
                module.exported_functions.insert(name);
            }
            wasmparser::ExternalKind::Memory => module.exports_memory |= name == "memory",
            _ => {}
        }
    }
    module
}

fn assert_abi(module: &Module) {
    assert!(module.exports_memory, "exports its memory");
    assert!(module.void_exports, "every method is () -> ()");
    for (from, name, params, results) in &module.imports {
        assert_eq!(from, HOST_MODULE, "{name} comes from the host module");
        let f = host_function(name).unwrap_or_else(|| panic!("{name} is not a host function"));
        assert_eq!((f.params, f.results), (&params[..], &results[..]), "{name}");
    }
}

#[test]
fn the_token_follows_the_abi_and_exports_its_methods() {
    let token = read("token/token.wasm");
    assert_abi(&token);
    let methods = [
        "init",
        "transfer",
        "balance_of",
        "total_supply",
        "approve",
        "allowance",
        "transfer_from",
    ];
    let expected: BTreeSet<String> = methods.iter().map(|m| m.to_string()).collect();
    assert_eq!(token.exported_functions, expected);
}

#[test]
fn the_other_contracts_are_what_the_vm_tests_and_benchmarks_expect() {
    let bad = read("bad/bad.wasm");
    assert_abi(&bad);
    for method in [
        "spin",
        "memory_bomb",
        "recurse",
        "trap",
        "big_return",
        "give_up",
    ] {
        assert!(bad.exported_functions.contains(method), "{method}");
    }
    let compute = read("compute/compute.wasm");
    assert_abi(&compute);
    assert!(compute.exported_functions.contains("mix"));
    let relay = read("relay/relay.wasm");
    assert_abi(&relay);
    for method in [
        "forward",
        "try_forward",
        "forward_then_abort",
        "reenter",
        "chain",
    ] {
        assert!(relay.exported_functions.contains(method), "{method}");
    }
    let bad_import = read("bad_import/bad_import.wasm");
    let modules: Vec<&str> = bad_import.imports.iter().map(|i| i.0.as_str()).collect();
    assert_eq!(
        modules,
        ["wasi_snapshot_preview1"],
        "imports what the host lacks"
    );
}

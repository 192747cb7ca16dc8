//! Gas and stack depth, metered in the contract's own bytecode, so they cannot depend on the
//! engine, its optimizer or its version.
//!
//! [`instrument`] rewrites a validated module:
//! - two mutable globals are appended and exported: [`GAS_GLOBAL`] (i64, gas left, set by the
//!   host before a call and read after it) and [`DEPTH_GLOBAL`] (i32, current call depth);
//! - every function body is cut into straight-line segments at control instructions (`block`,
//!   `loop`, `if`, `else`, `end`, `br`, `br_if`, `br_table`, `return`, `unreachable`); the start
//!   of each segment charges the segment's whole cost from [`op_cost`] in advance, so a loop pays on
//!   every iteration and the charge never depends on how the engine compiles the code. When the gas
//!   left does not cover a segment, the gas global is set to [`OUT_OF_GAS`] and the code traps;
//! - every function entry increments the depth and traps past [`MAX_CALL_DEPTH`] (setting the
//!   depth global to [`STACK_OVERFLOW`]); every exit decrements it. The original body is wrapped in
//!   a block so that a branch to the function's outermost label also passes the decrement, and a
//!   decrement is placed before each `return`.
//!
//! Charging a segment in advance can charge for the tail of a segment that trapped midway; that is
//! deterministic, which is what matters. Host calls are charged by the host, on top.

use thiserror::Error;
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{BlockType, ConstExpr, Function, GlobalType, Instruction, ValType};
use wasmparser::{FuncType, Operator, Parser, Payload};

/// Export name of the gas-left global.
pub const GAS_GLOBAL: &str = "__peregrine_gas";
/// Export name of the call-depth global.
pub const DEPTH_GLOBAL: &str = "__peregrine_depth";
/// The gas global's value after a call ran out of gas.
pub const OUT_OF_GAS: i64 = -1;
/// The depth global's value after a call exceeded [`MAX_CALL_DEPTH`].
pub const STACK_OVERFLOW: i32 = i32::MIN;
/// Deepest nesting of function calls within one contract call: far below what any engine's
/// native stack allows, so the limit, not the machine, decides.
pub const MAX_CALL_DEPTH: i32 = 1_024;

/// Why a module could not be instrumented.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MeterError {
    /// The bytes are not a module the parser accepts.
    #[error("invalid module: {0}")]
    Invalid(String),
    /// A function returns more than one value (multi-value results are not supported).
    #[error("function {0} returns more than one value")]
    MultiValue(u32),
    /// The module defines no export section, so it has no methods.
    #[error("the module exports nothing")]
    NoExports,
}

impl From<wasmparser::BinaryReaderError> for MeterError {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        MeterError::Invalid(e.to_string())
    }
}

impl<E: std::fmt::Display> From<wasm_encoder::reencode::Error<E>> for MeterError {
    fn from(e: wasm_encoder::reencode::Error<E>) -> Self {
        MeterError::Invalid(e.to_string())
    }
}

/// Gas charged for executing one instruction. Most cost 1; those that touch memory in bulk or
/// call cost more. The table is part of consensus: changing it changes receipts.
pub fn op_cost(op: &Operator<'_>) -> u64 {
    match op {
        Operator::Call { .. } | Operator::CallIndirect { .. } => 10,
        Operator::MemoryGrow { .. } => 1_000,
        Operator::MemoryCopy { .. } | Operator::MemoryFill { .. } => 20,
        Operator::I64DivS | Operator::I64DivU | Operator::I64RemS | Operator::I64RemU => 4,
        Operator::I32DivS | Operator::I32DivU | Operator::I32RemS | Operator::I32RemU => 3,
        _ => 1,
    }
}

/// Whether `op` ends a straight-line segment: the next instruction may be reached another way.
fn ends_segment(op: &Operator<'_>) -> bool {
    matches!(
        op,
        Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::Else
            | Operator::End
            | Operator::Br { .. }
            | Operator::BrIf { .. }
            | Operator::BrTable { .. }
            | Operator::Return
            | Operator::Unreachable
    )
}

/// What the rewrite needs to know about the module before it rewrites the code.
struct Layout {
    types: Vec<FuncType>,
    /// Type index of every function, imported ones first.
    function_types: Vec<u32>,
    imported_functions: u32,
    globals: u32,
}

fn layout(wasm: &[u8]) -> Result<Layout, MeterError> {
    let mut layout = Layout {
        types: Vec::new(),
        function_types: Vec::new(),
        imported_functions: 0,
        globals: 0,
    };
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    layout.types.push(ty?);
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    match import?.ty {
                        wasmparser::TypeRef::Func(t) => {
                            layout.function_types.push(t);
                            layout.imported_functions += 1;
                        }
                        wasmparser::TypeRef::Global(_) => layout.globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for t in reader {
                    layout.function_types.push(t?);
                }
            }
            Payload::GlobalSection(reader) => layout.globals += reader.count(),
            _ => {}
        }
    }
    Ok(layout)
}

/// The metering globals' indices.
#[derive(Clone, Copy)]
struct Globals {
    gas: u32,
    depth: u32,
}

fn charge(f: &mut Function, g: Globals, cost: u64) {
    let cost = cost as i64;
    f.instruction(&Instruction::GlobalGet(g.gas));
    f.instruction(&Instruction::I64Const(cost));
    f.instruction(&Instruction::I64LtU);
    f.instruction(&Instruction::If(BlockType::Empty));
    f.instruction(&Instruction::I64Const(OUT_OF_GAS));
    f.instruction(&Instruction::GlobalSet(g.gas));
    f.instruction(&Instruction::Unreachable);
    f.instruction(&Instruction::End);
    f.instruction(&Instruction::GlobalGet(g.gas));
    f.instruction(&Instruction::I64Const(cost));
    f.instruction(&Instruction::I64Sub);
    f.instruction(&Instruction::GlobalSet(g.gas));
}

fn enter(f: &mut Function, g: Globals) {
    f.instruction(&Instruction::GlobalGet(g.depth));
    f.instruction(&Instruction::I32Const(1));
    f.instruction(&Instruction::I32Add);
    f.instruction(&Instruction::GlobalSet(g.depth));
    f.instruction(&Instruction::GlobalGet(g.depth));
    f.instruction(&Instruction::I32Const(MAX_CALL_DEPTH));
    f.instruction(&Instruction::I32GtS);
    f.instruction(&Instruction::If(BlockType::Empty));
    f.instruction(&Instruction::I32Const(STACK_OVERFLOW));
    f.instruction(&Instruction::GlobalSet(g.depth));
    f.instruction(&Instruction::Unreachable);
    f.instruction(&Instruction::End);
}

fn leave(f: &mut Function, g: Globals) {
    f.instruction(&Instruction::GlobalGet(g.depth));
    f.instruction(&Instruction::I32Const(1));
    f.instruction(&Instruction::I32Sub);
    f.instruction(&Instruction::GlobalSet(g.depth));
}

fn result_block(ty: &FuncType, index: u32) -> Result<BlockType, MeterError> {
    let mut reencoder = RoundtripReencoder;
    match ty.results() {
        [] => Ok(BlockType::Empty),
        [one] => Ok(BlockType::Result(reencoder.val_type(*one)?)),
        _ => Err(MeterError::MultiValue(index)),
    }
}

/// Rewrites one function body: depth accounting, a wrapper block, and a charge per segment.
fn meter_body(
    body: wasmparser::FunctionBody<'_>,
    block: BlockType,
    g: Globals,
) -> Result<Function, MeterError> {
    let mut reencoder = RoundtripReencoder;
    let mut f = reencoder.new_function_with_parsed_locals(&body)?;
    let ops: Vec<Operator<'_>> = body
        .get_operators_reader()?
        .into_iter()
        .collect::<Result<_, _>>()?;
    enter(&mut f, g);
    f.instruction(&Instruction::Block(block));
    let mut start = 0;
    while start < ops.len() {
        let end = ops[start..]
            .iter()
            .position(ends_segment)
            .map_or(ops.len(), |i| start + i + 1);
        charge(&mut f, g, ops[start..end].iter().map(op_cost).sum());
        for op in &ops[start..end] {
            if matches!(op, Operator::Return) {
                leave(&mut f, g);
            }
            f.instruction(&reencoder.instruction(op.clone())?);
        }
        start = end;
    }
    // The original final `end` closed the wrapper block; the function's own end follows.
    leave(&mut f, g);
    f.instruction(&Instruction::End);
    Ok(f)
}

fn metering_globals(section: &mut wasm_encoder::GlobalSection) {
    let i64_global = GlobalType {
        val_type: ValType::I64,
        mutable: true,
        shared: false,
    };
    let i32_global = GlobalType {
        val_type: ValType::I32,
        mutable: true,
        shared: false,
    };
    section.global(i64_global, &ConstExpr::i64_const(0));
    section.global(i32_global, &ConstExpr::i32_const(0));
}

/// Rewrites `wasm` with gas and depth metering. The output is a pure function of the input.
pub fn instrument(wasm: &[u8]) -> Result<Vec<u8>, MeterError> {
    let layout = layout(wasm)?;
    let g = Globals {
        gas: layout.globals,
        depth: layout.globals + 1,
    };
    let mut module = wasm_encoder::Module::new();
    let mut globals_added = false;
    let mut exported = false;
    let mut defined = layout.imported_functions;
    let mut re = RoundtripReencoder;
    let mut code = wasm_encoder::CodeSection::new();
    // Sections metering leaves alone are re-encoded as they are.
    macro_rules! copy {
        ($section:ident, $parse:ident, $reader:expr) => {{
            let mut s = wasm_encoder::$section::new();
            re.$parse(&mut s, $reader)?;
            module.section(&s);
        }};
    }
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::TypeSection(r) => copy!(TypeSection, parse_type_section, r),
            Payload::ImportSection(r) => copy!(ImportSection, parse_import_section, r),
            Payload::FunctionSection(r) => copy!(FunctionSection, parse_function_section, r),
            Payload::TableSection(r) => copy!(TableSection, parse_table_section, r),
            Payload::MemorySection(r) => copy!(MemorySection, parse_memory_section, r),
            Payload::GlobalSection(r) => {
                let mut s = wasm_encoder::GlobalSection::new();
                re.parse_global_section(&mut s, r)?;
                metering_globals(&mut s);
                globals_added = true;
                module.section(&s);
            }
            Payload::ExportSection(r) => {
                if !globals_added {
                    let mut s = wasm_encoder::GlobalSection::new();
                    metering_globals(&mut s);
                    module.section(&s);
                    globals_added = true;
                }
                let mut s = wasm_encoder::ExportSection::new();
                re.parse_export_section(&mut s, r)?;
                s.export(GAS_GLOBAL, wasm_encoder::ExportKind::Global, g.gas);
                s.export(DEPTH_GLOBAL, wasm_encoder::ExportKind::Global, g.depth);
                module.section(&s);
                exported = true;
            }
            Payload::StartSection { func, .. } => {
                module.section(&wasm_encoder::StartSection {
                    function_index: func,
                });
            }
            Payload::ElementSection(r) => copy!(ElementSection, parse_element_section, r),
            Payload::DataCountSection { count, .. } => {
                module.section(&wasm_encoder::DataCountSection { count });
            }
            Payload::CodeSectionStart { .. } => {}
            Payload::CodeSectionEntry(body) => {
                let ty = &layout.types[layout.function_types[defined as usize] as usize];
                let block = result_block(ty, defined)?;
                code.function(&meter_body(body, block, g)?);
                defined += 1;
                // The code section is emitted once its last body is in.
                if defined as usize == layout.function_types.len() {
                    module.section(&code);
                }
            }
            Payload::DataSection(r) => copy!(DataSection, parse_data_section, r),
            // Names and other custom sections are dropped: they do not affect execution.
            _ => {}
        }
    }
    if !exported {
        return Err(MeterError::NoExports);
    }
    Ok(module.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(path: &str) -> Vec<u8> {
        let path = format!("{}/../../contracts/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn exports(wasm: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        for payload in Parser::new(0).parse_all(wasm) {
            if let Payload::ExportSection(r) = payload.expect("parses") {
                names.extend(r.into_iter().map(|e| e.expect("export").name.to_string()));
            }
        }
        names
    }

    /// Every operator of every function body, in order.
    fn operators(wasm: &[u8]) -> Vec<Vec<String>> {
        let mut bodies = Vec::new();
        for payload in Parser::new(0).parse_all(wasm) {
            if let Payload::CodeSectionEntry(body) = payload.expect("parses") {
                let ops = body.get_operators_reader().expect("operators");
                bodies.push(
                    ops.into_iter()
                        .map(|o| format!("{:?}", o.expect("op")))
                        .collect(),
                );
            }
        }
        bodies
    }

    #[test]
    fn metered_contracts_validate_keep_their_exports_and_are_deterministic() {
        for path in ["token/token.wasm", "bad/bad.wasm"] {
            let original = contract(path);
            let metered = instrument(&original).expect("instruments");
            wasmparser::Validator::new()
                .validate_all(&metered)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(instrument(&original).expect("again"), metered, "{path}");
            let mut expected = exports(&original);
            expected.extend([GAS_GLOBAL.to_string(), DEPTH_GLOBAL.to_string()]);
            assert_eq!(exports(&metered), expected, "{path}");
        }
    }

    #[test]
    fn every_loop_iteration_and_function_entry_is_charged() {
        let metered = instrument(&contract("bad/bad.wasm")).expect("instruments");
        let bodies = operators(&metered);
        let mut loops = 0;
        for ops in &bodies {
            // Entry: the depth check comes first, then the wrapper block and the first charge.
            assert!(ops[0].starts_with("GlobalGet"), "{}", ops[0]);
            assert!(ops.iter().any(|o| o.starts_with("Block")));
            for (i, op) in ops.iter().enumerate() {
                if op.starts_with("Loop") {
                    loops += 1;
                    assert!(
                        ops[i + 1].starts_with("GlobalGet"),
                        "loop not charged: {ops:?}"
                    );
                    assert!(ops[i + 3] == "I64LtU", "loop not charged: {ops:?}");
                }
            }
        }
        assert!(loops > 0, "the spin method has a loop");
    }

    #[test]
    fn bad_input_gets_a_typed_error() {
        assert!(matches!(
            instrument(b"not wasm"),
            Err(MeterError::Invalid(_))
        ));
        let empty = wasm_encoder::Module::new().finish();
        assert_eq!(instrument(&empty), Err(MeterError::NoExports));
    }
}

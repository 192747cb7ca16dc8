//! The host functions of [`peregrine_sdk::abi`], as linked into every contract.
//!
//! Each one charges its gas first, from the bytecode's own gas global, then checks every pointer
//! and length against the instance's memory. Any failure becomes a [`CallFailure`] returned as the
//! call's error, so the call ends and the node carries on.

use crate::meter::OUT_OF_GAS;
use crate::wasm::{
    hex, memory, undeclared_call, CallContext, CallFailure, CallTree, Event, Host, COPY_BYTE_GAS,
    ED25519_VERIFY_GAS, HASH_BYTE_GAS, HOST_CALL_GAS, MAX_CALL_STACK, MAX_EVENTS, MAX_EVENT_BYTES,
    MAX_KEY_BYTES, MAX_RETURN_BYTES, MAX_VALUE_BYTES, STORAGE_READ_BYTE_GAS,
    STORAGE_WRITE_BYTE_GAS,
};
use peregrine_sdk::HOST_MODULE;
use peregrine_types::gas::RECEIPT_BYTE_GAS;
use wasmtime::{Caller, Linker, Val};

/// The host functions this version links: all of the ABI's.
pub const AVAILABLE: [&str; 17] = [
    "call",
    "args_len",
    "args_read",
    "storage_read",
    "storage_write",
    "storage_remove",
    "caller",
    "self_address",
    "block_height",
    "block_time_ms",
    "emit",
    "blake3",
    "ed25519_verify",
    "return_len",
    "return_read",
    "set_return",
    "abort",
];

type Res<T> = Result<T, wasmtime::Error>;

/// Longest abort message kept.
const MAX_ABORT_BYTES: usize = 1_024;

fn charge(caller: &mut Caller<'_, Host>, gas: u64) -> Res<()> {
    if !caller.data().metered {
        return Ok(());
    }
    let Some(global) = caller.data().gas else {
        return Err(CallFailure::Trap("module is not metered".into()).into());
    };
    let left = global.get(&mut *caller).i64().unwrap_or(OUT_OF_GAS);
    if left < 0 || (left as u64) < gas {
        global.set(&mut *caller, Val::I64(OUT_OF_GAS))?;
        return Err(CallFailure::OutOfGas.into());
    }
    global.set(&mut *caller, Val::I64(left - gas as i64))?;
    Ok(())
}

fn bounds(caller: &mut Caller<'_, Host>, ptr: i32, len: usize) -> Res<(wasmtime::Memory, usize)> {
    let memory = memory(caller)?;
    let start = u32::try_from(ptr).map_err(|_| CallFailure::Limit("negative pointer".into()))?;
    let start = start as usize;
    let end = start.checked_add(len);
    match end {
        Some(end) if end <= memory.data_size(&*caller) => Ok((memory, start)),
        _ => Err(CallFailure::Limit(format!("{len} bytes at {start} are outside memory")).into()),
    }
}

fn read(caller: &mut Caller<'_, Host>, ptr: i32, len: i32, max: usize) -> Res<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| CallFailure::Limit("negative length".into()))?;
    if len > max {
        return Err(CallFailure::Limit(format!("{len} bytes exceed {max}")).into());
    }
    let (memory, start) = bounds(caller, ptr, len)?;
    Ok(memory.data(&*caller)[start..start + len].to_vec())
}

fn write(caller: &mut Caller<'_, Host>, ptr: i32, bytes: &[u8]) -> Res<()> {
    let (memory, start) = bounds(caller, ptr, bytes.len())?;
    memory.data_mut(&mut *caller)[start..start + bytes.len()].copy_from_slice(bytes);
    Ok(())
}

fn undeclared(what: &str, contract: &[u8; 20], key: &[u8]) -> wasmtime::Error {
    let message = format!("{what} of key 0x{} in 0x{}", hex(key), hex(contract));
    CallFailure::Undeclared(message).into()
}

fn storage_get(caller: &Caller<'_, Host>, key: &[u8]) -> Res<Option<Vec<u8>>> {
    let host = caller.data();
    let contract = &host.ctx.contract;
    if let Some(access) = &host.access {
        if !access.may_read(contract, key) {
            return Err(undeclared("read", contract, key));
        }
    }
    Ok(match host.writes.get(contract).and_then(|w| w.get(key)) {
        Some(written) => written.clone(),
        None => host.world.storage(contract, key),
    })
}

fn storage_put(caller: &mut Caller<'_, Host>, key: Vec<u8>, value: Option<Vec<u8>>) -> Res<()> {
    let host = caller.data_mut();
    if let Some(access) = &host.access {
        if !access.may_write(&host.ctx.contract, &key) {
            return Err(undeclared("write", &host.ctx.contract, &key));
        }
    }
    host.writes
        .entry(host.ctx.contract)
        .or_default()
        .insert(key, value);
    Ok(())
}

/// The gas left in the calling instance's global.
fn gas_left(caller: &mut Caller<'_, Host>) -> u64 {
    match caller.data().gas {
        Some(global) => global.get(&mut *caller).i64().unwrap_or(0).max(0) as u64,
        None => u64::MAX >> 1,
    }
}

fn link_context(linker: &mut Linker<Host>) -> Res<()> {
    linker.func_wrap(
        HOST_MODULE,
        "args_len",
        |mut c: Caller<'_, Host>| -> Res<i32> {
            charge(&mut c, HOST_CALL_GAS)?;
            Ok(c.data().ctx.args.len() as i32)
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "args_read",
        |mut c: Caller<'_, Host>, out: i32| -> Res<()> {
            let args = c.data().ctx.args.clone();
            charge(&mut c, HOST_CALL_GAS + COPY_BYTE_GAS * args.len() as u64)?;
            write(&mut c, out, &args)
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "caller",
        |mut c: Caller<'_, Host>, out: i32| -> Res<()> {
            charge(&mut c, HOST_CALL_GAS)?;
            let address = c.data().ctx.caller;
            write(&mut c, out, &address)
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "self_address",
        |mut c: Caller<'_, Host>, out: i32| {
            charge(&mut c, HOST_CALL_GAS)?;
            let address = c.data().ctx.contract;
            write(&mut c, out, &address)
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "block_height",
        |mut c: Caller<'_, Host>| -> Res<i64> {
            charge(&mut c, HOST_CALL_GAS)?;
            Ok(c.data().ctx.height as i64)
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "block_time_ms",
        |mut c: Caller<'_, Host>| -> Res<i64> {
            charge(&mut c, HOST_CALL_GAS)?;
            Ok(c.data().ctx.time_ms as i64)
        },
    )?;
    Ok(())
}

fn link_storage(linker: &mut Linker<Host>) -> Res<()> {
    linker.func_wrap(
        HOST_MODULE,
        "storage_read",
        |mut c: Caller<'_, Host>, k: i32, kl: i32, out: i32, cap: i32| -> Res<i32> {
            charge(
                &mut c,
                HOST_CALL_GAS + STORAGE_READ_BYTE_GAS * kl.max(0) as u64,
            )?;
            let key = read(&mut c, k, kl, MAX_KEY_BYTES)?;
            let Some(value) = storage_get(&c, &key)? else {
                return Ok(-1);
            };
            charge(&mut c, STORAGE_READ_BYTE_GAS * value.len() as u64)?;
            let copied = value.len().min(usize::try_from(cap).unwrap_or(0));
            write(&mut c, out, &value[..copied])?;
            Ok(value.len() as i32)
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "storage_write",
        |mut c: Caller<'_, Host>, k: i32, kl: i32, v: i32, vl: i32| -> Res<()> {
            let bytes = kl.max(0) as u64 + vl.max(0) as u64;
            charge(&mut c, HOST_CALL_GAS + STORAGE_WRITE_BYTE_GAS * bytes)?;
            let key = read(&mut c, k, kl, MAX_KEY_BYTES)?;
            let value = read(&mut c, v, vl, MAX_VALUE_BYTES)?;
            storage_put(&mut c, key, Some(value))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "storage_remove",
        |mut c: Caller<'_, Host>, k: i32, kl: i32| -> Res<()> {
            charge(
                &mut c,
                HOST_CALL_GAS + STORAGE_WRITE_BYTE_GAS * kl.max(0) as u64,
            )?;
            let key = read(&mut c, k, kl, MAX_KEY_BYTES)?;
            storage_put(&mut c, key, None)
        },
    )?;
    Ok(())
}

fn link_crypto(linker: &mut Linker<Host>) -> Res<()> {
    linker.func_wrap(
        HOST_MODULE,
        "blake3",
        |mut c: Caller<'_, Host>, p: i32, l: i32, out: i32| -> Res<()> {
            charge(&mut c, HOST_CALL_GAS + HASH_BYTE_GAS * l.max(0) as u64)?;
            let data = read(&mut c, p, l, MAX_VALUE_BYTES)?;
            write(&mut c, out, blake3::hash(&data).as_bytes())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "ed25519_verify",
        |mut c: Caller<'_, Host>, k: i32, s: i32, m: i32, ml: i32| -> Res<i32> {
            charge(
                &mut c,
                ED25519_VERIFY_GAS + HASH_BYTE_GAS * ml.max(0) as u64,
            )?;
            let key: [u8; 32] = read(&mut c, k, 32, 32)?.try_into().unwrap_or([0; 32]);
            let sig: [u8; 64] = read(&mut c, s, 64, 64)?.try_into().unwrap_or([0; 64]);
            let message = read(&mut c, m, ml, MAX_VALUE_BYTES)?;
            let valid = ed25519_consensus::VerificationKey::try_from(key)
                .and_then(|vk| vk.verify(&ed25519_consensus::Signature::from(sig), &message));
            Ok(i32::from(valid.is_ok()))
        },
    )?;
    Ok(())
}

fn link_results(linker: &mut Linker<Host>) -> Res<()> {
    linker.func_wrap(
        HOST_MODULE,
        "emit",
        |mut c: Caller<'_, Host>, t: i32, tl: i32, d: i32, dl: i32| -> Res<()> {
            let bytes = tl.max(0) as u64 + dl.max(0) as u64;
            charge(&mut c, HOST_CALL_GAS + RECEIPT_BYTE_GAS * bytes)?;
            if c.data().events.len() >= MAX_EVENTS || bytes as usize > MAX_EVENT_BYTES {
                return Err(CallFailure::Limit("too many or too large events".into()).into());
            }
            let topic = read(&mut c, t, tl, MAX_EVENT_BYTES)?;
            let data = read(&mut c, d, dl, MAX_EVENT_BYTES)?;
            let contract = c.data().ctx.contract;
            c.data_mut().events.push(Event {
                contract,
                topic,
                data,
            });
            Ok(())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "set_return",
        |mut c: Caller<'_, Host>, p: i32, l: i32| {
            // The size limit first: an oversized return is a limit, whatever gas is left.
            if l.max(0) as usize > MAX_RETURN_BYTES {
                return Err(CallFailure::Limit(format!(
                    "return data over {MAX_RETURN_BYTES} bytes"
                ))
                .into());
            }
            charge(&mut c, HOST_CALL_GAS + RECEIPT_BYTE_GAS * l.max(0) as u64)?;
            let data = read(&mut c, p, l, MAX_RETURN_BYTES)?;
            c.data_mut().return_data = data;
            Ok(())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "return_len",
        |mut c: Caller<'_, Host>| -> Res<i32> {
            charge(&mut c, HOST_CALL_GAS)?;
            Ok(c.data().last_return.len() as i32)
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "return_read",
        |mut c: Caller<'_, Host>, out: i32| -> Res<()> {
            let data = std::mem::take(&mut c.data_mut().last_return);
            let charged = charge(&mut c, HOST_CALL_GAS + COPY_BYTE_GAS * data.len() as u64);
            let written = charged.and_then(|()| write(&mut c, out, &data));
            c.data_mut().last_return = data;
            written
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "abort",
        |mut c: Caller<'_, Host>, p: i32, l: i32| -> Res<()> {
            let len = l.clamp(0, MAX_ABORT_BYTES as i32);
            charge(&mut c, HOST_CALL_GAS + RECEIPT_BYTE_GAS * len as u64)?;
            let message = read(&mut c, p, len, MAX_ABORT_BYTES)?;
            Err(CallFailure::Aborted(String::from_utf8_lossy(&message).into_owned()).into())
        },
    )?;
    Ok(())
}

/// `call(address, method, method_len, args, args_len) -> 0 | 1`.
///
/// The callee gets all the gas the caller has left and the caller is charged what it used. It
/// sees the call tree's writes so far; its own writes and events join the tree only if it
/// succeeds. A failed callee (including one refused for depth or reentrancy) returns 1 with its
/// failure message as return data, and the caller decides what to do.
fn link_call(linker: &mut Linker<Host>) -> Res<()> {
    linker.func_wrap(
        HOST_MODULE,
        "call",
        |mut c: Caller<'_, Host>, a: i32, m: i32, ml: i32, p: i32, pl: i32| -> Res<i32> {
            let copied = ml.max(0) as u64 + pl.max(0) as u64;
            charge(&mut c, HOST_CALL_GAS + COPY_BYTE_GAS * copied)?;
            let address: [u8; 20] = read(&mut c, a, 20, 20)?.try_into().unwrap_or([0; 20]);
            let method = read(
                &mut c,
                m,
                ml,
                peregrine_types::tx::MAX_METHOD_BYTES as usize,
            )?;
            let method = String::from_utf8(method)
                .map_err(|_| CallFailure::Limit("method name is not UTF-8".into()))?;
            let args = read(&mut c, p, pl, MAX_VALUE_BYTES)?;
            nested_call(&mut c, address, &method, args)
        },
    )?;
    Ok(())
}

fn nested_call(
    c: &mut Caller<'_, Host>,
    address: [u8; 20],
    method: &str,
    args: Vec<u8>,
) -> Res<i32> {
    if let Some(access) = &c.data().access {
        if !access.may_call(&address) {
            return Err(undeclared_call(&address).into());
        }
    }
    let refusal = if c.data().stack.contains(&address) {
        Some("reentrant call refused: the callee is already on the call stack")
    } else if c.data().stack.len() >= MAX_CALL_STACK {
        Some("call stack limit exceeded")
    } else {
        None
    };
    if let Some(message) = refusal {
        c.data_mut().last_return = message.as_bytes().to_vec();
        return Ok(1);
    }
    let gas_limit = gas_left(c);
    let host = c.data_mut();
    let ctx = CallContext {
        caller: host.ctx.contract,
        contract: address,
        height: host.ctx.height,
        time_ms: host.ctx.time_ms,
        args,
        gas_limit,
    };
    let mut stack = host.stack.clone();
    stack.push(address);
    // The callee works on a copy of the tree's writes; the caller keeps its own to fall back on.
    let writes = host.writes.clone();
    let outcome = host.vm.clone().call_in(
        method,
        ctx,
        CallTree {
            world: host.world.clone(),
            writes,
            stack,
            access: host.access.clone(),
        },
    );
    let status = match outcome.result {
        Ok(data) => {
            let host = c.data_mut();
            host.writes = outcome.writes;
            if host.events.len() + outcome.events.len() > MAX_EVENTS {
                return Err(CallFailure::Limit("too many events".into()).into());
            }
            host.events.extend(outcome.events);
            host.last_return = data;
            0
        }
        // Nobody may catch a broken promise: it fails the whole transaction.
        Err(failure @ CallFailure::Undeclared(_)) => return Err(failure.into()),
        Err(failure) => {
            c.data_mut().last_return = failure.message().into_bytes();
            1
        }
    };
    charge(c, outcome.gas_used.min(gas_limit))?;
    Ok(status)
}

/// Links every available host function.
pub(crate) fn link(linker: &mut Linker<Host>) -> Res<()> {
    link_call(linker)?;
    link_context(linker)?;
    link_storage(linker)?;
    link_crypto(linker)?;
    link_results(linker)
}

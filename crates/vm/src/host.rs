//! The host functions of [`peregrine_sdk::abi`], as linked into every contract.
//!
//! Each one charges its gas first, from the bytecode's own gas global, then checks every pointer
//! and length against the instance's memory. Any failure becomes a [`CallFailure`] returned as the
//! call's error, so the call ends and the node carries on.

use crate::meter::OUT_OF_GAS;
use crate::wasm::{
    memory, CallFailure, Event, Host, COPY_BYTE_GAS, ED25519_VERIFY_GAS, HASH_BYTE_GAS,
    HOST_CALL_GAS, MAX_EVENTS, MAX_EVENT_BYTES, MAX_KEY_BYTES, MAX_RETURN_BYTES, MAX_VALUE_BYTES,
    STORAGE_READ_BYTE_GAS, STORAGE_WRITE_BYTE_GAS,
};
use peregrine_sdk::HOST_MODULE;
use wasmtime::{Caller, Linker, Val};

/// The host functions this version links. `call` (cross-contract calls) is not among them yet, so
/// deploy refuses a module that imports it instead of failing its calls later.
pub const AVAILABLE: [&str; 16] = [
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

fn storage_get(caller: &Caller<'_, Host>, key: &[u8]) -> Option<Vec<u8>> {
    let host = caller.data();
    match host.writes.get(key) {
        Some(written) => written.clone(),
        None => host.base.get(key),
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
            let Some(value) = storage_get(&c, &key) else {
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
            c.data_mut().writes.insert(key, Some(value));
            Ok(())
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
            c.data_mut().writes.insert(key, None);
            Ok(())
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
            charge(&mut c, HOST_CALL_GAS + 10 * COPY_BYTE_GAS * bytes)?;
            if c.data().events.len() >= MAX_EVENTS || bytes as usize > MAX_EVENT_BYTES {
                return Err(CallFailure::Limit("too many or too large events".into()).into());
            }
            let topic = read(&mut c, t, tl, MAX_EVENT_BYTES)?;
            let data = read(&mut c, d, dl, MAX_EVENT_BYTES)?;
            c.data_mut().events.push(Event { topic, data });
            Ok(())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "set_return",
        |mut c: Caller<'_, Host>, p: i32, l: i32| {
            charge(&mut c, HOST_CALL_GAS + COPY_BYTE_GAS * l.max(0) as u64)?;
            let data = read(&mut c, p, l, MAX_RETURN_BYTES)?;
            c.data_mut().return_data = data;
            Ok(())
        },
    )?;
    // No cross-contract call exists in this version, so there is never a callee's return data.
    linker.func_wrap(
        HOST_MODULE,
        "return_len",
        |mut c: Caller<'_, Host>| -> Res<i32> {
            charge(&mut c, HOST_CALL_GAS)?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "return_read",
        |mut c: Caller<'_, Host>, _out: i32| charge(&mut c, HOST_CALL_GAS),
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "abort",
        |mut c: Caller<'_, Host>, p: i32, l: i32| -> Res<()> {
            charge(&mut c, HOST_CALL_GAS)?;
            let len = l.clamp(0, MAX_ABORT_BYTES as i32);
            let message = read(&mut c, p, len, MAX_ABORT_BYTES)?;
            Err(CallFailure::Aborted(String::from_utf8_lossy(&message).into_owned()).into())
        },
    )?;
    Ok(())
}

/// Links every available host function.
pub(crate) fn link(linker: &mut Linker<Host>) -> Res<()> {
    link_context(linker)?;
    link_storage(linker)?;
    link_crypto(linker)?;
    link_results(linker)
}

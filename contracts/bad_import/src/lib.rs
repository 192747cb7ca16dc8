//! Imports `wasi_snapshot_preview1.fd_write`, which the host does not provide: the VM must refuse
//! this module at deploy, before it is ever run.
#![no_std]
#![allow(unsafe_code)]

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn fd_write(fd: i32, iovs: i32, len: i32, written: i32) -> i32;
}

/// Would write to standard output.
#[no_mangle]
pub extern "C" fn shout() {
    // SAFETY: never runs: the module is refused at deploy.
    unsafe {
        fd_write(1, 0, 0, 0);
    }
}

// The SDK's runtime (allocator, panic handler) comes with this import.
use peregrine_sdk as _;

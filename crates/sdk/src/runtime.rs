//! What every contract needs and no contract should write: an allocator and a panic handler.
//!
//! Memory is fresh for every call, so the allocator only bumps a pointer from the linker's heap
//! base and never frees: the fastest allocator there is, and correct because the instance dies
//! with the call. Memory grows only when an allocation does not fit. A panic
//! aborts the call with its message, so the receipt says what went wrong.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// WASM pages are 64 KiB.
const PAGE: usize = 65_536;

extern "C" {
    /// The first address past the static data and the stack, set by the linker.
    static __heap_base: u8;
}

struct Bump {
    next: UnsafeCell<usize>,
}

// SAFETY: a contract instance runs on one thread (wasm32 without threads).
unsafe impl Sync for Bump {}

// SAFETY: every block returned is fresh, aligned and inside memory grown for it.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let next = self.next.get();
        if *next == 0 {
            // The heap starts where the linker put it, inside the initial memory: most calls
            // never grow memory at all, which is the cost worth avoiding.
            *next = core::ptr::addr_of!(__heap_base) as usize;
        }
        let start = (*next + layout.align() - 1) & !(layout.align() - 1);
        let end = match start.checked_add(layout.size()) {
            Some(end) => end,
            None => return core::ptr::null_mut(),
        };
        let have = core::arch::wasm32::memory_size(0) * PAGE;
        if end > have {
            let pages = (end - have).div_ceil(PAGE);
            if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                return core::ptr::null_mut();
            }
        }
        *next = end;
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: Bump = Bump {
    next: UnsafeCell::new(0),
};

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write as _;
    let mut message = alloc::string::String::new();
    let _ = write!(message, "panic: {}", info.message());
    crate::env::abort(&message)
}

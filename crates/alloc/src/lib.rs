//! The process allocator: mimalloc, called through its plain entry points wherever they already
//! give the alignment a layout asks for.
//!
//! # Why not `mimalloc::MiMalloc`
//! That wrapper sends every request through mimalloc's *aligned* entry points. Those take a fast
//! path only when a small block of the right size is free on the calling thread's page; otherwise
//! (blocks over 1 KiB, or a page whose frees arrive from another thread, as the state trie's do
//! from its background freer) they fall to a generic path that, for sizes that are not a power of
//! two, over-allocates by the alignment and offsets the pointer. Every mimalloc block is at least
//! word-aligned, so for alignments up to a word (almost every Rust type, and every trie node)
//! the plain `mi_malloc` family gives the same guarantee on its fast path.
#![allow(unsafe_code)]
#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use libmimalloc_sys as mi;

/// mimalloc as the global allocator.
pub struct Allocator;

/// The alignment every mimalloc block has: blocks come in multiples of a word.
const WORD: usize = core::mem::size_of::<usize>();

// SAFETY: every pointer comes from mimalloc and goes back to it; plain entry points are used only
// for alignments every mimalloc block has, and the aligned ones otherwise.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for the impl.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for the impl.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`'s alignment.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// Blocks of every size class up to 64 KiB, at every alignment up to a page, are aligned,
    /// writable, and keep their bytes across a reallocation.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes_across_reallocation() {
        let sizes = [1usize, 7, 8, 24, 100, 912, 1025, 1392, 4097, 65536];
        for size in sizes {
            for align in [1usize, 2, 4, 8, 16, 64, 4096] {
                let layout = Layout::from_size_align(size, align).expect("a layout");
                // SAFETY: a non-zero layout; the block is written within its size, then freed
                // once with the layout it has at that point.
                unsafe {
                    let p = Allocator.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{size} at {align}"
                    );
                    for i in 0..size {
                        p.add(i).write(i as u8);
                    }
                    let q = Allocator.realloc(p, layout, 2 * size);
                    assert!(
                        !q.is_null() && (q as usize).is_multiple_of(align),
                        "{size} at {align}"
                    );
                    let kept: Vec<u8> = (0..size).map(|i| q.add(i).read()).collect();
                    assert!(kept.iter().enumerate().all(|(i, b)| *b == i as u8));
                    let grown = Layout::from_size_align(2 * size, align).expect("a layout");
                    Allocator.dealloc(q, grown);
                    let z = Allocator.alloc_zeroed(layout);
                    assert!(!z.is_null() && (z as usize).is_multiple_of(align));
                    assert!((0..size).all(|i| z.add(i).read() == 0));
                    Allocator.dealloc(z, layout);
                }
            }
        }
    }
}

//! Branch memory handed from the threads that free branches to the threads that build them.
//!
//! A commit allocates a branch for every branch it copies, and the revisions that finalization
//! prunes free about as many, on the background thread. Through the allocator each of those
//! frees is a cross-thread free: the block goes back onto an atomic list of the page that the
//! commit thread allocated it from, and that thread later walks the list, a cache miss per
//! block, before it can reuse one; each allocation then follows a cold free list. At 10M random
//! keys that was a fifth of a commit's CPU time (mimalloc: allocation 8%, frees 7%, collecting
//! them 6% of the samples, 2026-11-24).
//!
//! Instead, a database keeps a [`Recycler`]: free blocks sorted by size class, in batches. The
//! threads a database starts ([`join`]: its commit pool, its background thread, its
//! checkpointer) free a branch by putting its block in a batch of their own ([`give`]), hand
//! full batches to the recycler, and take the blocks of new branches from a batch of their own
//! ([`take`]), refilled a whole batch at a time. A block is a pointer popped from an array; the
//! only shared state is one lock per batch of [`BATCH`] blocks. Other threads (a reader that
//! drops the last handle of a pruned snapshot) use the allocator as before.
//!
//! A block was last written when its branch was freed, several blocks of the chain ago, so its
//! lines are out of the cache: writing a new branch into it waited for each line in turn.
//! Taking a block therefore asks for every line of the next one of its class, for writing.
//! Measured (`commit_profile 10000000 200 pool 5000 inserts`, interleaved, 2026-11-24): the
//! commit pool's CPU per block 23.9, 23.3, 22.4, 24.6 ms when only the next block's first line
//! was asked for, 19.8, 19.6, 20.8, 22.1 ms with all of them; asking two blocks ahead did
//! worse (24.6, 23.9, 20.6 against 20.4, 21.4, 19.7).
//!
//! Every branch's size is rounded up to a multiple of [`GRAIN`] bytes, its class, so that a
//! block freed by one branch fits any branch of its class. The allocator rounds every size
//! past 64 bytes to a multiple of 16 anyway, so this costs no memory. The recycler keeps at
//! most [`KEPT_BYTES`]; beyond that, and when a thread or the database stops, blocks go back
//! to the allocator. A debug build fills every block it keeps with a poison byte, so that a use
//! after free, which `valgrind` cannot see in a block the allocator never gets back, reads
//! garbage in the tests.
#![allow(unsafe_code)]

use parking_lot::Mutex;
use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Branch sizes are multiples of this many bytes.
pub(crate) const GRAIN: usize = 16;

/// Size classes recycled: blocks of up to `CLASSES * GRAIN` bytes (a branch bigger than that,
/// rare, uses the allocator alone).
const CLASSES: usize = 96;

/// Blocks a batch holds: what one lock hands over.
const BATCH: usize = 64;

/// Bytes of free blocks a recycler keeps at most.
const KEPT_BYTES: usize = 32 << 20;

/// The alignment of every recycled block: a branch's.
pub(crate) const ALIGN: usize = 8;

/// A database's free branch blocks, by size class, in full batches.
pub(crate) struct Recycler {
    classes: [Mutex<Vec<Vec<NonNull<u8>>>>; CLASSES],
    /// Bytes in the batches held here.
    bytes: AtomicUsize,
}

// SAFETY: the blocks are free memory that only the thread holding a batch touches.
unsafe impl Send for Recycler {}
// SAFETY: as above; the batches are behind locks.
unsafe impl Sync for Recycler {}

impl Recycler {
    pub(crate) fn new() -> Arc<Recycler> {
        Arc::new(Recycler {
            classes: std::array::from_fn(|_| Mutex::new(Vec::new())),
            bytes: AtomicUsize::new(0),
        })
    }

    /// Keeps `batch` of class `class`, or returns it when the recycler holds enough.
    fn keep(&self, class: usize, batch: Vec<NonNull<u8>>) -> Option<Vec<NonNull<u8>>> {
        let bytes = batch.len() * class_bytes(class);
        if self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > KEPT_BYTES {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Some(batch);
        }
        self.classes[class].lock().push(batch);
        None
    }

    /// A batch of class `class`, if one is kept.
    fn lend(&self, class: usize) -> Option<Vec<NonNull<u8>>> {
        let batch = self.classes[class].lock().pop()?;
        self.bytes
            .fetch_sub(batch.len() * class_bytes(class), Ordering::Relaxed);
        Some(batch)
    }
}

impl Drop for Recycler {
    fn drop(&mut self) {
        for (class, batches) in self.classes.iter_mut().enumerate() {
            for batch in batches.get_mut().drain(..) {
                release(class, batch);
            }
        }
    }
}

/// A thread's own batches, and the recycler it hands them to.
struct Local {
    recycler: Arc<Recycler>,
    /// Blocks this thread freed, or took and has not used, by class.
    free: Vec<Vec<NonNull<u8>>>,
}

impl Drop for Local {
    fn drop(&mut self) {
        for (class, batch) in self.free.drain(..).enumerate() {
            release(class, batch);
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Makes this thread free branches into, and build them from, `recycler`.
pub(crate) fn join(recycler: &Arc<Recycler>) {
    LOCAL.with(|local| {
        *local.borrow_mut() = Some(Local {
            recycler: recycler.clone(),
            free: (0..CLASSES).map(|_| Vec::new()).collect(),
        });
    });
}

/// `bytes` rounded up to a whole size class.
pub(crate) fn rounded(bytes: usize) -> usize {
    bytes.next_multiple_of(GRAIN)
}

/// The class of a block of `bytes` (a multiple of [`GRAIN`]), if recycled.
fn class_of(bytes: usize) -> Option<usize> {
    debug_assert!(bytes.is_multiple_of(GRAIN));
    let class = bytes / GRAIN;
    (class < CLASSES).then_some(class)
}

fn class_bytes(class: usize) -> usize {
    class * GRAIN
}

/// A free block of `bytes` (rounded, [`rounded`]) for a new branch, if this thread has joined
/// a recycler that holds one.
pub(crate) fn take(bytes: usize) -> Option<NonNull<u8>> {
    let class = class_of(bytes)?;
    LOCAL
        .try_with(|local| {
            let mut local = local.borrow_mut();
            let local = local.as_mut()?;
            let batch = &mut local.free[class];
            if batch.is_empty() {
                *batch = local.recycler.lend(class)?;
            }
            let block = batch.pop();
            if let Some(next) = batch.last() {
                // The next branch of this class will be written there, whole: ask for its lines
                // now, so that writing it does not wait for each in turn.
                use crate::branch::{prefetch_lines, prefetch_write};
                prefetch_lines(next.as_ptr(), bytes, prefetch_write);
            }
            block
        })
        .ok()
        .flatten()
}

/// Keeps the free block at `block`, of `bytes` (rounded), for a new branch, if this thread has
/// joined a recycler; otherwise returns it to the caller, to give back to the allocator.
pub(crate) fn give(block: NonNull<u8>, bytes: usize) -> Option<NonNull<u8>> {
    let Some(class) = class_of(bytes) else {
        return Some(block);
    };
    LOCAL
        .try_with(|local| {
            let mut local = local.borrow_mut();
            let Some(local) = local.as_mut() else {
                return Some(block);
            };
            poison(block, bytes);
            let batch = &mut local.free[class];
            batch.push(block);
            if batch.len() == 2 * BATCH {
                let full = batch.split_off(BATCH);
                if let Some(returned) = local.recycler.keep(class, full) {
                    release(class, returned);
                }
            }
            None
        })
        .unwrap_or(Some(block))
}

/// Hands every batch this thread holds beyond a few blocks a class to its recycler: a thread
/// that has finished freeing (a drained queue) lets the commit threads have its blocks.
pub(crate) fn share() {
    let _ = LOCAL.try_with(|local| {
        let mut local = local.borrow_mut();
        let Some(local) = local.as_mut() else {
            return;
        };
        for class in 0..CLASSES {
            let batch = &mut local.free[class];
            if batch.len() > BATCH / 4 {
                let shared = std::mem::take(batch);
                if let Some(returned) = local.recycler.keep(class, shared) {
                    release(class, returned);
                }
            }
        }
    });
}

/// The byte a debug build fills kept blocks with.
const POISON: u8 = 0xdb;

/// In a debug build, overwrites a freed block kept for reuse, so that a use after free reads
/// garbage (a wrong value, a crash) in the tests instead of the old branch: a kept block never
/// goes back to the allocator, where `valgrind` would see such a use.
fn poison(block: NonNull<u8>, bytes: usize) {
    if cfg!(debug_assertions) {
        // SAFETY: the block is `bytes` long, free, and owned by the caller.
        unsafe { std::ptr::write_bytes(block.as_ptr(), POISON, bytes) };
    }
}

/// Gives a batch's blocks back to the allocator.
fn release(class: usize, batch: Vec<NonNull<u8>>) {
    let layout = Layout::from_size_align(class_bytes(class), ALIGN).expect("a class's layout");
    for block in batch {
        // SAFETY: every recycled block was allocated with its class's size and this alignment
        // (a branch's layout, rounded) and is free.
        unsafe { alloc::dealloc(block.as_ptr(), layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(bytes: usize) -> NonNull<u8> {
        let layout = Layout::from_size_align(bytes, ALIGN).expect("layout");
        // SAFETY: a non-zero size.
        NonNull::new(unsafe { alloc::alloc(layout) }).expect("memory")
    }

    fn in_thread<T: Send>(recycler: &Arc<Recycler>, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    join(recycler);
                    f()
                })
                .join()
                .expect("thread")
        })
    }

    #[test]
    fn blocks_freed_on_one_thread_build_on_another_by_class() {
        let recycler = Recycler::new();
        let freed: Vec<usize> = in_thread(&recycler, || {
            let blocks: Vec<NonNull<u8>> = (0..BATCH).map(|_| block(160)).collect();
            let addrs = blocks.iter().map(|b| b.as_ptr() as usize).collect();
            for b in blocks {
                assert!(give(b, 160).is_none(), "a joined thread keeps the block");
            }
            share();
            addrs
        });
        in_thread(&recycler, || {
            assert!(take(176).is_none(), "no block of another class");
            let mut taken: Vec<usize> = (0..BATCH)
                .map(|_| take(160).expect("a recycled block").as_ptr() as usize)
                .collect();
            taken.sort();
            let mut freed = freed.clone();
            freed.sort();
            assert_eq!(taken, freed, "every block freed comes back once");
            assert!(take(160).is_none(), "and no more");
            let layout = Layout::from_size_align(160, ALIGN).expect("layout");
            for addr in taken {
                // SAFETY: each was allocated above with this layout and is unused.
                unsafe { alloc::dealloc(addr as *mut u8, layout) };
            }
        });
    }

    #[test]
    #[cfg(debug_assertions)]
    fn a_debug_build_poisons_the_blocks_it_keeps() {
        let recycler = Recycler::new();
        let at = block(160).as_ptr() as usize;
        in_thread(&recycler, || {
            // SAFETY: the block is 160 bytes and ours until given.
            unsafe { std::ptr::write_bytes(at as *mut u8, 7, 160) };
            let kept = NonNull::new(at as *mut u8).expect("the block");
            assert!(give(kept, 160).is_none());
            let taken = take(160).expect("the block back");
            assert_eq!(taken.as_ptr() as usize, at);
            // SAFETY: the block is 160 bytes, ours again.
            let bytes = unsafe { std::slice::from_raw_parts(taken.as_ptr(), 160) };
            assert!(bytes.iter().all(|&b| b == POISON));
            let layout = Layout::from_size_align(160, ALIGN).expect("layout");
            // SAFETY: allocated above with this layout, unused.
            unsafe { alloc::dealloc(taken.as_ptr(), layout) };
        });
    }

    #[test]
    fn a_thread_that_has_not_joined_and_big_blocks_use_the_allocator() {
        let recycler = Recycler::new();
        let b = block(160);
        assert_eq!(give(b, 160), Some(b), "not joined");
        assert!(take(160).is_none());
        let big = block(CLASSES * GRAIN);
        let at = big.as_ptr() as usize;
        in_thread(&recycler, || {
            let big = NonNull::new(at as *mut u8).expect("the block");
            assert_eq!(give(big, CLASSES * GRAIN), Some(big), "past the last class");
            assert!(take(CLASSES * GRAIN).is_none());
        });
        let layout = |bytes| Layout::from_size_align(bytes, ALIGN).expect("layout");
        // SAFETY: both were allocated above with these layouts and came back unused.
        unsafe {
            alloc::dealloc(b.as_ptr(), layout(160));
            alloc::dealloc(big.as_ptr(), layout(CLASSES * GRAIN));
        }
    }

    #[test]
    fn a_recycler_keeps_a_bounded_number_of_bytes() {
        let recycler = Recycler::new();
        let bytes = CLASSES * GRAIN - GRAIN;
        let blocks = KEPT_BYTES / bytes + 4 * BATCH;
        in_thread(&recycler, || {
            for _ in 0..blocks {
                assert!(give(block(bytes), bytes).is_none());
            }
            share();
        });
        let kept = recycler.bytes.load(Ordering::Relaxed);
        assert!(kept <= KEPT_BYTES, "{kept} bytes kept");
        assert!(kept > KEPT_BYTES / 2, "{kept} bytes kept");
    }
}

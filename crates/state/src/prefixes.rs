//! The first eight bytes of a pending revision's changed keys, as sorted numbers, and a bucket
//! table that says where to search them.
//!
//! # Why a bucket table
//! Every read of a revision the committer has not built yet looks its key up in that
//! revision's changes, and a writer reads through one or two such revisions on every get. A
//! binary search over 20,000 prefixes is fifteen dependent loads, most of them cache misses
//! once the commit's threads have used the cache: perf put it at 16% of the writer's samples
//! in `bench state`'s transfers. The table splits the range from the smallest prefix to the
//! largest into equal spans, one per four prefixes or so, and records where each span's
//! prefixes start; a lookup reads its span's bounds and searches only between them. Keys
//! spread evenly (hashed addresses, random or sequential ids) put a few prefixes in each span;
//! clustered ones degrade to a binary search over the crowded span, never worse than before.

/// Sorted prefixes and their bucket table.
pub(crate) struct Prefixes {
    sorted: Vec<u64>,
    /// The smallest prefix, which bucket 0 starts at.
    min: u64,
    /// A prefix's bucket is `(prefix - min) >> shift`.
    shift: u32,
    /// Where each bucket's prefixes start in `sorted`, and one past the last bucket's end.
    starts: Vec<u32>,
}

/// Prefixes per bucket, about, as a power of two.
const PER_BUCKET_BITS: u32 = 2;

impl Prefixes {
    /// The table over `sorted`, which must be in ascending order.
    pub(crate) fn new(sorted: Vec<u64>) -> Prefixes {
        debug_assert!(sorted.is_sorted());
        let (min, max) = match (sorted.first(), sorted.last()) {
            (Some(&min), Some(&max)) => (min, max),
            _ => (0, 0),
        };
        let bucket_bits = sorted
            .len()
            .next_power_of_two()
            .trailing_zeros()
            .saturating_sub(PER_BUCKET_BITS)
            .max(1);
        // At least two buckets, so the shift stays below 64.
        let span_bits = u64::BITS - (max - min).leading_zeros();
        let shift = span_bits.saturating_sub(bucket_bits);
        let buckets = ((max - min) >> shift) as usize + 1;
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut at = 0;
        for bucket in 0..=buckets as u64 {
            while at < sorted.len() && (sorted[at] - min) >> shift < bucket {
                at += 1;
            }
            starts.push(u32::try_from(at).expect("a block of fewer than 2^32 changes"));
        }
        Prefixes {
            sorted,
            min,
            shift,
            starts,
        }
    }

    /// The position of the first entry equal to `prefix`, if there is one.
    #[inline]
    pub(crate) fn first(&self, prefix: u64) -> Option<usize> {
        let bucket = usize::try_from(prefix.checked_sub(self.min)? >> self.shift).ok()?;
        let (&start, &end) = (self.starts.get(bucket)?, self.starts.get(bucket + 1)?);
        let span = &self.sorted[start as usize..end as usize];
        let at = span.partition_point(|&p| p < prefix);
        (span.get(at) == Some(&prefix)).then_some(start as usize + at)
    }

    /// The prefixes from position `at` on.
    pub(crate) fn from(&self, at: usize) -> &[u64] {
        &self.sorted[at..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// What a plain binary search over the whole array answers.
    fn plain(sorted: &[u64], prefix: u64) -> Option<usize> {
        let at = sorted.partition_point(|&p| p < prefix);
        (sorted.get(at) == Some(&prefix)).then_some(at)
    }

    #[test]
    fn the_bucket_table_finds_what_a_binary_search_finds() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let shapes: [fn(&mut ChaCha8Rng) -> u64; 4] = [
            |rng| rng.gen(),
            |rng| rng.gen_range(0..25_000_000),
            |rng| rng.gen_range(0..40),
            |rng| (rng.gen_range(1u64..3) << 56) | rng.gen_range(0..1_000),
        ];
        for shape in shapes {
            for len in [0, 1, 2, 3, 17, 1_000, 20_000] {
                let mut sorted: Vec<u64> = (0..len).map(|_| shape(&mut rng)).collect();
                sorted.sort_unstable();
                let table = Prefixes::new(sorted.clone());
                let probes = sorted
                    .iter()
                    .copied()
                    .chain((0..200).map(|_| shape(&mut rng)));
                let edges = [0, 1, u64::MAX, u64::MAX - 1];
                for prefix in probes.chain(edges) {
                    assert_eq!(
                        table.first(prefix),
                        plain(&sorted, prefix),
                        "{prefix} of {len}"
                    );
                }
            }
        }
    }
}

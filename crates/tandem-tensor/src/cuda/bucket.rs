//! Bookkeeping of the CUDA caching allocator: size buckets, free lists and statistics.
//!
//! This part makes no driver call, so it is tested on any machine. The device side
//! (`alloc.rs`) asks [`BlockCache::take`] for a free block of a bucket before it calls the
//! driver, and gives every dropped block back with [`BlockCache::give_back`].

use std::collections::HashMap;

/// The smallest block handed out, in bytes (also the alignment of every bucket).
pub const MIN_BLOCK: usize = 512;

/// The bucket (block size in bytes) that serves a request of `bytes`.
///
/// Requests up to [`MIN_BLOCK`] share one bucket; above it, sizes are rounded up to one of four
/// steps per power of two (`2^k`, `1.25 * 2^k`, `1.5 * 2^k`, `1.75 * 2^k`), then to a multiple
/// of [`MIN_BLOCK`]: at most 25% is wasted, and tensors of nearby sizes (a batch that is a
/// little smaller at the end of an epoch) reuse each other's blocks.
pub fn bucket_size(bytes: usize) -> usize {
    if bytes <= MIN_BLOCK {
        return MIN_BLOCK;
    }
    let top = usize::BITS - 1 - bytes.leading_zeros();
    let pow = 1usize << top;
    if pow == bytes {
        return bytes;
    }
    let quarter = (pow / 4).max(1);
    let steps = (bytes - pow).div_ceil(quarter);
    let rounded = pow.saturating_add(steps.saturating_mul(quarter));
    rounded.div_ceil(MIN_BLOCK).saturating_mul(MIN_BLOCK)
}

/// Counters of one device's caching allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Bytes in blocks owned by live tensors (bucket sizes, not requested sizes).
    pub in_use_bytes: usize,
    /// Bytes in freed blocks kept for reuse.
    pub cached_bytes: usize,
    /// The largest `in_use_bytes` seen.
    pub peak_in_use_bytes: usize,
    /// Requests served from the cache.
    pub hits: u64,
    /// Requests that had to allocate from the driver.
    pub misses: u64,
}

/// Free lists keyed by bucket size. `P` is the block handle (a device pointer on a GPU, any
/// value in tests).
#[derive(Debug)]
pub struct BlockCache<P> {
    free: HashMap<usize, Vec<P>>,
    stats: AllocStats,
}

impl<P> Default for BlockCache<P> {
    fn default() -> Self {
        BlockCache {
            free: HashMap::new(),
            stats: AllocStats::default(),
        }
    }
}

impl<P> BlockCache<P> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cached block of exactly `bucket` bytes, counted as a hit and as in use; `None` when
    /// the caller must allocate (then it calls [`BlockCache::record_new`]).
    pub fn take(&mut self, bucket: usize) -> Option<P> {
        let block = self.free.get_mut(&bucket).and_then(|v| v.pop())?;
        self.stats.hits += 1;
        self.stats.cached_bytes -= bucket;
        self.add_in_use(bucket);
        Some(block)
    }

    /// Records a block of `bucket` bytes that was just allocated from the driver.
    pub fn record_new(&mut self, bucket: usize) {
        self.stats.misses += 1;
        self.add_in_use(bucket);
    }

    fn add_in_use(&mut self, bucket: usize) {
        self.stats.in_use_bytes += bucket;
        self.stats.peak_in_use_bytes = self.stats.peak_in_use_bytes.max(self.stats.in_use_bytes);
    }

    /// Returns a block of `bucket` bytes to its free list.
    pub fn give_back(&mut self, bucket: usize, block: P) {
        self.stats.in_use_bytes = self.stats.in_use_bytes.saturating_sub(bucket);
        self.stats.cached_bytes += bucket;
        self.free.entry(bucket).or_default().push(block);
    }

    /// Empties every free list, returning the blocks (with their sizes) for the caller to
    /// release to the driver.
    pub fn drain(&mut self) -> Vec<(usize, P)> {
        self.stats.cached_bytes = 0;
        self.free
            .drain()
            .flat_map(|(size, blocks)| blocks.into_iter().map(move |b| (size, b)))
            .collect()
    }

    /// The counters.
    pub fn stats(&self) -> AllocStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_up_with_bounded_waste() {
        assert_eq!(bucket_size(0), MIN_BLOCK);
        assert_eq!(bucket_size(1), MIN_BLOCK);
        assert_eq!(bucket_size(512), 512);
        assert_eq!(bucket_size(513), 1024); // 640, then a multiple of 512
        assert_eq!(bucket_size(4096), 4096);
        assert_eq!(bucket_size(4097), 5120);
        assert_eq!(bucket_size(6000), 6144);
        assert_eq!(bucket_size(7169), 8192);
        for bytes in [600, 1000, 5000, 70_000, 1 << 20, 3_000_001, 123_456_789] {
            let b = bucket_size(bytes);
            assert!(b >= bytes, "{bytes} -> {b}");
            assert_eq!(b % MIN_BLOCK, 0);
            assert!(
                b as f64 <= bytes as f64 * 1.25 + MIN_BLOCK as f64,
                "{bytes} -> {b}"
            );
            assert_eq!(bucket_size(b), b, "a bucket size is its own bucket");
        }
        assert!(bucket_size(usize::MAX) >= usize::MAX / 2);
    }

    #[test]
    fn freed_blocks_are_reused_and_counted() {
        let mut c: BlockCache<u32> = BlockCache::new();
        assert_eq!(c.take(1024), None);
        c.record_new(1024);
        c.record_new(2048);
        let s = c.stats();
        assert_eq!((s.in_use_bytes, s.misses, s.hits), (3072, 2, 0));
        c.give_back(1024, 7);
        assert_eq!(c.stats().cached_bytes, 1024);
        assert_eq!(
            c.take(2048),
            None,
            "no block of another bucket is handed out"
        );
        assert_eq!(c.take(1024), Some(7));
        let s = c.stats();
        assert_eq!(
            (s.in_use_bytes, s.cached_bytes, s.hits, s.peak_in_use_bytes),
            (3072, 0, 1, 3072)
        );
        c.give_back(1024, 7);
        c.give_back(2048, 9);
        let mut drained = c.drain();
        drained.sort();
        assert_eq!(drained, vec![(1024, 7), (2048, 9)]);
        assert_eq!(c.stats().cached_bytes, 0);
        assert_eq!(c.stats().in_use_bytes, 0);
    }
}

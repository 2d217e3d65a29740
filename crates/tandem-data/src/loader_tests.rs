use super::*;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

/// Sample `i` is the scalar `i` (i64); `get` fails for the indices in `bad`, panics for
/// `panic_at`, and sleeps `delay` per call. Counts the calls.
struct Probe {
    n: usize,
    bad: Vec<usize>,
    panic_at: Option<usize>,
    delay: Duration,
    calls: AtomicUsize,
}

impl Probe {
    fn new(n: usize) -> Probe {
        Probe {
            n,
            bad: vec![],
            panic_at: None,
            delay: Duration::ZERO,
            calls: AtomicUsize::new(0),
        }
    }
}

impl Dataset for Probe {
    fn len(&self) -> usize {
        self.n
    }
    fn get(&self, index: usize) -> Result<Vec<Tensor>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        if self.bad.contains(&index) {
            return Err(Error::invalid("Probe", format!("sample {index} is broken")));
        }
        if self.panic_at == Some(index) {
            panic!("probe panics at {index}");
        }
        Ok(vec![Tensor::scalar(index as i64)])
    }
}

fn indices_of(batch: &[Tensor]) -> Vec<usize> {
    batch[0]
        .to_vec::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

fn collect(loader: &DataLoader, epoch: usize) -> Vec<Vec<usize>> {
    loader
        .epoch(epoch)
        .map(|b| indices_of(&b.unwrap()))
        .collect()
}

#[test]
fn every_index_once_per_epoch() {
    for n in [0usize, 1, 7, 64, 100] {
        for bs in [1usize, 3, 64, 200] {
            for drop_last in [false, true] {
                for prefetch in [0usize, 1, 3] {
                    for seed in [None, Some(5u64)] {
                        let mut loader = DataLoader::new(Arc::new(Probe::new(n)), bs)
                            .drop_last(drop_last)
                            .prefetch(prefetch);
                        if let Some(s) = seed {
                            loader = loader.shuffle(s);
                        }
                        let batches = collect(&loader, 2);
                        let case = format!("n={n} bs={bs} drop_last={drop_last} seed={seed:?}");
                        assert_eq!(batches.len(), loader.len(), "{case}");
                        let full = n / bs;
                        for (i, b) in batches.iter().enumerate() {
                            let expect = if i < full { bs } else { n % bs };
                            assert_eq!(b.len(), expect, "{case} batch {i}");
                        }
                        let mut all: Vec<usize> = batches.concat();
                        let kept = if drop_last { full * bs } else { n };
                        assert_eq!(all.len(), kept, "{case}");
                        if seed.is_none() {
                            assert_eq!(all, (0..kept).collect::<Vec<_>>(), "{case}");
                        }
                        all.sort_unstable();
                        all.dedup();
                        assert_eq!(all.len(), kept, "{case}: repeated indices");
                        assert_eq!(batches, loader.batch_indices(2), "{case}");
                    }
                }
            }
        }
    }
}

#[test]
fn shuffle_is_reproducible_and_changes_across_epochs() {
    let make = |seed, prefetch| {
        DataLoader::new(Arc::new(Probe::new(50)), 8)
            .shuffle(seed)
            .prefetch(prefetch)
    };
    let a = collect(&make(1, 2), 0);
    assert_eq!(a, collect(&make(1, 2), 0));
    assert_eq!(a, collect(&make(1, 0), 0), "prefetch changes nothing");
    assert_ne!(a, collect(&make(1, 2), 1));
    assert_ne!(a, collect(&make(2, 2), 0));
    let order: Vec<usize> = a.concat();
    assert_eq!(order, crate::shuffle::permutation(50, 1, 0));
}

#[test]
fn dataset_errors_come_through_and_iteration_goes_on() {
    let mut p = Probe::new(20);
    p.bad = vec![13];
    let loader = DataLoader::new(Arc::new(p), 5);
    let items: Vec<_> = loader.epoch(0).collect();
    assert_eq!(items.len(), 4);
    for (i, item) in items.iter().enumerate() {
        match item {
            Ok(b) => assert_ne!(i, 2, "{:?}", indices_of(b)),
            Err(e) => {
                assert_eq!(i, 2);
                assert!(e.to_string().contains("sample 13 is broken"), "{e}");
            }
        }
    }
}

#[test]
fn dropping_the_iterator_stops_the_thread() {
    let probe = Arc::new(Probe::new(10_000));
    let loader = DataLoader::new(probe.clone(), 1).prefetch(2);
    let mut it = loader.epoch(0);
    for _ in 0..3 {
        it.next().unwrap().unwrap();
    }
    assert_eq!(it.len(), 9_997);
    drop(it);
    // 3 consumed, at most 2 waiting in the channel and 1 blocked in `send`.
    let calls = probe.calls.load(Ordering::SeqCst);
    assert!((3..=6).contains(&calls), "{calls} calls");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        probe.calls.load(Ordering::SeqCst),
        calls,
        "thread still running"
    );
    // The worker's clone of the dataset is gone: only ours and the loader's remain.
    assert_eq!(Arc::strong_count(&probe), 2);
}

#[test]
fn dropping_a_slow_epoch_is_prompt() {
    let mut p = Probe::new(1000);
    p.delay = Duration::from_millis(20);
    let probe = Arc::new(p);
    let loader = DataLoader::new(probe.clone(), 4).prefetch(1);
    let mut it = loader.epoch(0);
    it.next().unwrap().unwrap();
    let t = Instant::now();
    drop(it);
    // At most the batch in progress (4 samples of 20 ms) is finished.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(Arc::strong_count(&probe), 2);
}

#[test]
fn a_panicking_dataset_gives_errors_not_a_hang() {
    let mut p = Probe::new(12);
    p.panic_at = Some(6);
    let loader = DataLoader::new(Arc::new(p), 3);
    let items: Vec<_> = loader.epoch(0).collect();
    assert_eq!(items.len(), 4);
    assert!(items[0].is_ok() && items[1].is_ok());
    for item in &items[2..] {
        let e = item.as_ref().unwrap_err();
        assert!(e.to_string().contains("probe panics at 6"), "{e}");
    }
}

#[test]
fn zero_batch_size_is_an_error_item() {
    let loader = DataLoader::new(Arc::new(Probe::new(5)), 0);
    assert_eq!(loader.len(), 0);
    let items: Vec<_> = loader.epoch(0).collect();
    assert_eq!(items.len(), 1);
    assert!(items[0]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("batch_size"));
}

#[test]
fn an_epoch_can_outlive_its_loader() {
    let loader = DataLoader::new(Arc::new(Probe::new(10)), 4);
    let it = loader.epoch(0);
    drop(loader);
    assert_eq!(it.map(|b| b.unwrap()[0].numel()).sum::<usize>(), 10);
}

#[test]
fn batches_arrive_on_the_requested_device() {
    let loader = |prefetch| {
        DataLoader::new(Arc::new(Probe::new(10)), 4)
            .prefetch(prefetch)
            .device(Device::Cpu)
    };
    for prefetch in [0, 2] {
        assert_eq!(
            collect(&loader(prefetch), 0),
            collect(&DataLoader::new(Arc::new(Probe::new(10)), 4), 0)
        );
    }
    // A GPU: the batches are there when it is usable, otherwise each one is an error naming
    // the device (never a panic), with the iterator's length unchanged.
    let gpu = Device::Cuda(0);
    let usable = Tensor::scalar(0i64).to_device(gpu).is_ok();
    for prefetch in [0, 2] {
        let batches: Vec<_> = DataLoader::new(Arc::new(Probe::new(10)), 4)
            .prefetch(prefetch)
            .device(gpu)
            .epoch(0)
            .collect();
        assert_eq!(batches.len(), 3);
        for b in batches {
            match b {
                Ok(tensors) => {
                    assert!(usable);
                    assert!(tensors.iter().all(|t| t.device() == gpu));
                }
                Err(e) => {
                    assert!(!usable);
                    assert!(e.to_string().to_lowercase().contains("cuda"), "{e}");
                }
            }
        }
    }
}

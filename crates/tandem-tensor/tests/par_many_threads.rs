//! The parallel loops with a global pool of four threads, whatever the machine's core count:
//! a loop then offers three seats, which watching helpers take one by one (each putting the
//! offer up again for the next), a path that a pool of two never takes. Its own test binary,
//! because the global pool can be configured once per process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use tandem_tensor::cpu::par;

fn four_threads() {
    static POOL: Once = Once::new();
    POOL.call_once(|| {
        // Fails only if the pool was built already, which nothing else in this binary does.
        rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build_global()
            .expect("global pool of four threads");
    });
    assert_eq!(rayon::current_num_threads(), 4);
}

#[test]
fn every_index_runs_once_when_three_seats_are_offered() {
    four_threads();
    for round in 0..500 {
        let tasks = [2, 3, 4, 5, 9, 64][round % 6];
        let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
        par::for_each_index(tasks, |i| {
            // Tasks long enough for helpers to join in.
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(5) {
                std::hint::spin_loop();
            }
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        for (i, h) in hits.iter().enumerate() {
            assert_eq!(
                h.load(Ordering::Relaxed),
                1,
                "round {round}, task {i} of {tasks}"
            );
        }
    }
}

#[test]
fn callers_on_several_threads_share_the_helpers() {
    four_threads();
    std::thread::scope(|s| {
        for t in 0..3 {
            s.spawn(move || {
                for round in 0..300 {
                    let tasks = [2, 4, 7][(round + t) % 3];
                    let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                    par::for_each_index(tasks, |i| {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                    let (a, b) = par::join(|| round * 2, || round * 3);
                    assert_eq!((a, b), (round * 2, round * 3));
                }
            });
        }
    });
}

#[test]
fn a_panic_comes_back_and_the_next_loops_still_run() {
    four_threads();
    for round in 0..50 {
        let caught = std::panic::catch_unwind(|| {
            par::for_each_index(4, |i| {
                if i == round % 4 {
                    panic!("task {i}");
                }
            })
        });
        let payload = caught.expect_err("the panic is raised again");
        let expected = format!("task {}", round % 4);
        assert_eq!(payload.downcast_ref::<String>(), Some(&expected));
        let sum = AtomicUsize::new(0);
        par::for_each_index(6, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 15);
    }
}

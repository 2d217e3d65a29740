//! Parallel loops for the kernels, on the rayon pool, with the calling thread taking part.
//!
//! A rayon parallel iterator started from a thread outside the pool (the user's thread, which
//! is where eager ops and `Session::run` are called from) hands the whole job to the pool and
//! puts the caller to sleep until it is done: two thread hand-offs per op, which a training
//! step of a small model pays dozens of times (replacing them took the batch-64 MLP step from
//! 368-380 to 265-273 us in eager mode, `cargo bench --bench modes -- W1_mlp_step`).
//!
//! The loops here run differently when called from outside the pool: the tasks are numbered
//! and claimed one by one from a shared counter, by the caller itself and by helpers sent to
//! the pool (one fewer than the pool has threads, so that the caller and the helpers together
//! use as many cores as the pool). The caller never sleeps while there are tasks left: it
//! works through them itself, and once all are claimed it waits, spinning briefly and then
//! yielding, for the ones still running in helpers. A helper that starts after every task was
//! claimed returns at once, so a small job never waits for a thread to wake up. Called from a
//! thread of the pool (nested parallelism, or a program running inside `ThreadPool::install`),
//! the loops are plain rayon iterators.
//!
//! A helper does not go back to the pool as soon as its loop is done: for 50 us after its last
//! task (`TANDEM_HELPER_SPIN_US` sets another time; 0 turns it off, for cores shared with other
//! work) it watches for the next loop, whose caller offers it a seat before waking any pool
//! thread. The ops of a forward pass or a training step come microseconds apart, so their
//! loops find a helper already running instead of waking a sleeping thread each time: the
//! batch-1 MLP forward pass (W6, whose first product is split in two halves), `cargo bench
//! --bench modes -- W6`, three alternated pairs on a 2-core AVX-512 machine, graph mode 7.95 /
//! 8.78 / 8.48 us without watching and 8.27 / 7.88 / 7.42 us with it.
//!
//! The hand-over itself is kept to a few cache-line transfers between the cores, since a split
//! product of a few microseconds pays it every time: the offer is one pointer on a line of its
//! own that a watching helper swaps out (no lock), the counters a loop uses share one line away
//! from the team's reference count, the helper finishing the last task signals the caller only
//! if it went to sleep (no lock or system call otherwise), the caller reuses its team for the
//! next loop instead of allocating one, and [`join`] hands its closures over without locks.
//! Batch-1 MLP forward pass (W6) in graph mode, `cargo run --release --example profile_step --
//! infer 1 100000`, on a 2-core AVX-512 machine, the earlier hand-over (an offer behind a
//! mutex, a signal on every loop) and this one alternated in five pairs: 5.65 / 5.58 / 5.65 /
//! 5.96 / 5.76 us and 5.12 / 5.24 / 5.07 / 5.23 / 5.31 us.
//!
//! The split of the work into tasks is the caller's and never depends on which thread runs a
//! task, so results are the same either way.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// Whether the current thread is a worker of a rayon pool.
#[inline]
fn in_pool() -> bool {
    rayon::current_thread_index().is_some()
}

/// The body of a team run, its lifetime erased (see [`Team`]).
type Body = *const (dyn Fn(usize) + Sync + 'static);

/// The shared state of one parallel loop run from outside the pool.
///
/// The caller keeps `body` alive until `done == tasks`. A helper dereferences `body` only after
/// claiming a task number below `tasks`, and counts the task done only after the call returned,
/// so no helper touches `body` after the caller has returned; the counters themselves live as
/// long as the `Arc` of the last helper.
///
/// Laid out for the two cores' caches: aligned to two cache lines, so that the `Arc`'s counts
/// (which a helper changes when it lets go of the team) are not on the lines the caller reads
/// while it waits for `done`; the fields every loop uses come first, on one line, and the
/// locks, which a loop without a panic or a long wait never touches, after them.
#[repr(C, align(128))]
struct Team {
    next: AtomicUsize,
    done: AtomicUsize,
    tasks: usize,
    body: Body,
    /// Helpers still wanted from the offer, changed only by the helper holding the offer
    /// (see [`take_seat`]).
    seats: AtomicUsize,
    /// Whether `panic` holds a payload (read by the caller instead of taking the lock).
    panicked: AtomicBool,
    /// Whether the caller stopped spinning and sleeps on `finished` (only then does the
    /// helper finishing the last task take the lock and signal).
    sleeping: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Signalled by the helper that finishes the last task, for a caller that stopped spinning.
    finished: Condvar,
    /// The mutex of `finished` (it guards nothing: `done` is the state).
    gate: Mutex<()>,
}

// SAFETY: `body` points to a `Sync` closure, called through a shared reference only (see the
// invariant on `Team`); the other fields are thread-safe.
unsafe impl Send for Team {}
// SAFETY: as above.
unsafe impl Sync for Team {}

impl Team {
    /// A team of `helpers` helpers (besides the caller) for `tasks` calls of `body`.
    fn new(tasks: usize, helpers: usize, body: Body) -> Team {
        Team {
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            tasks,
            seats: AtomicUsize::new(helpers),
            body,
            panicked: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            panic: Mutex::new(None),
            finished: Condvar::new(),
            gate: Mutex::new(()),
        }
    }

    /// Claims and runs tasks until none are left.
    fn work(&self) {
        loop {
            // A look before the claim leaves the line shared when every task is taken (the
            // caller is reading it while it waits).
            if self.next.load(Ordering::Relaxed) >= self.tasks {
                return;
            }
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.tasks {
                return;
            }
            // SAFETY: task `i < tasks` is claimed and not yet counted done, so the caller is
            // still waiting and `body` is alive (the invariant on `Team`).
            let body = unsafe { &*self.body };
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| body(i))) {
                lock(&self.panic).get_or_insert(payload);
                self.panicked.store(true, Ordering::Release);
            }
            if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.tasks
                && self.sleeping.load(Ordering::SeqCst)
            {
                // The caller went to sleep: taking the gate orders this after its last look
                // at `done`. (A caller that raised `sleeping` after the load above reads
                // `done` after raising it, and sees this task counted.)
                let _gate = lock(&self.gate);
                self.finished.notify_all();
            }
        }
    }
}

/// How long a helper keeps watching for the next loop after its last task before it returns
/// to the pool: 50 us, or `TANDEM_HELPER_SPIN_US` (read once; 0 turns watching off, for
/// machines whose cores are shared with other work).
fn linger() -> Duration {
    static SPIN: OnceLock<Duration> = OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var("TANDEM_HELPER_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(50);
        Duration::from_micros(us)
    })
}

/// The offer to watching helpers: a team that wants more helpers, as a pointer owning one
/// reference to it (from `Arc::into_raw`), or null. Whoever swaps the pointer out owns that
/// reference. On a cache line of its own, which the watching helpers read while they spin.
#[repr(align(128))]
struct Offer(AtomicPtr<Team>);
static OFFER: Offer = Offer(AtomicPtr::new(std::ptr::null_mut()));
/// Helpers sent to the pool and not yet returned from it (working, waiting to start, or
/// watching for seats).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Puts `team` up for watching helpers unless another team is offered; whether it was.
fn offer(team: &Arc<Team>) -> bool {
    let raw = Arc::into_raw(Arc::clone(team)).cast_mut();
    let null = std::ptr::null_mut();
    if OFFER
        .0
        .compare_exchange(null, raw, Ordering::SeqCst, Ordering::Relaxed)
        .is_ok()
    {
        return true;
    }
    // SAFETY: `raw` came from `Arc::into_raw` above and was not published.
    drop(unsafe { Arc::from_raw(raw) });
    false
}

/// Takes `team`'s offer back if no helper took it.
fn withdraw(team: &Arc<Team>) {
    let raw = Arc::as_ptr(team).cast_mut();
    // The pointer in the offer can equal `raw` only if it is this team's (alive: `team`
    // holds it), so taking it out takes this team's reference.
    if OFFER
        .0
        .compare_exchange(
            raw,
            std::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
    {
        // SAFETY: the offer owned one reference from `Arc::into_raw`, now ours.
        drop(unsafe { Arc::from_raw(raw) });
    }
}

/// Takes a seat of the offered team, if there is one; puts the team up again when it wants
/// more helpers still.
fn take_seat() -> Option<Arc<Team>> {
    if OFFER.0.load(Ordering::Relaxed).is_null() {
        return None;
    }
    let raw = OFFER.0.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if raw.is_null() {
        return None;
    }
    // SAFETY: a non-null offer owns one reference from `Arc::into_raw`, now ours.
    let team = unsafe { Arc::from_raw(raw) };
    // Only the holder of the offer changes `seats` (the swap above orders the holders). The
    // store also tells the caller, once it reads 0, that the offer is no longer out.
    let left = team.seats.load(Ordering::Relaxed);
    team.seats.store(left.saturating_sub(1), Ordering::Release);
    if left > 1 {
        offer(&team);
    }
    Some(team)
}

/// A helper's life on a pool thread: works on `team`, then watches for offered seats until
/// [`linger`] has passed since its last task, so that the loops of an op sequence (a
/// training step, a forward pass) find a helper already running instead of waking a
/// sleeping pool thread each time. Counted in [`LIVE`] by whoever sent it.
fn help(team: Arc<Team>) {
    team.work();
    drop(team);
    let spin = linger();
    let mut since = Instant::now();
    let mut rounds = 0u32;
    while !spin.is_zero() {
        if let Some(team) = take_seat() {
            team.work();
            drop(team);
            since = Instant::now();
            continue;
        }
        std::hint::spin_loop();
        rounds = rounds.wrapping_add(1);
        if rounds.is_multiple_of(32) && since.elapsed() >= spin {
            break;
        }
    }
    LIVE.fetch_sub(1, Ordering::SeqCst);
    // A caller that offered seats before the count went down may not have sent a helper of
    // its own (it read the count after offering): one last look serves it. The look is
    // sequentially consistent, like the count's decrement and the caller's offer and read of
    // the count, so that one of the two sides sees the other (`take_seat`'s own first look is
    // relaxed, which is enough while spinning).
    if !OFFER.0.load(Ordering::SeqCst).is_null() {
        if let Some(team) = take_seat() {
            team.work();
        }
    }
}

/// Busy-wait rounds (`spin_loop`) before a waiting caller starts yielding its core.
const SPIN_ROUNDS: u32 = 1 << 12;
/// `yield_now` rounds before it sleeps until the last task is done.
const YIELD_ROUNDS: u32 = 64;

/// Runs `body(i)` for every `i` in `0..tasks`, in parallel on the rayon pool; returns once all
/// calls returned. A panic in any call is raised again here, after every call has finished.
pub fn for_each_index(tasks: usize, body: impl Fn(usize) + Sync) {
    let threads = rayon::current_num_threads();
    if tasks <= 1 || threads <= 1 {
        (0..tasks).for_each(body);
        return;
    }
    if in_pool() {
        (0..tasks).into_par_iter().for_each(&body);
        return;
    }
    let body: &(dyn Fn(usize) + Sync) = &body;
    // SAFETY: only the lifetime is erased; `Team`'s invariant keeps every use of the pointer
    // within this call, which waits below until every claimed task is done.
    let erased: Body = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Body>(body) };
    let helpers = (threads - 1).min(tasks - 1);
    let team = team_for(tasks, helpers, erased);
    // Seats are offered to helpers still watching after an earlier loop; pool threads are
    // woken only for the seats they cannot fill. The offer comes before the count is read and
    // a helper lowers the count before its last look at the offer, so a seat is either seen
    // by a watching helper or counted as needing a new one.
    let offered = offer(&team);
    let live = if offered {
        LIVE.load(Ordering::SeqCst)
    } else {
        0
    };
    for _ in live.min(helpers)..helpers {
        let helper = Arc::clone(&team);
        LIVE.fetch_add(1, Ordering::SeqCst);
        #[cfg(test)]
        tests::SENT.with(|n| n.set(n.get() + 1));
        rayon::spawn(move || help(helper));
    }
    team.work();
    // Every seat taken: the offer is gone, no need to touch its line.
    if offered && team.seats.load(Ordering::Acquire) > 0 {
        withdraw(&team);
    }
    // Tasks still running in helpers: spin (they are usually about as long as the caller's
    // own), then yield, then sleep until the last one signals, so that a long wait on a busy
    // machine (or many callers at once) does not hold a core.
    let mut rounds = 0u32;
    while team.done.load(Ordering::Acquire) < tasks {
        if rounds < SPIN_ROUNDS {
            std::hint::spin_loop();
        } else if rounds < SPIN_ROUNDS + YIELD_ROUNDS {
            std::thread::yield_now();
        } else {
            let mut gate = lock(&team.gate);
            team.sleeping.store(true, Ordering::SeqCst);
            while team.done.load(Ordering::SeqCst) < tasks {
                gate = team.finished.wait(gate).unwrap_or_else(|e| e.into_inner());
            }
            break;
        }
        rounds += 1;
    }
    let payload = if team.panicked.load(Ordering::Acquire) {
        lock(&team.panic).take()
    } else {
        None
    };
    SPARE.set(Some(team));
    if let Some(payload) = payload {
        panic::resume_unwind(payload);
    }
}

thread_local! {
    /// This thread's team of its last loop, kept to be used again by the next one once the
    /// helpers let go of it: no allocation per loop, and the caller does not wait for the
    /// line of the reference count, which a helper had last, on its way out of a loop.
    static SPARE: std::cell::Cell<Option<Arc<Team>>> = const { std::cell::Cell::new(None) };
}

/// A team for a new loop: this thread's spare one when nobody else holds it, else a new one.
fn team_for(tasks: usize, helpers: usize, body: Body) -> Arc<Team> {
    if let Some(mut team) = SPARE.take() {
        if let Some(t) = Arc::get_mut(&mut team) {
            *t = Team::new(tasks, helpers, body);
            return team;
        }
    }
    Arc::new(Team::new(tasks, helpers, body))
}

/// A mutable slice shared by the tasks of a loop, each of which takes a disjoint part.
struct SharedMut<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: the tasks take disjoint parts (see `part`), and `T: Send` lets them move between
// threads.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The `i`-th part of `size` elements (the last one may be shorter).
    ///
    /// # Safety
    /// Each `i` must be taken by one task only, while the slice is borrowed.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, i: usize, size: usize) -> &mut [T] {
        let start = i * size;
        let len = size.min(self.len - start);
        // SAFETY: `start + len <= self.len`, and the caller takes each part once.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Runs `body(i, chunk)` for the consecutive chunks of `size` elements of `out` (the last may
/// be shorter), in parallel; `i * size` is the chunk's first index.
pub fn for_each_chunk<T: Send>(out: &mut [T], size: usize, body: impl Fn(usize, &mut [T]) + Sync) {
    let size = size.max(1);
    let tasks = out.len().div_ceil(size);
    if tasks <= 1 {
        if !out.is_empty() {
            body(0, out);
        }
        return;
    }
    if in_pool() {
        out.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| body(i, c));
        return;
    }
    let shared = SharedMut {
        ptr: out.as_mut_ptr(),
        len: out.len(),
    };
    // SAFETY: `for_each_index` runs each task number once.
    for_each_index(tasks, |i| body(i, unsafe { shared.part(i, size) }));
}

/// [`for_each_chunk`] with a fallible body: returns one of the errors if any call failed
/// (chunks not started yet are then skipped).
pub fn try_for_each_chunk<T: Send, E: Send>(
    out: &mut [T],
    size: usize,
    body: impl Fn(usize, &mut [T]) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let size = size.max(1);
    let tasks = out.len().div_ceil(size);
    if tasks <= 1 {
        return if out.is_empty() { Ok(()) } else { body(0, out) };
    }
    if in_pool() {
        return out
            .par_chunks_mut(size)
            .enumerate()
            .try_for_each(|(i, c)| body(i, c));
    }
    let shared = SharedMut {
        ptr: out.as_mut_ptr(),
        len: out.len(),
    };
    let error = Mutex::new(None);
    let failed = std::sync::atomic::AtomicBool::new(false);
    for_each_index(tasks, |i| {
        if failed.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: `for_each_index` runs each task number once.
        if let Err(e) = body(i, unsafe { shared.part(i, size) }) {
            failed.store(true, Ordering::Relaxed);
            lock(&error).get_or_insert(e);
        }
    });
    match error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `[body(0), body(1), ..., body(tasks - 1)]`, computed in parallel.
pub fn map<R: Send>(tasks: usize, body: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let mut out: Vec<Option<R>> = (0..tasks).map(|_| None).collect();
    for_each_chunk(&mut out, 1, |i, slot| slot[0] = Some(body(i)));
    out.into_iter().flatten().collect()
}

/// Locks `m`, also when a panicking task poisoned it (panics are raised again by the loops).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `a` and `b`, in parallel when the pool has more than one thread; returns both results.
pub fn join<RA: Send, RB: Send>(
    a: impl FnOnce() -> RA + Send,
    b: impl FnOnce() -> RB + Send,
) -> (RA, RB) {
    if rayon::current_num_threads() <= 1 {
        return (a(), b());
    }
    if in_pool() {
        return rayon::join(a, b);
    }
    let halves = JoinHalves {
        a: UnsafeCell::new(Some(a)),
        b: UnsafeCell::new(Some(b)),
        ra: UnsafeCell::new(None),
        rb: UnsafeCell::new(None),
    };
    // SAFETY: `for_each_index` runs index 0 once and index 1 once, so each call takes only its
    // own closure and writes only its own result, and nobody else touches them meanwhile;
    // the caller reads the results after the loop has returned.
    for_each_index(2, |i| unsafe { halves.run(i) });
    let (ra, rb) = (halves.ra.into_inner(), halves.rb.into_inner());
    // Both calls ran (a panic in either was raised again by `for_each_index`).
    match (ra, rb) {
        (Some(ra), Some(rb)) => (ra, rb),
        _ => unreachable!("both halves of a join ran"),
    }
}

/// The two closures of a [`join`] and their results, each taken or written only by the task
/// of its index (no lock: a lock's cache line would travel between the cores on the path of
/// every split product).
struct JoinHalves<A, B, RA, RB> {
    a: UnsafeCell<Option<A>>,
    b: UnsafeCell<Option<B>>,
    ra: UnsafeCell<Option<RA>>,
    rb: UnsafeCell<Option<RB>>,
}

// SAFETY: the closures and results move to the thread that runs their index (they are
// `Send`), and each cell is used by one task only (see `JoinHalves::run`).
unsafe impl<A: Send, B: Send, RA: Send, RB: Send> Sync for JoinHalves<A, B, RA, RB> {}

impl<A: FnOnce() -> RA, B: FnOnce() -> RB, RA, RB> JoinHalves<A, B, RA, RB> {
    /// Runs half `i` (0: `a`, otherwise `b`) and stores its result.
    ///
    /// # Safety
    /// Each index must be run at most once, and the cells not be touched meanwhile.
    unsafe fn run(&self, i: usize) {
        // SAFETY: the caller's contract: this task alone uses the cells of its index.
        unsafe {
            if i == 0 {
                if let Some(a) = (*self.a.get()).take() {
                    *self.ra.get() = Some(a());
                }
            } else if let Some(b) = (*self.b.get()).take() {
                *self.rb.get() = Some(b());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Helpers this thread's loops sent to the pool.
        pub(super) static SENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn loops_in_quick_succession_reuse_a_watching_helper() {
        if rayon::current_num_threads() < 2 || linger().is_zero() {
            return;
        }
        // Without watching helpers each loop sends one to the pool. Other tests share the
        // pool (and may fill the offer first), so a round counts as passing with a margin,
        // and a few rounds are allowed on a busy machine.
        let reused = (0..5).any(|_| {
            let before = SENT.with(|n| n.get());
            for _ in 0..100 {
                // Some work between loops, as between the ops of a forward pass.
                let gap = Instant::now();
                while gap.elapsed() < Duration::from_micros(10) {
                    std::hint::spin_loop();
                }
                let hits = AtomicUsize::new(0);
                for_each_index(2, |_| {
                    hits.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(hits.load(Ordering::Relaxed), 2);
            }
            SENT.with(|n| n.get()) - before < 50
        });
        assert!(reused, "every loop woke a new helper");
    }

    #[test]
    fn loops_from_several_threads_at_once_run_every_index_once() {
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for round in 0..200 {
                        let tasks = [2, 3, 5, 17][(round + t) % 4];
                        let hits: Vec<AtomicUsize> =
                            (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                        for_each_index(tasks, |i| {
                            if i == 1 && round % 50 == 0 {
                                std::thread::sleep(std::time::Duration::from_micros(200));
                            }
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                    }
                });
            }
        });
    }

    #[test]
    fn every_index_runs_once_from_outside_and_inside_the_pool() {
        let check = || {
            for tasks in [0, 1, 2, 3, 7, 64, 1000] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                for_each_index(tasks, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "{tasks}"
                );
            }
        };
        check();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(check);
        }
    }

    #[test]
    fn the_caller_waits_for_a_long_task_in_a_helper() {
        if rayon::current_num_threads() < 2 {
            return;
        }
        // Task 0 (the caller's, claimed first) waits until a helper has started task 1, which
        // then runs long enough for the caller to stop spinning and sleep.
        let started = std::sync::atomic::AtomicBool::new(false);
        let finished = AtomicUsize::new(0);
        for_each_index(2, |i| {
            if i == 1 {
                started.store(true, Ordering::Release);
                std::thread::sleep(std::time::Duration::from_millis(100));
            } else {
                while !started.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
            }
            finished.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(finished.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn chunks_cover_the_slice_with_their_offsets() {
        for (len, size) in [(0, 4), (1, 4), (10, 3), (4096, 100), (7, 7)] {
            let mut v = vec![0usize; len];
            for_each_chunk(&mut v, size, |i, c| {
                assert!(c.len() <= size);
                for (j, x) in c.iter_mut().enumerate() {
                    *x = i * size + j + 1;
                }
            });
            assert_eq!(v, (1..=len).collect::<Vec<_>>());
        }
    }

    #[test]
    fn errors_and_panics_come_back_to_the_caller() {
        let mut v = vec![0u8; 1000];
        let r = try_for_each_chunk(&mut v, 10, |i, _| if i == 37 { Err(i) } else { Ok(()) });
        assert_eq!(r, Err(37));
        let caught = panic::catch_unwind(|| {
            for_each_index(50, |i| {
                if i == 11 {
                    panic!("task eleven");
                }
            })
        });
        let payload = caught.expect_err("the panic is raised again");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"task eleven"));
    }

    #[test]
    fn loops_after_a_panic_run_every_index_once() {
        // The team of the panicking loop is this thread's spare for the next ones: nothing of
        // its state (claims, counts, the payload) may carry over.
        for round in 0..20 {
            let caught = panic::catch_unwind(|| {
                for_each_index(2, |i| {
                    if i == round % 2 {
                        panic!("task {i}");
                    }
                })
            });
            assert!(caught.is_err(), "round {round}: the panic came back");
            for tasks in [2, 3, 8] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                for_each_index(tasks, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn join_moves_results_out_of_both_halves() {
        for n in 0..200usize {
            let (a, b) = join(|| vec![n; n % 7], || format!("{n}"));
            assert_eq!(a, vec![n; n % 7]);
            assert_eq!(b, n.to_string());
        }
    }

    #[test]
    fn map_and_join_return_results_in_order() {
        assert_eq!(
            map(100, |i| i * i),
            (0..100).map(|i| i * i).collect::<Vec<_>>()
        );
        assert_eq!(join(|| 1, || "two"), (1, "two"));
        let (a, (b, c)) = join(|| 1, || join(|| 2, || 3));
        assert_eq!((a, b, c), (1, 2, 3));
    }
}

//! A small thread pool for the engine's parallel loops.
//!
//! One decode step of a 30-layer model runs well over a hundred parallel loops of a few
//! microseconds each, so waking threads through the OS for each would cost more than the work.
//! Workers therefore spin on an epoch counter for a while after each job (a couple of
//! milliseconds: long enough to span the gap between tokens), then sleep on a condition
//! variable so an idle engine leaves the cores to speech recognition and synthesis.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before sleeping.
const SPIN: Duration = Duration::from_millis(2);

/// One parallel loop: tasks `0..n` handed out one at a time.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
}

impl Job<'_> {
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= self.n {
                return;
            }
            (self.f)(i);
        }
    }
}

struct Shared {
    /// Bumped once per job; workers run a job when they see it change.
    epoch: AtomicUsize,
    /// The current job, valid while `pending > 0` (its owner waits for that).
    job: AtomicPtr<Job<'static>>,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    sleeping: AtomicUsize,
    stop: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A fixed set of threads that run [`ThreadPool::for_each`] loops together with the caller.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One loop at a time: sessions on different threads may share the pool.
    submit: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `threads` threads in all, counting the caller (so `threads - 1` are spawned).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            pending: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panic: Mutex::new(None),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("hark-llm-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning an LLM worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            submit: Mutex::new(()),
        }
    }

    /// Threads that run each loop, counting the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every `i` in `0..n` on the pool's threads and the caller; returns when
    /// all are done. A panic in `f` is raised again here.
    pub fn for_each(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n <= 1 {
            (0..n).for_each(f);
            return;
        }
        let _one_at_a_time = self.submit.lock().unwrap_or_else(|e| e.into_inner());
        let job = Job {
            f,
            n,
            next: AtomicUsize::new(0),
        };
        let s = &*self.shared;
        s.pending.store(self.workers.len(), SeqCst);
        // SAFETY: the lifetime is erased only while this function waits for every worker to be
        // done with the job (`pending == 0`), so the pointer never outlives `job`.
        let ptr = &job as *const Job<'_> as *mut Job<'static>;
        s.job.store(ptr, SeqCst);
        s.epoch.fetch_add(1, SeqCst);
        if s.sleeping.load(SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job.work()));
        while s.pending.load(Acquire) != 0 {
            std::hint::spin_loop();
        }
        s.job.store(std::ptr::null_mut(), SeqCst);
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        let theirs = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = theirs {
            std::panic::resume_unwind(p);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: &Shared) {
    // Workers are spawned before the first job, at epoch 0; reading the epoch here instead
    // could miss a job submitted before this thread got going.
    let mut seen = 0;
    loop {
        // Spin, then sleep, until a new job or the stop flag.
        let spin_start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.stop.load(Relaxed) {
                return;
            }
            if s.epoch.load(Acquire) != seen {
                break;
            }
            spins += 1;
            if spins.is_multiple_of(1024) && spin_start.elapsed() > SPIN {
                let guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.sleeping.fetch_add(1, SeqCst);
                let mut guard = guard;
                while s.epoch.load(SeqCst) == seen && !s.stop.load(SeqCst) {
                    guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                s.sleeping.fetch_sub(1, SeqCst);
                drop(guard);
            } else {
                std::hint::spin_loop();
            }
        }
        seen = s.epoch.load(Acquire);
        let job = s.job.load(Acquire);
        if !job.is_null() {
            // SAFETY: the submitter keeps the job alive until `pending` reaches zero, which
            // happens only after this worker's decrement below.
            let job = unsafe { &*job };
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| job.work())) {
                *s.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
            }
        }
        s.pending.fetch_sub(1, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_across_many_loops() {
        let pool = ThreadPool::new(3);
        for n in [0, 1, 2, 7, 100] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..50 {
                pool.for_each(n, &|i| {
                    hits[i].fetch_add(1, Relaxed);
                });
            }
            assert!(hits.iter().all(|h| h.load(Relaxed) == 50));
        }
    }

    #[test]
    fn workers_wake_after_sleeping() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(SPIN * 3);
        let count = AtomicUsize::new(0);
        pool.for_each(64, &|_| {
            count.fetch_add(1, Relaxed);
        });
        assert_eq!(count.load(Relaxed), 64);
    }

    #[test]
    fn a_panicking_task_is_raised_in_the_caller_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.for_each(16, &|i| {
                if i == 9 {
                    panic!("task 9");
                }
            })
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.for_each(16, &|_| {
            count.fetch_add(1, Relaxed);
        });
        assert_eq!(count.load(Relaxed), 16);
    }
}

//! The Verify decisions, in batches: a few threads take the calls that are
//! waiting, decide them together ([`Engine::verify_batch`]: one journal
//! sync and one store flush for the batch) and answer each caller once
//! the batch is on disk.
//!
//! Why not one blocking task per call: each call then woke a pool thread,
//! which waited on the shared sync (a condition variable that wakes every
//! waiter) and woke the async worker again, four switches between threads
//! per decision; under load the machine spent its time switching, not
//! deciding. Here a waiting call costs one hand-over each way, and a batch
//! of any size costs one sync.
//!
//! Calls of a user already in the batch being formed wait for the next
//! one (a batch decides each user once); the per-user locks order them
//! against the other threads' batches and every other update. Each
//! verdict is audited on the deciding thread, before its reply: a caller
//! that hangs up cannot leave a decision unaudited.

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::audit;
use crate::authz::Caller;
use crate::engine::{Engine, LoginContext, Verification, VerifyCall};
use crate::error::Error;
use crate::record::UserName;

/// Most calls decided in one batch: bounds a batch's latency (its
/// decisions run one after another before the one sync) and its memory.
pub const MAX_BATCH: usize = 256;

/// Deciding threads. Two, so that one batch is decided while the sync of
/// the other runs; more would only queue on the same two syncs.
pub const THREADS: usize = 2;

struct Job {
    call: VerifyCall,
    caller: Caller,
    reply: oneshot::Sender<Result<Verification, Error>>,
}

/// The batching deciders of a daemon.
pub struct Decider {
    sender: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Decider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decider").finish_non_exhaustive()
    }
}

impl Decider {
    /// Starts [`THREADS`] deciding threads on `engine`.
    ///
    /// # Errors
    /// When a thread cannot be started.
    pub fn start(engine: &Arc<Engine>) -> Result<Self, Error> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut threads = Vec::with_capacity(THREADS);
        for n in 0..THREADS {
            let (engine, receiver) = (Arc::clone(engine), Arc::clone(&receiver));
            let thread = std::thread::Builder::new()
                .name(format!("otpd-decide-{n}"))
                .spawn(move || run(&engine, &receiver))
                .map_err(|e| Error::Internal(format!("cannot start a deciding thread: {e}")))?;
            threads.push(thread);
        }
        Ok(Self {
            sender: Mutex::new(Some(sender)),
            threads: Mutex::new(threads),
        })
    }

    /// Decides `call` in the next batch; the verdict (when decided) is
    /// audited as `caller`'s.
    ///
    /// # Errors
    /// The decision's error, or `Internal` when the deciders stopped.
    pub async fn verify(&self, call: VerifyCall, caller: Caller) -> Result<Verification, Error> {
        let (reply, answer) = oneshot::channel();
        let sent = match &*self.sender.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(s) => s
                .send(Job {
                    call,
                    caller,
                    reply,
                })
                .is_ok(),
            None => false,
        };
        if !sent {
            return Err(Error::Internal("the deciding threads stopped".into()));
        }
        answer
            .await
            .map_err(|_| Error::Internal("the deciding thread stopped".into()))?
    }
}

impl Drop for Decider {
    /// Stops the threads after the batches they hold, so that the engine
    /// (and the store's lock) is released when the service is gone.
    fn drop(&mut self) {
        drop(
            self.sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// One deciding thread: takes a batch, decides it, answers; until the
/// sender is gone and nothing waits.
fn run(engine: &Engine, receiver: &Mutex<Receiver<Job>>) {
    // Calls of a user that was in the batch being formed.
    let mut later: VecDeque<Job> = VecDeque::new();
    loop {
        let Some(batch) = take_batch(receiver, &mut later) else {
            return;
        };
        // A bug that panics fails this batch's calls (their answers are
        // dropped: the callers get an error, closed), not the thread: the
        // next batches are still decided, as a panicking blocking task
        // failed only its own call before.
        let size = batch.len();
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide(engine, batch))).is_err()
        {
            tracing::error!(
                calls = size,
                "a Verify batch failed (a bug): its calls were refused"
            );
        }
    }
}

/// The next batch: the calls held back from the last one, then what
/// waits in the channel (blocking for the first when there is nothing),
/// each user once, at most [`MAX_BATCH`]. `None` when the sender is gone
/// and nothing is left.
fn take_batch(receiver: &Mutex<Receiver<Job>>, later: &mut VecDeque<Job>) -> Option<Vec<Job>> {
    let mut batch: Vec<Job> = Vec::new();
    let mut users: HashSet<UserName> = HashSet::new();
    let mut held = VecDeque::new();
    while let Some(job) = later.pop_front() {
        if batch.len() < MAX_BATCH && users.insert(job.call.user.clone()) {
            batch.push(job);
        } else {
            held.push_back(job);
        }
    }
    *later = held;
    let rx = if batch.is_empty() {
        receiver.lock().unwrap_or_else(PoisonError::into_inner)
    } else {
        // Held-back calls do not wait for another thread's idle wait.
        match receiver.try_lock() {
            Ok(rx) => rx,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Some(batch),
        }
    };
    let mut closed = false;
    if batch.is_empty() {
        match rx.recv() {
            Ok(job) => {
                users.insert(job.call.user.clone());
                batch.push(job);
            }
            Err(_) => closed = true,
        }
    }
    while !closed && batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => {
                if users.insert(job.call.user.clone()) {
                    batch.push(job);
                } else {
                    later.push_back(job);
                }
            }
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => closed = true,
        }
    }
    drop(rx);
    if closed && batch.is_empty() && later.is_empty() {
        return None;
    }
    Some(batch)
}

/// Decides one batch, audits each verdict, answers each caller.
fn decide(engine: &Engine, batch: Vec<Job>) {
    if batch.is_empty() {
        return;
    }
    let mut calls = Vec::with_capacity(batch.len());
    let mut waiting: Vec<(Caller, UserName, LoginContext, oneshot::Sender<_>)> =
        Vec::with_capacity(batch.len());
    for job in batch {
        waiting.push((
            job.caller,
            job.call.user.clone(),
            job.call.ctx.clone(),
            job.reply,
        ));
        calls.push(job.call);
    }
    let results = engine.verify_batch(calls);
    for ((caller, user, ctx, reply), result) in waiting.into_iter().zip(results) {
        if let Ok(Verification::Done(verdict)) = &result {
            audit::verify(&caller, user.as_str(), &ctx, verdict);
        }
        // A caller that hung up gets nothing; its decision stands (and is
        // audited above).
        let _ = reply.send(result);
    }
}

//! The engine: runs each decision of the core (`otpd_core::ops`) as one
//! atomic update of the store, with the replay watermarks, the master keys
//! and the KDF's working memory around it.
//!
//! Every operation on a user reads, decides and durably writes the record
//! in the store's `update` before it returns, so two concurrent requests
//! never both use one code (the store's compare-and-swap, not a lock here,
//! guarantees it; the striped lock only saves needless retries), and a
//! crash right after a reply never forgets a used code or a failure.
//!
//! The one exception is the slow hash (Argon2id, 19 MiB) of backup codes
//! and app passwords: it runs outside the update, in working memory from a
//! fixed pool, at most one per user and at most [`Engine::kdf_parallelism`]
//! at once; the decision on its result is a second update on the freshly
//! loaded record, so the guarantees above hold for it too.

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use otpd_core::app_password::AppPasswordInput;
use otpd_core::device::DeviceName;
use otpd_core::ops::{self, Attempt, Confirmed, HashJob, HashTarget, Step};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::backup_codes::PlainCode;
use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::error::Error;
use crate::kdf_pool::KdfMemory;
use crate::record::{LastSuccess, UserName, UserRecord};
use crate::secret::Code;
use crate::store::{Store, Write};
use crate::totp::TotpParams;
use crate::watermark::{self, Mark, Watermarks};

mod self_service;
pub use self_service::{SelfChange, SelfDone, SelfKdf, SelfOutcome, SelfStep};

pub use otpd_core::ops::{
    Config as EngineConfig, Decision, EnrollOptions, EnrollStarted, LocalRequester, LoginContext,
    Reason, Rejection, Verdict, Via,
};

/// What was typed, owned (it crosses to the hashing worker).
pub enum Credential {
    /// A TOTP or backup code.
    Code(Code),
    /// An app password.
    AppPassword(AppPasswordInput),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Code(_) => "Credential::Code(<redacted>)",
            Self::AppPassword(_) => "Credential::AppPassword(<redacted>)",
        })
    }
}

impl Credential {
    fn attempt(&self) -> Attempt<'_> {
        match self {
            Self::Code(c) => Attempt::Code(c),
            Self::AppPassword(p) => Attempt::AppPassword(p),
        }
    }
}

/// The answer of the first phase of a Verify.
#[derive(Debug)]
pub enum Verification {
    /// Decided (and recorded).
    Done(Verdict),
    /// The credential needs its slow hash: see [`Engine::verify_kdf`].
    NeedsKdf(KdfAttempt),
}

/// An attempt that passed the gate and awaits its hash. While it exists no
/// other slow check of this user runs; dropping it gives the attempt up
/// without checking or counting it.
pub struct KdfAttempt {
    user: UserName,
    credential: Credential,
    job: HashJob,
    _in_flight: InFlight,
}

/// The name the first release gave it.
pub type BackupAttempt = KdfAttempt;

impl std::fmt::Debug for KdfAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdfAttempt")
            .field("user", &self.user)
            .field("kdf", &self.job.kdf())
            .finish_non_exhaustive()
    }
}

impl KdfAttempt {
    /// The user.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// The answer when the attempt is given up before its check (no KDF
    /// capacity in time): refused unchecked, not counted, retry in a
    /// second.
    pub fn not_checked(self) -> Verdict {
        Verdict::Busy
    }
}

/// Marks a user's slow check as in flight until dropped.
struct InFlight {
    users: Arc<Mutex<HashSet<UserName>>>,
    user: UserName,
}

impl InFlight {
    fn enter(users: &Arc<Mutex<HashSet<UserName>>>, user: &UserName) -> Option<Self> {
        let fresh = users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(user.clone());
        fresh.then(|| Self {
            users: Arc::clone(users),
            user: user.clone(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.user);
    }
}

/// Most backup-code hashes at once, whatever the number of cores: each
/// needs `kdf.m_kib` (19 MiB by default) while hashes keep coming.
pub const MAX_KDF_PARALLELISM: usize = 4;

/// Backup-code hashes at once: one per core, at most
/// [`MAX_KDF_PARALLELISM`].
pub fn default_kdf_parallelism() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, MAX_KDF_PARALLELISM)
}

/// Most memory the backup-code hashes hold at once, in bytes: one working
/// memory of `kdf.m_kib` per hash that may run at once, however many
/// attempts arrive (the rest wait for a permit, holding none). With the
/// defaults: 19 MiB x one per core, at most 4 = 76 MiB.
pub fn kdf_memory_ceiling(kdf: &crate::kdf::KdfParams, parallelism: usize) -> u64 {
    u64::from(kdf.m_kib) * 1024 * parallelism as u64
}

/// State of a user's second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing stored.
    NotEnrolled,
    /// Enrollment started, not confirmed.
    Pending,
    /// Active.
    Active,
    /// Active and locked out for the trusted origins (the local machine
    /// and known hosts); unknown hosts have their own lockout.
    Locked,
}

/// One active device, as `status` shows it (no secret).
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    /// Name.
    pub name: String,
    /// Parameters.
    pub params: TotpParams,
    /// Issuer.
    pub issuer: String,
    /// Unix time of confirmation.
    pub enrolled_at: u64,
    /// Unix time of its last accepted code.
    pub last_used: Option<u64>,
    /// Skew of its last accepted code, seconds.
    pub clock_skew_seconds: i64,
    /// HOTP: the next counter value expected; `None` for TOTP.
    pub hotp_counter: Option<u64>,
    /// TOTP: the clock offset learned from its accepted codes, in steps.
    pub drift_steps: i32,
}

/// One app password, as `app-password list` shows it (no password).
#[derive(Debug, Clone)]
pub struct AppPasswordStatus {
    /// Public id.
    pub id: String,
    /// PAM service.
    pub service: String,
    /// Label.
    pub label: String,
    /// Issued at.
    pub created_at: u64,
    /// Last accepted.
    pub last_used: Option<u64>,
    /// Expiry.
    pub expires_at: Option<u64>,
}

impl From<&otpd_core::app_password::AppPassword> for AppPasswordStatus {
    fn from(p: &otpd_core::app_password::AppPassword) -> Self {
        Self {
            id: p.id.clone(),
            service: p.service.clone(),
            label: p.label.clone(),
            created_at: p.created_at,
            last_used: p.last_used,
            expires_at: p.expires_at,
        }
    }
}

/// The status of one user.
#[derive(Debug, Clone)]
pub struct UserStatus {
    /// Name.
    pub user: String,
    /// State.
    pub state: State,
    /// Parameters of the first active (else the pending) device.
    pub params: Option<TotpParams>,
    /// Unused backup codes.
    pub backup_codes_left: u32,
    /// Consecutive failures.
    pub consecutive_failures: u32,
    /// Unix time the lockout ends, 0 if not locked.
    pub locked_until: u64,
    /// Consecutive failures from unknown remote hosts (all together).
    pub stranger_failures: u32,
    /// Unix time the lockout of unknown remote hosts ends, 0 if none.
    pub strangers_locked_until: u64,
    /// Last accepted credential.
    pub last_success: Option<LastSuccess>,
    /// When the first active device was confirmed, 0 if none.
    pub enrolled_at: u64,
    /// A (re-)enrollment awaits confirmation.
    pub pending: bool,
    /// Its device's name.
    pub pending_device: Option<String>,
    /// Unix time from which it can no longer be confirmed.
    pub pending_expires_at: Option<u64>,
    /// Seconds left to confirm it (0: expired), by the daemon's clock.
    pub pending_seconds_left: u64,
    /// Clock offset seen with the first device's last accepted code.
    pub clock_skew_seconds: i64,
    /// Unix time the store was found to have lost committed writes of this
    /// user (rolled back), 0 if never (or since the last reset).
    pub rolled_back_at: u64,
    /// The active devices.
    pub devices: Vec<DeviceStatus>,
    /// How many app passwords.
    pub app_passwords: u32,
}

/// What the start-up check of the store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCheck {
    /// Users checked.
    pub checked: usize,
    /// More users than the bound are stored: those past it were not
    /// checked (nor counted); each is checked on first use.
    pub more_unchecked: bool,
    /// Users whose record was found rolled back (now or earlier).
    pub rolled_back: Vec<String>,
    /// Users who fail closed: record corrupted or lost.
    pub unreadable: Vec<String>,
}

/// Records one filtered [`Engine::list_page`] call reads at most, matches
/// or not: a filter that matches nobody among a million users costs a
/// hundred bounded calls, never one that reads the whole store.
pub const LIST_SCAN_PER_CALL: usize = 10_000;

/// Which users a listing returns: those matching every filter set (none
/// set: everyone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Locked out, from the trusted origins or from strangers.
    pub locked: bool,
    /// A (re-)enrollment awaits confirmation.
    pub pending: bool,
    /// Enrolled with at most this many backup codes left.
    pub backup_codes_at_most: Option<u32>,
    /// Enrolled with a single device and no backup code left.
    pub no_recovery_path: bool,
}

impl ListFilter {
    /// No filter set: every user.
    pub fn is_everyone(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `s` passes every filter set.
    pub fn matches(&self, s: &UserStatus) -> bool {
        (!self.locked || s.locked_until > 0 || s.strangers_locked_until > 0)
            && (!self.pending || s.pending)
            && self
                .backup_codes_at_most
                .is_none_or(|n| s.is_enrolled() && s.backup_codes_left <= n)
            && (!self.no_recovery_path || s.no_recovery_path())
    }
}

impl UserStatus {
    /// Active or locked: a device is confirmed.
    pub fn is_enrolled(&self) -> bool {
        matches!(self.state, State::Active | State::Locked)
    }

    /// Enrolled with a single device and no backup code left: losing
    /// that device locks the user out.
    pub fn no_recovery_path(&self) -> bool {
        self.is_enrolled()
            && !otpd_core::enforcement::has_recovery_path(
                self.devices.len(),
                usize::try_from(self.backup_codes_left).unwrap_or(usize::MAX),
            )
    }
}

/// One page of the user listing.
#[derive(Debug, Clone, Default)]
pub struct UserPage {
    /// Statuses of the readable users.
    pub users: Vec<UserStatus>,
    /// Names whose records do not open.
    pub unreadable: Vec<String>,
    /// The last name read for the page, when more may follow (with a
    /// filter it may be past the last user returned).
    pub next_after: Option<String>,
}

/// The master keys: records are sealed under `current`; during a key
/// rotation, records not yet re-sealed still open with `previous`.
struct Keys {
    current: Arc<MasterKey>,
    previous: Option<Arc<MasterKey>>,
}

/// What an operation does with the record.
enum Change {
    Keep,
    Save(Box<UserRecord>),
}

/// Per-user locks, by hash of the name. A decision holds its user's stripe
/// while it waits for its syncs (group commit), so two callers whose users
/// share a stripe wait for each other: among 64 callers, 4,096 stripes
/// leave half a colliding pair on average (64 stripes left 31).
/// 4,096 locks: 32 KiB.
const STRIPES: usize = 4096;

/// The stripe of [`Engine`]'s per-user locks that guards `user`.
fn stripe_of(user: &UserName) -> usize {
    let mut h = DefaultHasher::new();
    user.hash(&mut h);
    (h.finish() % STRIPES as u64) as usize
}

/// One Verify of [`Engine::verify_batch`].
#[derive(Debug)]
pub struct VerifyCall {
    /// Whose.
    pub user: UserName,
    /// The code or app password.
    pub credential: Credential,
    /// Where from.
    pub ctx: LoginContext,
}

/// The decision engine.
pub struct Engine {
    store: Box<dyn Store>,
    keys: RwLock<Keys>,
    key_file: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    cfg: EngineConfig,
    stripes: Vec<Mutex<()>>,
    watermarks: Option<Watermarks>,
    kdf_mem: KdfMemory,
    kdf_permits: Arc<Semaphore>,
    kdf_in_flight: Arc<Mutex<HashSet<UserName>>>,
    /// Codes remembered for `[grace]` (memory only: a restart ends them).
    graces: Mutex<otpd_core::grace::Graces>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine on a store, sealing with `key`, telling time by `clock`.
    pub fn new(
        store: Box<dyn Store>,
        key: MasterKey,
        clock: Arc<dyn Clock>,
        cfg: EngineConfig,
    ) -> Self {
        Self {
            store,
            keys: RwLock::new(Keys {
                current: Arc::new(key),
                previous: None,
            }),
            key_file: None,
            clock,
            cfg,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            watermarks: None,
            kdf_mem: KdfMemory::new(default_kdf_parallelism()),
            kdf_permits: Arc::new(Semaphore::new(default_kdf_parallelism())),
            kdf_in_flight: Arc::default(),
            graces: Mutex::default(),
        }
    }

    /// Whether a login of `user` from `ctx` is within a grace (`[grace]`):
    /// an allowed service, the same origin as an accepted code of the same
    /// user less than `seconds` ago. Changes nothing.
    pub fn grace_admits(&self, user: &UserName, ctx: &LoginContext) -> bool {
        let now = self.clock.now();
        self.graces
            .lock()
            .is_ok_and(|g| g.admits(&self.cfg.grace, user, ctx, now))
    }

    /// Remembers an accepted TOTP or backup code for `[grace]` (not an app
    /// password: those serve other services, not interactive logins).
    fn remember_grace(&self, user: &UserName, ctx: &LoginContext, verdict: &Verdict) {
        let by_code = matches!(
            verdict,
            Verdict::Accepted {
                via: ops::Via::Totp { .. } | ops::Via::BackupCode,
                ..
            }
        );
        if by_code && self.cfg.grace.seconds > 0 {
            let now = self.clock.now();
            if let Ok(mut g) = self.graces.lock() {
                g.remember(&self.cfg.grace, user, ctx, now);
            }
        }
    }

    /// Keeps replay watermarks in `watermarks` (see [`crate::watermark`]):
    /// a rolled-back store is detected and cannot make a used code valid
    /// again.
    pub fn with_watermarks(mut self, watermarks: Watermarks) -> Self {
        self.watermarks = Some(watermarks);
        self
    }

    /// The key file `key` came from, and the key of an interrupted
    /// rotation (`<key file>.new`, now current) if there is one: enables
    /// [`Engine::rekey`].
    pub fn with_key_file(mut self, path: PathBuf, rotating_to: Option<MasterKey>) -> Self {
        if let Some(next) = rotating_to {
            let keys = self
                .keys
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let old = std::mem::replace(&mut keys.current, Arc::new(next));
            keys.previous = Some(old);
        }
        self.key_file = Some(path);
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn lock(&self, user: &UserName) -> MutexGuard<'_, ()> {
        // The guarded value is `()`: a poisoned lock protects nothing broken.
        self.stripes[stripe_of(user)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn keys(&self) -> (Arc<MasterKey>, Option<Arc<MasterKey>>) {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (Arc::clone(&keys.current), keys.previous.clone())
    }

    /// Opens a sealed record with the current key, else (during a
    /// rotation) the previous one; says whether it needs re-sealing.
    fn open(&self, user: &UserName, sealed: &[u8]) -> Result<(UserRecord, bool), Error> {
        let (current, previous) = self.keys();
        match UserRecord::open(&current, user, sealed) {
            Ok(rec) => Ok((rec, false)),
            Err(e @ otpd_core::Error::Corrupted { .. }) => match previous {
                Some(old) => Ok((UserRecord::open(&old, user, sealed)?, true)),
                None => {
                    tracing::debug!(user = user.as_str(), "record does not open");
                    Err(e.into())
                }
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The record as stored, checked against its replay watermark.
    fn load(&self, user: &UserName, sealed: Option<&[u8]>) -> Result<Option<UserRecord>, Error> {
        let rec = match sealed {
            None => None,
            Some(sealed) => Some(self.open(user, sealed)?.0),
        };
        let Some(w) = &self.watermarks else {
            return Ok(rec);
        };
        let Some(head) = w.head(user.as_str()) else {
            return Ok(rec);
        };
        let generation = rec.as_ref().map_or(0, |r| r.generation);
        if generation >= head.generation {
            // Not older than its last mark: nothing to reconcile (the
            // common case, decided from memory).
            return Ok(rec);
        }
        let (current, previous) = self.keys();
        let keys: Vec<&MasterKey> = std::iter::once(&*current)
            .chain(previous.as_deref())
            .collect();
        let Some(mark) = w.get(user.as_str(), &keys)? else {
            return Ok(rec);
        };
        let fixed = watermark::reconcile(&mark, rec);
        if fixed.step_raised || fixed.codes_removed > 0 {
            tracing::warn!(
                user = user.as_str(),
                codes_removed = fixed.codes_removed,
                step_raised = fixed.step_raised,
                "record older than its replay watermark; used codes spent again"
            );
        }
        if fixed.rolled_back && mark.rolled_back_at.is_none() {
            self.report_rollback(w, user, mark, generation, fixed.record.is_none());
        }
        fixed.record.ok_or_else(|| Error::RolledBack {
            user: user.to_string(),
        })
    }

    /// Logs (error level, once per incident: the detection is persisted in
    /// the mark until a reset) and audits a rolled-back record.
    fn report_rollback(
        &self,
        w: &Watermarks,
        user: &UserName,
        mark: Mark,
        generation: u64,
        fails_closed: bool,
    ) {
        tracing::error!(
            target: crate::audit::TARGET,
            event = "store_rollback",
            user = user.as_str(),
            record_generation = generation,
            committed_generation = mark.committed,
            fails_closed,
            // A field, not the message: the text format quotes fields only.
            detail = "the store lost committed writes of this user (damaged or restored \
                      store files); replay state restored from the watermarks; see \
                      `otpctl status`",
        );
        let now = self.clock.now();
        let flagged = Mark {
            rolled_back_at: Some(now.max(1)),
            ..mark
        };
        if let Err(e) = w.put(&self.keys().0, flagged, true) {
            tracing::warn!(user = user.as_str(), error = %e, "cannot persist the rollback flag");
        }
    }

    /// Seals `rec` as the next generation, writing its watermark first
    /// (durably: a crash or a full disk after it leaves the code spent,
    /// never valid again). Returns the bytes to store and the mark to note
    /// as committed once they are.
    fn prepare(
        &self,
        user: &UserName,
        rec: &mut UserRecord,
    ) -> Result<(Vec<u8>, Option<Mark>), Error> {
        let key = self.keys().0;
        let Some(w) = &self.watermarks else {
            rec.generation = rec.generation.saturating_add(1);
            return Ok((rec.seal(&key, user, &mut OsRng)?, None));
        };
        let prev = w.head(user.as_str()).unwrap_or_default();
        rec.generation = rec.generation.max(prev.generation).saturating_add(1);
        let sealed = rec.seal(&key, user, &mut OsRng)?;
        let mark = Mark::of_record(user.as_str(), rec, &prev);
        w.put(&key, mark.clone(), true)?;
        Ok((sealed, Some(mark)))
    }

    /// Seals `rec` as the next generation under `key`, and its watermark,
    /// not yet written (a batch writes the marks of many records with one
    /// sync: [`Engine::import_users`]).
    fn seal_next(
        &self,
        user: &UserName,
        rec: &mut UserRecord,
        key: &MasterKey,
    ) -> Result<(Vec<u8>, Option<Mark>), Error> {
        let Some(w) = &self.watermarks else {
            rec.generation = rec.generation.saturating_add(1);
            return Ok((rec.seal(key, user, &mut OsRng)?, None));
        };
        let prev = w.head(user.as_str()).unwrap_or_default();
        rec.generation = rec.generation.max(prev.generation).saturating_add(1);
        let sealed = rec.seal(key, user, &mut OsRng)?;
        Ok((sealed, Some(Mark::of_record(user.as_str(), rec, &prev))))
    }

    /// The watermark of a removal (the journal remembers it, so a
    /// rolled-back store cannot bring the record back).
    fn prepare_removal(&self, user: &UserName) -> Result<Option<Mark>, Error> {
        let Some(w) = &self.watermarks else {
            return Ok(None);
        };
        let prev = w.head(user.as_str()).unwrap_or_default();
        let mark = Mark::of_removal(user.as_str(), &prev);
        w.put(&self.keys().0, mark.clone(), true)?;
        Ok(Some(mark))
    }

    /// A batch's `before_write`: makes the marks staged for the round's
    /// writes durable with one sync, and keeps each as the mark its user's
    /// write goes with (to be noted as committed once the batch is in the
    /// store).
    fn put_staged(
        &self,
        key: &MasterKey,
        staged: &mut [Option<Mark>],
        written: &mut [Option<Mark>],
    ) -> Result<(), Error> {
        let Some(w) = &self.watermarks else {
            return Ok(());
        };
        let mut marks = Vec::new();
        for (slot, kept) in staged.iter_mut().zip(written.iter_mut()) {
            if let Some(mark) = slot.take() {
                *kept = Some(mark.clone());
                marks.push(mark);
            }
        }
        w.put_many(key, marks, true)
    }

    /// [`Engine::mark_committed`] for a batch's marks (already carrying
    /// their committed generation), in one write.
    fn mark_all_committed(&self, key: &MasterKey, committed: Vec<Mark>) {
        if let Some(w) = &self.watermarks
            && let Err(e) = w.put_many(key, committed, false)
        {
            tracing::debug!(error = %e, "commit marks not written");
        }
    }

    /// Notes that the mark's generation is in the store. Not fsynced: if it
    /// is lost, a later rollback of exactly that write is still repaired,
    /// only reported as an incomplete write.
    fn mark_committed(&self, mark: Mark) {
        let Some(w) = &self.watermarks else { return };
        let committed = Mark {
            committed: mark.generation,
            ..mark
        };
        if let Err(e) = w.put(&self.keys().0, committed, false) {
            tracing::debug!(error = %e, "commit mark not written");
        }
    }

    /// Runs `decide` on the user's record as one atomic update of the
    /// store. `decide` may run more than once (when another writer changed
    /// the record in between) and must decide from its argument only.
    fn transact<T>(
        &self,
        user: &UserName,
        mut decide: impl FnMut(Option<UserRecord>) -> Result<(T, Change), Error>,
    ) -> Result<T, Error> {
        let _guard = self.lock(user);
        let mut value = None;
        let mut mark = None;
        self.store.update(user, &mut |sealed| {
            let rec = self.load(user, sealed)?;
            let (v, change) = decide(rec)?;
            let write = match change {
                Change::Keep => Write::Keep,
                Change::Save(mut rec) => {
                    let rec = &mut *rec;
                    rec.drop_expired_pending(self.clock.now(), self.cfg.pending_expiry);
                    let (bytes, m) = self.prepare(user, rec)?;
                    mark = m;
                    Write::Put(bytes)
                }
            };
            value = Some(v);
            Ok(write)
        })?;
        if let Some(mark) = mark {
            self.mark_committed(mark);
        }
        value.ok_or_else(|| Error::Internal("the store's update decided nothing".into()))
    }

    /// Changes an existing record with `f` (a user without one is
    /// `NotEnrolled`).
    fn modify<T>(
        &self,
        user: &UserName,
        mut f: impl FnMut(&mut UserRecord) -> Result<T, otpd_core::Error>,
    ) -> Result<T, Error> {
        self.transact(user, |rec| {
            let mut rec = rec.ok_or_else(|| not_enrolled(user))?;
            let v = f(&mut rec)?;
            Ok((v, Change::Save(Box::new(rec))))
        })
    }

    /// Checks a credential, first phase: the gate, then TOTP codes (all
    /// devices), or the app password's lookup. Refusals are verdicts;
    /// errors are for malformed state.
    ///
    /// If the credential needs its slow hash (a backup code, an app
    /// password), the answer is [`Verification::NeedsKdf`] and nothing is
    /// recorded yet: the caller takes a permit of [`Engine::kdf_permits`]
    /// and passes the attempt to [`Engine::verify_kdf`], or drops it
    /// (refused unchecked). One slow check per user is in flight at a
    /// time; others are refused unchecked (busy), so one user cannot queue
    /// up work.
    pub fn verify_credential(
        &self,
        user: &UserName,
        credential: Credential,
        ctx: &LoginContext,
    ) -> Result<Verification, Error> {
        let now = self.clock.now();
        let mut slot = None;
        let step = self.transact(user, |rec| {
            let Some(mut rec) = rec else {
                return Ok((
                    Step::Done {
                        verdict: Verdict::NotEnrolled,
                        changed: false,
                    },
                    Change::Keep,
                ));
            };
            let mut step = ops::verify(
                &mut rec,
                credential.attempt(),
                ctx,
                now,
                &self.cfg,
                &mut || {
                    if slot.is_none() {
                        slot = InFlight::enter(&self.kdf_in_flight, user);
                    }
                    slot.is_some()
                },
            );
            ops::remind(&mut step, &mut rec, now, &self.cfg);
            let change = match &step {
                Step::Done { changed: true, .. } => Change::Save(Box::new(rec)),
                _ => Change::Keep,
            };
            Ok((step, change))
        })?;
        match step {
            Step::Done { verdict, .. } => {
                self.remember_grace(user, ctx, &verdict);
                Ok(Verification::Done(verdict))
            }
            Step::Hash(job) => {
                let slot =
                    slot.ok_or_else(|| Error::Internal("hash requested without a slot".into()))?;
                Ok(Verification::NeedsKdf(KdfAttempt {
                    user: user.clone(),
                    credential,
                    job,
                    _in_flight: slot,
                }))
            }
        }
    }

    /// Many first phases of Verify ([`Engine::verify_credential`]) as one
    /// batch: each decided as atomically as alone, all made durable
    /// together (one journal sync and one store flush for the batch, group
    /// commit), so that under load a decision costs a fraction of a sync.
    /// No result is returned before every write of the batch is on disk.
    ///
    /// A user must appear at most once in a batch (the caller puts a
    /// second call of the same user into a later batch): two decisions of
    /// one user in one round would stage two watermarks for one
    /// generation. Such an entry is refused with an internal error.
    ///
    /// Returns one result per call, in order. When the batch cannot be made
    /// durable (the journal or the store failed), every call fails with
    /// that error (nothing of the batch is known to be written: fail
    /// closed).
    pub fn verify_batch(&self, calls: Vec<VerifyCall>) -> Vec<Result<Verification, Error>> {
        let now = self.clock.now();
        let key = self.keys().0;
        let users: Vec<UserName> = calls.iter().map(|c| c.user.clone()).collect();
        let mut seen = HashSet::with_capacity(users.len());
        let twice: Vec<bool> = users.iter().map(|u| !seen.insert(u)).collect();
        // The users' stripes, in ascending order (a single decision holds
        // one stripe at most: no lock cycle), each once.
        let mut stripes: Vec<usize> = users.iter().map(stripe_of).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards: Vec<MutexGuard<'_, ()>> = stripes
            .iter()
            .map(|&i| {
                self.stripes[i]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            })
            .collect();
        let mut steps: Vec<Option<Step>> = (0..calls.len()).map(|_| None).collect();
        let mut slots: Vec<Option<InFlight>> = (0..calls.len()).map(|_| None).collect();
        let staged: std::cell::RefCell<Vec<Option<Mark>>> =
            std::cell::RefCell::new(vec![None; calls.len()]);
        let mut written: Vec<Option<Mark>> = vec![None; calls.len()];
        let results = self.store.update_batch(
            &users,
            &mut |i, sealed| {
                let user = &users[i];
                if twice[i] {
                    return Err(Error::Internal(format!(
                        "user {:?} is in a verify batch twice",
                        user.as_str()
                    )));
                }
                let Some(mut rec) = self.load(user, sealed)? else {
                    steps[i] = Some(Step::Done {
                        verdict: Verdict::NotEnrolled,
                        changed: false,
                    });
                    return Ok(Write::Keep);
                };
                let slot = &mut slots[i];
                let call = &calls[i];
                let mut step = ops::verify(
                    &mut rec,
                    call.credential.attempt(),
                    &call.ctx,
                    now,
                    &self.cfg,
                    &mut || {
                        if slot.is_none() {
                            *slot = InFlight::enter(&self.kdf_in_flight, user);
                        }
                        slot.is_some()
                    },
                );
                ops::remind(&mut step, &mut rec, now, &self.cfg);
                let write = if let Step::Done { changed: true, .. } = &step {
                    rec.drop_expired_pending(now, self.cfg.pending_expiry);
                    let (bytes, mark) = self.seal_next(user, &mut rec, &key)?;
                    staged.borrow_mut()[i] = mark;
                    Write::Put(bytes)
                } else {
                    Write::Keep
                };
                steps[i] = Some(step);
                Ok(write)
            },
            &mut || self.put_staged(&key, &mut staged.borrow_mut(), &mut written),
        );
        let results = match results {
            Ok(results) => results,
            Err(e) => {
                let shared: Vec<_> = (1..calls.len()).map(|_| Err(e.duplicate())).collect();
                return std::iter::once(Err(e)).chain(shared).collect();
            }
        };
        let mut committed = Vec::new();
        let out = results
            .into_iter()
            .zip(calls)
            .zip(steps.into_iter().zip(slots))
            .zip(written)
            .map(|(((r, call), (step, slot)), mark)| {
                r?;
                if let Some(mark) = mark {
                    committed.push(Mark {
                        committed: mark.generation,
                        ..mark
                    });
                }
                match step {
                    None => Err(Error::Internal("the store's update decided nothing".into())),
                    Some(Step::Done { verdict, .. }) => {
                        self.remember_grace(&call.user, &call.ctx, &verdict);
                        Ok(Verification::Done(verdict))
                    }
                    Some(Step::Hash(job)) => {
                        let slot = slot.ok_or_else(|| {
                            Error::Internal("hash requested without a slot".into())
                        })?;
                        Ok(Verification::NeedsKdf(KdfAttempt {
                            user: call.user,
                            credential: call.credential,
                            job,
                            _in_flight: slot,
                        }))
                    }
                }
            })
            .collect();
        self.mark_all_committed(&key, committed);
        out
    }

    /// [`Engine::verify_credential`] for a code.
    pub fn verify(
        &self,
        user: &UserName,
        code: &Code,
        ctx: &LoginContext,
    ) -> Result<Verification, Error> {
        self.verify_credential(user, Credential::Code(code.clone()), ctx)
    }

    /// Checks a credential, second phase: hashes the attempt (outside the
    /// store's update, in memory from the pool), then in one update on the
    /// freshly loaded record checks the gate again (an attempt refused now
    /// is not checked and not counted) and decides. Blocks: run it off the
    /// async workers, holding a permit of [`Engine::kdf_permits`].
    pub fn verify_kdf(&self, attempt: KdfAttempt, ctx: &LoginContext) -> Result<Verdict, Error> {
        let hashed = match (&attempt.job.target, &attempt.credential) {
            (HashTarget::BackupCode(probe), Credential::Code(code)) => {
                probe.hash(code.as_bytes(), &self.kdf_mem)
            }
            (HashTarget::AppPassword(probe), Credential::AppPassword(input)) => {
                probe.hash(input, &self.kdf_mem)
            }
            _ => return Err(Error::Internal("hash job and credential differ".into())),
        };
        let now = self.clock.now();
        let user = &attempt.user;
        let verdict = self.transact(user, |rec| {
            let Some(mut rec) = rec else {
                return Ok((Verdict::NotEnrolled, Change::Keep));
            };
            let mut step = ops::finish(
                &mut rec,
                &attempt.job,
                hashed.as_ref().ok(),
                ctx,
                now,
                &self.cfg,
            );
            ops::remind(&mut step, &mut rec, now, &self.cfg);
            match step {
                Step::Done {
                    verdict,
                    changed: true,
                } => Ok((verdict, Change::Save(Box::new(rec)))),
                Step::Done {
                    verdict,
                    changed: false,
                } => Ok((verdict, Change::Keep)),
                Step::Hash(_) => Err(Error::Internal(
                    "second phase asked for another hash".into(),
                )),
            }
        })?;
        // A hash that failed was counted as a failure; now report it.
        hashed.map_err(Error::from)?;
        self.remember_grace(user, ctx, &verdict);
        Ok(verdict)
    }

    /// The name the first release gave [`Engine::verify_kdf`].
    pub fn verify_backup_code(
        &self,
        attempt: KdfAttempt,
        ctx: &LoginContext,
    ) -> Result<Verdict, Error> {
        self.verify_kdf(attempt, ctx)
    }

    /// Starts an enrollment (a fresh one, or a further device) in the
    /// pending state.
    pub fn enroll_start(
        &self,
        user: &UserName,
        opts: EnrollOptions,
    ) -> Result<EnrollStarted, Error> {
        let now = self.clock.now();
        self.transact(user, |rec| {
            let mut rec = rec.unwrap_or_else(UserRecord::new);
            let started =
                ops::enroll_start(&mut rec, user, opts.clone(), now, &self.cfg, &mut OsRng)?;
            Ok((started, Change::Save(Box::new(rec))))
        })
    }

    /// Confirms the pending enrollment with a current code.
    pub fn enroll_confirm(&self, user: &UserName, code: &Code) -> Result<Confirmed, Error> {
        let now = self.clock.now();
        self.transact(user, |rec| {
            let mut rec = rec.ok_or_else(|| otpd_core::Error::NoPendingEnrollment {
                user: user.to_string(),
            })?;
            let confirmed = ops::enroll_confirm(
                &mut rec,
                user,
                code,
                now,
                &self.cfg,
                &mut OsRng,
                &self.kdf_mem,
            )?;
            Ok((confirmed, Change::Save(Box::new(rec))))
        })
        .inspect(|_| self.forget_grace(user))
    }

    /// Ends the user's grace for sudo/su at once: their factors changed
    /// (a new enrollment, a removed device, a reset).
    fn forget_grace(&self, user: &UserName) {
        if let Ok(mut g) = self.graces.lock() {
            g.forget(user);
        }
    }

    /// Imports a device moved over from another tool (see
    /// [`ops::import_device`]); with `dry_run` decides without writing.
    pub fn import_device(
        &self,
        user: &UserName,
        import: ops::Import,
        dry_run: bool,
    ) -> Result<ops::Imported, Error> {
        let now = self.clock.now();
        self.transact(user, |rec| {
            let mut rec = rec.unwrap_or_else(UserRecord::new);
            let imported = ops::import_device(
                &mut rec,
                user,
                import.clone(),
                now,
                &self.cfg,
                &mut OsRng,
                &self.kdf_mem,
            )?;
            let change = if dry_run {
                Change::Keep
            } else {
                Change::Save(Box::new(rec))
            };
            Ok((imported, change))
        })
    }

    /// One active device's key and parameters (see [`ops::export_device`]);
    /// `None`: the first. Reads only.
    pub fn export_device(
        &self,
        user: &UserName,
        device: Option<&DeviceName>,
    ) -> Result<ops::Exported, Error> {
        let sealed = self.store.get(user)?;
        let rec = self
            .load(user, sealed.as_deref())?
            .ok_or_else(|| not_enrolled(user))?;
        Ok(ops::export_device(&rec, user, device)?)
    }

    /// Imports many users (a bulk import: a million pam_oath users), each
    /// with all of its devices in one decision ([`ops::import_devices`]),
    /// each as atomic as [`Engine::import_device`], the whole batch made
    /// durable together: the replay watermarks of the batch with one sync
    /// before any record of the batch is written, the records with one
    /// sync after. One result per user, in order: a user's failure (already
    /// enrolled, a bad key, listed twice) never fails the others. With
    /// `dry_run` decides without writing (and without syncing).
    ///
    /// `Err`: the batch as a whole failed (the store or the watermark
    /// journal); no user of it is known to be imported. Importing again
    /// is safe.
    pub fn import_users(
        &self,
        batch: Vec<(UserName, Vec<ops::Import>)>,
        dry_run: bool,
    ) -> Result<Vec<Result<ops::ImportedDevices, Error>>, Error> {
        let now = self.clock.now();
        let key = self.keys().0;
        let (users, imports): (Vec<UserName>, Vec<Vec<ops::Import>>) = batch.into_iter().unzip();
        let mut first = std::collections::HashMap::with_capacity(users.len());
        let twice: Vec<bool> = users
            .iter()
            .enumerate()
            .map(|(i, u)| *first.entry(u.as_str()).or_insert(i) != i)
            .collect();
        let mut values: Vec<Option<ops::ImportedDevices>> = vec![None; users.len()];
        // Per user: the mark of its decided write, staged until
        // `before_write` makes the round's marks durable; then the mark to
        // note as committed.
        let staged: std::cell::RefCell<Vec<Option<Mark>>> =
            std::cell::RefCell::new(vec![None; users.len()]);
        let mut written: Vec<Option<Mark>> = vec![None; users.len()];
        let results = self.store.update_batch(
            &users,
            &mut |i, sealed| {
                let user = &users[i];
                if twice[i] {
                    return Err(otpd_core::Error::InvalidArgument(format!(
                        "user {:?} is listed more than once in this batch",
                        user.as_str()
                    ))
                    .into());
                }
                let mut rec = self.load(user, sealed)?.unwrap_or_else(UserRecord::new);
                let imported = ops::import_devices(
                    &mut rec,
                    user,
                    imports[i].clone(),
                    now,
                    &self.cfg,
                    &mut OsRng,
                    &self.kdf_mem,
                )?;
                values[i] = Some(imported);
                if dry_run {
                    return Ok(Write::Keep);
                }
                let (bytes, mark) = self.seal_next(user, &mut rec, &key)?;
                staged.borrow_mut()[i] = mark;
                Ok(Write::Put(bytes))
            },
            &mut || self.put_staged(&key, &mut staged.borrow_mut(), &mut written),
        )?;
        let mut committed = Vec::new();
        let out = results
            .into_iter()
            .zip(values)
            .zip(written)
            .map(|((r, value), mark)| {
                r?;
                if let Some(mark) = mark {
                    committed.push(Mark {
                        committed: mark.generation,
                        ..mark
                    });
                }
                value.ok_or_else(|| Error::Internal("the store's update decided nothing".into()))
            })
            .collect();
        self.mark_all_committed(&key, committed);
        Ok(out)
    }

    /// The user's record as opened and checked against its replay
    /// watermark (`None`: no record), for a backup.
    pub fn record(&self, user: &UserName) -> Result<Option<UserRecord>, Error> {
        let sealed = self.store.get(user)?;
        self.load(user, sealed.as_deref())
    }

    /// Names of the users in the store (and those the watermarks say
    /// should be there) after `after`, at most `limit`, in name order.
    pub fn user_names(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, Error> {
        self.known_users(after, limit)
    }

    /// Restores one user's record from a backup over what the store holds
    /// (see [`otpd_core::backup::merge`]: replay watermarks never move
    /// backwards), as one atomic update; with `dry_run` decides without
    /// writing.
    pub fn restore_user(
        &self,
        user: &UserName,
        record: UserRecord,
        dry_run: bool,
    ) -> Result<otpd_core::backup::Merged, Error> {
        self.transact(user, |stored| {
            let merged = otpd_core::backup::merge(stored.as_ref(), record.clone());
            let change = if dry_run {
                Change::Keep
            } else {
                Change::Save(Box::new(merged.record.clone()))
            };
            Ok((merged, change))
        })
    }

    /// Renames a device.
    pub fn rename_device(
        &self,
        user: &UserName,
        old: &DeviceName,
        new: &DeviceName,
    ) -> Result<(), Error> {
        self.modify(user, |rec| ops::rename_device(rec, user, old, new.clone()))
    }

    /// Removes a device; returns how many active ones are left.
    pub fn remove_device(
        &self,
        user: &UserName,
        name: &DeviceName,
        allow_last: bool,
    ) -> Result<usize, Error> {
        self.modify(user, |rec| ops::remove_device(rec, user, name, allow_last))
            .inspect(|_| self.forget_grace(user))
    }

    /// Issues an app password; returns it (shown once) and its listing.
    pub fn add_app_password(
        &self,
        user: &UserName,
        service: &str,
        label: &str,
        expires_in: Option<u64>,
    ) -> Result<(Zeroizing<String>, AppPasswordStatus), Error> {
        let now = self.clock.now();
        self.transact(user, |rec| {
            let mut rec = rec.unwrap_or_else(UserRecord::new);
            let (shown, stored) = ops::add_app_password(
                &mut rec,
                user,
                service,
                label,
                expires_in,
                now,
                &self.cfg,
                &mut OsRng,
                &self.kdf_mem,
            )?;
            Ok((
                (shown, AppPasswordStatus::from(&stored)),
                Change::Save(Box::new(rec)),
            ))
        })
    }

    /// The user's app passwords.
    pub fn app_passwords(&self, user: &UserName) -> Result<Vec<AppPasswordStatus>, Error> {
        let sealed = self.store.get(user)?;
        let rec = self.load(user, sealed.as_deref())?.unwrap_or_default();
        Ok(rec
            .app_passwords
            .iter()
            .map(AppPasswordStatus::from)
            .collect())
    }

    /// Revokes an app password.
    pub fn revoke_app_password(&self, user: &UserName, id: &str) -> Result<(), Error> {
        self.transact(user, |rec| {
            let mut rec = rec.ok_or_else(|| otpd_core::Error::NoSuchAppPassword {
                user: user.to_string(),
                id: id.to_owned(),
            })?;
            ops::revoke_app_password(&mut rec, user, id)?;
            Ok(((), Change::Save(Box::new(rec))))
        })
    }

    /// Issues new backup codes; all earlier ones become invalid.
    pub fn regenerate_backup_codes(&self, user: &UserName) -> Result<Vec<PlainCode>, Error> {
        self.modify(user, |rec| {
            ops::regenerate_backup_codes(rec, user, &self.cfg, &mut OsRng, &self.kdf_mem)
        })
    }

    /// Clears lockout, throttle and failure counters (of trusted and
    /// unknown origins alike).
    pub fn unlock(&self, user: &UserName) -> Result<(), Error> {
        self.modify(user, |rec| {
            ops::unlock(rec);
            Ok(())
        })
    }

    /// Removes everything about the user. Works on a corrupted record too.
    pub fn reset(&self, user: &UserName) -> Result<(), Error> {
        self.forget_grace(user);
        let lost = self
            .watermarks
            .as_ref()
            .and_then(|w| w.head(user.as_str()))
            .is_some_and(|m| !m.removed);
        let _guard = self.lock(user);
        let mut mark = None;
        let mut found = true;
        self.store.update(user, &mut |sealed| {
            if sealed.is_none() && !lost {
                found = false;
                return Ok(Write::Keep);
            }
            mark = self.prepare_removal(user)?;
            Ok(Write::Remove)
        })?;
        if !found {
            return Err(not_enrolled(user).into());
        }
        if let Some(mark) = mark {
            self.mark_committed(mark);
        }
        Ok(())
    }

    /// The engine's clock, Unix seconds (for the enforcement policy's
    /// deadline).
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The status of one user (state NotEnrolled if unknown).
    pub fn status(&self, user: &UserName) -> Result<UserStatus, Error> {
        let sealed = self.store.get(user)?;
        let rec = self.load(user, sealed.as_deref())?.unwrap_or_default();
        Ok(self.status_of(user.as_str(), &rec))
    }

    /// Status of every stored user, and the names whose records do not open.
    pub fn list(&self) -> Result<(Vec<UserStatus>, Vec<String>), Error> {
        let page = self.list_page(None, usize::MAX, &ListFilter::default())?;
        Ok((page.users, page.unreadable))
    }

    /// Up to `limit` users after `after` that pass `filter`, in name
    /// order. With a filter, at most [`LIST_SCAN_PER_CALL`] records are
    /// read (the page may then be short, or empty, with `next_after` set),
    /// and records that do not open are not reported.
    pub fn list_page(
        &self,
        after: Option<&str>,
        limit: usize,
        filter: &ListFilter,
    ) -> Result<UserPage, Error> {
        let mut page = UserPage::default();
        let everyone = filter.is_everyone();
        let scan = if everyone { limit } else { LIST_SCAN_PER_CALL };
        let names = self.known_users(after, scan)?;
        let mut more = names.len() >= scan;
        let last = names.len();
        for (i, name) in names.into_iter().enumerate() {
            page.next_after = Some(name.clone());
            let Ok(user) = UserName::parse(name.as_bytes()) else {
                if everyone {
                    page.unreadable.push(name);
                }
                continue;
            };
            match self.status(&user) {
                Ok(s) if filter.matches(&s) => page.users.push(s),
                Ok(_) => {}
                Err(Error::Core(
                    otpd_core::Error::Corrupted { .. } | otpd_core::Error::NewerRecord { .. },
                ))
                | Err(Error::RolledBack { .. }) => {
                    if everyone {
                        page.unreadable.push(name);
                    }
                }
                Err(e) => return Err(e),
            }
            if page.users.len() >= limit && i + 1 < last {
                more = true;
                break;
            }
        }
        if !more {
            page.next_after = None;
        }
        Ok(page)
    }

    fn status_of(&self, user: &str, rec: &UserRecord) -> UserStatus {
        let now = self.clock.now();
        let locked_until = if rec.counters.locked_until > now {
            rec.counters.locked_until
        } else {
            0
        };
        let enrolled = rec.is_enrolled();
        let state = match (enrolled, &rec.pending) {
            (true, _) if locked_until > 0 => State::Locked,
            (true, _) => State::Active,
            (false, Some(_)) => State::Pending,
            (false, None) => State::NotEnrolled,
        };
        let first = rec.devices.first();
        UserStatus {
            user: user.to_owned(),
            state,
            params: first
                .or(rec.pending.as_ref().map(|p| &p.device))
                .map(|d| d.params),
            backup_codes_left: rec
                .backup_codes
                .as_ref()
                .filter(|_| enrolled)
                .map_or(0, |s| u32::try_from(s.remaining()).unwrap_or(u32::MAX)),
            consecutive_failures: rec.counters.consecutive_failures,
            locked_until,
            stranger_failures: rec.stranger_counters.consecutive_failures,
            strangers_locked_until: if rec.stranger_counters.locked_until > now {
                rec.stranger_counters.locked_until
            } else {
                0
            },
            last_success: rec.last_success.clone(),
            enrolled_at: first.map_or(0, |d| d.enrolled_at),
            pending: rec.pending.is_some(),
            pending_device: rec.pending.as_ref().map(|p| p.device.name.to_string()),
            pending_expires_at: rec
                .pending
                .as_ref()
                .map(|p| p.expires_at(self.cfg.pending_expiry)),
            pending_seconds_left: rec
                .pending
                .as_ref()
                .map_or(0, |p| p.seconds_left(now, self.cfg.pending_expiry)),
            clock_skew_seconds: first.map_or(0, |d| d.clock_skew_seconds),
            rolled_back_at: self
                .watermarks
                .as_ref()
                .and_then(|w| w.head(user))
                .and_then(|m| m.rolled_back_at)
                .unwrap_or(0),
            devices: rec
                .devices
                .iter()
                .map(|d| DeviceStatus {
                    name: d.name.to_string(),
                    params: d.params,
                    issuer: d.issuer.clone(),
                    enrolled_at: d.enrolled_at,
                    last_used: d.last_used_at,
                    clock_skew_seconds: d.clock_skew_seconds,
                    drift_steps: d.drift_steps,
                    hotp_counter: (d.kind == otpd_core::device::Kind::Hotp)
                        .then(|| d.last_used_step.map_or(0, |c| c.saturating_add(1))),
                })
                .collect(),
            app_passwords: u32::try_from(rec.app_passwords.len()).unwrap_or(u32::MAX),
        }
    }

    /// Users in the store, and users the watermarks say should be there,
    /// after `after`, at most `limit`.
    /// Both sources are read as ranges: a page costs the same at a
    /// million users as at ten.
    fn known_users(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, Error> {
        let mut names = self.store.list(after, limit)?;
        if let Some(w) = &self.watermarks {
            names.extend(w.present_after(after, limit));
            names.sort_unstable();
            names.dedup();
            names.truncate(limit);
        }
        Ok(names)
    }

    /// Checks up to `limit` users against their watermarks (at start),
    /// reporting rolled-back records.
    pub fn check_store(&self, limit: usize) -> Result<StoreCheck, Error> {
        // One name past the bound says whether any were left unchecked;
        // they are not counted: walking every key of a million-user store
        // at start would leave about 100 MiB resident in sled.
        let mut names = self.known_users(None, limit.saturating_add(1))?;
        let mut check = StoreCheck {
            more_unchecked: names.len() > limit,
            ..StoreCheck::default()
        };
        names.truncate(limit);
        for name in names {
            check.checked += 1;
            let Ok(user) = UserName::parse(name.as_bytes()) else {
                check.unreadable.push(name);
                continue;
            };
            match self.status(&user) {
                Ok(s) if s.rolled_back_at > 0 => check.rolled_back.push(name),
                Ok(_) => {}
                Err(Error::Core(
                    otpd_core::Error::Corrupted { .. } | otpd_core::Error::NewerRecord { .. },
                )) => check.unreadable.push(name),
                Err(Error::RolledBack { .. }) => {
                    check.rolled_back.push(name.clone());
                    check.unreadable.push(name);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(check)
    }

    /// Rotates the master key without downtime: writes a new key beside
    /// the old one (`<key file>.new`, or reuses it when an earlier rotation
    /// was interrupted), seals everything new under it, re-seals every
    /// record (still opening old ones with the old key meanwhile) and the
    /// watermark journal, and only then replaces the key file. A crash at
    /// any point loses nothing: at start otpd loads both keys and a new
    /// `rekey` finishes the job. Returns the number of records re-sealed.
    pub fn rekey(&self) -> Result<u64, Error> {
        let Some(path) = self.key_file.clone() else {
            return Err(Error::Internal(
                "this engine has no key file to rotate".into(),
            ));
        };
        let next_path = crate::keyfile::next_path(&path);
        let next = crate::keyfile::load_or_create(&next_path)?;
        {
            let mut keys = self
                .keys
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if keys.current.id() != next.id() {
                let old = std::mem::replace(&mut keys.current, Arc::new(next));
                keys.previous = Some(old);
            }
        }
        let mut resealed = 0u64;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(after.as_deref(), crate::store::USERS_PAGE)?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for name in page {
                let Ok(user) = UserName::parse(name.as_bytes()) else {
                    continue;
                };
                let _guard = self.lock(&user);
                let mut changed = false;
                self.store.update(&user, &mut |sealed| {
                    changed = false;
                    let Some(sealed) = sealed else {
                        return Ok(Write::Keep);
                    };
                    match self.open(&user, sealed) {
                        Ok((rec, true)) => {
                            changed = true;
                            Ok(Write::Put(rec.seal(&self.keys().0, &user, &mut OsRng)?))
                        }
                        Ok((_, false)) => Ok(Write::Keep),
                        // A record no key opens stays as it is (it fails
                        // closed either way; `otpctl reset` clears it).
                        Err(_) => Ok(Write::Keep),
                    }
                })?;
                resealed += u64::from(changed);
            }
            after = Some(last);
        }
        if let Some(w) = &self.watermarks {
            let (current, previous) = self.keys();
            let keys: Vec<&MasterKey> = std::iter::once(&*current)
                .chain(previous.as_deref())
                .collect();
            w.reseal(&current, &keys)?;
        }
        crate::keyfile::promote(&next_path, &path)?;
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .previous = None;
        tracing::info!(
            records = resealed,
            "master key rotated; the old key is gone"
        );
        Ok(resealed)
    }

    /// The semaphore that bounds concurrent slow hashes: take a permit
    /// (waiting asynchronously) before [`Engine::verify_kdf`]. It has
    /// [`Engine::kdf_parallelism`] permits, as many as there are working
    /// memories.
    pub fn kdf_permits(&self) -> &Arc<Semaphore> {
        &self.kdf_permits
    }

    /// Slow checks waiting for or doing their hash (one per user at most).
    pub fn backup_codes_in_flight(&self) -> usize {
        self.kdf_in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Gives the working memory of slow hashes back to the system once
    /// nobody used it for `idle`; returns how many buffers remain.
    pub fn release_idle_kdf_memory(&self, idle: std::time::Duration) -> usize {
        self.kdf_mem.release_idle(idle)
    }

    /// Buffers of KDF working memory that exist now.
    pub fn kdf_memory_held(&self) -> usize {
        self.kdf_mem.held()
    }

    /// How many slow hashes may run at once.
    pub fn kdf_parallelism(&self) -> usize {
        self.kdf_mem.buffers()
    }
}

fn not_enrolled(user: &UserName) -> otpd_core::Error {
    otpd_core::Error::NotEnrolled {
        user: user.to_string(),
    }
}

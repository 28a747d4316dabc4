//! The decisions: enrollment, verification, backup codes, unlock, reset.
//!
//! Every operation on a user runs under that user's lock and reads, decides
//! and durably writes the record before it returns, so two concurrent
//! requests never both use one code, and a crash right after a reply never
//! forgets a used code or a failure.
//!
//! The one exception is the backup-code hash (Argon2id, 19 MiB): it runs
//! without the lock, in working memory from a fixed pool, at most one per
//! user and at most [`Engine::kdf_parallelism`] at once; the decision on
//! its result is taken under the lock on the freshly loaded record, so the
//! guarantees above hold for it too.

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::backup_codes::{BackupCodeSet, KdfMemory, KdfParams, PlainCode, Probe};
use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::error::Error;
use crate::policy::{Gate, Policy};
use crate::record::{Bucket, Enrollment, LastSuccess, Method, UserName, UserRecord};
use crate::secret::{Code, TotpSecret};
use crate::store::Store;
use crate::totp::{self, Algorithm, TotpMatch, TotpParams};
use crate::watermark::{self, Mark, Watermarks};

/// Settings the engine decides with (from the configuration).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Throttle and lockout.
    pub policy: Policy,
    /// Acceptance window, ± steps.
    pub window: u32,
    /// Parameters of new enrollments unless the request says otherwise.
    pub defaults: TotpParams,
    /// Issuer of new enrollments unless the request says otherwise.
    pub issuer: String,
    /// Cost of hashing backup codes.
    pub kdf: KdfParams,
    /// Warn when this many backup codes or fewer are left.
    pub backup_codes_low: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            window: 1,
            defaults: TotpParams::default(),
            issuer: "otpd".into(),
            kdf: KdfParams::default(),
            backup_codes_low: 3,
        }
    }
}

/// What a Verify caller tells the daemon besides user and code.
#[derive(Debug, Clone, Default)]
pub struct LoginContext {
    /// PAM service.
    pub service: String,
    /// PAM_RHOST.
    pub remote_host: String,
    /// PAM_TTY.
    pub tty: String,
    /// Who runs the PAM stack on this machine, as a root caller (the PAM
    /// module) vouches; `None` when not told or not trusted.
    pub requester: Option<LocalRequester>,
}

/// The process that runs the PAM stack, as the PAM module reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRequester {
    /// Its real uid (the invoking user of su and sudo; 0 for sshd, login).
    pub uid: u32,
    /// Whether `uid` is the uid of the account being verified.
    pub is_target_user: bool,
}

impl LoginContext {
    /// The counters that judge this attempt on `rec`. A login on this
    /// machine (empty remote host) driven by another non-root local user
    /// (`su victim`, `sudo -u victim` with a target password) is a
    /// stranger's: it must not lock the user out of the console and their
    /// known hosts. Without a requester, the remote host decides.
    fn bucket(&self, rec: &UserRecord) -> Bucket {
        let foreign_local = self.remote_host.is_empty()
            && self
                .requester
                .is_some_and(|r| r.uid != 0 && !r.is_target_user);
        if foreign_local {
            Bucket::Strangers
        } else {
            rec.bucket_of(&self.remote_host)
        }
    }
}

/// The decision on a Verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The code was valid; it is now used.
    Accepted,
    /// Wrong or replayed code.
    Rejected,
    /// Locked out; not checked.
    Locked,
    /// Throttled; not checked.
    Throttled,
    /// No active enrollment.
    NotEnrolled,
}

/// Why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Accepted.
    Ok,
    /// Matches nothing.
    WrongCode,
    /// The time step was already used.
    Replayed,
    /// Matches a step outside the window.
    ClockSkew,
    /// Locked out.
    Locked,
    /// Throttled.
    Throttled,
    /// No active enrollment.
    NotEnrolled,
}

impl Reason {
    /// Name used in audit events and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::WrongCode => "wrong_code",
            Self::Replayed => "replayed",
            Self::ClockSkew => "clock_skew",
            Self::Locked => "locked",
            Self::Throttled => "throttled",
            Self::NotEnrolled => "not_enrolled",
        }
    }
}

/// The full answer to a Verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Accepted or why not.
    pub decision: Decision,
    /// Detail.
    pub reason: Reason,
    /// Set when accepted.
    pub method: Option<Method>,
    /// Backup codes left (when accepted).
    pub backup_codes_left: u32,
    /// Seconds until the next attempt is checked (locked/throttled).
    pub retry_after: u64,
    /// Device clock offset in seconds (clock-skew rejections).
    pub clock_skew_seconds: i64,
    /// Few backup codes left.
    pub backup_codes_low: bool,
}

impl Verdict {
    fn refused(decision: Decision, reason: Reason) -> Self {
        Self {
            decision,
            reason,
            method: None,
            backup_codes_left: 0,
            retry_after: 0,
            clock_skew_seconds: 0,
            backup_codes_low: false,
        }
    }
}

/// The answer of the first phase of a Verify.
#[derive(Debug)]
pub enum Verification {
    /// Decided (and recorded).
    Done(Verdict),
    /// The code may be a backup code: it needs hashing.
    NeedsKdf(BackupAttempt),
}

/// A backup-code attempt that passed the gate and awaits its hash. While it
/// exists no other backup-code attempt of this user is checked; dropping it
/// gives the attempt up without checking or counting it.
pub struct BackupAttempt {
    user: UserName,
    code: Code,
    probe: Probe,
    totp: TotpMatch,
    _in_flight: InFlight,
}

impl std::fmt::Debug for BackupAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupAttempt")
            .field("user", &self.user)
            .field("kdf", &self.probe.kdf())
            .finish_non_exhaustive()
    }
}

impl BackupAttempt {
    /// The user.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// The answer when the attempt is given up before its check (no KDF
    /// capacity in time): throttled, not counted, retry in a second.
    pub fn not_checked(self) -> Verdict {
        busy_verdict()
    }
}

/// Marks a user's backup-code attempt as in flight until dropped.
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

fn not_enrolled_verdict() -> Verdict {
    Verdict::refused(Decision::NotEnrolled, Reason::NotEnrolled)
}

/// Refused unchecked because the attempt could not be checked now (another
/// backup-code check of the user in flight, no KDF capacity in time).
fn busy_verdict() -> Verdict {
    Verdict {
        retry_after: 1,
        ..Verdict::refused(Decision::Throttled, Reason::Throttled)
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

/// Optional parameters of a new enrollment.
#[derive(Debug, Clone, Default)]
pub struct EnrollOptions {
    /// Issuer (default: configured).
    pub issuer: Option<String>,
    /// Algorithm (default: configured).
    pub algorithm: Option<Algorithm>,
    /// 6 or 8 (default: configured).
    pub digits: Option<u8>,
    /// 15..=300 seconds (default: configured).
    pub period: Option<u64>,
}

/// A started enrollment, to show the user once.
pub struct EnrollStarted {
    /// The key, base32.
    pub secret_base32: Zeroizing<String>,
    /// otpauth:// URI (holds the secret).
    pub otpauth_uri: Zeroizing<String>,
    /// Parameters.
    pub params: TotpParams,
    /// Issuer.
    pub issuer: String,
}

impl std::fmt::Debug for EnrollStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollStarted")
            .field("params", &self.params)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
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

/// The status of one user.
#[derive(Debug, Clone)]
pub struct UserStatus {
    /// Name.
    pub user: String,
    /// State.
    pub state: State,
    /// Parameters of the active (else pending) secret.
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
    /// Last accepted code.
    pub last_success: Option<LastSuccess>,
    /// When the active secret was confirmed, 0 if none.
    pub enrolled_at: u64,
    /// A (re-)enrollment awaits confirmation.
    pub pending: bool,
    /// Device clock offset seen with the last accepted TOTP code.
    pub clock_skew_seconds: i64,
    /// Unix time the store was found to have lost committed writes of this
    /// user (rolled back), 0 if never (or since the last reset).
    pub rolled_back_at: u64,
}

/// What the start-up check of the store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCheck {
    /// Users checked.
    pub checked: usize,
    /// Users not checked (over the bound); checked on first use.
    pub skipped: usize,
    /// Users whose record was found rolled back (now or earlier).
    pub rolled_back: Vec<String>,
    /// Users who fail closed: record corrupted or lost.
    pub unreadable: Vec<String>,
}

const STRIPES: usize = 64;

/// The decision engine.
pub struct Engine {
    store: Box<dyn Store>,
    key: MasterKey,
    clock: Arc<dyn Clock>,
    cfg: EngineConfig,
    stripes: Vec<Mutex<()>>,
    watermarks: Option<Watermarks>,
    kdf_mem: KdfMemory,
    kdf_permits: Arc<Semaphore>,
    backup_in_flight: Arc<Mutex<HashSet<UserName>>>,
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
            key,
            clock,
            cfg,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            watermarks: None,
            kdf_mem: KdfMemory::new(default_kdf_parallelism()),
            kdf_permits: Arc::new(Semaphore::new(default_kdf_parallelism())),
            backup_in_flight: Arc::default(),
        }
    }

    /// Keeps replay watermarks in `watermarks` (see [`crate::watermark`]):
    /// a rolled-back store is detected and cannot make a used code valid
    /// again.
    pub fn with_watermarks(mut self, watermarks: Watermarks) -> Self {
        self.watermarks = Some(watermarks);
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn lock(&self, user: &UserName) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        user.hash(&mut h);
        let i = (h.finish() % STRIPES as u64) as usize;
        // The guarded value is `()`: a poisoned lock protects nothing broken.
        self.stripes[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn load(&self, user: &UserName) -> Result<Option<UserRecord>, Error> {
        let rec = match self.store.get(user)? {
            None => None,
            Some(sealed) => Some(UserRecord::open(&self.key, user, &sealed)?),
        };
        let Some(w) = &self.watermarks else {
            return Ok(rec);
        };
        let Some(mark) = w.get(user.as_str()) else {
            return Ok(rec);
        };
        let generation = rec.as_ref().map_or(0, |r| r.generation);
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
            "the store lost committed writes of this user (damaged or restored store \
             files); replay state restored from the watermarks; see `otpctl status`"
        );
        let now = self.clock.now();
        let flagged = Mark {
            rolled_back_at: Some(now.max(1)),
            ..mark
        };
        if let Err(e) = w.put(&self.key, flagged, true) {
            tracing::warn!(user = user.as_str(), error = %e, "cannot persist the rollback flag");
        }
    }

    fn save(&self, user: &UserName, record: &UserRecord) -> Result<(), Error> {
        let mut rec = record.clone();
        let Some(w) = &self.watermarks else {
            rec.generation = rec.generation.saturating_add(1);
            let sealed = rec.seal(&self.key, user)?;
            return self.store.put(user, &sealed);
        };
        // The watermark first, durably: a crash or a full disk after it
        // leaves the code spent, never valid again.
        let prev = w.get(user.as_str()).unwrap_or_default();
        rec.generation = rec.generation.max(prev.generation).saturating_add(1);
        let sealed = rec.seal(&self.key, user)?;
        let mark = Mark::of_record(user.as_str(), &rec, &prev);
        w.put(&self.key, mark.clone(), true)?;
        self.store.put(user, &sealed)?;
        self.mark_committed(w, mark);
        Ok(())
    }

    /// Notes that the mark's generation is in the store. Not fsynced: if it
    /// is lost, a later rollback of exactly that write is still repaired,
    /// only reported as an incomplete write.
    fn mark_committed(&self, w: &Watermarks, mark: Mark) {
        let committed = Mark {
            committed: mark.generation,
            ..mark
        };
        if let Err(e) = w.put(&self.key, committed, false) {
            tracing::debug!(error = %e, "commit mark not written");
        }
    }

    /// Removes the record; the watermark remembers the removal, so a
    /// rolled-back store cannot bring the record back.
    fn remove_record(&self, user: &UserName) -> Result<(), Error> {
        let Some(w) = &self.watermarks else {
            return self.store.remove(user);
        };
        let prev = w.get(user.as_str()).unwrap_or_default();
        let mark = Mark::of_removal(user.as_str(), &prev);
        w.put(&self.key, mark.clone(), true)?;
        self.store.remove(user)?;
        self.mark_committed(w, mark);
        Ok(())
    }

    /// Users in the store, and users the watermarks say should be there.
    fn known_users(&self) -> Result<Vec<String>, Error> {
        let mut names = self.store.users()?;
        if let Some(w) = &self.watermarks {
            names.extend(
                w.users()
                    .into_iter()
                    .filter(|u| w.get(u).is_some_and(|m| !m.removed)),
            );
            names.sort_unstable();
            names.dedup();
        }
        Ok(names)
    }

    /// Checks up to `limit` users against their watermarks (at start),
    /// reporting rolled-back records.
    pub fn check_store(&self, limit: usize) -> Result<StoreCheck, Error> {
        let names = self.known_users()?;
        let mut check = StoreCheck {
            skipped: names.len().saturating_sub(limit),
            ..StoreCheck::default()
        };
        for name in names.into_iter().take(limit) {
            check.checked += 1;
            let Ok(user) = UserName::parse(name.as_bytes()) else {
                check.unreadable.push(name);
                continue;
            };
            match self.status(&user) {
                Ok(s) if s.rolled_back_at > 0 => check.rolled_back.push(name),
                Ok(_) => {}
                Err(Error::Corrupted { .. }) => check.unreadable.push(name),
                Err(Error::RolledBack { .. }) => {
                    check.rolled_back.push(name.clone());
                    check.unreadable.push(name);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(check)
    }

    /// The semaphore that bounds concurrent backup-code hashes: take a
    /// permit (waiting asynchronously) before
    /// [`Engine::verify_backup_code`]. It has [`Engine::kdf_parallelism`]
    /// permits, as many as there are working memories.
    pub fn kdf_permits(&self) -> &Arc<Semaphore> {
        &self.kdf_permits
    }

    /// Backup-code attempts waiting for or doing their hash (one per user
    /// at most).
    pub fn backup_codes_in_flight(&self) -> usize {
        self.backup_in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Gives the working memory of backup-code hashes back to the system
    /// once nobody used it for `idle`; returns how many buffers remain.
    pub fn release_idle_kdf_memory(&self, idle: std::time::Duration) -> usize {
        self.kdf_mem.release_idle(idle)
    }

    /// Buffers of backup-code working memory that exist now.
    pub fn kdf_memory_held(&self) -> usize {
        self.kdf_mem.held()
    }

    /// How many backup-code hashes may run at once.
    pub fn kdf_parallelism(&self) -> usize {
        self.kdf_mem.buffers()
    }

    /// Checks a code, first phase, under the user's lock: the gate, then
    /// the TOTP code. Refusals are verdicts; errors are for malformed state.
    ///
    /// If the code may be a backup code, the answer is
    /// [`Verification::NeedsKdf`] and nothing is recorded yet: the caller
    /// takes a permit of [`Engine::kdf_permits`] and passes the attempt to
    /// [`Engine::verify_backup_code`], or drops it (refused unchecked).
    /// One backup-code attempt per user is in flight at a time; others are
    /// refused unchecked as throttled, so one user cannot queue up work.
    pub fn verify(
        &self,
        user: &UserName,
        code: &Code,
        ctx: &LoginContext,
    ) -> Result<Verification, Error> {
        let _guard = self.lock(user);
        let now = self.clock.now();
        let Some(mut rec) = self.load(user)? else {
            return Ok(Verification::Done(not_enrolled_verdict()));
        };
        let Some(active) = rec.active.clone() else {
            return Ok(Verification::Done(not_enrolled_verdict()));
        };
        let bucket = ctx.bucket(&rec);
        if let Some(refused) = self.gate(&rec, bucket, now) {
            return Ok(Verification::Done(refused));
        }
        // A code that may be a backup code takes the user's one backup-code
        // slot BEFORE anything is checked: with 8-digit TOTP, a guess refused
        // as busy after its TOTP check would be a check nobody counted.
        let mut in_flight = None;
        if rec.backup_codes.as_ref().is_some_and(|s| s.may_hold(code)) {
            match InFlight::enter(&self.backup_in_flight, user) {
                Some(slot) => in_flight = Some(slot),
                None => return Ok(Verification::Done(busy_verdict())),
            }
        }

        let totp = totp::check(
            &active.secret,
            active.params,
            code,
            now,
            self.cfg.window,
            rec.used_steps(),
        );
        let period = i64::try_from(active.params.period).unwrap_or(i64::MAX);
        let method = match totp {
            TotpMatch::Accepted { step, skew_steps } => {
                rec.use_step(step);
                rec.clock_skew_seconds = skew_steps.saturating_mul(period);
                Some(Method::Totp)
            }
            TotpMatch::ClockSkew { step, skew_steps } if skew_steps > 0 => {
                // A code from a clock that runs ahead would become valid
                // later, and the skew we report would say when: spend that
                // one step now. The steps before it stay usable, so the
                // user's correct codes keep working meanwhile.
                let window = u64::from(self.cfg.window);
                let current = totp::step_of(active.params, now);
                rec.spend_step(step, current.saturating_sub(window));
                None
            }
            _ => {
                if let (Some(set), Some(in_flight)) = (
                    rec.backup_codes.as_ref().filter(|s| s.may_hold(code)),
                    in_flight,
                ) {
                    return Ok(Verification::NeedsKdf(BackupAttempt {
                        user: user.clone(),
                        code: code.clone(),
                        probe: set.probe(),
                        totp,
                        _in_flight: in_flight,
                    }));
                }
                None
            }
        };
        let verdict = self.decide(&mut rec, bucket, method, totp, period, now, ctx);
        // Durable before the reply: a used code stays used, a failure counts.
        self.save(user, &rec)?;
        Ok(Verification::Done(verdict))
    }

    /// Checks a code, second phase: hashes the attempt (without the user's
    /// lock, in memory from the pool), then under the lock reloads the
    /// record, checks the gate again (an attempt refused now is not
    /// checked and not counted), consumes the code if it matches and
    /// records the outcome durably. Blocks: run it off the async workers,
    /// holding a permit of [`Engine::kdf_permits`].
    pub fn verify_backup_code(
        &self,
        attempt: BackupAttempt,
        ctx: &LoginContext,
    ) -> Result<Verdict, Error> {
        let hashed = attempt.probe.hash(&attempt.code, &self.kdf_mem);
        let user = &attempt.user;
        let _guard = self.lock(user);
        let now = self.clock.now();
        let Some(mut rec) = self.load(user)? else {
            return Ok(not_enrolled_verdict());
        };
        let Some(active) = rec.active.as_ref() else {
            return Ok(not_enrolled_verdict());
        };
        let period = i64::try_from(active.params.period).unwrap_or(i64::MAX);
        let bucket = ctx.bucket(&rec);
        if let Some(refused) = self.gate(&rec, bucket, now) {
            return Ok(refused);
        }
        let hash = match hashed {
            Ok(hash) => hash,
            Err(e) => {
                // Count the attempt even though it could not be checked,
                // then report the fault.
                self.cfg
                    .policy
                    .record_failure(rec.counters_mut(bucket), now);
                self.save(user, &rec)?;
                return Err(e);
            }
        };
        let used = match rec.backup_codes.as_mut() {
            Some(set) => set.consume_hash(&attempt.probe, &hash),
            None => None,
        };
        // The set was replaced while the attempt was hashed: not checked.
        let Some(used) = used else {
            return Ok(busy_verdict());
        };
        let method = used.then_some(Method::BackupCode);
        let verdict = self.decide(&mut rec, bucket, method, attempt.totp, period, now, ctx);
        self.save(user, &rec)?;
        Ok(verdict)
    }

    /// The refusal when attempts judged by `bucket` may not be checked now.
    fn gate(&self, rec: &UserRecord, bucket: Bucket, now: u64) -> Option<Verdict> {
        match self.cfg.policy.gate(rec.counters(bucket), now) {
            Gate::Open => None,
            g @ Gate::Locked { .. } => Some(Verdict {
                retry_after: g.retry_after(now),
                ..Verdict::refused(Decision::Locked, Reason::Locked)
            }),
            g @ Gate::Throttled { .. } => Some(Verdict {
                retry_after: g.retry_after(now),
                ..Verdict::refused(Decision::Throttled, Reason::Throttled)
            }),
        }
    }

    /// Records a checked attempt in the counters of `bucket` (a success
    /// also makes its origin known) and says what to answer.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        rec: &mut UserRecord,
        bucket: Bucket,
        method: Option<Method>,
        totp: TotpMatch,
        period: i64,
        now: u64,
        ctx: &LoginContext,
    ) -> Verdict {
        let policy = self.cfg.policy;
        let left = rec
            .backup_codes
            .as_ref()
            .map_or(0, |s| u32::try_from(s.remaining()).unwrap_or(u32::MAX));
        match method {
            Some(method) => {
                policy.record_success(rec.counters_mut(bucket));
                rec.remember_origin(&ctx.remote_host);
                rec.last_success = Some(LastSuccess {
                    time: now,
                    service: ctx.service.clone(),
                    remote_host: ctx.remote_host.clone(),
                    method,
                });
                Verdict {
                    decision: Decision::Accepted,
                    reason: Reason::Ok,
                    method: Some(method),
                    backup_codes_left: left,
                    retry_after: 0,
                    clock_skew_seconds: 0,
                    backup_codes_low: left <= self.cfg.backup_codes_low,
                }
            }
            None => {
                policy.record_failure(rec.counters_mut(bucket), now);
                let (reason, skew) = match totp {
                    TotpMatch::Replayed => (Reason::Replayed, 0),
                    TotpMatch::ClockSkew { skew_steps, .. } => {
                        (Reason::ClockSkew, skew_steps.saturating_mul(period))
                    }
                    _ => (Reason::WrongCode, 0),
                };
                Verdict {
                    clock_skew_seconds: skew,
                    retry_after: policy.gate(rec.counters(bucket), now).retry_after(now),
                    ..Verdict::refused(Decision::Rejected, reason)
                }
            }
        }
    }

    /// Starts (or restarts) an enrollment in the pending state.
    pub fn enroll_start(
        &self,
        user: &UserName,
        opts: EnrollOptions,
    ) -> Result<EnrollStarted, Error> {
        let params = TotpParams {
            algorithm: opts.algorithm.unwrap_or(self.cfg.defaults.algorithm),
            digits: opts.digits.unwrap_or(self.cfg.defaults.digits),
            period: opts.period.unwrap_or(self.cfg.defaults.period),
        };
        validate_params(params)?;
        let issuer = opts.issuer.unwrap_or_else(|| self.cfg.issuer.clone());
        validate_issuer(&issuer)?;

        let _guard = self.lock(user);
        let now = self.clock.now();
        let mut rec = self.load(user)?.unwrap_or_default();
        let secret = TotpSecret::generate();
        let otpauth_uri = otpauth_uri(&secret, params, &issuer, user)?;
        let secret_base32 = secret.to_base32();
        rec.pending = Some(Enrollment {
            secret,
            params,
            issuer: issuer.clone(),
            since: now,
        });
        self.save(user, &rec)?;
        Ok(EnrollStarted {
            secret_base32,
            otpauth_uri,
            params,
            issuer,
        })
    }

    /// Confirms the pending enrollment with a current code; returns the new
    /// backup codes. The old secret (if any) stays in force until this
    /// succeeds.
    pub fn enroll_confirm(&self, user: &UserName, code: &Code) -> Result<Vec<PlainCode>, Error> {
        let _guard = self.lock(user);
        let now = self.clock.now();
        let mut rec = self.load(user)?.unwrap_or_default();
        let Some(mut pending) = rec.pending.clone() else {
            return Err(Error::NoPendingEnrollment {
                user: user.to_string(),
            });
        };
        let TotpMatch::Accepted { step, skew_steps } = totp::check(
            &pending.secret,
            pending.params,
            code,
            now,
            self.cfg.window,
            totp::UsedSteps::NONE,
        ) else {
            return Err(Error::ConfirmMismatch);
        };
        let (plain, set) = BackupCodeSet::generate(self.cfg.kdf, &self.kdf_mem)?;
        pending.since = now;
        let period = i64::try_from(pending.params.period).unwrap_or(i64::MAX);
        rec.active = Some(pending);
        rec.pending = None;
        rec.backup_codes = Some(set);
        rec.last_used_step = Some(step);
        rec.spent_ahead.clear();
        rec.clock_skew_seconds = skew_steps.saturating_mul(period);
        rec.counters = Default::default();
        rec.stranger_counters = Default::default();
        self.save(user, &rec)?;
        Ok(plain)
    }

    /// Issues new backup codes; all earlier ones become invalid.
    pub fn regenerate_backup_codes(&self, user: &UserName) -> Result<Vec<PlainCode>, Error> {
        let _guard = self.lock(user);
        let mut rec = self.load(user)?.ok_or_else(|| not_enrolled(user))?;
        if rec.active.is_none() {
            return Err(not_enrolled(user));
        }
        let (plain, set) = BackupCodeSet::generate(self.cfg.kdf, &self.kdf_mem)?;
        rec.backup_codes = Some(set);
        self.save(user, &rec)?;
        Ok(plain)
    }

    /// Clears lockout, throttle and failure counters (of trusted and
    /// unknown origins alike).
    pub fn unlock(&self, user: &UserName) -> Result<(), Error> {
        let _guard = self.lock(user);
        let mut rec = self.load(user)?.ok_or_else(|| not_enrolled(user))?;
        rec.counters = Default::default();
        rec.stranger_counters = Default::default();
        self.save(user, &rec)
    }

    /// Removes everything about the user. Works on a corrupted record too.
    pub fn reset(&self, user: &UserName) -> Result<(), Error> {
        let _guard = self.lock(user);
        let lost = self
            .watermarks
            .as_ref()
            .and_then(|w| w.get(user.as_str()))
            .is_some_and(|m| !m.removed);
        if self.store.get(user)?.is_none() && !lost {
            return Err(not_enrolled(user));
        }
        self.remove_record(user)
    }

    /// The status of one user (state NotEnrolled if unknown).
    pub fn status(&self, user: &UserName) -> Result<UserStatus, Error> {
        let _guard = self.lock(user);
        let rec = self.load(user)?.unwrap_or_default();
        Ok(self.status_of(user.as_str(), &rec))
    }

    /// Status of every stored user, and the names whose records do not open.
    pub fn list(&self) -> Result<(Vec<UserStatus>, Vec<String>), Error> {
        let mut statuses = Vec::new();
        let mut unreadable = Vec::new();
        for name in self.known_users()? {
            let Ok(user) = UserName::parse(name.as_bytes()) else {
                unreadable.push(name);
                continue;
            };
            match self.status(&user) {
                Ok(s) => statuses.push(s),
                Err(Error::Corrupted { .. } | Error::RolledBack { .. }) => unreadable.push(name),
                Err(e) => return Err(e),
            }
        }
        Ok((statuses, unreadable))
    }

    fn status_of(&self, user: &str, rec: &UserRecord) -> UserStatus {
        let now = self.clock.now();
        let locked_until = if rec.counters.locked_until > now {
            rec.counters.locked_until
        } else {
            0
        };
        let state = match (&rec.active, &rec.pending) {
            (Some(_), _) if locked_until > 0 => State::Locked,
            (Some(_), _) => State::Active,
            (None, Some(_)) => State::Pending,
            (None, None) => State::NotEnrolled,
        };
        let params = rec
            .active
            .as_ref()
            .or(rec.pending.as_ref())
            .map(|e| e.params);
        UserStatus {
            user: user.to_owned(),
            state,
            params,
            backup_codes_left: rec
                .backup_codes
                .as_ref()
                .filter(|_| rec.active.is_some())
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
            enrolled_at: rec.active.as_ref().map_or(0, |e| e.since),
            pending: rec.pending.is_some(),
            clock_skew_seconds: rec.clock_skew_seconds,
            rolled_back_at: self
                .watermarks
                .as_ref()
                .and_then(|w| w.get(user))
                .and_then(|m| m.rolled_back_at)
                .unwrap_or(0),
        }
    }
}

fn not_enrolled(user: &UserName) -> Error {
    Error::NotEnrolled {
        user: user.to_string(),
    }
}

fn validate_params(p: TotpParams) -> Result<(), Error> {
    if p.digits != 6 && p.digits != 8 {
        return Err(Error::InvalidArgument(format!(
            "digits must be 6 or 8, not {}",
            p.digits
        )));
    }
    if !(15..=300).contains(&p.period) {
        return Err(Error::InvalidArgument(format!(
            "period must be 15..=300 seconds, not {}",
            p.period
        )));
    }
    Ok(())
}

fn validate_issuer(issuer: &str) -> Result<(), Error> {
    if issuer.is_empty() || issuer.len() > 64 {
        return Err(Error::InvalidArgument("issuer must be 1..=64 bytes".into()));
    }
    if issuer.contains(':') || issuer.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(
            "issuer must not contain ':' or control characters".into(),
        ));
    }
    Ok(())
}

fn otpauth_uri(
    secret: &TotpSecret,
    params: TotpParams,
    issuer: &str,
    user: &UserName,
) -> Result<Zeroizing<String>, Error> {
    let algorithm = match params.algorithm {
        Algorithm::Sha1 => totp_rs::Algorithm::SHA1,
        Algorithm::Sha256 => totp_rs::Algorithm::SHA256,
        Algorithm::Sha512 => totp_rs::Algorithm::SHA512,
    };
    let totp = totp_rs::TOTP::new(
        algorithm,
        usize::from(params.digits),
        0,
        params.period,
        secret.expose().to_vec(),
        Some(issuer.to_owned()),
        user.as_str().to_owned(),
    )
    .map_err(|e| Error::InvalidArgument(format!("cannot build the otpauth URI: {e}")))?;
    Ok(Zeroizing::new(totp.get_url()))
}

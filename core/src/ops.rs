//! The decisions, as pure functions of a user's record, the request, the
//! time (`now`), the configuration and a random source. Each one changes
//! the record in place; the caller writes it back atomically (the store's
//! `update`) and durably before it replies.
//!
//! Verification has two steps because the slow hash (Argon2id, for backup
//! codes and app passwords) must not run inside the store's atomic update:
//! [`verify`] either decides, or returns a [`HashJob`]; the caller hashes
//! outside the update and then calls [`finish`] inside a new one, which
//! checks the gate again on the fresh record.

use zeroize::Zeroizing;

use crate::Random;
use crate::app_password::{self, AppPassword, AppPasswordInput, AppProbe, Refusal};
use crate::backup_codes::{BackupCodeSet, PlainCode, Probe};
use crate::device::{Device, DeviceName, Kind as DeviceKind, MAX_DEVICES};
use crate::drift;
use crate::error::Error;
use crate::hotp::{self, HotpMatch};
use crate::kdf::{KdfHash, KdfParams, Scratch};
use crate::policy::{Gate, Policy};
use crate::record::{Bucket, LastSuccess, Method, Pending, UserName, UserRecord};
use crate::secret::{Code, TotpSecret};
use crate::totp::{self, Algorithm, TotpMatch, TotpParams};

pub mod self_service;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod import_tests;

#[cfg(test)]
mod export_tests;

#[cfg(test)]
mod login_experience_tests;

/// Settings the decisions are taken with (from the configuration).
#[derive(Debug, Clone)]
pub struct Config {
    /// Throttle and lockout.
    pub policy: Policy,
    /// Acceptance window, ± steps.
    pub window: u32,
    /// Parameters of new devices unless the request says otherwise.
    pub defaults: TotpParams,
    /// Issuer of new devices unless the request says otherwise.
    pub issuer: String,
    /// Cost of hashing backup codes and app passwords.
    pub kdf: KdfParams,
    /// Warn when this many backup codes or fewer are left.
    pub backup_codes_low: u32,
    /// Who must use a second factor, from when (`[enforcement]`).
    pub enforcement: crate::enforcement::Enforcement,
    /// Seconds a started enrollment may wait for its confirmation
    /// (`[enrollment] pending_expiry_seconds`).
    pub pending_expiry: u64,
    /// Most steps a device's learned clock offset may reach either way
    /// (`[totp] max_drift_steps`; 0: no learning).
    pub max_drift_steps: u32,
    /// Grace for sudo/su after a login (`[grace]`; off by default).
    pub grace: crate::grace::Policy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            window: 1,
            defaults: TotpParams::default(),
            issuer: "otpd".into(),
            kdf: KdfParams::default(),
            backup_codes_low: 3,
            enforcement: crate::enforcement::Enforcement::default(),
            pending_expiry: crate::record::DEFAULT_PENDING_EXPIRY,
            max_drift_steps: crate::drift::DEFAULT_MAX_DRIFT_STEPS,
            grace: crate::grace::Policy::default(),
        }
    }
}

/// What a Verify caller tells besides user and credential.
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
    /// That process and its ancestors, as the daemon read them (for a
    /// `[grace]` bound to the login session); empty when not read.
    pub lineage: crate::grace::Lineage,
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
    pub fn bucket(&self, rec: &UserRecord) -> Bucket {
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

/// What was typed.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    /// A TOTP or backup code.
    Code(&'a Code),
    /// An app password (only where the PAM line allows them).
    AppPassword(&'a AppPasswordInput),
}

/// How an accepted attempt got in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A TOTP code of this device.
    Totp {
        /// The device.
        device: DeviceName,
    },
    /// A backup code (now used up).
    BackupCode,
    /// An app password.
    AppPassword {
        /// Its id.
        id: String,
    },
}

impl Via {
    /// The method.
    pub fn method(&self) -> Method {
        match self {
            Self::Totp { .. } => Method::Totp,
            Self::BackupCode => Method::BackupCode,
            Self::AppPassword { .. } => Method::AppPassword,
        }
    }
}

/// Why a checked attempt was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Matches nothing.
    WrongCode,
    /// The time step was already used on the device it belongs to.
    Replayed,
    /// Matches a step outside the window; the device clock is this far off
    /// (positive: ahead).
    ClockSkew {
        /// Seconds.
        skew_seconds: i64,
    },
    /// An app password that was not accepted.
    AppPassword(Refusal),
    /// An HOTP code far ahead of the device's counter: not accepted; the
    /// token's next code resynchronises it.
    OutOfSync,
}

/// The answer to a Verify. One variant per outcome, so it cannot say
/// "accepted" and "wrong" at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The credential was valid; it is now used (codes) or recorded.
    Accepted {
        /// How.
        via: Via,
        /// Unused backup codes left.
        backup_codes_left: u32,
        /// At or below the warning level.
        backup_codes_low: bool,
        /// Remind the user that they have no recovery path (one device, no
        /// backup code left): set by [`remind`] for a login, at most once
        /// per [`crate::enforcement::Enforcement::nudge_interval`].
        recovery_nudge: bool,
    },
    /// Checked and wrong; counted.
    Rejected {
        /// Why.
        rejection: Rejection,
        /// Set when this failure started a lockout or the throttle: seconds
        /// until the next attempt is checked.
        retry_after: Option<u64>,
    },
    /// Locked out; not checked, not counted.
    Locked {
        /// Seconds until attempts are checked again.
        retry_after: u64,
    },
    /// Throttled; not checked, not counted.
    Throttled {
        /// Seconds until attempts are checked again.
        retry_after: u64,
    },
    /// Another slow check of this user is running, or there was no
    /// capacity for it in time: not checked, not counted; retry in a
    /// second.
    Busy,
    /// No active device.
    NotEnrolled,
}

/// The decision, coarse (the wire's `Decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Accepted.
    Accepted,
    /// Wrong, replayed, skewed.
    Rejected,
    /// Locked out.
    Locked,
    /// Throttled or busy.
    Throttled,
    /// Not enrolled.
    NotEnrolled,
}

/// The reason, fine (for audit events and the wire's `Reason`).
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
    /// An app password that was not accepted.
    AppPassword(Refusal),
    /// An HOTP code far ahead; the next one resynchronises.
    OutOfSync,
    /// Locked out.
    Locked,
    /// Throttled.
    Throttled,
    /// Another check of the user in flight, or no capacity.
    Busy,
    /// No active device.
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
            Self::AppPassword(r) => r.name(),
            Self::OutOfSync => "hotp_out_of_sync",
            Self::Locked => "locked",
            Self::Throttled => "throttled",
            Self::Busy => "busy",
            Self::NotEnrolled => "not_enrolled",
        }
    }
}

impl Verdict {
    /// The coarse decision.
    pub fn decision(&self) -> Decision {
        match self {
            Self::Accepted { .. } => Decision::Accepted,
            Self::Rejected { .. } => Decision::Rejected,
            Self::Locked { .. } => Decision::Locked,
            Self::Throttled { .. } | Self::Busy => Decision::Throttled,
            Self::NotEnrolled => Decision::NotEnrolled,
        }
    }

    /// The reason.
    pub fn reason(&self) -> Reason {
        match self {
            Self::Accepted { .. } => Reason::Ok,
            Self::Rejected { rejection, .. } => match rejection {
                Rejection::WrongCode => Reason::WrongCode,
                Rejection::Replayed => Reason::Replayed,
                Rejection::ClockSkew { .. } => Reason::ClockSkew,
                Rejection::AppPassword(r) => Reason::AppPassword(*r),
                Rejection::OutOfSync => Reason::OutOfSync,
            },
            Self::Locked { .. } => Reason::Locked,
            Self::Throttled { .. } => Reason::Throttled,
            Self::Busy => Reason::Busy,
            Self::NotEnrolled => Reason::NotEnrolled,
        }
    }

    /// Seconds until the next attempt is checked (0: now).
    pub fn retry_after(&self) -> u64 {
        match self {
            Self::Rejected { retry_after, .. } => retry_after.unwrap_or(0),
            Self::Locked { retry_after } | Self::Throttled { retry_after } => *retry_after,
            Self::Busy => 1,
            Self::Accepted { .. } | Self::NotEnrolled => 0,
        }
    }

    /// Whether it was accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }
}

/// A slow hash the decision waits for.
#[derive(Debug, Clone)]
pub enum HashTarget {
    /// The code may be one of the backup codes.
    BackupCode(Probe),
    /// The app password with this probe's id.
    AppPassword(AppProbe),
}

/// The first step's request for a hash. Nothing was recorded yet.
#[derive(Debug, Clone)]
pub struct HashJob {
    /// What to hash against.
    pub target: HashTarget,
    /// What the TOTP check found (for the reason if the hash misses).
    totp: Option<Rejection>,
}

impl HashJob {
    /// The cost of the hash.
    pub fn kdf(&self) -> KdfParams {
        match &self.target {
            HashTarget::BackupCode(p) => p.kdf(),
            HashTarget::AppPassword(p) => p.kdf(),
        }
    }
}

/// The outcome of a step of a Verify.
#[derive(Debug)]
pub enum Step {
    /// Decided. `changed`: the record must be written before replying.
    Done {
        /// The answer.
        verdict: Verdict,
        /// Whether the record changed.
        changed: bool,
    },
    /// Hash first (outside the atomic update), then call [`finish`].
    Hash(HashJob),
}

fn unchanged(verdict: Verdict) -> Step {
    Step::Done {
        verdict,
        changed: false,
    }
}

fn gate(cfg: &Config, rec: &UserRecord, bucket: Bucket, now: u64) -> Option<Verdict> {
    match cfg.policy.gate(rec.counters(bucket), now) {
        Gate::Open => None,
        g @ Gate::Locked { .. } => Some(Verdict::Locked {
            retry_after: g.retry_after(now),
        }),
        g @ Gate::Throttled { .. } => Some(Verdict::Throttled {
            retry_after: g.retry_after(now),
        }),
    }
}

/// Whether an attempt may be checked at all: the user has a device, and the
/// counters of the attempt's bucket let it through. `Ok`: that bucket.
fn admit(rec: &UserRecord, ctx: &LoginContext, now: u64, cfg: &Config) -> Result<Bucket, Verdict> {
    if !rec.is_enrolled() {
        return Err(Verdict::NotEnrolled);
    }
    let bucket = ctx.bucket(rec);
    match gate(cfg, rec, bucket, now) {
        Some(refused) => Err(refused),
        None => Ok(bucket),
    }
}

/// What the TOTP codes of every active device say about `code`: the first
/// device that accepts it wins; otherwise the most telling refusal.
fn check_devices(
    rec: &mut UserRecord,
    code: &Code,
    now: u64,
    window: u32,
    max_drift: u32,
) -> Result<DeviceName, Option<Rejection>> {
    let mut replayed = false;
    let mut skew = None;
    let mut out_of_sync = false;
    for device in &mut rec.devices {
        if device.kind == DeviceKind::Hotp {
            match hotp::check(
                &device.secret,
                device.params,
                code,
                device.last_used_step,
                device.hotp_resync,
            ) {
                HotpMatch::Accepted { counter } => {
                    device.use_step(counter);
                    device.hotp_resync = None;
                    device.last_used_at = Some(now);
                    return Ok(device.name.clone());
                }
                HotpMatch::Replayed => replayed = true,
                HotpMatch::OutOfSync { counter } => {
                    device.hotp_resync = Some(counter);
                    out_of_sync = true;
                }
                HotpMatch::NoMatch => {}
            }
            continue;
        }
        let period = i64::try_from(device.params.period).unwrap_or(i64::MAX);
        // The window is centred on the device's learned offset (a bound
        // lowered in the configuration applies at once).
        let max = i32::try_from(max_drift).unwrap_or(i32::MAX);
        let drift = device.drift_steps.clamp(-max, max);
        match drift::check(
            &device.secret,
            device.params,
            code,
            now,
            window,
            drift,
            device.used_steps(),
        ) {
            TotpMatch::Accepted { step, skew_steps } => {
                device.use_step(step);
                device.clock_skew_seconds = skew_steps.saturating_mul(period);
                (device.drift_steps, device.drift_streak) =
                    drift::learn(drift, device.drift_streak, skew_steps, max_drift);
                device.last_used_at = Some(now);
                return Ok(device.name.clone());
            }
            TotpMatch::Replayed => replayed = true,
            TotpMatch::ClockSkew { step, skew_steps } => {
                if skew_steps > i64::from(drift) {
                    // A code from a clock that runs ahead would become
                    // valid later, and the skew we report would say when:
                    // spend that one step now. The steps before it stay
                    // usable, so the device's correct codes keep working.
                    let centre =
                        totp::step_of(device.params, now).saturating_add_signed(i64::from(drift));
                    device.spend_step(step, centre.saturating_sub(u64::from(window)));
                }
                skew.get_or_insert(skew_steps.saturating_mul(period));
            }
            TotpMatch::NoMatch => {}
        }
    }
    Err(if replayed {
        Some(Rejection::Replayed)
    } else if out_of_sync {
        Some(Rejection::OutOfSync)
    } else {
        skew.map(|skew_seconds| Rejection::ClockSkew { skew_seconds })
    })
}

/// First step of a Verify: the gate, then the credential. `take_slot` is
/// asked before a slow hash is requested (the caller's one-per-user
/// limit, taken before anything is checked: with 8-digit TOTP a guess
/// refused as busy after its TOTP check would be a check nobody counted);
/// when it says no, the attempt is refused unchecked ([`Verdict::Busy`]).
pub fn verify(
    rec: &mut UserRecord,
    attempt: Attempt<'_>,
    ctx: &LoginContext,
    now: u64,
    cfg: &Config,
    take_slot: &mut dyn FnMut() -> bool,
) -> Step {
    let bucket = match admit(rec, ctx, now, cfg) {
        Ok(bucket) => bucket,
        Err(refused) => return unchanged(refused),
    };
    match attempt {
        Attempt::AppPassword(input) => {
            let id = input.id();
            let admitted = match rec.app_passwords.iter().find(|p| p.id == id) {
                None => Err(Refusal::Unknown),
                Some(p) => p.admits(&ctx.service, now),
            };
            match admitted {
                Err(refusal) => fail(rec, bucket, Rejection::AppPassword(refusal), now, cfg),
                Ok(_) if !take_slot() => unchanged(Verdict::Busy),
                Ok(probe) => Step::Hash(HashJob {
                    target: HashTarget::AppPassword(probe),
                    totp: None,
                }),
            }
        }
        Attempt::Code(code) => {
            let backup = rec
                .backup_codes
                .as_ref()
                .filter(|s| s.may_hold(code))
                .map(BackupCodeSet::probe);
            if backup.is_some() && !take_slot() {
                return unchanged(Verdict::Busy);
            }
            let totp = match check_devices(rec, code, now, cfg.window, cfg.max_drift_steps) {
                Ok(device) => {
                    return succeed(rec, bucket, Via::Totp { device }, ctx, now, cfg);
                }
                Err(r) => r,
            };
            match (backup, totp) {
                // A code from a device whose clock runs ahead is a TOTP
                // code, not a backup code.
                (_, Some(r @ Rejection::ClockSkew { skew_seconds })) if skew_seconds > 0 => {
                    fail(rec, bucket, r, now, cfg)
                }
                (Some(probe), totp) => Step::Hash(HashJob {
                    target: HashTarget::BackupCode(probe),
                    totp,
                }),
                (None, totp) => fail(rec, bucket, totp.unwrap_or(Rejection::WrongCode), now, cfg),
            }
        }
    }
}

/// Second step of a Verify, on the freshly loaded record: the gate again
/// (an attempt refused now is not checked and not counted), then the hash.
/// `hash` is `None` when it could not be computed: the attempt is counted
/// as a failure (the caller then reports the fault).
pub fn finish(
    rec: &mut UserRecord,
    job: &HashJob,
    hash: Option<&KdfHash>,
    ctx: &LoginContext,
    now: u64,
    cfg: &Config,
) -> Step {
    let bucket = match admit(rec, ctx, now, cfg) {
        Ok(bucket) => bucket,
        Err(refused) => return unchanged(refused),
    };
    let Some(hash) = hash else {
        return fail(rec, bucket, Rejection::WrongCode, now, cfg);
    };
    match &job.target {
        HashTarget::BackupCode(probe) => {
            match rec
                .backup_codes
                .as_mut()
                .and_then(|s| s.consume_hash(probe, hash))
            {
                // The set was replaced while the attempt was hashed.
                None => unchanged(Verdict::Busy),
                Some(true) => succeed(rec, bucket, Via::BackupCode, ctx, now, cfg),
                Some(false) => fail(
                    rec,
                    bucket,
                    job.totp.unwrap_or(Rejection::WrongCode),
                    now,
                    cfg,
                ),
            }
        }
        HashTarget::AppPassword(probe) => {
            let Some(p) = rec.app_passwords.iter_mut().find(|p| p.id == probe.id) else {
                // Revoked while it was hashed.
                return fail(
                    rec,
                    bucket,
                    Rejection::AppPassword(Refusal::Unknown),
                    now,
                    cfg,
                );
            };
            if let Err(refusal) = p.admits(&ctx.service, now) {
                // Expired while it was hashed.
                return fail(rec, bucket, Rejection::AppPassword(refusal), now, cfg);
            }
            match p.matches(probe, hash) {
                None => unchanged(Verdict::Busy),
                Some(true) => {
                    p.last_used = Some(now);
                    let id = p.id.clone();
                    succeed(rec, bucket, Via::AppPassword { id }, ctx, now, cfg)
                }
                Some(false) => fail(
                    rec,
                    bucket,
                    Rejection::AppPassword(Refusal::Wrong),
                    now,
                    cfg,
                ),
            }
        }
    }
}

fn backup_codes_left(rec: &UserRecord) -> u32 {
    rec.backup_codes
        .as_ref()
        .map_or(0, |s| u32::try_from(s.remaining()).unwrap_or(u32::MAX))
}

/// Records a success: the bucket's counters clear, the origin becomes
/// known.
fn succeed(
    rec: &mut UserRecord,
    bucket: Bucket,
    via: Via,
    ctx: &LoginContext,
    now: u64,
    cfg: &Config,
) -> Step {
    cfg.policy.record_success(rec.counters_mut(bucket));
    rec.remember_origin(&ctx.remote_host);
    rec.last_success = Some(LastSuccess {
        time: now,
        service: ctx.service.clone(),
        remote_host: ctx.remote_host.clone(),
        method: via.method(),
        credential: match &via {
            Via::Totp { device } => Some(device.to_string()),
            Via::AppPassword { id } => Some(id.clone()),
            Via::BackupCode => None,
        },
    });
    let left = backup_codes_left(rec);
    Step::Done {
        verdict: Verdict::Accepted {
            via,
            backup_codes_left: left,
            backup_codes_low: left <= cfg.backup_codes_low,
            recovery_nudge: false,
        },
        changed: true,
    }
}

/// For a login (not a self-service proof): when `step` accepted the
/// credential and the reminder that the user has no recovery path is due,
/// sets the verdict's `recovery_nudge` and notes the time in the record,
/// which the login's own write then saves (no second write).
pub fn remind(step: &mut Step, rec: &mut UserRecord, now: u64, cfg: &Config) {
    if let Step::Done {
        verdict: Verdict::Accepted { recovery_nudge, .. },
        changed: true,
    } = step
    {
        *recovery_nudge = crate::enforcement::nudge(rec, now, cfg.enforcement.nudge_interval);
    }
}

/// Records a checked, wrong attempt in the bucket's counters.
fn fail(
    rec: &mut UserRecord,
    bucket: Bucket,
    rejection: Rejection,
    now: u64,
    cfg: &Config,
) -> Step {
    cfg.policy.record_failure(rec.counters_mut(bucket), now);
    let retry_after = cfg.policy.gate(rec.counters(bucket), now).retry_after(now);
    Step::Done {
        verdict: Verdict::Rejected {
            rejection,
            retry_after: (retry_after > 0).then_some(retry_after),
        },
        changed: true,
    }
}

/// Optional parameters of a new device.
#[derive(Debug, Clone, Default)]
pub struct EnrollOptions {
    /// Its name (default: `default`).
    pub device: Option<DeviceName>,
    /// Added beside the active devices (`device add`) instead of replacing
    /// them (`enroll`).
    pub add: bool,
    /// Issuer (default: configured).
    pub issuer: Option<String>,
    /// Algorithm (default: configured).
    pub algorithm: Option<Algorithm>,
    /// 6 or 8 (default: configured).
    pub digits: Option<u8>,
    /// 15..=300 seconds (default: configured).
    pub period: Option<u64>,
    /// A counter-based (HOTP) device instead of a time-based one.
    pub hotp: bool,
}

/// A started enrollment, to show once.
pub struct EnrollStarted {
    /// The device's name.
    pub device: DeviceName,
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
            .field("device", &self.device)
            .field("params", &self.params)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Starts an enrollment in the pending state (replacing an earlier pending
/// one). Logins are unchanged until [`enroll_confirm`].
pub fn enroll_start(
    rec: &mut UserRecord,
    user: &UserName,
    opts: EnrollOptions,
    now: u64,
    cfg: &Config,
    rng: &mut dyn Random,
) -> Result<EnrollStarted, Error> {
    let params = TotpParams {
        algorithm: opts.algorithm.unwrap_or(cfg.defaults.algorithm),
        digits: opts.digits.unwrap_or(cfg.defaults.digits),
        period: opts.period.unwrap_or(cfg.defaults.period),
    };
    validate_params(params)?;
    let issuer = opts.issuer.unwrap_or_else(|| cfg.issuer.clone());
    validate_issuer(&issuer)?;
    let name = opts.device.unwrap_or_else(DeviceName::default_name);
    if opts.add {
        if !rec.is_enrolled() {
            return Err(Error::NoActiveDevice {
                user: user.to_string(),
            });
        }
        if rec.device(&name).is_some() {
            return Err(Error::DeviceExists {
                user: user.to_string(),
                device: name.to_string(),
            });
        }
        if rec.devices.len() >= MAX_DEVICES {
            return Err(Error::TooMany {
                user: user.to_string(),
                what: "devices",
                max: MAX_DEVICES,
            });
        }
    }
    let secret = TotpSecret::generate(rng);
    let kind = if opts.hotp {
        DeviceKind::Hotp
    } else {
        DeviceKind::Totp
    };
    let otpauth_uri = match kind {
        DeviceKind::Totp => otpauth_uri(&secret, params, &issuer, user)?,
        DeviceKind::Hotp => hotp_uri(&secret, params, &issuer, user),
    };
    let secret_base32 = secret.to_base32();
    rec.pending = Some(Pending {
        device: Device {
            id: rng.next_u64(),
            name: name.clone(),
            secret,
            params,
            issuer: issuer.clone(),
            enrolled_at: now,
            last_used_step: None,
            spent_ahead: Vec::new(),
            clock_skew_seconds: 0,
            last_used_at: None,
            kind,
            hotp_resync: None,
            drift_steps: 0,
            drift_streak: 0,
        },
        adds: opts.add,
    });
    Ok(EnrollStarted {
        device: name,
        secret_base32,
        otpauth_uri,
        params,
        issuer,
    })
}

/// A confirmed enrollment.
#[derive(Debug)]
pub struct Confirmed {
    /// The device now active.
    pub device: DeviceName,
    /// New backup codes (a fresh enrollment), shown once; `None` when the
    /// device was added beside others (their backup codes stay).
    pub backup_codes: Option<Vec<PlainCode>>,
}

/// Confirms the pending enrollment with a current code from it. A fresh
/// enrollment replaces every device and issues new backup codes (the old
/// devices stay in force until this succeeds); an added device joins the
/// others.
pub fn enroll_confirm(
    rec: &mut UserRecord,
    user: &UserName,
    code: &Code,
    now: u64,
    cfg: &Config,
    rng: &mut dyn Random,
    scratch: &dyn Scratch,
) -> Result<Confirmed, Error> {
    let Some(pending) = rec.pending.as_ref() else {
        return Err(Error::NoPendingEnrollment {
            user: user.to_string(),
        });
    };
    if pending.is_expired(now, cfg.pending_expiry) {
        return Err(Error::EnrollmentExpired {
            user: user.to_string(),
        });
    }
    let (step, skew_steps) = match pending.device.kind {
        DeviceKind::Totp => match totp::check(
            &pending.device.secret,
            pending.device.params,
            code,
            now,
            cfg.window,
            totp::UsedSteps::NONE,
        ) {
            TotpMatch::Accepted { step, skew_steps } => (step, skew_steps),
            _ => return Err(Error::ConfirmMismatch),
        },
        // A new token (or app) starts at counter 0; it may have been
        // pressed a few times already.
        DeviceKind::Hotp => match hotp::check(
            &pending.device.secret,
            pending.device.params,
            code,
            None,
            None,
        ) {
            HotpMatch::Accepted { counter } => (counter, 0),
            _ => return Err(Error::ConfirmMismatch),
        },
    };
    let adds = pending.adds && rec.is_enrolled();
    if adds && rec.device(&pending.device.name).is_some() {
        return Err(Error::DeviceExists {
            user: user.to_string(),
            device: pending.device.name.to_string(),
        });
    }
    if adds && rec.devices.len() >= MAX_DEVICES {
        return Err(Error::TooMany {
            user: user.to_string(),
            what: "devices",
            max: MAX_DEVICES,
        });
    }
    let backup_codes = if adds {
        None
    } else {
        Some(BackupCodeSet::generate(cfg.kdf, rng, scratch)?)
    };
    let Some(Pending { mut device, .. }) = rec.pending.take() else {
        return Err(Error::Internal("pending enrollment vanished"));
    };
    let period = i64::try_from(device.params.period).unwrap_or(i64::MAX);
    device.enrolled_at = now;
    device.use_step(step);
    device.clock_skew_seconds = skew_steps.saturating_mul(period);
    // The confirmation code teaches nothing about the clock: it is often
    // typed slowly, read just before its step ended.
    device.drift_steps = 0;
    device.drift_streak = 0;
    device.last_used_at = None;
    let name = device.name.clone();
    match backup_codes {
        None => {
            rec.devices.push(device);
            Ok(Confirmed {
                device: name,
                backup_codes: None,
            })
        }
        Some((plain, set)) => {
            rec.devices = vec![device];
            rec.backup_codes = Some(set);
            rec.counters = Default::default();
            rec.stranger_counters = Default::default();
            Ok(Confirmed {
                device: name,
                backup_codes: Some(plain),
            })
        }
    }
}

/// Renames an active or the pending device.
pub fn rename_device(
    rec: &mut UserRecord,
    user: &UserName,
    old: &DeviceName,
    new: DeviceName,
) -> Result<(), Error> {
    if old != &new && rec.name_taken(&new) {
        return Err(Error::DeviceExists {
            user: user.to_string(),
            device: new.to_string(),
        });
    }
    if let Some(d) = rec.devices.iter_mut().find(|d| &d.name == old) {
        d.name = new;
        return Ok(());
    }
    match rec.pending.as_mut().filter(|p| &p.device.name == old) {
        Some(p) => {
            p.device.name = new;
            Ok(())
        }
        None => Err(no_such_device(user, old)),
    }
}

/// Removes an active device (its codes stop working at once) or the
/// pending one; returns how many active devices are left. The last active
/// device goes only with `allow_last`.
pub fn remove_device(
    rec: &mut UserRecord,
    user: &UserName,
    name: &DeviceName,
    allow_last: bool,
) -> Result<usize, Error> {
    if let Some(i) = rec.devices.iter().position(|d| &d.name == name) {
        if rec.devices.len() == 1 && !allow_last {
            return Err(Error::LastDevice {
                user: user.to_string(),
                device: name.to_string(),
            });
        }
        rec.devices.remove(i);
        return Ok(rec.devices.len());
    }
    if rec.pending.as_ref().is_some_and(|p| &p.device.name == name) {
        rec.pending = None;
        return Ok(rec.devices.len());
    }
    Err(no_such_device(user, name))
}

fn no_such_device(user: &UserName, name: &DeviceName) -> Error {
    Error::NoSuchDevice {
        user: user.to_string(),
        device: name.to_string(),
    }
}

/// Issues an app password for `service`; returns it (to show once) and
/// its stored form.
#[allow(clippy::too_many_arguments)]
pub fn add_app_password(
    rec: &mut UserRecord,
    user: &UserName,
    service: &str,
    label: &str,
    expires_in: Option<u64>,
    now: u64,
    cfg: &Config,
    rng: &mut dyn Random,
    scratch: &dyn Scratch,
) -> Result<(Zeroizing<String>, AppPassword), Error> {
    if rec.app_passwords.len() >= app_password::MAX_PER_USER {
        return Err(Error::TooMany {
            user: user.to_string(),
            what: "app passwords",
            max: app_password::MAX_PER_USER,
        });
    }
    let taken: Vec<&str> = rec.app_passwords.iter().map(|p| p.id.as_str()).collect();
    let expires_at = expires_in.map(|s| now.saturating_add(s));
    let (shown, stored) = AppPassword::generate(
        &taken, service, label, now, expires_at, cfg.kdf, rng, scratch,
    )?;
    rec.app_passwords.push(stored.clone());
    Ok((shown, stored))
}

/// Revokes an app password at once.
pub fn revoke_app_password(rec: &mut UserRecord, user: &UserName, id: &str) -> Result<(), Error> {
    let before = rec.app_passwords.len();
    let id = id.to_ascii_lowercase();
    rec.app_passwords.retain(|p| p.id != id);
    if rec.app_passwords.len() == before {
        return Err(Error::NoSuchAppPassword {
            user: user.to_string(),
            id,
        });
    }
    Ok(())
}

/// One active device as an authenticator app needs it, for moving it to a
/// new phone or another otpd (`otpctl export`). The key is redacted in
/// `Debug` and zeroized on drop.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Its name.
    pub device: DeviceName,
    /// The key.
    pub secret: TotpSecret,
    /// Algorithm, digits, period.
    pub params: TotpParams,
    /// Issuer shown in the app.
    pub issuer: String,
    /// HOTP: the next counter value the token shows; `None` for TOTP.
    pub hotp_counter: Option<u64>,
    /// TOTP: the last time step accepted (so that an importing otpd
    /// refuses the codes already used here); `None` if none or HOTP.
    pub last_used_step: Option<u64>,
}

/// The active device `name` of the user (`None`: the first active one),
/// read only. A pending device is not exportable: it has not been proven
/// to work.
pub fn export_device(
    rec: &UserRecord,
    user: &UserName,
    name: Option<&DeviceName>,
) -> Result<Exported, Error> {
    let device = match name {
        Some(name) => rec
            .devices
            .iter()
            .find(|d| &d.name == name)
            .ok_or_else(|| no_such_device(user, name))?,
        None => rec.devices.first().ok_or_else(|| Error::NotEnrolled {
            user: user.to_string(),
        })?,
    };
    let hotp = device.kind == DeviceKind::Hotp;
    Ok(Exported {
        device: device.name.clone(),
        secret: device.secret.clone(),
        params: device.params,
        issuer: device.issuer.clone(),
        hotp_counter: hotp.then(|| device.last_used_step.map_or(0, |c| c.saturating_add(1))),
        last_used_step: if hotp { None } else { device.last_used_step },
    })
}

/// A device moved over from another tool.
#[derive(Debug, Clone)]
pub struct Import {
    /// Its name.
    pub device: DeviceName,
    /// The key.
    pub secret: TotpSecret,
    /// Algorithm, digits, period.
    pub params: TotpParams,
    /// Issuer (default: configured).
    pub issuer: Option<String>,
    /// The old tool's single-use codes, to become the backup codes; empty:
    /// backup codes unchanged.
    pub backup_codes: Vec<Code>,
    /// The last step the old tool saw used.
    pub last_used_step: Option<u64>,
    /// Replace the devices of an enrolled user.
    pub replace: bool,
    /// Counter-based: `last_used_step` is then the last used counter.
    pub hotp: bool,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The device's name.
    pub device: DeviceName,
    /// The user had devices, now replaced.
    pub replaced: bool,
    /// Backup codes the user has afterwards.
    pub backup_codes: u32,
}

/// Shortest and longest imported key, in bytes (80 bits is the RFC 4226
/// minimum and google-authenticator's size; 64 bytes is SHA-512's block).
pub const IMPORT_SECRET_LEN: std::ops::RangeInclusive<usize> = 10..=64;

/// Makes an imported device the user's (active at once: the user has the
/// secret in their app already). A user who is enrolled is refused unless
/// `replace`; then the devices are replaced, the counters cleared and a
/// pending enrollment dropped. One device of [`import_devices`].
pub fn import_device(
    rec: &mut UserRecord,
    user: &UserName,
    import: Import,
    now: u64,
    cfg: &Config,
    rng: &mut dyn Random,
    scratch: &dyn Scratch,
) -> Result<Imported, Error> {
    let done = import_devices(rec, user, vec![import], now, cfg, rng, scratch)?;
    Ok(Imported {
        device: done
            .devices
            .into_iter()
            .next()
            .ok_or(Error::Internal("an import of one device made none"))?,
        replaced: done.replaced,
        backup_codes: done.backup_codes,
    })
}

/// What an import of several devices of one user did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedDevices {
    /// The devices' names, in the order given.
    pub devices: Vec<DeviceName>,
    /// The user had devices, now replaced.
    pub replaced: bool,
    /// Backup codes the user has afterwards.
    pub backup_codes: u32,
}

/// The name of a user's `n`-th imported token (from 1) when every token
/// gets `base`: `base` for the first, `base-2`, `base-3`... for the
/// others (pam_oath lists a user with several tokens on several lines).
pub fn numbered_device_name(base: &DeviceName, n: usize) -> Result<DeviceName, Error> {
    if n <= 1 {
        return Ok(base.clone());
    }
    let suffix = format!("-{n}");
    let mut stem = base.as_str().to_owned();
    // Keep the name within its length limit: shorten the stem, not the
    // number.
    stem.truncate(crate::device::MAX_NAME_LEN.saturating_sub(suffix.len()));
    DeviceName::parse(&format!("{stem}{suffix}"))
}

/// Imports all of a user's devices from another tool in one decision:
/// either every device becomes the user's (active at once), or nothing
/// changes. The devices replace the user's devices as [`import_device`]
/// does (an enrolled user needs `replace`). Every import must agree on
/// `replace`, have a name of its own, and at most one may carry backup
/// codes; at most [`MAX_DEVICES`].
pub fn import_devices(
    rec: &mut UserRecord,
    user: &UserName,
    imports: Vec<Import>,
    now: u64,
    cfg: &Config,
    rng: &mut dyn Random,
    scratch: &dyn Scratch,
) -> Result<ImportedDevices, Error> {
    let Some(first) = imports.first() else {
        return Err(Error::InvalidArgument("an import needs a device".into()));
    };
    let replace = first.replace;
    if imports.len() > MAX_DEVICES {
        return Err(Error::TooMany {
            user: user.to_string(),
            what: "devices",
            max: MAX_DEVICES,
        });
    }
    if imports.iter().any(|i| i.replace != replace) {
        return Err(Error::InvalidArgument(
            "the devices of one import must all replace, or none".into(),
        ));
    }
    if imports
        .iter()
        .filter(|i| !i.backup_codes.is_empty())
        .count()
        > 1
    {
        return Err(Error::InvalidArgument(
            "only one imported device may bring backup codes".into(),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut issuers = Vec::with_capacity(imports.len());
    for import in &imports {
        validate_params(import.params)?;
        if !IMPORT_SECRET_LEN.contains(&import.secret.expose().len()) {
            return Err(Error::InvalidArgument(
                "the imported key must be 10 to 64 bytes".into(),
            ));
        }
        let issuer = import.issuer.clone().unwrap_or_else(|| cfg.issuer.clone());
        validate_issuer(&issuer)?;
        issuers.push(issuer);
        if !names.insert(import.device.clone()) {
            return Err(Error::DeviceExists {
                user: user.to_string(),
                device: import.device.to_string(),
            });
        }
    }
    let replaced = rec.is_enrolled();
    if replaced && !replace {
        return Err(Error::AlreadyEnrolled {
            user: user.to_string(),
        });
    }
    let backup = match imports.iter().find(|i| !i.backup_codes.is_empty()) {
        None => None,
        Some(import) => Some(BackupCodeSet::from_plain(
            &import.backup_codes,
            cfg.kdf,
            rng,
            scratch,
        )?),
    };
    let mut devices = Vec::with_capacity(imports.len());
    let mut named = Vec::with_capacity(imports.len());
    for (import, issuer) in imports.into_iter().zip(issuers) {
        named.push(import.device.clone());
        devices.push(Device {
            id: rng.next_u64(),
            name: import.device,
            secret: import.secret,
            params: import.params,
            issuer,
            enrolled_at: now,
            last_used_step: import.last_used_step,
            spent_ahead: Vec::new(),
            clock_skew_seconds: 0,
            last_used_at: None,
            kind: if import.hotp {
                DeviceKind::Hotp
            } else {
                DeviceKind::Totp
            },
            hotp_resync: None,
            drift_steps: 0,
            drift_streak: 0,
        });
    }
    rec.devices = devices;
    rec.pending = None;
    if let Some(set) = backup {
        rec.backup_codes = Some(set);
    }
    rec.counters = Default::default();
    rec.stranger_counters = Default::default();
    Ok(ImportedDevices {
        devices: named,
        replaced,
        backup_codes: backup_codes_left(rec),
    })
}

/// Issues new backup codes; all earlier ones become invalid.
pub fn regenerate_backup_codes(
    rec: &mut UserRecord,
    user: &UserName,
    cfg: &Config,
    rng: &mut dyn Random,
    scratch: &dyn Scratch,
) -> Result<Vec<PlainCode>, Error> {
    if !rec.is_enrolled() {
        return Err(Error::NotEnrolled {
            user: user.to_string(),
        });
    }
    let (plain, set) = BackupCodeSet::generate(cfg.kdf, rng, scratch)?;
    rec.backup_codes = Some(set);
    Ok(plain)
}

/// Clears lockout, throttle and failure counters (of trusted and unknown
/// origins alike).
pub fn unlock(rec: &mut UserRecord) {
    rec.counters = Default::default();
    rec.stranger_counters = Default::default();
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

/// The otpauth:// URI of a new HOTP device (totp-rs writes TOTP URIs
/// only): Google's Key Uri Format, counter 0.
fn hotp_uri(
    secret: &TotpSecret,
    params: TotpParams,
    issuer: &str,
    user: &UserName,
) -> Zeroizing<String> {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    Zeroizing::new(format!(
        "otpauth://hotp/{}:{}?secret={}&issuer={}&algorithm={}&digits={}&counter=0",
        enc(issuer),
        enc(user.as_str()),
        secret.to_base32().as_str(),
        enc(issuer),
        params.algorithm.name().to_ascii_uppercase(),
        params.digits
    ))
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

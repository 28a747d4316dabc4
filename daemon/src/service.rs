//! The gRPC handlers: wire types in, domain calls, wire types out. The one
//! mapping from domain errors to `tonic::Status` lives here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use otpd_proto::v1 as pb;
use pb::otpd_server::Otpd;
use tonic::{Request, Response, Status};

use crate::app_password::AppPasswordInput;
use crate::audit;
use crate::authz::{Authz, Caller, Peer};
use crate::decider::Decider;
use crate::device::DeviceName;
use crate::engine::{
    self, BackupAttempt, Credential, Decision, Engine, EnrollOptions, EnrollStarted,
    LocalRequester, LoginContext, Reason, Rejection, SelfChange, SelfDone, SelfOutcome, SelfStep,
    Verdict, Verification, Via,
};
use crate::error::Error;
use crate::record::{Method, UserName};
use crate::secret::Code;
use crate::totp::Algorithm;
use otpd_core::enforcement::{self, Enforcement, Requirement};
use otpd_core::grace::Match;

/// The otpd.v1 service.
#[derive(Debug, Clone)]
pub struct OtpdService {
    engine: Arc<Engine>,
    authz: Arc<Authz>,
    /// A task that gives idle KDF memory back is pending.
    kdf_release_pending: Arc<AtomicBool>,
    /// Encrypted backups (`None`: the Backup RPCs fail).
    backups: Option<Arc<crate::backup::Backups>>,
    /// Decides Verify calls in batches (group commit).
    decider: Arc<Decider>,
}

impl OtpdService {
    /// `Verify` with `grace_only` (pam_otpd, before it prompts): whether
    /// `[grace]` lets this login in without a code. Nothing is checked or
    /// counted; an accepted grace is audited as method "grace". Only root
    /// callers: the origin they report is what the grace is matched on.
    async fn grace(
        &self,
        caller: &Caller,
        user: &UserName,
        r: pb::VerifyRequest,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        if let Err(e) = caller.require_admin("asking for a grace") {
            return fail(caller, "verify", user, e);
        }
        let ctx = self.login_context(caller, &r);
        let (u, c) = (user.clone(), ctx.clone());
        let admitted = self
            .run(move |e| Ok(e.grace_admits(&u, &c)))
            .await
            .unwrap_or(false);
        if !admitted {
            return Ok(Response::new(pb::VerifyResponse::default()));
        }
        audit::grace(caller, user.as_str(), &ctx);
        Ok(Response::new(pb::VerifyResponse {
            decision: pb::Decision::Accepted as i32,
            reason: pb::Reason::Ok as i32,
            method: pb::Method::Grace as i32,
            ..Default::default()
        }))
    }

    /// What a Verify caller tells besides user and credential. With a
    /// `[grace]` bound to the login session, also the caller's process
    /// lineage, read from `/proc` for root callers only (the PAM module):
    /// the kernel's record of who runs the PAM stack, which no caller can
    /// forge.
    fn login_context(&self, caller: &Caller, r: &pb::VerifyRequest) -> LoginContext {
        let grace = &self.engine.config().grace;
        let lineage = match caller.pid {
            Some(pid) if caller.uid == 0 && grace.seconds > 0 && grace.by == Match::Session => {
                crate::lineage::of(pid)
            }
            _ => Default::default(),
        };
        LoginContext {
            service: context_field(r.service.clone()),
            remote_host: context_field(r.remote_host.clone()),
            tty: context_field(r.tty.clone()),
            requester: local_requester(caller, r.local_requester),
            lineage,
        }
    }

    /// A service deciding with `engine`, authorising with `authz`.
    ///
    /// # Errors
    /// When the deciding threads cannot be started.
    pub fn new(engine: Arc<Engine>, authz: Arc<Authz>) -> Result<Self, Error> {
        let decider = Arc::new(Decider::start(&engine)?);
        Ok(Self {
            engine,
            authz,
            kdf_release_pending: Arc::default(),
            backups: None,
            decider,
        })
    }

    /// Serves the backup RPCs with `backups`.
    pub fn with_backups(mut self, backups: Arc<crate::backup::Backups>) -> Self {
        self.backups = Some(backups);
        self
    }

    /// A root-only backup call: checks the caller and that backups exist.
    fn backup_caller(
        &self,
        caller: &Caller,
        action: &'static str,
    ) -> Result<Arc<crate::backup::Backups>, Status> {
        let refused = |e: Error| {
            audit::refused(Some(caller), action, None, &e);
            Err(Status::from(e))
        };
        if caller.uid != 0 {
            return refused(Error::PermissionDenied(
                "backups and restores are for root only".into(),
            ));
        }
        match &self.backups {
            Some(b) => Ok(Arc::clone(b)),
            None => refused(Error::Internal(
                "backups are not set up in this daemon".into(),
            )),
        }
    }

    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let peer = req.extensions().get::<Peer>().cloned();
        self.authz.caller(peer.as_ref()).await.map_err(|e| {
            audit::refused(None, "connect", None, &e);
            Status::from(e)
        })
    }

    /// An admin-only call on one user: validates the name, checks the
    /// caller, runs `op` off the async workers, and audits the outcome.
    async fn admin_call<T, F>(
        &self,
        caller: &Caller,
        raw_user: &[u8],
        action: &'static str,
        what: &str,
        op: F,
    ) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine, &UserName) -> Result<T, Error> + Send + 'static,
    {
        let user = parse_user(raw_user, caller, action)?;
        if let Err(e) = caller.require_admin(what) {
            return fail(caller, action, &user, e);
        }
        let u = user.clone();
        match self.run(move |e| op(e, &u)).await {
            Ok(value) => {
                audit::admin(caller, action, user.as_str());
                Ok(value)
            }
            Err(e) => fail(caller, action, &user, e),
        }
    }

    /// A plain user's change of their own account (self-service): the
    /// caller must be `user`; the engine decides proof and change in one
    /// atomic step ([`Engine::self_service`]). Audited where decided (on
    /// the blocking worker, so a caller that hangs up cannot leave it
    /// unaudited): the change with the caller and how possession was
    /// proven, a refused proof as a login's refusal (service "otpctl"),
    /// and every refusal with its reason.
    async fn self_call(
        &self,
        caller: &Caller,
        user: &UserName,
        action: &'static str,
        proof: &[u8],
        change: SelfChange,
        kdf_deadline: tokio::time::Instant,
    ) -> Result<SelfDone, Status> {
        if let Err(e) = caller.require_self_or_admin(user, "change the second factor") {
            return fail(caller, action, user, e);
        }
        let what = change.action().what();
        let proof = if proof.is_empty() {
            None
        } else {
            match Code::parse(proof) {
                Ok(c) => Some(c),
                Err(e) => return fail(caller, action, user, e.into()),
            }
        };
        // The caller is the user, on this machine: their failures count
        // where their console logins' do.
        let ctx = LoginContext {
            service: "otpctl".into(),
            remote_host: String::new(),
            tty: String::new(),
            requester: Some(LocalRequester {
                uid: caller.uid,
                is_target_user: true,
            }),
            lineage: Default::default(),
        };
        let policy = *self.authz.self_service();
        let (u, c, who) = (user.clone(), ctx.clone(), caller.clone());
        let first = self
            .run(move |e| {
                let step = e.self_service(&u, proof, change, &policy, &c);
                if let Ok(SelfStep::Done(o)) = &step {
                    audit_self(&who, action, &u, &c, o);
                }
                step
            })
            .await;
        let outcome = match first {
            Ok(SelfStep::Done(o)) => Ok(o),
            Ok(SelfStep::NeedsKdf(pending)) => {
                let permits = Arc::clone(self.engine.kdf_permits());
                match tokio::time::timeout_at(kdf_deadline, permits.acquire_owned()).await {
                    Ok(Ok(permit)) => {
                        let (u, c, who) = (user.clone(), ctx.clone(), caller.clone());
                        let r = self
                            .run(move |e| {
                                let r = e.self_service_kdf(pending, &policy, &c);
                                drop(permit);
                                if let Ok(o) = &r {
                                    audit_self(&who, action, &u, &c, o);
                                }
                                r
                            })
                            .await;
                        self.release_kdf_memory_when_idle();
                        r
                    }
                    // Closed (never) or timed out: not checked, not counted.
                    Ok(Err(_)) | Err(_) => {
                        let o = SelfOutcome::Refused(Verdict::Busy);
                        audit_self(caller, action, user, &ctx, &o);
                        Ok(o)
                    }
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(SelfOutcome::Applied { done, .. }) => Ok(done),
            Ok(SelfOutcome::Refused(verdict)) => {
                let e = otpd_core::Error::ProofRefused {
                    what,
                    reason: otpd_core::ops::self_service::refusal(&verdict),
                };
                fail(caller, action, user, e.into())
            }
            Err(e) => fail(caller, action, user, e),
        }
    }

    /// Second phase of a Verify that may be a backup code: waits (async,
    /// holding no lock and no thread) for a KDF permit until `deadline`,
    /// then hashes and decides on a blocking thread. Without a permit in
    /// time the attempt is refused unchecked and not counted. The permit
    /// and the attempt move into the blocking task, so they are released
    /// when the work ends even if the client went away.
    ///
    /// The verdict is audited where it is made, on the blocking worker: a
    /// caller that hangs up while the code is checked cannot make a
    /// decision go unaudited.
    async fn check_backup_code(
        &self,
        attempt: BackupAttempt,
        caller: &Caller,
        ctx: &LoginContext,
        deadline: tokio::time::Instant,
    ) -> Result<Verdict, Error> {
        let permits = Arc::clone(self.engine.kdf_permits());
        let permit = match tokio::time::timeout_at(deadline, permits.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            // Closed (never) or timed out.
            Ok(Err(_)) | Err(_) => {
                let user = attempt.user().clone();
                let verdict = attempt.not_checked();
                audit::verify(caller, user.as_str(), ctx, &verdict);
                return Ok(verdict);
            }
        };
        let (ctx, caller) = (ctx.clone(), caller.clone());
        let verdict = self
            .run(move |e| {
                let user = attempt.user().clone();
                let verdict = e.verify_kdf(attempt, &ctx);
                drop(permit);
                if let Ok(v) = &verdict {
                    audit::verify(&caller, user.as_str(), &ctx, v);
                }
                verdict
            })
            .await;
        self.release_kdf_memory_when_idle();
        verdict
    }

    /// Makes sure the KDF working memory is given back to the system once
    /// no hash used it for [`KDF_MEMORY_IDLE`] (one task at a time).
    fn release_kdf_memory_when_idle(&self) {
        if self.kdf_release_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let engine = Arc::clone(&self.engine);
        let pending = Arc::clone(&self.kdf_release_pending);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(KDF_MEMORY_IDLE).await;
                if engine.release_idle_kdf_memory(KDF_MEMORY_IDLE) > 0 {
                    continue;
                }
                pending.store(false, Ordering::Release);
                // A hash that started meanwhile saw the flag still set and
                // left the release to this task.
                if engine.kdf_memory_held() == 0 || pending.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }

    /// Runs blocking engine work (fsync, Argon2) off the async workers.
    /// What the enforcement policy says about `user` (`None` when it
    /// covers nobody). Looks the user's groups up in the name service
    /// (bounded in time; a failure covers the user: fail closed).
    async fn enforcement_of(&self, user: &str, enrolled: bool) -> Option<pb::Enforcement> {
        let policy = &self.engine.config().enforcement;
        if !policy.is_active() {
            return None;
        }
        let membership = crate::membership::of(user, policy.min_uid).await;
        let requirement = policy.requirement(user, &membership, enrolled, self.engine.now());
        let self_enroll = self.authz.self_service().enroll;
        Some(enforcement_to_wire(policy, requirement, self_enroll))
    }

    async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, Error> + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| Error::Internal(format!("worker failed: {e}")))?
    }
}

impl From<Error> for Status {
    /// The one mapping from errors to statuses. Exhaustive: a new variant
    /// is a compile error here, never a silent INTERNAL.
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::Core(c) => match c {
                otpd_core::Error::InvalidUser(_)
                | otpd_core::Error::InvalidCode(_)
                | otpd_core::Error::InvalidArgument(_) => Status::invalid_argument(msg),
                otpd_core::Error::NotEnrolled { .. }
                | otpd_core::Error::NoSuchDevice { .. }
                | otpd_core::Error::NoSuchAppPassword { .. } => Status::not_found(msg),
                otpd_core::Error::NoPendingEnrollment { .. }
                | otpd_core::Error::EnrollmentExpired { .. }
                | otpd_core::Error::AlreadyEnrolled { .. }
                | otpd_core::Error::NoActiveDevice { .. }
                | otpd_core::Error::LastDevice { .. }
                | otpd_core::Error::TooMany { .. } => Status::failed_precondition(msg),
                otpd_core::Error::DeviceExists { .. } => Status::already_exists(msg),
                otpd_core::Error::ConfirmMismatch
                | otpd_core::Error::ProofRequired { .. }
                | otpd_core::Error::ProofRefused { .. } => Status::unauthenticated(msg),
                otpd_core::Error::SelfServiceDisabled { .. } => Status::permission_denied(msg),
                otpd_core::Error::Corrupted { .. } | otpd_core::Error::NewerRecord { .. } => {
                    Status::data_loss(msg)
                }
                otpd_core::Error::Internal(_) => Status::internal(msg),
            },
            Error::PermissionDenied(_) => Status::permission_denied(msg),
            Error::RolledBack { .. } => Status::data_loss(msg),
            // Not UNAVAILABLE: the daemon answered, so a PAM stack with
            // fail_mode=open must not let the login through.
            Error::StoreLocked { .. }
            | Error::Store(_)
            | Error::StoreUnavailable { .. }
            | Error::StoreContended { .. }
            | Error::Watermark { .. }
            | Error::Key { .. }
            | Error::StateDir { .. }
            | Error::Config { .. }
            | Error::Socket { .. }
            | Error::Backup { .. }
            | Error::Internal(_) => Status::internal(msg),
            Error::BackupKey(_) => Status::failed_precondition(msg),
        }
    }
}

/// Audits a self-service decision: the change, or the refused proof (as a
/// login's refusal).
fn audit_self(
    caller: &Caller,
    action: &'static str,
    user: &UserName,
    ctx: &LoginContext,
    outcome: &SelfOutcome,
) {
    match outcome {
        SelfOutcome::Applied { proof, .. } => {
            audit::self_service(caller, action, user.as_str(), proof.as_ref());
        }
        SelfOutcome::Refused(verdict) => audit::verify(caller, user.as_str(), ctx, verdict),
    }
}

/// The answer of a self-service call that should have given `what`
/// (never happens); audited like every refusal.
fn unexpected(caller: &Caller, action: &'static str) -> Status {
    refuse(
        caller,
        action,
        None,
        Error::Internal(format!("{action}: the engine answered with another result")),
    )
}

/// Audits the refusal of `caller`'s request and makes it a status: the way
/// every error leaves a handler (see also [`fail`] and [`parse_user`]).
fn refuse(caller: &Caller, action: &'static str, user: Option<&str>, e: Error) -> Status {
    audit::refused(Some(caller), action, user, &e);
    Status::from(e)
}

fn started_to_wire(user: String, started: &EnrollStarted) -> pb::EnrollStartResponse {
    pb::EnrollStartResponse {
        user,
        secret_base32: started.secret_base32.as_str().to_owned(),
        otpauth_uri: started.otpauth_uri.as_str().to_owned(),
        algorithm: algorithm_to_wire(started.params.algorithm) as i32,
        digits: u32::from(started.params.digits),
        period: u32::try_from(started.params.period).unwrap_or(u32::MAX),
        issuer: started.issuer.clone(),
        device: started.device.to_string(),
    }
}

fn parse_user(raw: &[u8], caller: &Caller, action: &'static str) -> Result<UserName, Status> {
    UserName::parse(raw).map_err(|e| {
        let e = Error::from(e);
        audit::refused(Some(caller), action, None, &e);
        Status::from(e)
    })
}

fn fail<T>(caller: &Caller, action: &'static str, user: &UserName, e: Error) -> Result<T, Status> {
    audit::refused(Some(caller), action, Some(user.as_str()), &e);
    Err(Status::from(e))
}

fn algorithm_to_wire(a: Algorithm) -> pb::Algorithm {
    match a {
        Algorithm::Sha1 => pb::Algorithm::Sha1,
        Algorithm::Sha256 => pb::Algorithm::Sha256,
        Algorithm::Sha512 => pb::Algorithm::Sha512,
    }
}

fn method_to_wire(m: Option<Method>) -> pb::Method {
    match m {
        Some(Method::Totp) => pb::Method::Totp,
        Some(Method::BackupCode) => pb::Method::BackupCode,
        Some(Method::AppPassword) => pb::Method::AppPassword,
        None => pb::Method::Unspecified,
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn verdict_to_wire(v: &Verdict) -> pb::VerifyResponse {
    let mut wire = pb::VerifyResponse {
        decision: match v.decision() {
            Decision::Accepted => pb::Decision::Accepted,
            Decision::Rejected => pb::Decision::Rejected,
            Decision::Locked => pb::Decision::Locked,
            Decision::Throttled => pb::Decision::Throttled,
            Decision::NotEnrolled => pb::Decision::NotEnrolled,
        } as i32,
        reason: match v.reason() {
            Reason::Ok => pb::Reason::Ok,
            // The caller learns "wrong", not which check failed.
            Reason::WrongCode | Reason::AppPassword(_) | Reason::OutOfSync => pb::Reason::WrongCode,
            Reason::Replayed => pb::Reason::Replayed,
            Reason::ClockSkew => pb::Reason::ClockSkew,
            Reason::Locked => pb::Reason::Locked,
            Reason::Throttled | Reason::Busy => pb::Reason::Throttled,
            Reason::NotEnrolled => pb::Reason::NotEnrolled,
        } as i32,
        retry_after_seconds: v.retry_after(),
        ..pb::VerifyResponse::default()
    };
    match v {
        Verdict::Accepted {
            via,
            backup_codes_left,
            backup_codes_low,
            recovery_nudge,
        } => {
            wire.method = method_to_wire(Some(via.method())) as i32;
            wire.backup_codes_left = *backup_codes_left;
            wire.backup_codes_low = *backup_codes_low;
            wire.recovery_nudge = *recovery_nudge;
            match via {
                Via::Totp { device } => wire.device = device.to_string(),
                Via::AppPassword { id } => wire.app_password_id = id.clone(),
                Via::BackupCode => {}
            }
        }
        Verdict::Rejected {
            rejection: Rejection::ClockSkew { skew_seconds },
            ..
        } => wire.clock_skew_seconds = *skew_seconds,
        Verdict::Rejected { .. }
        | Verdict::Locked { .. }
        | Verdict::Throttled { .. }
        | Verdict::Busy
        | Verdict::NotEnrolled => {}
    }
    wire
}

fn enforcement_to_wire(policy: &Enforcement, r: Requirement, self_enroll: bool) -> pb::Enforcement {
    pb::Enforcement {
        must_enroll: r.must_enroll(),
        deadline: policy.deadline.map_or(0, clamp_i64),
        deadline_date: policy
            .deadline
            .map(enforcement::format_date)
            .unwrap_or_default(),
        refused: matches!(r, Requirement::Overdue { .. }),
        contact: policy.contact.clone(),
        self_enroll,
    }
}

/// Bytes of users a ListUsers reply carries at most: under
/// [`crate::server::MAX_REPLY`] with room for the rest of the reply
/// (1,000 users with several devices each do not fit in one).
pub const LIST_REPLY_BUDGET: usize = crate::server::MAX_REPLY - 4 * 1024;

/// The reply for `page`, cut short (at least one user kept) where its
/// users would pass [`LIST_REPLY_BUDGET`]: it then ends at the last user
/// it holds, and the next call goes on from there.
fn list_reply(page: engine::UserPage) -> pb::ListUsersResponse {
    use prost::Message as _;
    let mut reply = pb::ListUsersResponse {
        next_after: page.next_after.unwrap_or_default(),
        ..Default::default()
    };
    let mut size: usize = page.unreadable.iter().map(|u| u.len() + 3).sum();
    for s in page.users {
        let wire = status_to_wire(s);
        let len = wire.encoded_len() + 4;
        if !reply.users.is_empty() && size + len > LIST_REPLY_BUDGET {
            if let Some(last) = reply.users.last() {
                reply.next_after = last.user.clone();
            }
            let cut = reply.next_after.clone();
            reply.unreadable = page.unreadable.into_iter().filter(|u| *u <= cut).collect();
            return reply;
        }
        size += len;
        reply.users.push(wire);
    }
    reply.unreadable = page.unreadable;
    reply
}

/// The filters of a ListUsers call; `low_warning`: the threshold of
/// `low_backup_codes` when the caller gives none.
fn list_filter(r: &pb::ListUsersRequest, low_warning: u32) -> engine::ListFilter {
    engine::ListFilter {
        locked: r.locked,
        pending: r.pending,
        backup_codes_at_most: r
            .low_backup_codes
            .then(|| r.backup_codes_at_most.unwrap_or(low_warning)),
        no_recovery_path: r.no_recovery_path,
    }
}

fn status_to_wire(s: engine::UserStatus) -> pb::UserStatus {
    let no_recovery_path = s.no_recovery_path();
    pb::UserStatus {
        enforcement: None,
        no_recovery_path,
        user: s.user,
        state: match s.state {
            engine::State::NotEnrolled => pb::State::NotEnrolled,
            engine::State::Pending => pb::State::Pending,
            engine::State::Active => pb::State::Active,
            engine::State::Locked => pb::State::Locked,
        } as i32,
        algorithm: s.params.map_or(pb::Algorithm::Unspecified, |p| {
            algorithm_to_wire(p.algorithm)
        }) as i32,
        digits: s.params.map_or(0, |p| u32::from(p.digits)),
        period: s
            .params
            .map_or(0, |p| u32::try_from(p.period).unwrap_or(u32::MAX)),
        backup_codes_left: s.backup_codes_left,
        consecutive_failures: s.consecutive_failures,
        locked_until: clamp_i64(s.locked_until),
        strangers_consecutive_failures: s.stranger_failures,
        strangers_locked_until: clamp_i64(s.strangers_locked_until),
        last_success: s.last_success.map(|l| pb::LastSuccess {
            time: clamp_i64(l.time),
            service: l.service,
            remote_host: l.remote_host,
            method: method_to_wire(Some(l.method)) as i32,
            device: match l.method {
                Method::Totp => l.credential.unwrap_or_default(),
                Method::BackupCode | Method::AppPassword => String::new(),
            },
        }),
        enrolled_at: clamp_i64(s.enrolled_at),
        pending: s.pending,
        clock_skew_seconds: s.clock_skew_seconds,
        rolled_back_at: clamp_i64(s.rolled_back_at),
        devices: s
            .devices
            .into_iter()
            .map(|d| pb::Device {
                name: d.name,
                algorithm: algorithm_to_wire(d.params.algorithm) as i32,
                digits: u32::from(d.params.digits),
                period: u32::try_from(d.params.period).unwrap_or(u32::MAX),
                issuer: d.issuer,
                enrolled_at: clamp_i64(d.enrolled_at),
                last_used: clamp_i64(d.last_used.unwrap_or(0)),
                clock_skew_seconds: d.clock_skew_seconds,
                hotp: d.hotp_counter.is_some(),
                counter: d.hotp_counter.unwrap_or(0),
                drift_steps: d.drift_steps,
            })
            .collect(),
        pending_device: s.pending_device.unwrap_or_default(),
        pending_expires_at: clamp_i64(s.pending_expires_at.unwrap_or(0)),
        pending_seconds_left: s.pending_seconds_left,
        app_passwords: s.app_passwords,
    }
}

fn app_password_to_wire(p: engine::AppPasswordStatus) -> pb::AppPassword {
    pb::AppPassword {
        id: p.id,
        service: p.service,
        label: p.label,
        created_at: clamp_i64(p.created_at),
        last_used: clamp_i64(p.last_used.unwrap_or(0)),
        expires_at: clamp_i64(p.expires_at.unwrap_or(0)),
    }
}

/// The core's import from its wire form (the key never appears in an
/// error).
fn import_from_wire(r: pb::ImportDeviceRequest) -> Result<otpd_core::ops::Import, Error> {
    let algorithm = match pb::Algorithm::try_from(r.algorithm) {
        Ok(pb::Algorithm::Unspecified | pb::Algorithm::Sha1) => Algorithm::Sha1,
        Ok(pb::Algorithm::Sha256) => Algorithm::Sha256,
        Ok(pb::Algorithm::Sha512) => Algorithm::Sha512,
        Err(_) => return Err(invalid(format!("unknown algorithm {}", r.algorithm))),
    };
    let digits = match r.digits {
        0 => 6,
        d => u8::try_from(d).map_err(|_| invalid(format!("digits must be 6 or 8, not {d}")))?,
    };
    let backup_codes = r
        .backup_codes
        .iter()
        .map(|c| Code::parse(c.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(otpd_core::ops::Import {
        device: if r.device.is_empty() {
            DeviceName::default_name()
        } else {
            device_name(&r.device)?
        },
        secret: crate::secret::TotpSecret::from_bytes(r.secret.to_vec()),
        params: crate::totp::TotpParams {
            algorithm,
            digits,
            period: if r.period == 0 {
                30
            } else {
                u64::from(r.period)
            },
        },
        issuer: (!r.issuer.is_empty()).then_some(r.issuer),
        backup_codes,
        last_used_step: if r.hotp {
            r.hotp_counter.checked_sub(1)
        } else {
            (r.last_used_step > 0).then_some(r.last_used_step)
        },
        replace: r.replace,
        hotp: r.hotp,
    })
}

/// Most users in one ImportUsers call.
pub const MAX_IMPORT_BATCH: usize = 1000;

/// The result of a user whose import failed (or was skipped: enrolled).
fn import_failed(user: String, e: &Error) -> pb::ImportUserResult {
    let outcome = match e {
        Error::Core(otpd_core::Error::AlreadyEnrolled { .. }) => {
            pb::import_user_result::Outcome::AlreadyEnrolled
        }
        _ => pb::import_user_result::Outcome::Failed,
    };
    pb::ImportUserResult {
        user,
        outcome: outcome as i32,
        reason: e.to_string(),
        ..pb::ImportUserResult::default()
    }
}

fn device_name(raw: &str) -> Result<DeviceName, Error> {
    Ok(DeviceName::parse(raw)?)
}

fn invalid(msg: String) -> Error {
    Error::Core(otpd_core::Error::InvalidArgument(msg))
}

fn enroll_options(r: &pb::EnrollStartRequest) -> Result<EnrollOptions, Error> {
    let algorithm = match pb::Algorithm::try_from(r.algorithm) {
        Ok(pb::Algorithm::Unspecified) => None,
        Ok(pb::Algorithm::Sha1) => Some(Algorithm::Sha1),
        Ok(pb::Algorithm::Sha256) => Some(Algorithm::Sha256),
        Ok(pb::Algorithm::Sha512) => Some(Algorithm::Sha512),
        Err(_) => {
            return Err(invalid(format!("unknown algorithm {}", r.algorithm)));
        }
    };
    let digits = match r.digits {
        0 => None,
        d => Some(u8::try_from(d).map_err(|_| invalid(format!("digits must be 6 or 8, not {d}")))?),
    };
    Ok(EnrollOptions {
        device: if r.device.is_empty() {
            None
        } else {
            Some(device_name(&r.device)?)
        },
        add: r.add_device,
        hotp: r.hotp,
        issuer: (!r.issuer.is_empty()).then(|| r.issuer.clone()),
        algorithm,
        digits,
        period: (r.period != 0).then_some(u64::from(r.period)),
    })
}

fn codes_to_wire(codes: Vec<crate::backup_codes::PlainCode>) -> Vec<String> {
    codes.iter().map(|c| c.as_str().to_owned()).collect()
}

/// Longest wait for a backup-code hash slot; a shorter `grpc-timeout` of the
/// caller shortens it (less [`KDF_MARGIN`], left for the hash and the
/// reply).
pub const MAX_KDF_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long backup-code working memory stays after its last use.
pub const KDF_MEMORY_IDLE: std::time::Duration = std::time::Duration::from_secs(10);
/// Time kept back from the caller's deadline for the hash and the reply.
pub const KDF_MARGIN: std::time::Duration = std::time::Duration::from_millis(300);

/// Until when a backup-code attempt may wait for a hash slot.
fn kdf_deadline(metadata: &tonic::metadata::MetadataMap) -> tokio::time::Instant {
    let wait = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(MAX_KDF_WAIT, |t| {
            t.saturating_sub(KDF_MARGIN).min(MAX_KDF_WAIT)
        });
    tokio::time::Instant::now() + wait
}

/// A `grpc-timeout` header value: 1 to 8 digits and a unit (H, M, S, m, u,
/// n). `None` if malformed.
fn parse_grpc_timeout(v: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (digits, unit) = v.split_at_checked(v.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Longest service / remote host / tty string kept.
const MAX_CONTEXT_LEN: usize = 256;

fn context_field(s: String) -> String {
    if s.len() <= MAX_CONTEXT_LEN {
        return s;
    }
    let mut end = MAX_CONTEXT_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Who runs the PAM stack, as the caller reports it: believed from root
/// (the PAM module, on the root-only PAM socket) only. Any other caller may
/// verify only its own account and is ignored here, so it cannot move its
/// attempts between the buckets.
fn local_requester(caller: &Caller, wire: Option<pb::LocalRequester>) -> Option<LocalRequester> {
    if caller.uid != 0 {
        return None;
    }
    wire.map(|r| LocalRequester {
        uid: r.uid,
        is_target_user: r.is_target_user,
    })
}

#[tonic::async_trait]
impl Otpd for OtpdService {
    async fn import_device(
        &self,
        request: Request<pb::ImportDeviceRequest>,
    ) -> Result<Response<pb::ImportDeviceResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let dry_run = r.dry_run;
        let source = context_field(r.source.clone());
        let user = String::from_utf8_lossy(&r.user).into_owned();
        let raw_user = r.user.clone();
        let imported = self
            .admin_call(
                &caller,
                &raw_user,
                if dry_run {
                    "import_device_dry_run"
                } else {
                    "import_device"
                },
                "importing devices",
                move |e, u| {
                    let import = import_from_wire(r)?;
                    e.import_device(u, import, dry_run)
                },
            )
            .await?;
        if !dry_run {
            tracing::info!(
                target: audit::TARGET,
                event = "import",
                user = audit::clip(&user),
                device = imported.device.as_str(),
                replaced = imported.replaced,
                backup_codes = imported.backup_codes,
                source = audit::clip(&source),
                peer_uid = caller.uid,
            );
        }
        Ok(Response::new(pb::ImportDeviceResponse {
            user,
            device: imported.device.to_string(),
            replaced: imported.replaced,
            backup_codes: imported.backup_codes,
            dry_run,
        }))
    }

    async fn export_device(
        &self,
        request: Request<pb::ExportDeviceRequest>,
    ) -> Result<Response<pb::ExportDeviceResponse>, Status> {
        const ACTION: &str = "export_device";
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let user = parse_user(&r.user, &caller, ACTION)?;
        // Root only, not the admin group: whoever holds the reply can
        // compute the user's codes from anywhere, without a trace here.
        if caller.uid != 0 {
            let e = Error::PermissionDenied(
                "only root may export a device's secret (otpctl export)".into(),
            );
            return fail(&caller, ACTION, &user, e);
        }
        let device = match r.device.as_str() {
            "" => None,
            name => match device_name(name) {
                Ok(name) => Some(name),
                Err(e) => return fail(&caller, ACTION, &user, e),
            },
        };
        let u = user.clone();
        let exported = match self
            .run(move |e| e.export_device(&u, device.as_ref()))
            .await
        {
            Ok(exported) => exported,
            Err(e) => return fail(&caller, ACTION, &user, e),
        };
        audit::export(
            &caller,
            user.as_str(),
            exported.device.as_str(),
            &context_field(r.format),
        );
        let p = exported.params;
        Ok(Response::new(pb::ExportDeviceResponse {
            user: user.to_string(),
            device: exported.device.to_string(),
            secret: exported.secret.expose().to_vec().into(),
            algorithm: algorithm_to_wire(p.algorithm) as i32,
            digits: u32::from(p.digits),
            period: if exported.hotp_counter.is_some() {
                0
            } else {
                u32::try_from(p.period).unwrap_or(u32::MAX)
            },
            issuer: exported.issuer.clone(),
            hotp: exported.hotp_counter.is_some(),
            hotp_counter: exported.hotp_counter.unwrap_or(0),
            last_used_step: exported.last_used_step.unwrap_or(0),
        }))
    }

    async fn import_users(
        &self,
        request: Request<pb::ImportUsersRequest>,
    ) -> Result<Response<pb::ImportUsersResponse>, Status> {
        const ACTION: &str = "import_users";
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        if let Err(e) = caller.require_admin("importing devices") {
            audit::refused(Some(&caller), ACTION, None, &e);
            return Err(Status::from(e));
        }
        if r.users.is_empty() || r.users.len() > MAX_IMPORT_BATCH {
            let e = invalid(format!(
                "a batch holds 1 to {MAX_IMPORT_BATCH} users, not {}",
                r.users.len()
            ));
            audit::refused(Some(&caller), ACTION, None, &e);
            return Err(Status::from(e));
        }
        let dry_run = r.dry_run;
        // Users whose request does not even parse fail here; the others go
        // to the engine as one batch.
        let mut results: Vec<Option<pb::ImportUserResult>> = Vec::with_capacity(r.users.len());
        let mut batch = Vec::with_capacity(r.users.len());
        let mut places = Vec::with_capacity(r.users.len());
        for (i, u) in r.users.into_iter().enumerate() {
            let name = String::from_utf8_lossy(&u.user).into_owned();
            let source = context_field(u.source);
            let parsed = UserName::parse(&u.user)
                .map_err(Error::from)
                .and_then(|user| {
                    let imports = u
                        .devices
                        .into_iter()
                        .map(|d| {
                            import_from_wire(pb::ImportDeviceRequest {
                                replace: u.replace,
                                ..d
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((user, imports))
                });
            match parsed {
                Ok(entry) => {
                    batch.push(entry);
                    places.push((i, name, source));
                    results.push(None);
                }
                Err(e) => {
                    audit::refused(Some(&caller), ACTION, Some(&name), &e);
                    results.push(Some(import_failed(name, &e)));
                }
            }
        }
        let outcomes = if batch.is_empty() {
            Vec::new()
        } else {
            match self.run(move |e| e.import_users(batch, dry_run)).await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    audit::refused(Some(&caller), ACTION, None, &e);
                    return Err(Status::from(e));
                }
            }
        };
        for ((i, user, source), outcome) in places.into_iter().zip(outcomes) {
            let result = match outcome {
                Ok(done) => {
                    if !dry_run {
                        let devices: Vec<&str> =
                            done.devices.iter().map(DeviceName::as_str).collect();
                        let devices = devices.join(",");
                        tracing::info!(
                            target: audit::TARGET,
                            event = "import",
                            user = audit::clip(&user),
                            device = audit::clip(&devices),
                            replaced = done.replaced,
                            backup_codes = done.backup_codes,
                            source = audit::clip(&source),
                            peer_uid = caller.uid,
                        );
                    }
                    pb::ImportUserResult {
                        user,
                        outcome: pb::import_user_result::Outcome::Imported as i32,
                        reason: String::new(),
                        devices: done.devices.iter().map(ToString::to_string).collect(),
                        replaced: done.replaced,
                        backup_codes: done.backup_codes,
                    }
                }
                Err(e) => {
                    audit::refused(Some(&caller), ACTION, Some(&user), &e);
                    import_failed(user, &e)
                }
            };
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(result);
            }
        }
        Ok(Response::new(pb::ImportUsersResponse {
            results: results.into_iter().flatten().collect(),
        }))
    }

    async fn get_backup_status(
        &self,
        request: Request<pb::GetBackupStatusRequest>,
    ) -> Result<Response<pb::BackupStatus>, Status> {
        let caller = self.caller(&request).await?;
        let backups = self.backup_caller(&caller, "backup_status")?;
        let s = backups.status();
        let key = s.key.as_ref();
        let (last_backup_time, last_backup_file) = s
            .last
            .map_or((0, String::new()), |(t, f)| (t, f.display().to_string()));
        let (last_error_time, last_error) = s.last_error.unwrap_or_default();
        Ok(Response::new(pb::BackupStatus {
            configured: key.is_some(),
            recipient: key.map(|k| k.recipient.clone()).unwrap_or_default(),
            kdf_salt: key.map(|k| k.kdf.salt.clone()).unwrap_or_default(),
            kdf_m_kib: key.map_or(0, |k| k.kdf.kdf.m_kib),
            kdf_t: key.map_or(0, |k| k.kdf.kdf.t),
            kdf_p: key.map_or(0, |k| k.kdf.kdf.p),
            key_set_at: key.map_or(0, |k| k.set_at),
            directory: s.config.directory.display().to_string(),
            interval_seconds: s.config.interval_seconds,
            keep: s.config.keep,
            last_backup_time,
            last_backup_file,
            last_error_time,
            last_error,
            pending: s.pending,
        }))
    }

    async fn set_backup_key(
        &self,
        request: Request<pb::SetBackupKeyRequest>,
    ) -> Result<Response<pb::SetBackupKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let action = if r.expected_recipient.is_empty() {
            "backup_init"
        } else {
            "backup_change_passphrase"
        };
        let backups = self.backup_caller(&caller, action)?;
        let kdf = otpd_core::backup::KdfStanza {
            salt: r.kdf_salt,
            kdf: otpd_core::backup::BackupKdf {
                m_kib: r.kdf_m_kib,
                t: r.kdf_t,
                p: r.kdf_p,
            },
        };
        let recipient = r.recipient;
        let expected = (!r.expected_recipient.is_empty()).then_some(r.expected_recipient);
        let shown = recipient.clone();
        let done = tokio::task::spawn_blocking(move || {
            backups.set_key(&recipient, kdf, expected.as_deref())
        })
        .await
        .map_err(|e| Error::Internal(format!("worker failed: {e}")))
        .and_then(|r| r);
        match done {
            Ok(()) => {
                audit::backup(&caller, action, &shown);
                Ok(Response::new(pb::SetBackupKeyResponse {}))
            }
            Err(e) => {
                audit::refused(Some(&caller), action, None, &e);
                Err(e.into())
            }
        }
    }

    async fn backup_now(
        &self,
        request: Request<pb::BackupNowRequest>,
    ) -> Result<Response<pb::BackupNowResponse>, Status> {
        let caller = self.caller(&request).await?;
        let backups = self.backup_caller(&caller, "backup_now")?;
        let done = tokio::task::spawn_blocking(move || backups.backup_now())
            .await
            .map_err(|e| Error::Internal(format!("worker failed: {e}")))
            .and_then(|r| r);
        match done {
            Ok(w) => {
                let file = w.file.display().to_string();
                audit::backup(&caller, "backup_now", &file);
                Ok(Response::new(pb::BackupNowResponse {
                    file,
                    time: w.time,
                    users: w.users,
                    unreadable: w.unreadable,
                    removed: w.removed,
                }))
            }
            Err(e) => {
                audit::refused(Some(&caller), "backup_now", None, &e);
                Err(e.into())
            }
        }
    }

    async fn list_must_enroll(
        &self,
        request: Request<pb::ListMustEnrollRequest>,
    ) -> Result<Response<pb::ListMustEnrollResponse>, Status> {
        let caller = self.caller(&request).await?;
        if let Err(e) = caller.require_admin("listing the users who must enroll") {
            audit::refused(Some(&caller), "list_must_enroll", None, &e);
            return Err(e.into());
        }
        let policy = self.engine.config().enforcement.clone();
        let now = self.engine.now();
        let mut reply = pb::ListMustEnrollResponse {
            require: match policy.require {
                enforcement::Require::Nobody => "nobody",
                enforcement::Require::Everyone => "everyone",
                enforcement::Require::Groups => "groups",
            }
            .to_owned(),
            groups: policy.groups.clone(),
            deadline: policy.deadline.map_or(0, clamp_i64),
            deadline_date: policy
                .deadline
                .map(enforcement::format_date)
                .unwrap_or_default(),
            deadline_passed: policy.is_active() && policy.deadline.is_none_or(|d| now >= d),
            users: Vec::new(),
        };
        if !policy.is_active() {
            return Ok(Response::new(reply));
        }
        const ACTION: &str = "list_must_enroll";
        let mut candidates = crate::membership::candidates_bounded(policy.clone())
            .await
            .map_err(|e| {
                let e = Error::Internal(format!("name service: {e}"));
                refuse(&caller, ACTION, None, e)
            })?;
        let known = self
            .run(|e| e.user_names(None, usize::MAX))
            .await
            .map_err(|e| refuse(&caller, ACTION, None, e))?;
        candidates.extend(known);
        for name in candidates {
            if policy.exempt_users.contains(&name) {
                continue;
            }
            let Ok(user) = UserName::parse(name.as_bytes()) else {
                continue;
            };
            let membership = crate::membership::of(&name, policy.min_uid).await;
            if !policy.covers(&name, &membership) {
                continue;
            }
            // An unreadable record fails closed on its own (and `otpctl
            // status` lists it): not counted here.
            let enrolled = match self.run(move |e| e.status(&user)).await {
                Ok(s) => matches!(s.state, engine::State::Active | engine::State::Locked),
                Err(_) => true,
            };
            if !enrolled {
                reply.users.push(name);
            }
        }
        Ok(Response::new(reply))
    }

    async fn restore_users(
        &self,
        request: Request<pb::RestoreUsersRequest>,
    ) -> Result<Response<pb::RestoreUsersResponse>, Status> {
        let caller = self.caller(&request).await?;
        let action = "restore";
        self.backup_caller(&caller, action)?;
        let r = request.into_inner();
        let dry_run = r.dry_run;
        let caller2 = caller.clone();
        let outcomes = self
            .run(move |engine| {
                let mut outcomes = Vec::with_capacity(r.users.len());
                for u in r.users {
                    let name = String::from_utf8_lossy(&u.user).into_owned();
                    let result = UserName::parse(&u.user)
                        .map_err(Error::from)
                        .and_then(|user| {
                            let record = otpd_core::record::UserRecord::decode(&user, &u.record)?;
                            let merged = engine.restore_user(&user, record, dry_run)?;
                            Ok((user, merged))
                        });
                    outcomes.push(match result {
                        Ok((user, m)) => {
                            if !dry_run {
                                audit::restore(
                                    &caller2,
                                    user.as_str(),
                                    m.replaced,
                                    m.watermarks_kept,
                                );
                            }
                            pb::RestoreOutcome {
                                user: name,
                                replaced: m.replaced,
                                watermarks_kept: u32::try_from(m.watermarks_kept)
                                    .unwrap_or(u32::MAX),
                                backup_codes_kept_used: u32::try_from(m.backup_codes_kept_used)
                                    .unwrap_or(u32::MAX),
                                error: String::new(),
                            }
                        }
                        Err(e) => {
                            audit::refused(Some(&caller2), action, Some(&name), &e);
                            pb::RestoreOutcome {
                                user: name,
                                error: e.to_string(),
                                ..pb::RestoreOutcome::default()
                            }
                        }
                    });
                }
                Ok(outcomes)
            })
            .await
            .map_err(|e| refuse(&caller, action, None, e))?;
        Ok(Response::new(pb::RestoreUsersResponse { outcomes }))
    }

    async fn rename_device(
        &self,
        request: Request<pb::RenameDeviceRequest>,
    ) -> Result<Response<pb::RenameDeviceResponse>, Status> {
        let kdf_deadline = kdf_deadline(request.metadata());
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        if !caller.admin {
            const ACTION: &str = "rename_device";
            let user = parse_user(&r.user, &caller, ACTION)?;
            let change = match (device_name(&r.name), device_name(&r.new_name)) {
                (Ok(old), Ok(new)) => SelfChange::RenameDevice { old, new },
                (Err(e), _) | (_, Err(e)) => return fail(&caller, ACTION, &user, e),
            };
            return match self
                .self_call(&caller, &user, ACTION, &r.proof_code, change, kdf_deadline)
                .await?
            {
                SelfDone::Renamed => Ok(Response::new(pb::RenameDeviceResponse {})),
                _ => Err(unexpected(&caller, ACTION)),
            };
        }
        self.admin_call(
            &caller,
            &r.user,
            "rename_device",
            "renaming devices",
            move |e, u| e.rename_device(u, &device_name(&r.name)?, &device_name(&r.new_name)?),
        )
        .await?;
        Ok(Response::new(pb::RenameDeviceResponse {}))
    }

    async fn remove_device(
        &self,
        request: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let kdf_deadline = kdf_deadline(request.metadata());
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        if !caller.admin {
            const ACTION: &str = "remove_device";
            let user = parse_user(&r.user, &caller, ACTION)?;
            let change = match device_name(&r.name) {
                Ok(name) => SelfChange::RemoveDevice {
                    name,
                    allow_last: r.allow_last,
                },
                Err(e) => return fail(&caller, ACTION, &user, e),
            };
            return match self
                .self_call(&caller, &user, ACTION, &r.proof_code, change, kdf_deadline)
                .await?
            {
                SelfDone::Removed(left) => Ok(Response::new(pb::RemoveDeviceResponse {
                    devices_left: u32::try_from(left).unwrap_or(u32::MAX),
                })),
                _ => Err(unexpected(&caller, ACTION)),
            };
        }
        let left = self
            .admin_call(
                &caller,
                &r.user,
                "remove_device",
                "removing devices",
                move |e, u| e.remove_device(u, &device_name(&r.name)?, r.allow_last),
            )
            .await?;
        Ok(Response::new(pb::RemoveDeviceResponse {
            devices_left: u32::try_from(left).unwrap_or(u32::MAX),
        }))
    }

    async fn add_app_password(
        &self,
        request: Request<pb::AddAppPasswordRequest>,
    ) -> Result<Response<pb::AddAppPasswordResponse>, Status> {
        let kdf_deadline = kdf_deadline(request.metadata());
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        if !caller.admin {
            const ACTION: &str = "add_app_password";
            let user = parse_user(&r.user, &caller, ACTION)?;
            let change = SelfChange::AddAppPassword {
                service: r.service.clone(),
                label: r.label.clone(),
                expires_in: (r.expires_in_seconds > 0).then_some(r.expires_in_seconds),
            };
            let done = self
                .self_call(&caller, &user, ACTION, &r.proof_code, change, kdf_deadline)
                .await;
            self.release_kdf_memory_when_idle();
            return match done? {
                SelfDone::AppPassword(password, info) => {
                    Ok(Response::new(pb::AddAppPasswordResponse {
                        password: password.as_str().to_owned(),
                        app_password: Some(app_password_to_wire(info)),
                    }))
                }
                _ => Err(unexpected(&caller, ACTION)),
            };
        }
        let (password, info) = self
            .admin_call(
                &caller,
                &r.user,
                "add_app_password",
                "issuing app passwords",
                move |e, u| {
                    let expires = (r.expires_in_seconds > 0).then_some(r.expires_in_seconds);
                    e.add_app_password(u, &r.service, &r.label, expires)
                },
            )
            .await?;
        self.release_kdf_memory_when_idle();
        Ok(Response::new(pb::AddAppPasswordResponse {
            password: password.as_str().to_owned(),
            app_password: Some(app_password_to_wire(info)),
        }))
    }

    async fn list_app_passwords(
        &self,
        request: Request<pb::ListAppPasswordsRequest>,
    ) -> Result<Response<pb::ListAppPasswordsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        if !caller.admin {
            // Read only, no password in it: the user's own list needs no
            // proof (like GetStatus).
            let user = parse_user(&r.user, &caller, "list_app_passwords")?;
            if let Err(e) = caller.require_self_or_admin(&user, "list app passwords") {
                return fail(&caller, "list_app_passwords", &user, e);
            }
            let u = user.clone();
            return match self.run(move |e| e.app_passwords(&u)).await {
                Ok(list) => Ok(Response::new(pb::ListAppPasswordsResponse {
                    app_passwords: list.into_iter().map(app_password_to_wire).collect(),
                })),
                Err(e) => fail(&caller, "list_app_passwords", &user, e),
            };
        }
        let list = self
            .admin_call(
                &caller,
                &r.user,
                "list_app_passwords",
                "listing app passwords",
                move |e, u| e.app_passwords(u),
            )
            .await?;
        Ok(Response::new(pb::ListAppPasswordsResponse {
            app_passwords: list.into_iter().map(app_password_to_wire).collect(),
        }))
    }

    async fn revoke_app_password(
        &self,
        request: Request<pb::RevokeAppPasswordRequest>,
    ) -> Result<Response<pb::RevokeAppPasswordResponse>, Status> {
        let kdf_deadline = kdf_deadline(request.metadata());
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        if !caller.admin {
            const ACTION: &str = "revoke_app_password";
            let user = parse_user(&r.user, &caller, ACTION)?;
            let change = SelfChange::RevokeAppPassword { id: r.id.clone() };
            return match self
                .self_call(&caller, &user, ACTION, &r.proof_code, change, kdf_deadline)
                .await?
            {
                SelfDone::Revoked => Ok(Response::new(pb::RevokeAppPasswordResponse {})),
                _ => Err(unexpected(&caller, ACTION)),
            };
        }
        self.admin_call(
            &caller,
            &r.user,
            "revoke_app_password",
            "revoking app passwords",
            move |e, u| e.revoke_app_password(u, &r.id),
        )
        .await?;
        Ok(Response::new(pb::RevokeAppPasswordResponse {}))
    }

    async fn rekey(
        &self,
        request: Request<pb::RekeyRequest>,
    ) -> Result<Response<pb::RekeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        if caller.uid != 0 {
            let e = Error::PermissionDenied("only root may rotate the master key".into());
            audit::refused(Some(&caller), "rekey", None, &e);
            return Err(e.into());
        }
        match self.run(|e| e.rekey()).await {
            Ok(records) => {
                audit::admin(&caller, "rekey", "");
                Ok(Response::new(pb::RekeyResponse { records }))
            }
            Err(e) => {
                audit::refused(Some(&caller), "rekey", None, &e);
                Err(e.into())
            }
        }
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let kdf_deadline = kdf_deadline(request.metadata());
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let user = parse_user(&r.user, &caller, "verify")?;
        if let Err(e) = caller.require_self_or_admin(&user, "verify codes") {
            return fail(&caller, "verify", &user, e);
        }
        if r.grace_only {
            return self.grace(&caller, &user, r).await;
        }
        // With `allow_app_password` (the PAM line opted in), a credential
        // shaped like an app password is checked as one; anything else as
        // a code.
        let credential = match AppPasswordInput::parse(&r.code).filter(|_| r.allow_app_password) {
            Some(p) => Credential::AppPassword(p),
            None => match Code::parse(&r.code) {
                Ok(c) => Credential::Code(c),
                Err(e) => return fail(&caller, "verify", &user, e.into()),
            },
        };
        let ctx = self.login_context(&caller, &r);
        // Decided in a batch with the other waiting calls (one sync for
        // all); each verdict is audited where it is made, on the deciding
        // thread, so a caller that hangs up mid-check cannot leave a
        // decision unaudited.
        let call = engine::VerifyCall {
            user: user.clone(),
            credential,
            ctx: ctx.clone(),
        };
        let phase_one = self.decider.verify(call, caller.clone()).await;
        let checked = match phase_one {
            Ok(Verification::Done(v)) => Ok(v),
            Ok(Verification::NeedsKdf(attempt)) => {
                self.check_backup_code(attempt, &caller, &ctx, kdf_deadline)
                    .await
            }
            Err(e) => Err(e),
        };
        let mut verdict = match checked {
            Ok(v) => v,
            Err(e) => return fail(&caller, "verify", &user, e),
        };
        if !caller.admin && verdict == Verdict::NotEnrolled {
            // To a non-admin, an unknown user looks like a wrong code.
            verdict = Verdict::Rejected {
                rejection: Rejection::WrongCode,
                retry_after: None,
            };
        }
        let mut wire = verdict_to_wire(&verdict);
        match verdict {
            // Only admins (pam_otpd) get here: tell them what the
            // enforcement policy says about this user.
            Verdict::NotEnrolled => {
                wire.enforcement = self.enforcement_of(user.as_str(), false).await;
            }
            // The reminder was noted with the login's own write.
            Verdict::Accepted {
                recovery_nudge: true,
                ..
            } => {
                wire.contact = self.engine.config().enforcement.contact.clone();
            }
            _ => {}
        }
        Ok(Response::new(wire))
    }

    async fn enroll_start(
        &self,
        request: Request<pb::EnrollStartRequest>,
    ) -> Result<Response<pb::EnrollStartResponse>, Status> {
        let kdf_deadline = kdf_deadline(request.metadata());
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        if !caller.admin {
            const ACTION: &str = "enroll_start";
            let user = parse_user(&r.user, &caller, ACTION)?;
            let change = match enroll_options(&r) {
                Ok(opts) => SelfChange::Enroll(opts),
                Err(e) => return fail(&caller, ACTION, &user, e),
            };
            return match self
                .self_call(&caller, &user, ACTION, &r.proof_code, change, kdf_deadline)
                .await?
            {
                SelfDone::Started(started) => {
                    Ok(Response::new(started_to_wire(user.to_string(), &started)))
                }
                _ => Err(unexpected(&caller, ACTION)),
            };
        }
        let raw_user = r.user.clone();
        let (user, started) = self
            .admin_call(
                &caller,
                &raw_user,
                "enroll_start",
                "enrolling users",
                move |e, u| {
                    let started = e.enroll_start(u, enroll_options(&r)?)?;
                    Ok((u.to_string(), started))
                },
            )
            .await?;
        Ok(Response::new(started_to_wire(user, &started)))
    }

    async fn enroll_confirm(
        &self,
        request: Request<pb::EnrollConfirmRequest>,
    ) -> Result<Response<pb::EnrollConfirmResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let codes = if caller.admin {
            self.admin_call(
                &caller,
                &r.user,
                "enroll_confirm",
                "confirming enrollments",
                move |e, u| {
                    let code = Code::parse(&r.code).map_err(Error::from)?;
                    e.enroll_confirm(u, &code)
                },
            )
            .await
        } else {
            // The user's own pending enrollment: started by an admin, as a
            // first enrollment, or with a proof; the code of the new
            // device is the proof here.
            const ACTION: &str = "enroll_confirm";
            let user = parse_user(&r.user, &caller, ACTION)?;
            if let Err(e) = caller.require_self_or_admin(&user, "confirm an enrollment") {
                return fail(&caller, ACTION, &user, e);
            }
            let (u, who) = (user.clone(), caller.clone());
            let enroll = self.authz.self_service().enroll;
            match self
                .run(move |e| {
                    // Without self-enrollment only an enrolled user (whose
                    // device add or re-enrollment needed a proof) confirms.
                    if !enroll && !e.record(&u)?.is_some_and(|r| r.is_enrolled()) {
                        return Err(otpd_core::Error::SelfServiceDisabled {
                            what: "confirming your first device",
                            key: "enroll",
                        }
                        .into());
                    }
                    let code = Code::parse(&r.code).map_err(Error::from)?;
                    let confirmed = e.enroll_confirm(&u, &code)?;
                    let via = Via::Totp {
                        device: confirmed.device.clone(),
                    };
                    audit::self_service(&who, ACTION, u.as_str(), Some(&via));
                    Ok(confirmed)
                })
                .await
            {
                Ok(c) => Ok(c),
                Err(e) => fail(&caller, ACTION, &user, e),
            }
        };
        self.release_kdf_memory_when_idle();
        let confirmed = codes?;
        Ok(Response::new(pb::EnrollConfirmResponse {
            added_device: confirmed.backup_codes.is_none(),
            backup_codes: codes_to_wire(confirmed.backup_codes.unwrap_or_default()),
            device: confirmed.device.to_string(),
        }))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::UserStatus>, Status> {
        let caller = self.caller(&request).await?;
        let user = parse_user(&request.get_ref().user, &caller, "status")?;
        if let Err(e) = caller.require_self_or_admin(&user, "read the status") {
            return fail(&caller, "status", &user, e);
        }
        let u = user.clone();
        match self.run(move |e| e.status(&u)).await {
            Ok(s) => {
                let mut wire = status_to_wire(s);
                let enrolled = matches!(wire.state(), pb::State::Active | pb::State::Locked);
                wire.enforcement = self.enforcement_of(user.as_str(), enrolled).await;
                Ok(Response::new(wire))
            }
            Err(e) => fail(&caller, "status", &user, e),
        }
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = self.caller(&request).await?;
        if let Err(e) = caller.require_admin("listing users") {
            audit::refused(Some(&caller), "list", None, &e);
            return Err(e.into());
        }
        let r = request.into_inner();
        let filter = list_filter(&r, self.engine.config().backup_codes_low);
        let after = (!r.after.is_empty()).then_some(r.after);
        let limit = match r.limit {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let page = self
            .run(move |e| e.list_page(after.as_deref(), limit, &filter))
            .await
            .map_err(|e| {
                audit::refused(Some(&caller), "list", None, &e);
                Status::from(e)
            })?;
        Ok(Response::new(list_reply(page)))
    }

    async fn regenerate_backup_codes(
        &self,
        request: Request<pb::RegenerateBackupCodesRequest>,
    ) -> Result<Response<pb::RegenerateBackupCodesResponse>, Status> {
        let kdf_deadline = kdf_deadline(request.metadata());
        let caller = self.caller(&request).await?;
        if !caller.admin {
            const ACTION: &str = "backup_codes";
            let r = request.into_inner();
            let user = parse_user(&r.user, &caller, ACTION)?;
            let change = SelfChange::RegenerateBackupCodes;
            let done = self
                .self_call(&caller, &user, ACTION, &r.proof_code, change, kdf_deadline)
                .await;
            self.release_kdf_memory_when_idle();
            return match done? {
                SelfDone::BackupCodes(codes) => {
                    Ok(Response::new(pb::RegenerateBackupCodesResponse {
                        backup_codes: codes_to_wire(codes),
                    }))
                }
                _ => Err(unexpected(&caller, ACTION)),
            };
        }
        let codes = self
            .admin_call(
                &caller,
                &request.get_ref().user,
                "backup_codes",
                "regenerating backup codes",
                |e, u| e.regenerate_backup_codes(u),
            )
            .await;
        self.release_kdf_memory_when_idle();
        let codes = codes?;
        Ok(Response::new(pb::RegenerateBackupCodesResponse {
            backup_codes: codes_to_wire(codes),
        }))
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.admin_call(
            &caller,
            &request.get_ref().user,
            "unlock",
            "unlocking users",
            |e, u| e.unlock(u),
        )
        .await?;
        Ok(Response::new(pb::UnlockResponse {}))
    }

    async fn reset(
        &self,
        request: Request<pb::ResetRequest>,
    ) -> Result<Response<pb::ResetResponse>, Status> {
        let kdf_deadline = kdf_deadline(request.metadata());
        let caller = self.caller(&request).await?;
        if !caller.admin {
            const ACTION: &str = "reset";
            let r = request.into_inner();
            let user = parse_user(&r.user, &caller, ACTION)?;
            return match self
                .self_call(
                    &caller,
                    &user,
                    ACTION,
                    &r.proof_code,
                    SelfChange::Reset,
                    kdf_deadline,
                )
                .await?
            {
                SelfDone::Reset => Ok(Response::new(pb::ResetResponse {})),
                _ => Err(unexpected(&caller, ACTION)),
            };
        }
        self.admin_call(
            &caller,
            &request.get_ref().user,
            "reset",
            "resetting users",
            |e, u| e.reset(u),
        )
        .await?;
        Ok(Response::new(pb::ResetResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_roots_local_requester_is_believed() {
        let caller = |uid| Caller {
            uid,
            pid: None,
            name: None,
            admin: true,
        };
        let bob = || {
            Some(pb::LocalRequester {
                uid: 1001,
                is_target_user: false,
            })
        };
        assert_eq!(
            local_requester(&caller(0), bob()),
            Some(LocalRequester {
                uid: 1001,
                is_target_user: false
            })
        );
        assert_eq!(local_requester(&caller(0), None), None);
        // An admin-group member or the user themself: not believed.
        assert_eq!(local_requester(&caller(1000), bob()), None);
    }

    /// Every error leaves a handler through `fail`, `refuse`,
    /// `parse_user`, `admin_call`, `self_call`, `backup_caller` or an
    /// explicit `audit::refused`, so every refusal is audited. A bare
    /// conversion of an error into a status (`map_err` with `Status::from`,
    /// the shape of the unaudited exits list_must_enroll and restore had,
    /// or a status made up from a message as `unexpected` did) is
    /// not allowed in the handlers. (The failures behind them, a name
    /// service or store that fails on reading, cannot be made to happen
    /// to the real daemon in a test.)
    #[test]
    fn no_handler_turns_an_error_into_a_status_without_auditing_it() -> std::io::Result<()> {
        let src = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/service.rs"),
        )?;
        // Split so that this test does not find itself.
        let bare = [".map_err(", "Status::from)"].concat();
        let internal = ["Status::", "internal(format!"].concat();
        let found: Vec<(usize, &str)> = src
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(&bare) || l.contains(&internal))
            .map(|(i, l)| (i + 1, l.trim()))
            .collect();
        assert!(found.is_empty(), "unaudited refusals: {found:?}");
        Ok(())
    }

    #[test]
    fn grpc_timeouts_parse_and_junk_does_not() {
        assert_eq!(parse_grpc_timeout("5000m"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "123456789m", "5x", "-5S", "5 S", "é", "1é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}

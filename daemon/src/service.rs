//! The gRPC handlers: wire types in, domain calls, wire types out. The one
//! mapping from domain errors to `tonic::Status` lives here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use otpd_proto::v1 as pb;
use pb::otpd_server::Otpd;
use tonic::{Request, Response, Status};

use crate::audit;
use crate::authz::{Authz, Caller, Peer};
use crate::engine::{
    self, BackupAttempt, Decision, Engine, EnrollOptions, LocalRequester, LoginContext, Reason,
    Verdict, Verification,
};
use crate::error::Error;
use crate::record::{Method, UserName};
use crate::secret::Code;
use crate::totp::Algorithm;

/// The otpd.v1 service.
#[derive(Debug, Clone)]
pub struct OtpdService {
    engine: Arc<Engine>,
    authz: Arc<Authz>,
    /// A task that gives idle KDF memory back is pending.
    kdf_release_pending: Arc<AtomicBool>,
}

impl OtpdService {
    /// A service deciding with `engine`, authorising with `authz`.
    pub fn new(engine: Arc<Engine>, authz: Arc<Authz>) -> Self {
        Self {
            engine,
            authz,
            kdf_release_pending: Arc::default(),
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
                let verdict = e.verify_backup_code(attempt, &ctx);
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
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidUser(_) | Error::InvalidCode(_) | Error::InvalidArgument(_) => {
                Status::invalid_argument(msg)
            }
            Error::PermissionDenied(_) => Status::permission_denied(msg),
            Error::NotEnrolled { .. } => Status::not_found(msg),
            Error::NoPendingEnrollment { .. } => Status::failed_precondition(msg),
            Error::ConfirmMismatch => Status::unauthenticated(msg),
            Error::Corrupted { .. } => Status::data_loss(msg),
            // Not UNAVAILABLE: the daemon answered, so a PAM stack with
            // fail_mode=open must not let the login through.
            Error::StoreLocked { .. } | Error::Store(_) => Status::internal(msg),
            _ => Status::internal(msg),
        }
    }
}

fn parse_user(raw: &[u8], caller: &Caller, action: &'static str) -> Result<UserName, Status> {
    UserName::parse(raw).map_err(|e| {
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
        None => pb::Method::Unspecified,
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn verdict_to_wire(v: &Verdict) -> pb::VerifyResponse {
    pb::VerifyResponse {
        decision: match v.decision {
            Decision::Accepted => pb::Decision::Accepted,
            Decision::Rejected => pb::Decision::Rejected,
            Decision::Locked => pb::Decision::Locked,
            Decision::Throttled => pb::Decision::Throttled,
            Decision::NotEnrolled => pb::Decision::NotEnrolled,
        } as i32,
        reason: match v.reason {
            Reason::Ok => pb::Reason::Ok,
            Reason::WrongCode => pb::Reason::WrongCode,
            Reason::Replayed => pb::Reason::Replayed,
            Reason::ClockSkew => pb::Reason::ClockSkew,
            Reason::Locked => pb::Reason::Locked,
            Reason::Throttled => pb::Reason::Throttled,
            Reason::NotEnrolled => pb::Reason::NotEnrolled,
        } as i32,
        method: method_to_wire(v.method) as i32,
        backup_codes_left: v.backup_codes_left,
        retry_after_seconds: v.retry_after,
        clock_skew_seconds: v.clock_skew_seconds,
        backup_codes_low: v.backup_codes_low,
        device: String::new(),
        app_password_id: String::new(),
    }
}

fn status_to_wire(s: engine::UserStatus) -> pb::UserStatus {
    pb::UserStatus {
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
            device: String::new(),
        }),
        enrolled_at: clamp_i64(s.enrolled_at),
        pending: s.pending,
        clock_skew_seconds: s.clock_skew_seconds,
        rolled_back_at: clamp_i64(s.rolled_back_at),
        devices: Vec::new(),
        pending_device: String::new(),
        app_passwords: 0,
    }
}

fn enroll_options(r: &pb::EnrollStartRequest) -> Result<EnrollOptions, Error> {
    let algorithm = match pb::Algorithm::try_from(r.algorithm) {
        Ok(pb::Algorithm::Unspecified) => None,
        Ok(pb::Algorithm::Sha1) => Some(Algorithm::Sha1),
        Ok(pb::Algorithm::Sha256) => Some(Algorithm::Sha256),
        Ok(pb::Algorithm::Sha512) => Some(Algorithm::Sha512),
        Err(_) => {
            return Err(Error::InvalidArgument(format!(
                "unknown algorithm {}",
                r.algorithm
            )));
        }
    };
    let digits = match r.digits {
        0 => None,
        d => Some(
            u8::try_from(d)
                .map_err(|_| Error::InvalidArgument(format!("digits must be 6 or 8, not {d}")))?,
        ),
    };
    Ok(EnrollOptions {
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
    async fn rename_device(
        &self,
        _request: Request<pb::RenameDeviceRequest>,
    ) -> Result<Response<pb::RenameDeviceResponse>, Status> {
        Err(Status::unimplemented("devices: in progress"))
    }

    async fn remove_device(
        &self,
        _request: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        Err(Status::unimplemented("devices: in progress"))
    }

    async fn add_app_password(
        &self,
        _request: Request<pb::AddAppPasswordRequest>,
    ) -> Result<Response<pb::AddAppPasswordResponse>, Status> {
        Err(Status::unimplemented("app passwords: in progress"))
    }

    async fn list_app_passwords(
        &self,
        _request: Request<pb::ListAppPasswordsRequest>,
    ) -> Result<Response<pb::ListAppPasswordsResponse>, Status> {
        Err(Status::unimplemented("app passwords: in progress"))
    }

    async fn revoke_app_password(
        &self,
        _request: Request<pb::RevokeAppPasswordRequest>,
    ) -> Result<Response<pb::RevokeAppPasswordResponse>, Status> {
        Err(Status::unimplemented("app passwords: in progress"))
    }

    async fn rekey(
        &self,
        _request: Request<pb::RekeyRequest>,
    ) -> Result<Response<pb::RekeyResponse>, Status> {
        Err(Status::unimplemented("rekey: in progress"))
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
        let code = match Code::parse(&r.code) {
            Ok(c) => c,
            Err(e) => return fail(&caller, "verify", &user, e),
        };
        let ctx = LoginContext {
            service: context_field(r.service),
            remote_host: context_field(r.remote_host),
            tty: context_field(r.tty),
            requester: local_requester(&caller, r.local_requester),
        };
        // Each verdict is audited where it is made (on the blocking worker
        // for checked codes), so a caller that hangs up mid-check cannot
        // leave a decision unaudited.
        let (u, c, who) = (user.clone(), ctx.clone(), caller.clone());
        let phase_one = self
            .run(move |e| {
                let v = e.verify(&u, &code, &c);
                if let Ok(Verification::Done(verdict)) = &v {
                    audit::verify(&who, u.as_str(), &c, verdict);
                }
                v
            })
            .await;
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
        if !caller.admin && verdict.decision == Decision::NotEnrolled {
            // To a non-admin, an unknown user looks like a wrong code.
            verdict.decision = Decision::Rejected;
            verdict.reason = Reason::WrongCode;
        }
        Ok(Response::new(verdict_to_wire(&verdict)))
    }

    async fn enroll_start(
        &self,
        request: Request<pb::EnrollStartRequest>,
    ) -> Result<Response<pb::EnrollStartResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
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
        Ok(Response::new(pb::EnrollStartResponse {
            user,
            secret_base32: started.secret_base32.as_str().to_owned(),
            otpauth_uri: started.otpauth_uri.as_str().to_owned(),
            algorithm: algorithm_to_wire(started.params.algorithm) as i32,
            digits: u32::from(started.params.digits),
            period: u32::try_from(started.params.period).unwrap_or(u32::MAX),
            issuer: started.issuer.clone(),
            device: String::new(),
        }))
    }

    async fn enroll_confirm(
        &self,
        request: Request<pb::EnrollConfirmRequest>,
    ) -> Result<Response<pb::EnrollConfirmResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let codes = self
            .admin_call(
                &caller,
                &r.user,
                "enroll_confirm",
                "confirming enrollments",
                move |e, u| e.enroll_confirm(u, &Code::parse(&r.code)?),
            )
            .await;
        self.release_kdf_memory_when_idle();
        let codes = codes?;
        Ok(Response::new(pb::EnrollConfirmResponse {
            backup_codes: codes_to_wire(codes),
            device: String::new(),
            added_device: false,
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
            Ok(s) => Ok(Response::new(status_to_wire(s))),
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
        let (users, unreadable) = self.run(|e| e.list()).await.map_err(|e| {
            audit::refused(Some(&caller), "list", None, &e);
            Status::from(e)
        })?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(status_to_wire).collect(),
            unreadable,
            next_after: String::new(),
        }))
    }

    async fn regenerate_backup_codes(
        &self,
        request: Request<pb::RegenerateBackupCodesRequest>,
    ) -> Result<Response<pb::RegenerateBackupCodesResponse>, Status> {
        let caller = self.caller(&request).await?;
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
        let caller = self.caller(&request).await?;
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

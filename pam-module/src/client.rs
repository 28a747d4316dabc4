//! The blocking otpd client used inside `pam_sm_authenticate`.
//!
//! gRPC (`otpd.v1`) over HTTP/2 on a Unix socket, spoken by [`crate::h2`]
//! on the caller's thread: no runtime, no thread, no task is created, and
//! no socket outlives the PAM call (the connection is closed when the
//! [`Client`] is dropped, and before the module prompts the user, see
//! [`Daemon::hang_up`]). Calls made back to back (a grace query, then the
//! status) share one connection. All exchanges of one [`Client`] share the
//! `timeout_ms` budget, so the module never waits on otpd longer than that
//! in total; otpd is told what is left (`grpc-timeout`).
//!
//! Before connecting, the socket path is checked with `lstat`: it must be a
//! socket owned by root. After connecting, the kernel-reported credentials of
//! the peer must be root too. Otherwise the connection is refused with
//! [`Error::UntrustedSocket`], which fails closed whatever `fail_mode` says.
//!
//! Without `socket=`, the module talks to otpd's root-only PAM socket, and
//! falls back to the public socket when the PAM socket does not exist (an
//! older otpd) or the caller may not open it (not root).
//!
//! A full listen queue (`EAGAIN` on connect: otpd busy, or a local user
//! flooding the socket) is retried with a short back-off within the budget;
//! if it stays full, the result is [`Error::Busy`], which fails closed.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
use otpd_proto::v1 as pb;
use prost::Message;
use prost::bytes::Bytes;
use zeroize::Zeroize;

use crate::app_password::AppPasswordId;
use crate::error::{Error, GrpcStatus};
use crate::flow::{Attempt, Daemon, Decision, Enforcement, Method, Reason, State, Status, Verdict};
use crate::h2::{self, Connection, WireError};

/// First pause before connecting again to a full queue.
pub const RETRY_MIN: Duration = Duration::from_millis(5);
/// Longest pause between connection attempts to a full queue.
pub const RETRY_MAX: Duration = Duration::from_millis(100);

/// A client for one PAM call.
#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
    /// Tried when `socket` does not exist or may not be opened.
    fallback: Option<PathBuf>,
    timeout: Duration,
    /// Time left for talking to otpd.
    budget: Duration,
    /// The open connection, between calls made back to back.
    connection: Option<Connection>,
}

impl Client {
    /// A client for the socket at `socket`, allowed to wait `timeout` in
    /// total.
    #[must_use]
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        Self {
            socket,
            fallback: None,
            timeout,
            budget: timeout,
            connection: None,
        }
    }

    /// Uses `fallback` when the socket does not exist (`ENOENT`) or
    /// connecting to it is not permitted (`EACCES`).
    #[must_use]
    pub fn with_fallback(mut self, fallback: Option<PathBuf>) -> Self {
        self.fallback = fallback;
        self
    }

    /// Switches to the fallback socket if `error` calls for it; true if it
    /// did. The switch is kept for the rest of the call.
    fn fall_back(&mut self, error: &Error) -> bool {
        let wants_fallback = match error {
            Error::Unreachable { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ),
            _ => false,
        };
        match self.fallback.take() {
            Some(fallback) if wants_fallback => {
                self.socket = fallback;
                true
            }
            other => {
                self.fallback = other;
                false
            }
        }
    }

    /// Runs one call (`method` of `otpd.v1.Otpd`) within the remaining
    /// budget and decodes its reply.
    fn exchange<T: Message + Default>(&mut self, method: &str, request: &[u8]) -> Result<T, Error> {
        let timeout_error = Error::Timeout {
            ms: self.timeout.as_millis(),
        };
        if self.budget.is_zero() {
            return Err(timeout_error);
        }
        let started = Instant::now();
        let deadline = started + self.budget;
        let result = self.call(method, request, deadline);
        self.budget = self.budget.saturating_sub(started.elapsed());
        let reply = match result {
            Ok(reply) => reply,
            Err(Error::Timeout { .. }) => return Err(timeout_error),
            Err(e) => return Err(e),
        };
        if reply.status != 0 {
            return Err(Error::Status(GrpcStatus::new(reply.status, reply.message)));
        }
        T::decode(reply.body.as_slice()).map_err(|_| Error::Protocol("undecodable reply"))
    }

    fn call(
        &mut self,
        method: &str,
        request: &[u8],
        deadline: Instant,
    ) -> Result<h2::Reply, Error> {
        let mut connection = match self.connection.take() {
            Some(c) if !c.is_broken() => c,
            _ => {
                let stream = match self.open(deadline) {
                    Err(e) if self.fall_back(&e) => self.open(deadline)?,
                    other => other?,
                };
                Connection::new(stream)
            }
        };
        let path = format!("/otpd.v1.Otpd/{method}");
        let reply = connection
            .unary(&path, request, deadline)
            .map_err(|e| match e {
                WireError::Io(source) => Error::Io(source),
                WireError::Protocol(why) => Error::Protocol(why),
                WireError::Timeout => Error::Timeout {
                    ms: self.timeout.as_millis(),
                },
            })?;
        self.connection = Some(connection);
        Ok(reply)
    }

    /// Checks the socket and connects to it, retrying a full queue until
    /// `deadline`.
    fn open(&self, deadline: Instant) -> Result<UnixStream, Error> {
        let path = self.socket.as_path();
        check_socket(path)?;
        let unreachable = |source: io::Error| Error::Unreachable {
            path: path.to_owned(),
            source,
        };
        let mut pause = RETRY_MIN;
        let stream = loop {
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )
            .map_err(|e| Error::Local(e.into()))?;
            match connect(fd, path) {
                Ok(stream) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Busy {
                            path: path.to_owned(),
                            ms: self.timeout.as_millis(),
                        });
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(RETRY_MAX);
                }
                Err(source) => return Err(unreachable(source)),
            }
        };
        let peer = socket::getsockopt(&stream, sockopt::PeerCredentials)
            .map_err(|e| unreachable(e.into()))?;
        if peer.uid() != 0 {
            return Err(Error::UntrustedSocket {
                path: path.to_owned(),
                why: format!(
                    "the process listening on it runs as uid {}, not root",
                    peer.uid()
                ),
            });
        }
        Ok(stream)
    }
}

/// One non-blocking connect of `fd` (a full queue is `EAGAIN`, not a
/// wait); the stream is blocking afterwards, with per-call timeouts.
fn connect(fd: std::os::fd::OwnedFd, path: &Path) -> io::Result<UnixStream> {
    let addr = UnixAddr::new(path)?;
    socket::connect(fd.as_raw_fd(), &addr)?;
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// A request's bytes, wiped when dropped (a Verify request holds the code).
struct Encoded(Vec<u8>);

impl Drop for Encoded {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

fn encode(m: &impl Message) -> Encoded {
    Encoded(m.encode_to_vec())
}

impl Daemon for Client {
    fn status(&mut self, user: &[u8]) -> Result<Status, Error> {
        let request = encode(&pb::GetStatusRequest {
            user: Bytes::copy_from_slice(user),
        });
        let reply: pb::UserStatus = self.exchange("GetStatus", &request.0)?;
        Ok(Status::from(reply))
    }

    fn verify(&mut self, attempt: Attempt) -> Result<Verdict, Error> {
        let request = encode(&pb::VerifyRequest {
            user: Bytes::from(attempt.user),
            // The Secret is wiped when the last reference to these bytes is
            // dropped; the encoded request when `request` is.
            code: Bytes::from_owner(attempt.code),
            service: attempt.service,
            remote_host: attempt.remote_host,
            tty: attempt.tty,
            local_requester: Some(pb::LocalRequester {
                uid: attempt.requester.uid,
                is_target_user: attempt.requester.is_target_user,
            }),
            allow_app_password: attempt.allow_app_password,
            grace_only: false,
        });
        let reply: pb::VerifyResponse = self.exchange("Verify", &request.0)?;
        Ok(Verdict::from(reply))
    }

    fn grace(&mut self, attempt: Attempt) -> Result<bool, Error> {
        let request = encode(&pb::VerifyRequest {
            user: Bytes::from(attempt.user),
            code: Bytes::new(),
            service: attempt.service,
            remote_host: attempt.remote_host,
            tty: attempt.tty,
            local_requester: Some(pb::LocalRequester {
                uid: attempt.requester.uid,
                is_target_user: attempt.requester.is_target_user,
            }),
            allow_app_password: false,
            grace_only: true,
        });
        let reply: pb::VerifyResponse = self.exchange("Verify", &request.0)?;
        Ok(reply.decision == pb::Decision::Accepted as i32
            && reply.method == pb::Method::Grace as i32)
    }

    /// Opens (and closes at once) a connection when none is open: the
    /// path and peer checks and one `connect()`, within the budget; no
    /// request is sent. The connection is not kept: the module is about
    /// to prompt, and an idle prompt must not hold one of otpd's
    /// connection slots (see [`Daemon::hang_up`]).
    fn probe(&mut self) -> Result<(), Error> {
        if self.connection.as_ref().is_some_and(|c| !c.is_broken()) {
            return Ok(());
        }
        if self.budget.is_zero() {
            return Err(Error::Timeout {
                ms: self.timeout.as_millis(),
            });
        }
        let started = Instant::now();
        let deadline = started + self.budget;
        let result = match self.open(deadline) {
            Err(e) if self.fall_back(&e) => self.open(deadline),
            other => other,
        };
        self.budget = self.budget.saturating_sub(started.elapsed());
        result.map(drop)
    }

    fn hang_up(&mut self) {
        self.connection = None;
    }
}

/// `lstat`s the socket path: it must be a socket owned by root.
fn check_socket(path: &Path) -> Result<(), Error> {
    let meta = std::fs::symlink_metadata(path).map_err(|source| Error::Unreachable {
        path: path.to_owned(),
        source,
    })?;
    let why = if meta.file_type().is_symlink() {
        Some("it is a symbolic link, not a socket".to_owned())
    } else if !meta.file_type().is_socket() {
        Some("not a socket".to_owned())
    } else if meta.uid() != 0 {
        Some(format!("owned by uid {}, not root", meta.uid()))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(Error::UntrustedSocket {
            path: path.to_owned(),
            why,
        }),
    }
}

impl From<pb::UserStatus> for Status {
    fn from(s: pb::UserStatus) -> Self {
        let state = match pb::State::try_from(s.state) {
            Ok(pb::State::NotEnrolled) => State::NotEnrolled,
            Ok(pb::State::Pending) => State::Pending,
            Ok(pb::State::Active) => State::Active,
            Ok(pb::State::Locked) => State::Locked,
            Ok(pb::State::Unspecified) | Err(_) => State::Unknown,
        };
        Self {
            state,
            digits: s.digits,
            enforcement: s.enforcement.map(Enforcement::from),
        }
    }
}

impl From<pb::Enforcement> for Enforcement {
    fn from(e: pb::Enforcement) -> Self {
        Self {
            must_enroll: e.must_enroll,
            refused: e.refused,
            deadline_date: e.deadline_date,
            contact: e.contact,
            self_enroll: e.self_enroll,
        }
    }
}

impl From<pb::VerifyResponse> for Verdict {
    fn from(r: pb::VerifyResponse) -> Self {
        let decision = match pb::Decision::try_from(r.decision) {
            Ok(pb::Decision::Accepted) => Decision::Accepted,
            Ok(pb::Decision::Rejected) => Decision::Rejected,
            Ok(pb::Decision::Locked) => Decision::Locked,
            Ok(pb::Decision::Throttled) => Decision::Throttled,
            Ok(pb::Decision::NotEnrolled) => Decision::NotEnrolled,
            Ok(pb::Decision::Unspecified) | Err(_) => Decision::Unknown,
        };
        let reason = match pb::Reason::try_from(r.reason) {
            Ok(pb::Reason::Ok) => Reason::Ok,
            Ok(pb::Reason::WrongCode) => Reason::WrongCode,
            Ok(pb::Reason::Replayed) => Reason::Replayed,
            Ok(pb::Reason::ClockSkew) => Reason::ClockSkew,
            Ok(_) | Err(_) => Reason::Other,
        };
        let method = match pb::Method::try_from(r.method) {
            Ok(pb::Method::Totp) => Method::Totp,
            Ok(pb::Method::BackupCode) => Method::BackupCode,
            Ok(pb::Method::AppPassword) => Method::AppPassword,
            // Only a grace query (`Daemon::grace`) is answered this way.
            Ok(pb::Method::Grace | pb::Method::Unspecified) | Err(_) => Method::Unknown,
        };
        Self {
            decision,
            reason,
            method,
            backup_codes_left: r.backup_codes_left,
            retry_after_seconds: r.retry_after_seconds,
            clock_skew_seconds: r.clock_skew_seconds,
            backup_codes_low: r.backup_codes_low,
            app_password_id: AppPasswordId::parse(&r.app_password_id),
            enforcement: r.enforcement.map(Enforcement::from),
            recovery_nudge: r.recovery_nudge.then_some(r.contact),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::os::unix::net::UnixListener as StdUnixListener;
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    use otpd_proto::v1::otpd_server::{Otpd, OtpdServer};
    use tokio::sync::oneshot;
    use tonic::{Request, Response};

    use super::*;
    use crate::error::ErrorClass;
    use crate::flow::LocalRequester;
    use crate::secret::Secret;

    type Reply<T> = Result<Response<T>, tonic::Status>;

    const APP_PASSWORD: &[u8] = b"k7qm-3xa9-h2pc-vw4d-8ent-rb6s";

    /// A stand-in otpd: APP_PASSWORD is right when allowed (for sshd),
    /// "123456" is right, "12345678" is a backup code,
    /// "000000" makes it answer UNAVAILABLE, anything else not made of
    /// digits is INVALID_ARGUMENT, other digits are wrong.
    #[derive(Default)]
    struct FakeOtpd {
        seen: Arc<Mutex<Vec<pb::VerifyRequest>>>,
    }

    #[tonic::async_trait]
    impl Otpd for FakeOtpd {
        async fn verify(&self, request: Request<pb::VerifyRequest>) -> Reply<pb::VerifyResponse> {
            let r = request.into_inner();
            self.seen.lock().unwrap().push(r.clone());
            let mut reply = pb::VerifyResponse::default();
            match &r.code[..] {
                APP_PASSWORD if r.allow_app_password && r.service == "sshd" => {
                    reply.decision = pb::Decision::Accepted as i32;
                    reply.method = pb::Method::AppPassword as i32;
                    reply.app_password_id = "k7qm".into();
                }
                b"123456" => {
                    reply.decision = pb::Decision::Accepted as i32;
                    reply.method = pb::Method::Totp as i32;
                }
                b"12345678" => {
                    reply.decision = pb::Decision::Accepted as i32;
                    reply.method = pb::Method::BackupCode as i32;
                    reply.backup_codes_left = 3;
                    reply.backup_codes_low = true;
                }
                b"000000" => return Err(tonic::Status::unavailable("store down")),
                c if !c.iter().all(u8::is_ascii_digit) => {
                    return Err(tonic::Status::invalid_argument("code must be digits"));
                }
                _ => {
                    reply.decision = pb::Decision::Rejected as i32;
                    reply.reason = pb::Reason::WrongCode as i32;
                }
            }
            Ok(Response::new(reply))
        }
        async fn get_status(
            &self,
            request: Request<pb::GetStatusRequest>,
        ) -> Reply<pb::UserStatus> {
            match &request.into_inner().user[..] {
                b"alice" => Ok(Response::new(pb::UserStatus {
                    user: "alice".into(),
                    state: pb::State::Active as i32,
                    digits: 8,
                    ..Default::default()
                })),
                _ => Err(tonic::Status::not_found("no such user")),
            }
        }
        async fn enroll_start(
            &self,
            _: Request<pb::EnrollStartRequest>,
        ) -> Reply<pb::EnrollStartResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn enroll_confirm(
            &self,
            _: Request<pb::EnrollConfirmRequest>,
        ) -> Reply<pb::EnrollConfirmResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn list_users(
            &self,
            _: Request<pb::ListUsersRequest>,
        ) -> Reply<pb::ListUsersResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn regenerate_backup_codes(
            &self,
            _: Request<pb::RegenerateBackupCodesRequest>,
        ) -> Reply<pb::RegenerateBackupCodesResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn unlock(&self, _: Request<pb::UnlockRequest>) -> Reply<pb::UnlockResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn reset(&self, _: Request<pb::ResetRequest>) -> Reply<pb::ResetResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn rename_device(
            &self,
            _: Request<pb::RenameDeviceRequest>,
        ) -> Reply<pb::RenameDeviceResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn remove_device(
            &self,
            _: Request<pb::RemoveDeviceRequest>,
        ) -> Reply<pb::RemoveDeviceResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn add_app_password(
            &self,
            _: Request<pb::AddAppPasswordRequest>,
        ) -> Reply<pb::AddAppPasswordResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn list_app_passwords(
            &self,
            _: Request<pb::ListAppPasswordsRequest>,
        ) -> Reply<pb::ListAppPasswordsResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn revoke_app_password(
            &self,
            _: Request<pb::RevokeAppPasswordRequest>,
        ) -> Reply<pb::RevokeAppPasswordResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn rekey(&self, _: Request<pb::RekeyRequest>) -> Reply<pb::RekeyResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn import_device(
            &self,
            _: Request<pb::ImportDeviceRequest>,
        ) -> Reply<pb::ImportDeviceResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn export_device(
            &self,
            _: Request<pb::ExportDeviceRequest>,
        ) -> Reply<pb::ExportDeviceResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn get_backup_status(
            &self,
            _: Request<pb::GetBackupStatusRequest>,
        ) -> Reply<pb::BackupStatus> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn set_backup_key(
            &self,
            _: Request<pb::SetBackupKeyRequest>,
        ) -> Reply<pb::SetBackupKeyResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn backup_now(
            &self,
            _: Request<pb::BackupNowRequest>,
        ) -> Reply<pb::BackupNowResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn restore_users(
            &self,
            _: Request<pb::RestoreUsersRequest>,
        ) -> Reply<pb::RestoreUsersResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn list_must_enroll(
            &self,
            _: Request<pb::ListMustEnrollRequest>,
        ) -> Reply<pb::ListMustEnrollResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn import_users(
            &self,
            _: Request<pb::ImportUsersRequest>,
        ) -> Reply<pb::ImportUsersResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
    }

    /// The fake otpd on a socket in a temp dir, on its own thread; stopped
    /// through a oneshot channel on drop.
    struct Server {
        dir: tempfile::TempDir,
        seen: Arc<Mutex<Vec<pb::VerifyRequest>>>,
        stop: Option<oneshot::Sender<()>>,
        thread: Option<JoinHandle<()>>,
    }

    impl Server {
        fn start() -> Self {
            let dir = tempfile::tempdir().unwrap();
            // Bound before the thread starts: no readiness wait needed.
            let listener = StdUnixListener::bind(dir.path().join("otpd.sock")).unwrap();
            Self::start_on(dir, listener)
        }

        /// Serves on `listener` (bound at `dir/otpd.sock`).
        fn start_on(dir: tempfile::TempDir, listener: StdUnixListener) -> Self {
            listener.set_nonblocking(true).unwrap();
            let fake = FakeOtpd::default();
            let seen = Arc::clone(&fake.seen);
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                    tonic::transport::Server::builder()
                        .add_service(OtpdServer::new(fake))
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::UnixListenerStream::new(listener),
                            async {
                                let _ = stopped.await;
                            },
                        )
                        .await
                        .unwrap();
                });
            });
            Self {
                dir,
                seen,
                stop: Some(stop),
                thread: Some(thread),
            }
        }

        fn socket(&self) -> PathBuf {
            self.dir.path().join("otpd.sock")
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Whether files this process creates are owned by root (then the
    /// socket check passes and the round trips can run).
    fn running_as_root(dir: &Path) -> bool {
        std::fs::metadata(dir).unwrap().uid() == 0
    }

    fn attempt(code: &str) -> Attempt {
        Attempt {
            user: b"alice".to_vec(),
            code: Secret::from_slice(code.as_bytes()),
            service: "sshd".into(),
            remote_host: "192.0.2.7".into(),
            tty: "ssh".into(),
            requester: LocalRequester {
                uid: 1001,
                is_target_user: false,
            },
            allow_app_password: false,
        }
    }

    fn client(path: PathBuf) -> Client {
        Client::new(path, Duration::from_millis(2000))
    }

    #[test]
    fn missing_socket_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let err = client(dir.path().join("nope.sock"))
            .verify(attempt("123456"))
            .unwrap_err();
        assert!(matches!(err, Error::Unreachable { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::NotRunning);
    }

    #[test]
    fn a_regular_file_or_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = client(file.clone()).verify(attempt("123456")).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Untrusted);
        assert!(err.to_string().starts_with("refusing socket "), "{err}");
        assert!(err.to_string().ends_with(": not a socket"), "{err}");

        let server = Server::start();
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(server.socket(), &link).unwrap();
        let err = client(link).status(b"alice").unwrap_err();
        assert_eq!(err.class(), ErrorClass::Untrusted);
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn round_trips_through_a_real_grpc_server() {
        let server = Server::start();
        let mut c = client(server.socket());
        if !running_as_root(server.dir.path()) {
            // The socket is ours, not root's: refused before connecting.
            let err = c.verify(attempt("123456")).unwrap_err();
            assert_eq!(err.class(), ErrorClass::Untrusted);
            assert!(err.to_string().contains("not root"), "{err}");
            return;
        }

        let v = c.verify(attempt("123456")).unwrap();
        assert_eq!((v.decision, v.method), (Decision::Accepted, Method::Totp));
        let seen = server.seen.lock().unwrap().pop().unwrap();
        assert_eq!(&seen.user[..], b"alice");
        assert_eq!(&seen.code[..], b"123456");
        assert_eq!(
            (
                seen.service.as_str(),
                seen.remote_host.as_str(),
                seen.tty.as_str()
            ),
            ("sshd", "192.0.2.7", "ssh")
        );
        assert_eq!(
            seen.local_requester,
            Some(pb::LocalRequester {
                uid: 1001,
                is_target_user: false
            })
        );

        // A code attempt never allows an app password.
        assert!(!seen.allow_app_password);
        assert_eq!(v.app_password_id, None);

        // allow_app_password goes on the wire; the id comes back.
        let app = || attempt(std::str::from_utf8(APP_PASSWORD).unwrap());
        let err = c.verify(app()).unwrap_err();
        assert!(matches!(err, Error::Status(s) if s.code() == crate::error::Code::InvalidArgument));
        assert!(
            !server
                .seen
                .lock()
                .unwrap()
                .pop()
                .unwrap()
                .allow_app_password
        );
        let v = c
            .verify(Attempt {
                allow_app_password: true,
                ..app()
            })
            .unwrap();
        assert_eq!(
            (v.decision, v.method, v.app_password_id),
            (
                Decision::Accepted,
                Method::AppPassword,
                AppPasswordId::parse("k7qm")
            )
        );
        let seen = server.seen.lock().unwrap().pop().unwrap();
        assert!(seen.allow_app_password);
        assert_eq!(&seen.code[..], APP_PASSWORD);

        let v = c.verify(attempt("12345678")).unwrap();
        assert_eq!(v.method, Method::BackupCode);
        assert_eq!(v.backup_codes_left, 3);
        assert!(v.backup_codes_low);

        let v = c.verify(attempt("654321")).unwrap();
        assert_eq!(
            (v.decision, v.reason),
            (Decision::Rejected, Reason::WrongCode)
        );

        let err = c.verify(attempt("12a456")).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Refused);
        let err = c.verify(attempt("000000")).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Unavailable);

        let st = c.status(b"alice").unwrap();
        assert_eq!(
            st,
            Status {
                state: State::Active,
                digits: 8,
                enforcement: None,
            }
        );
        assert!(c.status(b"bob").unwrap_err().is_not_found());
    }

    /// One connection serving more reply bytes than HTTP/2's initial
    /// 64 KiB window: the client gives the window back as it reads, so
    /// the server never stalls.
    #[test]
    fn a_connection_serving_many_calls_keeps_its_window_open() {
        let server = Server::start();
        if !running_as_root(server.dir.path()) {
            return;
        }
        let mut c = Client::new(server.socket(), Duration::from_secs(60));
        for _ in 0..10_000 {
            assert_eq!(c.status(b"alice").unwrap().digits, 8);
        }
        drop(c);
    }

    #[test]
    fn a_silent_socket_times_out_and_the_budget_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        // Bound and listening, but nobody ever accepts or answers.
        let _listener = StdUnixListener::bind(&path).unwrap();
        if !running_as_root(dir.path()) {
            return;
        }
        let mut c = Client::new(path, Duration::from_millis(300));
        let started = Instant::now();
        let err = c.verify(attempt("123456")).unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(err, Error::Timeout { ms: 300 }), "{err}");
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        // The budget is spent: the next exchange fails at once.
        let started = Instant::now();
        assert!(matches!(c.status(b"alice"), Err(Error::Timeout { .. })));
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    /// A listener with the smallest queue, filled with connections that are
    /// never accepted: connecting to it fails with EAGAIN.
    fn full_queue(path: &Path) -> (StdUnixListener, Vec<std::os::fd::OwnedFd>) {
        use nix::sys::socket::{
            AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
        };
        use std::os::fd::AsRawFd;
        let addr = UnixAddr::new(path).unwrap();
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(fd.as_raw_fd(), &addr).unwrap();
        listen(&fd, Backlog::new(0).unwrap()).unwrap();
        let mut queued = Vec::new();
        loop {
            let c = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            match connect(c.as_raw_fd(), &addr) {
                Ok(()) => queued.push(c),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => panic!("filling the queue: {e}"),
            }
            assert!(queued.len() < 100, "the queue never filled");
        }
        (StdUnixListener::from(fd), queued)
    }

    #[test]
    fn a_queue_that_stays_full_is_busy_and_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        if !running_as_root(dir.path()) {
            return;
        }
        let path = dir.path().join("otpd.sock");
        let (_listener, _queued) = full_queue(&path);
        let mut c = Client::new(path, Duration::from_millis(300));
        let started = Instant::now();
        let err = c.verify(attempt("123456")).unwrap_err();
        let waited = started.elapsed();
        // Retried for the whole budget, then reported as busy: closed.
        assert!(
            matches!(
                err,
                Error::Busy { ms: 300, .. } | Error::Timeout { ms: 300 }
            ),
            "{err}"
        );
        assert_eq!(err.class(), ErrorClass::Unavailable);
        assert!(waited >= Duration::from_millis(290), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }

    #[test]
    fn a_queue_that_drains_within_the_budget_is_served() {
        let dir = tempfile::tempdir().unwrap();
        if !running_as_root(dir.path()) {
            return;
        }
        let path = dir.path().join("otpd.sock");
        let (listener, queued) = full_queue(&path);
        // The daemon catches up a moment later: it starts accepting (and
        // serves the queued connections, which say nothing).
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            Server::start_on(dir, listener)
        });
        let mut c = client(path);
        let v = c.verify(attempt("123456")).unwrap();
        assert_eq!(v.decision, Decision::Accepted);
        // The client keeps its connection until dropped (or hung up); the
        // fake otpd's graceful stop waits for it.
        drop(c);
        drop(queued);
        drop(server.join().unwrap());
    }

    #[test]
    fn the_fallback_socket_is_used_when_the_first_does_not_exist() {
        let server = Server::start();
        if !running_as_root(server.dir.path()) {
            return;
        }
        let missing = server.dir.path().join("pam.sock");
        let mut c = client(missing.clone()).with_fallback(Some(server.socket()));
        let v = c.verify(attempt("123456")).unwrap();
        assert_eq!(v.decision, Decision::Accepted);
        // Without a fallback, a missing socket means "not running".
        let err = client(missing).status(b"alice").unwrap_err();
        assert_eq!(err.class(), ErrorClass::NotRunning);
        // A socket that exists is used, never the fallback.
        let tmp = tempfile::tempdir().unwrap();
        let stale = tmp.path().join("stale.sock");
        drop(StdUnixListener::bind(&stale).unwrap());
        let err = client(stale)
            .with_fallback(Some(server.socket()))
            .status(b"alice")
            .unwrap_err();
        assert!(err.to_string().contains("Connection refused"), "{err}");
        assert_eq!(err.class(), ErrorClass::NotRunning);
    }

    #[test]
    fn wire_to_domain_conversions_fail_closed_on_unknown_values() {
        let v = Verdict::from(pb::VerifyResponse {
            decision: 99,
            reason: 99,
            method: 99,
            ..Default::default()
        });
        assert_eq!(v.decision, Decision::Unknown);
        assert_eq!(v.reason, Reason::Other);
        assert_eq!(v.method, Method::Unknown);
        assert_eq!(v.app_password_id, None);
        // An id that is not an app password's first group is dropped (it
        // would otherwise reach the log).
        for id in ["", "k7qm\nFAKE", "K7QM", "abc"] {
            let v = Verdict::from(pb::VerifyResponse {
                app_password_id: id.into(),
                ..Default::default()
            });
            assert_eq!(v.app_password_id, None, "{id:?}");
        }
        let s = Status::from(pb::UserStatus {
            state: 42,
            ..Default::default()
        });
        assert_eq!(s.state, State::Unknown);
        assert_eq!(s.code_digits(), 6);
    }
}

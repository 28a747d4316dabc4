//! Running the service: state directory, master key, store, and the two
//! Unix sockets (public and PAM) with explicit modes and a deep backlog.

use std::fs;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use otpd_proto::v1::otpd_server::OtpdServer;

use crate::authz::Authz;
use crate::backup::{Backups, Changes, Counting};
use crate::clock::Clock;
use crate::config::Config;
use crate::connections::{BACKLOG, Incoming, Limiter, MAX_PER_UID, total_cap};
use crate::crypto::MasterKey;
use crate::engine::{Engine, EngineConfig};
use crate::error::Error;
use crate::keyfile;
use crate::service::OtpdService;
use crate::store::{SledStore, Store};
use crate::watermark::{self, Watermarks};

/// How long requests in flight may take after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Largest request accepted, in bytes. Every legitimate request is tiny.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Largest reply sent, in bytes (otpctl accepts no more either); a
/// ListUsers page stops short of it.
pub const MAX_REPLY: usize = 64 * 1024;

/// Mode of the PAM socket: only its owner (the daemon's user, root) and
/// root can connect.
pub const PAM_SOCKET_MODE: u32 = 0o600;

/// A daemon with its store open and its sockets bound, ready to serve.
#[derive(Debug)]
pub struct Daemon {
    engine: Arc<Engine>,
    backups: Arc<Backups>,
    authz: Arc<Authz>,
    listener: UnixListener,
    socket: PathBuf,
    pam_listener: UnixListener,
    pam_socket: PathBuf,
    /// Cap on all non-root connections together.
    max_total: usize,
}

/// Master key path inside the state directory.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("master.key")
}

/// Store path inside the state directory.
pub fn store_path(state_dir: &Path) -> PathBuf {
    state_dir.join("store")
}

impl Daemon {
    /// Opens everything from a configuration.
    pub fn open(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        Self::open_with(config, config.engine_config(), clock)
    }

    /// Like [`Daemon::open`], with explicit engine settings (tests use a
    /// cheaper backup-code hash).
    pub fn open_with(
        config: &Config,
        engine_config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        let authz = Authz::new(config.admin_group.as_deref())?
            .with_self_service(config.self_service.policy());
        prepare_state_dir(&config.state_dir)?;
        let store_dir = store_path(&config.state_dir);
        private_dir(&store_dir)?;
        let store = SledStore::open_with_cache(&store_dir, config.store.cache_bytes())?;
        restrict_tree(&store_dir)?;
        let key = open_key(&config.state_dir, &store)?;
        // A key rotation that did not finish: records open with either key
        // and new writes are sealed under the new one (see `otpctl rekey`).
        let key_file = key_path(&config.state_dir);
        let rotating_to = keyfile::load_next(&key_file)?;
        let keys: Vec<&MasterKey> = std::iter::once(&key).chain(rotating_to.as_ref()).collect();
        let watermarks = Watermarks::open(&watermark::path(&config.state_dir), &keys)?;
        let pam_socket = config.pam_socket();
        let listener = bind(&config.socket, config.socket_mode)?;
        let pam_listener = match bind(&pam_socket, PAM_SOCKET_MODE) {
            Ok(l) => l,
            Err(e) => {
                let _ = fs::remove_file(&config.socket);
                return Err(e);
            }
        };
        // Every write counts towards the next automatic backup.
        let changes = Arc::new(Changes::default());
        let store = Counting::new(Box::new(store), Arc::clone(&changes));
        let engine = Engine::new(Box::new(store), key, Arc::clone(&clock), engine_config)
            .with_watermarks(watermarks)
            .with_key_file(key_file, rotating_to);
        watermark::report_start(&engine);
        let engine = Arc::new(engine);
        let backups = Arc::new(Backups::new(
            Arc::clone(&engine),
            clock,
            changes,
            config.backup.clone(),
            &config.state_dir,
        ));
        Ok(Self {
            engine,
            backups,
            authz: Arc::new(authz),
            listener,
            socket: config.socket.clone(),
            pam_listener,
            pam_socket,
            max_total: total_cap(descriptor_limit()),
        })
    }

    /// The decision engine (tests reach its KDF permits through it).
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    /// The bound public socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The bound PAM socket.
    pub fn pam_socket(&self) -> &Path {
        &self.pam_socket
    }

    /// The cap on all non-root connections together.
    pub fn max_total_connections(&self) -> usize {
        self.max_total
    }

    /// Serves until `shutdown` completes, then removes the socket.
    ///
    /// Requests in flight get [`SHUTDOWN_GRACE`] to finish; connections
    /// still open after that (an idle client of any local user) are dropped,
    /// so nobody can hold a stop or restart. Every decision is durable
    /// before its reply, so nothing is lost by dropping them.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let to_tokio = |listener: UnixListener, path: &Path| {
            listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixListener::from_std(listener))
                .map_err(|e| Error::Socket {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })
        };
        let listener = to_tokio(self.listener, &self.socket)?;
        let pam_listener = to_tokio(self.pam_listener, &self.pam_socket)?;
        let owner = nix::unistd::geteuid().as_raw();
        let limiter = Limiter::new(MAX_PER_UID, self.max_total, owner);
        let incoming = Incoming::new(pam_listener, listener, limiter);
        let service = OtpdService::new(Arc::clone(&self.engine), self.authz)?
            .with_backups(Arc::clone(&self.backups));
        let scheduled = tokio::spawn(Arc::clone(&self.backups).run());
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        };
        let server = tonic::transport::Server::builder()
            .timeout(Duration::from_secs(30))
            .concurrency_limit_per_connection(64)
            .add_service(
                OtpdServer::new(service)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_REPLY),
            )
            .serve_with_incoming_shutdown(incoming, signal);
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            r = server => r,
            () = deadline => {
                tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown; closing them");
                Ok(())
            }
        };
        scheduled.abort();
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_file(&self.pam_socket);
        result.map_err(|e| Error::Socket {
            path: self.socket.clone(),
            reason: e.to_string(),
        })
    }
}

/// The soft `RLIMIT_NOFILE` (`main` raises it to the hard limit first).
fn descriptor_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Checks the state directory, creating it (0700) if it does not exist.
///
/// Refuses a directory that is not owned by the daemon's user or that group
/// or others can read, search or write: what is inside (who is enrolled,
/// the sealed records) is for the daemon alone.
/// Loads the master key, or creates one, but only in a state directory
/// that holds nothing sealed yet: a new key cannot open the records (or the
/// watermark journal) that an earlier key sealed, so a missing key file
/// there is an error to fix by restoring the key, never a reason to start
/// over with every user locked out.
fn open_key(state_dir: &Path, store: &SledStore) -> Result<MasterKey, Error> {
    let path = key_path(state_dir);
    let missing = matches!(
        fs::symlink_metadata(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    );
    if missing {
        let journal = watermark::path(state_dir);
        let sealed = if !store.is_empty()? {
            Some("the store holds sealed user records")
        } else if fs::symlink_metadata(&journal).is_ok_and(|m| m.len() > 0) {
            Some("the watermark journal holds sealed entries")
        } else {
            None
        };
        if let Some(what) = sealed {
            return Err(Error::Key {
                path,
                reason: format!(
                    "missing, but {what} that only the key which sealed them can open; \
                     restore master.key from your backup (otpd creates a key only in an \
                     empty state directory)"
                ),
            });
        }
    }
    keyfile::load_or_create(&path)
}

fn prepare_state_dir(dir: &Path) -> Result<(), Error> {
    let bad = |reason: String| Error::StateDir {
        path: dir.to_owned(),
        reason,
    };
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| bad(format!("cannot create it: {e}")))?;
            // Explicitly, whatever the umask.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| bad(format!("cannot set mode 0700: {e}")))?;
        }
        Err(e) => return Err(bad(e.to_string())),
        Ok(_) => {}
    }
    let meta = fs::metadata(dir).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(bad(format!(
            "owned by uid {}, not by the daemon's uid {euid}; run `chown {euid} {}`",
            meta.uid(),
            dir.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "mode {mode:04o} lets group or others in; run `chmod 700 {}`",
            dir.display()
        )));
    }
    Ok(())
}

/// Creates `dir` (mode 0700) if needed and sets its mode to 0700.
fn private_dir(dir: &Path) -> Result<(), Error> {
    let bad = |e: std::io::Error| Error::StateDir {
        path: dir.to_owned(),
        reason: e.to_string(),
    };
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(bad(e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(bad)
}

/// Sets every directory under `root` to 0700 and every file to 0600
/// (never following a symbolic link), whatever the umask was when they
/// were created.
fn restrict_tree(root: &Path) -> Result<(), Error> {
    let bad = |path: &Path, e: std::io::Error| Error::StateDir {
        path: path.to_owned(),
        reason: format!("cannot restrict its mode: {e}"),
    };
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| bad(&dir, e))? {
            let entry = entry.map_err(|e| bad(&dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| bad(&path, e))?;
            let mode = if kind.is_dir() {
                pending.push(path.clone());
                0o700
            } else if kind.is_file() {
                0o600
            } else {
                continue;
            };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| bad(&path, e))?;
        }
    }
    Ok(())
}

/// Binds a socket with a [`BACKLOG`]-deep listen queue and sets its mode
/// explicitly. A stale socket from a crashed daemon is replaced; a socket
/// someone still listens on is an error.
///
/// The mode is set on the socket before `bind` too (Linux creates the file
/// with the socket's mode minus the umask), so a socket meant for root only
/// is never reachable by others, not even for an instant.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, Error> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
    };
    use nix::sys::stat::{Mode, fchmod};
    let bad = |reason: String| Error::Socket {
        path: path.to_owned(),
        reason,
    };
    if let Some(parent) = path.parent().filter(|p| !p.exists()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| bad(format!("cannot create {}: {e}", parent.display())))?;
        // Explicitly, whatever the umask: others must reach the public socket.
        fs::set_permissions(parent, fs::Permissions::from_mode(0o755))
            .map_err(|e| bad(format!("cannot set the mode of {}: {e}", parent.display())))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                fs::remove_file(path)
                    .map_err(|e| bad(format!("cannot remove stale socket: {e}")))?;
            }
            // Connected, or a full queue (EAGAIN): somebody serves it.
            Ok(_) => return Err(bad("another daemon is already listening on it".into())),
            Err(e) => {
                return Err(bad(format!(
                    "cannot tell whether another daemon listens on it ({e}); \
                     refusing to replace it"
                )));
            }
        },
        Ok(_) => {
            return Err(bad(
                "exists and is not a socket; refusing to replace it".into()
            ));
        }
        Err(_) => {}
    }
    let mode_bits = Mode::from_bits_truncate(mode);
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| bad(e.to_string()))?;
    fchmod(fd.as_raw_fd(), mode_bits).map_err(|e| bad(format!("cannot set mode {mode:o}: {e}")))?;
    let addr = UnixAddr::new(path).map_err(|e| bad(e.to_string()))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| bad(e.to_string()))?;
    // Backlog::new accepts values below SOMAXCONN only; MAXCONN is BACKLOG.
    const _: () = assert!(BACKLOG == nix::libc::SOMAXCONN);
    listen(&fd, Backlog::MAXCONN).map_err(|e| bad(e.to_string()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| bad(format!("cannot set mode {mode:o}: {e}")))?;
    Ok(UnixListener::from(fd))
}

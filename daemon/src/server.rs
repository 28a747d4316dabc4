//! Running the service: state directory, master key, store, and the Unix
//! socket with an explicit mode.

use std::fs;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use otpd_proto::v1::otpd_server::OtpdServer;
use tokio_stream::wrappers::UnixListenerStream;

use crate::authz::Authz;
use crate::clock::Clock;
use crate::config::Config;
use crate::connections::{LimitedStream, Limiter, MAX_PER_UID};
use crate::crypto::MasterKey;
use crate::engine::{Engine, EngineConfig};
use crate::error::Error;
use crate::service::OtpdService;
use crate::store::SledStore;

/// How long requests in flight may take after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Largest request accepted, in bytes. Every legitimate request is tiny.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// A daemon with its store open and its socket bound, ready to serve.
#[derive(Debug)]
pub struct Daemon {
    engine: Arc<Engine>,
    authz: Arc<Authz>,
    listener: UnixListener,
    socket: PathBuf,
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
        let authz = Authz::new(config.admin_group.as_deref())?;
        prepare_state_dir(&config.state_dir)?;
        let key = MasterKey::load_or_create(&key_path(&config.state_dir))?;
        let store = SledStore::open(&store_path(&config.state_dir))?;
        let listener = bind(&config.socket, config.socket_mode)?;
        Ok(Self {
            engine: Arc::new(Engine::new(Box::new(store), key, clock, engine_config)),
            authz: Arc::new(authz),
            listener,
            socket: config.socket.clone(),
        })
    }

    /// The decision engine (tests reach its KDF permits through it).
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    /// The bound socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Serves until `shutdown` completes, then removes the socket.
    ///
    /// Requests in flight get [`SHUTDOWN_GRACE`] to finish; connections
    /// still open after that (an idle client of any local user) are dropped,
    /// so nobody can hold a stop or restart. Every decision is durable
    /// before its reply, so nothing is lost by dropping them.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let socket_err = |e: std::io::Error| Error::Socket {
            path: self.socket.clone(),
            reason: e.to_string(),
        };
        self.listener.set_nonblocking(true).map_err(socket_err)?;
        let listener = tokio::net::UnixListener::from_std(self.listener).map_err(socket_err)?;
        let service = OtpdService::new(Arc::clone(&self.engine), self.authz);
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
                    .max_encoding_message_size(64 * 1024),
            )
            .serve_with_incoming_shutdown(admitted(listener), signal);
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
        let _ = fs::remove_file(&self.socket);
        result.map_err(|e| Error::Socket {
            path: self.socket.clone(),
            reason: e.to_string(),
        })
    }
}

/// Accepted connections that passed the per-uid cap.
fn admitted(
    listener: tokio::net::UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<LimitedStream>> {
    use tokio_stream::StreamExt;
    let limiter = Limiter::new(MAX_PER_UID);
    UnixListenerStream::new(listener).filter_map(move |accepted| match accepted {
        Ok(stream) => match limiter.admit(stream) {
            Ok(admitted) => Some(Ok(admitted)),
            Err(refused) => {
                tracing::warn!(target: crate::audit::TARGET, event = "connect", outcome = "error", reason = ?refused, "connection refused");
                None
            }
        },
        Err(e) => Some(Err(e)),
    })
}

fn prepare_state_dir(dir: &Path) -> Result<(), Error> {
    let bad = |reason: String| Error::Key {
        path: dir.to_owned(),
        reason,
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| bad(format!("cannot create the state directory: {e}")))?;
    }
    let meta = fs::metadata(dir).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("the state directory is not a directory".into()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if std::os::unix::fs::MetadataExt::uid(&meta) != euid {
        return Err(bad(format!(
            "the state directory is owned by uid {}, not by the daemon's uid {euid}",
            std::os::unix::fs::MetadataExt::uid(&meta)
        )));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(bad(format!(
            "the state directory is writable by group or others (mode {:04o}); run `chmod 700 {}`",
            meta.permissions().mode() & 0o777,
            dir.display()
        )));
    }
    Ok(())
}

/// Binds the socket and sets its mode explicitly. A stale socket from a
/// crashed daemon is replaced; a live one is an error.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, Error> {
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
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(bad("another daemon is already listening on it".into()));
            }
            fs::remove_file(path).map_err(|e| bad(format!("cannot remove stale socket: {e}")))?;
        }
        Ok(_) => {
            return Err(bad(
                "exists and is not a socket; refusing to replace it".into()
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| bad(e.to_string()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| bad(format!("cannot set mode {mode:o}: {e}")))?;
    Ok(listener)
}

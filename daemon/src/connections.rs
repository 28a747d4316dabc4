//! Accepting connections without letting one local user, or a shortage of
//! descriptors, deny logins to everyone.
//!
//! * A cap on the connections each local user may hold open
//!   ([`MAX_PER_UID`]) and on all non-root connections together
//!   ([`total_cap`]), checked right after `accept`, before any other work.
//!   root is never capped: sshd, sudo and login call as root.
//! * The PAM socket admits only root (and the daemon's own uid).
//! * [`Incoming`]: the stream of admitted connections handed to tonic. It
//!   serves the PAM socket first, backs off when the process runs out of
//!   descriptors (instead of retrying `accept` in a tight loop), keeps one
//!   reserve descriptor to shed a queued connection on the public socket,
//!   and logs refusals through [`Repeats`] (one line per uid, then one summary
//!   per minute).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

use crate::repeats::{Note, Repeats};

/// Connections one non-root uid may hold open at once.
pub const MAX_PER_UID: usize = 32;

/// Upper bound of [`total_cap`].
pub const MAX_TOTAL: usize = 4096;

/// Listen backlog of both sockets: `SOMAXCONN` (4096 on Linux); the kernel
/// caps it at `net.core.somaxconn`, also 4096 by default since Linux 5.4.
pub const BACKLOG: i32 = nix::libc::SOMAXCONN;

/// First pause after `accept` failed for want of descriptors or memory.
pub const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause: the pause doubles up to this while the shortage lasts.
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Refusals of one uid are logged once, then summarised at most once per
/// this window.
pub const REFUSAL_SUMMARY: Duration = Duration::from_secs(60);

/// Uids whose connection refusals are tracked one by one; refusals of
/// further uids share one summary.
const REFUSAL_KEYS: usize = 1024;

/// Refused connections handled in one poll before yielding to the other
/// tasks, so that a flood cannot monopolise a worker.
const REFUSALS_PER_POLL: usize = 128;

/// Queued connections shed (accepted and closed) per pause while out of
/// descriptors.
const SHED_PER_PAUSE: usize = 64;

/// Non-root connections, all users together, for a descriptor limit of
/// `nofile`: half of it, within `MAX_PER_UID..=MAX_TOTAL`, so that the other
/// half stays for root's connections and the store.
pub fn total_cap(nofile: u64) -> usize {
    let half = usize::try_from(nofile / 2).unwrap_or(MAX_TOTAL);
    half.clamp(MAX_PER_UID, MAX_TOTAL)
}

/// Which socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// The root-only socket of the PAM module.
    Pam,
    /// The public socket (otpctl, self-service).
    Public,
}

/// Counts open connections per uid and in total.
#[derive(Debug, Clone)]
pub struct Limiter {
    open: Arc<Mutex<Counts>>,
    max_per_uid: usize,
    max_total: usize,
    /// The daemon's own uid: admitted on the PAM socket besides root.
    owner: u32,
}

#[derive(Debug, Default)]
struct Counts {
    per_uid: HashMap<u32, usize>,
    total: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refused {
    /// The kernel gave no credentials for the peer.
    NoCredentials,
    /// This uid already holds the maximum.
    TooMany {
        /// The peer's uid.
        uid: u32,
    },
    /// Non-root users together hold the maximum.
    TooManyInTotal {
        /// The peer's uid.
        uid: u32,
    },
    /// A non-root peer on the root-only PAM socket.
    NotRoot {
        /// The peer's uid.
        uid: u32,
    },
}

impl Refused {
    /// The peer's uid, when known.
    pub fn uid(self) -> Option<u32> {
        match self {
            Self::NoCredentials => None,
            Self::TooMany { uid } | Self::TooManyInTotal { uid } | Self::NotRoot { uid } => {
                Some(uid)
            }
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::NoCredentials => "no peer credentials",
            Self::TooMany { .. } => "too many connections from this uid",
            Self::TooManyInTotal { .. } => "too many connections from non-root users",
            Self::NotRoot { .. } => "the PAM socket is for root only",
        }
    }
}

impl Limiter {
    /// At most `max_per_uid` connections per non-root uid and `max_total`
    /// for all non-root uids together; `owner` is the daemon's uid.
    pub fn new(max_per_uid: usize, max_total: usize, owner: u32) -> Self {
        Self {
            open: Arc::default(),
            max_per_uid,
            max_total,
            owner,
        }
    }

    /// Admits a freshly accepted connection, or refuses it (the caller drops
    /// it, which closes it).
    pub fn admit(&self, stream: UnixStream, socket: Socket) -> Result<LimitedStream, Refused> {
        let uid = stream
            .peer_cred()
            .map(|c| c.uid())
            .map_err(|_| Refused::NoCredentials)?;
        let slot = self.claim(uid, socket)?;
        Ok(LimitedStream {
            stream,
            _slot: slot,
        })
    }

    /// Claims a place for a connection of `uid` on `socket`; `None` for
    /// root, who is not counted.
    fn claim(&self, uid: u32, socket: Socket) -> Result<Option<Slot>, Refused> {
        if uid == 0 {
            return Ok(None);
        }
        if socket == Socket::Pam && uid != self.owner {
            return Err(Refused::NotRoot { uid });
        }
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.per_uid.get(&uid).copied().unwrap_or(0);
        if count >= self.max_per_uid {
            return Err(Refused::TooMany { uid });
        }
        if open.total >= self.max_total {
            return Err(Refused::TooManyInTotal { uid });
        }
        *open.per_uid.entry(uid).or_insert(0) += 1;
        open.total += 1;
        Ok(Some(Slot {
            uid,
            open: Arc::clone(&self.open),
        }))
    }

    /// Non-root connections open now.
    pub fn open_total(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .total
    }
}

/// Gives a connection's place back when it closes.
#[derive(Debug)]
struct Slot {
    uid: u32,
    open: Arc<Mutex<Counts>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_uid.get_mut(&self.uid) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_uid.remove(&self.uid);
            }
        }
    }
}

/// An admitted connection: the stream plus its place in the count.
#[derive(Debug)]
pub struct LimitedStream {
    stream: UnixStream,
    _slot: Option<Slot>,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for LimitedStream {
    // The peer's credentials and groups, read once per connection (authz).
    type ConnectInfo = crate::authz::Peer;

    fn connect_info(&self) -> Self::ConnectInfo {
        crate::authz::Peer::of(&self.stream)
    }
}

/// The admitted connections of both sockets, as the stream tonic serves.
///
/// Never yields an error: tonic's own loop would retry a failed `accept`
/// at once and spin a core while the process is out of descriptors. Here a
/// shortage (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) pauses accepting, from
/// [`BACKOFF_MIN`] doubling up to [`BACKOFF_MAX`]; on the public socket the
/// reserve descriptor is closed to accept and close queued connections
/// (their clients fail at once instead of waiting), then reopened. Queued
/// connections on the PAM socket are kept: they are served as soon as a
/// descriptor is free.
pub struct Incoming {
    /// The PAM socket first: it is polled first on every round.
    sources: Vec<(UnixListener, Socket)>,
    limiter: Limiter,
    reserve: Option<std::fs::File>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The next pause while a shortage lasts; `None` when accepting works.
    backoff: Option<Duration>,
    refusals: Repeats<Option<u32>>,
    flush: tokio::time::Interval,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("limiter", &self.limiter)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// What a failed `accept` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptError {
    /// The queued connection went away, or a signal came: try the next.
    Transient,
    /// The process or the system is out of descriptors or memory.
    Shortage {
        /// Out of descriptors (shedding helps).
        descriptors: bool,
    },
    /// Anything else: pause like a shortage, so it cannot spin either.
    Other,
}

fn classify(e: &io::Error) -> AcceptError {
    use nix::libc;
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => AcceptError::Shortage { descriptors: true },
        Some(libc::ENOBUFS | libc::ENOMEM) => AcceptError::Shortage { descriptors: false },
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EAGAIN) => {
            AcceptError::Transient
        }
        _ => AcceptError::Other,
    }
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

impl Incoming {
    /// Serves `pam` (root only) and `public`. Must be called inside the
    /// runtime.
    pub fn new(pam: UnixListener, public: UnixListener, limiter: Limiter) -> Self {
        let mut flush = tokio::time::interval_at(
            tokio::time::Instant::now() + REFUSAL_SUMMARY,
            REFUSAL_SUMMARY,
        );
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            sources: vec![(pam, Socket::Pam), (public, Socket::Public)],
            limiter,
            reserve: open_reserve(),
            pause: None,
            backoff: None,
            refusals: Repeats::new(1, REFUSAL_SUMMARY, REFUSAL_KEYS),
            flush,
        }
    }

    fn refused(&mut self, refused: Refused) {
        let uid = refused.uid();
        match self.refusals.note(uid, Instant::now()) {
            Note::Log => tracing::warn!(
                target: crate::audit::TARGET,
                event = "connect",
                outcome = "refused",
                peer_uid = %uid_text(uid),
                reason = refused.reason(),
                // A field, not the message: the text format quotes fields only.
                detail = "connection refused; further refusals for this uid are summarised \
                          once a minute",
            ),
            Note::Quiet => {}
        }
    }

    fn accept_failed(&mut self, source: usize, error: &io::Error, cx: &mut Context<'_>) {
        let kind = classify(error);
        match kind {
            AcceptError::Transient => return,
            AcceptError::Shortage { descriptors: true } => {
                if self.sources.get(source).map(|s| s.1) == Some(Socket::Public) {
                    self.shed(source, cx);
                }
            }
            AcceptError::Shortage { descriptors: false } | AcceptError::Other => {}
        }
        let delay = match self.backoff {
            None => {
                tracing::warn!(
                    error = %error,
                    "cannot accept connections; pausing ({BACKOFF_MIN:?}, doubling up to \
                     {BACKOFF_MAX:?}) until it works again"
                );
                BACKOFF_MIN
            }
            Some(d) => d,
        };
        self.backoff = Some((delay * 2).min(BACKOFF_MAX));
        self.pause = Some(Box::pin(tokio::time::sleep(delay)));
    }

    /// Frees the reserve descriptor to accept and close queued connections.
    fn shed(&mut self, source: usize, cx: &mut Context<'_>) {
        let Some(reserve) = self.reserve.take() else {
            self.reserve = open_reserve();
            return;
        };
        drop(reserve);
        let mut shed = 0usize;
        if let Some((listener, _)) = self.sources.get(source) {
            while shed < SHED_PER_PAUSE {
                match listener.poll_accept(cx) {
                    Poll::Ready(Ok((stream, _))) => {
                        drop(stream);
                        shed += 1;
                    }
                    Poll::Ready(Err(_)) | Poll::Pending => break,
                }
            }
        }
        self.reserve = open_reserve();
        tracing::debug!(shed, "out of descriptors: closed queued connections");
    }

    fn recovered(&mut self) {
        if self.backoff.take().is_some() {
            tracing::info!("accepting connections again");
        }
        if self.reserve.is_none() {
            self.reserve = open_reserve();
        }
    }
}

fn uid_text(uid: Option<u32>) -> String {
    uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string())
}

fn summary_line(uid: Option<u32>, count: u64) {
    let who = uid_text(uid);
    tracing::warn!(
        target: crate::audit::TARGET,
        event = "connect",
        outcome = "refused",
        peer_uid = %who,
        count,
        summary = format!("{count} connections refused from uid {who} in the last minute")
            .as_str(),
    );
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<LimitedStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while this.flush.poll_tick(cx).is_ready() {
            for s in this.refusals.due(Instant::now()) {
                summary_line(s.key.flatten(), s.quiet);
            }
        }
        let mut handled = 0usize;
        loop {
            if let Some(pause) = this.pause.as_mut() {
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.pause = None;
            }
            if handled >= REFUSALS_PER_POLL {
                // Let the other tasks run; come back at once.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut progress = false;
            for source in 0..this.sources.len() {
                let Some((listener, socket)) = this.sources.get(source) else {
                    break;
                };
                let socket = *socket;
                match listener.poll_accept(cx) {
                    Poll::Pending => continue,
                    Poll::Ready(Ok((stream, _))) => {
                        this.recovered();
                        match this.limiter.admit(stream, socket) {
                            Ok(admitted) => return Poll::Ready(Some(Ok(admitted))),
                            Err(refused) => this.refused(refused),
                        }
                    }
                    Poll::Ready(Err(e)) => this.accept_failed(source, &e, cx),
                }
                handled += 1;
                progress = true;
                // Start the next round with the PAM socket again.
                break;
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_cap_is_half_the_descriptor_limit_within_bounds() {
        assert_eq!(total_cap(0), MAX_PER_UID);
        assert_eq!(total_cap(128), 64);
        assert_eq!(total_cap(1024), 512);
        assert_eq!(total_cap(1 << 20), MAX_TOTAL);
        assert_eq!(total_cap(u64::MAX), MAX_TOTAL);
    }

    #[test]
    fn accept_errors_are_classified() {
        use nix::libc;
        let e = io::Error::from_raw_os_error;
        assert_eq!(
            classify(&e(libc::EMFILE)),
            AcceptError::Shortage { descriptors: true }
        );
        assert_eq!(
            classify(&e(libc::ENFILE)),
            AcceptError::Shortage { descriptors: true }
        );
        assert_eq!(
            classify(&e(libc::ENOBUFS)),
            AcceptError::Shortage { descriptors: false }
        );
        assert_eq!(
            classify(&e(libc::ENOMEM)),
            AcceptError::Shortage { descriptors: false }
        );
        assert_eq!(classify(&e(libc::ECONNABORTED)), AcceptError::Transient);
        assert_eq!(classify(&e(libc::EINVAL)), AcceptError::Other);
    }

    #[test]
    fn caps_per_uid_in_total_and_root_only_on_the_pam_socket() {
        let limiter = Limiter::new(2, 3, 999);
        // root is never capped, on either socket.
        for _ in 0..10 {
            assert!(matches!(limiter.claim(0, Socket::Public), Ok(None)));
            assert!(matches!(limiter.claim(0, Socket::Pam), Ok(None)));
        }
        // Only root and the daemon's own uid on the PAM socket.
        assert_eq!(
            limiter.claim(1000, Socket::Pam).err(),
            Some(Refused::NotRoot { uid: 1000 })
        );
        let owner = limiter.claim(999, Socket::Pam);
        assert!(matches!(owner, Ok(Some(_))));
        let a1 = limiter.claim(1000, Socket::Public);
        let a2 = limiter.claim(1000, Socket::Public);
        assert!(matches!((&a1, &a2), (Ok(Some(_)), Ok(Some(_)))));
        assert_eq!(
            limiter.claim(1000, Socket::Public).err(),
            Some(Refused::TooMany { uid: 1000 })
        );
        // Three non-root connections in total.
        assert_eq!(limiter.open_total(), 3);
        assert_eq!(
            limiter.claim(1001, Socket::Public).err(),
            Some(Refused::TooManyInTotal { uid: 1001 })
        );
        // Closing one gives its place back.
        drop(a1);
        assert_eq!(limiter.open_total(), 2);
        assert!(matches!(limiter.claim(1001, Socket::Public), Ok(Some(_))));
        drop((a2, owner));
    }
}

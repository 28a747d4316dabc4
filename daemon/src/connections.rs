//! A cap on the connections each local user may hold open, so that no
//! user can exhaust the daemon's file descriptors and with them everyone's
//! logins. root is never capped: sshd, sudo and login call as root.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

/// Connections one non-root uid may hold open at once.
pub const MAX_PER_UID: usize = 32;

/// Counts open connections per uid.
#[derive(Debug, Clone)]
pub struct Limiter {
    open: Arc<Mutex<HashMap<u32, usize>>>,
    max: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The kernel gave no credentials for the peer.
    NoCredentials,
    /// This uid already holds the maximum.
    TooMany {
        /// The peer's uid.
        uid: u32,
    },
}

impl Limiter {
    /// At most `max` connections per non-root uid.
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::default(),
            max,
        }
    }

    /// Admits a freshly accepted connection, or refuses it (the caller drops
    /// it, which closes it).
    pub fn admit(&self, stream: UnixStream) -> Result<LimitedStream, Refused> {
        let uid = stream
            .peer_cred()
            .map(|c| c.uid())
            .map_err(|_| Refused::NoCredentials)?;
        if uid == 0 {
            return Ok(LimitedStream {
                stream,
                _slot: None,
            });
        }
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(uid).or_insert(0);
        if *count >= self.max {
            return Err(Refused::TooMany { uid });
        }
        *count += 1;
        Ok(LimitedStream {
            stream,
            _slot: Some(Slot {
                uid,
                open: Arc::clone(&self.open),
            }),
        })
    }
}

/// Gives a connection's place back when it closes.
#[derive(Debug)]
struct Slot {
    uid: u32,
    open: Arc<Mutex<HashMap<u32, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.uid) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.uid);
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

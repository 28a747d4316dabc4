//! The supplementary groups of a Unix socket's peer.
//!
//! `SO_PEERGROUPS` (Linux ≥ 4.13) returns the groups the connecting
//! process had when it called `connect(2)`, recorded by the kernel with the
//! uid and gid of `SO_PEERCRED`: the process's real credentials, not what
//! the group database says the user would get at a new login.
//!
//! No crate of the dependency tree wraps this option safely (nix 0.29 to
//! 0.31, rustix 1.1, socket2, unix-cred and uds have no getter for it), so
//! this crate holds the one `unsafe` call, with the lengths checked here;
//! otpd itself forbids `unsafe`.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Most groups read: the kernel's `NGROUPS_MAX`.
pub const MAX_GROUPS: usize = 65_536;

const GID: usize = size_of::<libc::gid_t>();

/// The supplementary group ids of the peer of the connected Unix socket
/// `fd`, as the kernel recorded them when the peer connected.
pub fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let capacity = groups.len() * GID;
        let mut len = libc::socklen_t::try_from(capacity)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        #[allow(unsafe_code)]
        // SAFETY: `groups` is a live, initialised allocation of exactly
        // `len` bytes, writable through the pointer for the whole call;
        // getsockopt writes at most `len` bytes there and stores in `len`
        // the size it wrote (or, with ERANGE, the size it needs). `fd` is
        // borrowed, so it stays open during the call.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        if rc == 0 {
            if len > capacity || len % GID != 0 {
                return Err(io::Error::from(io::ErrorKind::InvalidData));
            }
            groups.truncate(len / GID);
            return Ok(groups);
        }
        let error = io::Error::last_os_error();
        let needed = len.div_ceil(GID);
        // A larger buffer, or give up: never loop on the same size.
        if error.raw_os_error() != Some(libc::ERANGE)
            || needed <= groups.len()
            || needed > MAX_GROUPS
        {
            return Err(error);
        }
        groups.resize(needed, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_socket_pair_sees_this_process_groups() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut got = peer_groups(a.as_fd()).unwrap();
        let mut ours: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        ours.sort_unstable();
        assert_eq!(got, ours);
    }

    #[test]
    fn a_socket_that_is_not_connected_is_an_error_not_a_panic() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(peer_groups(f.as_fd()).is_err());
    }
}

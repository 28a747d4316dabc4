//! The process that runs a PAM stack and its ancestors, read from
//! `/proc/PID/stat`, for a `[grace]` bound to the login session (see
//! [`otpd_core::grace`]). Anything unreadable ends the chain there: the far
//! end then gives no grace, the safe failure.

use otpd_core::grace::{Lineage, MAX_LINEAGE, Stat};

/// The chain from `pid` (the daemon's peer) up to, not including, init.
pub fn of(pid: i32) -> Lineage {
    let mut next = u32::try_from(pid).ok();
    let stats = std::iter::from_fn(move || {
        let pid = next.filter(|&p| p > 1)?;
        let bytes = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
        let stat = Stat::parse(&bytes)?;
        next = Some(stat.ppid);
        Some(stat)
    });
    Lineage::from_stats(stats.take(MAX_LINEAGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_its_parents_are_read() {
        let me = std::process::id();
        let l = of(i32::try_from(me).unwrap_or(0));
        let first = l.processes().first().copied();
        assert_eq!(first.map(|p| p.pid), Some(me));
        assert!(l.processes().iter().all(|p| p.pid > 1));
        assert_eq!(of(0).processes(), &[]);
        assert_eq!(of(-5).processes(), &[]);
    }
}

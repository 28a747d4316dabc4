//! `/etc/otpd/otpd.toml`: every key optional; `otpd.toml.example` at the
//! repository root documents each with its default (and a test loads it).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use otpd_core::enforcement::{self, Enforcement, Require};

use crate::engine::EngineConfig;
use crate::error::Error;
use crate::kdf::KdfParams;
use crate::policy::Policy;
use crate::totp::{Algorithm, TotpParams};

/// Where the daemon looks for its config when not told.
pub const DEFAULT_CONFIG: &str = "/etc/otpd/otpd.toml";
/// Default socket.
pub const DEFAULT_SOCKET: &str = "/run/otpd/otpd.sock";
/// Default root-only socket of the PAM module.
pub const DEFAULT_PAM_SOCKET: &str = "/run/otpd/pam.sock";
/// File name of the PAM socket when `pam_socket` is not set: beside
/// `socket`.
pub const PAM_SOCKET_NAME: &str = "pam.sock";
/// Default state directory (master key and store).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/otpd";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable key=value lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The modes the public socket may have. Connecting to a Unix socket needs
/// write permission and nothing else, so a class has either read and write
/// or nothing; the owner (root) always has both. Whether others may
/// connect is a choice, not a risk (every call is authorised from the
/// caller's credentials, and logins use the root-only PAM socket): 0o666
/// is the default. Anything else (0o777, 0o644, 0o622, set-id bits) is a
/// mistake to refuse rather than guess at.
pub const SOCKET_MODES: [u32; 3] = [0o666, 0o660, 0o600];

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Unix socket the daemon listens on.
    pub socket: PathBuf,
    /// Mode of the socket file. Access is decided per call from the peer's
    /// credentials, so the default lets every local user connect.
    pub socket_mode: u32,
    /// The PAM module's socket: mode 0600, owned by the daemon's user
    /// (root), so no local user can connect to it or fill its queue.
    /// `None`: `pam.sock` beside `socket`.
    pub pam_socket: Option<PathBuf>,
    /// Directory of the master key and the store.
    pub state_dir: PathBuf,
    /// Members of this group may call every RPC, like root.
    pub admin_group: Option<String>,
    /// Issuer shown in authenticator apps (default: the host name).
    pub issuer: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// TOTP defaults.
    pub totp: TotpSection,
    /// Throttle.
    pub rate_limit: RateLimitSection,
    /// Lockout.
    pub lockout: LockoutSection,
    /// Backup codes.
    pub backup_codes: BackupCodesSection,
    /// Encrypted backups of the whole store (`otpctl backup`).
    pub backup: BackupSection,
    /// Who must use a second factor, and from when.
    pub enforcement: EnforcementSection,
    /// What plain users may do on their own account.
    pub self_service: SelfServiceSection,
    /// Started enrollments.
    pub enrollment: EnrollmentSection,
    /// Grace for sudo/su after a login (off by default).
    pub grace: GraceSection,
    /// The embedded database.
    pub store: StoreSection,
}

/// Default of `[store] cache_mib`.
pub const DEFAULT_STORE_CACHE_MIB: u64 = 16;

/// `[store]`: the embedded database (sled) under `state_dir/store`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// sled's page cache, in MiB (1 to 4096). Records not in it are read
    /// from the file (the kernel's page cache, outside otpd's RSS), so a
    /// small cache serves a million users; sled's own default would be
    /// 1024.
    pub cache_mib: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            cache_mib: DEFAULT_STORE_CACHE_MIB,
        }
    }
}

impl StoreSection {
    /// The cache size in bytes.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_mib.saturating_mul(1 << 20)
    }
}

/// `[grace]`: a code accepted for a user is remembered (in the daemon's
/// memory only) for `seconds`, so that the listed services (sudo, su) from
/// the same origin do not ask for the next code. Off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraceSection {
    /// How long; 0: off.
    pub seconds: u64,
    /// `session` (the default), `remote_host`, `tty` or `both`.
    #[serde(rename = "match")]
    pub by: otpd_core::grace::Match,
    /// PAM services that may use the grace.
    pub services: Vec<String>,
}

impl Default for GraceSection {
    fn default() -> Self {
        let d = otpd_core::grace::Policy::default();
        Self {
            seconds: d.seconds,
            by: d.by,
            services: d.services,
        }
    }
}

/// `[enrollment]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentSection {
    /// Seconds a started enrollment waits for its first code; after that it
    /// cannot be confirmed and is dropped at the next write of the record.
    pub pending_expiry_seconds: u64,
}

impl Default for EnrollmentSection {
    fn default() -> Self {
        Self {
            pending_expiry_seconds: otpd_core::record::DEFAULT_PENDING_EXPIRY,
        }
    }
}

/// `[self_service]`: what a plain user may do on their own account through
/// the public socket (peer credentials, no setuid). Adding a device,
/// renaming one, new backup codes and app passwords always need a current
/// code or a backup code in the same request (no key for that).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfServiceSection {
    /// A user without an active device may enroll their first one.
    pub enroll: bool,
    /// A user may remove one of their devices (with a proof).
    pub remove_device: bool,
    /// A user may reset their account (with a proof).
    pub reset: bool,
}

impl Default for SelfServiceSection {
    fn default() -> Self {
        let p = otpd_core::ops::self_service::Policy::default();
        Self {
            enroll: p.enroll,
            remove_device: p.remove_device,
            reset: p.reset,
        }
    }
}

impl SelfServiceSection {
    /// The policy the daemon decides with.
    pub fn policy(&self) -> otpd_core::ops::self_service::Policy {
        otpd_core::ops::self_service::Policy {
            enroll: self.enroll,
            remove_device: self.remove_device,
            reset: self.reset,
        }
    }
}

/// `[enforcement]`: who must use a second factor, decided by otpd from the
/// user's groups in the name service (SSSD and LDAP groups included), not
/// by the PAM line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnforcementSection {
    /// "nobody" (opt-in, as before), "everyone" or "groups".
    pub require: Require,
    /// With `require = "groups"`: the groups whose members must enroll.
    pub groups: Vec<String>,
    /// Users who never must (service accounts).
    pub exempt_users: Vec<String>,
    /// Members of these groups never must.
    pub exempt_groups: Vec<String>,
    /// `YYYY-MM-DD`: from 00:00 UTC that day, users who must enroll and
    /// have not are refused; before it they are told at each login. Empty:
    /// refused at once.
    pub deadline: String,
    /// Who to ask, in the messages users see.
    pub contact: String,
    /// Remind users without a recovery path (one device, no backup codes
    /// left) at login at most once per this many hours; 0: never.
    pub recovery_nudge_hours: u64,
    /// Accounts with a lower uid (root, system and service accounts, and
    /// always `nobody`) are not covered by "everyone"; a listed group
    /// covers them. 0: "everyone" covers root and system accounts too.
    pub min_uid: u32,
}

impl Default for EnforcementSection {
    fn default() -> Self {
        Self {
            require: Require::Nobody,
            groups: Vec::new(),
            exempt_users: Vec::new(),
            exempt_groups: Vec::new(),
            deadline: String::new(),
            contact: "your administrator".into(),
            recovery_nudge_hours: 24,
            min_uid: enforcement::DEFAULT_MIN_UID,
        }
    }
}

impl EnforcementSection {
    /// The policy, or why the section is wrong.
    pub fn policy(&self) -> Result<Enforcement, String> {
        let deadline = match self.deadline.trim() {
            "" => None,
            date => Some(enforcement::parse_date(date).ok_or_else(|| {
                format!("enforcement.deadline {date:?} is not a date (YYYY-MM-DD)")
            })?),
        };
        if self.require == Require::Groups && self.groups.is_empty() {
            return Err("enforcement.require = \"groups\" needs enforcement.groups".into());
        }
        if self.contact.trim().is_empty() || self.contact.len() > 200 {
            return Err("enforcement.contact must be 1..=200 characters".into());
        }
        if self.recovery_nudge_hours > 24 * 366 {
            return Err("enforcement.recovery_nudge_hours must be at most a year".into());
        }
        Ok(Enforcement {
            require: self.require,
            groups: self.groups.clone(),
            exempt_users: self.exempt_users.clone(),
            exempt_groups: self.exempt_groups.clone(),
            deadline,
            contact: self.contact.trim().to_owned(),
            nudge_interval: self.recovery_nudge_hours * 3600,
            min_uid: self.min_uid,
        })
    }
}

/// `[totp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotpSection {
    /// sha1 | sha256 | sha512 for new enrollments.
    pub algorithm: Algorithm,
    /// 6 or 8 for new enrollments.
    pub digits: u8,
    /// Seconds per step for new enrollments.
    pub period: u64,
    /// Accepted steps either side of the current one.
    pub window: u32,
    /// Most steps a device's learned clock offset may reach either way (0:
    /// no learning). The window is shifted by the offset, never widened.
    pub max_drift_steps: u32,
}

/// `[rate_limit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    /// Failures allowed per window.
    pub max_failures: u32,
    /// Window in seconds.
    pub window_seconds: u64,
}

/// `[lockout]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutSection {
    /// Consecutive failures that lock the user.
    pub threshold: u32,
    /// First lockout, seconds.
    pub duration_seconds: u64,
    /// Cap of the doubling lockout, seconds.
    pub max_duration_seconds: u64,
}

/// `[backup_codes]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupCodesSection {
    /// Warn the user at login when this many codes or fewer are left.
    pub low_warning: u32,
}

/// Default directory of encrypted backups.
pub const DEFAULT_BACKUP_DIR: &str = "/var/backups/otpd";

/// `[backup]`: where and how often otpd writes encrypted backups once a
/// backup key is set (`otpctl backup init`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSection {
    /// Directory of the backup files (created, mode 0700, if missing).
    pub directory: PathBuf,
    /// At most one automatic backup per this many seconds; changes within
    /// it are in the next one.
    pub interval_seconds: u64,
    /// Backup files kept; older ones are removed.
    pub keep: u32,
}

impl Default for BackupSection {
    fn default() -> Self {
        Self {
            directory: DEFAULT_BACKUP_DIR.into(),
            interval_seconds: 900,
            keep: 30,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            socket_mode: 0o666,
            pam_socket: None,
            state_dir: DEFAULT_STATE_DIR.into(),
            admin_group: None,
            issuer: None,
            log_format: LogFormat::Text,
            totp: TotpSection::default(),
            rate_limit: RateLimitSection::default(),
            lockout: LockoutSection::default(),
            backup_codes: BackupCodesSection::default(),
            backup: BackupSection::default(),
            enforcement: EnforcementSection::default(),
            self_service: SelfServiceSection::default(),
            enrollment: EnrollmentSection::default(),
            grace: GraceSection::default(),
            store: StoreSection::default(),
        }
    }
}

impl Default for TotpSection {
    fn default() -> Self {
        let d = TotpParams::default();
        Self {
            algorithm: d.algorithm,
            digits: d.digits,
            period: d.period,
            window: 1,
            max_drift_steps: otpd_core::drift::DEFAULT_MAX_DRIFT_STEPS,
        }
    }
}

impl Default for RateLimitSection {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            max_failures: p.max_failures,
            window_seconds: p.window,
        }
    }
}

impl Default for LockoutSection {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            threshold: p.lock_threshold,
            duration_seconds: p.lock_duration,
            max_duration_seconds: p.lock_max,
        }
    }
}

impl Default for BackupCodesSection {
    fn default() -> Self {
        Self { low_warning: 3 }
    }
}

impl Config {
    /// Loads `path`; when `path` is `None`, loads [`DEFAULT_CONFIG`] if it
    /// exists and uses the defaults otherwise. An explicitly named file must
    /// exist.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        let (path, explicit) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Self::default());
            }
            Err(e) => {
                return Err(Error::Config {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let config: Self = toml::from_str(text).map_err(|e| Error::Config {
            path: origin.to_owned(),
            reason: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate().map_err(|reason| Error::Config {
            path: origin.to_owned(),
            reason,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if !SOCKET_MODES.contains(&self.socket_mode) {
            return Err(format!(
                "socket_mode = 0o{:o} is not one of 0o666 (every local user may connect; each \
                 call is authorised from the caller's credentials: the default), 0o660 (root \
                 and root's group) or 0o600 (root only); connecting needs write permission, \
                 read or execute bits alone mean nothing on a socket",
                self.socket_mode
            ));
        }
        if !self.socket.is_absolute()
            || !self.state_dir.is_absolute()
            || self.pam_socket.as_ref().is_some_and(|p| !p.is_absolute())
        {
            return Err("socket, pam_socket and state_dir must be absolute paths".into());
        }
        if self.pam_socket() == self.socket {
            return Err("pam_socket and socket must be different paths".into());
        }
        if self.totp.digits != 6 && self.totp.digits != 8 {
            return Err(format!(
                "totp.digits must be 6 or 8, not {}",
                self.totp.digits
            ));
        }
        if !(15..=300).contains(&self.totp.period) {
            return Err(format!(
                "totp.period must be 15..=300, not {}",
                self.totp.period
            ));
        }
        if self.totp.window > 10 {
            return Err(format!(
                "totp.window must be 0..=10, not {}",
                self.totp.window
            ));
        }
        if self.totp.max_drift_steps > otpd_core::drift::MAX_DRIFT_STEPS_LIMIT {
            return Err(format!(
                "totp.max_drift_steps must be 0..=10, not {}",
                self.totp.max_drift_steps
            ));
        }
        if self.rate_limit.max_failures == 0 || self.rate_limit.window_seconds == 0 {
            return Err("rate_limit.max_failures and window_seconds must be at least 1".into());
        }
        if self.lockout.threshold == 0 || self.lockout.duration_seconds == 0 {
            return Err("lockout.threshold and duration_seconds must be at least 1".into());
        }
        if self.lockout.max_duration_seconds < self.lockout.duration_seconds {
            return Err("lockout.max_duration_seconds must be >= duration_seconds".into());
        }
        if !self.backup.directory.is_absolute() {
            return Err("backup.directory must be an absolute path".into());
        }
        if self.backup.interval_seconds == 0 || self.backup.keep == 0 {
            return Err("backup.interval_seconds and backup.keep must be at least 1".into());
        }
        self.enforcement.policy()?;
        if self.grace.seconds > 3600 {
            return Err(format!(
                "grace.seconds must be 0..=3600 (an hour), not {}",
                self.grace.seconds
            ));
        }
        if !(1..=4096).contains(&self.store.cache_mib) {
            return Err(format!(
                "store.cache_mib must be 1..=4096, not {}",
                self.store.cache_mib
            ));
        }
        if !(60..=7 * 24 * 3600).contains(&self.enrollment.pending_expiry_seconds) {
            return Err(format!(
                "enrollment.pending_expiry_seconds must be 60..=604800 (a week), not {}",
                self.enrollment.pending_expiry_seconds
            ));
        }
        Ok(())
    }

    /// The PAM module's socket: `pam_socket`, or `pam.sock` in the
    /// directory of `socket`.
    pub fn pam_socket(&self) -> PathBuf {
        match &self.pam_socket {
            Some(p) => p.clone(),
            None => self
                .socket
                .parent()
                .unwrap_or_else(|| Path::new("/"))
                .join(PAM_SOCKET_NAME),
        }
    }

    /// Checks the configuration after command-line overrides.
    pub fn check(&self, origin: &str) -> Result<(), Error> {
        self.validate().map_err(|reason| Error::Config {
            path: origin.to_owned(),
            reason,
        })
    }

    /// For `--check-config`: every group the configuration names exists in
    /// the name service (`admin_group`, `[enforcement] groups` and
    /// `exempt_groups`). A misspelt admin group stops the daemon from
    /// starting; a misspelt enforcement group covers nobody, silently.
    pub fn check_groups(&self, origin: &str) -> Result<(), Error> {
        let named = self
            .admin_group
            .iter()
            .map(|g| ("admin_group", g))
            .chain(
                self.enforcement
                    .groups
                    .iter()
                    .map(|g| ("enforcement.groups", g)),
            )
            .chain(
                self.enforcement
                    .exempt_groups
                    .iter()
                    .map(|g| ("enforcement.exempt_groups", g)),
            );
        for (key, name) in named {
            let reason = match nix::unistd::Group::from_name(name) {
                Ok(Some(_)) => continue,
                Ok(None) => format!("{key}: group {name:?} does not exist"),
                Err(e) => format!("{key}: cannot look up group {name:?}: {e}"),
            };
            return Err(Error::Config {
                path: origin.to_owned(),
                reason,
            });
        }
        Ok(())
    }

    /// The engine's settings.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            policy: Policy {
                max_failures: self.rate_limit.max_failures,
                window: self.rate_limit.window_seconds,
                lock_threshold: self.lockout.threshold,
                lock_duration: self.lockout.duration_seconds,
                lock_max: self.lockout.max_duration_seconds,
            },
            window: self.totp.window,
            defaults: TotpParams {
                algorithm: self.totp.algorithm,
                digits: self.totp.digits,
                period: self.totp.period,
            },
            issuer: self.issuer.clone().unwrap_or_else(default_issuer),
            kdf: KdfParams::default(),
            backup_codes_low: self.backup_codes.low_warning,
            // Checked by `validate`; an unchecked bad section enforces
            // nothing rather than panicking.
            enforcement: self.enforcement.policy().unwrap_or_default(),
            pending_expiry: self.enrollment.pending_expiry_seconds,
            max_drift_steps: self.totp.max_drift_steps,
            grace: otpd_core::grace::Policy {
                seconds: self.grace.seconds,
                by: self.grace.by,
                services: self.grace.services.clone(),
            },
        }
    }
}

fn default_issuer() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.replace(':', "-"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "otpd".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() -> Result<(), Error> {
        let c = Config::parse("", "test")?;
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.pam_socket(), PathBuf::from(DEFAULT_PAM_SOCKET));
        assert_eq!(c.engine_config().policy, Policy::default());
        Ok(())
    }

    #[test]
    fn example_file_parses_and_states_the_defaults() -> Result<(), Box<dyn std::error::Error>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../otpd.toml.example");
        let text = std::fs::read_to_string(path)?;
        // Every key is commented out: the file as shipped is the defaults...
        let shipped = Config::parse(&text, "example")?;
        assert_eq!(shipped.engine_config().policy, Policy::default());
        // ...and uncommenting every key must give the same values.
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| l.contains(" = "))
                    .unwrap_or(l)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let explicit = Config::parse(&uncommented, "example uncommented")?;
        assert_eq!(explicit.engine_config().policy, Policy::default());
        assert_eq!(explicit.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(explicit.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(explicit.socket_mode, 0o666);
        assert_eq!(explicit.pam_socket(), PathBuf::from(DEFAULT_PAM_SOCKET));
        assert_eq!(shipped.pam_socket(), PathBuf::from(DEFAULT_PAM_SOCKET));
        assert_eq!(explicit.totp.window, 1);
        assert_eq!(explicit.totp.max_drift_steps, 2);
        assert_eq!(explicit.enrollment.pending_expiry_seconds, 900);
        assert_eq!(
            explicit.engine_config().grace,
            otpd_core::grace::Policy::default()
        );
        assert_eq!(
            explicit.self_service.policy(),
            otpd_core::ops::self_service::Policy::default()
        );
        assert!(!explicit.self_service.enroll && !explicit.self_service.reset);
        let backup = BackupSection::default();
        assert_eq!(explicit.backup.directory, backup.directory);
        assert_eq!(
            (explicit.backup.interval_seconds, explicit.backup.keep),
            (backup.interval_seconds, backup.keep)
        );
        assert_eq!(explicit.engine_config().defaults, TotpParams::default());
        assert_eq!(explicit.store.cache_mib, DEFAULT_STORE_CACHE_MIB);
        Ok(())
    }

    #[test]
    fn malformed_config_is_a_clear_error() {
        for (text, needle) in [
            ("sockett = \"/x\"", "unknown field"),
            ("[totp]\ndigits = 7", "digits must be 6 or 8"),
            ("[totp]\nalgorithm = \"md5\"", "unknown variant"),
            ("[lockout]\nthreshold = 0", "at least 1"),
            ("socket = \"relative\"", "absolute"),
            ("[backup]\ndirectory = \"backups\"", "absolute"),
            ("[backup]\nkeep = 0", "at least 1"),
            ("[store]\ncache_mib = 0", "store.cache_mib must be 1..=4096"),
            (
                "[enforcement]\nrequire = \"groups\"",
                "needs enforcement.groups",
            ),
            ("[enforcement]\ndeadline = \"15/12/2026\"", "not a date"),
            ("[enforcement]\nrequire = \"some\"", "unknown variant"),
            ("[enforcement]\ncontact = \"\"", "contact"),
            ("pam_socket = \"pam.sock\"", "absolute"),
            (
                "socket_mode = 0o777",
                "socket_mode = 0o777 is not one of 0o666",
            ),
            ("socket_mode = 0o644", "socket_mode = 0o644 is not one of"),
            ("socket_mode = 0o4666", "socket_mode = 0o4666 is not one of"),
            (
                "socket_mode = 0o622",
                "read or execute bits alone mean nothing",
            ),
            ("pam_socket = \"/run/otpd/otpd.sock\"", "different paths"),
            ("this is not toml", "config"),
        ] {
            let err = Config::parse(text, "t")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn the_pam_socket_follows_the_socket_unless_set() -> Result<(), Error> {
        let c = Config::parse("socket = \"/srv/otpd/public.sock\"", "t")?;
        assert_eq!(c.pam_socket(), PathBuf::from("/srv/otpd/pam.sock"));
        let c = Config::parse("pam_socket = \"/run/otpd-pam/s\"", "t")?;
        assert_eq!(c.pam_socket(), PathBuf::from("/run/otpd-pam/s"));
        Ok(())
    }

    #[test]
    fn the_legitimate_socket_modes_are_accepted() -> Result<(), Error> {
        for mode in ["0o666", "0o660", "0o600"] {
            Config::parse(&format!("socket_mode = {mode}"), "t")?;
        }
        Ok(())
    }

    #[test]
    fn check_groups_names_the_key_of_a_group_that_does_not_exist() -> Result<(), Error> {
        let c = Config::parse("admin_group = \"root\"", "t")?;
        c.check_groups("t")?;
        for (text, needle) in [
            (
                "admin_group = \"no-such-group-otpd\"",
                "admin_group: group \"no-such-group-otpd\" does not exist",
            ),
            (
                "[enforcement]\nrequire = \"groups\"\ngroups = [\"root\", \"no-such-group-otpd\"]",
                "enforcement.groups: group \"no-such-group-otpd\" does not exist",
            ),
            (
                "[enforcement]\nexempt_groups = [\"no-such-group-otpd\"]",
                "enforcement.exempt_groups: group",
            ),
        ] {
            let err = Config::parse(text, "t")?
                .check_groups("t")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
        Ok(())
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        assert!(Config::load(Some(Path::new("/nonexistent/otpd.toml"))).is_err());
    }
}

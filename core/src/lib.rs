//! otpd's core: every decision otpd takes, as pure functions of a user's
//! record, the request, the time, the configuration and a random source.
//!
//! Nothing here does I/O: no tokio, tonic, sled, file system or NSS is a
//! dependency of this crate, so the compiler keeps it that way. The daemon
//! brings the store, the clock, the randomness, the KDF's working memory
//! and the ordering of writes.
//!
//! - [`secret`]: secret-bearing types (zeroized, never printed).
//! - [`totp`], [`kdf`], [`backup_codes`], [`app_password`]: the credentials.
//! - [`policy`]: throttle and lockout arithmetic.
//! - [`device`], [`record`]: what is stored per user, its schema versions
//!   and the migration of older ones; [`seal`]: sealing under the master key.
//! - [`backup`]: the plaintext of encrypted backups (parser) and the
//!   derivation of the backup key from its passphrase.
//! - [`doctor`]: the checks of `otpctl doctor` on PAM files and sshd's
//!   settings (texts in, findings out).
//! - [`enforcement`]: who must use a second factor, from when, and the
//!   reminders to users without a recovery path.
//! - [`drift`]: the clock offset learned per device from accepted codes.
//! - [`ops`]: the decisions (verify, enroll, devices, app passwords, admin)
//!   and their typed outcomes.
#![forbid(unsafe_code)]
// I/O, clocks and ambient randomness are refused by core/clippy.toml;
// tests may use the operating system's random source.
#![cfg_attr(test, allow(clippy::disallowed_types, clippy::disallowed_methods))]

pub mod app_password;
pub mod backup;
pub mod backup_codes;
pub mod device;
pub mod doctor;
pub mod drift;
pub mod enforcement;
pub mod error;
pub mod grace;
pub mod hotp;
pub mod interop;
pub mod kdf;
pub mod ops;
pub mod policy;
pub mod record;
pub mod seal;
pub mod secret;
pub mod totp;

pub use error::Error;

/// A cryptographically secure random source, passed in by the caller (the
/// operating system's in the daemon, a seeded one in tests).
pub trait Random: rand::RngCore + rand::CryptoRng {}

impl<T: rand::RngCore + rand::CryptoRng> Random for T {}

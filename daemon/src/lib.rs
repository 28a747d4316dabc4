//! otpd: the daemon that holds TOTP secrets and decides on codes.
//!
//! The decisions live in the pure crate `otpd_core` (re-exported here
//! under their old module names); this crate brings the I/O and the
//! ordering: [`engine`] runs each decision inside the store's atomic
//! update with the replay watermarks and the KDF pool, [`service`]
//! translates the wire types, [`authz`] decides who may call what,
//! [`server`] runs it on a Unix socket.

/// The plaintext of encrypted backups (pure, in the core); the daemon's
/// writer is [`backup`].
pub use otpd_core::backup as backup_document;
/// Sealing under the master key (pure, in the core); the key file is
/// [`keyfile`].
pub use otpd_core::seal as crypto;
pub use otpd_core::{
    app_password, backup_codes, device, enforcement, interop, kdf, ops, policy, record, secret,
    totp,
};
pub use otpd_core::{drift, grace};

pub mod clock;
pub mod engine;
pub mod error;
pub mod group_commit;
pub mod kdf_pool;
pub mod keyfile;
pub mod store;
pub mod watermark;

pub use error::Error;
pub mod accounts;
pub mod audit;
pub mod authz;
pub mod backup;
pub mod config;
pub mod connections;
pub mod decider;
pub mod lineage;
pub mod log_output;
pub mod membership;
pub mod repeats;
pub mod server;
pub mod service;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use server::Daemon;

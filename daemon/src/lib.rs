//! otpd: the daemon that holds TOTP secrets and decides on codes.
//!
//! The domain core ([`totp`], [`backup_codes`], [`policy`], [`crypto`],
//! [`engine`]) knows nothing of gRPC; [`service`] translates the wire types,
//! [`authz`] decides who may call what, [`server`] runs it on a Unix socket.

pub mod backup_codes;
pub mod clock;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod policy;
pub mod record;
pub mod secret;
pub mod store;
pub mod totp;
pub mod watermark;

pub use error::Error;
pub mod accounts;
pub mod audit;
pub mod authz;
pub mod config;
pub mod connections;
pub mod log_output;
pub mod repeats;
pub mod server;
pub mod service;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use server::Daemon;

//! Formats of the tools people move from, one file each: parsers of
//! untrusted bytes (each with a fuzz target) that return what otpd needs
//! to import, never printing a secret in an error.

pub mod google_authenticator;
pub mod google_migration;
pub mod otpauth;
pub mod otpd_export;
pub mod users_oath;

//! Secret-bearing types: zeroized on drop, never printed, compared in
//! constant time.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Random;
use crate::error::Error;

/// Length of a freshly generated TOTP secret: 160 bits, as RFC 4226 advises.
pub const SECRET_LEN: usize = 20;

/// The shared TOTP key of one user.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    /// A new random secret.
    pub fn generate(rng: &mut dyn Random) -> Self {
        let mut bytes = vec![0u8; SECRET_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps raw key bytes (e.g. the RFC 6238 test keys).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The raw key.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The key as users type it: RFC 4648 base32 without padding.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(data_encoding::BASE32_NOPAD.encode(&self.0))
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// Longest code the daemon looks at; anything longer is refused unread.
pub const MAX_CODE_LEN: usize = 8;

/// A syntactically valid code: 6 or 8 ASCII digits. What it matches is for
/// the TOTP and backup-code checks to say.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Code(Vec<u8>);

impl Code {
    /// Validates untrusted input: only ASCII digits, 6 or 8 of them.
    /// The error never echoes the input.
    pub fn parse(input: &[u8]) -> Result<Self, Error> {
        if input.is_empty() {
            return Err(Error::InvalidCode("the code is empty"));
        }
        if input.len() > 64 {
            return Err(Error::InvalidCode("the code is too long"));
        }
        if input.contains(&0) {
            return Err(Error::InvalidCode("the code contains a NUL byte"));
        }
        if !input.iter().all(u8::is_ascii_digit) {
            return Err(Error::InvalidCode("the code must contain digits only"));
        }
        if input.len() != 6 && input.len() != MAX_CODE_LEN {
            return Err(Error::InvalidCode("the code must be 6 or 8 digits long"));
        }
        Ok(Self(input.to_vec()))
    }

    /// The digits.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a parsed code; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time comparison with an expected code.
    pub fn ct_matches(&self, expected: &[u8]) -> bool {
        self.0.len() == expected.len() && bool::from(self.0.ct_eq(expected))
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_parse_accepts_six_and_eight_digits() {
        assert_eq!(Code::parse(b"123456").map(|c| c.len()).ok(), Some(6));
        assert_eq!(Code::parse(b"12345678").map(|c| c.len()).ok(), Some(8));
    }

    #[test]
    fn code_parse_refuses_garbage() {
        for bad in [
            &b""[..],
            b"12345",
            b"1234567",
            b"123456789",
            b"12345a",
            b"123 456",
            b"123\x00456",
            b"\xff\xfe\xfd\xfc\xfb\xfa",
            &[b'1'; 10_000][..],
        ] {
            assert!(Code::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        assert_eq!(format!("{s:?}"), "TotpSecret(<redacted>)");
        let c = Code::parse(b"123456").ok();
        assert_eq!(format!("{c:?}"), "Some(Code(<redacted>))");
    }
}

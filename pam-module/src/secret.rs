//! What the user typed (a code, or a password followed by a code), held so
//! that it is wiped from memory when dropped and never printed.

use std::fmt;

use zeroize::Zeroizing;

/// Secret bytes: zeroized on drop, no `Debug`/`Display` that shows them.
///
/// Cloning is deliberately not offered; a copy is made only where a second
/// owner really exists (see [`Secret::from_slice`]).
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of `bytes` (which will be wiped on drop).
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Self {
        // Allocate once, with room for a terminating NUL, so that neither
        // this copy nor a later C string conversion leaves a stray copy in
        // a reallocated-and-freed buffer.
        let mut v = Vec::with_capacity(bytes.len() + 1);
        v.extend_from_slice(bytes);
        Self::new(v)
    }

    /// The secret bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing was typed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether both hold the same bytes; the time taken depends on the
    /// lengths only, not on where they differ.
    #[must_use]
    pub fn same_as(&self, other: &Secret) -> bool {
        let (a, b) = (self.as_bytes(), other.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl AsRef<[u8]> for Secret {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_the_bytes() {
        let s = Secret::from_slice(b"123456");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(s.as_bytes(), b"123456");
        assert_eq!(s.len(), 6);
        assert!(!s.is_empty());
    }

    #[test]
    fn same_as_compares_all_bytes() {
        let s = Secret::from_slice(b"hunter2");
        assert!(s.same_as(&Secret::from_slice(b"hunter2")));
        assert!(!s.same_as(&Secret::from_slice(b"hunter3")));
        assert!(!s.same_as(&Secret::from_slice(b"hunter22")));
        assert!(!s.same_as(&Secret::from_slice(b"")));
    }
}

//! google-authenticator-libpam's `~/.google_authenticator` file (in progress).

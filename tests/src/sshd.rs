//! Helpers for a private sshd on 127.0.0.1 with a PAM stack using pam_otpd.

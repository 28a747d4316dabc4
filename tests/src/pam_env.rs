//! Helpers for running pam_otpd under pam_wrapper + pamtester.

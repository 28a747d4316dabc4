//! pam_oath's `/etc/users.oath` (in progress).

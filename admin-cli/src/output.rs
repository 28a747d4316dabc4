//! All printing: the human text and the `--json` shapes, in one place.
//!
//! Human output goes to stdout; warnings and the one error line go to
//! stderr, prefixed with `otpctl: warning: ` / `otpctl: error: `. `--json`
//! prints exactly one JSON value on one line to stdout.

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use otpd_proto::v1::{
    Algorithm, AppPassword, Decision, Device, LastSuccess, ListMustEnrollResponse, Method, Reason,
    State, UserStatus, VerifyResponse,
};
use serde::Serialize;

use crate::commands::confirm::Confirmation;
use crate::commands::enroll::{Enrollment, Replacing};
use crate::commands::import::{Outcome as ImportOutcome, Result_ as ImportResult};
use crate::error::Error;

/// The prompt of an interactive `otpctl enroll`.
pub const CONFIRM_PROMPT: &str = "Enter the code shown in the app to confirm: ";

/// Prints the one error line of a failed run: with `--json` one JSON
/// object, `{"error":{"code","message","exit_code"}}`.
pub fn error(err: &mut dyn Write, e: &Error, json: bool) {
    // If stderr itself is gone there is no one left to tell.
    if json {
        #[derive(Serialize)]
        struct Json<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'static str,
            message: &'a str,
            exit_code: u8,
        }
        let message = e.to_string();
        let value = Json {
            error: Inner {
                code: e.code(),
                message: &message,
                exit_code: e.exit_code(),
            },
        };
        if serde_json::to_writer(&mut *err, &value).is_ok() {
            let _ = writeln!(err);
        }
        return;
    }
    let _ = writeln!(err, "otpctl: error: {e}");
}

/// Where and how a command prints.
pub struct Printer<'a> {
    out: Out<'a>,
    err: &'a mut dyn Write,
    json: bool,
}

/// stdout, which the reader may close (`otpctl status | head`): once a
/// write finds it closed, the rest of the output is dropped quietly and
/// the command goes on to the end of its work (or stops early where there
/// is nothing left to do but print: see [`Printer::stdout_closed`]).
struct Out<'a> {
    inner: &'a mut dyn Write,
    closed: bool,
}

impl Out<'_> {
    fn quiet<T>(&mut self, done: T, r: io::Result<T>) -> io::Result<T> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(done)
            }
            other => other,
        }
    }
}

impl Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let r = self.inner.write(buf);
        self.quiet(buf.len(), r)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.inner.flush();
        self.quiet((), r)
    }
}

impl<'a> Printer<'a> {
    pub fn new(out: &'a mut dyn Write, err: &'a mut dyn Write, json: bool) -> Self {
        Printer {
            out: Out {
                inner: out,
                closed: false,
            },
            err,
            json,
        }
    }

    /// Whether the reader closed stdout: nobody sees what is printed now,
    /// so asking (a prompt) or fetching more only to print it is pointless.
    pub fn stdout_closed(&self) -> bool {
        self.out.closed
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    fn json_line<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        writeln!(self.out)
    }

    /// A warning on stderr; with `--json` one JSON object,
    /// `{"warning":{"message"}}`.
    fn warning(&mut self, message: &str) -> io::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                warning: Inner<'a>,
            }
            #[derive(Serialize)]
            struct Inner<'a> {
                message: &'a str,
            }
            let value = Json {
                warning: Inner { message },
            };
            serde_json::to_writer(&mut *self.err, &value)?;
            return writeln!(self.err);
        }
        writeln!(self.err, "otpctl: warning: {message}")
    }

    /// The new secret of `otpctl enroll`: QR code, URI, parameters and key.
    pub fn enrollment(
        &mut self,
        e: &Enrollment,
        qr: Option<&str>,
        png: Option<&Path>,
        replacing: Option<&Replacing>,
    ) -> io::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                device: &'a str,
                issuer: &'a str,
                secret: &'a str,
                otpauth_uri: &'a str,
                algorithm: Option<&'static str>,
                digits: u32,
                period: u32,
                /// The active devices it replaces once confirmed.
                replaces: Vec<&'a str>,
            }
            return self.json_line(&Json {
                replaces: replacing
                    .map(|r| r.devices.iter().map(|(name, _)| name.as_str()).collect())
                    .unwrap_or_default(),
                user: &e.user,
                device: &e.device,
                issuer: &e.issuer,
                secret: &e.secret,
                otpauth_uri: &e.otpauth_uri,
                algorithm: algorithm_name(e.algorithm),
                digits: e.digits,
                period: e.period,
            });
        }
        if let Some(qr) = qr {
            writeln!(self.out, "{qr}")?;
            writeln!(self.out)?;
        }
        writeln!(
            self.out,
            "Scan the QR code with an authenticator app, or type in the key by hand."
        )?;
        writeln!(self.out)?;
        let algorithm =
            algorithm_name(e.algorithm).map_or_else(|| "-".to_owned(), str::to_uppercase);
        writeln!(self.out, "Account:    {}", e.user)?;
        writeln!(self.out, "Device:     {}", e.device)?;
        writeln!(self.out, "Issuer:     {}", e.issuer)?;
        writeln!(self.out, "Algorithm:  {algorithm}")?;
        writeln!(self.out, "Digits:     {}", e.digits)?;
        writeln!(self.out, "Period:     {}s", e.period)?;
        writeln!(self.out, "Key:        {}", &*group_key(&e.secret))?;
        writeln!(self.out, "URI:        {}", &*e.otpauth_uri)?;
        if let Some(png) = png {
            writeln!(
                self.out,
                "QR PNG:     {} (holds the secret: delete it once scanned)",
                png.display()
            )?;
        }
        writeln!(self.out)?;
        if let Some(r) = replacing {
            self.replacing(&e.user, r)?;
        }
        Ok(())
    }

    /// What a re-enrollment replaces, and the parameters it kept.
    fn replacing(&mut self, user: &str, r: &Replacing) -> io::Result<()> {
        if !r.devices.is_empty() {
            let devices: Vec<String> = r
                .devices
                .iter()
                .map(|(name, totp)| format!("{name} ({totp})"))
                .collect();
            let (noun, them) = if devices.len() == 1 {
                ("device", "it")
            } else {
                ("devices", "them")
            };
            writeln!(
                self.out,
                "{user} is enrolled already: {noun} {}. Once confirmed, the new device \
                 replaces {them} and new backup codes are issued; until then {them} and the \
                 backup codes keep working.",
                devices.join(", ")
            )?;
        }
        if let Some(pending) = &r.pending {
            writeln!(
                self.out,
                "The enrollment of device {pending} that awaited confirmation was dropped."
            )?;
        }
        if let Some(from) = &r.kept_from {
            let options: Vec<String> = r.kept.iter().map(|k| format!("--{k}")).collect();
            writeln!(
                self.out,
                "Kept from {from}: {} (give {} to change).",
                r.kept.join(", "),
                options.join(", ")
            )?;
        }
        writeln!(self.out)
    }

    /// Asks for the first code after `enrollment` (human mode only).
    pub fn confirm_prompt(&mut self) -> io::Result<()> {
        write!(self.out, "{CONFIRM_PROMPT}")?;
        self.out.flush()
    }

    /// Tells how to confirm later, when `enroll` does not prompt (or the
    /// prompt got no code; `eof`: not even a newline).
    pub fn confirm_hint(&mut self, user: &str, eof: bool) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        if eof {
            writeln!(self.out)?;
        }
        writeln!(self.out, "Confirm with: otpctl confirm {user} CODE")
    }

    /// A wrong code at the prompt of `enroll`: why, and how many tries are
    /// left (the prompt comes again).
    pub fn confirm_retry(&mut self, reason: &str, tries_left: u32) -> io::Result<()> {
        let tries = if tries_left == 1 { "try" } else { "tries" };
        writeln!(
            self.out,
            "Code rejected: {reason} ({tries_left} {tries} left)"
        )
    }

    /// The confirmation at the prompt of `enroll` or `device add`.
    pub fn confirmed_at_prompt(&mut self, user: &str, c: &Confirmation) -> io::Result<()> {
        writeln!(self.out)?;
        self.confirmed(user, c)
    }

    /// A confirmed enrollment: the new backup codes, or (a device added
    /// beside others) that the device is active and the codes unchanged.
    pub fn confirmed(&mut self, user: &str, c: &Confirmation) -> io::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                device: Option<&'a str>,
                added_device: bool,
                backup_codes: &'a [String],
            }
            return self.json_line(&Json {
                user,
                device: non_empty(&c.device),
                added_device: c.added_device,
                backup_codes: &c.backup_codes,
            });
        }
        if !c.added_device {
            return self.backup_codes(user, &c.backup_codes);
        }
        writeln!(
            self.out,
            "Device {} of {user} is active beside the other devices.",
            c.device
        )?;
        writeln!(
            self.out,
            "The backup codes are unchanged (new ones: otpctl backup-codes {user})."
        )
    }

    /// Backup codes issued by confirm, `enroll` or `backup-codes`.
    pub fn backup_codes(&mut self, user: &str, codes: &[String]) -> io::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                backup_codes: &'a [String],
            }
            return self.json_line(&Json {
                user,
                backup_codes: codes,
            });
        }
        writeln!(
            self.out,
            "Backup codes for {user} (shown only this once; each code works once):"
        )?;
        for code in codes {
            writeln!(self.out, "{code}")?;
        }
        Ok(())
    }

    /// `otpctl unlock`.
    pub fn unlocked(&mut self, user: &str) -> io::Result<()> {
        self.done(user, format!("unlocked {user}"))
    }

    /// `otpctl reset`.
    pub fn reset(&mut self, user: &str) -> io::Result<()> {
        self.done(
            user,
            format!("reset {user}: secret, backup codes and counters removed"),
        )
    }

    fn done(&mut self, user: &str, line: String) -> io::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                ok: bool,
            }
            return self.json_line(&Json { user, ok: true });
        }
        writeln!(self.out, "{line}")
    }

    /// `otpctl status` of one page of users: see [`StatusListing`].
    #[cfg(test)]
    pub fn status(&mut self, users: &[UserStatus], unreadable: &[String]) -> io::Result<()> {
        let mut listing = self.status_listing()?;
        listing.page(users, unreadable)?;
        listing.finish()
    }

    /// `otpctl status`: a table (or a JSON array) of users, printed page
    /// by page as ListUsers delivers them.
    pub fn status_listing(&mut self) -> io::Result<StatusListing<'_, 'a>> {
        if self.json {
            write!(self.out, "[")?;
        }
        Ok(StatusListing {
            p: self,
            first_page: true,
            first_row: true,
        })
    }

    /// `otpctl status --must-enroll`: the users the enforcement policy
    /// requires a second factor of who have no active device.
    pub fn must_enroll(&mut self, m: &ListMustEnrollResponse) -> io::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                require: &'a str,
                groups: &'a [String],
                deadline: Option<&'a str>,
                deadline_passed: bool,
                users: &'a [String],
            }
            return self.json_line(&Json {
                require: &m.require,
                groups: &m.groups,
                deadline: non_empty(&m.deadline_date),
                deadline_passed: m.deadline_passed,
                users: &m.users,
            });
        }
        let who = match m.require.as_str() {
            "nobody" => {
                return writeln!(
                    self.out,
                    "No enforcement policy: a second factor is opt-in ([enforcement] require \
                     = \"nobody\")."
                );
            }
            "groups" => format!("members of {}", m.groups.join(", ")),
            other => other.to_owned(),
        };
        let when = match (m.deadline_date.as_str(), m.deadline_passed) {
            ("", _) => "now: logins without a device are refused".to_owned(),
            (date, true) => format!("since {date}: logins without a device are refused"),
            (date, false) => format!("from {date}: until then, logins are reminded"),
        };
        writeln!(self.out, "Second factor required of {who}, {when}.")?;
        if m.users.is_empty() {
            return writeln!(self.out, "Every such user has an active device.");
        }
        writeln!(self.out, "Must enroll and have not ({}):", m.users.len())?;
        for user in &m.users {
            writeln!(self.out, "  {user}")?;
        }
        Ok(())
    }

    /// `otpctl device list`: the active devices, then the pending one.
    pub fn devices(&mut self, s: &UserStatus) -> io::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                devices: Vec<DeviceJson<'a>>,
                pending_device: Option<&'a str>,
            }
            return self.json_line(&Json {
                user: &s.user,
                devices: s.devices.iter().map(DeviceJson::from).collect(),
                pending_device: non_empty(&s.pending_device),
            });
        }
        let mut rows: Vec<Vec<String>> = s.devices.iter().map(device_cells).collect();
        if !s.pending_device.is_empty() {
            let mut pending = vec![s.pending_device.clone(), "pending".to_owned()];
            pending.resize(DEVICE_HEADER.len(), "-".to_owned());
            rows.push(pending);
        }
        write!(self.out, "{}", table(&DEVICE_HEADER, &rows))
    }

    /// `otpctl device rename`.
    pub fn device_renamed(&mut self, user: &str, old: &str, new: &str) -> io::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                ok: bool,
                old_name: &'a str,
                new_name: &'a str,
            }
            return self.json_line(&Json {
                user,
                ok: true,
                old_name: old,
                new_name: new,
            });
        }
        writeln!(self.out, "renamed device {old} of {user} to {new}")
    }

    /// `otpctl device remove`. With no device left, a warning says what
    /// that means for logins.
    pub fn device_removed(&mut self, user: &str, device: &str, left: u32) -> io::Result<()> {
        if left == 0 {
            self.warning(&format!(
                "{user} has no device left and is no longer enrolled: PAM lines with \
                 'nullok' let {user} in with the password alone, lines without it refuse \
                 {user}; enroll a device with 'otpctl enroll {user}'"
            ))?;
        }
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                ok: bool,
                device: &'a str,
                devices_left: u32,
            }
            return self.json_line(&Json {
                user,
                ok: true,
                device,
                devices_left: left,
            });
        }
        let noun = if left == 1 { "device" } else { "devices" };
        writeln!(
            self.out,
            "removed device {device} of {user}; {left} {noun} left"
        )
    }

    /// `otpctl app-password add`: the password, once, and where it works.
    pub fn app_password_added(
        &mut self,
        user: &str,
        password: &str,
        a: &AppPassword,
    ) -> io::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                password: &'a str,
                id: &'a str,
                service: &'a str,
                label: &'a str,
                created_at: Option<String>,
                expires_at: Option<String>,
            }
            return self.json_line(&Json {
                user,
                password,
                id: &a.id,
                service: &a.service,
                label: &a.label,
                created_at: rfc3339(a.created_at),
                expires_at: rfc3339(a.expires_at),
            });
        }
        writeln!(
            self.out,
            "App password for {user} (shown only this once; otpd keeps only a hash of it):"
        )?;
        writeln!(self.out)?;
        writeln!(self.out, "    {password}")?;
        writeln!(self.out)?;
        writeln!(self.out, "ID:        {}", a.id)?;
        writeln!(self.out, "Service:   {}", a.service)?;
        writeln!(self.out, "Label:     {}", or_dash(&a.label))?;
        writeln!(
            self.out,
            "Expires:   {}",
            rfc3339(a.expires_at).unwrap_or_else(|| "never".to_owned())
        )?;
        writeln!(self.out)?;
        writeln!(
            self.out,
            "It works only on the PAM service {}, where the pam_otpd line has the \
             app_passwords option, typed in place of the password and code.",
            a.service
        )?;
        writeln!(
            self.out,
            "Revoke it with: otpctl app-password revoke {user} {}",
            a.id
        )
    }

    /// `otpctl app-password list` (never a password). `now` marks the
    /// expired ones.
    pub fn app_passwords(&mut self, user: &str, list: &[AppPassword], now: i64) -> io::Result<()> {
        let expired = |a: &AppPassword| a.expires_at != 0 && a.expires_at <= now;
        if self.json {
            #[derive(Serialize)]
            struct Item<'a> {
                id: &'a str,
                service: &'a str,
                label: &'a str,
                created_at: Option<String>,
                last_used: Option<String>,
                expires_at: Option<String>,
                expired: bool,
            }
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                app_passwords: Vec<Item<'a>>,
            }
            let items = list
                .iter()
                .map(|a| Item {
                    id: &a.id,
                    service: &a.service,
                    label: &a.label,
                    created_at: rfc3339(a.created_at),
                    last_used: rfc3339(a.last_used),
                    expires_at: rfc3339(a.expires_at),
                    expired: expired(a),
                })
                .collect();
            return self.json_line(&Json {
                user,
                app_passwords: items,
            });
        }
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|a| {
                let expires = match rfc3339(a.expires_at) {
                    None => "never".to_owned(),
                    Some(t) if expired(a) => format!("{t} (expired)"),
                    Some(t) => t,
                };
                vec![
                    a.id.clone(),
                    a.service.clone(),
                    or_dash(&a.label).to_owned(),
                    time_or_dash(a.created_at),
                    time_or_dash(a.last_used),
                    expires,
                ]
            })
            .collect();
        write!(self.out, "{}", table(&APP_PASSWORD_HEADER, &rows))
    }

    /// `otpctl app-password revoke`.
    pub fn app_password_revoked(&mut self, user: &str, id: &str) -> io::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                ok: bool,
                id: &'a str,
            }
            return self.json_line(&Json { user, ok: true, id });
        }
        writeln!(self.out, "revoked app password {id} of {user}")
    }

    /// `otpctl rekey`.
    pub fn rekeyed(&mut self, records: u64) -> io::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Json {
                ok: bool,
                records: u64,
            }
            return self.json_line(&Json { ok: true, records });
        }
        let noun = if records == 1 { "record" } else { "records" };
        writeln!(
            self.out,
            "re-sealed {records} {noun} under the new master key; the old key is no longer used"
        )
    }

    /// `otpctl verify`: one line, or one JSON object.
    pub fn verify(&mut self, user: &str, r: &VerifyResponse) -> io::Result<()> {
        if r.decision() == Decision::Accepted && r.backup_codes_low {
            let left = r.backup_codes_left;
            let noun = if left == 1 { "code" } else { "codes" };
            self.warning(&format!(
                "only {left} backup {noun} left for {user}; issue new ones with \
                 'otpctl backup-codes {user}'"
            ))?;
        }
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                accepted: bool,
                decision: &'static str,
                reason: &'static str,
                method: Option<&'static str>,
                /// Known only when accepted (otpd sends it then): left
                /// out otherwise, never a 0 that is not the count.
                #[serde(skip_serializing_if = "Option::is_none")]
                backup_codes_left: Option<u32>,
                retry_after_seconds: u64,
                clock_skew_seconds: i64,
                backup_codes_low: bool,
            }
            return self.json_line(&Json {
                user,
                accepted: r.decision() == Decision::Accepted,
                decision: decision_name(r.decision()),
                reason: reason_name(r.reason()),
                method: method_name(r.method()),
                backup_codes_left: (r.decision() == Decision::Accepted)
                    .then_some(r.backup_codes_left),
                retry_after_seconds: r.retry_after_seconds,
                clock_skew_seconds: r.clock_skew_seconds,
                backup_codes_low: r.backup_codes_low,
            });
        }
        writeln!(self.out, "{}", verify_line(r))
    }
}

impl Printer<'_> {
    /// `otpctl doctor`: each finding (severity, file:line, what, id, then
    /// the fix), what was checked and what not, and a count; `--json`: one
    /// object `{"ok","errors","warnings","findings":[{"id","severity",
    /// "file","line","what","fix"}],"checked","skipped"}`.
    pub fn doctor(&mut self, r: &crate::commands::doctor::Report) -> io::Result<()> {
        use otpd_core::doctor::Severity;
        let (errors, warnings) = (r.count(Severity::Error), r.count(Severity::Warning));
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                ok: bool,
                errors: usize,
                warnings: usize,
                #[serde(flatten)]
                report: &'a crate::commands::doctor::Report,
            }
            return self.json_line(&Json {
                ok: r.findings.is_empty(),
                errors,
                warnings,
                report: r,
            });
        }
        for f in &r.findings {
            let severity = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let at = match f.line {
                Some(line) => format!("{}:{line}", f.file),
                None => f.file.clone(),
            };
            writeln!(self.out, "{severity}: {at}: {} [{}]", f.what, f.id)?;
            writeln!(self.out, "  fix: {}", f.fix)?;
        }
        if !r.findings.is_empty() {
            writeln!(self.out)?;
        }
        for line in &r.checked {
            writeln!(self.out, "checked: {line}")?;
        }
        for line in &r.skipped {
            writeln!(self.out, "not checked: {line}")?;
        }
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        if r.findings.is_empty() {
            writeln!(self.out, "no problems found")
        } else {
            writeln!(
                self.out,
                "{}, {}",
                plural(errors, "error"),
                plural(warnings, "warning")
            )
        }
    }
}

/// `otpctl status` in progress: [`page`](Self::page) for each page of
/// users, then [`finish`](Self::finish). Rows are sorted by name within a
/// page (the daemon pages in name order); the text table is aligned per
/// page and has its header once; the JSON is one array on one line.
pub struct StatusListing<'p, 'a> {
    p: &'p mut Printer<'a>,
    first_page: bool,
    first_row: bool,
}

impl StatusListing<'_, '_> {
    /// Prints one page. Users whose record cannot be opened are listed as
    /// "unreadable", with a warning each on stderr.
    pub fn page(&mut self, users: &[UserStatus], unreadable: &[String]) -> io::Result<()> {
        for user in unreadable {
            self.p.warning(&format!(
                "the record of {user} cannot be opened (corrupted, or sealed under \
                 another key); {user} cannot log in until it is reset"
            ))?;
        }
        let mut rows: Vec<Row<'_>> = users
            .iter()
            .map(Row::Status)
            .chain(unreadable.iter().map(|u| Row::Unreadable(u)))
            .collect();
        rows.sort_by(|a, b| a.user().cmp(b.user()));

        let first_page = std::mem::replace(&mut self.first_page, false);
        if self.p.json {
            for row in &rows {
                if !std::mem::replace(&mut self.first_row, false) {
                    write!(self.p.out, ",")?;
                }
                serde_json::to_writer(&mut self.p.out, &StatusJson::from(row))?;
            }
            // The array streams: each page goes out as it arrives.
            return self.p.out.flush();
        }
        if rows.is_empty() && !first_page {
            return Ok(());
        }
        let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
        let text = table(&STATUS_HEADER, &cells);
        let text = if first_page {
            &text[..]
        } else {
            text.split_once('\n').map_or("", |(_, rows)| rows)
        };
        write!(self.p.out, "{text}")?;
        self.p.out.flush()
    }

    /// Whether the reader closed stdout (no page needs fetching any more).
    pub fn stdout_closed(&self) -> bool {
        self.p.stdout_closed()
    }

    /// Ends the listing (the JSON array).
    pub fn finish(self) -> io::Result<()> {
        if self.p.json {
            writeln!(self.p.out, "]")?;
        }
        Ok(())
    }
}

const DEVICE_HEADER: [&str; 6] = ["DEVICE", "STATE", "TOTP", "ENROLLED", "LAST-USED", "SKEW"];

/// A device's parameters: "sha1/6/30s", "hotp sha1/6 #12".
pub fn device_totp_text(d: &Device) -> String {
    if d.hotp {
        // Counter-based: the next counter instead of a period.
        match algorithm_name(d.algorithm()) {
            Some(alg) => format!("hotp {alg}/{} #{}", d.digits, d.counter),
            None => "-".to_owned(),
        }
    } else {
        totp_text(d.algorithm(), d.digits, d.period)
    }
}

fn device_cells(d: &Device) -> Vec<String> {
    let skew = if d.last_used == 0 {
        "-".to_owned()
    } else {
        skew_text(d.clock_skew_seconds)
    };
    vec![
        d.name.clone(),
        "active".to_owned(),
        device_totp_text(d),
        time_or_dash(d.enrolled_at),
        time_or_dash(d.last_used),
        skew,
    ]
}

/// A device clock's offset: "0s", "30s ahead", "1m 30s behind".
fn skew_text(seconds: i64) -> String {
    match seconds {
        0 => "0s".to_owned(),
        s if s > 0 => format!("{} ahead", duration(s.unsigned_abs())),
        s => format!("{} behind", duration(s.unsigned_abs())),
    }
}

/// "sha1/6/30s", or "-" when unknown.
fn totp_text(a: Algorithm, digits: u32, period: u32) -> String {
    match algorithm_name(a) {
        Some(alg) if digits != 0 && period != 0 => format!("{alg}/{digits}/{period}s"),
        _ => "-".to_owned(),
    }
}

const APP_PASSWORD_HEADER: [&str; 6] =
    ["ID", "SERVICE", "LABEL", "CREATED", "LAST-USED", "EXPIRES"];

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn time_or_dash(unix: i64) -> String {
    rfc3339(unix).unwrap_or_else(|| "-".to_owned())
}

/// The human line for a verify answer.
fn verify_line(r: &VerifyResponse) -> String {
    let retry = |what: &str| match r.retry_after_seconds {
        0 => format!("rejected: {what}"),
        s => format!("rejected: {what}, retry in {}", duration(s)),
    };
    match r.decision() {
        Decision::Accepted => match r.method() {
            Method::BackupCode => format!("accepted (backup code, {} left)", r.backup_codes_left),
            Method::AppPassword => "accepted (app password)".to_owned(),
            Method::Grace => "accepted (grace after a login)".to_owned(),
            Method::Totp | Method::Unspecified => "accepted (totp)".to_owned(),
        },
        Decision::Locked => retry("locked"),
        Decision::Throttled => retry("throttled"),
        Decision::NotEnrolled => "rejected: not enrolled".to_owned(),
        Decision::Rejected => match r.reason() {
            Reason::Replayed => "rejected: code already used".to_owned(),
            Reason::ClockSkew => match r.clock_skew_seconds {
                0 => "rejected: clock skew, check the clock of the device".to_owned(),
                s => format!(
                    "rejected: clock skew, the device clock is {} {}",
                    duration(s.unsigned_abs()),
                    if s > 0 { "ahead" } else { "behind" }
                ),
            },
            Reason::Locked => retry("locked"),
            Reason::Throttled => retry("throttled"),
            Reason::NotEnrolled => "rejected: not enrolled".to_owned(),
            Reason::WrongCode | Reason::Ok | Reason::Unspecified => {
                "rejected: wrong code".to_owned()
            }
        },
        Decision::Unspecified => "rejected: unknown answer from otpd".to_owned(),
    }
}

const STATUS_HEADER: [&str; 9] = [
    "USER",
    "STATE",
    "TOTP",
    "BACKUP",
    "FAILS",
    "LOCKED-UNTIL",
    "LAST-SUCCESS",
    "ENROLLED",
    "DEVICES",
];

/// One line of `otpctl status`.
enum Row<'a> {
    Status(&'a UserStatus),
    Unreadable(&'a str),
}

impl Row<'_> {
    fn user(&self) -> &str {
        match self {
            Row::Status(s) => &s.user,
            Row::Unreadable(u) => u,
        }
    }

    fn cells(&self) -> Vec<String> {
        let s = match self {
            Row::Status(s) => s,
            Row::Unreadable(u) => {
                let mut cells = vec![(*u).to_owned(), "unreadable".to_owned()];
                cells.resize(STATUS_HEADER.len(), "-".to_owned());
                return cells;
            }
        };
        let mut state = state_name(s.state()).to_owned();
        if s.pending && matches!(s.state(), State::Active | State::Locked) {
            state.push_str("+pending");
        }
        if s.strangers_locked_until > 0 {
            // Hosts this user never logged in from are locked out; the user
            // is not (FAILS and LOCKED-UNTIL are the user's known hosts').
            state.push_str("+strangers-locked");
        }
        if s.rolled_back_at > 0 {
            // The store lost writes of this user: loud, in the state column.
            state.push_str("+ROLLED-BACK");
        }
        if s.no_recovery_path {
            // One device, no backup code: losing it locks the user out.
            state.push_str("+no-recovery");
        }
        if re_enroll_suggested(s) {
            // Logged in with a backup code since the last enrollment:
            // the device is likely lost.
            state.push_str("+re-enroll");
        }
        let enrolled = matches!(s.state(), State::Active | State::Locked);
        if let Some(e) = s
            .enforcement
            .as_ref()
            .filter(|e| e.must_enroll && !enrolled)
        {
            state.push_str(if e.refused {
                "+must-enroll(refused)"
            } else {
                "+must-enroll"
            });
        }
        let totp = totp_text(s.algorithm(), s.digits, s.period);
        let last_success = s
            .last_success
            .as_ref()
            .map_or_else(|| "-".to_owned(), last_success_text);
        vec![
            s.user.clone(),
            state,
            totp,
            s.backup_codes_left.to_string(),
            s.consecutive_failures.to_string(),
            rfc3339(s.locked_until).unwrap_or_else(|| "-".to_owned()),
            last_success,
            rfc3339(s.enrolled_at).unwrap_or_else(|| "-".to_owned()),
            devices_text(s),
        ]
    }
}

/// Whether the user's last login used a backup code, after their newest
/// device was enrolled: the device is likely lost, and the user should
/// enroll a new one (`otpctl enroll`). A later login with a device's code,
/// or a new device, ends it.
fn re_enroll_suggested(s: &UserStatus) -> bool {
    let Some(last) = &s.last_success else {
        return false;
    };
    let newest = s
        .devices
        .iter()
        .map(|d| d.enrolled_at)
        .max()
        .unwrap_or(s.enrolled_at);
    matches!(s.state(), State::Active | State::Locked)
        && last.method() == Method::BackupCode
        && last.time >= newest
}

/// The DEVICES cell: how many are active, and the pending one:
/// "2", "1 (+tablet pending)". An older otpd lists no devices; an active
/// user then has exactly one.
fn devices_text(s: &UserStatus) -> String {
    let count = match (s.devices.len(), s.state()) {
        (0, State::Active | State::Locked) => 1,
        (n, _) => n,
    };
    if s.pending_device.is_empty() {
        count.to_string()
    } else if s.pending_expires_at > 0 {
        format!(
            "{count} (+{} pending, {})",
            s.pending_device,
            pending_left_text(s.pending_seconds_left)
        )
    } else {
        format!("{count} (+{} pending)", s.pending_device)
    }
}

/// The time left to confirm a pending enrollment: "14m left", "40s left",
/// "expired".
fn pending_left_text(seconds: u64) -> String {
    match seconds {
        0 => "expired".to_owned(),
        1..=119 => format!("{seconds}s left"),
        _ if seconds < 2 * 3600 => format!("{}m left", seconds / 60),
        _ => format!("{}h left", seconds / 3600),
    }
}

/// "TIME SERVICE from HOST"; " from HOST" is left out when no host was
/// recorded, and a missing service shows as "-".
fn last_success_text(l: &LastSuccess) -> String {
    let time = rfc3339(l.time).unwrap_or_else(|| "-".to_owned());
    let service = if l.service.is_empty() {
        "-"
    } else {
        &l.service
    };
    if l.remote_host.is_empty() {
        format!("{time} {service}")
    } else {
        format!("{time} {service} from {}", l.remote_host)
    }
}

#[derive(Serialize)]
struct StatusJson<'a> {
    user: &'a str,
    state: &'static str,
    pending: bool,
    algorithm: Option<&'static str>,
    digits: u32,
    period: u32,
    backup_codes_left: u32,
    consecutive_failures: u32,
    locked_until: Option<String>,
    last_success: Option<LastSuccessJson<'a>>,
    enrolled_at: Option<String>,
    clock_skew_seconds: i64,
    /// The active devices (empty from an older otpd).
    devices: Vec<DeviceJson<'a>>,
    pending_device: Option<&'a str>,
    /// Until when the pending enrollment can be confirmed (present only
    /// while one is pending).
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_expires_at: Option<String>,
    /// Seconds left to confirm it (0: expired), by the daemon's clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_seconds_left: Option<u64>,
    /// How many app passwords the user has (expired ones included).
    app_passwords: u32,
    /// Present only when the store was found rolled back for this user.
    #[serde(skip_serializing_if = "Option::is_none")]
    rolled_back_at: Option<String>,
    /// Failures from hosts that never logged in as this user (counted
    /// apart: they cannot lock the user out); present only when some are
    /// counted or they are locked out.
    #[serde(skip_serializing_if = "Option::is_none")]
    strangers: Option<StrangersJson>,
    /// Present (true) only when the user has a single device and no
    /// backup code left: losing the device locks them out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    no_recovery_path: bool,
    /// Present (true) only when the last login used a backup code since
    /// the newest device was enrolled: the user should enroll a new one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    re_enroll_suggested: bool,
    /// What the enforcement policy says about the user (one user's
    /// status, when a policy covers anyone).
    #[serde(skip_serializing_if = "Option::is_none")]
    enforcement: Option<EnforcementJson<'a>>,
}

#[derive(Serialize)]
struct EnforcementJson<'a> {
    must_enroll: bool,
    deadline: Option<&'a str>,
    refused: bool,
}

#[derive(Serialize)]
struct DeviceJson<'a> {
    name: &'a str,
    algorithm: Option<&'static str>,
    digits: u32,
    period: u32,
    /// Counter-based (only shown when true).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    hotp: bool,
    /// HOTP: the next counter expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    counter: Option<u64>,
    issuer: &'a str,
    enrolled_at: Option<String>,
    last_used: Option<String>,
    clock_skew_seconds: i64,
    /// The clock offset learned from its accepted codes, in steps (shown
    /// when not 0).
    #[serde(skip_serializing_if = "is_zero_i32")]
    drift_steps: i32,
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

impl<'a> From<&'a Device> for DeviceJson<'a> {
    fn from(d: &'a Device) -> Self {
        DeviceJson {
            name: &d.name,
            algorithm: algorithm_name(d.algorithm()),
            digits: d.digits,
            period: d.period,
            hotp: d.hotp,
            counter: d.hotp.then_some(d.counter),
            issuer: &d.issuer,
            enrolled_at: rfc3339(d.enrolled_at),
            last_used: rfc3339(d.last_used),
            clock_skew_seconds: d.clock_skew_seconds,
            drift_steps: d.drift_steps,
        }
    }
}

#[derive(Serialize)]
struct StrangersJson {
    consecutive_failures: u32,
    locked_until: Option<String>,
}

#[derive(Serialize)]
struct LastSuccessJson<'a> {
    time: Option<String>,
    service: &'a str,
    remote_host: &'a str,
    method: Option<&'static str>,
}

impl<'a> From<&'a Row<'a>> for StatusJson<'a> {
    fn from(row: &'a Row<'a>) -> Self {
        match row {
            Row::Status(s) => StatusJson {
                user: &s.user,
                state: state_name(s.state()),
                pending: s.pending,
                algorithm: algorithm_name(s.algorithm()),
                digits: s.digits,
                period: s.period,
                backup_codes_left: s.backup_codes_left,
                consecutive_failures: s.consecutive_failures,
                locked_until: rfc3339(s.locked_until),
                last_success: s.last_success.as_ref().map(|l| LastSuccessJson {
                    time: rfc3339(l.time),
                    service: &l.service,
                    remote_host: &l.remote_host,
                    method: method_name(l.method()),
                }),
                enrolled_at: rfc3339(s.enrolled_at),
                clock_skew_seconds: s.clock_skew_seconds,
                devices: s.devices.iter().map(DeviceJson::from).collect(),
                pending_device: non_empty(&s.pending_device),
                pending_expires_at: rfc3339(s.pending_expires_at),
                pending_seconds_left: (s.pending_expires_at > 0).then_some(s.pending_seconds_left),
                app_passwords: s.app_passwords,
                rolled_back_at: rfc3339(s.rolled_back_at),
                strangers: (s.strangers_consecutive_failures > 0 || s.strangers_locked_until > 0)
                    .then(|| StrangersJson {
                        consecutive_failures: s.strangers_consecutive_failures,
                        locked_until: rfc3339(s.strangers_locked_until),
                    }),
                no_recovery_path: s.no_recovery_path,
                re_enroll_suggested: re_enroll_suggested(s),
                enforcement: s.enforcement.as_ref().map(|e| EnforcementJson {
                    must_enroll: e.must_enroll,
                    deadline: non_empty(&e.deadline_date),
                    refused: e.refused,
                }),
            },
            Row::Unreadable(user) => StatusJson {
                user,
                state: "unreadable",
                pending: false,
                algorithm: None,
                digits: 0,
                period: 0,
                backup_codes_left: 0,
                consecutive_failures: 0,
                locked_until: None,
                last_success: None,
                enrolled_at: None,
                clock_skew_seconds: 0,
                devices: Vec::new(),
                pending_device: None,
                pending_expires_at: None,
                pending_seconds_left: None,
                app_passwords: 0,
                rolled_back_at: None,
                strangers: None,
                no_recovery_path: false,
                re_enroll_suggested: false,
                enforcement: None,
            },
        }
    }
}

/// Left-aligned columns, two spaces apart, no trailing blanks; widths are
/// counted in characters.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `otpctl import`: one line per user and a summary (`--json`: the array
/// of outcomes). Never shows a key or a code.
impl Printer<'_> {
    pub fn import_report(&mut self, report: &[ImportOutcome]) -> io::Result<()> {
        if self.json {
            return self.json_line(&report);
        }
        let (mut imported, mut skipped, mut failed) = (0, 0, 0);
        for o in report {
            match (o.result, &o.import) {
                (ImportResult::Imported, Some(i)) => {
                    imported += 1;
                    let verb = if i.dry_run {
                        "would import"
                    } else {
                        "imported"
                    };
                    let replaced = if i.replaced {
                        ", replacing their devices"
                    } else {
                        ""
                    };
                    let kind = match (i.period, i.counter) {
                        (_, Some(counter)) => format!("HOTP at counter {counter}"),
                        (period, None) => format!("{}s steps", period.unwrap_or(30)),
                    };
                    writeln!(
                        self.out,
                        "{}: {verb} {} as device \"{}\" ({kind}, {} backup codes{replaced})",
                        o.user, o.file, i.device, i.backup_codes
                    )?;
                    if let Some(to) = &i.moved_to {
                        writeln!(self.out, "  moved the file to {to}")?;
                    }
                    if let Some(e) = &i.move_error {
                        failed += 1;
                        writeln!(self.out, "  failed to move the file aside: {e}")?;
                    }
                }
                (ImportResult::Skipped, _) => {
                    skipped += 1;
                    let reason = o.reason.as_deref().unwrap_or("");
                    writeln!(self.out, "{}: skipped: {reason} ({})", o.user, o.file)?;
                }
                _ => {
                    failed += 1;
                    let reason = o.reason.as_deref().unwrap_or("");
                    writeln!(self.out, "{}: failed: {reason}", o.user)?;
                }
            }
        }
        writeln!(
            self.out,
            "{imported} imported, {skipped} skipped, {failed} failed"
        )
    }

    /// A large import's report (`--quiet`): only the lines that were
    /// skipped or failed (`report` holds no others), then the totals.
    pub fn import_totals(
        &mut self,
        report: &[ImportOutcome],
        imported: usize,
        skipped: usize,
        failed: usize,
    ) -> io::Result<()> {
        for o in report {
            let reason = o.reason.as_deref().unwrap_or("");
            match o.result {
                ImportResult::Imported => {}
                ImportResult::Skipped => {
                    writeln!(self.out, "{}: skipped: {reason} ({})", o.user, o.file)?;
                }
                ImportResult::Failed => writeln!(self.out, "{}: failed: {reason}", o.user)?,
            }
        }
        writeln!(
            self.out,
            "{imported} imported, {skipped} skipped, {failed} failed"
        )
    }
}

/// `otpctl export`: the QR code, the URI (only when asked for) or where
/// the file went. `--json` never holds the key unless it is the URI asked
/// for with `--plaintext-secret`. Whenever the key goes out as text, a
/// warning on stderr says so.
impl Printer<'_> {
    pub fn exported(&mut self, e: &crate::commands::export::Exported<'_>) -> io::Result<()> {
        use crate::commands::export::Output;
        if matches!(e.output, Output::Uri | Output::Terminal) {
            self.warning(&format!(
                "the output holds the secret key of device \"{}\" of {}: whoever sees it \
                 can compute their codes; do not keep, paste or log it",
                e.device, e.user
            ))?;
        }
        let file = match e.output {
            Output::Png(path) | Output::Encrypted(path) => Some(path.display().to_string()),
            Output::Uri | Output::Terminal => None,
        };
        if self.json {
            #[derive(Serialize)]
            struct Json<'a> {
                user: &'a str,
                device: &'a str,
                format: &'static str,
                #[serde(skip_serializing_if = "Option::is_none")]
                file: Option<&'a str>,
                #[serde(skip_serializing_if = "Option::is_none")]
                otpauth_uri: Option<&'a str>,
            }
            return self.json_line(&Json {
                user: e.user,
                device: e.device,
                format: e.output.audit_name(),
                file: file.as_deref(),
                otpauth_uri: e.uri,
            });
        }
        match e.output {
            Output::Terminal => {
                if let Some(qr) = e.qr {
                    writeln!(self.out, "{qr}")?;
                }
                writeln!(
                    self.out,
                    "Device \"{}\" of {}: scan the QR code with the new phone's app.",
                    e.device, e.user
                )
            }
            Output::Uri => writeln!(self.out, "{}", e.uri.unwrap_or_default()),
            Output::Png(_) => writeln!(
                self.out,
                "wrote the QR code of device \"{}\" of {} to {} (holds the key: delete it \
                 once scanned)",
                e.device,
                e.user,
                file.unwrap_or_default()
            ),
            Output::Encrypted(_) => writeln!(
                self.out,
                "wrote device \"{}\" of {} to {}, encrypted with the passphrase (age); \
                 import it with 'otpctl import otpd-export FILE', or open it with 'age -d'",
                e.device,
                e.user,
                file.unwrap_or_default()
            ),
        }
    }
}

/// Reports of the backup commands: JSON from `Serialize`, text as given.
impl Printer<'_> {
    pub fn report<T: Serialize>(&mut self, value: &T, human: &str) -> io::Result<()> {
        if self.json {
            return self.json_line(value);
        }
        self.out.write_all(human.as_bytes())
    }

    /// A warning on stderr (in JSON mode too).
    pub fn warn(&mut self, message: &str) -> io::Result<()> {
        self.warning(message)
    }
}

/// Unix seconds as RFC 3339 UTC to the second; `None` for 0 (no time).
/// Times humantime cannot show (before 1970, after 9999) print as
/// "@SECONDS".
pub fn rfc3339(unix: i64) -> Option<String> {
    // 10000-01-01T00:00:00Z: the end of humantime's range.
    const MAX: i64 = 253_402_300_800;
    match unix {
        0 => None,
        1..MAX => {
            let time = UNIX_EPOCH.checked_add(Duration::from_secs(unix.unsigned_abs()))?;
            Some(humantime::format_rfc3339_seconds(time).to_string())
        }
        _ => Some(format!("@{unix}")),
    }
}

/// A span of seconds as "1d 2h 3m 4s", leaving out zero parts ("14m 12s",
/// "40s", "2h 5s"); "0s" for zero.
pub fn duration(seconds: u64) -> String {
    let parts = [
        (seconds / 86_400, "d"),
        (seconds / 3_600 % 24, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n != 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_owned()
    } else {
        text.join(" ")
    }
}

/// "ABCD EFGH IJ": the key in blocks of four, for typing in by hand.
fn group_key(secret: &str) -> zeroize::Zeroizing<String> {
    let mut grouped = zeroize::Zeroizing::new(String::with_capacity(secret.len() * 5 / 4 + 1));
    for (i, c) in secret.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    grouped
}

fn algorithm_name(a: Algorithm) -> Option<&'static str> {
    match a {
        Algorithm::Sha1 => Some("sha1"),
        Algorithm::Sha256 => Some("sha256"),
        Algorithm::Sha512 => Some("sha512"),
        Algorithm::Unspecified => None,
    }
}

fn method_name(m: Method) -> Option<&'static str> {
    match m {
        Method::Totp => Some("totp"),
        Method::BackupCode => Some("backup_code"),
        Method::AppPassword => Some("app_password"),
        Method::Grace => Some("grace"),
        Method::Unspecified => None,
    }
}

/// A user's state, the same word in the text and the JSON (scripts read
/// the JSON's, so the text took those).
fn state_name(s: State) -> &'static str {
    match s {
        State::NotEnrolled => "not_enrolled",
        State::Pending => "pending",
        State::Active => "active",
        State::Locked => "locked",
        State::Unspecified => "unknown",
    }
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Accepted => "accepted",
        Decision::Rejected => "rejected",
        Decision::Locked => "locked",
        Decision::Throttled => "throttled",
        Decision::NotEnrolled => "not_enrolled",
        Decision::Unspecified => "unspecified",
    }
}

fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::Ok => "ok",
        Reason::WrongCode => "wrong_code",
        Reason::Replayed => "replayed",
        Reason::ClockSkew => "clock_skew",
        Reason::Locked => "locked",
        Reason::Throttled => "throttled",
        Reason::NotEnrolled => "not_enrolled",
        Reason::Unspecified => "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use zeroize::Zeroizing;

    /// Runs `f` on a printer; returns (stdout, stderr).
    fn render(json: bool, f: impl FnOnce(&mut Printer<'_>) -> io::Result<()>) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        f(&mut Printer::new(&mut out, &mut err, json)).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    /// Parses the single JSON line of `out`.
    fn json_of(out: &str) -> Value {
        assert!(out.ends_with('\n'));
        assert_eq!(out.lines().count(), 1, "one line: {out}");
        serde_json::from_str(out).unwrap()
    }

    const T0: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z

    fn alice() -> UserStatus {
        UserStatus {
            user: "alice".into(),
            state: State::Active.into(),
            algorithm: Algorithm::Sha1.into(),
            digits: 6,
            period: 30,
            backup_codes_left: 9,
            consecutive_failures: 0,
            locked_until: 0,
            strangers_consecutive_failures: 0,
            strangers_locked_until: 0,
            last_success: Some(LastSuccess {
                time: T0 + 60,
                service: "sshd".into(),
                remote_host: "192.0.2.7".into(),
                method: Method::Totp.into(),
                device: String::new(),
            }),
            enrolled_at: T0,
            pending: true,
            clock_skew_seconds: -30,
            rolled_back_at: 0,
            devices: vec![phone(), spare()],
            pending_device: "tablet".into(),
            pending_expires_at: 0,
            pending_seconds_left: 0,
            app_passwords: 2,
            enforcement: None,
            no_recovery_path: false,
        }
    }

    fn phone() -> Device {
        Device {
            name: "phone".into(),
            algorithm: Algorithm::Sha1.into(),
            digits: 6,
            period: 30,
            issuer: "host1".into(),
            enrolled_at: T0,
            last_used: T0 + 60,
            clock_skew_seconds: -30,
            hotp: false,
            counter: 0,
            drift_steps: 0,
        }
    }

    fn spare() -> Device {
        Device {
            name: "spare".into(),
            algorithm: Algorithm::Sha256.into(),
            digits: 8,
            period: 60,
            issuer: "host1".into(),
            enrolled_at: T0 + 3_600,
            last_used: 0,
            clock_skew_seconds: 0,
            hotp: false,
            counter: 0,
            drift_steps: 0,
        }
    }

    fn bob() -> UserStatus {
        UserStatus {
            user: "bob".into(),
            state: State::Locked.into(),
            algorithm: Algorithm::Sha256.into(),
            digits: 8,
            period: 60,
            backup_codes_left: 10,
            consecutive_failures: 12,
            locked_until: T0 + 852,
            strangers_consecutive_failures: 0,
            strangers_locked_until: 0,
            last_success: None,
            enrolled_at: T0,
            pending: false,
            clock_skew_seconds: 0,
            rolled_back_at: 0,
            devices: Vec::new(),
            pending_device: String::new(),
            pending_expires_at: 0,
            pending_seconds_left: 0,
            app_passwords: 0,
            enforcement: None,
            no_recovery_path: false,
        }
    }

    fn carol() -> UserStatus {
        UserStatus {
            user: "carol".into(),
            state: State::NotEnrolled.into(),
            ..Default::default()
        }
    }

    #[test]
    fn rolled_back_user_is_flagged_in_both_formats() {
        let rolled = UserStatus {
            rolled_back_at: T0 + 900,
            ..alice()
        };
        let (text, _) = render(false, |p| p.status(std::slice::from_ref(&rolled), &[]));
        assert!(
            text.contains("alice  active+pending+ROLLED-BACK  "),
            "{text}"
        );
        let (out, _) = render(true, |p| p.status(&[rolled], &[]));
        assert_eq!(json_of(&out)[0]["rolled_back_at"], "2023-11-14T22:28:20Z");
        // Absent for everybody else.
        let (out, _) = render(true, |p| p.status(&[alice()], &[]));
        assert!(!out.contains("rolled_back"), "{out}");
    }

    #[test]
    fn strangers_locked_out_are_shown_apart_from_the_user() {
        let attacked = UserStatus {
            strangers_consecutive_failures: 8,
            strangers_locked_until: T0 + 900,
            ..alice()
        };
        let (text, _) = render(false, |p| p.status(std::slice::from_ref(&attacked), &[]));
        assert!(
            text.contains("alice  active+pending+strangers-locked  "),
            "{text}"
        );
        let (out, _) = render(true, |p| p.status(&[attacked], &[]));
        let json = json_of(&out);
        assert_eq!(json[0]["strangers"]["consecutive_failures"], 8);
        assert_eq!(json[0]["strangers"]["locked_until"], "2023-11-14T22:28:20Z");
        // The user's own state is not locked.
        assert_eq!(json[0]["state"], "active");
        let (out, _) = render(true, |p| p.status(&[alice()], &[]));
        assert!(!out.contains("strangers"), "{out}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(852), "14m 12s");
        assert_eq!(duration(40), "40s");
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(60), "1m");
        assert_eq!(duration(3_605), "1h 5s");
        assert_eq!(duration(90_061), "1d 1h 1m 1s");
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), None);
        assert_eq!(rfc3339(T0).as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(rfc3339(1).as_deref(), Some("1970-01-01T00:00:01Z"));
        assert_eq!(rfc3339(-5).as_deref(), Some("@-5"));
        assert_eq!(rfc3339(i64::MAX), Some(format!("@{}", i64::MAX)));
    }

    #[test]
    fn key_is_grouped_in_blocks_of_four() {
        assert_eq!(&*group_key("JBSWY3DPEHPK3PXP"), "JBSW Y3DP EHPK 3PXP");
        assert_eq!(&*group_key("ABCDEF"), "ABCD EF");
        assert_eq!(&*group_key(""), "");
    }

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned(), "x".to_owned()],
            vec!["wider".to_owned(), "v".to_owned(), "-".to_owned()],
        ];
        assert_eq!(
            table(&["H1", "H2", "LAST-COLUMN"], &rows),
            "H1     H2          LAST-COLUMN\n\
             a      long value  x\n\
             wider  v           -\n"
        );
        // Widths count characters, not bytes.
        let rows = vec![vec!["jörg".to_owned(), "x".to_owned()]];
        assert_eq!(table(&["USER", "S"], &rows), "USER  S\njörg  x\n");
    }

    #[test]
    fn status_table() {
        let (out, err) = render(false, |p| {
            p.status(&[carol(), bob(), alice()], &["dave".to_owned()])
        });
        let expected = "\
USER   STATE           TOTP          BACKUP  FAILS  LOCKED-UNTIL          LAST-SUCCESS                              ENROLLED              DEVICES
alice  active+pending  sha1/6/30s    9       0      -                     2023-11-14T22:14:20Z sshd from 192.0.2.7  2023-11-14T22:13:20Z  2 (+tablet pending)
bob    locked          sha256/8/60s  10      12     2023-11-14T22:27:32Z  -                                         2023-11-14T22:13:20Z  1
carol  not_enrolled    -             0       0      -                     -                                         -                     0
dave   unreadable      -             -       -      -                     -                                         -                     -
";
        assert_eq!(out, expected);
        assert_eq!(
            err,
            "otpctl: warning: the record of dave cannot be opened (corrupted, or sealed under \
             another key); dave cannot log in until it is reset\n"
        );
    }

    #[test]
    fn status_pending_and_missing_host() {
        let mut s = alice();
        s.state = State::Pending.into();
        s.last_success = Some(LastSuccess {
            time: T0,
            service: "login".into(),
            remote_host: String::new(),
            method: Method::BackupCode.into(),
            device: String::new(),
        });
        let (out, _) = render(false, |p| p.status(&[s], &[]));
        let line = out.lines().nth(1).unwrap();
        assert!(line.starts_with("alice  pending  sha1/6/30s"), "{line}");
        assert!(line.contains("2023-11-14T22:13:20Z login  "), "{line}");
    }

    #[test]
    fn status_with_no_users_prints_the_header() {
        let (out, err) = render(false, |p| p.status(&[], &[]));
        assert_eq!(
            out,
            "USER  STATE  TOTP  BACKUP  FAILS  LOCKED-UNTIL  LAST-SUCCESS  ENROLLED  DEVICES\n"
        );
        assert_eq!(err, "");
        let (out, _) = render(true, |p| p.status(&[], &[]));
        assert_eq!(out, "[]\n");
    }

    #[test]
    fn status_json() {
        let (out, _) = render(true, |p| {
            p.status(&[bob(), alice(), carol()], &["dave".to_owned()])
        });
        assert_eq!(
            json_of(&out),
            json!([
                {
                    "user": "alice", "state": "active", "pending": true, "algorithm": "sha1",
                    "digits": 6, "period": 30, "backup_codes_left": 9, "consecutive_failures": 0,
                    "locked_until": null,
                    "last_success": {
                        "time": "2023-11-14T22:14:20Z", "service": "sshd",
                        "remote_host": "192.0.2.7", "method": "totp"
                    },
                    "enrolled_at": "2023-11-14T22:13:20Z", "clock_skew_seconds": -30,
                    "devices": [
                        {
                            "name": "phone", "algorithm": "sha1", "digits": 6, "period": 30,
                            "issuer": "host1", "enrolled_at": "2023-11-14T22:13:20Z",
                            "last_used": "2023-11-14T22:14:20Z", "clock_skew_seconds": -30
                        },
                        {
                            "name": "spare", "algorithm": "sha256", "digits": 8, "period": 60,
                            "issuer": "host1", "enrolled_at": "2023-11-14T23:13:20Z",
                            "last_used": null, "clock_skew_seconds": 0
                        }
                    ],
                    "pending_device": "tablet", "app_passwords": 2
                },
                {
                    "user": "bob", "state": "locked", "pending": false, "algorithm": "sha256",
                    "digits": 8, "period": 60, "backup_codes_left": 10, "consecutive_failures": 12,
                    "locked_until": "2023-11-14T22:27:32Z", "last_success": null,
                    "enrolled_at": "2023-11-14T22:13:20Z", "clock_skew_seconds": 0,
                    "devices": [], "pending_device": null, "app_passwords": 0
                },
                {
                    "user": "carol", "state": "not_enrolled", "pending": false, "algorithm": null,
                    "digits": 0, "period": 0, "backup_codes_left": 0, "consecutive_failures": 0,
                    "locked_until": null, "last_success": null, "enrolled_at": null,
                    "clock_skew_seconds": 0, "devices": [], "pending_device": null,
                    "app_passwords": 0
                },
                {
                    "user": "dave", "state": "unreadable", "pending": false, "algorithm": null,
                    "digits": 0, "period": 0, "backup_codes_left": 0, "consecutive_failures": 0,
                    "locked_until": null, "last_success": null, "enrolled_at": null,
                    "clock_skew_seconds": 0, "devices": [], "pending_device": null,
                    "app_passwords": 0
                }
            ])
        );
        // Field order is part of the stable output.
        assert!(out.starts_with(
            r#"[{"user":"alice","state":"active","pending":true,"algorithm":"sha1","digits":6,"#
        ));
    }

    fn verify(decision: Decision, reason: Reason) -> VerifyResponse {
        VerifyResponse {
            decision: decision.into(),
            reason: reason.into(),
            ..Default::default()
        }
    }

    #[test]
    fn verify_lines() {
        let mut totp = verify(Decision::Accepted, Reason::Ok);
        totp.method = Method::Totp.into();
        totp.backup_codes_left = 10;
        let mut backup = verify(Decision::Accepted, Reason::Ok);
        backup.method = Method::BackupCode.into();
        backup.backup_codes_left = 9;
        let mut locked = verify(Decision::Locked, Reason::Locked);
        locked.retry_after_seconds = 852;
        let mut throttled = verify(Decision::Throttled, Reason::Throttled);
        throttled.retry_after_seconds = 40;
        let mut ahead = verify(Decision::Rejected, Reason::ClockSkew);
        ahead.clock_skew_seconds = 90;
        let mut behind = verify(Decision::Rejected, Reason::ClockSkew);
        behind.clock_skew_seconds = -3_600;
        let cases = [
            (totp, "accepted (totp)"),
            (backup, "accepted (backup code, 9 left)"),
            (
                verify(Decision::Rejected, Reason::WrongCode),
                "rejected: wrong code",
            ),
            (
                verify(Decision::Rejected, Reason::Replayed),
                "rejected: code already used",
            ),
            (locked, "rejected: locked, retry in 14m 12s"),
            (verify(Decision::Locked, Reason::Locked), "rejected: locked"),
            (throttled, "rejected: throttled, retry in 40s"),
            (
                verify(Decision::NotEnrolled, Reason::NotEnrolled),
                "rejected: not enrolled",
            ),
            (
                ahead,
                "rejected: clock skew, the device clock is 1m 30s ahead",
            ),
            (
                behind,
                "rejected: clock skew, the device clock is 1h behind",
            ),
            (
                verify(Decision::Rejected, Reason::ClockSkew),
                "rejected: clock skew, check the clock of the device",
            ),
            (
                verify(Decision::Unspecified, Reason::Unspecified),
                "rejected: unknown answer from otpd",
            ),
        ];
        for (response, line) in cases {
            let (out, err) = render(false, |p| p.verify("alice", &response));
            assert_eq!(out, format!("{line}\n"));
            assert_eq!(err, "");
        }
    }

    #[test]
    fn verify_json_and_low_backup_code_warning() {
        let mut r = verify(Decision::Accepted, Reason::Ok);
        r.method = Method::BackupCode.into();
        r.backup_codes_left = 1;
        r.backup_codes_low = true;
        let (out, err) = render(true, |p| p.verify("alice", &r));
        assert_eq!(
            out,
            r#"{"user":"alice","accepted":true,"decision":"accepted","reason":"ok","method":"backup_code","backup_codes_left":1,"retry_after_seconds":0,"clock_skew_seconds":0,"backup_codes_low":true}"#
                .to_owned()
                + "\n"
        );
        assert_eq!(
            err,
            "{\"warning\":{\"message\":\"only 1 backup code left for alice; issue new ones \
             with 'otpctl backup-codes alice'\"}}\n"
        );

        let mut r = verify(Decision::Throttled, Reason::Throttled);
        r.retry_after_seconds = 40;
        let (out, err) = render(true, |p| p.verify("bob", &r));
        assert_eq!(
            json_of(&out),
            json!({
                "user": "bob", "accepted": false, "decision": "throttled", "reason": "throttled",
                "method": null, "retry_after_seconds": 40,
                "clock_skew_seconds": 0, "backup_codes_low": false
            })
        );
        assert_eq!(err, "");
    }

    fn codes() -> Vec<String> {
        (0..10).map(|i| format!("1234567{i}")).collect()
    }

    #[test]
    fn backup_codes() {
        let (out, _) = render(false, |p| p.backup_codes("alice", &codes()));
        let mut expected =
            "Backup codes for alice (shown only this once; each code works once):\n".to_owned();
        for code in codes() {
            expected += &code;
            expected += "\n";
        }
        assert_eq!(out, expected);

        let (out, _) = render(true, |p| p.backup_codes("alice", &codes()));
        assert_eq!(
            json_of(&out),
            json!({"user": "alice", "backup_codes": codes()})
        );
    }

    #[test]
    fn unlock_and_reset() {
        assert_eq!(render(false, |p| p.unlocked("alice")).0, "unlocked alice\n");
        assert_eq!(
            render(false, |p| p.reset("alice")).0,
            "reset alice: secret, backup codes and counters removed\n"
        );
        assert_eq!(
            render(true, |p| p.unlocked("alice")).0,
            "{\"user\":\"alice\",\"ok\":true}\n"
        );
        assert_eq!(
            render(true, |p| p.reset("alice")).0,
            "{\"user\":\"alice\",\"ok\":true}\n"
        );
    }

    fn enrollment() -> Enrollment {
        Enrollment {
            user: "alice".into(),
            device: "default".into(),
            issuer: "host1".into(),
            secret: Zeroizing::new("JBSWY3DPEHPK3PXP".into()),
            otpauth_uri: Zeroizing::new(
                "otpauth://totp/host1:alice?secret=JBSWY3DPEHPK3PXP&issuer=host1".into(),
            ),
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }

    #[test]
    fn enrollment_human() {
        let png = Path::new("/tmp/alice.png");
        let (out, _) = render(false, |p| {
            p.enrollment(&enrollment(), Some("QR"), Some(png), None)?;
            p.confirm_hint("alice", false)
        });
        assert_eq!(
            out,
            "QR\n\
             \n\
             Scan the QR code with an authenticator app, or type in the key by hand.\n\
             \n\
             Account:    alice\n\
             Device:     default\n\
             Issuer:     host1\n\
             Algorithm:  SHA1\n\
             Digits:     6\n\
             Period:     30s\n\
             Key:        JBSW Y3DP EHPK 3PXP\n\
             URI:        otpauth://totp/host1:alice?secret=JBSWY3DPEHPK3PXP&issuer=host1\n\
             QR PNG:     /tmp/alice.png (holds the secret: delete it once scanned)\n\
             \n\
             Confirm with: otpctl confirm alice CODE\n"
        );
    }

    #[test]
    fn enrollment_json_never_hints() {
        let (out, _) = render(true, |p| {
            p.enrollment(&enrollment(), None, None, None)?;
            p.confirm_hint("alice", false)
        });
        assert_eq!(
            out,
            r#"{"user":"alice","device":"default","issuer":"host1","secret":"JBSWY3DPEHPK3PXP","otpauth_uri":"otpauth://totp/host1:alice?secret=JBSWY3DPEHPK3PXP&issuer=host1","algorithm":"sha1","digits":6,"period":30,"replaces":[]}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn prompt_then_codes() {
        let (out, _) = render(false, |p| {
            p.confirm_prompt()?;
            p.confirmed_at_prompt("alice", &confirmation(false, &codes()[..1]))
        });
        assert_eq!(
            out,
            "Enter the code shown in the app to confirm: \n\
             Backup codes for alice (shown only this once; each code works once):\n\
             12345670\n"
        );
        let (out, _) = render(false, |p| {
            p.confirm_prompt()?;
            p.confirm_hint("alice", true)
        });
        assert_eq!(
            out,
            "Enter the code shown in the app to confirm: \nConfirm with: otpctl confirm alice CODE\n"
        );
    }

    fn confirmation(added_device: bool, codes: &[String]) -> Confirmation {
        Confirmation {
            device: if added_device { "tablet" } else { "default" }.into(),
            added_device,
            backup_codes: Zeroizing::new(codes.to_vec()),
        }
    }

    #[test]
    fn confirmed_enrollment_shows_the_backup_codes() {
        let (out, _) = render(false, |p| {
            p.confirmed("alice", &confirmation(false, &codes()))
        });
        assert!(
            out.starts_with(
                "Backup codes for alice (shown only this once; each code works once):\n12345670\n"
            ),
            "{out}"
        );
        let (out, _) = render(true, |p| {
            p.confirmed("alice", &confirmation(false, &codes()))
        });
        assert_eq!(
            json_of(&out),
            json!({
                "user": "alice", "device": "default", "added_device": false,
                "backup_codes": codes()
            })
        );
        // An older otpd names no device.
        let mut old = confirmation(false, &codes()[..1]);
        old.device.clear();
        let (out, _) = render(true, |p| p.confirmed("alice", &old));
        assert_eq!(
            out,
            r#"{"user":"alice","device":null,"added_device":false,"backup_codes":["12345670"]}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn confirmed_added_device_keeps_the_backup_codes() {
        let (out, err) = render(false, |p| {
            p.confirm_prompt()?;
            p.confirmed_at_prompt("alice", &confirmation(true, &[]))
        });
        assert_eq!(
            out,
            "Enter the code shown in the app to confirm: \n\
             Device tablet of alice is active beside the other devices.\n\
             The backup codes are unchanged (new ones: otpctl backup-codes alice).\n"
        );
        assert_eq!(err, "");
        let (out, _) = render(true, |p| p.confirmed("alice", &confirmation(true, &[])));
        assert_eq!(
            out,
            r#"{"user":"alice","device":"tablet","added_device":true,"backup_codes":[]}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn device_list() {
        let (out, err) = render(false, |p| p.devices(&alice()));
        assert_eq!(
            out,
            "\
DEVICE  STATE    TOTP          ENROLLED              LAST-USED             SKEW
phone   active   sha1/6/30s    2023-11-14T22:13:20Z  2023-11-14T22:14:20Z  30s behind
spare   active   sha256/8/60s  2023-11-14T23:13:20Z  -                     -
tablet  pending  -             -                     -                     -
"
        );
        assert_eq!(err, "");
        let (out, _) = render(true, |p| p.devices(&alice()));
        assert_eq!(
            out,
            r#"{"user":"alice","devices":[{"name":"phone","algorithm":"sha1","digits":6,"period":30,"issuer":"host1","enrolled_at":"2023-11-14T22:13:20Z","last_used":"2023-11-14T22:14:20Z","clock_skew_seconds":-30},{"name":"spare","algorithm":"sha256","digits":8,"period":60,"issuer":"host1","enrolled_at":"2023-11-14T23:13:20Z","last_used":null,"clock_skew_seconds":0}],"pending_device":"tablet"}"#
                .to_owned()
                + "\n"
        );
        // Nobody enrolled: the header, or nothing in the array.
        let (out, _) = render(false, |p| p.devices(&carol()));
        assert_eq!(out, "DEVICE  STATE  TOTP  ENROLLED  LAST-USED  SKEW\n");
        let (out, _) = render(true, |p| p.devices(&carol()));
        assert_eq!(
            out,
            "{\"user\":\"carol\",\"devices\":[],\"pending_device\":null}\n"
        );
    }

    #[test]
    fn skews() {
        assert_eq!(skew_text(0), "0s");
        assert_eq!(skew_text(90), "1m 30s ahead");
        assert_eq!(skew_text(-30), "30s behind");
        assert_eq!(skew_text(i64::MIN), format!("{} behind", duration(1 << 63)));
    }

    #[test]
    fn status_counts_devices_and_names_the_pending_one() {
        let mut s = alice();
        s.pending = false;
        s.pending_device.clear();
        assert_eq!(devices_text(&s), "2");
        // The first enrollment, still pending: no active device yet.
        let pending = UserStatus {
            user: "erin".into(),
            state: State::Pending.into(),
            pending: true,
            pending_device: "default".into(),
            ..Default::default()
        };
        assert_eq!(devices_text(&pending), "0 (+default pending)");
        // An older otpd lists no devices: an active user has one.
        assert_eq!(devices_text(&bob()), "1");
        assert_eq!(devices_text(&carol()), "0");
    }

    #[test]
    fn status_prints_page_by_page() {
        let erin = UserStatus {
            user: "erin".into(),
            ..carol()
        };
        let pages = |p: &mut Printer<'_>| {
            let mut listing = p.status_listing()?;
            listing.page(&[bob(), alice()], &[])?;
            listing.page(&[], &[])?;
            listing.page(&[carol()], &["dave".to_owned()])?;
            listing.page(std::slice::from_ref(&erin), &[])?;
            listing.finish()
        };
        let (out, err) = render(false, pages);
        // The header once; each page aligned on its own.
        assert_eq!(
            out,
            "\
USER   STATE           TOTP          BACKUP  FAILS  LOCKED-UNTIL          LAST-SUCCESS                              ENROLLED              DEVICES
alice  active+pending  sha1/6/30s    9       0      -                     2023-11-14T22:14:20Z sshd from 192.0.2.7  2023-11-14T22:13:20Z  2 (+tablet pending)
bob    locked          sha256/8/60s  10      12     2023-11-14T22:27:32Z  -                                         2023-11-14T22:13:20Z  1
carol  not_enrolled  -     0       0      -             -             -         0
dave   unreadable    -     -       -      -             -             -         -
erin  not_enrolled  -     0       0      -             -             -         0
"
        );
        assert!(err.contains("the record of dave cannot be opened"), "{err}");
        // JSON: one array on one line, across the pages.
        let (out, _) = render(true, pages);
        let users: Vec<String> = json_of(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(users, ["alice", "bob", "carol", "dave", "erin"]);
        // Same bytes as one page.
        let (one, _) = render(true, |p| {
            p.status(
                &[alice(), bob(), carol(), erin.clone()],
                &["dave".to_owned()],
            )
        });
        assert_eq!(out, one);
    }

    /// What a page writes is flushed before the next page is asked for:
    /// `otpctl status` prints as ListUsers delivers, text and JSON.
    #[test]
    fn each_status_page_is_flushed_as_it_is_printed() {
        /// Bytes written, and how many had been written at each flush.
        #[derive(Default)]
        struct Recorder {
            written: Vec<u8>,
            flushes: Vec<usize>,
        }
        impl Write for Recorder {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.written.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                self.flushes.push(self.written.len());
                Ok(())
            }
        }
        for json in [false, true] {
            let (mut out, mut err) = (Recorder::default(), Vec::new());
            let mut p = Printer::new(&mut out, &mut err, json);
            let mut listing = p.status_listing().unwrap();
            listing.page(&[alice()], &[]).unwrap();
            listing.page(&[bob()], &[]).unwrap();
            let text = String::from_utf8(out.written.clone()).unwrap();
            // The first page went out whole before the second was printed.
            let first = &text[..out.flushes[0]];
            assert!(
                first.contains("alice") && !first.contains("bob"),
                "{json}: {first}"
            );
            assert_eq!(out.flushes.last(), Some(&text.len()), "{json}: {text}");
        }
    }

    #[test]
    fn device_rename_and_remove() {
        let (out, err) = render(false, |p| p.device_renamed("alice", "phone", "old-phone"));
        assert_eq!(out, "renamed device phone of alice to old-phone\n");
        assert_eq!(err, "");
        let (out, _) = render(true, |p| p.device_renamed("alice", "phone", "old-phone"));
        assert_eq!(
            out,
            r#"{"user":"alice","ok":true,"old_name":"phone","new_name":"old-phone"}"#.to_owned()
                + "\n"
        );

        for (left, line) in [
            (1, "removed device phone of alice; 1 device left\n"),
            (2, "removed device phone of alice; 2 devices left\n"),
        ] {
            let (out, err) = render(false, |p| p.device_removed("alice", "phone", left));
            assert_eq!(out, line);
            assert_eq!(err, "");
        }
        let (out, err) = render(true, |p| p.device_removed("alice", "phone", 1));
        assert_eq!(
            out,
            r#"{"user":"alice","ok":true,"device":"phone","devices_left":1}"#.to_owned() + "\n"
        );
        assert_eq!(err, "");

        // The last one (--force): say what happens to logins.
        let warning = "otpctl: warning: alice has no device left and is no longer enrolled: \
                       PAM lines with 'nullok' let alice in with the password alone, lines \
                       without it refuse alice; enroll a device with 'otpctl enroll alice'\n";
        let (out, err) = render(false, |p| p.device_removed("alice", "phone", 0));
        assert_eq!(out, "removed device phone of alice; 0 devices left\n");
        assert_eq!(err, warning);
        let (out, err) = render(true, |p| p.device_removed("alice", "phone", 0));
        assert_eq!(json_of(&out)["devices_left"], 0);
        let message = warning
            .strip_prefix("otpctl: warning: ")
            .and_then(|w| w.strip_suffix('\n'));
        assert_eq!(json_of(&err)["warning"]["message"].as_str(), message);
    }

    const PASSWORD: &str = "k3x9-m2pq-7tvw-a8bc-d4ef-9ghj";

    fn app_password() -> AppPassword {
        AppPassword {
            id: "k3x9".into(),
            service: "dovecot".into(),
            label: "Thunderbird laptop".into(),
            created_at: T0,
            last_used: 0,
            expires_at: T0 + 90 * 86_400,
        }
    }

    fn app_password_for_su() -> AppPassword {
        AppPassword {
            id: "zz01".into(),
            service: "su".into(),
            label: String::new(),
            created_at: T0 + 60,
            last_used: T0 + 120,
            expires_at: 0,
        }
    }

    #[test]
    fn app_password_added() {
        let (out, err) = render(false, |p| {
            p.app_password_added("alice", PASSWORD, &app_password())
        });
        assert_eq!(
            out,
            "\
App password for alice (shown only this once; otpd keeps only a hash of it):

    k3x9-m2pq-7tvw-a8bc-d4ef-9ghj

ID:        k3x9
Service:   dovecot
Label:     Thunderbird laptop
Expires:   2024-02-12T22:13:20Z

It works only on the PAM service dovecot, where the pam_otpd line has the app_passwords option, typed in place of the password and code.
Revoke it with: otpctl app-password revoke alice k3x9
"
        );
        assert_eq!(err, "");
        let (out, _) = render(false, |p| {
            p.app_password_added("alice", PASSWORD, &app_password_for_su())
        });
        assert!(out.contains("Label:     -\nExpires:   never\n"), "{out}");

        let (out, _) = render(true, |p| {
            p.app_password_added("alice", PASSWORD, &app_password())
        });
        assert_eq!(
            out,
            r#"{"user":"alice","password":"k3x9-m2pq-7tvw-a8bc-d4ef-9ghj","id":"k3x9","service":"dovecot","label":"Thunderbird laptop","created_at":"2023-11-14T22:13:20Z","expires_at":"2024-02-12T22:13:20Z"}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn app_password_list_never_shows_a_password() {
        let list = [app_password(), app_password_for_su()];
        // 100 days on: the dovecot one has expired.
        let later = T0 + 100 * 86_400;
        let (out, err) = render(false, |p| p.app_passwords("alice", &list, later));
        assert_eq!(
            out,
            "\
ID    SERVICE  LABEL               CREATED               LAST-USED             EXPIRES
k3x9  dovecot  Thunderbird laptop  2023-11-14T22:13:20Z  -                     2024-02-12T22:13:20Z (expired)
zz01  su       -                   2023-11-14T22:14:20Z  2023-11-14T22:15:20Z  never
"
        );
        assert_eq!(err, "");
        let (out, _) = render(true, |p| p.app_passwords("alice", &list, T0));
        assert_eq!(
            json_of(&out),
            json!({
                "user": "alice",
                "app_passwords": [
                    {
                        "id": "k3x9", "service": "dovecot", "label": "Thunderbird laptop",
                        "created_at": "2023-11-14T22:13:20Z", "last_used": null,
                        "expires_at": "2024-02-12T22:13:20Z", "expired": false
                    },
                    {
                        "id": "zz01", "service": "su", "label": "",
                        "created_at": "2023-11-14T22:14:20Z",
                        "last_used": "2023-11-14T22:15:20Z", "expires_at": null,
                        "expired": false
                    }
                ]
            })
        );
        assert!(!out.contains("password\""), "{out}");
        let (out, _) = render(false, |p| p.app_passwords("alice", &[], T0));
        assert_eq!(out, "ID  SERVICE  LABEL  CREATED  LAST-USED  EXPIRES\n");
        let (out, _) = render(true, |p| p.app_passwords("alice", &[], T0));
        assert_eq!(out, "{\"user\":\"alice\",\"app_passwords\":[]}\n");
    }

    #[test]
    fn app_password_revoked_and_rekeyed() {
        assert_eq!(
            render(false, |p| p.app_password_revoked("alice", "k3x9")).0,
            "revoked app password k3x9 of alice\n"
        );
        assert_eq!(
            render(true, |p| p.app_password_revoked("alice", "k3x9")).0,
            "{\"user\":\"alice\",\"ok\":true,\"id\":\"k3x9\"}\n"
        );
        assert_eq!(
            render(false, |p| p.rekeyed(12)).0,
            "re-sealed 12 records under the new master key; the old key is no longer used\n"
        );
        assert_eq!(
            render(false, |p| p.rekeyed(1)).0,
            "re-sealed 1 record under the new master key; the old key is no longer used\n"
        );
        assert_eq!(
            render(true, |p| p.rekeyed(12)).0,
            "{\"ok\":true,\"records\":12}\n"
        );
    }

    /// A pipe whose reader is gone.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_closed_stdout_is_dropped_quietly_and_noticed() {
        let (mut out, mut err) = (ClosedPipe, Vec::new());
        let mut p = Printer::new(&mut out, &mut err, false);
        assert!(!p.stdout_closed());
        p.backup_codes("alice", &codes()).unwrap();
        assert!(p.stdout_closed());
        p.unlocked("alice").unwrap();
        let mut listing = p.status_listing().unwrap();
        listing.page(&[alice()], &[]).unwrap();
        assert!(listing.stdout_closed());
        listing.finish().unwrap();
        // Warnings still go to stderr.
        p.warn("careful").unwrap();
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "otpctl: warning: careful\n"
        );
        // Other write errors are errors.
        let mut full = std::io::Cursor::new([0u8; 4]);
        let mut err = Vec::new();
        let mut p = Printer::new(&mut full, &mut err, false);
        assert!(p.unlocked("alice").is_err());
        assert!(!p.stdout_closed());
    }

    #[test]
    fn a_login_with_a_backup_code_suggests_re_enrolling() {
        let mut s = alice();
        s.pending = false;
        s.pending_device.clear();
        s.devices = vec![phone()];
        let backup = |time| LastSuccess {
            time,
            service: "sshd".into(),
            remote_host: String::new(),
            method: Method::BackupCode.into(),
            device: String::new(),
        };
        s.last_success = Some(backup(T0 + 60));
        let (out, _) = render(false, |p| p.status(&[s.clone()], &[]));
        assert!(out.contains("alice  active+re-enroll  "), "{out}");
        let (out, _) = render(true, |p| p.status(&[s.clone()], &[]));
        assert_eq!(json_of(&out)[0]["re_enroll_suggested"], true);
        // A device enrolled after that login: no longer.
        let mut newer = phone();
        newer.enrolled_at = T0 + 120;
        s.devices.push(newer);
        let (out, _) = render(true, |p| p.status(&[s.clone()], &[]));
        assert_eq!(json_of(&out)[0].get("re_enroll_suggested"), None);
        // A login with a device's code: no longer either.
        s.devices.pop();
        s.last_success = Some(LastSuccess {
            method: Method::Totp.into(),
            ..backup(T0 + 60)
        });
        let (out, _) = render(false, |p| p.status(&[s.clone()], &[]));
        assert!(out.contains("alice  active  "), "{out}");
        // Not enrolled (reset since): nothing to re-enroll.
        s.last_success = Some(backup(T0 + 60));
        s.state = State::NotEnrolled.into();
        s.devices.clear();
        let (out, _) = render(false, |p| p.status(&[s], &[]));
        assert!(!out.contains("re-enroll"), "{out}");
    }

    #[test]
    fn error_line() {
        let mut err = Vec::new();
        let e = Error::Status(tonic::Status::not_found("alice is not enrolled"));
        error(&mut err, &e, false);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "otpctl: error: not found: alice is not enrolled\n"
        );
        let mut err = Vec::new();
        error(&mut err, &e, true);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "{\"error\":{\"code\":\"not_found\",\"message\":\"not found: alice is not enrolled\",\"exit_code\":5}}\n"
        );
    }

    #[test]
    fn warnings_are_json_with_json() {
        let (_, err) = render(true, |p| p.warn("careful \"now\""));
        assert_eq!(err, "{\"warning\":{\"message\":\"careful \\\"now\\\"\"}}\n");
        let (_, err) = render(false, |p| p.warn("careful"));
        assert_eq!(err, "otpctl: warning: careful\n");
    }
}

//! `otpd`: the daemon binary. Parses arguments, loads the configuration,
//! runs the library until SIGTERM/SIGINT, maps errors to exit codes.
//!
//! Exit codes: 0 clean shutdown; 1 runtime failure; 2 usage error;
//! 78 configuration, key or store problem at start (EX_CONFIG).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use otpd::config::{Config, LogFormat};
use otpd::{Daemon, Error, SystemClock};

/// Exit codes and files, for `--help` and the man page.
const AFTER_HELP: &str = "\
Exit codes:
  0   clean shutdown (SIGTERM or SIGINT); --check-config: the configuration is valid
  1   runtime failure
  2   usage error
  78  configuration, key, state directory, store or socket problem at start

Files:
  /etc/otpd/otpd.toml    configuration, see otpd.toml(5)
  /var/lib/otpd          master key, store and replay-watermark journal (mode 0700)
  /run/otpd/otpd.sock    public socket (otpctl, users)
  /run/otpd/pam.sock     root-only socket of pam_otpd(8)

See also:
  otpctl(8), pam_otpd(8), otpd.toml(5)";

/// The otpd daemon: holds TOTP secrets and decides on one-time codes for
/// PAM and otpctl, over a local Unix socket.
#[derive(Debug, Parser)]
#[command(version, about, after_help = AFTER_HELP)]
struct Args {
    /// Configuration file [default: /etc/otpd/otpd.toml if it exists]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Public socket to listen on (overrides the config file)
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Root-only socket of the PAM module (overrides the config file)
    /// [default: pam.sock beside the public socket]
    #[arg(long, value_name = "PATH")]
    pam_socket: Option<PathBuf>,
    /// Directory of the master key and the store (overrides the config file)
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Check the configuration and exit
    #[arg(long)]
    check_config: bool,
    /// Print the man page otpd(8), made from these definitions, and exit
    /// (for packagers: `make install`, `make deb`)
    #[arg(long, hide = true)]
    man_page: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.man_page {
        return man_page();
    }
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("otpd: error: {e}");
            match e {
                Error::Config { .. }
                | Error::Key { .. }
                | Error::StateDir { .. }
                | Error::StoreLocked { .. }
                | Error::Store(_)
                | Error::Watermark { .. }
                | Error::Socket { .. } => ExitCode::from(78),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn run(args: Args) -> Result<ExitCode, Error> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(socket) = args.socket {
        config.socket = std::path::absolute(&socket).unwrap_or(socket);
    }
    if let Some(pam_socket) = args.pam_socket {
        config.pam_socket = Some(std::path::absolute(&pam_socket).unwrap_or(pam_socket));
    }
    if let Some(dir) = args.state_dir {
        config.state_dir = std::path::absolute(&dir).unwrap_or(dir);
    }
    config.check("command line")?;
    if args.check_config {
        let origin = args.config.as_deref().map_or_else(
            || otpd::config::DEFAULT_CONFIG.to_owned(),
            |p| p.display().to_string(),
        );
        config.check_groups(&origin)?;
        println!("configuration OK");
        return Ok(ExitCode::SUCCESS);
    }
    init_logging(config.log_format);
    harden_process();

    let daemon = Daemon::open(&config, Arc::new(SystemClock))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("otpd")
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        tracing::info!(
            socket = %config.socket.display(),
            pam_socket = %daemon.pam_socket().display(),
            max_non_root_connections = daemon.max_total_connections(),
            state_dir = %config.state_dir.display(),
            "otpd listening"
        );
        // Tell systemd (Type=notify) and test harnesses that we serve now.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let summaries = tokio::spawn(otpd::audit::summarise_every(Duration::from_secs(10)));
        let served = daemon.serve(shutdown).await;
        summaries.abort();
        served
    })?;
    otpd::audit::flush_refusals();
    tracing::info!("otpd stopped");
    Ok(ExitCode::SUCCESS)
}

/// Writes otpd(8) to stdout: clap_mangen's sections, then [`AFTER_HELP`]
/// as sections of its own with its lines kept (clap_mangen would fill its
/// columns into one paragraph). otpctl's hidden `generate man` does the
/// same for its pages (admin-cli/src/commands/generate.rs).
fn man_page() -> ExitCode {
    use clap::CommandFactory;
    use std::io::Write;
    let man = clap_mangen::Man::new(Args::command())
        .title("OTPD")
        .section("8")
        .date(man_page_date())
        .source(format!("otpd {}", env!("CARGO_PKG_VERSION")))
        .manual("System Administration");
    let mut page = Vec::new();
    let rendered = man
        .render_title(&mut page)
        .and_then(|()| man.render_name_section(&mut page))
        .and_then(|()| man.render_synopsis_section(&mut page))
        .and_then(|()| man.render_description_section(&mut page))
        .and_then(|()| man.render_options_section(&mut page))
        .map(|()| {
            for block in AFTER_HELP.split("\n\n") {
                let (head, body) = block.split_once('\n').unwrap_or((block, ""));
                let head = match head.trim_end_matches(':') {
                    "Exit codes" => "EXIT STATUS".to_owned(),
                    other => other.to_uppercase(),
                };
                page.extend_from_slice(format!(".SH \"{head}\"\n.nf\n").as_bytes());
                for line in body.lines() {
                    // \& first: a line starting with . or ' is no request.
                    let line = line.replace('\\', "\\e").replace('-', "\\-");
                    page.extend_from_slice(format!("\\&{line}\n").as_bytes());
                }
                page.extend_from_slice(b".fi\n");
            }
        })
        .and_then(|()| man.render_version_section(&mut page));
    match rendered.and_then(|()| std::io::stdout().lock().write_all(&page)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otpd: error: cannot write the man page: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SOURCE_DATE_EPOCH (reproducible builds) or today, as YYYY-MM-DD (UTC).
fn man_page_date() -> String {
    let when = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        // Years up to 9999, which RFC 3339 can spell.
        .filter(|&secs| secs < 253_402_300_800)
        .and_then(|secs| std::time::UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .unwrap_or_else(std::time::SystemTime::now);
    let mut day = humantime::format_rfc3339(when).to_string();
    day.truncate("YYYY-MM-DD".len());
    day
}

fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::Internal(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::Internal(format!("cannot handle SIGINT: {e}")))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutting down");
    })
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // One event, one line, nothing invisible (see otpd::log_output).
    let writer = otpd::log_output::SafeStderr::new(format == LogFormat::Json, ansi);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// No core dumps (they would hold secrets), no ptrace by non-root, nothing
/// created readable by others, as many descriptors as allowed.
///
/// Runs before any thread exists. Every file and directory otpd creates
/// also gets its mode set explicitly; the umask covers what the store
/// creates later (snapshots, new segments).
fn harden_process() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use nix::sys::stat::{Mode, umask};
    umask(Mode::from_bits_truncate(0o077));
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the descriptor limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the descriptor limit"),
    }
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!(error = %e, "cannot disable core dumps");
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot clear the dumpable flag");
    }
}

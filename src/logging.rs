//! Logging compatible with runc's `--log FILE --log-format json|text`: containerd reads the last
//! JSON line of the log file on failure and shows its `msg` to the user.
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use liboci_cli::GlobalOpts;
use tracing_subscriber::EnvFilter;

pub struct LogGuard {
    pub file: Option<PathBuf>,
}

pub fn init(global: &GlobalOpts, level: &str) -> LogGuard {
    let json = global.log_format.as_deref() == Some("json");
    // libcontainer's warnings (e.g. "cgroup hugetlb not supported") are noise at the default
    // level; with --debug its own debug lines are wanted (suites look for them).
    let directives = if matches!(level, "debug" | "trace") { level.to_string() } else { format!("{level},libcgroups=error,libcontainer=error") };
    let filter = EnvFilter::try_from_env("NESTRUN_LOG").unwrap_or_else(|_| EnvFilter::new(directives));
    let file = global.log.clone().filter(|p| p.as_os_str() != "/dev/stderr");
    let writer = file.as_ref().and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(false);
    let result = match (writer, json) {
        (Some(w), true) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::sync::Mutex::new(w))
            .try_init(),
        (Some(w), false) => builder.with_writer(std::sync::Mutex::new(w)).try_init(),
        (None, true) => builder.json().flatten_event(true).with_writer(std::io::stderr).try_init(),
        (None, false) => builder.with_writer(std::io::stderr).try_init(),
    };
    let _ = result;
    LogGuard { file }
}

/// The user-facing error line. With a log file, tracing already wrote it there as
/// `{"level":"ERROR","message":...}`; runc's shape is `{"level":"error","msg":...}`, which is
/// what containerd parses, so write that line too, then the plain line to stderr.
pub fn report_error(guard: &LogGuard, msg: &str) {
    if let Some(path) = &guard.file {
        tracing::error!("{msg}");
        if let Ok(mut f) = OpenOptions::new().append(true).open(path) {
            let line = serde_json::json!({
                "level": "error",
                "msg": msg,
                "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            });
            let _ = writeln!(f, "{line}");
        }
    }
    // "error" in the line: runc's wording, and what youki's contest looks for on stderr.
    eprintln!("nestrun: error: {msg}");
}

//! Logging compatible with runc's `--log FILE --log-format json|text`: containerd reads the last
//! JSON line of the log file on failure and shows its `msg` to the user.
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;

use liboci_cli::GlobalOpts;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub struct LogGuard {
    pub file: Option<PathBuf>,
}

/// `causes`: keep libcontainer's first error for the error line (the commands that start a
/// container process: create, run, exec).
static TO_FILE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether log lines go to a `--log` file (as engines ask) rather than to stderr, where a
/// conformance suite counts any line as a failure.
pub fn to_file() -> bool {
    TO_FILE.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn init(global: &GlobalOpts, level: &str, causes: bool) -> LogGuard {
    let json = global.log_format.as_deref() == Some("json");
    let debug = matches!(level, "debug" | "trace");
    let file = global.log.clone().filter(|p| p.as_os_str() != "/dev/stderr");
    // libcontainer's warnings (e.g. "cgroup hugetlb not supported") are noise at the default
    // level; with --debug its own debug lines are wanted (suites look for them). Its errors go
    // to a log file, but not to a terminal: there the one error line says it all (the first
    // of them, the root cause, is appended to it: see `Causes`).
    let lc = if file.is_some() { "error" } else { "off" };
    let directives = if debug { level.to_string() } else { format!("{level},libcgroups={lc},libcontainer={lc}") };
    let filter = EnvFilter::try_from_env("NESTRUN_LOG").unwrap_or_else(|_| EnvFilter::new(directives));
    let writer = file.as_ref().and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
    let fmt = tracing_subscriber::fmt::layer().with_target(false).with_ansi(false);
    let fmt: Box<dyn Layer<_> + Send + Sync> = match (writer, json) {
        (Some(w), true) => fmt.json().flatten_event(true).with_current_span(false).with_writer(std::sync::Mutex::new(w)).boxed(),
        (Some(w), false) => fmt.with_writer(std::sync::Mutex::new(w)).boxed(),
        (None, true) => fmt.json().flatten_event(true).with_writer(std::io::stderr).boxed(),
        (None, false) => fmt.with_writer(std::io::stderr).boxed(),
    };
    TO_FILE.store(file.is_some(), std::sync::atomic::Ordering::Relaxed);
    let causes = (causes && !debug).then(Causes::open).flatten();
    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(causes).try_init();
    LogGuard { file }
}

/// libcontainer's first error event, kept for the user-facing line: the failures that happen
/// in the container's init (a mount that fails, an exec that fails) reach this process only
/// as "failed to prepare rootfs"; the init logged the real cause just before. The events are
/// appended to a memfd that the init (a fork of this process) inherits; it is close-on-exec,
/// so the container's own program never sees it.
struct Causes;

static CAUSES: OnceLock<OwnedFd> = OnceLock::new();

impl Causes {
    fn open() -> Option<Causes> {
        let fd = nix::sys::memfd::memfd_create(c"nestrun-causes", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC).ok()?;
        CAUSES.set(fd).ok()?;
        Some(Causes)
    }
}

impl<S: tracing::Subscriber> Layer<S> for Causes {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != tracing::Level::ERROR || !meta.target().starts_with("libcontainer") {
            return;
        }
        let mut line = Visitor(String::new());
        event.record(&mut line);
        let text = format!("{}\n", line.0.replace('\n', " "));
        // O_APPEND is not available on a memfd's fd here: seek to the end, then write.
        let Some(fd) = CAUSES.get().map(AsRawFd::as_raw_fd) else { return };
        unsafe {
            libc::lseek(fd, 0, libc::SEEK_END);
            libc::write(fd, text.as_ptr().cast(), text.len());
        }
    }
}

struct Visitor(String);

impl tracing::field::Visit for Visitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            self.0 += &format!("{value:?}");
        } else {
            self.0 += &format!("{}={value:?}", field.name());
        }
    }
}

/// The first libcontainer error event of this process or of the container init it forked.
pub fn first_cause() -> Option<String> {
    let fd = CAUSES.get()?.as_raw_fd();
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    let text = String::from_utf8_lossy(&buf[..usize::try_from(n).ok()?]).into_owned();
    let first = tidy_mount(text.lines().next()?.trim());
    (!first.is_empty()).then(|| first.chars().take(400).collect())
}

/// `Mount { destination: "/mnt", typ: Some("x"), source: Some("y"), options: … }` (how
/// libcontainer prints a mount) -> `y (x) at "/mnt"`.
fn tidy_mount(line: &str) -> String {
    let Some(start) = line.find("Mount { destination: ") else { return line.to_string() };
    let Some(len) = line[start..].find(" }") else { return line.to_string() };
    let body = &line[start..start + len];
    let field = |name: &str| {
        let at = body.find(&format!("{name}: "))? + name.len() + 2;
        let rest = &body[at..];
        let rest = rest.strip_prefix("Some(").unwrap_or(rest);
        let rest = rest.strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_string())
    };
    let (Some(dest), typ, src) = (field("destination"), field("typ"), field("source")) else { return line.to_string() };
    let what = match (src, typ) {
        (Some(s), Some(t)) => format!("{s} ({t})"),
        (Some(s), None) => s,
        (None, Some(t)) => format!("({t})"),
        (None, None) => String::new(),
    };
    format!("{}{what} at {dest:?}{}", &line[..start], &line[start + len + 2..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn libcontainer_mount_debug_is_made_readable() {
        let l = r#"failed to mount Mount { destination: "/mnt", typ: Some("bogusfs"), source: Some("none"), options: None, uid_mappings: None, gid_mappings: None }: syscall"#;
        assert_eq!(super::tidy_mount(l), r#"failed to mount none (bogusfs) at "/mnt": syscall"#);
        assert_eq!(super::tidy_mount("no mount here"), "no mount here");
        assert_eq!(super::tidy_mount("Mount { destination: broken"), "Mount { destination: broken");
    }
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

/// A timed step of a command (`let _t = logging::step("gather");`): with `--debug` its
/// duration is logged when it ends, so `nestrun --debug --log F create ...` shows where the
/// time of a create or delete goes.
pub struct Step {
    name: &'static str,
    start: std::time::Instant,
}

pub fn step(name: &'static str) -> Step {
    Step { name, start: std::time::Instant::now() }
}

impl Drop for Step {
    fn drop(&mut self) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(step = self.name, ms = (ms * 1000.0).round() / 1000.0, "step done");
    }
}

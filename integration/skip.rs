//! Skips that are seen and counted. A test that cannot run here says why on stderr and appends
//! `<kind> <test>: <why>` to `$NESTRUN_SKIP_LOG` (scripts/test sets it): scripts/test reports
//! them as skipped, not passed, and fails the run on an `engine` skip when it started the
//! engines. Shared by the integration, escape and fault test binaries (`#[path]`) and by the
//! unit tests.

/// Why a test did not run: `engine` (a daemon or image scripts/test provides), `root`, `host`
/// (a kernel feature this host lacks).
pub fn skip(kind: &str, test: &str, why: &str) {
    eprintln!("{test}: SKIP ({kind}): {why}");
    if let Some(log) = std::env::var_os("NESTRUN_SKIP_LOG").filter(|l| !l.is_empty()) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{kind} {test}: {why}");
        }
    }
}

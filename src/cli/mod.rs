//! The command line: runc's verbs and global flags, parsed with youki's `liboci-cli` where its
//! structs match runc, and with our own where runc differs (kill's optional signal).
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use liboci_cli::GlobalOpts;

mod check;
mod create;
mod delete;
mod events;
mod exec;
mod features;
mod gc;
pub mod fuse;
mod kill;
mod list;
mod pause;
mod ps;
mod run;
mod spec;
mod start;
mod state;
mod update;

pub const DEFAULT_ROOT: &str = "/run/nestrun";

#[derive(Parser, Debug)]
#[command(name = "nestrun", version, about = "A runc-compatible runtime for unprivileged system containers (Docker-in-Docker without --privileged)")]
pub struct Opts {
    #[command(flatten)]
    pub global: GlobalOpts,
    /// Accepted for runc compatibility; nestrun always runs containers in a user namespace.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = false)]
    pub rootless: Option<String>,
    /// Log level (error, warn, info, debug, trace); --debug means debug.
    #[arg(long)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

impl Opts {
    pub fn log_level(&self) -> &str {
        match (&self.log_level, self.global.debug) {
            (Some(l), _) => l,
            (None, true) => "debug",
            (None, false) => "warn",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a container (its process waits for `start`).
    Create(liboci_cli::Create),
    /// Start the user process of a created container.
    Start(liboci_cli::Start),
    /// Print the state of a container as JSON.
    State(liboci_cli::State),
    /// Send a signal to the container's init (or all) processes.
    Kill(kill::Kill),
    /// Delete a container and everything nestrun made for it.
    Delete(liboci_cli::Delete),
    /// Create and start a container.
    Run(liboci_cli::Run),
    /// Run a new process inside a container.
    Exec(liboci_cli::Exec),
    /// List the processes of a container.
    Ps(liboci_cli::Ps),
    /// Freeze all processes of a container.
    Pause(liboci_cli::Pause),
    /// Thaw a paused container.
    Resume(liboci_cli::Resume),
    /// Change the resource limits of a container.
    Update(liboci_cli::Update),
    /// Print container events and resource statistics.
    Events(liboci_cli::Events),
    /// List containers.
    List(liboci_cli::List),
    /// Write a starter config.json.
    Spec(liboci_cli::Spec),
    /// Print the OCI features JSON.
    Features(liboci_cli::Features),
    /// Print what this host supports and what a missing item disables.
    Check(check::Check),
    /// List (or with --force reclaim) what nestrun made for containers whose state is lost.
    Gc(gc::Gc),
    /// Internal: the per-container FUSE server for /proc and /sys.
    #[command(hide = true, name = "fuse-serve")]
    FuseServe(fuse::FuseServe),
}

/// Common context for commands that work on the state directory.
#[derive(Args, Debug, Clone)]
pub struct Ctx {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    pub log: Option<PathBuf>,
    pub log_format: Option<String>,
}

/// Parse the command line. Usage errors are one line on stderr (like every other nestrun
/// error: engines log the runtime's stderr line by line), exit code 2; --help and --version
/// print as usual.
pub fn parse_args() -> Opts {
    match Opts::try_parse() {
        Ok(o) => o,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("nestrun: error: {}", usage_error_line(&e.render().to_string()));
            std::process::exit(2);
        }
    }
}

/// The first line of clap's rendered error, without its "error: " prefix.
fn usage_error_line(rendered: &str) -> String {
    let line = rendered.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("invalid arguments");
    let line = line.strip_prefix("error: ").unwrap_or(line);
    format!("{line} (see --help)")
}

pub fn dispatch(opts: Opts) -> Result<i32> {
    let ctx = Ctx {
        // Canonical, as create records it (its lease owner and mount dir name derive from the
        // root): docker's default root /var/run/docker/runtime-runc/moby is /run/... through a
        // symlink, and a delete with the other spelling left mounts and the lease behind.
        root: opts.global.root.clone().map(|r| std::fs::canonicalize(&r).unwrap_or(r)).unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
        systemd_cgroup: opts.global.systemd_cgroup,
        log: opts.global.log.clone(),
        log_format: opts.global.log_format.clone(),
    };
    tracing::debug!(args = ?std::env::args().collect::<Vec<_>>(), "nestrun invoked");
    let ok = |r: Result<()>| r.map(|()| 0);
    match opts.cmd {
        Cmd::Create(a) => ok(create::run(a, &ctx)),
        Cmd::Start(a) => ok(start::run(a, &ctx)),
        Cmd::State(a) => ok(state::run(a, &ctx)),
        Cmd::Kill(a) => ok(kill::run(a, &ctx)),
        Cmd::Delete(a) => ok(delete::run(a, &ctx)),
        Cmd::Run(a) => run::run(a, &ctx),
        Cmd::Exec(a) => exec::run(a, &ctx),
        Cmd::Ps(a) => ok(ps::run(a, &ctx)),
        Cmd::Pause(a) => ok(pause::pause(a, &ctx)),
        Cmd::Resume(a) => ok(pause::resume(a, &ctx)),
        Cmd::Update(a) => ok(update::run(a, &ctx)),
        Cmd::Events(a) => ok(events::run(a, &ctx)),
        Cmd::List(a) => ok(list::run(a, &ctx)),
        Cmd::Spec(a) => ok(spec::run(a)),
        Cmd::Features(a) => ok(features::run(a)),
        Cmd::Check(a) => check::run(a),
        Cmd::Gc(a) => gc::run(a),
        Cmd::FuseServe(a) => ok(fuse::run(a)),
    }
}

#[cfg(test)]
mod tests;

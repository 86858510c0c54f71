//! nestrun: a runc-compatible OCI runtime that turns a bundle into a system container
//! (user namespace, ID-mapped rootfs, delegated cgroups, emulated /proc) via youki's libcontainer.

mod bundle;
mod cli;
mod facts;
mod fuse;
#[cfg(test)]
mod fuzz;
mod host;
mod lifecycle;
mod logging;
mod rewrite;
#[cfg(test)]
mod seccomp_stub_tests;
#[cfg(test)]
#[path = "../integration/skip.rs"]
mod skip_log;
mod sidecar;
mod subid;
mod validate;

fn main() {
    // A working directory that was removed (containerd 1.6 runs a pod's containers from the
    // sandbox's shim, whose cwd is the sandbox's bundle: gone once the pause process dies)
    // makes libcontainer fail every exec and create ("failed to get cwd"). runc never reads
    // its cwd; engines pass absolute paths: start from / then.
    if std::env::current_dir().is_err() {
        let _ = std::env::set_current_dir("/");
    }
    let opts = cli::parse_args();
    // Commands that only print: a closed stdout (`nestrun check | head`) ends them quietly,
    // as it would a C tool, instead of a println! panic. The others keep SIGPIPE ignored so a
    // vanished peer is an error nestrun reports and cleans up after, not a silent death.
    use cli::Cmd::*;
    if matches!(opts.cmd, State(_) | Ps(_) | Events(_) | List(_) | Spec(_) | Features(_) | Check(_)) {
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let guard = logging::init(&opts.global, opts.log_level(), matches!(opts.cmd, Create(_) | Run(_) | Exec(_)));
    let code = match cli::dispatch(opts) {
        Ok(code) => code,
        Err(err) => {
            let mut msg = one_line(&err);
            if let Some(cause) = logging::first_cause().filter(|c| !msg.contains(c.as_str())) {
                msg = format!("{msg}: {cause}");
            }
            logging::report_error(&guard, &msg);
            1
        }
    };
    drop(guard);
    std::process::exit(code);
}

/// One line naming what is wrong: the outermost context first, then each cause that the
/// message does not already contain (our error types embed their source's text).
fn one_line(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg.replace('\n', " ")
}

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SigSet;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::Ctx;
use crate::lifecycle::{self, CreateArgs, LifecycleError};

pub fn run(a: liboci_cli::Run, ctx: &Ctx) -> Result<i32> {
    // `run` takes create's flags (plus --detach, --keep, --no-subreaper).
    let create = liboci_cli::Create {
        container_id: a.container_id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
    };
    let args = CreateArgs { detach: a.detach, ..super::create::args(&create, ctx) };
    let mut c = lifecycle::create(&args, &ctx.root)?;
    if let Err(source) = c.start() {
        lifecycle::delete(&ctx.root, &a.container_id, true)?;
        return Err(LifecycleError::Libcontainer { id: a.container_id, source }.into());
    }
    if a.detach {
        return Ok(0);
    }
    let pid = c.pid().context("container has no init pid after start")?;
    let code = wait_forwarding_signals(pid);
    if !a.keep {
        lifecycle::delete(&ctx.root, &a.container_id, true)?;
    }
    code
}

/// Wait for the container's init, forwarding signals to it like runc's foreground mode.
/// The exit code is the init's, or 128 + signal.
fn wait_forwarding_signals(init: Pid) -> Result<i32> {
    let all = SigSet::all();
    all.thread_block().context("block signals")?;
    loop {
        // Reap first: the init may have exited before the signals were blocked, and a
        // SIGCHLD delivered then is gone.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == init => return Ok(code),
                Ok(WaitStatus::Signaled(p, sig, _)) if p == init => return Ok(128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        match all.wait().context("sigwait")? {
            Signal::SIGCHLD | Signal::SIGURG | Signal::SIGWINCH => {}
            sig => {
                let _ = kill(init, sig);
            }
        }
    }
}

use anyhow::Result;
use clap::Args;
use libcontainer::container::ContainerStatus;
use libcontainer::signal::Signal;

use super::Ctx;
use crate::lifecycle::{self, LifecycleError};

/// runc's `kill <id> [signal]`: the signal is optional (SIGTERM).
#[derive(Args, Debug)]
pub struct Kill {
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new(), required = true)]
    pub container_id: String,
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
    /// Send the signal to all processes in the container.
    #[arg(short, long)]
    pub all: bool,
}

/// A signal libcontainer knows (1-31), or a real-time one it cannot represent (SIGRTMIN+n,
/// e.g. 37 = SIGRTMIN+3, docker's stop signal for systemd).
#[derive(Debug)]
pub enum Sig {
    Std(Signal),
    Raw(i32),
}

pub fn parse_signal(s: &str) -> Result<Sig, String> {
    let bad = || format!("invalid signal {s:?}: use a name like TERM or SIGKILL, RTMIN+3, or a number from 1 to 64");
    let upper = s.to_ascii_uppercase();
    if let Ok(sig) = Signal::try_from(upper.as_str()) {
        return Ok(Sig::Std(sig));
    }
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let n = if let Ok(n) = name.parse::<i32>() {
        n
    } else if let Some(off) = name.strip_prefix("RTMIN") {
        rtmin + if off.is_empty() { 0 } else { off.strip_prefix('+').and_then(|o| o.parse().ok()).ok_or_else(bad)? }
    } else if let Some(off) = name.strip_prefix("RTMAX") {
        rtmax - if off.is_empty() { 0 } else { off.strip_prefix('-').and_then(|o| o.parse().ok()).ok_or_else(bad)? }
    } else {
        return Err(bad());
    };
    if (1..=64).contains(&n) && n <= rtmax {
        Ok(Sig::Raw(n))
    } else {
        Err(bad())
    }
}

pub fn run(a: Kill, ctx: &Ctx) -> Result<()> {
    let signal = parse_signal(&a.signal).map_err(anyhow::Error::msg)?;
    let mut c = lifecycle::load(&ctx.root, &a.container_id)?;
    let not_running = |id: &str| LifecycleError::Other { id: id.into(), msg: "container not running".into() };
    match signal {
        Sig::Std(signal) => c.kill(signal, a.all).map_err(|source| {
            let _ = c.refresh_status();
            if c.status() == ContainerStatus::Stopped {
                not_running(&a.container_id)
            } else {
                LifecycleError::Libcontainer { id: a.container_id.clone(), source }
            }
        })?,
        Sig::Raw(n) => {
            let _ = c.refresh_status();
            let Some(init) = c.pid().filter(|_| c.status() != ContainerStatus::Stopped) else {
                return Err(not_running(&a.container_id).into());
            };
            let pids = if a.all {
                use libcgroups::common::CgroupManager;
                super::ps::cgroup_manager(ctx, &a.container_id)?.get_all_pids()?
            } else {
                vec![init]
            };
            for pid in pids {
                // SAFETY: plain kill(2) with a signal number validated above.
                if unsafe { libc::kill(pid.as_raw(), n) } != 0 && !a.all {
                    anyhow::bail!("container {:?}: cannot send signal {n} to {pid}: {}", a.container_id, std::io::Error::last_os_error());
                }
            }
        }
    }
    Ok(())
}

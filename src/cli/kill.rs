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

pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let upper = s.to_ascii_uppercase();
    Signal::try_from(upper.as_str()).map_err(|_| format!("invalid signal {s:?}: use a name like TERM or SIGKILL, or a number from 1 to 64"))
}

pub fn run(a: Kill, ctx: &Ctx) -> Result<()> {
    let signal = parse_signal(&a.signal).map_err(anyhow::Error::msg)?;
    let mut c = lifecycle::load(&ctx.root, &a.container_id)?;
    c.kill(signal, a.all).map_err(|source| {
        let _ = c.refresh_status();
        if c.status() == ContainerStatus::Stopped {
            LifecycleError::Other { id: a.container_id.clone(), msg: "container is not running".into() }
        } else {
            LifecycleError::Libcontainer { id: a.container_id.clone(), source }
        }
    })?;
    Ok(())
}

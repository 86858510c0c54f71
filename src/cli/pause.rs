use anyhow::Result;

use super::Ctx;
use crate::lifecycle::{self, LifecycleError};

pub fn pause(a: liboci_cli::Pause, ctx: &Ctx) -> Result<()> {
    let mut c = lifecycle::load(&ctx.root, &a.container_id)?;
    c.pause().map_err(|source| LifecycleError::Libcontainer { id: a.container_id.clone(), source })?;
    Ok(())
}

pub fn resume(a: liboci_cli::Resume, ctx: &Ctx) -> Result<()> {
    let mut c = lifecycle::load(&ctx.root, &a.container_id)?;
    c.resume().map_err(|source| LifecycleError::Libcontainer { id: a.container_id.clone(), source })?;
    Ok(())
}

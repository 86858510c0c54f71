use anyhow::Result;

use super::Ctx;
use crate::lifecycle::{self, LifecycleError};

pub fn run(a: liboci_cli::Start, ctx: &Ctx) -> Result<()> {
    let mut c = lifecycle::load(&ctx.root, &a.container_id)?;
    c.start().map_err(|source| LifecycleError::Libcontainer { id: a.container_id.clone(), source })?;
    Ok(())
}

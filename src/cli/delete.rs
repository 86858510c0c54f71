use anyhow::Result;

use super::Ctx;

pub fn run(a: liboci_cli::Delete, ctx: &Ctx) -> Result<()> {
    crate::lifecycle::delete(&ctx.root, &a.container_id, a.force)?;
    Ok(())
}

//! `nestrun gc`: list (default) or reclaim (`--force`) what nestrun made for containers whose
//! state is lost; see `lifecycle::gc`.
use anyhow::Result;
use clap::Args;

use crate::lifecycle::gc;

#[derive(Args, Debug)]
pub struct Gc {
    /// Reclaim the orphans (default: only list what would be reclaimed).
    #[arg(long)]
    pub force: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Gc) -> Result<i32> {
    let scan = gc::scan();
    let found = if a.force { gc::reclaim(scan) } else { scan.findings };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"reclaimed": a.force, "orphans": found}))?);
        return Ok(0);
    }
    let verb = if a.force { "reclaimed" } else { "would reclaim (dry run; --force reclaims)" };
    println!("nestrun gc: {verb}: {} orphaned resources", found.len());
    if found.is_empty() {
        return Ok(0);
    }
    println!("{:<8} {:<56} {:<40} REASON", "KIND", "RESOURCE", "CONTAINER");
    for f in &found {
        println!("{:<8} {:<56} {:<40} {}", f.kind, f.resource, f.container.as_deref().unwrap_or("-"), f.reason);
    }
    Ok(0)
}

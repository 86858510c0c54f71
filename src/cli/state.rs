use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::Ctx;
use crate::lifecycle;

/// runc's state JSON (containerd and podman read `pid`, `status`, `bundle`).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct StateJson {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::HashMap<String, String>>,
    pub owner: String,
}

pub fn state_of(ctx: &Ctx, id: &str) -> Result<StateJson> {
    let mut c = lifecycle::load(&ctx.root, id)?;
    let _ = c.refresh_status();
    let rec = lifecycle::record(&ctx.root, id);
    let s = &c.state;
    Ok(StateJson {
        oci_version: s.oci_version.clone(),
        id: s.id.clone(),
        pid: if c.status() == libcontainer::container::ContainerStatus::Stopped { 0 } else { s.pid.unwrap_or(0) },
        // runc's lowercase words (created, running, paused, stopped): engines compare them
        // literally; libcontainer's Display capitalizes.
        status: c.status().to_string().to_lowercase(),
        bundle: rec.as_ref().map(|r| r.bundle.clone()).unwrap_or_else(|| s.bundle.clone()),
        rootfs: rec.as_ref().map(|r| r.rootfs.clone()).unwrap_or_default(),
        created: s.created.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)).unwrap_or_default(),
        annotations: s.annotations.clone(),
        owner: String::new(),
    })
}

pub fn run(a: liboci_cli::State, ctx: &Ctx) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(&state_of(ctx, &a.container_id)?)?);
    Ok(())
}

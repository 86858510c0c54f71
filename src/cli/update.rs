use std::io::Read;

use anyhow::{Context, Result};
use libcgroups::common::{CgroupManager, ControllerOpt};
use libcontainer::oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};

use super::Ctx;

/// The single flags as the JSON object they stand for (runc's names).
fn flags_json(a: &liboci_cli::Update) -> Value {
    let mut cpu = Map::new();
    let mut mem = Map::new();
    let put = |m: &mut Map<String, Value>, k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    put(&mut cpu, "shares", a.cpu_share.map(Into::into));
    put(&mut cpu, "quota", a.cpu_quota.map(Into::into));
    put(&mut cpu, "period", a.cpu_period.map(Into::into));
    put(&mut cpu, "realtimeRuntime", a.cpu_rt_runtime.map(Into::into));
    put(&mut cpu, "realtimePeriod", a.cpu_rt_period.map(Into::into));
    put(&mut cpu, "cpus", a.cpuset_cpus.clone().map(Into::into));
    put(&mut cpu, "mems", a.cpuset_mems.clone().map(Into::into));
    put(&mut mem, "limit", a.memory.map(Into::into));
    put(&mut mem, "reservation", a.memory_reservation.map(Into::into));
    put(&mut mem, "swap", a.memory_swap.map(Into::into));
    let mut r = Map::new();
    if !cpu.is_empty() {
        r.insert("cpu".into(), cpu.into());
    }
    if !mem.is_empty() {
        r.insert("memory".into(), mem.into());
    }
    if let Some(p) = a.pids_limit {
        r.insert("pids".into(), json!({ "limit": p }));
    }
    if let Some(w) = a.blkio_weight {
        r.insert("blockIO".into(), json!({ "weight": w }));
    }
    r.into()
}

pub fn run(a: liboci_cli::Update, ctx: &Ctx) -> Result<()> {
    let cm = super::ps::cgroup_manager(ctx, &a.container_id)?;
    let res: LinuxResources = match &a.resources {
        Some(p) => {
            let mut text = Vec::new();
            if p.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut text)?;
            } else {
                text = std::fs::read(p).with_context(|| format!("cannot read resources file {}", p.display()))?;
            }
            serde_json::from_slice(&text).with_context(|| format!("invalid resources JSON in {}", p.display()))?
        }
        None => serde_json::from_value(flags_json(&a))?,
    };
    cm.apply(&ControllerOpt { resources: &res, disable_oom_killer: false, oom_score_adj: None, freezer_state: None })
        .with_context(|| format!("container {:?}: cannot update resources", a.container_id))?;
    Ok(())
}

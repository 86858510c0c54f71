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

/// Engines send every field, 0 or "" for the ones not set (docker 20.10's `docker update
/// --memory X` passes `reservation: 0`, `shares: 0`, `quota: 0`, `period: 0`, `cpus: ""`, ...);
/// runc skips those, libcgroups would write them (on cgroup v2 "invalid memory reservation
/// value: 0", `cpu.max` "max 0"). Drop them, as runc does; -1 (unlimited) and swappiness stay.
fn zero_is_unset(mut v: Value) -> Value {
    let fields: &[(&str, &[&str])] = &[
        ("memory", &["limit", "reservation", "swap", "kernel", "kernelTCP"]),
        ("cpu", &["shares", "quota", "period", "realtimeRuntime", "realtimePeriod", "burst", "cpus", "mems"]),
        ("blockIO", &["weight", "leafWeight"]),
        ("pids", &["limit"]),
    ];
    for (section, keys) in fields {
        if let Some(Value::Object(m)) = v.get_mut(*section) {
            m.retain(|k, val| !keys.contains(&k.as_str()) || !(val.is_null() || val.as_i64() == Some(0) || val.as_u64() == Some(0) || val.as_str() == Some("")));
        }
    }
    v
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
            let v: Value = serde_json::from_slice(&text).with_context(|| format!("invalid resources JSON in {}", p.display()))?;
            serde_json::from_value(zero_is_unset(v)).with_context(|| format!("invalid resources JSON in {}", p.display()))?
        }
        None => serde_json::from_value(flags_json(&a))?,
    };
    cm.apply(&ControllerOpt { resources: &res, disable_oom_killer: false, oom_score_adj: None, freezer_state: None })
        .with_context(|| format!("container {:?}: cannot update resources", a.container_id))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_from_docker_update_are_unset() {
        // what docker 20.10 sends for `docker update --memory 384m --memory-swap 768m`
        let sent = json!({
            "memory": {"limit": 402653184, "reservation": 0, "swap": 805306368, "kernel": 0, "swappiness": 0},
            "cpu": {"shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0, "realtimePeriod": 0, "cpus": "", "mems": ""},
            "blockIO": {"weight": 0},
            "pids": {"limit": 0}
        });
        let want = json!({
            "memory": {"limit": 402653184, "swap": 805306368, "swappiness": 0},
            "cpu": {},
            "blockIO": {},
            "pids": {}
        });
        assert_eq!(zero_is_unset(sent), want);
        let kept = json!({"memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1, "cpus": "0-1", "shares": 512}, "pids": {"limit": -1}});
        assert_eq!(zero_is_unset(kept.clone()), kept);
        let res: LinuxResources = serde_json::from_value(zero_is_unset(json!({"memory": {"limit": 1048576, "reservation": 0}}))).unwrap();
        assert_eq!(res.memory().as_ref().and_then(|m| m.reservation()), None);
        assert_eq!(res.memory().as_ref().and_then(|m| m.limit()), Some(1048576));
    }
}

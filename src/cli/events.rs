use anyhow::Result;
use libcgroups::common::CgroupManager;
use libcgroups::stats::{MemoryData, Stats};
use serde_json::{json, Value};

use super::Ctx;

fn mem(d: &MemoryData) -> Value {
    json!({ "usage": d.usage, "max": d.max_usage, "failcnt": d.fail_count, "limit": d.limit })
}

/// libcgroups' stats in runc's `events --stats` shape (what containerd's shim parses for
/// `docker stats`).
pub fn runc_stats(id: &str, s: &Stats) -> Value {
    let blk = |v: &Vec<libcgroups::stats::BlkioDeviceStat>| -> Value {
        v.iter().map(|d| json!({ "major": d.major, "minor": d.minor, "op": d.op_type.clone().unwrap_or_default(), "value": d.value })).collect()
    };
    json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {
                "usage": {
                    "total": s.cpu.usage.usage_total,
                    "percpu": s.cpu.usage.per_core_usage_total,
                    "kernel": s.cpu.usage.usage_kernel,
                    "user": s.cpu.usage.usage_user,
                },
                "throttling": {
                    "periods": s.cpu.throttling.periods,
                    "throttledPeriods": s.cpu.throttling.throttled_periods,
                    "throttledTime": s.cpu.throttling.throttled_time,
                },
            },
            "memory": {
                "cache": s.memory.cache,
                "usage": mem(&s.memory.memory),
                "swap": mem(&s.memory.memswap),
                "kernel": mem(&s.memory.kernel),
                "kernelTCP": mem(&s.memory.kernel_tcp),
                "raw": s.memory.stats,
            },
            "pids": { "current": s.pids.current, "limit": s.pids.limit },
            "blkio": {
                "ioServiceBytesRecursive": blk(&s.blkio.service_bytes),
                "ioServicedRecursive": blk(&s.blkio.serviced),
                "ioTimeRecursive": blk(&s.blkio.time),
                "sectorsRecursive": blk(&s.blkio.sectors),
            },
            "hugetlb": {},
        }
    })
}

pub fn run(a: liboci_cli::Events, ctx: &Ctx) -> Result<()> {
    let cm = super::ps::cgroup_manager(ctx, &a.container_id)?;
    loop {
        let stats = cm.stats()?;
        println!("{}", runc_stats(&a.container_id, &stats));
        if a.stats {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(a.interval.max(1) as u64));
        // Stop when the container is gone.
        crate::lifecycle::load(&ctx.root, &a.container_id)?;
    }
}

//! /proc/stat with `cpuN` lines for the visible cpus only (renumbered from 0)
//! and the aggregate `cpu` line recomputed as their sum. When the container's
//! cpu usage is known, each visible cpu shows the container's user/system
//! ticks and the rest of that host cpu's time as idle (lxcfs's formula:
//! idle' = idle + host_used - container_used), so `top` shows the container's
//! own load. `btime`, `intr`, `ctxt`, `processes`, `procs_*` and `softirq`
//! are kept from the host (btime must stay: `ps` adds process start ticks,
//! which are host-boot relative, to it).

/// Container cpu time for one visible cpu, in USER_HZ ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
}

/// `visible`: physical cpu ids, numbered 0.. in this order.
/// `usage`: the container's ticks per *visible* index (see [`distribute_usage`]);
/// `None` keeps the host's per-cpu numbers.
pub fn render(host: &str, visible: &[usize], usage: Option<&[CpuTicks]>) -> String {
    let mut cpu_lines = String::new();
    let mut sum = [0u64; 10];
    let mut rest = String::new();
    let mut agg_seen = false;
    let mut agg_pos = 0;
    for line in host.lines() {
        let Some(after) = line.strip_prefix("cpu") else {
            rest.push_str(line);
            rest.push('\n');
            continue;
        };
        let mut fields = after.split_whitespace();
        let id = fields.next().unwrap_or("");
        if after.starts_with(' ') {
            // the aggregate "cpu  ..." line: recomputed below
            agg_seen = true;
            agg_pos = rest.len();
            continue;
        }
        let Ok(phys) = id.parse::<usize>() else {
            rest.push_str(line);
            rest.push('\n');
            continue;
        };
        let Some(idx) = visible.iter().position(|&c| c == phys) else { continue };
        let mut v = [0u64; 10];
        for (slot, f) in v.iter_mut().zip(fields) {
            *slot = f.parse().unwrap_or(0);
        }
        if let Some(ct) = usage.and_then(|u| u.get(idx)) {
            let host_used = v.iter().enumerate().filter(|(i, _)| *i != 3).fold(0u64, |a, (_, x)| a.saturating_add(*x));
            let cg_used = ct.user.saturating_add(ct.system);
            let idle = v[3].saturating_add(host_used.saturating_sub(cg_used));
            v = [ct.user, 0, ct.system, idle, 0, 0, 0, 0, 0, 0];
        }
        for (s, x) in sum.iter_mut().zip(v) {
            *s = s.saturating_add(x);
        }
        cpu_lines.push_str(&format!("cpu{idx}"));
        for x in v {
            cpu_lines.push_str(&format!(" {x}"));
        }
        cpu_lines.push('\n');
    }
    let mut agg = String::from("cpu ");
    for x in sum {
        agg.push_str(&format!(" {x}"));
    }
    agg.push('\n');
    agg.push_str(&cpu_lines);
    if !agg_seen {
        agg_pos = 0;
    }
    rest.insert_str(agg_pos, &agg);
    rest
}

/// Maps the container's cpu time (nanoseconds) onto the visible cpus.
///
/// `per_cpu` (indexed by physical cpu id, v1 cpuacct.usage_all) is used as is
/// when the visible set is the whole cpuset (`all_visible`); when a CFS quota
/// narrows the view, or only totals are known (cgroup v2 cpu.stat), the totals
/// are spread evenly over the visible cpus (the remainder on the first ones).
pub fn distribute_usage(
    visible: &[usize],
    all_visible: bool,
    per_cpu: Option<&[(u64, u64)]>,
    total_user_ns: u64,
    total_system_ns: u64,
) -> Vec<CpuTicks> {
    use super::ns_to_ticks;
    if let (true, Some(per)) = (all_visible, per_cpu) {
        return visible
            .iter()
            .map(|&c| {
                let (u, s) = per.get(c).copied().unwrap_or((0, 0));
                CpuTicks { user: ns_to_ticks(u), system: ns_to_ticks(s) }
            })
            .collect();
    }
    let n = visible.len().max(1) as u64;
    let (u, s) = (ns_to_ticks(total_user_ns), ns_to_ticks(total_system_ns));
    (0..visible.len() as u64)
        .map(|i| CpuTicks {
            user: u / n + u64::from(i < u % n),
            system: s / n + u64::from(i < s % n),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = include_str!("../testdata/stat");

    fn cpu_lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with("cpu")).collect()
    }

    #[test]
    fn all_cpus_keeps_lines_and_recomputes_aggregate() {
        let out = render(HOST, &[0, 1], None);
        // the kernel samples the aggregate separately: ours is the exact sum
        assert_eq!(cpu_lines(&out)[0], "cpu  12481 0 3873 49638 508 0 57 37 0 0");
        assert_eq!(out.lines().skip(1).collect::<Vec<_>>(), HOST.lines().skip(1).collect::<Vec<_>>());
    }

    #[test]
    fn cpuset_one_renumbers_and_sums() {
        let out = render(HOST, &[1], None);
        let lines = cpu_lines(&out);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "cpu  6757 0 2209 23783 461 0 45 22 0 0");
        assert_eq!(lines[1], "cpu0 6757 0 2209 23783 461 0 45 22 0 0");
        assert!(out.starts_with("cpu  "));
        for keep in ["intr ", "ctxt 380532", "btime 1795455811", "processes 7037", "procs_running 1", "softirq "] {
            assert!(out.lines().any(|l| l.starts_with(keep)), "{keep}");
        }
        assert_eq!(out.lines().count(), HOST.lines().count() - 1);
    }

    #[test]
    fn container_usage_replaces_busy_time() {
        let usage = [CpuTicks { user: 100, system: 50 }];
        let out = render(HOST, &[0], Some(&usage));
        // host cpu0: 5724 0 1664 25855 47 0 12 15 0 0 -> used 7462, idle 25855
        let idle = 25855 + 7462 - 150;
        assert_eq!(cpu_lines(&out)[1], format!("cpu0 100 0 50 {idle} 0 0 0 0 0 0"));
        assert_eq!(cpu_lines(&out)[0], format!("cpu  100 0 50 {idle} 0 0 0 0 0 0"));
    }

    #[test]
    fn huge_counters_saturate() {
        // Found by the fuzzer (src/fuzz.rs): the aggregate and idle sums overflowed (a panic
        // in debug builds, wrapped nonsense in release).
        let host = "cpu  1 1 1 1 1 1 1 1 1 1\ncpu0 18446744073709551615 0 5 18446744073709551615 0 0 0 0 0 0\ncpu1 18446744073709551615 0 0 0 0 0 0 0 0 0\n";
        let out = render(host, &[0, 1], None);
        assert_eq!(cpu_lines(&out)[0], format!("cpu  {m} 0 5 {m} 0 0 0 0 0 0", m = u64::MAX));
        let usage = [CpuTicks { user: u64::MAX, system: u64::MAX }, CpuTicks::default()];
        let out = render(host, &[0, 1], Some(&usage));
        assert_eq!(cpu_lines(&out)[1], format!("cpu0 {m} 0 {m} {m} 0 0 0 0 0 0", m = u64::MAX));
    }

    #[test]
    fn distribute() {
        let per = [(2_000_000_000, 1_000_000_000), (4_000_000_000, 0)];
        let d = distribute_usage(&[0, 1], true, Some(&per), 0, 0);
        assert_eq!(d, vec![CpuTicks { user: 200, system: 100 }, CpuTicks { user: 400, system: 0 }]);
        let d = distribute_usage(&[0, 1], false, Some(&per), 3_010_000_000, 10_000_000);
        assert_eq!(d, vec![CpuTicks { user: 151, system: 1 }, CpuTicks { user: 150, system: 0 }]);
        let d = distribute_usage(&[1], true, None, 1_000_000_000, 0);
        assert_eq!(d, vec![CpuTicks { user: 100, system: 0 }]);
    }
}

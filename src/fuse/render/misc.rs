//! Small renderers: /proc/uptime, /proc/loadavg, /proc/swaps,
//! /proc/diskstats and /sys/devices/system/cpu/online.

/// /proc/uptime: `uptime idle\n` with two decimals, like the kernel.
/// `uptime_s`: the container's age. `busy_s`: cpu time the container used.
/// Idle is summed over the visible cpus as the kernel does for the host
/// (`ncpus * uptime - busy`, never negative). lxcfs uses `uptime - busy`,
/// which understates idle on multi-cpu containers.
pub fn uptime(uptime_s: f64, busy_s: f64, ncpus: usize) -> String {
    let up = uptime_s.max(0.0);
    let idle = (up * ncpus.max(1) as f64 - busy_s.max(0.0)).max(0.0);
    format!("{up:.2} {idle:.2}\n")
}

/// /proc/loadavg. The load averages are the host's (lxcfs keeps a per-cgroup
/// exponential average in a background thread; we deliberately do not).
/// The `running/total` field is replaced by the container's: total = its
/// cgroup's pids.current, running = min(host running, total) but at least 1
/// (the reader). The last pid field is kept. Without a pid count the host
/// text passes through.
pub fn loadavg(host: &str, pids: Option<u64>) -> String {
    let Some(total) = pids else { return host.to_string() };
    let fields: Vec<&str> = host.split_whitespace().collect();
    if fields.len() != 5 {
        return host.to_string();
    }
    let Some((running, _)) = fields[3].split_once('/') else { return host.to_string() };
    let running: u64 = running.parse().unwrap_or(1);
    let total = total.max(1);
    let running = running.min(total).max(1);
    format!("{} {} {} {running}/{total} {}\n", fields[0], fields[1], fields[2], fields[4])
}

/// /proc/swaps: the header only, unless the container is given swap (see
/// `meminfo::swap_kb`), then one `none virtual` entry like lxcfs.
pub fn swaps(host: &str, swap_total_kb: u64, swap_used_kb: u64) -> String {
    let header = host.lines().next().filter(|l| l.starts_with("Filename")).unwrap_or(
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority",
    );
    let mut out = format!("{header}\n");
    if swap_total_kb > 0 {
        out.push_str(&format!("{:<40}{:<8}\t{swap_total_kb}\t\t{swap_used_kb}\t\t0\n", "none", "virtual"));
    }
    out
}

/// /proc/diskstats passes through (the container cannot see the host's
/// block devices' names mapped to its own I/O; lxcfs's blkio-based version is
/// not attempted).
pub fn diskstats(host: &str) -> String {
    host.to_string()
}

/// /sys/devices/system/cpu/online: `0-N` for the n visible cpus.
pub fn cpu_online(n: usize) -> String {
    super::format_cpu_list(&(0..n.max(1)).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_format() {
        assert_eq!(uptime(100.0, 30.0, 2), "100.00 170.00\n");
        assert_eq!(uptime(1.234, 5.0, 1), "1.23 0.00\n");
        assert_eq!(uptime(-3.0, 0.0, 1), "0.00 0.00\n");
        let host = include_str!("../testdata/uptime");
        let parts: Vec<f64> = host.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let ours = uptime(parts[0], 0.0, 1);
        assert_eq!(ours.split_whitespace().count(), 2);
        assert_eq!(ours.split_whitespace().next(), host.split_whitespace().next());
    }

    #[test]
    fn loadavg_replaces_counts() {
        let host = include_str!("../testdata/loadavg");
        assert_eq!(host, "0.22 0.35 0.18 1/81 7038\n");
        assert_eq!(loadavg(host, Some(7)), "0.22 0.35 0.18 1/7 7038\n");
        assert_eq!(loadavg("1.00 2.00 3.00 12/900 5\n", Some(4)), "1.00 2.00 3.00 4/4 5\n");
        assert_eq!(loadavg(host, Some(0)), "0.22 0.35 0.18 1/1 7038\n");
        assert_eq!(loadavg(host, None), host);
    }

    #[test]
    fn swaps_header_only() {
        let host = include_str!("../testdata/swaps");
        assert_eq!(swaps(host, 0, 0), host);
        let out = swaps(host, 1024, 10);
        assert_eq!(out.lines().count(), 2);
        assert!(out.lines().nth(1).unwrap().starts_with("none "));
        assert!(out.ends_with("\t1024\t\t10\t\t0\n"));
    }

    #[test]
    fn online() {
        assert_eq!(cpu_online(1), "0\n");
        assert_eq!(cpu_online(2), "0-1\n");
        assert_eq!(cpu_online(0), "0\n");
        let host = include_str!("../testdata/diskstats");
        assert_eq!(diskstats(host), host);
    }
}

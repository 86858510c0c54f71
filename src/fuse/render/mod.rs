//! Pure renderers for the emulated /proc and /sys files.
//!
//! Every function here is a function of plain inputs (the host's text of the
//! file plus numbers read from the container's cgroup) and performs no I/O, so
//! the formats can be unit-tested against captured samples in `../testdata`.
//! The output must stay byte-compatible with the kernel's formats: `free`,
//! `top`, `ps`, `nproc`, glibc and JVMs parse these files.

pub mod cpuinfo;
pub mod meminfo;
pub mod misc;
pub mod stat;
pub mod sysinfo;

use crate::fuse::FuseError;

/// Clock ticks per second used by /proc/stat (USER_HZ, 100 on every Linux arch
/// that matters; glibc's sysconf(_SC_CLK_TCK) returns the same).
pub const USER_HZ: u64 = 100;

/// Nanoseconds to USER_HZ clock ticks.
pub fn ns_to_ticks(ns: u64) -> u64 {
    ns / (1_000_000_000 / USER_HZ)
}

/// Parses a kernel cpu list such as `0-3,8,10-11` (cpuset.cpus, online).
/// An empty (or whitespace-only) list yields an empty vector.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, FuseError> {
    let bad = || FuseError::Parse { what: "cpu list", value: text.trim().to_string() };
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if b < a || b - a > 1 << 16 {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().map_err(|_| bad())?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Formats cpu ids as a kernel cpu list (`0-2,5`), with a trailing newline.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out.push('\n');
    out
}

/// The physical cpus the container is shown: its cpuset (or all host cpus
/// when it has none), cut to the first `ceil(quota/period)` cpus when a CFS
/// quota is set (`quota_cpus` = quota/period, e.g. 1.5). Never empty when the
/// host list is not.
pub fn visible_cpus(host: &[usize], cpuset: Option<&[usize]>, quota_cpus: Option<f64>) -> Vec<usize> {
    let mut cpus: Vec<usize> = match cpuset {
        Some(set) if !set.is_empty() => set.to_vec(),
        _ => host.to_vec(),
    };
    if let Some(q) = quota_cpus.filter(|q| q.is_finite() && *q > 0.0) {
        let n = (q.ceil() as usize).max(1);
        cpus.truncate(n);
    }
    cpus
}

/// Host cpu ids appearing in a /proc/stat text (`cpuN` lines), sorted.
pub fn host_cpus_from_stat(stat: &str) -> Vec<usize> {
    let mut v: Vec<usize> = stat
        .lines()
        .filter_map(|l| l.strip_prefix("cpu"))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_roundtrip() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11\n");
        assert_eq!(parse_cpu_list("\n").unwrap(), Vec::<usize>::new());
        assert_eq!(format_cpu_list(&[0]), "0\n");
        assert_eq!(format_cpu_list(&[0, 1]), "0-1\n");
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        let e = parse_cpu_list("x-1").unwrap_err().to_string();
        assert!(e.contains("x-1"), "{e}");
    }

    #[test]
    fn visible_cpus_cpuset_and_quota() {
        let host = [0, 1];
        assert_eq!(visible_cpus(&host, None, None), vec![0, 1]);
        assert_eq!(visible_cpus(&host, Some(&[0]), None), vec![0]);
        // quota 100000/100000 on 2 host cpus -> 1 cpu
        assert_eq!(visible_cpus(&host, None, Some(1.0)), vec![0]);
        assert_eq!(visible_cpus(&host, None, Some(1.5)), vec![0, 1]);
        assert_eq!(visible_cpus(&host, None, Some(0.1)), vec![0]);
        assert_eq!(visible_cpus(&[0, 1, 2, 3], Some(&[2, 3]), Some(1.0)), vec![2]);
        assert_eq!(visible_cpus(&host, None, Some(8.0)), vec![0, 1]);
    }

    #[test]
    fn host_cpus_from_captured_stat() {
        let stat = include_str!("../testdata/stat");
        assert_eq!(host_cpus_from_stat(stat), vec![0, 1]);
        assert_eq!(ns_to_ticks(1_000_000_000), 100);
    }
}

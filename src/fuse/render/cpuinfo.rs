//! /proc/cpuinfo showing only the container's visible cpus, renumbered
//! 0..n-1 (like lxcfs). The text is split into blocks that start at each
//! `processor\t: N` line; a block is kept when N is visible. Lines before the
//! first processor line (arm64 preambles) are kept. Other fields (`siblings`,
//! `cpu cores`, `apicid`) are left as the host has them, as lxcfs does.
//! s390x's single-block format is not handled: it passes through.

/// `visible`: physical cpu ids, in the order they are to be numbered.
pub fn render(host: &str, visible: &[usize]) -> String {
    let mut out = String::with_capacity(host.len());
    let mut keeping = true; // preamble before the first processor line
    let mut next = 0usize;
    for line in host.split_inclusive('\n') {
        if let Some(cpu) = processor_id(line) {
            keeping = visible.contains(&cpu);
            if keeping {
                out.push_str(&format!("processor\t: {next}\n"));
                next += 1;
            }
            continue;
        }
        if keeping {
            out.push_str(line);
        }
    }
    out
}

fn processor_id(line: &str) -> Option<usize> {
    let (key, value) = line.split_once(':')?;
    if key.trim_end() != "processor" {
        return None;
    }
    value.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = include_str!("../testdata/cpuinfo");

    fn processors(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with("processor")).collect()
    }

    #[test]
    fn cpuset_zero_shows_exactly_one_processor() {
        let out = render(HOST, &[0]);
        assert_eq!(processors(&out), vec!["processor\t: 0"]);
        assert_eq!(out.matches("model name").count(), 1);
        assert!(out.ends_with("\n\n"), "block keeps its blank separator line");
    }

    #[test]
    fn second_cpu_is_renumbered() {
        let out = render(HOST, &[1]);
        assert_eq!(processors(&out), vec!["processor\t: 0"]);
        // the block is host cpu 1's: its apicid line is kept
        let host_block = HOST.split("\n\n").nth(1).unwrap();
        let apic = host_block.lines().find(|l| l.starts_with("apicid")).unwrap();
        assert!(out.contains(apic));
    }

    #[test]
    fn all_visible_is_identity() {
        assert_eq!(render(HOST, &[0, 1]), HOST);
    }

    #[test]
    fn many_cpus_synthetic() {
        let host: String = (0..8).map(|i| format!("processor\t: {i}\nflags\t\t: x{i}\n\n")).collect();
        let out = render(&host, &[2, 5, 7]);
        assert_eq!(processors(&out), vec!["processor\t: 0", "processor\t: 1", "processor\t: 2"]);
        assert!(out.contains("x2\n") && out.contains("x5\n") && out.contains("x7\n"));
        assert!(!out.contains("x0\n"));
    }

    #[test]
    fn arm64_preamble_kept() {
        let host = "Processor\t: AArch64\nprocessor\t: 0\nBogoMIPS\t: 50\n\nprocessor\t: 1\nBogoMIPS\t: 50\n\n";
        let out = render(host, &[1]);
        assert_eq!(out, "Processor\t: AArch64\nprocessor\t: 0\nBogoMIPS\t: 50\n\n");
    }
}

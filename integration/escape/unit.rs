//! Checks of the suite's own logic on made-up input (no engines needed).
use std::path::PathBuf;

use super::docs::{results_markdown, row, security_md_problems, readme_problems, README_HEADER};
use super::judge::{combine, idmap_verdict, judged_by, lease_verdict, Host};
use super::{Results, DIND_ALLCAPS, DIND_PRIVILEGED};

fn na_table(md: &str) -> String {
    md.lines().skip_while(|l| !l.starts_with("| not applicable here")).take_while(|l| l.starts_with('|')).collect::<Vec<_>>().join("\n")
}

/// The document checks, on a made-up run.
#[test]
fn document_checks_catch_changes() {
    let r = Results {
        rows: vec![
            row("init", "a", "BLOCKED"),
            row("exec", "a", "BLOCKED"),
            row("dind", "a", "BLOCKED"),
            row("init", "b", "HARMLESS"),
            row("init", "cve_2019_5736_x", "N/A"),
            row("host (after x)", "h", "BLOCKED"),
        ],
        dind_label: DIND_ALLCAPS.into(),
        errors: vec![],
        file: PathBuf::from("x"),
    };
    let md = results_markdown(&r, None);
    // the generated tables pass their own checks
    let sec = md.replace("(new attempt: say what it proves)", "proof \\| with a bar");
    assert_eq!(security_md_problems(&r, &sec), Vec::<String>::new(), "{sec}");
    assert!(sec.contains(&format!("| `a` | BLOCKED | BLOCKED | BLOCKED | {} |", judged_by("a"))), "{sec}");
    assert!(na_table(&sec).contains("| `cve_2019_5736_x` | init | the probe's word: never reached"), "{sec}");
    let readme = format!("# x\n\n## Security model\n\ntext\n\n{}\n\n## Next\n", md.lines().skip_while(|l| !l.starts_with(README_HEADER)).take(5).collect::<Vec<_>>().join("\n"));
    assert_eq!(readme_problems(&r, &readme), Vec::<String>::new(), "{readme}");
    assert!(readme.contains("| init | 3 | 1 | 1 | 1 | 0 |") && readme.contains("| dind (inner all-caps) | 1 | 1 | 0 | 0 | 0 |"), "{readme}");
    // a BLOCKED turned ALLOWED, a new attempt, a vanished one, another dind variant, an N/A gone
    let mut r2 = Results { rows: r.rows.clone(), dind_label: DIND_PRIVILEGED.into(), errors: vec![], file: PathBuf::from("x") };
    r2.rows[1].result = "ALLOWED".into();
    r2.rows.push(row("init", "c", "BLOCKED"));
    r2.rows.retain(|x| x.attempt != "b");
    r2.rows[3].result = "BLOCKED".into();
    let p = security_md_problems(&r2, &sec).join("\n");
    for want in [
        "`a` exec: SECURITY.md says BLOCKED, this run ALLOWED",
        "`c` (init BLOCKED, exec —, dind —) is missing",
        "lists `b`, which this run did not report",
        "dind column",
        "N/A table lists `cve_2019_5736_x` (init), not N/A",
        "summary `init`: attempts/BLOCKED/HARMLESS/N/A/ALLOWED 3/1/1/1/0 in SECURITY.md, 3/3/0/0/0",
    ] {
        assert!(p.contains(want), "missing {want:?} in:\n{p}");
    }
    // a changed "checked on the host" cell
    let p = security_md_problems(&r, &sec.replace(&format!("| {} |", judged_by("a")), "| nothing |")).join("\n");
    assert!(p.contains("`a`: SECURITY.md's \"checked on the host\" is \"nothing\""), "{p}");
    let p = readme_problems(&r2, &readme).join("\n");
    for want in ["`exec`: attempts/BLOCKED/HARMLESS/N/A/ALLOWED 1/1/0/0/0 in README.md, 1/0/0/0/1", "1 ALLOWED attempt(s) in mode `exec`", "mode `dind (inner all-caps)`"] {
        assert!(p.contains(want), "missing {want:?} in:\n{p}");
    }
    // an ALLOWED written into the README is refused even when it matches
    let md2 = results_markdown(&r2, None);
    let readme2 = format!("## Security model\n\n{}\n", md2.lines().skip_while(|l| !l.starts_with(README_HEADER)).take(5).collect::<Vec<_>>().join("\n"));
    assert!(readme_problems(&r2, &readme2).join("\n").contains("exec shows ALLOWED 1 (must be 0)"), "{readme2}");
}

#[test]
fn host_facts_outrank_the_probe() {
    let ch = || Host::Changed("x".into());
    assert_eq!(combine("BLOCKED", &[ch()]), "ALLOWED");
    assert_eq!(combine("HARMLESS", &[Host::Unchanged("x".into()), ch()]), "ALLOWED");
    assert_eq!(combine("N/A", &[Host::Absent("x".into()), ch()]), "ALLOWED");
    assert_eq!(combine("ALLOWED", &[Host::Absent("x".into())]), "ALLOWED");
    assert_eq!(combine("BLOCKED", &[Host::Absent("x".into())]), "N/A");
    assert_eq!(combine("N/A", &[Host::Present("x".into())]), "BLOCKED");
    assert_eq!(combine("HARMLESS", &[Host::Decides("BLOCKED", "x".into())]), "BLOCKED");
    assert_eq!(combine("BLOCKED", &[Host::Decides("ALLOWED", "x".into())]), "ALLOWED");
    assert_eq!(combine("ALLOWED", &[Host::Decides("BLOCKED", "x".into())]), "ALLOWED");
    assert_eq!(combine("HARMLESS", &[Host::Unchanged("x".into())]), "HARMLESS");
    assert_eq!(combine("N/A", &[]), "N/A");
}

#[test]
fn id_maps_are_exactly_one_range_of_the_pool() {
    let pool = (1 << 20, 1 << 28);
    assert_eq!(idmap_verdict("0 1048576 65536", "0 1048576 65536", pool).0, "BLOCKED");
    assert_eq!(idmap_verdict("         0    1114112      65536", "0 1114112 65536", pool).0, "BLOCKED");
    for (u, why) in [
        ("0 0 4294967295", "maps host id 0"),
        ("0 0 65536", "maps host id 0"),
        ("0 1048576 65536\n65536 0 1", "maps host id 0"),
        ("0 100000 65536", "below the pool"),
        ("0 1048576 65537", "not one line"),
        ("0 1048577 65536", "not one line"),
        ("1 1048576 65536", "not one line"),
        ("0 1048576 65536\n65536 1114112 65536", "not one line"),
        ("", "not one line"),
    ] {
        let (o, d) = idmap_verdict(u, "0 1048576 65536", pool);
        assert_eq!(o, "ALLOWED", "{u}: {d}");
        assert!(d.contains(why), "{u}: {d}");
    }
    assert_eq!(idmap_verdict("0 1048576 65536", "0 0 65536", pool).0, "ALLOWED");
}

#[test]
fn the_range_must_be_leased_to_the_container() {
    let dir = std::env::temp_dir().join(format!("nestrun-escape-lease-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("1"), "/run/docker/runtime-nested/moby/abc123\n").unwrap();
    let d = dir.to_str().unwrap();
    let pool = (1 << 20, 1 << 28);
    assert_eq!(lease_verdict("0 1114112 65536", pool, d, "abc123").0, "BLOCKED");
    let (o, why) = lease_verdict("0 1114112 65536", pool, d, "def456");
    assert_eq!(o, "ALLOWED", "{why}");
    assert!(why.contains("abc123"), "{why}");
    assert_eq!(lease_verdict("0 1048576 65536", pool, d, "abc123").0, "ALLOWED", "range 0 has no lease file");
    assert_eq!(lease_verdict("0 1114112 65536", pool, d, "").0, "ALLOWED");
    std::fs::remove_dir_all(&dir).unwrap();
}

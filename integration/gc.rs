//! Orphans (issue 19): a `--root` removed without `delete` (youki's contest suite deletes its
//! temp dir, an admin removes a state dir, an engine's state is wiped) leaves nothing behind.
//! The FUSE server of a container whose init and state are both gone tears it down itself;
//! `nestrun gc --force` reclaims the rest; and never touches a live container of any root.
//! Driven through the CLI directly (root, no engine).
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::badinput::{is_root, Env};
use crate::util::*;

macro_rules! need_root {
    ($name:expr) => {
        if !is_root() {
            crate::skip::skip("root", $name, "needs root (run scripts/test)");
            return;
        }
    };
}

/// The tests here run `gc --force`, which reclaims every orphan on the host: one at a time, so
/// one does not reclaim the orphans another is still looking at.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Everything nestrun made on the host for container `id` of `root`, as readable strings.
fn left(root: &Path, id: &str) -> Vec<String> {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut v: Vec<String> = Vec::new();
    v.extend(entries_with_prefix("/run/nestrun-mnt", &format!("{id}-")).iter().map(|p| format!("mount dir {}", p.display())));
    v.extend(mounts_containing(&format!("/run/nestrun-mnt/{id}-")).iter().map(|m| format!("mount {m}")));
    v.extend(leases_naming(&format!("{}/.nestrun/{id}", root.display())).iter().map(|p| format!("lease {}", p.display())));
    v.extend(cgroup_dirs(&format!("nestrun/{id}")).iter().map(|p| format!("cgroup {}", p.display())));
    v.extend(entries_with_prefix("/var/lib/nestrun/data", &format!("{id}-")).iter().map(|p| format!("data dir {}", p.display())));
    v.extend(fuse_server_pids(id).iter().map(|p| format!("fuse-serve pid {p}")));
    v.extend(pids_in_cgroup_of(&format!("/nestrun/{id}")).iter().map(|p| format!("container process {p}")));
    v
}

fn state(e: &Env, id: &str) -> Value {
    serde_json::from_str(e.cli(&["state", id]).ok().out()).unwrap()
}

fn running(e: &Env, tag: &str) -> String {
    let i = e.run_id(tag);
    e.create(&i).ok();
    e.cli(&["start", &i]).ok();
    i
}

fn stopped(e: &Env, tag: &str) -> String {
    let i = running(e, tag);
    e.cli(&["kill", &i, "KILL"]).ok();
    assert!(wait_for(10, || state(e, &i)["status"] == "stopped"), "{i} did not stop");
    i
}

fn created(e: &Env, tag: &str) -> String {
    let i = e.run_id(tag);
    e.create(&i).ok();
    i
}

/// A create SIGKILLed after its rootfs mounts (and never retried).
fn killed_in_create(e: &Env, tag: &str) -> String {
    let i = e.run_id(tag);
    let mut c = e.command(&["create", "--bundle", e.bundle.to_str().unwrap(), &i]);
    c.env("NESTRUN_FAULT_AT", "rootfs");
    let o = run_cmd(c, Duration::from_secs(60));
    assert_eq!(o.code, 128 + 9, "create with NESTRUN_FAULT_AT=rootfs should be killed: {o:?}");
    i
}

fn gc(e: &Env, force: bool) -> Value {
    let args: &[&str] = if force { &["gc", "--force", "--json"] } else { &["gc", "--json"] };
    serde_json::from_str(e.cli(args).ok().out()).unwrap()
}

/// Rows of a `gc --json` answer that name container `id` of `root`.
fn rows_of(v: &Value, root: &Path, id: &str) -> Vec<String> {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let who = format!("{id} in {}", root.display());
    v["orphans"].as_array().unwrap().iter().filter(|r| r["container"] == who.as_str()).map(|r| format!("{} {}", r["kind"], r["resource"])).collect()
}

#[test]
fn a_lost_root_leaves_nothing_after_the_server_and_gc() {
    need_root!("gc::a_lost_root_leaves_nothing_after_the_server_and_gc");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let e = Env::new("gc-lost");
    let root = std::fs::canonicalize(&e.root).unwrap();
    let (run, stop, made, killed) = (running(&e, "run"), stopped(&e, "stop"), created(&e, "made"), killed_in_create(&e, "kill"));
    for i in [&run, &stop, &made, &killed] {
        assert!(!left(&root, i).is_empty(), "{i}: nothing to find before the root is removed");
    }
    std::fs::remove_dir_all(&e.root).unwrap();

    // The stopped container's server sees its state dir go and tears down by itself; so does
    // the created one's (its init, never started, can never be: the server kills it first).
    for i in [&stop, &made] {
        assert!(wait_for(5, || left(&root, i).is_empty()), "the server of {i} did not clean up: {:?}", left(&root, i));
    }

    // The others wait for gc: the dry run lists each, and touches nothing.
    let dry = gc(&e, false);
    assert_eq!(dry["reclaimed"], false);
    for (i, kinds) in [(&run, &["process", "server", "mounts", "cgroup", "lease", "record"][..]), (&killed, &["mounts", "lease", "record"][..])] {
        let rows = rows_of(&dry, &root, i);
        for k in kinds {
            assert!(rows.iter().any(|r| r.starts_with(&format!("\"{k}\""))), "{i}: dry run lists no {k}: {rows:?}");
        }
        assert!(!left(&root, i).is_empty(), "{i}: the dry run reclaimed something");
    }
    let check: Value = serde_json::from_str(e.cli(&["check", "--json"]).out()).unwrap();
    let row = check.as_array().unwrap().iter().find(|r| r["item"] == "orphans").expect("an orphans row in check").clone();
    assert_eq!(row["ok"], false, "{row}");

    let done = gc(&e, true);
    assert_eq!(done["reclaimed"], true);
    assert!(!rows_of(&done, &root, &run).is_empty());
    for i in [&run, &stop, &made, &killed] {
        assert!(wait_for(5, || left(&root, i).is_empty()), "{i}: left after gc --force: {:?}", left(&root, i));
        assert!(rows_of(&gc(&e, false), &root, i).is_empty(), "{i}: still listed after gc --force");
    }
}

#[test]
fn gc_never_touches_live_containers_of_any_root() {
    need_root!("gc::gc_never_touches_live_containers_of_any_root");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (a, b) = (Env::new("gc-live-a"), Env::new("gc-live-b"));
    let mut live: Vec<(&Env, String)> = Vec::new();
    for (e, t) in [(&a, "a"), (&b, "b")] {
        live.push((e, running(e, &format!("run{t}"))));
        live.push((e, created(e, &format!("made{t}"))));
        live.push((e, stopped(e, &format!("stop{t}"))));
    }
    // An orphan beside them, so gc has something to do.
    let gone = Env::new("gc-live-gone");
    let orphan = created(&gone, "orphan");
    let gone_root = std::fs::canonicalize(&gone.root).unwrap();
    std::fs::remove_dir_all(&gone.root).unwrap();

    let before: Vec<(Value, Vec<String>)> = live.iter().map(|(e, i)| (state(e, i), left(&e.root, i))).collect();
    let dry = gc(&a, false);
    for (e, i) in &live {
        assert!(rows_of(&dry, &e.root, i).is_empty(), "{i}: a live container is listed: {:?}", rows_of(&dry, &e.root, i));
    }
    gc(&b, true);
    assert!(wait_for(5, || left(&gone_root, &orphan).is_empty()), "{orphan}: left {:?}", left(&gone_root, &orphan));
    for ((e, i), (st, traces)) in live.iter().zip(&before) {
        let now = state(e, i);
        assert_eq!((&now["status"], &now["pid"]), (&st["status"], &st["pid"]), "{i}: gc --force changed it");
        let mut t = left(&e.root, i);
        t.sort();
        let mut was = traces.clone();
        was.sort();
        assert_eq!(t, was, "{i}: gc --force changed what the host holds for it");
    }
    for (e, i) in &live {
        e.cli(&["delete", "--force", i]).ok();
        assert!(left(&e.root, i).is_empty(), "{i}: left after delete: {:?}", left(&e.root, i));
    }
}

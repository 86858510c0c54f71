//! `nestrun check`: its report of the host matches what the host has, and its exit code says
//! whether every required item is there.
use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn check_reports_this_hosts_features() {
    if !nix::unistd::geteuid().is_root() {
        crate::skip::skip("root", "check_reports_this_hosts_features", "needs root (run scripts/test)");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_nestrun")).args(["check", "--json"]).output().unwrap();
    let items: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("check --json: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let item = |name: &str| items.iter().find(|i| i["item"] == name).unwrap_or_else(|| panic!("no {name:?} in {items:?}")).clone();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cgroup_mounts: Vec<&str> = mountinfo.lines().filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 ")).collect();
    let v1 = cgroup_mounts.iter().any(|l| l.contains(" - cgroup "));
    let dynmods = cgroup_mounts.iter().any(|l| l.rsplit(' ').next().is_some_and(|o| o.split(',').any(|o| o == "favordynmods")));
    assert_eq!(item("fast cgroup moves")["ok"], v1 || dynmods, "{:?}", item("fast cgroup moves"));
    let uring = std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring").unwrap_or_default();
    assert_eq!(item("fuse over io_uring")["ok"], uring.trim() == "Y");
    assert_eq!(item("fuse")["ok"], Path::new("/dev/fuse").exists());
    assert_eq!(item("cgroups")["ok"], !cgroup_mounts.is_empty());
    let plain = Command::new(env!("CARGO_BIN_EXE_nestrun")).args(["check", "--json"]).env("NESTRUN_MODE", "plain").output().unwrap();
    let plain: Vec<Value> = serde_json::from_slice(&plain.stdout).unwrap();
    let mode = plain.iter().find(|i| i["item"] == "NESTRUN_MODE").unwrap();
    assert_eq!(mode["ok"], false, "NESTRUN_MODE=plain is shown as a warning: {mode:?}");
    assert_eq!(item("NESTRUN_MODE")["ok"], std::env::var("NESTRUN_MODE").map_or(true, |m| m != "plain"));
    let off = Command::new(env!("CARGO_BIN_EXE_nestrun")).args(["check", "--json"]).env("NESTRUN_SUPERVISOR", "off").output().unwrap();
    let off: Vec<Value> = serde_json::from_slice(&off.stdout).unwrap();
    let sv = off.iter().find(|i| i["item"] == "NESTRUN_SUPERVISOR").unwrap();
    assert_eq!(sv["ok"], false, "NESTRUN_SUPERVISOR=off is shown as a warning: {sv:?}");
    let required_ok = items.iter().filter(|i| i["required"] == true).all(|i| i["ok"] == true);
    assert_eq!(out.status.code(), Some(if required_ok { 0 } else { 1 }), "{items:?}");
}

//! Docker arguments for the test engines, shared by the `integration` and `escape` test binaries.

use std::process::Command;

/// Adds `args` to `c`. By hand, beside someone else's test dockerd, `NESTRUN_TEST_DOCKER_RUNTIME`
/// names another runtime registered in it (its daemon.json, reloaded with SIGHUP) to stand for
/// `--runtime nested`.
pub fn add_args(c: &mut Command, args: &[&str]) {
    let other = std::env::var("NESTRUN_TEST_DOCKER_RUNTIME").ok();
    let mut prev = "";
    for a in args {
        c.arg(match other.as_deref() {
            Some(o) if *a == "nested" && prev == "--runtime" => o,
            _ => a,
        });
        prev = a;
    }
}

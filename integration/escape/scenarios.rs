//! The scenarios: the probe as a container's command (`init`), as a `docker exec`'d process
//! (`exec`, with the CVE-2019-5736 race) and in an inner `docker run --privileged` of a DinD
//! container (`dind`), each probe run judged on the host (window.rs, judge.rs).
use std::fs;
use std::process::Output;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{d, host, judge, name, ok, parse, run, window, Container, Ctx, Row, Scenario, BUSYBOX, DIND, DIND_ALLCAPS, DIND_PRIVILEGED, MEMORY};

/// Repeatedly `docker exec <c> true` until the time is up; returns how many succeeded.
fn exec_storm(container: &str, until: Instant) -> usize {
    let mut n = 0;
    while Instant::now() < until {
        if run(d(&["exec", container, "true"])).status.success() {
            n += 1;
        }
    }
    n
}

fn container_cgroup(container: &str) -> String {
    let pid = ok(d(&["inspect", "-f", "{{.State.Pid}}", container])).trim().to_string();
    fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

fn check_memory_limit(container_cg: &str, want: u64, rows: &mut Vec<Row>) {
    match host::cgroup_file(container_cg, "memory", "memory.limit_in_bytes", Some("memory.max")) {
        Some(f) => {
            let v = fs::read_to_string(&f).unwrap_or_default();
            rows.push(Row::host("host_memory_limit_as_docker_set", v.trim() == want.to_string(), &format!("{} = {} (docker: {want})", f.display(), v.trim())));
        }
        None => rows.push(Row::host("host_memory_limit_as_docker_set", false, "the container's memory cgroup was not found on the host")),
    }
}

/// What a probe command produced.
struct ProbeOut {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn from_output(o: Output) -> ProbeOut {
    ProbeOut { ok: o.status.success(), stdout: String::from_utf8_lossy(&o.stdout).into(), stderr: String::from_utf8_lossy(&o.stderr).into() }
}

/// One `probe suite <mode>` run, judged on the host. Holds the host lock from before the
/// probe starts until it has ended; `start` launches it and returns a thread that yields its
/// output. `container`: the container whose cgroup the probe's limits belong to.
fn probe_run(ctx: &Ctx, mode: &str, container: &str, start: impl FnOnce() -> JoinHandle<ProbeOut>) -> (ProbeOut, Vec<Row>, Vec<String>) {
    let _lock = host::lock();
    let h = start();
    // after start(): the init scenario's container only runs from there
    let cg = container_cgroup(container);
    let findings = window::window(mode, &ctx.plants.lock().unwrap(), ctx.exe, &cg, &|| h.is_finished());
    let out = h.join().expect("probe thread");
    let mut rows = parse(mode, &out.stdout);
    let mut plants = ctx.plants.lock().unwrap();
    let seen = judge::Seen { hostns: &ctx.hostns, canary: plants.canary_alive(mode), container_id: ok(d(&["inspect", "-f", "{{.Id}}", container])).trim().to_string() };
    judge::apply(&mut rows, &findings, &plants, &seen);
    let mut errors = findings.errors;
    for l in out.stdout.lines().filter(|l| !l.starts_with("ATTEMPT ")) {
        if plants.tokens().iter().any(|t| l.contains(t)) {
            errors.push(format!("{mode}: a host token in the probe's output: {l}"));
        }
    }
    (out, rows, errors)
}

/// The probe as a `docker exec`'d process (with a CVE-2019-5736 race against repeated execs) and
/// as the container's own command.
pub fn init_and_exec(ctx: &Ctx) -> Scenario {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    // The probe comes in as a read-only bind (`docker cp` into a running system container
    // fails by design: see README, Known gaps).
    let vol = format!("{}:/probe.d:ro", ctx.dir.display());

    // exec mode: a long-running container, the probe joins it with docker exec.
    let ex = Container(name("exec"));
    ok(d(&["run", "-d", "--runtime", "nested", "-m", "256m", "-v", &vol, "--name", &ex.0, BUSYBOX, "sleep", "600"]));
    let c = ex.0.clone();
    let (out, r, e) = probe_run(ctx, "exec", &ex.0, move || std::thread::spawn(move || from_output(run(d(&["exec", &c, "/probe.d/probe", "suite", "exec"])))));
    assert!(out.ok, "docker exec probe failed: {}\n{}", out.stderr, out.stdout);
    rows.extend(r);
    errors.extend(e);
    // CVE-2019-5736: the probe watches /proc/*/exe while the runtime joins with docker exec.
    let racer = {
        let c = ex.0.clone();
        std::thread::spawn(move || ok(d(&["exec", &c, "/probe.d/probe", "race", "8"])))
    };
    std::thread::sleep(Duration::from_millis(500));
    let n = exec_storm(&ex.0, Instant::now() + Duration::from_secs(7));
    println!("exec race: {n} docker execs during the race");
    rows.extend(parse("exec", &racer.join().unwrap()));
    check_memory_limit(&container_cgroup(&ex.0), MEMORY, &mut rows);

    // init mode: the probe is the container's own command (race first, while the test execs);
    // the container stays up afterwards so its host cgroup can still be checked.
    let init = Container(name("init"));
    let script = "/probe.d/probe race 8; /probe.d/probe suite init; echo PROBE-END rc=$?; sleep 600";
    ok(d(&["create", "--runtime", "nested", "-m", "256m", "-v", &vol, "--name", &init.0, BUSYBOX, "sh", "-c", script]));
    let c = init.0.clone();
    let (out, r, e) = probe_run(ctx, "init", &init.0, move || {
        ok(d(&["start", &c]));
        let n = exec_storm(&c, Instant::now() + Duration::from_secs(8));
        println!("init race: {n} docker execs during the race");
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let out = ok(d(&["logs", &c]));
                // A line of its own: the kill_host_pids attempt quotes pid 1's command line,
                // which names PROBE-END too.
                if out.lines().any(|l| l.starts_with("PROBE-END")) || Instant::now() > deadline {
                    return ProbeOut { ok: out.lines().any(|l| l == "PROBE-END rc=0"), stdout: out, stderr: String::new() };
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    });
    assert!(out.ok, "probe did not finish; output:\n{}", out.stdout);
    rows.extend(r);
    errors.extend(e);
    check_memory_limit(&container_cgroup(&init.0), MEMORY, &mut rows);
    Scenario { rows, errors, dind_label: None }
}

/// The probe inside an inner `docker run --privileged` (or its closest equivalent) of a DinD
/// container.
pub fn dind(ctx: &Ctx) -> Scenario {
    let dind = Container(name("dind"));
    let vol = format!("{}:/probe.d:ro", ctx.dir.display());
    ok(d(&["run", "-d", "--runtime", "nested", "-m", "1g", "-v", &vol, "--name", &dind.0, DIND]));
    let w = run(d(&["exec", &dind.0, "dind-wait"]));
    assert!(w.status.success(), "inner dockerd did not come up: {}", String::from_utf8_lossy(&w.stderr));
    // `--privileged` asks for every capability the kernel knows; when the host runtime itself
    // lacks one (CAP_SYS_RESOURCE in some sandboxes) the outer container cannot have it and the
    // inner runc fails with "unable to apply caps". Then the closest equivalent is used.
    let inner = |opts: &[&str]| {
        let mut a: Vec<String> = ["exec", &dind.0, "docker", "run", "--rm"].iter().map(|s| s.to_string()).collect();
        a.extend(opts.iter().map(|s| s.to_string()));
        a.extend(["-v", "/probe.d:/probe.d:ro", "busybox", "/probe.d/probe", "suite", "dind"].iter().map(|s| s.to_string()));
        probe_run(ctx, "dind", &dind.0, move || std::thread::spawn(move || from_output(run(d(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>())))))
    };
    let mut res = inner(&["--privileged"]);
    let mut label = DIND_PRIVILEGED;
    if !res.0.ok && res.0.stderr.contains("apply caps") {
        println!("NOTE: inner --privileged failed (the outer container lacks a capability the host runtime lacks); using cap-add ALL minus SYS_RESOURCE, all devices, unconfined seccomp/apparmor/systempaths");
        label = DIND_ALLCAPS;
        res = inner(&[
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--device-cgroup-rule", "a *:* rwm", "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined", "--security-opt", "label=disable",
        ]);
    }
    let (out, mut rows, errors) = res;
    assert!(out.ok, "inner docker run failed: {}", out.stderr);
    check_memory_limit(&container_cgroup(&dind.0), 1 << 30, &mut rows);
    Scenario { rows, errors, dind_label: Some(label) }
}


//! dockerd with `--runtime nested`: the everyday docker CLI verbs.
use std::time::Duration;

use crate::util::*;

fn run_rm(args: &[&str]) -> Out {
    let mut a = vec!["run", "--rm", "--runtime", "nested"];
    a.extend_from_slice(args);
    docker(&a)
}

#[test]
fn docker_run_echo() {
    need_engines!("docker_run_echo");
    let o = run_rm(&[BUSYBOX, "echo", "hi"]).ok();
    assert_eq!(o.stdout, "hi\n", "stderr: {}", o.stderr);
}

#[test]
fn docker_run_exit_code_propagates() {
    need_engines!("docker_run_exit_code_propagates");
    let o = run_rm(&[BUSYBOX, "sh", "-c", "exit 7"]);
    assert_eq!(o.code, 7, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
}

#[test]
fn docker_run_tty() {
    need_engines!("docker_run_tty");
    // -t without -i: the container gets a pty even though our stdin is not a terminal.
    let o = run_rm(&["-t", BUSYBOX, "sh", "-c", "tty; echo cols=$(stty size)"]).ok();
    assert!(o.stdout.contains("/dev/pts/0"), "tty should print /dev/pts/0, got {:?} (stderr: {})", o.stdout, o.stderr);
    assert!(o.stdout.contains("\r\n"), "a tty turns \\n into \\r\\n, got {:?}", o.stdout);
}

#[test]
fn docker_exec_and_exec_tty() {
    need_engines!("docker_exec_and_exec_tty");
    let c = Ctr::sleeper("exec");
    assert_eq!(c.exec(&["echo", "inside"]).ok().out(), "inside");
    assert_eq!(c.sh("exit 3").code, 3, "exec exit code should propagate");
    // exec -t: a pty for the exec'd process
    let o = docker(&["exec", "-t", &c.name, "tty"]).ok();
    assert!(o.stdout.contains("/dev/pts/"), "exec -t: tty printed {:?} (stderr {})", o.stdout, o.stderr);
    // exec -u
    assert_eq!(docker(&["exec", "-u", "1000", &c.name, "id", "-u"]).ok().out(), "1000");
}

#[test]
fn docker_top_and_stats() {
    need_engines!("docker_top_and_stats");
    let c = Ctr::sleeper("top");
    let o = docker(&["top", &c.name]).ok();
    assert!(o.stdout.contains("sleep 100000"), "docker top should list the sleep: {}", o.stdout);
    let o = docker(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &c.name]).ok();
    let usage = o.out().split('/').next().unwrap_or("").trim().to_string();
    let number: f64 = usage.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse().unwrap_or(0.0);
    assert!(number > 0.0, "docker stats MEM USAGE should be non-zero, got {:?} (stderr {})", o.stdout, o.stderr);
}

#[test]
fn docker_pause_unpause() {
    need_engines!("docker_pause_unpause");
    let c = Ctr::sleeper("pause");
    docker(&["pause", &c.name]).ok();
    assert_eq!(c.inspect("{{.State.Status}}"), "paused");
    let o = c.exec(&["true"]);
    assert!(o.code != 0, "exec in a paused container should fail: {o:?}");
    docker(&["unpause", &c.name]).ok();
    assert_eq!(c.inspect("{{.State.Status}}"), "running");
    c.exec(&["true"]).ok();
}

#[test]
fn docker_update_memory() {
    need_engines!("docker_update_memory");
    let c = Ctr::sleeper("update");
    docker(&["update", "--memory", "64m", "--memory-swap", "128m", &c.name]).ok();
    // cgroup namespace: the container sees its own cgroup at the mount root
    let o = c.exec(&["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]).ok();
    assert_eq!(o.out(), (64u64 << 20).to_string(), "memory limit seen inside after docker update");
    let id = c.id();
    let host = std::fs::read_to_string(format!("/sys/fs/cgroup/memory/docker/{id}/memory.limit_in_bytes")).unwrap_or_default();
    assert_eq!(host.trim(), (64u64 << 20).to_string(), "memory limit on the host cgroup /docker/{id}");
}

#[test]
fn docker_run_memory_limit() {
    need_engines!("docker_run_memory_limit");
    let o = run_rm(&["-m", "48m", BUSYBOX, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]).ok();
    assert_eq!(o.out(), (48u64 << 20).to_string());
}

#[test]
fn docker_stop_term_then_kill() {
    need_engines!("docker_stop_term_then_kill");
    // Traps TERM: stops quickly, exit code from the trap.
    let fast = Ctr::start("stop-trap", &[BUSYBOX, "sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"]);
    let o = docker(&["stop", "-t", "10", &fast.name]).ok();
    assert!(o.elapsed < Duration::from_secs(5), "a container that handles SIGTERM took {:?} to stop", o.elapsed);
    assert_eq!(fast.inspect("{{.State.ExitCode}}"), "42", "exit code of the TERM trap");
    // Ignores TERM: docker stop waits -t seconds, then SIGKILL.
    let slow = Ctr::start("stop-ignore", &[BUSYBOX, "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]);
    let o = docker(&["stop", "-t", "2", &slow.name]).ok();
    assert!(o.elapsed >= Duration::from_millis(1900), "SIGTERM-ignoring container stopped after {:?}, before the 2 s timeout", o.elapsed);
    assert!(o.elapsed < Duration::from_secs(10), "SIGKILL after the timeout should end it quickly, took {:?}", o.elapsed);
    assert_eq!(slow.inspect("{{.State.ExitCode}}"), "137", "killed by SIGKILL");
    assert_eq!(slow.inspect("{{.State.Running}}"), "false");
}

#[test]
fn docker_restart() {
    need_engines!("docker_restart");
    let c = Ctr::sleeper("restart");
    let pid1 = c.pid();
    c.sh("echo kept > /marker").ok();
    docker(&["restart", "-t", "1", &c.name]).ok();
    assert_eq!(c.inspect("{{.State.Running}}"), "true");
    let pid2 = c.pid();
    assert_ne!(pid1, pid2, "restart should give a new init process");
    assert_eq!(c.exec(&["cat", "/marker"]).ok().out(), "kept", "the container's writable layer survives restart");
    // also stop + start
    docker(&["stop", "-t", "1", &c.name]).ok();
    docker(&["start", &c.name]).ok();
    c.exec(&["true"]).ok();
}

#[test]
fn docker_logs() {
    need_engines!("docker_logs");
    let c = Ctr::start("logs", &[BUSYBOX, "sh", "-c", "echo to-stdout; echo to-stderr >&2; sleep 100000"]);
    let mut last = None;
    let ok = wait_for(20, || {
        let o = docker(&["logs", &c.name]);
        let done = o.stdout.contains("to-stdout") && o.stderr.contains("to-stderr");
        last = Some(o);
        done
    });
    assert!(ok, "docker logs should show both streams: {:?}", last);
}

#[test]
fn docker_run_user_workdir_env() {
    need_engines!("docker_run_user_workdir_env");
    let o = run_rm(&["-u", "1000:1000", "-w", "/tmp", "-e", "FOO=bar", BUSYBOX, "sh", "-c", "echo $(id -u):$(id -g) $(pwd) $FOO"]).ok();
    assert_eq!(o.out(), "1000:1000 /tmp bar");
}

/// The container's processes start with no signal ignored, as under runc (Rust programs, like
/// nestrun, ignore SIGPIPE and an ignored signal survives execve): `yes | head -1` ends quietly.
#[test]
fn container_processes_start_with_default_signal_dispositions() {
    need_engines!("container_processes_start_with_default_signal_dispositions");
    let script = "grep SigIgn /proc/self/status; yes | head -1 >/dev/null";
    let runc = docker(&["run", "--rm", "--runtime", "runc", BUSYBOX, "sh", "-c", script]).ok();
    let nested = run_rm(&[BUSYBOX, "sh", "-c", script]).ok();
    assert_eq!(nested.out(), runc.out(), "init's ignored signals differ from runc's");
    assert!(nested.out().ends_with("0000000000000000") && nested.stderr.is_empty(), "{nested:?}");
    let c = Ctr::sleeper("sigign");
    let e = c.sh(script).ok();
    assert_eq!(e.out(), runc.out(), "docker exec's ignored signals differ from runc's init: {e:?}");
    assert!(e.stderr.is_empty(), "{e:?}");
}

/// An image of several layers (built on the host, FROM the busybox image): nestrun rebuilds the
/// rootfs overlay from ID-mapped copies of every lower layer, so each layer's files, a file
/// deleted by a later layer (whiteout), non-root owners and mode bits must show as in the image,
/// and a file from a lower layer can be written (copy-up).
#[test]
fn multi_layer_image_keeps_every_layer() {
    need_engines!("multi_layer_image_keeps_every_layer");
    let dir = tempdir("layers");
    let dockerfile = format!(
        "FROM {BUSYBOX}\n\
         RUN echo one > /a && mkdir /d && echo keep > /d/k\n\
         RUN echo two > /b && rm /a\n\
         RUN echo three > /c && chown 1000:1001 /c && chmod 4755 /c\n"
    );
    std::fs::write(dir.path.join("Dockerfile"), dockerfile).unwrap();
    let tag = format!("{}:latest", unique("layers").to_lowercase());
    let mut build = docker_cmd(&["build", "-q", "-t", &tag, dir.path.to_str().unwrap()]);
    build.env("DOCKER_BUILDKIT", "0");
    run_cmd(build, Duration::from_secs(300)).ok();
    let layers = docker(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", &tag]).ok().out().parse::<usize>().unwrap_or(0);
    let o = run_rm(&[&tag, "sh", "-c", "test ! -e /a && cat /b /c /d/k && stat -c '%u:%g %a' /c && echo more >> /b && cat /b"]);
    docker(&["rmi", "-f", &tag]);
    assert!(layers >= 4, "the image should have at least 4 layers, has {layers}");
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "two\nthree\nkeep\n1000:1001 4755\ntwo\nmore\n", "stderr: {}", o.stderr);
}

/// `docker cp` and a running system container: the engine's overlay shares its upper dir with
/// nestrun's (ID-mapped) one, so nestrun covers the engine's rootfs path with a read-only view
/// of its own. Copying out reads what the container wrote; copying in fails loudly instead of
/// landing as host root (shown as nobody inside) or hitting ESTALE. Nothing stays mounted.
#[test]
fn docker_cp_out_reads_the_container_and_cp_in_fails_loudly() {
    need_engines!("docker_cp_out_reads_the_container_and_cp_in_fails_loudly");
    let c = Ctr::sleeper("cp");
    c.sh("mkdir -p /root/out && echo made-inside > /root/out/f && chmod 600 /root/out/f").ok();
    let dir = tempdir("cp");
    let out = dir.path.join("out");
    docker(&["cp", &format!("{}:/root/out", c.name), out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(out.join("f")).unwrap(), "made-inside\n");
    let src = dir.path.join("in");
    std::fs::write(&src, "from-host\n").unwrap();
    let o = docker(&["cp", src.to_str().unwrap(), &format!("{}:/root/in", c.name)]);
    assert_ne!(o.code, 0, "docker cp into a running system container must fail, not write as host root: {o:?}");
    assert!(o.stderr.contains("read-only file system"), "{o:?}");
    assert!(c.exec(&["cat", "/root/in"]).code != 0, "nothing was written");
    let merged = c.inspect("{{.GraphDriver.Data.MergedDir}}");
    drop(c);
    assert!(mounts_containing(&merged).is_empty(), "the cover of {merged} is gone with the container");
}

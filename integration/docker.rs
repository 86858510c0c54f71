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

/// `docker cp` and a running system container: nestrun binds an id-shifting view of the
/// container's own overlay over the engine's rootfs path (served by the container's FUSE
/// server), so a copy in lands in the container's range exactly as under runc and a copy out
/// reads what the container sees. Each step runs against a runc container too, and the views
/// are compared. A symlink the container plants towards a host path reaches the container's
/// own file, never the host's. Nothing stays mounted.
#[test]
fn docker_cp_in_and_out_keeps_ownership_as_under_runc() {
    use std::os::unix::fs::{chown, symlink, PermissionsExt};
    need_engines!("docker_cp_in_and_out_keeps_ownership_as_under_runc");
    let dir = tempdir("cp");
    // A tree as tar carries it: owners 0 and 1000, modes incl. setuid, a symlink, a hard link,
    // an empty dir, a 2 MiB file (several FUSE writes).
    let t = dir.path.join("tree");
    std::fs::create_dir_all(t.join("d/empty")).unwrap();
    std::fs::write(t.join("f"), "from-host\n").unwrap();
    std::fs::write(t.join("exe"), "#!/bin/sh\n").unwrap();
    std::fs::write(t.join("d/g"), "owned by 1000\n").unwrap();
    std::fs::write(t.join("big"), (0..2 << 20).map(|i: u32| (i * 7 % 251) as u8).collect::<Vec<u8>>()).unwrap();
    std::fs::hard_link(t.join("f"), t.join("hard")).unwrap();
    symlink("f", t.join("l")).unwrap();
    for (p, mode) in [("", 0o755), ("f", 0o644), ("exe", 0o4755), ("d", 0o2750), ("d/g", 0o600), ("d/empty", 0o700), ("big", 0o640)] {
        std::fs::set_permissions(t.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for p in ["d", "d/g", "d/empty"] {
        chown(t.join(p), Some(1000), Some(1000)).unwrap();
    }
    let nested = Ctr::sleeper("cp");
    let runc = Ctr { name: unique("cp-runc") };
    docker(&["run", "-d", "--runtime", "runc", "--name", &runc.name, BUSYBOX, "sleep", "100000"]).ok();
    let listing = "cd /dst && find . | sort | while read p; do stat -c '%n %u %g %a %s %F %h' \"$p\"; done; \
                   find . -type f | sort | xargs md5sum; find . -type l | sort | xargs -n1 readlink";
    // As an archive on stdin: the engine keeps the owners in it (the CLI's own archive of a
    // host dir says root for every file).
    let tar = dir.path.join("tree.tar");
    run_cmd(sh_in(&t, &format!("tar --numeric-owner -cf {} .", tar.display())), Duration::from_secs(30)).ok();
    let mut views = Vec::new();
    for c in [&nested, &runc] {
        c.exec(&["mkdir", "/dst"]).ok();
        cp_archive(&tar, &format!("{}:/dst", c.name)).ok();
        views.push(c.sh(listing).ok().stdout);
    }
    assert_eq!(views[0], views[1], "the nested container sees the copy exactly as runc's does");
    assert!(views[0].contains("./d/g 1000 1000 600 14 regular file 1"), "{}", views[0]);
    assert!(views[0].contains("./exe 0 0 4755 "), "{}", views[0]);
    assert!(views[0].contains("./f 0 0 644 10 regular file 2"), "{}", views[0]);
    // Copy out, as the engine's archive (owners as it reads them) and extracted by the CLI.
    let outs: Vec<_> = [&nested, &runc]
        .iter()
        .map(|c| {
            let mut a = sh_in(&dir.path, r#"/usr/bin/docker cp "$1" - | tar -tv --numeric-owner | awk '{ $4 = ""; $5 = ""; print }' | sort"#);
            a.arg("sh").arg(format!("{}:/dst", c.name)).env("DOCKER_HOST", docker_host());
            let archive = run_cmd(a, Duration::from_secs(60)).ok().stdout;
            let out = dir.path.join(format!("out-{}", c.name));
            docker(&["cp", "-a", &format!("{}:/dst", c.name), out.to_str().unwrap()]).ok();
            let tree = run_cmd(sh_in(&out, "find . | sort | while read p; do stat -c '%n %u %g %a %s %F %h' \"$p\"; done; find . -type f | sort | xargs md5sum"), Duration::from_secs(30)).ok().stdout;
            (archive, tree)
        })
        .collect();
    assert_eq!(outs[0], outs[1], "docker cp out of the nested container gives what runc's gives");
    assert!(outs[0].0.contains("-rw------- 1000/1000 14   dst/d/g"), "{}", outs[0].0);
    assert!(outs[0].1.contains("./d/g 0 0 600 14 regular file 1"), "{}", outs[0].1);
    // Writes of the container are what a copy out reads; a file the container deleted can be
    // copied in again (no ESTALE); /root stays the container root's.
    let new = dir.path.join("g");
    std::fs::write(&new, "replaced\n").unwrap();
    nested.sh("echo exec-wrote > /dst/w && rm /dst/d/g").ok();
    docker(&["cp", new.to_str().unwrap(), &format!("{}:/dst/d/g", nested.name)]).ok();
    docker(&["cp", new.to_str().unwrap(), &format!("{}:/root/in", nested.name)]).ok();
    assert_eq!(nested.sh("cat /dst/d/g /root/in; stat -c '%u %g' /root; stat -c '%u %g %a' /root/in; ls /root").ok().stdout, "replaced\nreplaced\n0 0\n0 0 644\nin\n");
    let w = dir.path.join("w");
    docker(&["cp", &format!("{}:/dst/w", nested.name), w.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(&w).unwrap(), "exec-wrote\n");
    // Ids outside the range and device nodes cannot be written: the copy fails, loudly.
    let odd = dir.path.join("odd");
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("x"), "x").unwrap();
    chown(odd.join("x"), Some(70000), Some(70000)).unwrap();
    let odd_tar = dir.path.join("odd.tar");
    run_cmd(sh_in(&odd, &format!("tar --numeric-owner -cf {} x", odd_tar.display())), Duration::from_secs(30)).ok();
    assert_ne!(cp_archive(&odd_tar, &format!("{}:/dst", nested.name)).code, 0, "uid 70000 is outside the range");
    let devdir = dir.path.join("devs");
    std::fs::create_dir(&devdir).unwrap();
    nix::sys::stat::mknod(&devdir.join("null"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::from_bits_truncate(0o666), nix::sys::stat::makedev(1, 3)).unwrap();
    assert_ne!(docker(&["cp", devdir.to_str().unwrap(), &format!("{}:/devs", nested.name)]).code, 0);
    assert_ne!(nested.exec(&["test", "-c", "/devs/null"]).code, 0, "no device node made");
    // Symlinks towards host paths lead to the container's own files.
    let tag = unique("cp-escape");
    let marker = std::path::PathBuf::from(format!("/etc/{tag}-marker"));
    std::fs::write(&marker, "host-secret\n").unwrap();
    nested.sh(&format!("ln -s /etc /dst/etc && ln -s {} /dst/mk", marker.display())).ok();
    let leaked = dir.path.join("leaked");
    let o = docker(&["cp", &format!("{}:/dst/etc/{tag}-marker", nested.name), leaked.to_str().unwrap()]);
    let read = std::fs::read_to_string(&leaked).unwrap_or_default();
    docker(&["cp", new.to_str().unwrap(), &format!("{}:/dst/etc/{tag}-planted", nested.name)]);
    docker(&["cp", new.to_str().unwrap(), &format!("{}:/dst/mk", nested.name)]);
    let host_marker = std::fs::read_to_string(&marker).unwrap();
    let planted = std::path::Path::new(&format!("/etc/{tag}-planted")).exists();
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(format!("/etc/{tag}-planted"));
    assert!(!read.contains("host-secret"), "docker cp read the host's file through a symlink: {o:?}");
    assert_eq!(host_marker, "host-secret\n", "docker cp wrote the host's file through a symlink");
    assert!(!planted, "docker cp made a file in the host's /etc");
    let merged = nested.inspect("{{.GraphDriver.Data.MergedDir}}");
    drop(nested);
    assert!(mounts_containing(&merged).is_empty(), "the covers of {merged} are gone with the container");
}

/// `docker cp - dest < tar`.
fn cp_archive(tar: &std::path::Path, dest: &str) -> Out {
    let mut c = sh_in(std::path::Path::new("/"), r#"/usr/bin/docker cp - "$1" < "$2""#);
    c.arg("sh").arg(dest).arg(tar).env("DOCKER_HOST", docker_host());
    run_cmd(c, Duration::from_secs(120))
}

/// `sh -c script` run in `dir` on the host.
fn sh_in(dir: &std::path::Path, script: &str) -> std::process::Command {
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg(script).current_dir(dir);
    c
}

//! The engine's layer file system runs full: a dockerd of this test's own keeps its data root
//! (layers, upper dirs and nestrun's data dirs beside them) on a 384 MiB ext4 without reserved
//! blocks. A nested container fills it through its /var/lib/docker; the container keeps
//! running, a nested container created before the disk ran full fails to start with one
//! clear "no space left on device" naming the path, and
//! `docker rm -f` gives every byte back and leaves nothing.
use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DATA: &str = "/var/lib/nestrun-test-full";
const RUNDIR: &str = "/run/nestrun-test-full";

/// The small file system and the private containerd + dockerd on it; all gone on drop.
struct SmallDocker {
    image: PathBuf,
}

fn script(name: &str, verb: &str) -> Command {
    let mut c = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name));
    c.arg(verb)
        .env("NESTRUN_TEST_DIR", DATA)
        .env("NESTRUN_TEST_RUNDIR", RUNDIR)
        .env("NESTRUN_TEST_BRIDGE", "nestrunfull0")
        .env("NESTRUN_TEST_BRIDGE_CIDR", "10.214.0.1/24")
        .env("NESTRUN_TEST_ADDR_POOL", "10.214.128.0/17");
    c
}

fn sh(cmd: &str) -> Out {
    let mut c = Command::new("sh");
    c.args(["-c", cmd]);
    run_cmd(c, Duration::from_secs(300))
}

impl SmallDocker {
    fn start() -> SmallDocker {
        let image = std::env::temp_dir().join(format!("nestrun-full-{}.ext4", std::process::id()));
        let d = SmallDocker { image: image.clone() };
        std::fs::create_dir_all(DATA).unwrap();
        sh(&format!("truncate -s 384M {0} && mkfs.ext4 -q -F -m 0 {0} && mount -o loop {0} {DATA}", image.display())).ok();
        run_cmd(script("containerd.sh", "start"), Duration::from_secs(120)).ok();
        run_cmd(script("dockerd.sh", "start"), Duration::from_secs(180)).ok();
        let main = docker_host();
        sh(&format!("/usr/bin/docker -H {main} save {BUSYBOX} | /usr/bin/docker -H unix://{RUNDIR}/docker.sock load")).ok();
        d
    }

    fn docker(&self, args: &[&str]) -> Out {
        let mut c = Command::new("/usr/bin/docker");
        c.env("DOCKER_HOST", format!("unix://{RUNDIR}/docker.sock")).args(args);
        run_cmd(c, Duration::from_secs(180))
    }

    fn used_kib(&self) -> u64 {
        let o = sh(&format!("df -k --output=used {DATA} | tail -1")).ok();
        o.stdout.trim().parse().expect("df used")
    }

    /// nestrun's data dirs (beside the upper dirs) still on the small file system.
    fn data_dirs(&self) -> Vec<String> {
        sh(&format!("find {DATA}/docker -maxdepth 3 -name nestrun-data")).stdout.lines().map(String::from).collect()
    }

    /// What nestrun still holds for container `id` of this dockerd.
    fn leftovers(&self, id: &str) -> Vec<String> {
        let t = traces(id);
        let mut v = vec![];
        if !t.is_empty_but_data() {
            v.push(format!("{t:?}"));
        }
        v.extend(runtime_state_dirs(RUNDIR, id).iter().map(|p| p.display().to_string()));
        v
    }
}

impl Drop for SmallDocker {
    fn drop(&mut self) {
        let _ = sh(&format!("/usr/bin/docker -H unix://{RUNDIR}/docker.sock rm -f $(/usr/bin/docker -H unix://{RUNDIR}/docker.sock ps -aq) 2>/dev/null"));
        let _ = run_cmd(script("dockerd.sh", "stop"), Duration::from_secs(120));
        let _ = run_cmd(script("containerd.sh", "stop"), Duration::from_secs(120));
        let _ = sh(&format!("umount {DATA} || umount -l {DATA}; rmdir {DATA}; rm -rf {RUNDIR}; ip link del nestrunfull0"));
        let _ = std::fs::remove_file(&self.image);
    }
}

#[test]
fn full_engine_layer_fs_keeps_running_and_rm_gives_everything_back() {
    need_engines!("full_engine_layer_fs_keeps_running_and_rm_gives_everything_back");
    let d = SmallDocker::start();
    let baseline = d.used_kib();
    let name = unique("full-layer");
    d.docker(&["run", "-d", "--runtime", "nested", "--name", &name, BUSYBOX, "sleep", "100000"]).ok();
    let id = d.docker(&["inspect", "-f", "{{.Id}}", &name]).ok().out().trim().to_string();
    // An image with 2 MiB at /var/lib/docker: nestrun seeds the data dir with it at create.
    let seeder = unique("full-seeder");
    d.docker(&["run", "--name", &seeder, BUSYBOX, "sh", "-c", "mkdir -p /var/lib/docker && dd if=/dev/zero of=/var/lib/docker/seed bs=1k count=2048"]).ok();
    d.docker(&["commit", &seeder, "nestrun-test/full-seed"]).ok();
    d.docker(&["rm", &seeder]).ok();
    let second_name = unique("full-layer-2");
    d.docker(&["create", "--runtime", "nested", "--name", &second_name, "nestrun-test/full-seed", "echo", "hi"]).ok();
    let second_id = d.docker(&["inspect", "-f", "{{.Id}}", &second_name]).ok().out().trim().to_string();

    // Fill the file system from inside, through the data dir and through the rootfs.
    let fill = d.docker(&["exec", &name, "sh", "-c", "dd if=/dev/zero of=/var/lib/docker/fill bs=1M; dd if=/dev/zero of=/fill bs=1M; dd if=/dev/zero of=/var/lib/docker/fill2 bs=1k"]);
    assert_ne!(fill.code, 0, "filling the data root did not fail: {fill:?}");
    assert!(fill.stderr.contains("No space left on device"), "filling gave another error: {fill:?}");
    let avail = sh(&format!("df -k --output=avail {DATA} | tail -1")).ok().stdout.trim().parse::<u64>().unwrap();
    assert!(avail < 64, "the file system is not full: {avail} KiB free");
    let alive = d.docker(&["exec", &name, "echo", "alive"]);
    assert_eq!(alive.out().trim(), "alive", "the container stopped answering on a full disk: {alive:?}");
    // Give back 256 KiB: room for docker's own mkdirs and mount, not for the 2 MiB seed.
    let fill = sh(&format!("find {DATA}/docker -path '*/nestrun-data/var/lib/docker/fill'")).ok().stdout.trim().to_string();
    assert!(!fill.is_empty(), "the fill file is not in the data dir beside the layer");
    sh(&format!("truncate -s -256K {fill}")).ok();

    // A nested container docker created before the disk ran full (its layers exist), started
    // now: nestrun's create cannot seed its data dir. One clear error, nothing left behind.
    let second = d.docker(&["start", "-a", &second_name]);
    let err = second.stderr.trim().to_string();
    assert_ne!(second.code, 0, "2 MiB of seed fit into 256 KiB? {second:?}");
    assert!(err.contains("cannot seed data dir") && err.contains(DATA), "the error does not name nestrun's data dir: {err}");
    assert!(err.contains("No space left on device"), "the error does not give the cause: {err}");
    println!("nested start on the full file system: {err:?}");
    assert!(wait_for(20, || d.leftovers(&second_id).is_empty()), "the second container left {:?}", d.leftovers(&second_id));
    d.docker(&["rm", "-f", &second_name]).ok();
    assert!(wait_for(20, || d.leftovers(&second_id).is_empty()), "the second container left {:?}", d.leftovers(&second_id));

    d.docker(&["rm", "-f", &name]).ok();
    assert!(wait_for(20, || d.leftovers(&id).is_empty()), "{id} left {:?}", d.leftovers(&id));
    assert!(d.data_dirs().is_empty(), "data dirs left: {:?}", d.data_dirs());
    d.docker(&["rmi", "nestrun-test/full-seed"]).ok();
    let used = d.used_kib();
    assert!(used <= baseline + 2048, "docker rm -f did not give the space back: {used} KiB used, {baseline} KiB before");
    let again = d.docker(&["run", "--rm", "--runtime", "nested", BUSYBOX, "echo", "again"]);
    assert_eq!(again.out().trim(), "again", "nested run after the space came back: {again:?}");
    println!("full layer fs: baseline {baseline} KiB used, back to {used} KiB after docker rm -f");
}

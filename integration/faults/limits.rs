//! Running out: of uid ranges in the pool, of space where the data dirs are seeded.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{need_root, one_line_error, Env};

/// Host ids of this file's private pools: past the default pool (2^20 + 4096 ranges), so
/// they never overlap a container that another test leases from /etc/subuid meanwhile.
pub const POOL_START: u64 = 1 << 30;

/// The container's host uid (first line of its init's uid_map).
fn host_uid(env: &Env, id: &str) -> u64 {
    let map = std::fs::read_to_string(format!("/proc/{}/uid_map", env.init_pid(id))).unwrap();
    let f: Vec<u64> = map.split_whitespace().take(3).map(|x| x.parse().unwrap()).collect();
    assert_eq!((f[0], f[2]), (0, 65536), "uid_map of {id}: {map}");
    f[1]
}

#[test]
fn exhausted_uid_pool_is_a_clear_error_and_a_delete_frees_a_range() {
    need_root!();
    let env = Env::new("pool").private_pool(POOL_START, 2);
    let leases = env.dir.join("leases");
    let ids: Vec<String> = (0..3).map(|i| format!("pool{i}-{}", std::process::id())).collect();
    env.create_ok(&ids[0]);
    env.create_ok(&ids[1]);
    let (a, b) = (host_uid(&env, &ids[0]), host_uid(&env, &ids[1]));
    assert_ne!(a, b, "two containers share a uid range");
    for h in [a, b] {
        assert!((POOL_START..POOL_START + 2 * 65536).contains(&h) && (h - POOL_START).is_multiple_of(65536), "host uid {h} is not a range of the pool");
    }

    let out = env.create(&ids[2], None);
    let err = one_line_error(&out, "create with the pool exhausted");
    eprintln!("{err}");
    let want = format!("no free uid range: all 2 ranges of {POOL_START}:131072 in {} are leased", leases.display());
    assert!(err.contains(&want), "error does not say the pool is exhausted:\n{err}\nwant: {want}");
    env.assert_clean(&ids[2], "after a create refused for a full pool");
    assert_eq!(std::fs::read_dir(&leases).unwrap().count(), 2, "the refused create changed the leases");

    env.delete_ok(&ids[0], true);
    env.assert_clean(&ids[0], "after delete");
    env.create_ok(&ids[2]);
    let c = host_uid(&env, &ids[2]);
    assert_eq!(c, a, "the freed range is the only free one");
    assert_ne!(c, b);
    for id in &ids[1..] {
        env.delete_ok(id, true);
        env.assert_clean(id, "after delete");
    }
    assert_eq!(std::fs::read_dir(&leases).unwrap().count(), 0, "leases left");
    env.assert_root_empty("after all deletes");
}

/// A tmpfs of `size` mounted on a new `dir`, unmounted and removed on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "nestrun-faults"]).arg(dir).status().unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn full_data_dir_file_system_fails_create_naming_the_path() {
    need_root!();
    let env = Env::new("diskfull");
    // Not in env.dir: the tmpfs outlives env (whose drop may delete containers using it).
    let data = std::env::temp_dir().join(format!("nestrun-faults-diskfull-data-{}", std::process::id()));
    let _fs = Tmpfs::mount(&data, "64k");
    let env = env.var("NESTRUN_DATA_DIR", data.clone());
    let seed = env.dir.join("bundle/rootfs/var/lib/docker");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("small"), b"fits").unwrap();
    std::fs::write(seed.join("big"), vec![0x5a_u8; 512 * 1024]).unwrap();
    let id = format!("full-{}", std::process::id());

    let out = env.create(&id, None);
    let err = one_line_error(&out, "create with a full data dir file system");
    eprintln!("{err}");
    assert!(err.contains(&data.display().to_string()), "error does not name the data dir path:\n{err}");
    assert!(err.contains("var/lib/docker"), "error does not name the data dir:\n{err}");
    assert!(err.contains("No space left on device"), "error does not give the cause:\n{err}");
    env.assert_clean(&id, "after a create that ran out of space");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0, "something left on the data dir file system");
    // The same bundle works once the data fits (nothing half-made is in the way).
    std::fs::remove_file(seed.join("big")).unwrap();
    env.create_ok(&id);
    env.delete_ok(&id, true);
    env.assert_clean(&id, "after delete");
    env.assert_root_empty("after delete");
}

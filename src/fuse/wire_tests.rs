use super::*;
use crate::fuse::{cgroup, files};
use std::path::PathBuf;

fn fs() -> ProcFs {
    let sources = files::Sources {
        host_proc: PathBuf::from("/proc"),
        cgroup: cgroup::Cgroup::with_mounts("/", cgroup::Mounts::default()),
        start_time: SystemTime::now(),
        init_pid: None,
        files: Default::default(),
    };
    ProcFs::new(sources, Vec::new(), 1000, 1000)
}

fn ask(fs: &ProcFs, opcode: u32, nodeid: u64, op_in: &[u8], payload_in: &[u8]) -> Result<Vec<u8>, i32> {
    let h = InHeader { opcode, unique: 7, nodeid, uid: 1000, pid: 0 };
    let mut op = [0u8; 128];
    op[..op_in.len()].copy_from_slice(op_in);
    let mut payload = vec![0u8; 32 * 1024];
    payload[..payload_in.len()].copy_from_slice(payload_in);
    answer(fs, &h, &op, &mut payload, payload_in.len()).map(|n| payload[..n].to_vec())
}

fn read_in(fh: u64, offset: u64, size: u32) -> Vec<u8> {
    [&fh.to_ne_bytes()[..], &offset.to_ne_bytes(), &size.to_ne_bytes(), &[0; 20]].concat()
}

#[test]
fn header_fields_sit_where_the_kernel_puts_them() {
    let mut header = vec![0u8; HEADER_LEN];
    header[4..8].copy_from_slice(&15u32.to_ne_bytes());
    header[8..16].copy_from_slice(&99u64.to_ne_bytes());
    header[16..24].copy_from_slice(&5u64.to_ne_bytes());
    header[24..28].copy_from_slice(&100000u32.to_ne_bytes());
    header[32..36].copy_from_slice(&4242u32.to_ne_bytes());
    header[264..272].copy_from_slice(&99u64.to_ne_bytes());
    header[272..276].copy_from_slice(&12u32.to_ne_bytes());
    assert_eq!(InHeader::parse(&header), InHeader { opcode: 15, unique: 99, nodeid: 5, uid: 100000, pid: 4242 });
    assert_eq!(ent_in(&header), (99, 12));
    set_out(&mut header, 99, Ok(40));
    assert_eq!(&header[..16], &[&56u32.to_ne_bytes()[..], &0i32.to_ne_bytes(), &99u64.to_ne_bytes()].concat()[..]);
    assert_eq!(ent_in(&header).1, 40);
    set_out(&mut header, 99, Err(libc::ENOENT));
    assert_eq!(i32::from_ne_bytes(header[4..8].try_into().unwrap()), -libc::ENOENT);
    assert_eq!((u32_at(&header, 0), ent_in(&header).1), (16, 0));
}

#[test]
fn lookup_open_read_and_readdir_answer_in_kernel_layout() {
    let fs = fs();
    let entry = ask(&fs, LOOKUP, 1, &[], b"sys\0").unwrap();
    assert_eq!(entry.len(), 128, "fuse_entry_out");
    let sys = u64_at(&entry, 0);
    assert_eq!(u64_at(&entry, 16), 1, "entry_valid: the 1 s TTL");
    assert_eq!(u64_at(&entry, 40), sys, "attr.ino");
    assert_eq!(u32_at(&entry, 40 + 60), libc::S_IFDIR | 0o555, "attr.mode");
    assert_eq!(u32_at(&entry, 40 + 68), 1000, "attr.uid");
    assert_eq!(ask(&fs, LOOKUP, 1, &[], b"nope\0"), Err(libc::ENOENT));
    let mut ino = sys;
    for name in ["devices", "system", "cpu", "online"] {
        ino = u64_at(&ask(&fs, LOOKUP, ino, &[], format!("{name}\0").as_bytes()).unwrap(), 0);
    }
    let attr = ask(&fs, GETATTR, ino, &[], &[]).unwrap();
    assert_eq!((attr.len(), u32_at(&attr, 16 + 60)), (104, libc::S_IFREG | 0o444));
    let opened = ask(&fs, OPEN, ino, &(libc::O_RDONLY as u32).to_ne_bytes(), &[]).unwrap();
    assert_eq!(u32_at(&opened, 8), OPEN_FLAGS.bits());
    let fh = u64_at(&opened, 0);
    assert_eq!(ask(&fs, OPEN, ino, &(libc::O_WRONLY as u32).to_ne_bytes(), &[]), Err(libc::EACCES));
    // The cpu list follows this process's CPUs (the root cgroup, no cpuset limit read here).
    let text = ask(&fs, READ, ino, &read_in(fh, 0, 4096), &[]).unwrap();
    assert!(text.ends_with(b"\n") && text[0].is_ascii_digit(), "{text:?}");
    assert_eq!(ask(&fs, READ, ino, &read_in(fh, text.len() as u64, 4096), &[]).unwrap(), b"");
    assert_eq!(ask(&fs, WRITE, ino, &read_in(fh, 0, 2), b"1\n"), Err(libc::EACCES));
    assert_eq!(ask(&fs, RELEASE, ino, &fh.to_ne_bytes(), &[]), Ok(Vec::new()));
    let dir = ask(&fs, READDIR, 1, &read_in(0, 0, 4096), &[]).unwrap();
    let mut names = Vec::new();
    let mut off = 0;
    while off < dir.len() {
        let len = u32_at(&dir, off + 16) as usize;
        names.push(String::from_utf8(dir[off + 24..off + 24 + len].to_vec()).unwrap());
        off += (24 + len).next_multiple_of(8);
    }
    assert_eq!(names, [".", "..", "proc", "sys"]);
    // Entries are 8-byte aligned (32 bytes each here); only whole ones fit.
    assert_eq!(ask(&fs, READDIR, 1, &read_in(0, 0, 64), &[]).unwrap().len(), 64);
    assert_eq!(ask(&fs, READDIR, 1, &read_in(0, 0, 63), &[]).unwrap().len(), 32);
    assert_eq!(ask(&fs, READDIR, 1, &read_in(0, 2, 4096), &[]).unwrap().len(), 64);
}

#[test]
fn setattr_access_and_unknown_operations() {
    let fs = fs();
    let chmod = [&FATTR_MODE.to_ne_bytes()[..], &[0; 84]].concat();
    assert_eq!(ask(&fs, SETATTR, 1, &chmod, &[]), Err(libc::EPERM));
    let w_ok = (libc::W_OK as u32).to_ne_bytes();
    assert_eq!(ask(&fs, ACCESS, 1, &w_ok, &[]), Err(libc::EACCES));
    assert_eq!(ask(&fs, ACCESS, 1, &(libc::R_OK as u32).to_ne_bytes(), &[]), Ok(Vec::new()));
    assert_eq!(ask(&fs, STATFS, 1, &[], &[]).unwrap().len(), 80);
    assert_eq!(ask(&fs, 9 /* SYMLINK */, 1, &[], b"x\0y\0"), Err(libc::ENOSYS));
    assert_eq!(ask(&fs, GETATTR, 4242, &[], &[]), Err(libc::ENOENT));
}

//! sendfile(2) readers (busybox `cat`) of files whose text changes length between reads: the
//! kernel's cached size, shrunk by one reader's short page-cache READ, must not cut the next
//! reader's longer text (see `resize`).

use std::os::fd::AsRawFd;
use std::path::Path;

use super::super::*;
use super::{can_mount, fake_cpuinfo, fake_host, over, serve_in_thread, tempdir};

/// The whole file as sendfile(2) copies it (to a regular file: no pipe size limit).
fn sendfile_read(path: &Path, out: &Path) -> String {
    let src = std::fs::File::open(path).unwrap();
    let dst = std::fs::File::create(out).unwrap();
    loop {
        // SAFETY: both descriptors are open; a NULL offset uses and advances src's position.
        let n = unsafe { libc::sendfile(dst.as_raw_fd(), src.as_raw_fd(), std::ptr::null_mut(), 1 << 20) };
        assert!(n >= 0, "sendfile {}: {}", path.display(), std::io::Error::last_os_error());
        if n == 0 {
            break;
        }
    }
    String::from_utf8(std::fs::read(out).unwrap()).unwrap()
}

/// The whole file as read(2) reads it, without a stat (File::read_to_end would statx the file
/// for a size hint, which fetches the attributes and so sets the cached size back).
fn read2(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let (mut text, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(text).unwrap()
}

#[test]
fn sendfile_reads_a_text_longer_than_the_last_one() {
    over(false, longer_after_shorter);
}

#[test]
fn sendfile_reads_a_text_longer_than_the_last_one_over_io_uring() {
    over(true, longer_after_shorter);
}

fn longer_after_shorter(uring: bool) {
    if !can_mount() {
        return;
    }
    let dir = tempdir(if uring { "cat-uring" } else { "cat" });
    // cpuinfo shows the processors /proc/stat counts (all 4 here: no cgroup limits).
    let host = fake_host(&dir, 1, 4);
    let (mnt, guard, t) = serve_in_thread(host.clone(), &dir, uring);

    let (file, out) = (mnt.join("proc/cpuinfo"), dir.join("out"));
    // One, two, one, three processors: each sendfile reader gets exactly the text a read(2)
    // reader gets right after (neither cut at the last reader's length nor padded with NULs
    // up to st_size), all within the attribute TTL, and no stat (which would fetch the size).
    let start = std::time::Instant::now();
    let mut last = 0;
    for n in [1, 2, 1, 3, 3] {
        std::fs::write(host.join("cpuinfo"), fake_cpuinfo(n)).unwrap();
        std::thread::sleep(server::RENDER_TTL + std::time::Duration::from_millis(2));
        let got = sendfile_read(&file, &out);
        let want = read2(&file);
        assert_eq!(want.matches("processor\t:").count(), n);
        assert!(got == want, "sendfile reader of {n} cpus after one of {last} cpus got {} of {} bytes: {:?}", got.len(), want.len(), got.get(got.len().saturating_sub(40)..));
        last = n;
    }
    assert!(start.elapsed() < server::TTL, "took longer than the attribute TTL: the test proves nothing");
    drop(guard);
    t.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

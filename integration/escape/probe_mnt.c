/* The new mount API, /proc masks, leaked fds (CVE-2024-21626), CVE-2019-5736. */
#include "probe.h"

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#define OPEN_TREE_CLONE_ 1
#define AT_RECURSIVE_ 0x8000
#define MOVE_MOUNT_F_EMPTY_PATH_ 0x4
#define FSCONFIG_CMD_CREATE_ 6

/* Whether the host's canary process (a host pid, spec) is listed in the procfs at dirfd. */
static int canary_in(int dirfd) {
    long cp;
    const char *cn;
    if (spec_canary(&cp, &cn) < 0) return 0;
    char rel[64], cl[256] = "";
    snprintf(rel, sizeof rel, "%ld/cmdline", cp);
    int fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, cl, sizeof cl - 1);
    close(fd);
    cl[n > 0 ? n : 0] = 0;
    return n > 0 && strstr(cl, cn) != NULL;
}

static int kcore_elf(int dirfd) {
    char b[8];
    int kc = openat(dirfd, "kcore", O_RDONLY | O_CLOEXEC);
    ssize_t kr = kc >= 0 ? read(kc, b, 4) : -1;
    if (kc >= 0) close(kc);
    return kr == 4 && !memcmp(b, "\177ELF", 4);
}

static void try_fsmount(void) {
    const char *name = "fsopen_fsmount_proc";
    int fs = syscall(SYS_fsopen, "proc", 0);
    if (fs < 0 && errno == ENOSYS) {
        /* nestrun's supervisor answers ENOSYS for procfs only (callers fall back to mount(2)) */
        int t = syscall(SYS_fsopen, "tmpfs", 0);
        if (t >= 0) {
            close(t);
            report(name, "BLOCKED", "fsopen(proc): ENOSYS while fsopen(tmpfs) works: the new mount API is refused for procfs");
            return;
        }
        errno = ENOSYS;
    }
    if (fs < 0) { blocked_or_absent(name, "fsopen(proc)", errno); return; }
    long r = syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE_, NULL, NULL, 0);
    int e = errno;
    int mfd = r < 0 ? -1 : syscall(SYS_fsmount, fs, 0, 0);
    if (r >= 0 && mfd < 0) e = errno;
    close(fs);
    if (mfd < 0) { report(name, "BLOCKED", "fsconfig/fsmount: %s (errno %d)", strerror(e), e); return; }
    int elf = kcore_elf(mfd), can = canary_in(mfd);
    close(mfd);
    if (elf || can) report(name, "ALLOWED", "fresh procfs: %s", elf ? "a readable kcore" : "lists the host's canary process (the host's pid namespace)");
    else report(name, "HARMLESS", "fresh procfs of the container's own pid namespace (no readable kcore, host canary process not listed)");
}

/* open_tree + move_mount: a non-recursive clone of /proc (the masks on kcore, keys, ... are
 * mounts on top of it, so the clone has none) and a recursive clone of /, each moved onto a
 * directory; then what landed there is examined. */
static void try_open_tree(void) {
    const char *name = "open_tree_move_mount_unmask_proc";
    int t = syscall(SYS_open_tree, AT_FDCWD, "/proc", OPEN_TREE_CLONE_ | O_CLOEXEC);
    if (t < 0) { blocked_or_absent(name, "open_tree(/proc, clone)", errno); return; }
    mkdir("/tmp/.probe-ot", 0700);
    long r = syscall(SYS_move_mount, t, "", AT_FDCWD, "/tmp/.probe-ot", MOVE_MOUNT_F_EMPTY_PATH_);
    int e = errno;
    close(t);
    if (r < 0) { report(name, "BLOCKED", "open_tree(/proc) cloned; move_mount onto /tmp/.probe-ot: %s (errno %d)", strerror(e), e); return; }
    struct statfs sf;
    struct stat lt, pr;
    int isproc = statfs("/tmp/.probe-ot", &sf) == 0 && sf.f_type == PROC_SUPER_MAGIC_;
    int same = stat("/tmp/.probe-ot", &lt) == 0 && stat("/proc", &pr) == 0 && lt.st_dev == pr.st_dev;
    char self[64] = "";
    ssize_t k = readlink("/tmp/.probe-ot/self", self, sizeof self - 1);
    self[k > 0 ? k : 0] = 0;
    int ownpid = atoi(self) == getpid();
    int d = open("/tmp/.probe-ot", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int elf = d >= 0 && kcore_elf(d), can = d >= 0 && canary_in(d);
    if (d >= 0) close(d);
    char keys[64];
    ssize_t kn = read_file("/tmp/.probe-ot/keys", keys, sizeof keys);
    umount2("/tmp/.probe-ot", MNT_DETACH);
    char proc[400];
    snprintf(proc, sizeof proc, "/proc clone landed at /tmp/.probe-ot: %s (%s /proc's), self -> '%s' (%s), kcore %s, host canary %s, keys %s",
             isproc ? "procfs" : "NOT procfs", same ? "the same superblock as" : "another superblock than", self, ownpid ? "our own pid namespace" : "NOT our pid namespace",
             elf ? "READABLE" : "not readable", can ? "LISTED" : "not listed", kn >= 0 ? "readable (the kernel's view for this user namespace)" : "not readable");
    int bad = !isproc || !same || !ownpid || elf || can;
    /* the recursive clone of / must be our own root: same inode, and no host path in it */
    char rootres[400] = "open_tree(/) ";
    t = syscall(SYS_open_tree, AT_FDCWD, "/", OPEN_TREE_CLONE_ | AT_RECURSIVE_ | O_CLOEXEC);
    if (t < 0) snprintf(rootres + strlen(rootres), sizeof rootres - strlen(rootres), "refused: %s", strerror(errno));
    else {
        mkdir("/tmp/.probe-ot2", 0700);
        r = syscall(SYS_move_mount, t, "", AT_FDCWD, "/tmp/.probe-ot2", MOVE_MOUNT_F_EMPTY_PATH_);
        e = errno;
        close(t);
        if (r < 0) snprintf(rootres + strlen(rootres), sizeof rootres - strlen(rootres), "cloned; move_mount refused: %s", strerror(e));
        else {
            struct stat a, b;
            int same_root = stat("/tmp/.probe-ot2", &a) == 0 && stat("/", &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
            const char *m = spec("marker_file");
            char mp[600], buf[128] = "";
            snprintf(mp, sizeof mp, "/tmp/.probe-ot2%s", m ? m : "/nonexistent");
            ssize_t mr = read_file(mp, buf, sizeof buf);
            chomp(buf);
            umount2("/tmp/.probe-ot2", MNT_DETACH);
            bad |= !same_root || mr >= 0;
            snprintf(rootres + strlen(rootres), sizeof rootres - strlen(rootres), "landed at /tmp/.probe-ot2: %s; host marker file in it: %s%s%s", same_root ? "our own root (same inode)" : "NOT our root",
                     mr >= 0 ? "READ '" : "absent", mr >= 0 ? buf : "", mr >= 0 ? "'" : "");
        }
    }
    report(name, bad ? "ALLOWED" : "HARMLESS", "%s; %s", proc, rootres);
}

/* Unmasking by unmounting the mask: the files behind must still be protected by the kernel. */
static void try_masks(void) {
    const char *masked[] = {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", NULL};
    for (int i = 0; masked[i]; i++) {
        char name[96];
        snprintf(name, sizeof name, "umount_mask(%s)", masked[i]);
        struct statfs sf;
        if (statfs(masked[i], &sf) < 0) { blocked_or_absent(name, "statfs", errno); continue; }
        if (umount2(masked[i], MNT_DETACH) < 0) { blocked_errno(name, "umount2", errno); continue; }
        char b[256];
        ssize_t r = read_file(masked[i], b, sizeof b);
        int e = errno;
        if (i == 0 && r >= 4 && !memcmp(b, "\177ELF", 4)) report(name, "ALLOWED", "mask removed and kcore readable");
        else if (r > 0) report(name, "HARMLESS", "mask removed in the container's own mount ns; %zd bytes readable (the kernel's view for this user namespace / world-readable on the host too)", r);
        else report(name, "HARMLESS", "mask removed in its own mount ns; reading: %s", r < 0 ? strerror(e) : "empty");
    }
}

void try_mount_api(void) {
    try_fsmount();
    try_open_tree();
    try_masks();
}

void check_fds(const char *name, const char *pid) {
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%s/fd", pid);
    DIR *d = opendir(dir);
    if (!d) { report(name, "BLOCKED", "cannot list %s: %s", dir, strerror(errno)); return; }
    char bad[700] = "", all[700] = "", marker[300] = "";
    int nbad = 0, n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[128], l[256];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        ssize_t k = readlink(p, l, sizeof l - 1);
        if (k < 0) continue;
        l[k] = 0;
        n++;
        if (strlen(all) < 500) snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s->%s", n > 1 ? " " : "", de->d_name, l);
        if (l[0] != '/') continue; /* pipe:, socket:, anon_inode: */
        int fd = open(p, O_PATH | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat fs, ps;
        fstat(fd, &fs);
        int outside = 0;
        if (S_ISDIR(fs.st_mode)) {
            int dfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            outside = dfd >= 0 ? dir_outside_root(dfd) == 1 : 0;
            if (outside && !marker[0]) read_marker_via(dfd, marker, sizeof marker);
            if (dfd >= 0) close(dfd);
        } else if (!strstr(l, "(deleted)") && strncmp(l, "/memfd:", 7)) {
            outside = stat(l, &ps) < 0 || ps.st_dev != fs.st_dev || ps.st_ino != fs.st_ino;
        }
        close(fd);
        if (outside) {
            nbad++;
            snprintf(bad + strlen(bad), sizeof bad - strlen(bad), " %s->%s%s", de->d_name, l, S_ISDIR(fs.st_mode) ? "(dir)" : "");
        }
    }
    closedir(d);
    char cwdp[64], cwd[256] = "?";
    snprintf(cwdp, sizeof cwdp, "/proc/%s/cwd", pid);
    ssize_t k = readlink(cwdp, cwd, sizeof cwd - 1);
    if (k >= 0) cwd[k] = 0;
    int cfd = open(cwdp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int cout = cfd >= 0 ? dir_outside_root(cfd) : -1;
    if (cout == 1 && !marker[0]) read_marker_via(cfd, marker, sizeof marker);
    if (cfd >= 0) close(cfd);
    if (nbad || cout == 1)
        report(name, "ALLOWED", "fds/cwd outside the container root:%s%s; %s", bad, cout == 1 ? " cwd" : "", marker);
    else
        report(name, "BLOCKED", "%d fds, none outside the container root; cwd '%s' inside (%s)", n, cwd, all);
}

/* CVE-2019-5736: overwrite the runtime through /proc/<pid>/exe of a joining process. */
int race(int seconds) {
    time_t end = time(NULL) + seconds;
    pid_t self = getpid();
    int held[64], nheld = 0, scans = 0, opened_w = 0;
    char seen[600] = "", errs[200] = "";
    while (time(NULL) < end) {
        scans++;
        DIR *d = opendir("/proc");
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (!isdigit((unsigned char)de->d_name[0]) || atoi(de->d_name) == self) continue;
            char p[64], l[256];
            snprintf(p, sizeof p, "/proc/%s/exe", de->d_name);
            int fd = open(p, O_PATH | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t k = readlink(p, l, sizeof l - 1);
            l[k < 0 ? 0 : k] = 0;
            struct stat fs, ps;
            fstat(fd, &fs);
            int own = l[0] == '/' && stat(l, &ps) == 0 && ps.st_dev == fs.st_dev && ps.st_ino == fs.st_ino;
            if (own) { close(fd); continue; }
            if (!strstr(seen, l) && strlen(seen) < 400) snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s'%s'", seen[0] ? "," : "", l);
            int w = open(p, O_WRONLY | O_CLOEXEC); /* never O_TRUNC, never written */
            if (w >= 0) { opened_w++; close(w); }
            else if (!strstr(errs, strerror(errno)) && strlen(errs) < 150) snprintf(errs + strlen(errs), sizeof errs - strlen(errs), "%s%s", errs[0] ? "/" : "", strerror(errno));
            if (nheld < 64) held[nheld++] = fd; else close(fd);
        }
        if (d) closedir(d);
        for (int i = 0; i < nheld; i++) {
            char p[64];
            snprintf(p, sizeof p, "/proc/self/fd/%d", held[i]);
            int w = open(p, O_WRONLY | O_CLOEXEC);
            if (w >= 0) { opened_w++; close(w); }
            else if (!strstr(errs, strerror(errno)) && strlen(errs) < 150) snprintf(errs + strlen(errs), sizeof errs - strlen(errs), "%s%s", errs[0] ? "/" : "", strerror(errno));
        }
        usleep(2000);
    }
    const char *name = "cve_2019_5736_open_runtime_exe_for_write";
    if (opened_w) report(name, "ALLOWED", "%d O_WRONLY opens of a foreign exe succeeded (nothing written); seen %s", opened_w, seen);
    else if (seen[0]) report(name, "BLOCKED", "%d scans; foreign exes seen: %s; O_WRONLY: %s", scans, seen, errs);
    else report(name, "N/A", "%d scans; never reached: no foreign exe ever visible (joining processes showed only container binaries)", scans);
    return 0;
}

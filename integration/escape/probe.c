/* nestrun escape probe: run as root inside a nested container; tries host-reaching actions.
 *
 * Usage: probe suite [host-ns-inodes: user=N,pid=N,...] [marker]
 *        probe race SECONDS        (CVE-2019-5736: watch /proc/<pid>/exe of joining processes)
 *
 * One line per attempt:  ATTEMPT <name> BLOCKED|ALLOWED|HARMLESS <detail>
 *   BLOCKED  the kernel/runtime refused (detail: errno or why)
 *   ALLOWED  a real host-reaching effect or an open gate to one (a test failure)
 *   HARMLESS it succeeded, but only on the container's own namespaces/resources
 * Lines starting with INFO are context. Every write writes back the value just read (or an
 * invalid value the kernel rejects after its permission check), so a success changes nothing.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
#define FUSE_SUPER_MAGIC_ 0x65735546

static const char *marker = "";

static void report(const char *name, const char *res, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r' || !isprint((unsigned char)*p)) *p = ' ';
    printf("ATTEMPT %s %s %s\n", name, res, buf);
    fflush(stdout);
}

static void blocked_errno(const char *name, const char *what, int e) {
    report(name, "BLOCKED", "%s: %s (errno %d)", what, strerror(e), e);
}

static ssize_t read_file(const char *path, char *buf, size_t n) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, n - 1);
    int e = errno;
    close(fd);
    if (r < 0) { errno = e; return -1; }
    buf[r] = 0;
    return r;
}

static void chomp(char *s) {
    size_t l = strlen(s);
    while (l && (s[l - 1] == '\n' || s[l - 1] == ' ')) s[--l] = 0;
}

/* 1 when dirfd (a directory) is not below our root: walk ".." until it stops moving. */
static int dir_outside_root(int dirfd) {
    struct stat root, cur, up;
    if (stat("/", &root) < 0) return -1;
    int fd = dup(dirfd);
    for (int i = 0; i < 512 && fd >= 0; i++) {
        if (fstat(fd, &cur) < 0) break;
        if (cur.st_dev == root.st_dev && cur.st_ino == root.st_ino) { close(fd); return 0; }
        int p = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (p < 0) break;
        if (fstat(p, &up) < 0) { close(p); break; }
        close(fd);
        fd = p;
        if (up.st_dev == cur.st_dev && up.st_ino == cur.st_ino) { close(fd); return 1; }
    }
    if (fd >= 0) close(fd);
    return -1;
}

static int in_host_userns;

/* ---------- devices ---------- */

static void try_block_dev(unsigned maj, unsigned min, const char *label) {
    char name[128], node[128];
    snprintf(name, sizeof name, "mknod_read_block_%u_%u(%s)", maj, min, label);
    snprintf(node, sizeof node, "/tmp/.probe-blk-%u-%u", maj, min);
    unlink(node);
    if (mknod(node, S_IFBLK | 0600, makedev(maj, min)) < 0) { blocked_errno(name, "mknod", errno); return; }
    int fd = open(node, O_RDONLY | O_CLOEXEC);
    int e = errno;
    unlink(node);
    if (fd < 0) {
        if (e == ENXIO || e == ENODEV)
            report(name, "ALLOWED", "mknod and the device-cgroup/nodev gates passed; open failed only because no such disk exists: %s", strerror(e));
        else
            report(name, "BLOCKED", "mknod ok (node in own fs), open: %s (errno %d)", strerror(e), e);
        return;
    }
    char buf[512];
    ssize_t r = read(fd, buf, sizeof buf);
    close(fd);
    if (r > 0) report(name, "ALLOWED", "read %zd bytes of the host disk", r);
    else report(name, "ALLOWED", "opened the host block device (read: %zd, %s)", r, r < 0 ? strerror(errno) : "eof");
}

static void try_block_devices(void) {
    try_block_dev(8, 0, "sda");
    FILE *f = fopen("/proc/partitions", "r");
    if (!f) return;
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < 4) {
        unsigned maj, min;
        unsigned long long blocks;
        char dev[64];
        if (sscanf(line, "%u %u %llu %63s", &maj, &min, &blocks, dev) != 4) continue;
        if (maj == 8 && min == 0) continue;
        if (!strncmp(dev, "loop", 4) || !strncmp(dev, "ram", 3)) continue;
        try_block_dev(maj, min, dev);
        n++;
    }
    fclose(f);
}

static void try_char_node(const char *name, unsigned maj, unsigned min, const char *existing) {
    /* the existing path first (must be absent or a harmless replacement) */
    if (existing) {
        struct stat st;
        int fd = open(existing, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0) {
            fstat(fd, &st);
            char buf[256];
            ssize_t r = read(fd, buf, sizeof buf);
            close(fd);
            if (S_ISCHR(st.st_mode) && major(st.st_rdev) == maj && minor(st.st_rdev) == min && r > 0) {
                char n2[128];
                snprintf(n2, sizeof n2, "open_%s", existing + 5);
                report(n2, "ALLOWED", "%s is the real device %u:%u, read %zd bytes", existing, maj, min, r);
            } else {
                char n2[128];
                snprintf(n2, sizeof n2, "open_%s", existing + 5);
                report(n2, "BLOCKED", "%s is %u:%u (not the host's %u:%u), read %zd bytes", existing, major(st.st_rdev), minor(st.st_rdev), maj, min, r);
            }
        } else {
            char n2[128];
            snprintf(n2, sizeof n2, "open_%s", existing + 5);
            blocked_errno(n2, existing, errno);
        }
    }
    char node[128];
    snprintf(node, sizeof node, "/tmp/.probe-chr-%u-%u", maj, min);
    unlink(node);
    if (mknod(node, S_IFCHR | 0600, makedev(maj, min)) < 0) { blocked_errno(name, "mknod", errno); return; }
    int fd = open(node, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    int e = errno;
    unlink(node);
    if (fd < 0) {
        if (e == ENXIO || e == ENODEV)
            report(name, "ALLOWED", "mknod and device gates passed; the kernel lacks the driver: %s", strerror(e));
        else
            report(name, "BLOCKED", "mknod ok, open: %s (errno %d)", strerror(e), e);
        return;
    }
    char buf[4096];
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    report(name, "ALLOWED", "opened host char device %u:%u, read %zd bytes", maj, min, r);
}

/* ---------- open_by_handle_at (shocker) ---------- */

struct fh8 { unsigned int handle_bytes; int handle_type; unsigned char f_handle[128]; };

static void try_shocker(void) {
    const char *name = "open_by_handle_at_shocker";
    const char *mp = "/etc/hostname"; /* a bind from the host file system */
    struct fh8 h = {.handle_bytes = 128};
    int mount_id;
    char info[128] = "";
    if (syscall(SYS_name_to_handle_at, AT_FDCWD, mp, &h, &mount_id, 0) == 0)
        snprintf(info, sizeof info, "name_to_handle_at ok (type %d, %u bytes)", h.handle_type, h.handle_bytes);
    else
        snprintf(info, sizeof info, "name_to_handle_at: %s", strerror(errno));
    int mfd = open(mp, O_RDONLY | O_CLOEXEC);
    struct fh8 g = {.handle_bytes = 8, .handle_type = 1}; /* FILEID_INO32_GEN: inode 2, gen 0 */
    g.f_handle[0] = 2;
    int fd = syscall(SYS_open_by_handle_at, mfd, &g, O_RDONLY | O_DIRECTORY);
    int e = errno;
    if (mfd >= 0) close(mfd);
    if (fd < 0) {
        report(name, "BLOCKED", "%s; open_by_handle_at(inode 2): %s (errno %d)", info, strerror(e), e);
        return;
    }
    int out = dir_outside_root(fd);
    close(fd);
    report(name, out == 0 ? "HARMLESS" : "ALLOWED", "%s; opened inode 2 of the host fs (%s the container root)", info, out == 0 ? "inside" : "outside");
}

/* ---------- cgroups ---------- */

static void try_write_same(const char *name, const char *path, const char *fallback) {
    char cur[4096] = "";
    ssize_t r = read_file(path, cur, sizeof cur);
    const char *val = r >= 0 ? cur : fallback;
    if (r < 0 && !fallback) { blocked_errno(name, path, errno); return; }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) { blocked_errno(name, path, errno); return; }
    ssize_t w = write(fd, strlen(val) ? val : "\n", strlen(val) ? strlen(val) : 1);
    int e = errno;
    close(fd);
    char shown[80];
    snprintf(shown, sizeof shown, "%s", val);
    chomp(shown);
    if (w < 0) { report(name, "BLOCKED", "%s opened, write: %s (errno %d)", path, strerror(e), e); return; }
    report(name, "ALLOWED", "wrote %s back into %s", shown[0] ? shown : "\"\"", path);
}

static void try_release_agent(void) {
    mkdir("/tmp/.probe-cg", 0700);
    const char *opts[] = {"rdma", "none,name=escprobe", "memory", NULL};
    for (int i = 0; opts[i]; i++) {
        char name[96];
        snprintf(name, sizeof name, "release_agent_fresh_mount(%s)", opts[i]);
        if (mount("cgroup", "/tmp/.probe-cg", "cgroup", 0, opts[i]) < 0) { blocked_errno(name, "mount cgroup", errno); continue; }
        if (access("/tmp/.probe-cg/release_agent", F_OK) < 0) {
            report(name, "BLOCKED", "mount ok but it is rooted at the cgroup namespace root: no release_agent file");
        } else {
            try_write_same(name, "/tmp/.probe-cg/release_agent", NULL);
        }
        umount2("/tmp/.probe-cg", MNT_DETACH);
    }
    DIR *d = opendir("/sys/fs/cgroup");
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[512], name[128];
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s/release_agent", de->d_name);
        snprintf(name, sizeof name, "release_agent_visible(%s)", de->d_name);
        if (access(path, F_OK) < 0) { report(name, "BLOCKED", "no release_agent at the visible top (cgroup namespace root)"); continue; }
        try_write_same(name, path, NULL);
    }
    closedir(d);
}

/* The memory cgroup mount (the container's own or a fresh one) and our path below its root. */
static int memcg(char *base, size_t bn, char *rel, size_t rn) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[512];
    snprintf(rel, rn, "/");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            char *p = strstr(line, ":memory:");
            if (p) { snprintf(rel, rn, "%s", p + 8); chomp(rel); }
        }
        fclose(f);
    }
    if (!strcmp(rel, "/")) rel[0] = 0;
    char probe[700];
    snprintf(base, bn, "/sys/fs/cgroup/memory");
    snprintf(probe, sizeof probe, "%s%s/memory.limit_in_bytes", base, rel);
    if (access(probe, F_OK) == 0) return 0;
    mkdir("/tmp/.probe-mem", 0700);
    if (mount("cgroup", "/tmp/.probe-mem", "cgroup", 0, "memory") == 0) {
        snprintf(base, bn, "/tmp/.probe-mem");
        return 0;
    }
    return -1;
}

/* True when `path` (a limit file at /sys/fs/cgroup/<ctl>/) is in our own cgroup below the
 * cgroup-namespace root (our /proc/self/cgroup path for ctl is not "/") and owned by the
 * container's root (uid 0 here; host-root-owned files show as the overflow uid). */
static int own_nested_cgroup_file(const char *ctl, const char *path, char *own, size_t on) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[512];
    int found = 0;
    if (!f) return 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        char ctls[256];
        snprintf(ctls, sizeof ctls, ",%s,", c1 + 1);
        char want[64];
        snprintf(want, sizeof want, ",%s,", ctl);
        if (!strstr(ctls, want)) continue;
        snprintf(own, on, "%s", c2 + 1);
        chomp(own);
        found = strcmp(own, "/") != 0;
    }
    fclose(f);
    struct stat st;
    return found && stat(path, &st) == 0 && st.st_uid == 0;
}

static void try_cgroup_limits(void) {
    char base[256], rel[400];
    if (memcg(base, sizeof base, rel, sizeof rel) < 0) { report("cgroup_raise_memory_limit", "BLOCKED", "no memory cgroup reachable: %s", strerror(errno)); return; }
    char p[700], cur[64] = "";
    snprintf(p, sizeof p, "%s%s/memory.limit_in_bytes", base, rel);
    read_file(p, cur, sizeof cur);
    chomp(cur);
    printf("INFO memory.limit_in_bytes seen inside at %s = %s\n", p, cur);
    if (rel[0]) {
        /* Below the cgroup-namespace root (a nested engine's child cgroup): that limit belongs to
         * the inner engine, and the subtree stays bounded by the namespace root's limit. */
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        ssize_t w = fd < 0 ? -1 : write(fd, cur, strlen(cur));
        int e = errno;
        if (fd >= 0) close(fd);
        if (w < 0) report("cgroup_write_child_memory_limit", "BLOCKED", "%s: %s (errno %d)", p, strerror(e), e);
        else report("cgroup_write_child_memory_limit", "HARMLESS", "own child cgroup %s of the delegated subtree (wrote back %s); bounded by the namespace root's limit", rel, cur);
        snprintf(p, sizeof p, "%s/memory.limit_in_bytes", base);
    }
    try_write_same("cgroup_raise_memory_limit", p, NULL);
    struct { const char *name, *ctl, *file; } lim[] = {
        {"cgroup_write_pids_max", "pids", "pids.max"},
        {"cgroup_write_cpu_cfs_quota", "cpu", "cpu.cfs_quota_us"},
        {"cgroup_write_cpuset_cpus", "cpuset", "cpuset.cpus"},
        {"cgroup_write_memsw_limit", "memory", "memory.memsw.limit_in_bytes"},
    };
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++) {
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/%s", lim[i].ctl, lim[i].file);
        if (access(p, F_OK) < 0) { report(lim[i].name, "BLOCKED", "%s absent", p); continue; }
        char own[400];
        if (own_nested_cgroup_file(lim[i].ctl, p, own, sizeof own)) {
            /* An inner --privileged container of runc (cgroup v1, no cgroup namespace of its
             * own) gets its own cgroup dir bound at /sys/fs/cgroup/<ctl>, read-write. That dir
             * was made by the nested engine, as the container's root: writing its limits is
             * the nested engine's business; the kernel bounds them by the namespace root's
             * limits, whose files stay host-root owned (the init/exec rows). */
            int fd = open(p, O_WRONLY | O_CLOEXEC);
            char cur2[256] = "";
            read_file(p, cur2, sizeof cur2);
            ssize_t w = fd < 0 ? -1 : write(fd, cur2, strlen(cur2));
            int e = errno;
            if (fd >= 0) close(fd);
            chomp(cur2);
            if (w < 0) report(lim[i].name, "BLOCKED", "%s: %s (errno %d)", p, strerror(e), e);
            else report(lim[i].name, "HARMLESS", "own cgroup %s below the namespace root, made by the nested engine (file owned by the container's root; wrote back %s); bounded by the namespace root's limit", own, cur2);
            continue;
        }
        try_write_same(lim[i].name, p, NULL);
    }
    /* devices.allow: a rule for /dev/null, which is always allowed: harmless if it passes */
    const char *da = "/sys/fs/cgroup/devices/devices.allow";
    int fd = open(da, O_WRONLY | O_CLOEXEC);
    if (fd < 0) { blocked_errno("cgroup_devices_allow", da, errno); }
    else {
        ssize_t w = write(fd, "c 1:3 rwm", 9);
        int e = errno;
        close(fd);
        if (w < 0) report("cgroup_devices_allow", "BLOCKED", "open ok, write: %s (errno %d)", strerror(e), e);
        else report("cgroup_devices_allow", "ALLOWED", "wrote 'c 1:3 rwm' into devices.allow (a rule for any device would pass too)");
    }
}

/* ---------- sysctls and sysfs ---------- */

static int is_fuse(const char *path) {
    struct statfs s;
    return statfs(path, &s) == 0 && (unsigned long)s.f_type == FUSE_SUPER_MAGIC_;
}

static void try_sysctl(const char *rel, int namespaced) {
    char path[256], name[160];
    snprintf(path, sizeof path, "/proc/sys/%s", rel);
    snprintf(name, sizeof name, "sysctl_write(%s)", rel);
    char cur[4096];
    if (read_file(path, cur, sizeof cur) < 0) { blocked_errno(name, "read", errno); return; }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) { blocked_errno(name, "open for write", errno); return; }
    ssize_t w = write(fd, cur, strlen(cur));
    int e = errno;
    close(fd);
    chomp(cur);
    if (w < 0) { report(name, "BLOCKED", "write: %s (errno %d)", strerror(e), e); return; }
    if (is_fuse(path)) report(name, "HARMLESS", "served by nestrun's FUSE emulation (wrote back '%s')", cur);
    else if (namespaced) report(name, "HARMLESS", "per-namespace sysctl of the container's own namespace (wrote back '%s')", cur);
    else report(name, "ALLOWED", "global sysctl written (same value '%s' written back)", cur);
}

static void try_drop_caches(void) {
    const char *name = "sysctl_write(vm/drop_caches)";
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd < 0) { blocked_errno(name, "open for write", errno); return; }
    ssize_t w = write(fd, "0", 1); /* 0 is rejected (EINVAL) after the permission check */
    int e = errno;
    close(fd);
    if (w < 0 && (e == EINVAL)) report(name, "ALLOWED", "write gate open: '0' reached the range check (EINVAL); '3' would drop host caches");
    else if (w < 0) report(name, "BLOCKED", "write: %s (errno %d)", strerror(e), e);
    else report(name, "ALLOWED", "write of '0' accepted");
}

static void try_sysctls(void) {
    try_sysctl("kernel/core_pattern", 0);
    try_drop_caches();
    try_sysctl("kernel/modprobe", 0);
    try_sysctl("kernel/panic", 0);
    try_sysctl("kernel/sysrq", 0);
    try_sysctl("kernel/randomize_va_space", 0);
    try_sysctl("kernel/kptr_restrict", 0);
    try_sysctl("kernel/dmesg_restrict", 0);
    try_sysctl("kernel/perf_event_paranoid", 0);
    try_sysctl("vm/overcommit_memory", 0);
    try_sysctl("fs/file-max", 0);
    try_sysctl("kernel/hostname", 1);
    try_sysctl("net/ipv4/ip_forward", 1);
    try_sysctl("net/core/somaxconn", 1);
    /* /proc/sysrq-trigger: only opened, never written (any byte written acts on the host) */
    int fd = open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);
    if (fd < 0) blocked_errno("open_sysrq_trigger", "open O_WRONLY", errno);
    else { close(fd); report("open_sysrq_trigger", "ALLOWED", "opened for writing (nothing written)"); }
}

static void try_sysfs(void) {
    const char *p = "/sys/kernel/mm/transparent_hugepage/enabled";
    char cur[256], val[64] = "";
    if (read_file(p, cur, sizeof cur) < 0) { blocked_errno("sysfs_write_thp", "read", errno); return; }
    char *a = strchr(cur, '['), *b = a ? strchr(a, ']') : NULL;
    if (a && b) snprintf(val, sizeof val, "%.*s", (int)(b - a - 1), a + 1);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0) blocked_errno("sysfs_write_thp", "open for write", errno);
    else {
        ssize_t w = write(fd, val, strlen(val));
        int e = errno;
        close(fd);
        if (w < 0) report("sysfs_write_thp", "BLOCKED", "write: %s (errno %d)", strerror(e), e);
        else report("sysfs_write_thp", "ALLOWED", "wrote '%s' back", val);
    }
    /* a fresh sysfs (allowed for the owner of the netns) must still not make the knob writable */
    mkdir("/tmp/.probe-sys", 0700);
    if (mount("sysfs", "/tmp/.probe-sys", "sysfs", 0, NULL) < 0) { blocked_errno("sysfs_fresh_mount_write_thp", "mount sysfs", errno); return; }
    fd = open("/tmp/.probe-sys/kernel/mm/transparent_hugepage/enabled", O_WRONLY | O_CLOEXEC);
    if (fd < 0) report("sysfs_fresh_mount_write_thp", "BLOCKED", "fresh sysfs mounted; knob open: %s (errno %d)", strerror(errno), errno);
    else {
        ssize_t w = write(fd, val, strlen(val));
        int e = errno;
        close(fd);
        if (w < 0) report("sysfs_fresh_mount_write_thp", "BLOCKED", "fresh sysfs mounted; write: %s (errno %d)", strerror(e), e);
        else report("sysfs_fresh_mount_write_thp", "ALLOWED", "fresh sysfs mounted and '%s' written back", val);
    }
    umount2("/tmp/.probe-sys", MNT_DETACH);
}

/* ---------- host-acting syscalls ---------- */

static void gate(const char *name, long r, int e, int expect_ok_errno_is_gate) {
    (void)expect_ok_errno_is_gate;
    if (r >= 0) report(name, "ALLOWED", "call succeeded");
    else if (e == EPERM || e == EACCES) blocked_errno(name, "call", e);
    else if (e == ENOSYS) report(name, "BLOCKED", "not in this kernel (ENOSYS)");
    else report(name, "ALLOWED", "privilege check passed, failed later: %s (errno %d)", strerror(e), e);
}

static void try_syscalls(void) {
    long r;
    static char empty[1];
    r = syscall(SYS_init_module, empty, 0UL, "");
    gate("init_module", r, errno, 1);
    int nfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    r = syscall(SYS_finit_module, nfd, "", 0);
    gate("finit_module", r, errno, 1);
    close(nfd);
    r = syscall(SYS_delete_module, "nestrun_probe_no_such_module", O_NONBLOCK);
    gate("delete_module", r, errno, 1);
    r = iopl(3);
    int e = errno;
    if (r == 0) iopl(0);
    gate("iopl(3)", r, e, 1);
    r = ioperm(0x80, 1, 1);
    e = errno;
    if (r == 0) ioperm(0x80, 1, 0);
    gate("ioperm(0x80)", r, e, 1);
    r = acct("/tmp/.probe-acct");
    e = errno;
    if (r == 0) acct(NULL);
    gate("acct", r, e, 1);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r = clock_settime(CLOCK_REALTIME, &ts);
    gate("clock_settime(now)", r, errno, 1);
    r = syscall(SYS_settimeofday, NULL, NULL);
    gate("settimeofday(NULL,NULL)", r, errno, 1);
    r = syscall(SYS_swapoff, "/nonexistent-probe-swap");
    gate("swapoff", r, errno, 1);
    r = syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0UL);
    gate("kexec_load", r, errno, 1);
    /* bpf: a two-instruction socket filter (unprivileged bpf is disabled on sane hosts) */
    uint64_t insns[2] = {0x00000000000000b7ULL /* r0 = 0 */, 0x0000000000000095ULL /* exit */};
    union bpf_attr at;
    memset(&at, 0, sizeof at);
    at.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    at.insn_cnt = 2;
    at.insns = (uint64_t)(uintptr_t)insns;
    at.license = (uint64_t)(uintptr_t)"GPL";
    r = syscall(SYS_bpf, BPF_PROG_LOAD, &at, sizeof at);
    e = errno;
    if (r >= 0) close(r);
    gate("bpf(BPF_PROG_LOAD)", r, e, 1);
    /* perf: system-wide kernel profiling on cpu 0 */
    struct perf_event_attr pa;
    memset(&pa, 0, sizeof pa);
    pa.size = sizeof pa;
    pa.type = PERF_TYPE_SOFTWARE;
    pa.config = PERF_COUNT_SW_CPU_CLOCK;
    pa.sample_period = 100000;
    r = syscall(SYS_perf_event_open, &pa, -1, 0, -1, 0);
    e = errno;
    if (r >= 0) close(r);
    gate("perf_event_open(system-wide,kernel)", r, e, 1);
}

/* ---------- kernel log, kcore, kallsyms ---------- */

static void classify_log(const char *name, const char *buf, ssize_t n, const char *src) {
    if (n <= 0) { report(name, "BLOCKED", "%s: read %zd bytes", src, n); return; }
    int m = marker[0] && memmem(buf, n, marker, strlen(marker)) != NULL;
    report(name, "ALLOWED", "%s: read %zd bytes of kernel log%s", src, n, m ? " including the host's marker line" : "");
}

static void try_klog(void) {
    static char buf[1 << 16];
    int r = klogctl(10 /* SIZE_BUFFER */, NULL, 0);
    int e = errno;
    r = klogctl(3 /* READ_ALL */, buf, sizeof buf);
    e = errno;
    if (r < 0) blocked_errno("syslog(READ_ALL)", "syslog", e);
    else classify_log("syslog(READ_ALL)", buf, r, "syslog");
    int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) { blocked_errno("read_dev_kmsg", "open /dev/kmsg", errno); }
    else {
        ssize_t tot = 0, n;
        while (tot < (ssize_t)sizeof buf - 1024 && (n = read(fd, buf + tot, 1024)) > 0) tot += n;
        struct stat st;
        fstat(fd, &st);
        close(fd);
        if (tot <= 0) report("read_dev_kmsg", "BLOCKED", "/dev/kmsg is %u:%u and reads empty", major(st.st_rdev), minor(st.st_rdev));
        else classify_log("read_dev_kmsg", buf, tot, "/dev/kmsg");
    }
}

static void try_kcore_kallsyms(void) {
    int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
    if (fd < 0) blocked_errno("open_proc_kcore", "open", errno);
    else {
        struct stat st;
        fstat(fd, &st);
        char b[64];
        ssize_t r = read(fd, b, sizeof b);
        close(fd);
        if (r > 4 && !memcmp(b, "\177ELF", 4)) report("open_proc_kcore", "ALLOWED", "read the kernel core ELF header");
        else report("open_proc_kcore", "BLOCKED", "masked (%s %u:%u, read %zd bytes)", S_ISCHR(st.st_mode) ? "char dev" : "file", major(st.st_rdev), minor(st.st_rdev), r);
    }
    FILE *f = fopen("/proc/kallsyms", "r");
    if (!f) { blocked_errno("kallsyms_addresses", "open", errno); return; }
    char line[256];
    long n = 0, nz = 0;
    while (fgets(line, sizeof line, f) && n < 5000) {
        n++;
        if (strtoull(line, NULL, 16) != 0) nz++;
    }
    fclose(f);
    if (nz) report("kallsyms_addresses", "ALLOWED", "%ld of %ld symbols show real addresses (KASLR leak)", nz, n);
    else report("kallsyms_addresses", "BLOCKED", "%ld symbols, all addresses zeroed", n);
}

/* ---------- user namespaces, pids, keys ---------- */

static void try_userns_map(void) {
    int pfd[2], cfd[2];
    if (pipe(pfd) || pipe(cfd)) return;
    pid_t c = fork();
    if (c == 0) {
        close(pfd[0]);
        close(cfd[1]);
        char x = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
        write(pfd[1], &x, 1);
        read(cfd[0], &x, 1);
        _exit(0);
    }
    close(pfd[1]);
    close(cfd[0]);
    char x = 0;
    read(pfd[0], &x, 1);
    if (x != 'y') {
        report("userns_map_foreign_uid", "BLOCKED", "unshare(CLONE_NEWUSER) failed");
    } else {
        /* uid 70000 of our namespace is outside the 65536 ids a nestrun container owns */
        char p[64];
        snprintf(p, sizeof p, "/proc/%d/uid_map", c);
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        ssize_t w = fd < 0 ? -1 : write(fd, "0 70000 1\n", 10);
        int e = errno;
        if (fd >= 0) close(fd);
        if (w < 0) report("userns_map_foreign_uid", "BLOCKED", "nested userns created (harmless); mapping uid 70000: %s (errno %d)", strerror(e), e);
        else report("userns_map_foreign_uid", "ALLOWED", "mapped uid 70000 of the probe's namespace (not owned by the container)");
        /* host root (0 in the initial namespace) seen from here */
        snprintf(p, sizeof p, "/proc/%d/gid_map", c);
    }
    write(cfd[1], "x", 1);
    waitpid(c, NULL, 0);
}

static void try_pids(void) {
    char pm[32] = "32768";
    read_file("/proc/sys/kernel/pid_max", pm, sizeof pm);
    long max = atol(pm);
    if (max <= 0 || max > 4194304) max = 4194304;
    long live = 0, hidden = 0, first_hidden = 0;
    for (long p = 1; p <= max; p++) {
        if (kill(p, 0) == 0 || errno == EPERM) {
            live++;
            char path[64];
            snprintf(path, sizeof path, "/proc/%ld", p);
            if (access(path, F_OK) < 0 && (kill(p, 0) == 0 || errno == EPERM)) {
                hidden++;
                if (!first_hidden) first_hidden = p;
            }
        }
    }
    char c1[256] = "";
    ssize_t n = read_file("/proc/1/cmdline", c1, sizeof c1);
    for (ssize_t i = 0; i < n; i++) if (!c1[i]) c1[i] = ' ';
    if (hidden) report("kill_host_pids", "ALLOWED", "%ld pids answer kill(pid,0) without a /proc entry (first %ld)", hidden, first_hidden);
    else report("kill_host_pids", "BLOCKED", "pid namespace: %ld pids reachable by kill, all listed in /proc; pid 1 is '%s'", live, c1);
}

static void try_keys(void) {
    char desc[256] = "";
    long id = syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -4 /* USER_KEYRING */, 0);
    if (id < 0) { blocked_errno("keyctl_user_keyring", "KEYCTL_GET_KEYRING_ID", errno); return; }
    long r = syscall(SYS_keyctl, 6 /* DESCRIBE */, id, desc, sizeof desc - 1);
    if (r < 0) { blocked_errno("keyctl_user_keyring", "KEYCTL_DESCRIBE", errno); return; }
    long ids[16];
    long nk = syscall(SYS_keyctl, 11 /* READ */, id, ids, sizeof ids);
    report("keyctl_user_keyring", in_host_userns ? "ALLOWED" : "HARMLESS", "user keyring %ld '%s' holds %ld keys (%s)", id, desc, nk < 0 ? -1 : nk / 4,
           in_host_userns ? "the HOST root user's keyring" : "keyrings are per user namespace: this is the container's own");
}

static void try_namespaces(const char *hostns) {
    const char *types[] = {"user", "pid", "net", "mnt", "ipc", "uts", "cgroup", NULL};
    for (int i = 0; types[i]; i++) {
        char p[64], l[64], name[64], key[32];
        snprintf(p, sizeof p, "/proc/self/ns/%s", types[i]);
        snprintf(name, sizeof name, "own_%s_namespace", types[i]);
        ssize_t n = readlink(p, l, sizeof l - 1);
        if (n < 0) { report(name, "BLOCKED", "readlink: %s", strerror(errno)); continue; }
        l[n] = 0;
        unsigned long ino = strtoul(strchr(l, '[') ? strchr(l, '[') + 1 : l, NULL, 10);
        snprintf(key, sizeof key, "%s=", types[i]);
        const char *h = hostns ? strstr(hostns, key) : NULL;
        /* make sure we matched a whole key ("user=" not inside "xuser=") */
        while (h && h != hostns && h[-1] != ',') h = strstr(h + 1, key);
        unsigned long hino = h ? strtoul(h + strlen(key), NULL, 10) : 0;
        if (!h) report(name, "HARMLESS", "%s (host inode unknown)", l);
        else if (hino == ino) report(name, "ALLOWED", "the probe runs in the HOST's %s namespace (%s)", types[i], l);
        else report(name, "BLOCKED", "%s, host has %lu", l, hino);
    }
    char m[256] = "";
    read_file("/proc/self/uid_map", m, sizeof m);
    chomp(m);
    unsigned a = 1, b = 1, c = 0;
    sscanf(m, "%u %u %u", &a, &b, &c);
    in_host_userns = (a == 0 && b == 0 && c == 4294967295u);
    if (in_host_userns) report("uid_map", "ALLOWED", "probe is HOST root: uid_map '%s' (initial user namespace)", m);
    else report("uid_map", "BLOCKED", "uid_map '%s' (root is an unprivileged host uid)", m);
    char st[4096];
    if (read_file("/proc/self/status", st, sizeof st) > 0) {
        char *ce = strstr(st, "CapEff:"), *sc = strstr(st, "Seccomp:");
        unsigned long long cap = ce ? strtoull(ce + 7, NULL, 16) : 0;
        int sm = sc ? atoi(sc + 8) : -1;
        printf("INFO CapEff=%llx Seccomp=%d uid=%d\n", cap, sm, getuid());
    }
}

/* ---------- new mount API, masked paths ---------- */

static void try_mount_api(void) {
    int fs = syscall(SYS_fsopen, "proc", 0);
    if (fs < 0) blocked_errno("fsopen_fsmount_proc", "fsopen(proc)", errno);
    else {
        long r = syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE_, NULL, NULL, 0);
        int e = errno;
        int mfd = r < 0 ? -1 : syscall(SYS_fsmount, fs, 0, 0);
        if (r >= 0 && mfd < 0) e = errno;
        close(fs);
        if (mfd < 0) report("fsopen_fsmount_proc", "BLOCKED", "fsconfig/fsmount: %s (errno %d)", strerror(e), e);
        else {
            int kc = openat(mfd, "kcore", O_RDONLY | O_CLOEXEC);
            int ke = errno;
            char b[8];
            ssize_t kr = kc >= 0 ? read(kc, b, 4) : -1;
            if (kc >= 0) close(kc);
            int tl = openat(mfd, "timer_list", O_RDONLY | O_CLOEXEC);
            if (tl >= 0) close(tl);
            close(mfd);
            if (kr == 4 && !memcmp(b, "\177ELF", 4)) report("fsopen_fsmount_proc", "ALLOWED", "fresh procfs exposes a readable kcore");
            else report("fsopen_fsmount_proc", "HARMLESS", "fresh procfs of the container's own pid namespace (kcore: %s; timer_list %s)", kc >= 0 ? "opened, unreadable" : strerror(ke), tl >= 0 ? "readable" : "not readable");
        }
    }
    int t = syscall(SYS_open_tree, AT_FDCWD, "/", OPEN_TREE_CLONE_ | AT_RECURSIVE_ | O_CLOEXEC);
    if (t < 0) { blocked_errno("open_tree_move_mount_unmask_kcore", "open_tree(/)", errno); }
    else {
        int out = dir_outside_root(t);
        long r = syscall(SYS_move_mount, t, "", AT_FDCWD, "/proc/kcore", MOVE_MOUNT_F_EMPTY_PATH_);
        int e = errno;
        close(t);
        if (r == 0) umount2("/proc/kcore", MNT_DETACH);
        if (out == 1) report("open_tree_move_mount_unmask_kcore", "ALLOWED", "open_tree(/) cloned a tree outside the container root");
        else report("open_tree_move_mount_unmask_kcore", "HARMLESS", "open_tree clones only the container's own tree; move_mount onto /proc/kcore: %s", r == 0 ? "ok (over the mask, in its own mount ns)" : strerror(e));
    }
    /* unmasking by unmounting the mask: the files behind must still be protected by the kernel */
    const char *masked[] = {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", NULL};
    for (int i = 0; masked[i]; i++) {
        char name[96];
        snprintf(name, sizeof name, "umount_mask(%s)", masked[i]);
        struct statfs sf;
        if (statfs(masked[i], &sf) < 0) { report(name, "BLOCKED", "absent: %s", strerror(errno)); continue; }
        if (umount2(masked[i], MNT_DETACH) < 0) { blocked_errno(name, "umount2", errno); continue; }
        char b[256];
        ssize_t r = read_file(masked[i], b, sizeof b);
        int e = errno;
        if (i == 0 && r >= 4 && !memcmp(b, "\177ELF", 4)) report(name, "ALLOWED", "mask removed and kcore readable");
        else if (r > 0) report(name, "HARMLESS", "mask removed in the container's own mount ns; %zd bytes readable (the kernel's view for this user namespace / world-readable on the host too)", r);
        else report(name, "HARMLESS", "mask removed in its own mount ns; reading: %s", r < 0 ? strerror(e) : "empty");
    }
}

/* ---------- leaked fds / cwd (CVE-2024-21626) ---------- */

static void check_fds(const char *name, const char *pid) {
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%s/fd", pid);
    DIR *d = opendir(dir);
    if (!d) { report(name, "BLOCKED", "cannot list %s: %s", dir, strerror(errno)); return; }
    char bad[700] = "", all[700] = "";
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
    if (cfd >= 0) close(cfd);
    if (nbad || cout == 1)
        report(name, "ALLOWED", "fds/cwd outside the container root:%s%s", bad, cout == 1 ? " cwd" : "");
    else
        report(name, "BLOCKED", "%d fds, none outside the container root; cwd '%s' inside (%s)", n, cwd, all);
}

/* ---------- CVE-2019-5736: overwrite the runtime through /proc/<pid>/exe ---------- */

static int race(int seconds) {
    time_t end = time(NULL) + seconds;
    pid_t self = getpid();
    int held[64], nheld = 0, scans = 0, opened_w = 0;
    char seen[600] = "";
    char errs[200] = "";
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
    else report(name, "BLOCKED", "%d scans; no foreign exe ever visible (joining processes showed only container binaries)", scans);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "race")) return race(atoi(argv[2]));
    const char *hostns = argc >= 3 ? argv[2] : NULL;
    if (argc >= 4) marker = argv[3];
    printf("INFO probe pid %d\n", getpid());
    try_namespaces(hostns);
    try_block_devices();
    try_char_node("mknod_read_dev_mem", 1, 1, "/dev/mem");
    try_char_node("mknod_read_dev_kmem", 1, 2, NULL);
    try_char_node("mknod_read_dev_port", 1, 4, NULL);
    try_char_node("mknod_read_kmsg", 1, 11, NULL);
    try_shocker();
    try_release_agent();
    try_cgroup_limits();
    try_sysctls();
    try_sysfs();
    try_syscalls();
    try_klog();
    try_kcore_kallsyms();
    try_userns_map();
    try_pids();
    try_keys();
    check_fds("leaked_fds_cwd(self)", "self");
    if (getpid() != 1) check_fds("leaked_fds_cwd(pid1)", "1");
    try_mount_api();
    printf("INFO done\n");
    return 0;
}

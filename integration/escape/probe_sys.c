/* Host-acting syscalls, the kernel log, sysctls, sysfs, the clock, kcore and kallsyms. */
#include "probe.h"

#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <sys/io.h>
#include <sys/klog.h>

static void gate(const char *name, long r, int e) {
    if (r >= 0) report(name, "ALLOWED", "call succeeded");
    else if (e == EPERM || e == EACCES) blocked_errno(name, "call", e);
    else if (e == ENOSYS) report(name, "N/A", "not in this kernel (ENOSYS)");
    else report(name, "ALLOWED", "privilege check passed, failed later: %s (errno %d)", strerror(e), e);
}

/* bpf and perf while the host has opened them to unprivileged users (planted
 * kernel.unprivileged_bpf_disabled=0, kernel.perf_event_paranoid=-1): only seccomp stands.
 * What they return is kept open until the host has looked at our fd table (second stop). */
static int held_fds[2] = {-1, -1};

void release_held_fds(void) {
    for (int i = 0; i < 2; i++)
        if (held_fds[i] >= 0) close(held_fds[i]);
}

void try_host_syscalls_planted(void) {
    uint64_t insns[2] = {0x00000000000000b7ULL /* r0 = 0 */, 0x0000000000000095ULL /* exit */};
    union bpf_attr at;
    memset(&at, 0, sizeof at);
    at.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    at.insn_cnt = 2;
    at.insns = (uint64_t)(uintptr_t)insns;
    at.license = (uint64_t)(uintptr_t)"GPL";
    long r = syscall(SYS_bpf, BPF_PROG_LOAD, &at, sizeof at);
    int e = errno;
    if (r >= 0) held_fds[0] = r;
    gate("bpf(BPF_PROG_LOAD)", r, e);
    struct perf_event_attr pa;
    memset(&pa, 0, sizeof pa);
    pa.size = sizeof pa;
    pa.type = PERF_TYPE_SOFTWARE;
    pa.config = PERF_COUNT_SW_CPU_CLOCK;
    pa.sample_period = 100000;
    r = syscall(SYS_perf_event_open, &pa, -1, 0, -1, 0);
    e = errno;
    if (r >= 0) held_fds[1] = r;
    gate("perf_event_open(system-wide,kernel)", r, e);
}

/* The host wrote a line starting with spec kmsg_prefix to its kernel log: quote it if seen. */
static void classify_log(const char *name, const char *buf, ssize_t n, const char *src) {
    if (n <= 0) { report(name, "BLOCKED", "%s: read %zd bytes", src, n); return; }
    const char *pre = spec("kmsg_prefix");
    /* the newest such line (the log keeps those of earlier runs too) */
    const char *m = NULL;
    for (const char *q = buf; pre && pre[0] && (q = memmem(q, n - (q - buf), pre, strlen(pre))); q++) m = q;
    char line[160] = "";
    if (m) {
        size_t k = 0;
        while (k < sizeof line - 1 && m + k < buf + n && m[k] != '\n') { line[k] = m[k]; k++; }
        line[k] = 0;
    }
    report(name, "ALLOWED", "%s: read %zd bytes of kernel log%s%s%s", src, n, m ? "; the host's line: '" : "", line, m ? "'" : "");
}

void try_klog(void) {
    static char buf[1 << 17];
    int r = klogctl(3 /* READ_ALL */, buf, sizeof buf);
    int e = errno;
    if (r < 0) blocked_errno("syslog(READ_ALL)", "syslog", e);
    else classify_log("syslog(READ_ALL)", buf, r, "syslog");
    int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) { blocked_or_absent("read_dev_kmsg", "open /dev/kmsg", errno); return; }
    ssize_t tot = 0, n;
    while (tot < (ssize_t)sizeof buf - 1024 && (n = read(fd, buf + tot, 1024)) > 0) tot += n;
    struct stat st;
    fstat(fd, &st);
    close(fd);
    if (tot <= 0) report("read_dev_kmsg", "BLOCKED", "/dev/kmsg is %u:%u and reads empty", major(st.st_rdev), minor(st.st_rdev));
    else classify_log("read_dev_kmsg", buf, tot, "/dev/kmsg");
}

static int is_fuse(const char *path) {
    struct statfs s;
    return statfs(path, &s) == 0 && (unsigned long)s.f_type == FUSE_SUPER_MAGIC_;
}

/* Writes the harness's value (never the one just read back: the host planted a canary that
 * differs from it) and reads back. */
static void try_sysctl(const char *rel, int namespaced) {
    char path[256], name[160], cur[4096], after[4096] = "", val[512];
    snprintf(path, sizeof path, "/proc/sys/%s", rel);
    snprintf(name, sizeof name, "sysctl_write(%s)", rel);
    if (read_file(path, cur, sizeof cur) < 0) { blocked_or_absent(name, "read", errno); return; }
    chomp(cur);
    /* the harness's two values: the first, unless we read that already */
    const char *v = spec_sysctl(rel);
    char v1[256] = "", v2[256] = "";
    if (v) sscanf(v, "%255s %255s", v1, v2);
    snprintf(val, sizeof val, "%s", !v ? cur : strcmp(cur, v1) || !v2[0] ? v1 : v2);
    int of;
    int w = write_file(path, val, &of);
    int e = errno;
    if (w < 0 && of) { blocked_errno(name, "open for write", e); return; }
    read_file(path, after, sizeof after);
    chomp(after);
    int fuse = is_fuse(path);
    const char *what = fuse ? "served by nestrun's FUSE emulation" : namespaced ? "per-namespace sysctl of the container's own namespace" : "GLOBAL sysctl";
    if (w < 0) {
        /* opened for writing: the permission check passed; only the value was refused */
        int gate_open = !fuse && !namespaced;
        report(name, gate_open ? "ALLOWED" : "BLOCKED", "%s opened for writing; '%s' refused: %s (errno %d)", what, val, strerror(e), e);
        return;
    }
    report(name, fuse || namespaced ? "HARMLESS" : "ALLOWED", "%s: was '%s', wrote '%s', reads back '%s'%s", what, cur, val, after, v ? "" : " (no value from the host)");
}

static void try_drop_caches(void) {
    const char *name = "sysctl_write(vm/drop_caches)";
    char v[32] = "0"; /* without a value from the host: 0, rejected (EINVAL) after the permission check */
    if (spec_sysctl("vm/drop_caches")) sscanf(spec_sysctl("vm/drop_caches"), "%31s", v);
    int of;
    int w = write_file("/proc/sys/vm/drop_caches", v, &of);
    int e = errno;
    if (w < 0 && of) blocked_errno(name, "open for write", e);
    else if (w < 0) report(name, "ALLOWED", "write gate open: '%s' reached the value check (%s)", v, strerror(e));
    else report(name, "ALLOWED", "write of '%s' accepted", v);
}

void try_sysctls(void) {
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
    if (fd < 0) blocked_or_absent("open_sysrq_trigger", "open O_WRONLY", errno);
    else { close(fd); report("open_sysrq_trigger", "ALLOWED", "opened for writing (nothing written)"); }
}

/* THP: the host planted a value; the probe writes the two others (spec `thp V1 V2`). */
void try_sysfs(void) {
    const char *p = "/sys/kernel/mm/transparent_hugepage/enabled";
    char cur[256], v1[32] = "", v2[32] = "";
    const char *t = spec("thp");
    if (t) sscanf(t, "%31s %31s", v1, v2);
    if (read_file(p, cur, sizeof cur) < 0) { blocked_or_absent("sysfs_write_thp", "read", errno); return; }
    chomp(cur);
    int of;
    if (write_file(p, v1, &of) < 0) {
        if (of) blocked_errno("sysfs_write_thp", "open for write", errno);
        else report("sysfs_write_thp", "BLOCKED", "write '%s': %s (errno %d)", v1, strerror(errno), errno);
    } else report("sysfs_write_thp", "ALLOWED", "was '%s', wrote '%s'", cur, v1);
    /* a fresh sysfs (allowed for the owner of the netns) must still not make the knob writable */
    mkdir("/tmp/.probe-sys", 0700);
    if (mount("sysfs", "/tmp/.probe-sys", "sysfs", 0, NULL) < 0) { blocked_errno("sysfs_fresh_mount_write_thp", "mount sysfs", errno); return; }
    if (write_file("/tmp/.probe-sys/kernel/mm/transparent_hugepage/enabled", v2, &of) < 0)
        report("sysfs_fresh_mount_write_thp", "BLOCKED", "fresh sysfs mounted; %s '%s': %s (errno %d)", of ? "open" : "write", v2, strerror(errno), errno);
    else report("sysfs_fresh_mount_write_thp", "ALLOWED", "fresh sysfs mounted and '%s' written", v2);
    umount2("/tmp/.probe-sys", MNT_DETACH);
}

/* The clock is set a few seconds ahead (spec clock_jump): the host sees a jump if it worked. */
void try_clock(void) {
    const char *j = spec("clock_jump");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += j ? atoi(j) : 0;
    long r = clock_settime(CLOCK_REALTIME, &ts);
    if (r == 0) report("clock_settime(now+jump)", "ALLOWED", "the realtime clock was set %s s ahead", j ? j : "0");
    else gate("clock_settime(now+jump)", r, errno);
}

void try_other_syscalls(void) {
    long r;
    static char empty[1];
    r = syscall(SYS_init_module, empty, 0UL, "");
    gate("init_module", r, errno);
    int nfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    r = syscall(SYS_finit_module, nfd, "", 0);
    gate("finit_module", r, errno);
    close(nfd);
    r = syscall(SYS_delete_module, "nestrun_probe_no_such_module", O_NONBLOCK);
    gate("delete_module", r, errno);
    r = iopl(3);
    int e = errno;
    if (r == 0) iopl(0);
    gate("iopl(3)", r, e);
    r = ioperm(0x80, 1, 1);
    e = errno;
    if (r == 0) ioperm(0x80, 1, 0);
    gate("ioperm(0x80)", r, e);
    r = acct("/tmp/.probe-acct");
    e = errno;
    if (r == 0) acct(NULL);
    gate("acct", r, e);
    r = syscall(SYS_settimeofday, NULL, NULL);
    gate("settimeofday(NULL,NULL)", r, errno);
    r = syscall(SYS_swapoff, "/nonexistent-probe-swap");
    gate("swapoff", r, errno);
    r = syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0UL);
    gate("kexec_load", r, errno);
}

void try_kcore_kallsyms(void) {
    int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
    if (fd < 0) blocked_or_absent("open_proc_kcore", "open", errno);
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
    if (!f) { blocked_or_absent("kallsyms_addresses", "open", errno); return; }
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

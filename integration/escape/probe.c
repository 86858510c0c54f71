/* nestrun escape probe: run as root inside a nested container; tries host-reaching actions.
 *
 * Usage: probe suite MODE        (reads the harness's spec from /probe.d/spec)
 *        probe race SECONDS      (CVE-2019-5736: watch /proc/<pid>/exe of joining processes)
 *
 * One line per attempt:  ATTEMPT <name> BLOCKED|HARMLESS|N/A|ALLOWED <detail>
 *   BLOCKED  the kernel/runtime refused (detail: errno or why)
 *   HARMLESS it succeeded, but only on the container's own namespaces/resources
 *   N/A      the thing attempted does not exist here (ENOENT, ENOSYS, never reached)
 *   ALLOWED  a real host-reaching effect or an open gate to one (a test failure)
 * This is the probe's own word. The harness (main.rs, host.rs) judges on the host as well: it
 * reads the probe's process from /proc/<pid> (namespaces, id maps, seccomp), plants values the
 * probe must try to change (sysctl canaries, a marker file, a kernel-log line, a key, a canary
 * process) and checks them afterwards; a host-side effect makes an attempt ALLOWED whatever
 * the probe says, and the host decides N/A (the thing does not exist on the host).
 *
 * Host checkpoints: the probe sets its comm to "probe-host1" and waits for SIGUSR1 (the host
 * inspects it and plants the canaries), then runs the attempts with a host-side effect, every
 * write with a value that differs from the planted one; then "probe-host2" (the host checks
 * the canaries and restores them); then the rest, which read or only open things.
 * Lines starting with INFO are context.
 */
#include "probe.h"

#include <sys/prctl.h>

const char *g_mode = "";
int in_host_userns;
static char spec_text[8192];

void report(const char *name, const char *res, const char *fmt, ...) {
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

void blocked_errno(const char *name, const char *what, int e) {
    report(name, "BLOCKED", "%s: %s (errno %d)", what, strerror(e), e);
}

void blocked_or_absent(const char *name, const char *what, int e) {
    if (e == ENOENT || e == ENOSYS || e == ENODEV)
        report(name, "N/A", "%s: %s (errno %d): not here", what, strerror(e), e);
    else
        blocked_errno(name, what, e);
}

ssize_t read_file(const char *path, char *buf, size_t n) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, n - 1);
    int e = errno;
    close(fd);
    if (r < 0) { errno = e; return -1; }
    buf[r] = 0;
    return r;
}

int write_file(const char *path, const char *val, int *open_failed) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (open_failed) *open_failed = fd < 0;
    if (fd < 0) return -1;
    ssize_t w = write(fd, val, strlen(val));
    int e = errno;
    close(fd);
    errno = e;
    return w < 0 ? -1 : 0;
}

void chomp(char *s) {
    size_t l = strlen(s);
    while (l && (s[l - 1] == '\n' || s[l - 1] == ' ')) s[--l] = 0;
}

int dir_outside_root(int dirfd) {
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

void read_marker_via(int dirfd, char *out, size_t n) {
    const char *m = spec("marker_file");
    if (!m) { snprintf(out, n, "no marker file given"); return; }
    int fd = dup(dirfd);
    struct stat cur, up;
    for (int i = 0; i < 512 && fd >= 0; i++) {
        int p = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (p < 0 || fstat(fd, &cur) < 0 || fstat(p, &up) < 0) { if (p >= 0) close(p); break; }
        close(fd);
        fd = p;
        if (up.st_dev == cur.st_dev && up.st_ino == cur.st_ino) break;
    }
    char buf[128] = "";
    int mf = fd >= 0 ? openat(fd, m + (m[0] == '/'), O_RDONLY | O_CLOEXEC) : -1;
    int e = errno;
    if (fd >= 0) close(fd);
    if (mf < 0) { snprintf(out, n, "host marker file %s: %s", m, strerror(e)); return; }
    ssize_t r = read(mf, buf, sizeof buf - 1);
    close(mf);
    buf[r > 0 ? r : 0] = 0;
    chomp(buf);
    snprintf(out, n, "READ the host marker file %s: '%s'", m, buf);
}

const char *spec(const char *key) {
    size_t kl = strlen(key);
    for (char *l = spec_text; l && *l;) {
        char *nl = strchr(l, '\n');
        if (!strncmp(l, key, kl) && l[kl] == ' ') {
            static char v[8][512];
            static int slot;
            char *o = v[slot++ % 8];
            size_t len = (nl ? (size_t)(nl - l) : strlen(l)) - kl - 1;
            snprintf(o, 512, "%.*s", (int)len, l + kl + 1);
            return o;
        }
        l = nl ? nl + 1 : NULL;
    }
    return NULL;
}

const char *spec_sysctl(const char *rel) {
    char key[200];
    snprintf(key, sizeof key, "sysctl %s", rel);
    return spec(key);
}

int spec_canary(long *pid, const char **name) {
    char key[64];
    snprintf(key, sizeof key, "canary %s", g_mode);
    const char *v = spec(key);
    if (!v) return -1;
    static char nm[128];
    if (sscanf(v, "%ld %127s", pid, nm) != 2) return -1;
    *name = nm;
    return 0;
}

void host_checkpoint(const char *phase) {
    const char *h = spec("handshake");
    int secs = h ? atoi(h) : 0;
    printf("INFO host checkpoint %s\n", phase);
    fflush(stdout);
    if (secs <= 0) return;
    prctl(PR_SET_NAME, phase);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    struct timespec t = {secs, 0};
    int r = sigtimedwait(&s, NULL, &t);
    prctl(PR_SET_NAME, "probe");
    if (r < 0) printf("INFO host checkpoint %s: no answer from the host within %d s (%s)\n", phase, secs, strerror(errno));
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "race")) return race(atoi(argv[2]));
    if (argc < 3 || strcmp(argv[1], "suite")) {
        fprintf(stderr, "usage: probe suite MODE | probe race SECONDS\n");
        return 2;
    }
    g_mode = argv[2];
    const char *sp = getenv("PROBE_SPEC") ? getenv("PROBE_SPEC") : "/probe.d/spec";
    if (read_file(sp, spec_text, sizeof spec_text) < 0) printf("INFO no spec file %s: %s\n", sp, strerror(errno));
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigprocmask(SIG_BLOCK, &s, NULL);
    printf("INFO probe pid %d mode %s\n", getpid(), g_mode);
    char m[256] = "";
    unsigned a = 1, b = 1, c = 0;
    read_file("/proc/self/uid_map", m, sizeof m);
    sscanf(m, "%u %u %u", &a, &b, &c);
    in_host_userns = a == 0 && b == 0 && c == 4294967295u; /* the initial user namespace */

    host_checkpoint("probe-host1");
    /* attempts with a host-side effect: the host planted canaries and checks them next */
    try_host_syscalls_planted();
    try_klog();
    try_cgroup_limits();
    try_release_agent();
    try_sysctls();
    try_sysfs();
    try_clock();
    try_keys();
    host_checkpoint("probe-host2");
    release_held_fds();

    try_namespaces();
    try_seccomp();
    try_block_devices();
    try_char_node("mknod_read_dev_mem", 1, 1, "/dev/mem");
    try_char_node("mknod_read_dev_kmem", 1, 2, NULL);
    try_char_node("mknod_read_dev_port", 1, 4, NULL);
    try_char_node("mknod_read_kmsg", 1, 11, NULL);
    try_host_marker_file();
    try_shocker();
    try_other_syscalls();
    try_kcore_kallsyms();
    try_userns_map();
    try_pids();
    check_fds("leaked_fds_cwd(self)", "self");
    if (getpid() != 1) check_fds("leaked_fds_cwd(pid1)", "1");
    try_mount_api();
    printf("INFO done\n");
    return 0;
}

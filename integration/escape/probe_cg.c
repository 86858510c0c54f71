/* Cgroups (v1 and v2): the container's limits, the device list, release_agent. */
#include "probe.h"

static int cg_v2(void) {
    struct statfs s;
    return statfs("/sys/fs/cgroup", &s) == 0 && (unsigned long)s.f_type == CGROUP2_SUPER_MAGIC_;
}

/* Our cgroup path for controller ctl (v1) or the unified line (ctl NULL), "" when not found. */
static void own_path(const char *ctl, char *out, size_t n) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[512];
    out[0] = 0;
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        char ctls[256], want[64];
        snprintf(ctls, sizeof ctls, ",%s,", c1 + 1);
        snprintf(want, sizeof want, ",%s,", ctl ? ctl : "");
        if (ctl ? !strstr(ctls, want) : strcmp(c1 + 1, "") != 0) continue;
        snprintf(out, n, "%s", c2 + 1);
        chomp(out);
        break;
    }
    fclose(f);
}

/* A value that differs from cur for a limit file (the host compares the container's file). */
static void other_value(const char *file, const char *cur, char *out, size_t n) {
    unsigned long long x = strtoull(cur, NULL, 10);
    if (strstr(file, "swap.max")) snprintf(out, n, "%s", strcmp(cur, "max") ? "max" : "0");
    else if (strstr(file, "memory.")) snprintf(out, n, "%llu", isdigit((unsigned char)cur[0]) && x && x < (1ULL << 50) ? x * 2 : 1073741824ULL);
    else if (strstr(file, "pids.max")) snprintf(out, n, "%s", strcmp(cur, "max") ? "max" : "4242");
    else if (strstr(file, "cfs_quota")) snprintf(out, n, "%s", strcmp(cur, "-1") ? "-1" : "50000");
    else if (strstr(file, "cpu.max")) snprintf(out, n, "%s", strncmp(cur, "max", 3) ? "max 100000" : "50000 100000");
    else if (strstr(file, "cpuset.cpus") && !cur[0]) snprintf(out, n, "0");
    else if (strstr(file, "cpuset.cpus")) snprintf(out, n, "%.*s", (int)strspn(cur, "0123456789"), cur);
    else snprintf(out, n, "%s", cur);
}

/* Writes another value into the limit file `path`. `own`: the file belongs to a cgroup that
 * something inside the container made (owned by the container's root, uid 0 here; the
 * container's own limit files stay host-root owned and show as the overflow uid), so writing
 * it is the nested engine's business: HARMLESS. The host checks the container's file and
 * where the value landed ({wrote=...}). */
static void try_limit(const char *name, const char *path, const char *ownp) {
    char cur[256], val[128];
    if (read_file(path, cur, sizeof cur) < 0) { blocked_or_absent(name, path, errno); return; }
    chomp(cur);
    other_value(path, cur, val, sizeof val);
    struct stat st;
    int own = stat(path, &st) == 0 && st.st_uid == 0;
    int of;
    int w = write_file(path, val, &of);
    int e = errno;
    if (w < 0 && of) { report(name, "BLOCKED", "%s: %s (errno %d)", path, strerror(e), e); return; }
    if (own && w < 0) report(name, "BLOCKED", "%s (own cgroup %s) opened; '%s' refused: %s", path, ownp, val, strerror(e));
    else if (own) report(name, "HARMLESS", "%s of our own cgroup %s (owned by the container's root, made by a nested engine): was '%s' {wrote=%s}; bounded by the namespace root's limits", path, ownp, cur, val);
    else if (w < 0) report(name, "ALLOWED", "%s opened for writing; '%s' refused: %s (errno %d)", path, val, strerror(e), e);
    else report(name, "ALLOWED", "%s: was '%s' {wrote=%s}", path, cur, val);
}

/* v1: the memory hierarchy (the container's own or a fresh mount) and our path below its root */
static int memcg(char *base, size_t bn, char *rel, size_t rn) {
    own_path("memory", rel, rn);
    if (!strcmp(rel, "/")) rel[0] = 0;
    char p[700];
    snprintf(base, bn, "/sys/fs/cgroup/memory");
    snprintf(p, sizeof p, "%s%s/memory.limit_in_bytes", base, rel);
    if (access(p, F_OK) == 0) return 0;
    mkdir("/tmp/.probe-mem", 0700);
    if (mount("cgroup", "/tmp/.probe-mem", "cgroup", 0, "memory") == 0) {
        snprintf(base, bn, "/tmp/.probe-mem");
        return 0;
    }
    return -1;
}

void try_cgroup_limits(void) {
    int v2 = cg_v2();
    char p[800], ownp[400];
    printf("INFO cgroup %s\n", v2 ? "v2" : "v1");
    if (v2) {
        own_path(NULL, ownp, sizeof ownp);
        if (strcmp(ownp, "/") && ownp[0]) {
            /* below the namespace root: our own child cgroup */
            snprintf(p, sizeof p, "/sys/fs/cgroup%s/memory.max", ownp);
            try_limit("cgroup_write_child_memory_limit", p, ownp);
        }
        try_limit("cgroup_raise_memory_limit", "/sys/fs/cgroup/memory.max", "/");
        try_limit("cgroup_write_pids_max", "/sys/fs/cgroup/pids.max", "/");
        try_limit("cgroup_write_cpu_quota", "/sys/fs/cgroup/cpu.max", "/");
        try_limit("cgroup_write_cpuset_cpus", "/sys/fs/cgroup/cpuset.cpus", "/");
        try_limit("cgroup_write_swap_limit", "/sys/fs/cgroup/memory.swap.max", "/");
        report("cgroup_devices_allow", "N/A", "cgroup v2: device access is an eBPF program of the runtime (loading one: the bpf row)");
        return;
    }
    char base[256], rel[400];
    if (memcg(base, sizeof base, rel, sizeof rel) < 0) report("cgroup_raise_memory_limit", "N/A", "no memory cgroup reachable: %s", strerror(errno));
    else {
        if (rel[0]) {
            snprintf(p, sizeof p, "%s%s/memory.limit_in_bytes", base, rel);
            try_limit("cgroup_write_child_memory_limit", p, rel);
        }
        snprintf(p, sizeof p, "%s/memory.limit_in_bytes", base);
        try_limit("cgroup_raise_memory_limit", p, "/");
    }
    struct { const char *name, *ctl, *file; } lim[] = {
        {"cgroup_write_pids_max", "pids", "pids.max"},
        {"cgroup_write_cpu_quota", "cpu", "cpu.cfs_quota_us"},
        {"cgroup_write_cpuset_cpus", "cpuset", "cpuset.cpus"},
        {"cgroup_write_swap_limit", "memory", "memory.memsw.limit_in_bytes"},
    };
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++) {
        /* An inner --privileged container of runc (cgroup v1, no cgroup namespace of its own)
         * gets its own cgroup dir, made by the nested engine, bound at /sys/fs/cgroup/<ctl>. */
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/%s", lim[i].ctl, lim[i].file);
        own_path(lim[i].ctl, ownp, sizeof ownp);
        try_limit(lim[i].name, p, ownp);
    }
    /* devices.allow: a rule the container does not have (/dev/mem, read): the host compares
     * the container's devices.list */
    const char *da = "/sys/fs/cgroup/devices/devices.allow";
    int of;
    if (write_file(da, "c 1:1 r", &of) < 0) {
        if (of) blocked_or_absent("cgroup_devices_allow", da, errno);
        else report("cgroup_devices_allow", "BLOCKED", "open ok, write: %s (errno %d)", strerror(errno), errno);
    } else report("cgroup_devices_allow", "ALLOWED", "wrote 'c 1:1 r' into devices.allow");
}

/* The host's agent (spec agent) written into release_agent, then triggered: a child cgroup
 * with notify_on_release that a short-lived process leaves. The host looks for the agent's
 * trace and compares every hierarchy's release_agent. */
static void try_agent(const char *name, const char *dir) {
    char p[600], child[600];
    const char *agent = spec("agent");
    if (!agent) agent = "/nonexistent/nestrun-probe-agent";
    snprintf(p, sizeof p, "%s/release_agent", dir);
    int of;
    if (write_file(p, agent, &of) < 0) {
        report(name, "BLOCKED", "%s %s: %s (errno %d)", p, of ? "open" : "write", strerror(errno), errno);
        return;
    }
    snprintf(child, sizeof child, "%s/probe-ra", dir);
    mkdir(child, 0755);
    snprintf(p, sizeof p, "%s/notify_on_release", child);
    write_file(p, "1", NULL);
    pid_t c = fork();
    if (c == 0) {
        char me[32];
        snprintf(me, sizeof me, "%d", getpid());
        snprintf(p, sizeof p, "%s/cgroup.procs", child);
        write_file(p, me, NULL);
        _exit(0);
    }
    waitpid(c, NULL, 0);
    usleep(200000);
    rmdir(child);
    report(name, "ALLOWED", "release_agent set to the host path %s and a release triggered", agent);
}

void try_release_agent(void) {
    mkdir("/tmp/.probe-cg", 0700);
    const char *opts[] = {"rdma", "none,name=escprobe", "memory", NULL};
    for (int i = 0; opts[i]; i++) {
        char name[96];
        snprintf(name, sizeof name, "release_agent_fresh_mount(%s)", opts[i]);
        if (mount("cgroup", "/tmp/.probe-cg", "cgroup", 0, opts[i]) < 0) { blocked_errno(name, "mount cgroup", errno); continue; }
        if (access("/tmp/.probe-cg/release_agent", F_OK) < 0) report(name, "BLOCKED", "mount ok but it is rooted at the cgroup namespace root: no release_agent file");
        else try_agent(name, "/tmp/.probe-cg");
        umount2("/tmp/.probe-cg", MNT_DETACH);
    }
    if (cg_v2()) return; /* v2 has no release_agent; the fresh v1 mounts above are the attempt */
    DIR *d = opendir("/sys/fs/cgroup");
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || de->d_type != DT_DIR) continue;
        char dir[512], path[600], name[128];
        snprintf(dir, sizeof dir, "/sys/fs/cgroup/%s", de->d_name);
        snprintf(path, sizeof path, "%s/release_agent", dir);
        snprintf(name, sizeof name, "release_agent_visible(%s)", de->d_name);
        if (access(path, F_OK) < 0) { report(name, "BLOCKED", "no release_agent at the visible top (cgroup namespace root)"); continue; }
        try_agent(name, dir);
    }
    closedir(d);
}

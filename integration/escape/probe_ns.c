/* Namespaces, id maps, seccomp, nested user namespaces, pids, keyrings. */
#include "probe.h"

void try_namespaces(void) {
    const char *hostns = spec("hostns");
    const char *types[] = {"user", "pid", "net", "mnt", "ipc", "uts", "cgroup", NULL};
    for (int i = 0; types[i]; i++) {
        char p[64], l[64], name[64], key[32];
        snprintf(p, sizeof p, "/proc/self/ns/%s", types[i]);
        snprintf(name, sizeof name, "own_%s_namespace", types[i]);
        ssize_t n = readlink(p, l, sizeof l - 1);
        if (n < 0) { blocked_or_absent(name, "readlink", errno); continue; }
        l[n] = 0;
        unsigned long ino = strtoul(strchr(l, '[') ? strchr(l, '[') + 1 : l, NULL, 10);
        snprintf(key, sizeof key, "%s=", types[i]);
        const char *h = hostns ? strstr(hostns, key) : NULL;
        /* a whole key ("user=" not inside "xuser=") */
        while (h && h != hostns && h[-1] != ',') h = strstr(h + 1, key);
        unsigned long hino = h ? strtoul(h + strlen(key), NULL, 10) : 0;
        if (!h) report(name, "HARMLESS", "%s (host inode unknown to the probe)", l);
        else if (hino == ino) report(name, "ALLOWED", "the probe runs in the HOST's %s namespace (%s)", types[i], l);
        else report(name, "BLOCKED", "%s, host has %lu", l, hino);
    }
    /* Every line of uid_map and gid_map: an id below nestrun's pool (host root included) in
     * the parent namespace is ALLOWED. (The host reads the same files from outside, where the
     * ids are the host's own.) */
    const char *ps = spec("pool_start");
    unsigned long pool = ps ? strtoul(ps, NULL, 10) : 1048576;
    char shown[600] = "";
    int bad = 0;
    for (int k = 0; k < 2; k++) {
        char m[512] = "";
        read_file(k ? "/proc/self/gid_map" : "/proc/self/uid_map", m, sizeof m);
        char *save = NULL;
        for (char *line = strtok_r(m, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            unsigned long in = 0, out = 0, cnt = 0;
            if (sscanf(line, "%lu %lu %lu", &in, &out, &cnt) == 3 && out < pool) bad++;
            while (*line == ' ') line++;
            snprintf(shown + strlen(shown), sizeof shown - strlen(shown), "%s%s '%s'", shown[0] ? "," : "", k ? "gid" : "uid", line);
        }
    }
    if (bad) report("uid_map", "ALLOWED", "%d map line(s) reach below the id pool (%lu; host root is 0):%s", bad, pool, shown);
    else report("uid_map", "BLOCKED", "every mapped id is in the pool from %lu:%s", pool, shown);
}

/* nestrun's profile denies iopl; iopl(4) is an EINVAL in the kernel before any privilege
 * check, so EPERM here means the filter stopped it, anything else means it reached the kernel. */
void try_seccomp(void) {
    char st[4096] = "";
    read_file("/proc/self/status", st, sizeof st);
    char *sc = strstr(st, "Seccomp:"), *sf = strstr(st, "Seccomp_filters:"), *ce = strstr(st, "CapEff:");
    int mode = sc ? atoi(sc + 8) : -1, nf = sf ? atoi(sf + 16) : -1;
    unsigned long long cap = ce ? strtoull(ce + 7, NULL, 16) : 0;
    printf("INFO CapEff=%llx Seccomp=%d filters=%d uid=%d\n", cap, mode, nf, getuid());
    long r = syscall(SYS_iopl, 4);
    int e = errno;
    if (mode == 2 && r < 0 && e == EPERM)
        report("seccomp_filter", "BLOCKED", "Seccomp %d, %d filter(s); iopl(4) stopped by the filter (EPERM)", mode, nf);
    else
        report("seccomp_filter", "ALLOWED", "Seccomp %d, %d filter(s); iopl(4): %s: host-acting syscalls meet only the kernel's own checks", mode, nf,
               r < 0 ? strerror(e) : "succeeded");
}

void try_userns_map(void) {
    int pfd[2], cfd[2];
    if (pipe(pfd) || pipe(cfd)) return;
    pid_t c = fork();
    if (c == 0) {
        close(pfd[0]);
        close(cfd[1]);
        char x = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
        if (write(pfd[1], &x, 1) < 0) _exit(1);
        if (read(cfd[0], &x, 1) < 0) _exit(1);
        _exit(0);
    }
    close(pfd[1]);
    close(cfd[0]);
    char x = 0;
    if (read(pfd[0], &x, 1) < 0) x = 0;
    if (x != 'y') {
        report("userns_map_foreign_uid", "BLOCKED", "unshare(CLONE_NEWUSER) failed");
    } else {
        /* uid 70000 of our namespace is outside the 65536 ids a nestrun container owns */
        char p[64];
        snprintf(p, sizeof p, "/proc/%d/uid_map", c);
        int w = write_file(p, "0 70000 1\n", NULL);
        int e = errno;
        if (w < 0) report("userns_map_foreign_uid", "BLOCKED", "nested userns created (harmless); mapping uid 70000: %s (errno %d)", strerror(e), e);
        else report("userns_map_foreign_uid", "ALLOWED", "mapped uid 70000 of the probe's namespace (not owned by the container)");
    }
    if (write(cfd[1], "x", 1) < 0) perror("write");
    waitpid(c, NULL, 0);
}

/* Every pid that answers kill(pid, 0) but has no /proc entry is outside our pid namespace;
 * the host's canary process (spec) is killed when it can be reached at all. */
void try_pids(void) {
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
    long cp = 0;
    const char *cn = NULL;
    char canary[200] = "no canary given";
    if (spec_canary(&cp, &cn) == 0) {
        char path[64], cl[256] = "";
        snprintf(path, sizeof path, "/proc/%ld/cmdline", cp);
        ssize_t n = read_file(path, cl, sizeof cl);
        int visible = n >= 0;
        int theirs = n > 0 && strstr(cl, cn) != NULL;
        if (!visible || theirs) {
            int r = kill(cp, SIGKILL);
            snprintf(canary, sizeof canary, "host canary pid %ld (%s): SIGKILL %s", cp, theirs ? "listed in our /proc" : "not in our /proc", r == 0 ? "DELIVERED" : strerror(errno));
        } else {
            snprintf(canary, sizeof canary, "host canary pid %ld is one of ours here (not signalled)", cp);
        }
    }
    char c1[256] = "";
    ssize_t n = read_file("/proc/1/cmdline", c1, sizeof c1);
    for (ssize_t i = 0; i < n; i++) if (!c1[i]) c1[i] = ' ';
    if (hidden) report("kill_host_pids", "ALLOWED", "%ld pids answer kill(pid,0) without a /proc entry (first %ld); %s", hidden, first_hidden, canary);
    else report("kill_host_pids", strstr(canary, "DELIVERED") ? "ALLOWED" : "BLOCKED", "pid namespace: %ld pids reachable by kill, all listed in /proc; %s; pid 1 is '%s'", live, canary, c1);
}

/* The host planted a key (spec key_desc) in host root's user keyring: its payload must never
 * show here. Every key of our user keyring is described and read. */
void try_keys(void) {
    char desc[256] = "";
    long id = syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -4 /* USER_KEYRING */, 1);
    if (id < 0) { blocked_errno("keyctl_user_keyring", "KEYCTL_GET_KEYRING_ID", errno); return; }
    if (syscall(SYS_keyctl, 6 /* DESCRIBE */, id, desc, sizeof desc - 1) < 0) { blocked_errno("keyctl_user_keyring", "KEYCTL_DESCRIBE", errno); return; }
    int32_t ids[64];
    long nk = syscall(SYS_keyctl, 11 /* READ */, id, ids, sizeof ids);
    const char *want = spec("key_desc");
    char found[300] = "";
    for (long i = 0; i < (nk > 0 ? nk / 4 : 0) && i < 64; i++) {
        char d[256] = "";
        if (syscall(SYS_keyctl, 6, (long)ids[i], d, sizeof d - 1) < 0) continue;
        if (!want || !strstr(d, want)) continue;
        char payload[128] = "";
        long r = syscall(SYS_keyctl, 11, (long)ids[i], payload, sizeof payload - 1);
        snprintf(found, sizeof found, "; the host's key '%s' is here, payload %s'%s'", want, r < 0 ? strerror(errno) : "READ ", r > 0 ? payload : "");
    }
    int host = in_host_userns || found[0];
    report("keyctl_user_keyring", host ? "ALLOWED" : "HARMLESS", "user keyring %ld '%s' holds %ld keys (%s)%s", id, desc, nk < 0 ? -1 : nk / 4,
           in_host_userns ? "the HOST root user's keyring" : "keyrings are per user namespace: this is the container's own", found);
}

/* A probe of the container's syscall supervisor (src/fuse/supervisor.rs), built static by
 * integration/supervisor.rs and integration/escape/supervisor.rs. One line of output per action.
 *   sv info            sysinfo(2): "totalram=N freeram=N sharedram=N bufferram=N totalswap=N
 *                      freeswap=N uptime=N procs=N mem_unit=N" (bytes), or "sysinfo ERRNO"
 *   sv listener        installs a seccomp filter with a listener (NEW_LISTENER, as LXD, crun's
 *                      notify plugins and Sysbox do): "listener ok" or "listener ERRNO (text)"
 *   sv badptr          sysinfo at an unmapped address, at NULL and into a read-only page:
 *                      "badptr ERRNO ERRNO ERRNO"
 *   sv bench N         N calls: "bench calls=N ns_per_call=N max_ns=N"
 *   sv flood SECONDS   calls sysinfo in a loop until the time is up: "flood calls=N errors=N"
 * ERRNO is a name (ENOSYS, EBUSY, EFAULT, ...). */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

static const char *ename(int e) {
    switch (e) {
    case ENOSYS: return "ENOSYS";
    case EBUSY: return "EBUSY";
    case EFAULT: return "EFAULT";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    default: return "other";
    }
}

static long raw_sysinfo(void *p) { return syscall(SYS_sysinfo, p); }

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int info(void) {
    struct sysinfo s;
    memset(&s, 0, sizeof s);
    if (raw_sysinfo(&s) != 0) {
        printf("sysinfo %s\n", ename(errno));
        return 1;
    }
    unsigned long long u = s.mem_unit ? s.mem_unit : 1;
    printf("totalram=%llu freeram=%llu sharedram=%llu bufferram=%llu totalswap=%llu freeswap=%llu uptime=%ld procs=%u mem_unit=%u\n",
           s.totalram * u, s.freeram * u, s.sharedram * u, s.bufferram * u, s.totalswap * u, s.freeswap * u, s.uptime,
           (unsigned)s.procs, s.mem_unit);
    return 0;
}

static int listener(void) {
    /* Allow everything; getppid goes to the listener (never called here). */
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        printf("listener %s (prctl: %s)\n", ename(errno), strerror(errno));
        return 1;
    }
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (fd < 0) {
        printf("listener %s (%s)\n", ename(errno), strerror(errno));
        return 1;
    }
    printf("listener ok\n");
    return 0;
}

static int badptr(void) {
    /* An address that is surely unmapped: a page mapped, then unmapped. */
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(p, 4096);
    int e1 = raw_sysinfo(p) == 0 ? 0 : errno;
    int e2 = raw_sysinfo(NULL) == 0 ? 0 : errno;
    /* A read-only page: the kernel refuses to write there; so must the supervisor. */
    unsigned char *ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int e3 = raw_sysinfo(ro) == 0 ? 0 : errno;
    int untouched = 1;
    for (int i = 0; i < 4096; i++)
        untouched &= ro[i] == 0;
    printf("badptr %s %s %s%s\n", e1 ? ename(e1) : "ok", e2 ? ename(e2) : "ok", e3 ? ename(e3) : "ok",
           untouched ? "" : " (read-only page written)");
    return 0;
}

static int bench(long n) {
    struct sysinfo s;
    long long max = 0, start = now_ns();
    for (long i = 0; i < n; i++) {
        long long t = now_ns();
        if (raw_sysinfo(&s) != 0) {
            printf("bench sysinfo %s\n", ename(errno));
            return 1;
        }
        t = now_ns() - t;
        if (t > max)
            max = t;
    }
    printf("bench calls=%ld ns_per_call=%lld max_ns=%lld\n", n, (now_ns() - start) / (n ? n : 1), max);
    return 0;
}

static int flood(long secs) {
    struct sysinfo s;
    long calls = 0, errors = 0;
    long long end = now_ns() + secs * 1000000000LL;
    while (now_ns() < end) {
        if (raw_sysinfo(&s) != 0)
            errors++;
        calls++;
    }
    printf("flood calls=%ld errors=%ld\n", calls, errors);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *cmd = argc > 1 ? argv[1] : "info";
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 1000;
    if (!strcmp(cmd, "info"))
        return info();
    if (!strcmp(cmd, "listener"))
        return listener();
    if (!strcmp(cmd, "badptr"))
        return badptr();
    if (!strcmp(cmd, "bench"))
        return bench(n);
    if (!strcmp(cmd, "flood"))
        return flood(n);
    fprintf(stderr, "usage: sv info|listener|badptr|bench N|flood SECONDS\n");
    return 2;
}

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
 *   sv sysconf         glibc's sysconf(_SC_PHYS_PAGES) * page size (from sysinfo) and
 *                      sysconf(_SC_NPROCESSORS_ONLN) (from /sys/devices/system/cpu/online):
 *                      "sysconf phys_bytes=N nprocessors_onln=N"
 *   sv read FILE N     N times open, read (8 KiB), close of FILE: "read calls=N ns_per_call=N"
 *   sv mountloop N DIR FSTYPE [lazy]
 *                      N times mount(FSTYPE, DIR, FSTYPE, nosuid|nodev|noexec) then umount2(DIR, 0)
 *                      (MNT_DETACH with `lazy`):
 *                      "mountloop fs=FSTYPE pairs=N ns_per_pair=N errors=N first=ERRNO|none"
 *   sv mountflood SECONDS DIR
 *                      procfs mount/umount pairs on DIR until the time is up: "mountflood pairs=N errors=N"
 *   sv mountbad        mount(2) of a procfs with a target of 8192 bytes and no NUL, one that runs
 *                      into an unreadable page, an unmapped fstype and a NULL target:
 *                      "mountbad ERRNO ERRNO ERRNO ERRNO"
 *   sv race DIR TARGET SECONDS
 *                      a child swaps DIR (a directory) with a symlink to TARGET as fast as it can
 *                      (renameat2 RENAME_EXCHANGE) while procfs is mounted on DIR and lazily
 *                      unmounted in a loop: "race mounts=N ok=N"
 * ERRNO is a name (ENOSYS, EBUSY, EFAULT, ...). */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOENT: return "ENOENT";
    case ENOTDIR: return "ENOTDIR";
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

static int readloop(const char *file, long n) {
    char buf[8192];
    long long start = now_ns();
    for (long i = 0; i < n; i++) {
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || read(fd, buf, sizeof buf) < 0) {
            printf("read %s %s\n", file, ename(errno));
            return 1;
        }
        close(fd);
    }
    printf("read calls=%ld ns_per_call=%lld\n", n, (now_ns() - start) / (n ? n : 1));
    return 0;
}

static const unsigned long NEW = MS_NOSUID | MS_NODEV | MS_NOEXEC;

static int mountloop(long n, const char *dir, const char *fs, int lazy) {
    long errors = 0;
    int first = 0;
    long long start = now_ns();
    for (long i = 0; i < n; i++) {
        if (mount(fs, dir, fs, NEW, NULL) != 0 || umount2(dir, lazy ? MNT_DETACH : 0) != 0) {
            if (!errors++)
                first = errno;
        }
    }
    printf("mountloop fs=%s%s pairs=%ld ns_per_pair=%lld errors=%ld first=%s\n", fs, lazy ? ",lazy" : "", n, (now_ns() - start) / (n ? n : 1), errors, errors ? ename(first) : "none");
    return 0;
}

static int mountflood(long secs, const char *dir) {
    long pairs = 0, errors = 0;
    long long end = now_ns() + secs * 1000000000LL;
    while (now_ns() < end) {
        if (mount("proc", dir, "proc", NEW, NULL) != 0 || umount2(dir, 0) != 0)
            errors++;
        pairs++;
    }
    printf("mountflood pairs=%ld errors=%ld\n", pairs, errors);
    return 0;
}

static int mountbad(void) {
    long pg = sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, 3 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + 2 * pg, pg, PROT_NONE) != 0)
        return 1;
    memset(m, 'a', 2 * pg);
    int e[4];
    e[0] = mount("proc", m, "proc", NEW, NULL) ? errno : 0;           /* 8192 bytes, no NUL */
    e[1] = mount("proc", m + 2 * pg - 64, "proc", NEW, NULL) ? errno : 0; /* runs into PROT_NONE */
    e[2] = mount("proc", "/tmp", m + 2 * pg, NEW, NULL) ? errno : 0;  /* fstype unreadable */
    e[3] = syscall(SYS_mount, "proc", NULL, "proc", NEW, NULL) ? errno : 0;
    printf("mountbad %s %s %s %s\n", ename(e[0]), ename(e[1]), ename(e[2]), ename(e[3]));
    return 0;
}

static int race(const char *dir, const char *target, long secs) {
    char alt[4096];
    snprintf(alt, sizeof alt, "%s.alt", dir);
    mkdir(dir, 0755);
    unlink(alt);
    if (symlink(target, alt) != 0)
        return 1;
    pid_t child = fork();
    if (child == 0) {
        for (;;)
            syscall(SYS_renameat2, AT_FDCWD, dir, AT_FDCWD, alt, 2 /* RENAME_EXCHANGE */);
    }
    long mounts = 0, okc = 0;
    long long end = now_ns() + secs * 1000000000LL;
    while (now_ns() < end) {
        mounts++;
        if (mount("proc", dir, "proc", NEW, NULL) == 0) {
            okc++;
            umount2(dir, MNT_DETACH);
        }
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    printf("race mounts=%ld ok=%ld\n", mounts, okc);
    return 0;
}

static int show_sysconf(void) {
    printf("sysconf phys_bytes=%lld nprocessors_onln=%ld\n", (long long)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE), sysconf(_SC_NPROCESSORS_ONLN));
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
    if (!strcmp(cmd, "sysconf"))
        return show_sysconf();
    if (!strcmp(cmd, "read") && argc > 3)
        return readloop(argv[2], strtol(argv[3], NULL, 10));
    if (!strcmp(cmd, "mountloop") && argc > 4)
        return mountloop(n, argv[3], argv[4], argc > 5 && !strcmp(argv[5], "lazy"));
    if (!strcmp(cmd, "mountflood") && argc > 3)
        return mountflood(n, argv[3]);
    if (!strcmp(cmd, "mountbad"))
        return mountbad();
    if (!strcmp(cmd, "race") && argc > 4)
        return race(argv[2], argv[3], strtol(argv[4], NULL, 10));
    fprintf(stderr, "usage: sv info|listener|badptr|bench N|flood SECONDS|sysconf|read FILE N|mountloop N DIR FSTYPE [lazy]|mountflood SECONDS DIR|mountbad|race DIR TARGET SECONDS\n");
    return 2;
}

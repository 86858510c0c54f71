/* nestrun escape probe: shared declarations (see probe.c for the protocol). */
#ifndef NESTRUN_PROBE_H
#define NESTRUN_PROBE_H
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CGROUP2_SUPER_MAGIC_ 0x63677270
#define FUSE_SUPER_MAGIC_ 0x65735546
#define PROC_SUPER_MAGIC_ 0x9fa0

/* One line per attempt: ATTEMPT <name> BLOCKED|HARMLESS|N/A|ALLOWED <detail>. */
void report(const char *name, const char *res, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void blocked_errno(const char *name, const char *what, int e);
/* BLOCKED, or N/A when errno says the thing does not exist here (ENOENT, ENOSYS, ENODEV). */
void blocked_or_absent(const char *name, const char *what, int e);

ssize_t read_file(const char *path, char *buf, size_t n);
/* Writes val to path: 0 on success, else -1 with errno (the open's or the write's). */
int write_file(const char *path, const char *val, int *open_failed);
void chomp(char *s);
/* 1 when dirfd (a directory) is not below our root, 0 when it is, -1 when unknown. */
int dir_outside_root(int dirfd);
/* From a directory fd outside our root: walk up to its top and try the host's marker file
 * (spec `marker_file`); describes what happened in out (the file's content if it was read). */
void read_marker_via(int dirfd, char *out, size_t n);

/* The harness's spec file (/probe.d/spec): `key value...` lines. */
const char *spec(const char *key);
/* Value of `sysctl <rel> <value>`, NULL when the harness gave none. */
const char *spec_sysctl(const char *rel);
/* The host pid and name of this mode's canary process (spec `canary <mode> <pid> <name>`). */
int spec_canary(long *pid, const char **name);
extern const char *g_mode;
extern int in_host_userns;

/* Pause until the host has looked (comm set to `phase`, SIGUSR1 ends the wait). */
void host_checkpoint(const char *phase);

/* probe_ns.c */
void try_namespaces(void);
void try_seccomp(void);
void try_userns_map(void);
void try_pids(void);
void try_keys(void);
/* probe_sys.c */
void try_host_syscalls_planted(void);
void release_held_fds(void);
void try_klog(void);
void try_sysctls(void);
void try_sysfs(void);
void try_clock(void);
void try_other_syscalls(void);
void try_kcore_kallsyms(void);
/* probe_cg.c */
void try_cgroup_limits(void);
void try_release_agent(void);
/* probe_mnt.c */
void try_block_devices(void);
void try_char_node(const char *name, unsigned maj, unsigned min, const char *existing);
void try_host_marker_file(void);
void try_shocker(void);
void try_mount_api(void);
void check_fds(const char *name, const char *pid);
int race(int seconds);
#endif

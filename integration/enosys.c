/* Calls each syscall number given on the command line with zero arguments and prints
 * "<nr> <errno name>" (or "<nr> ok"): what a new libc sees when it tries a call that the
 * container's seccomp profile does not know. Built static by integration/seccomp.rs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *name(int e) {
    switch (e) {
    case ENOSYS: return "ENOSYS";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case EFAULT: return "EFAULT";
    case EBADF: return "EBADF";
    default: return "other";
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long nr = strtol(argv[i], NULL, 10);
        errno = 0;
        long r = syscall(nr, 0, 0, 0, 0, 0, 0);
        if (r < 0)
            printf("%ld %s\n", nr, name(errno));
        else
            printf("%ld ok\n", nr);
    }
    return 0;
}

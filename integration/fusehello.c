/* fusehello MOUNTPOINT: a minimal FUSE file system without libfuse, for the integration test of
 * `io.nestrun.dev.fuse=true` (integration/system.rs). Opens /dev/fuse, mounts it at MOUNTPOINT
 * (mount(2) with fd=) and serves one read-only file, `hello`, whose content is
 * "hello from fuse\n". Prints "mounted" once the mount exists; exits when it is unmounted.
 * Built with `gcc -static`. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

struct in_hdr { uint32_t len, opcode; uint64_t unique, nodeid; uint32_t uid, gid, pid; uint16_t extlen, pad; };
struct out_hdr { uint32_t len; int32_t error; uint64_t unique; };
struct attr {
    uint64_t ino, size, blocks, atime, mtime, ctime;
    uint32_t atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags;
};
struct entry_out { uint64_t nodeid, generation, entry_valid, attr_valid; uint32_t entry_valid_nsec, attr_valid_nsec; struct attr attr; };
struct attr_out { uint64_t attr_valid; uint32_t attr_valid_nsec, dummy; struct attr attr; };
struct open_out { uint64_t fh; uint32_t open_flags; int32_t backing_id; };
struct init_in { uint32_t major, minor, max_readahead, flags; };
struct init_out {
    uint32_t major, minor, max_readahead, flags;
    uint16_t max_background, congestion_threshold;
    uint32_t max_write, time_gran;
    uint16_t max_pages, map_alignment;
    uint32_t flags2, max_stack_depth, unused[6];
};
struct read_in { uint64_t fh, offset; uint32_t size, read_flags; };

enum { LOOKUP = 1, FORGET = 2, GETATTR = 3, OPEN = 14, READ = 15, RELEASE = 18, INIT = 26, OPENDIR = 27, RELEASEDIR = 29, INTERRUPT = 36, DESTROY = 38, BATCH_FORGET = 42 };

static const char CONTENT[] = "hello from fuse\n";
static int fd;

static void reply(uint64_t unique, int error, const void *body, size_t n) {
    char buf[4096 + sizeof(struct out_hdr)];
    struct out_hdr h = {(uint32_t)(sizeof h + n), -error, unique};
    memcpy(buf, &h, sizeof h);
    if (n) memcpy(buf + sizeof h, body, n);
    if (write(fd, buf, sizeof h + n) < 0) perror("fusehello: write");
}

static void fill(struct attr *a, uint64_t ino) {
    memset(a, 0, sizeof *a);
    a->ino = ino;
    a->nlink = 1;
    if (ino == 1) {
        a->mode = S_IFDIR | 0755;
        a->nlink = 2;
    } else {
        a->mode = S_IFREG | 0444;
        a->size = sizeof CONTENT - 1;
    }
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: fusehello MOUNTPOINT\n"); return 2; }
    fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) { perror("fusehello: open /dev/fuse"); return 1; }
    mkdir(argv[1], 0755);
    char opts[128];
    snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0", fd);
    if (mount("fusehello", argv[1], "fuse", MS_NOSUID | MS_NODEV, opts) < 0) { perror("fusehello: mount"); return 1; }
    printf("mounted\n");
    fflush(stdout);
    static char buf[1 << 20 | 4096];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR || errno == ENOENT) continue;
            return errno == ENODEV ? 0 : (perror("fusehello: read"), 1); /* ENODEV: unmounted */
        }
        struct in_hdr *h = (struct in_hdr *)buf;
        void *arg = buf + sizeof *h;
        switch (h->opcode) {
        case INIT: {
            struct init_in *in = arg;
            struct init_out o = {7, in->minor < 31 ? in->minor : 31, in->max_readahead, 0, 16, 12, 65536, 1, 0, 0, 0, 0, {0}};
            reply(h->unique, 0, &o, sizeof o);
            break;
        }
        case LOOKUP: {
            if (h->nodeid != 1 || strcmp(arg, "hello") != 0) { reply(h->unique, ENOENT, NULL, 0); break; }
            struct entry_out e = {2, 0, 1, 1, 0, 0, {0}};
            fill(&e.attr, 2);
            reply(h->unique, 0, &e, sizeof e);
            break;
        }
        case GETATTR: {
            struct attr_out a = {1, 0, 0, {0}};
            fill(&a.attr, h->nodeid);
            reply(h->unique, 0, &a, sizeof a);
            break;
        }
        case OPEN: case OPENDIR: {
            struct open_out o = {0, 0, 0};
            reply(h->unique, 0, &o, sizeof o);
            break;
        }
        case READ: {
            struct read_in *r = arg;
            size_t len = sizeof CONTENT - 1, off = r->offset < len ? r->offset : len;
            size_t cnt = len - off < r->size ? len - off : r->size;
            reply(h->unique, 0, CONTENT + off, cnt);
            break;
        }
        case RELEASE: case RELEASEDIR:
            reply(h->unique, 0, NULL, 0);
            break;
        case FORGET: case BATCH_FORGET: case INTERRUPT:
            break; /* no reply */
        case DESTROY:
            reply(h->unique, 0, NULL, 0);
            return 0;
        default:
            reply(h->unique, ENOSYS, NULL, 0);
        }
    }
}

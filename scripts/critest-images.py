#!/usr/bin/env python3
"""Local stand-ins for the images critest pulls, and a loopback registry that serves them.

  critest-images.py build DIR            build the stand-ins into DIR (blobs/, tags/)
  critest-images.py serve DIR PORTFILE   serve DIR read-only (registry API v2, GET/HEAD)
                                         on 127.0.0.1, an ephemeral port written to PORTFILE
  critest-images.py list                 the references the stand-ins answer for

No registry is reachable from the test hosts, so scripts/critest makes the private CRI
containerd use this server as the mirror of registry.k8s.io, k8s.gcr.io and gcr.io (a mirror
drops the host name: registry.k8s.io/e2e-test-images/busybox is asked for as
/v2/e2e-test-images/busybox/...). The stand-ins are built here from the host's static busybox
(busybox-static; $BUSYBOX) and, for nonewprivs, a 3-line C program (gcc -static); they behave
as much as critest looks at: the web servers are busybox httpd (the nginx one is a script
named nginx that writes /var/run/nginx.pid, the httpd one logs "httpd" first), the
user images carry the USER critest expects, the tag images one marker file each.
"""
import hashlib
import http.server
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile

MTIME = 1577836800  # 2020-01-01
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}.get(
    platform.machine(), platform.machine())
E2E = "e2e-test-images/"
STAGING = "k8s-staging-cri-tools/"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
www-data:x:33:
nogroup:x:65534:
"""
NGINX = """#!/bin/sh
# stand-in for nginx: this script (comm "nginx", "master process" in its command line)
# stays, with busybox httpd on port $1 as its child
mkdir -p /var/run
echo $$ >/var/run/nginx.pid
trap 'kill $child; exit 0' TERM INT
httpd -f -p "${1:-80}" -h /usr/share/nginx/html &
child=$!
wait $child
"""
# applets bookworm's busybox-static lacks and critest runs
PGREP = """#!/bin/sh
# stand-in for pgrep PATTERN: pids whose name matches
for d in /proc/[0-9]*; do
  grep -q -- "$1" "$d/comm" 2>/dev/null && echo "${d#/proc/}"
done
exit 0
"""
IPCS = """#!/bin/sh
# stand-in for ipcs -m: the shared memory segments of this IPC namespace
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch"
awk 'NR > 1 {printf "0x%08x %-10s %-10s %-10s %-10s %s\\n", $1, $2, $8, $3, $4, $7}' /proc/sysvipc/shm
"""
HTTPD = """#!/bin/sh
# stand-in for httpd: busybox httpd on port 80
echo "httpd (busybox stand-in) listening on :80"
exec httpd -f -v -p 80 -h /usr/local/apache2/htdocs
"""
NNP_C = r"""#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\n", (int)geteuid()); return 0; }
"""


class Layer:
    """A tar layer built from entries (no root filesystem on disk, owners as given)."""

    def __init__(self):
        self.entries = {}

    def _add(self, name, kind, mode, data=b"", link="", uid=0, gid=0):
        parts = name.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            self.entries.setdefault(d, (tarfile.DIRTYPE, 0o755, b"", "", 0, 0))
        self.entries["/".join(parts)] = (kind, mode, data, link, uid, gid)

    def dir(self, name, mode=0o755):
        self._add(name, tarfile.DIRTYPE, mode)

    def file(self, name, data, mode=0o644, uid=0, gid=0):
        self._add(name, tarfile.REGTYPE, mode, data.encode() if isinstance(data, str) else data,
                  uid=uid, gid=gid)

    def symlink(self, name, target):
        self._add(name, tarfile.SYMTYPE, 0o777, link=target)

    def hardlink(self, name, target):
        self._add(name, tarfile.LNKTYPE, 0o755, link=target)

    def tar(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            # hard links after the files they name
            for name in sorted(self.entries, key=lambda n: (self.entries[n][0] == tarfile.LNKTYPE, n)):
                kind, mode, data, link, uid, gid = self.entries[name]
                ti = tarfile.TarInfo(name)
                ti.type, ti.mode, ti.mtime, ti.uid, ti.gid, ti.linkname = kind, mode, MTIME, uid, gid, link
                ti.size = len(data) if kind == tarfile.REGTYPE else 0
                t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        return buf.getvalue()


def base_layer():
    bb = os.environ.get("BUSYBOX", "/bin/busybox")
    if subprocess.run(["ldd", bb], capture_output=True).returncode == 0:
        sys.exit(f"critest-images: {bb} is not static (apt-get install busybox-static)")
    applets = subprocess.run([bb, "--list"], capture_output=True, text=True, check=True).stdout.split()
    lay = Layer()
    for d in ("dev", "proc", "sys", "root", "home", "etc", "var/run", "var/www", "usr/sbin", "usr/bin"):
        lay.dir(d, 0o700 if d == "root" else 0o755)
    lay.dir("tmp", 0o1777)
    with open(bb, "rb") as f:
        lay.file("bin/busybox", f.read(), 0o755)
    # hard links, as in busybox images (critest masks /bin/ls and expects sh to stay)
    for a in applets:
        if a != "busybox":
            lay.hardlink("bin/" + a, "bin/busybox")
    lay.file("bin/pgrep", PGREP, 0o755)
    lay.file("bin/ipcs", IPCS, 0o755)
    lay.symlink("sbin", "bin")
    lay.file("etc/passwd", PASSWD)
    lay.file("etc/group", GROUP)
    return lay.tar()


def nnp_binary():
    with tempfile.TemporaryDirectory() as d:
        with open(f"{d}/nnp.c", "w") as f:
            f.write(NNP_C)
        subprocess.run(["gcc", "-static", "-O2", "-o", f"{d}/nnp", f"{d}/nnp.c"], check=True)
        subprocess.run(["strip", f"{d}/nnp"], check=True)
        with open(f"{d}/nnp", "rb") as f:
            return f.read()


def extra(*items):
    """A layer from (kind, path, ...) items."""
    lay = Layer()
    for it in items:
        getattr(lay, it[0])(*it[1:])
    return lay.tar()


def web_layer(root, script, index):
    return extra(("file", "standin/start", script, 0o755), ("file", root + "/index.html", index))


def definitions():
    """(repo, tags, extra layers, image config) of every stand-in"""
    nginx = extra(("file", "usr/sbin/nginx", NGINX, 0o755),
                  ("file", "usr/share/nginx/html/index.html", "<h1>nginx stand-in</h1>\n"))
    defs = [
        (E2E + "busybox", ["1.29-2"], [], {"Cmd": ["sh"]}),
        (E2E + "nginx", ["1.14-2"], [nginx], {"Cmd": ["nginx", "80", "master process"]}),
        (STAGING + "hostnet-nginx-" + ARCH, ["latest"], [nginx], {"Cmd": ["nginx", "12003", "master process"]}),
        (E2E + "httpd", ["2.4.39-4"], [web_layer("usr/local/apache2/htdocs", HTTPD, "<h1>It works!</h1>\n")],
         {"Cmd": ["/standin/start"]}),
        (E2E + "nonewprivs", ["1.3"], [extra(("file", "usr/local/bin/nnp", nnp_binary(), 0o4755))],
         {"Cmd": ["/usr/local/bin/nnp"]}),
        ("pause", ["3.9"], [], {"Entrypoint": ["/bin/sleep", "infinity"]}),
    ]
    for name in ("test-image-latest", "test-image-1", "test-image-2", "test-image-3", "test-image-digest"):
        defs.append((STAGING + name, ["latest"], [extra(("file", name, ""))], {"Cmd": ["sh"]}))
    defs.append((STAGING + "test-image-tags", ["1", "2", "3"], [extra(("file", "same-image", ""))], {"Cmd": ["sh"]}))
    for tag in ("test", "all"):
        defs.append((STAGING + "test-image-tag", [tag], [extra(("file", tag, ""))], {"Cmd": ["sh"]}))
    for name, user in (("uid", "1002"), ("username", "www-data"), ("uid-group", "1003:1004"),
                       ("username-group", "www-data:1004")):
        defs.append((STAGING + "test-image-user-" + name, ["latest"], [], {"Cmd": ["sh"], "User": user}))
    group = extra(("file", "etc/passwd", PASSWD + "default-user:x:1000:1000::/home/default-user:/bin/sh\n"),
                  ("file", "etc/group", GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"),
                  ("dir", "home/default-user"))
    defs.append((STAGING + "test-image-predefined-group", ["latest"], [group], {"Cmd": ["sh"], "User": "1000"}))
    return defs


def put_blob(out, data):
    h = hashlib.sha256(data).hexdigest()
    path = f"{out}/blobs/sha256/{h}"
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)
    return {"digest": "sha256:" + h, "size": len(data)}


def build(out):
    os.makedirs(f"{out}/blobs/sha256", exist_ok=True)
    base = base_layer()
    for repo, tags, layers, cfg in definitions():
        layers = [base] + layers
        descs = [dict(mediaType=MT_LAYER, **put_blob(out, lay)) for lay in layers]
        config = {"architecture": ARCH, "os": "linux",
                  "config": dict({"Env": [PATH_ENV], "WorkingDir": "/"}, **cfg),
                  "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]},
                  "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "critest-images.py " + repo}]}
        cdesc = dict(mediaType=MT_CONFIG, **put_blob(out, json.dumps(config, sort_keys=True).encode()))
        manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": cdesc, "layers": descs}
        mdesc = put_blob(out, json.dumps(manifest, sort_keys=True).encode())
        os.makedirs(f"{out}/tags/{repo}", exist_ok=True)
        for tag in tags:
            with open(f"{out}/tags/{repo}/{tag}", "w") as f:
                f.write(mdesc["digest"])
            print(f"{repo}:{tag} {mdesc['digest']}")


class Registry(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."

    def log_message(self, fmt, *args):
        sys.stderr.write("critest-registry: " + (fmt % args) + "\n")

    def send(self, code, body=b"", ctype="application/json", digest=None):
        self.send_response(code)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def blob(self, digest):
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or not hexd.isalnum():
            return None
        try:
            with open(f"{self.root}/blobs/sha256/{hexd}", "rb") as f:
                return f.read()
        except OSError:
            return None

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v2":
            return self.send(200, b"{}")
        notfound = json.dumps({"errors": [{"code": "NOT_FOUND", "message": path}]}).encode()
        if not path.startswith("/v2/") or ".." in path:
            return self.send(404, notfound)
        for kind in ("/manifests/", "/blobs/"):
            repo, sep, ref = path[4:].rpartition(kind)
            if sep:
                break
        else:
            return self.send(404, notfound)
        if kind == "/manifests/" and not ref.startswith("sha256:"):
            try:
                with open(f"{self.root}/tags/{repo}/{ref}") as f:
                    ref = f.read().strip()
            except OSError:
                return self.send(404, notfound)
        data = self.blob(ref)
        if data is None:
            return self.send(404, notfound)
        if kind == "/manifests/":
            return self.send(200, data, json.loads(data).get("mediaType", MT_MANIFEST), ref)
        return self.send(200, data, "application/octet-stream", ref)

    do_HEAD = do_GET


def serve(root, portfile):
    Registry.root = root
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(portfile + ".tmp", portfile)
    srv.serve_forever()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "build":
        build(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2 and sys.argv[1] == "list":
        for repo, tags, _, _ in definitions():
            for tag in tags:
                print(f"{repo}:{tag}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

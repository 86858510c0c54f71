#!/usr/bin/env python3
"""Pod start benchmark through the CRI, as kubelet starts a pod: RunPodSandbox + CreateContainer
+ StartContainer of one busybox container, for the runc and nested handlers of the CRI
containerd of scripts/cri-containerd.sh, interleaved; then K pods at once per handler.

Usage: bench-pods.py [--rounds N] [--concurrent K] [--image IMAGE]
Run it through scripts/bench-pods (which starts that containerd and uses its venv).
Prints a Markdown table: median and p95 of the sequential starts, the nested/runc ratio, and
for K pods at once the wall time and the p95 of one pod's start.
"""
import argparse
import os
import statistics
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cri  # noqa: E402  (scripts/cri.py)
from cri_api.v1 import api_pb2  # noqa: E402

CGROUP_PARENT = os.environ.get("NESTRUN_CRI_CGROUP_PARENT", "nestrun-test-cri")


def pod_config(name):
    uid = f"{name}-uid"
    logs = os.environ.get("NESTRUN_CRI_LOGS", "/var/lib/nestrun-test/cri-logs")
    log_dir = f"{logs}/{uid}"
    os.makedirs(log_dir, exist_ok=True)
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, uid=uid, namespace="nestrun-bench"),
        hostname=name,
        log_directory=log_dir,
        linux=api_pb2.LinuxPodSandboxConfig(cgroup_parent=f"/{CGROUP_PARENT}/pod{uid}"),
    )


def start_pod(rt, handler, image):
    """One pod with one container; returns (seconds, pod id)."""
    name = f"bench-{handler}-{uuid.uuid4().hex[:8]}"
    cfg = pod_config(name)
    t0 = time.monotonic()
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg, runtime_handler=handler), timeout=300).pod_sandbox_id
    ccfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="c"),
        image=api_pb2.ImageSpec(image=image),
        command=["sleep", "100000"],
        log_path="c/0.log",
    )
    cid = rt.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg), timeout=300).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=300)
    return time.monotonic() - t0, pod


def remove_pod(rt, pod):
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=300)
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=300)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


def at_once(rt, handler, image, k):
    times, pods, errors = [], [], []
    lock = threading.Lock()

    def one():
        try:
            t, pod = start_pod(rt, handler, image)
            with lock:
                times.append(t)
                pods.append(pod)
        except Exception as e:  # a failed start is reported, not hidden
            with lock:
                errors.append(str(e))

    threads = [threading.Thread(target=one) for _ in range(k)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    for pod in pods:
        remove_pod(rt, pod)
    return wall, times, errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--image", default="docker.io/nestrun-test/busybox:latest")
    a = ap.parse_args()
    rt, _ = cri.stubs(os.environ.get("NESTRUN_CRI_ADDRESS") or cri.DEFAULT_ADDRESS)
    handlers = ["runc", "nested"]
    seq = {h: [] for h in handlers}
    for h in handlers:  # warm-up, not counted
        remove_pod(rt, start_pod(rt, h, a.image)[1])
    for _ in range(a.rounds):
        for h in handlers:
            t, pod = start_pod(rt, h, a.image)
            seq[h].append(t)
            remove_pod(rt, pod)
    conc = {h: at_once(rt, h, a.image, a.concurrent) for h in handlers}
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    print(f"| pod start (RunPodSandbox + CreateContainer + StartContainer), {a.rounds} rounds | runc | nested | nested/runc |")
    print("|---|---:|---:|---:|")
    med = {h: statistics.median(seq[h]) for h in handlers}
    print(f"| median | {ms(med['runc'])} | {ms(med['nested'])} | {med['nested'] / med['runc']:.2f}x |")
    p95 = {h: pct(seq[h], 95) for h in handlers}
    print(f"| p95 | {ms(p95['runc'])} | {ms(p95['nested'])} | {p95['nested'] / p95['runc']:.2f}x |")
    w = {h: conc[h][0] for h in handlers}
    print(f"| {a.concurrent} pods at once: wall time | {ms(w['runc'])} | {ms(w['nested'])} | {w['nested'] / w['runc']:.2f}x |")
    cp = {h: pct(conc[h][1], 95) if conc[h][1] else float('nan') for h in handlers}
    print(f"| {a.concurrent} pods at once: p95 of one pod | {ms(cp['runc'])} | {ms(cp['nested'])} | {cp['nested'] / cp['runc']:.2f}x |")
    ok = {h: f"{len(conc[h][1])}/{a.concurrent}" for h in handlers}
    print(f"| {a.concurrent} pods at once: started | {ok['runc']} | {ok['nested']} | |")
    for h in handlers:
        for e in conc[h][2][:3]:
            print(f"{h}: failed start: {e}", file=sys.stderr)
    return 0 if all(not conc[h][2] for h in handlers) else 1


if __name__ == "__main__":
    sys.exit(main())

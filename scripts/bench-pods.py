#!/usr/bin/env python3
"""Pod start benchmark through the CRI, as kubelet starts a pod: RunPodSandbox + CreateContainer
+ StartContainer of one busybox container, for the runc and nested handlers of the CRI
containerd of scripts/cri-containerd.sh, interleaved; then K pods at once per handler.

Usage: bench-pods.py [--rounds N] [--concurrent K] [--concurrent-rounds R] [--image IMAGE]
                     [--handlers runc,nested,...]
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
    ap.add_argument("--concurrent", type=int, default=20, help="0: no pods-at-once part")
    ap.add_argument("--concurrent-rounds", type=int, default=1, help="repeat the pods-at-once part, handlers in rotating order")
    ap.add_argument("--image", default="docker.io/nestrun-test/busybox:latest")
    ap.add_argument("--handlers", default="runc,nested", help="the first is the base of the ratios")
    a = ap.parse_args()
    rt, _ = cri.stubs(os.environ.get("NESTRUN_CRI_ADDRESS") or cri.DEFAULT_ADDRESS)
    handlers = a.handlers.split(",")
    base = handlers[0]
    seq = {h: [] for h in handlers}
    for h in handlers:  # warm-up, not counted
        remove_pod(rt, start_pod(rt, h, a.image)[1])
    for i in range(a.rounds):
        # the order rotates each round, so no handler always follows the same one
        for h in handlers[i % len(handlers):] + handlers[:i % len(handlers)]:
            t, pod = start_pod(rt, h, a.image)
            seq[h].append(t)
            remove_pod(rt, pod)
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    others = handlers[1:]

    def row(label, v):
        cells = " | ".join(ms(v[h]) for h in handlers)
        ratios = " | ".join(f"{v[h] / v[base]:.2f}x" for h in others)
        print(f"| {label} | {cells} | {ratios} |")

    print(f"| pod start (RunPodSandbox + CreateContainer + StartContainer), {a.rounds} rounds | "
          + " | ".join(handlers) + " | " + " | ".join(f"{h}/{base}" for h in others) + " |")
    print("|---|" + "---:|" * (len(handlers) + len(others)))
    row("median", {h: statistics.median(seq[h]) for h in handlers})
    row("p95", {h: pct(seq[h], 95) for h in handlers})
    if a.concurrent <= 0:
        return 0
    walls, p95s, started, errors = ({h: [] for h in handlers} for _ in range(4))
    for i in range(a.concurrent_rounds):
        for h in handlers[i % len(handlers):] + handlers[:i % len(handlers)]:
            wall, times, errs = at_once(rt, h, a.image, a.concurrent)
            walls[h].append(wall)
            p95s[h].append(pct(times, 95) if times else float("nan"))
            started[h].append(len(times))
            errors[h].extend(errs)
    n = f"{a.concurrent} pods at once" + (f" (median of {a.concurrent_rounds})" if a.concurrent_rounds > 1 else "")
    row(f"{n}: wall time", {h: statistics.median(walls[h]) for h in handlers})
    row(f"{n}: p95 of one pod", {h: statistics.median(p95s[h]) for h in handlers})
    total = a.concurrent * a.concurrent_rounds
    print(f"| {a.concurrent} pods at once: started | " + " | ".join(f"{sum(started[h])}/{total}" for h in handlers) + " |" + " |" * len(others))
    for h in handlers:
        for e in errors[h][:3]:
            print(f"{h}: failed start: {e}", file=sys.stderr)
    return 0 if all(not errors[h] for h in handlers) else 1


if __name__ == "__main__":
    sys.exit(main())

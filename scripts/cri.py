#!/usr/bin/env python3
"""A small CRI client for nestrun's Kubernetes tests: one CRI v1 call per run, JSON in and out.

Usage: cri.py [--address SOCK] [--timeout SECS] METHOD [REQUEST_JSON]
       cri.py [--address SOCK] wait SECS   until Status says RuntimeReady and NetworkReady
       cri.py [--address SOCK] cleanup     stop and remove every pod sandbox (and its containers)
       cri.py portforward URL PORT REQUEST_TEXT [SECS]  a PortForward URL, as kubectl port-forward
       cri.py stream URL [STDIN_TEXT [SECS]]  a streaming URL (Exec/Attach answer) as kubectl
                                  drives it over websocket: {"protocol", "stdout", "stderr",
                                  "status", "exit_code"}

METHOD is a RuntimeService or ImageService RPC name (RunPodSandbox, CreateContainer,
StartContainer, ExecSync, ContainerStatus, ListContainers, StopContainer, RemoveContainer,
StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox, UpdateContainerResources,
ContainerStats, Version, Status, ListImages, ImageStatus, ...). REQUEST_JSON is the request
message in protobuf's JSON mapping (proto field names or lowerCamelCase, enums by name), as
kubelet would fill it; "-" reads it from stdin. The answer is printed as one JSON object with
proto field names and every field (defaults included); the `info` maps of verbose status
answers have their JSON values decoded, and ExecSync's stdout/stderr are text, not base64.
A failed call prints `cri.py: METHOD: CODE: details` on stderr and exits 1 (2 for usage).

Address: --address, else $NESTRUN_CRI_ADDRESS, else /run/nestrun-test/cri/containerd.sock
(scripts/cri-containerd.sh's). Needs the PyPI packages container-runtime-interface-api
(generated cri_api.v1 stubs) and grpcio: scripts/cri-containerd.sh makes a venv with them.

stream: the URL of an Exec or Attach answer (containerd's stream server) is opened as a
websocket with kubectl's channel protocol `v4.channel.k8s.io` (every message starts with its
channel: 0 stdin, 1 stdout, 2 stderr, 3 error, whose JSON Status carries the exit code).
STDIN_TEXT (if not empty) is sent on stdin; v4 cannot close stdin, so the command must not wait
for its end. The stream is read until the server closes it, or for SECS (default 30: an Attach
ends only when the container does). Needs PyPI websocket-client (in the same venv).

portforward URL PORT REQUEST_TEXT [SECS]: the URL of a PortForward answer, opened as kubectl
port-forward opens it (websocket, `v4.channel.k8s.io`, `?port=PORT`); REQUEST_TEXT (with
backslash escapes such as \\r\\n) goes to the pod's port, and {"protocol", "ports", "data",
"error"} says what came back.
"""
import json
import os
import sys
import time

import grpc
from google.protobuf import json_format
from cri_api.v1 import api_pb2, api_pb2_grpc

DEFAULT_ADDRESS = "/run/nestrun-test/cri/containerd.sock"


def usage(msg=None):
    if msg:
        print(f"cri.py: {msg}", file=sys.stderr)
    print(__doc__.split("\n\n")[1] if msg else __doc__, file=sys.stderr)
    sys.exit(2)


def stubs(address):
    target = address if "://" in address else f"unix://{address}"
    channel = grpc.insecure_channel(target)
    return api_pb2_grpc.RuntimeServiceStub(channel), api_pb2_grpc.ImageServiceStub(channel)


def to_dict(msg):
    return json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def decode_info(d):
    """The verbose `info` maps hold JSON documents as strings: decode them in place."""
    if isinstance(d, dict):
        for k, v in d.items():
            if k == "info" and isinstance(v, dict):
                for ik, iv in v.items():
                    try:
                        v[ik] = json.loads(iv)
                    except (TypeError, ValueError):
                        pass
            else:
                decode_info(v)
    elif isinstance(d, list):
        for v in d:
            decode_info(v)
    return d


def call(runtime, image, method, request_json, timeout):
    req_cls = getattr(api_pb2, f"{method}Request", None)
    stub = runtime if hasattr(runtime, method) else image if hasattr(image, method) else None
    if req_cls is None or stub is None:
        usage(f"unknown CRI method {method!r}")
    try:
        req = json_format.Parse(request_json or "{}", req_cls())
    except json_format.ParseError as e:
        usage(f"{method}: bad request JSON: {e}")
    resp = getattr(stub, method)(req, timeout=timeout)
    out = decode_info(to_dict(resp))
    if method == "ExecSync":
        out["stdout"] = resp.stdout.decode("utf-8", "replace")
        out["stderr"] = resp.stderr.decode("utf-8", "replace")
    return out


def wait_ready(runtime, secs):
    end = time.monotonic() + secs
    last = None
    while True:
        try:
            conds = {c.type: c for c in runtime.Status(api_pb2.StatusRequest(), timeout=5).status.conditions}
            if all(conds.get(t) is not None and conds[t].status for t in ("RuntimeReady", "NetworkReady")):
                return {"ready": True}
            last = "; ".join(f"{t}={c.status} {c.reason} {c.message}" for t, c in conds.items())
        except grpc.RpcError as e:
            last = f"{e.code().name}: {e.details()}"
        if time.monotonic() > end:
            print(f"cri.py: not ready after {secs}s: {last}", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.5)


def cleanup(runtime):
    """What a kubelet does for pods it no longer wants: stop, then remove, each sandbox."""
    removed, failed = [], []
    for pod in runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=30).items:
        try:
            runtime.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=120)
            runtime.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=120)
            removed.append(pod.id)
        except grpc.RpcError as e:
            failed.append({"id": pod.id, "error": f"{e.code().name}: {e.details()}"})
    return {"removed": removed, "failed": failed}


def stream(url, stdin_text, secs):
    import websocket  # PyPI websocket-client

    proto = "v4.channel.k8s.io"
    ws = websocket.create_connection(url.replace("http", "ws", 1), subprotocols=[proto], timeout=secs)
    out = {"protocol": ws.subprotocol, "stdout": "", "stderr": "", "status": None, "exit_code": None}
    if stdin_text:
        ws.send_binary(b"\x00" + stdin_text.encode())
    end = time.monotonic() + secs
    chans = {1: "stdout", 2: "stderr"}
    try:
        while time.monotonic() < end:
            ws.settimeout(max(0.1, end - time.monotonic()))
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            if not data:
                continue
            if data[0] in chans:
                out[chans[data[0]]] += data[1:].decode("utf-8", "replace")
            elif data[0] == 3 and len(data) > 1:
                out["status"] = json.loads(data[1:])
    except (websocket.WebSocketTimeoutException, websocket.WebSocketConnectionClosedException):
        pass
    ws.close()
    st = out["status"]
    if st is not None:
        out["exit_code"] = 0
        if st.get("status") != "Success":
            causes = (st.get("details") or {}).get("causes") or []
            codes = [c.get("message") for c in causes if c.get("reason") == "ExitCode"]
            out["exit_code"] = int(codes[0]) if codes else -1
    return out


def portforward(url, port, request, secs):
    """kubectl port-forward over the stream server's websocket: `port` as a query parameter,
    channel 0 data and 1 errors for it (each first carries the port, 2 bytes little endian);
    `request` is sent on the data channel, and what comes back is read until the server closes
    the stream, for `secs` at most, or 1 s after the last data once some arrived."""
    import websocket  # PyPI websocket-client

    proto = "v4.channel.k8s.io"
    sep = "&" if "?" in url else "?"
    ws = websocket.create_connection(url.replace("http", "ws", 1) + f"{sep}port={port}", subprotocols=[proto], timeout=secs)
    out = {"protocol": ws.subprotocol, "data": "", "error": "", "ports": []}
    end = time.monotonic() + secs
    seen = {0: False, 1: False}
    sent = False
    try:
        while time.monotonic() < end:
            quiet = 1.0 if out["data"] else end - time.monotonic()
            ws.settimeout(max(0.1, min(quiet, end - time.monotonic())))
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                if out["data"]:
                    break
                continue
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            if not data or data[0] not in seen:
                continue
            if not seen[data[0]]:
                seen[data[0]] = True
                out["ports"].append(int.from_bytes(data[1:3], "little"))
            else:
                out["data" if data[0] == 0 else "error"] += data[1:].decode("utf-8", "replace")
            if all(seen.values()) and not sent:
                ws.send_binary(b"\x00" + request.encode())
                sent = True
    except (websocket.WebSocketConnectionClosedException, OSError):
        pass  # the server ends the stream when the pod's port refuses
    ws.close()
    return out


def main(argv):
    address = os.environ.get("NESTRUN_CRI_ADDRESS") or DEFAULT_ADDRESS
    timeout = 180.0
    while argv and argv[0].startswith("--"):
        opt = argv.pop(0)
        if opt in ("--address", "--timeout") and argv:
            val = argv.pop(0)
            if opt == "--address":
                address = val
            else:
                timeout = float(val)
        elif opt == "--help":
            usage()
        else:
            usage(f"unknown option {opt}")
    if not argv:
        usage("no method")
    method, rest = argv[0], argv[1:]
    if method == "stream":
        if not 1 <= len(rest) <= 3:
            usage("stream URL [STDIN_TEXT [SECS]]")
        out = stream(rest[0], rest[1] if len(rest) > 1 else "", float(rest[2]) if len(rest) > 2 else 30.0)
        json.dump(out, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    if method == "portforward":
        if not 3 <= len(rest) <= 4:
            usage("portforward URL PORT REQUEST_TEXT [SECS]")
        out = portforward(rest[0], int(rest[1]), rest[2].encode().decode("unicode_escape"), float(rest[3]) if len(rest) > 3 else 20.0)
        json.dump(out, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    if len(rest) > 1:
        usage("one REQUEST_JSON argument at most")
    runtime, image = stubs(address)
    try:
        if method == "wait":
            out = wait_ready(runtime, float(rest[0]) if rest else 30)
        elif method == "cleanup":
            out = cleanup(runtime)
        else:
            body = rest[0] if rest else None
            if body == "-":
                body = sys.stdin.read()
            out = call(runtime, image, method, body, timeout)
    except grpc.RpcError as e:
        print(f"cri.py: {method}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

//! Streaming through containerd's stream server as kubectl drives it (`kubectl exec`,
//! `kubectl attach`), under the `runc` and `nested` handlers: the CRI's Exec and Attach answer
//! a URL, which `scripts/cri.py stream` opens as a websocket with the `v4.channel.k8s.io`
//! channel protocol (stdin, stdout, stderr, and the error channel with the exit status);
//! `kubectl port-forward` (PortForward, `scripts/cri.py portforward`), which containerd serves
//! by dialling localhost:PORT inside the pod's network namespace *path*.
use std::time::Duration;

use serde_json::{json, Value};

use crate::cri::*;
use crate::util::*;

/// `scripts/cri.py stream URL STDIN SECS`: what came back on each channel.
fn stream(url: &str, stdin: &str, secs: u32) -> Value {
    let python = std::env::var("NESTRUN_CRI_PYTHON").unwrap_or_else(|_| "/var/lib/nestrun-test/cri-venv/bin/python".into());
    let mut c = std::process::Command::new(python);
    c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cri.py")).args(["stream", url, stdin, &secs.to_string()]);
    let o = run_cmd(c, Duration::from_secs(secs as u64 + 60)).ok();
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("cri.py stream: bad JSON ({e}): {}", o.stdout))
}

/// The URL of an Exec or Attach answer: on the stream server containerd listens on (loopback).
fn url(method: &str, req: Value) -> String {
    let r = cri(method, req);
    let u = r["url"].as_str().unwrap_or_default().to_string();
    assert!(u.starts_with("http://127.0.0.1:") && u.contains(&format!("/{}/", method.to_lowercase())), "{method} answered {r}");
    u
}

fn streaming(test: &str, handler: &str) {
    let mut pod = Pod::run(test, handler, "CONTAINER");
    let app = pod.start("app", &["sh", "-c", "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo tick$i; sleep 0.3; done"]);
    // kubectl exec -i: stdin in, stdout and stderr apart, the exit code on the error channel
    let script = "read line; echo out:$line; id -u; echo err:$line >&2; exit 3";
    let u = url("Exec", json!({"container_id": app, "cmd": ["sh", "-c", script], "stdin": true, "stdout": true, "stderr": true}));
    let r = stream(&u, "hello-stdin\n", 30);
    assert_eq!(r["protocol"], "v4.channel.k8s.io", "{r}");
    assert_eq!((r["stdout"].as_str(), r["stderr"].as_str(), r["exit_code"].as_i64()), (Some("out:hello-stdin\n0\n"), Some("err:hello-stdin\n"), Some(3)), "{r}");
    // a command that succeeds: Success status, exit code 0; its processes are the container's
    let u = url("Exec", json!({"container_id": app, "cmd": ["sh", "-c", "cat /proc/self/uid_map; hostname"], "stdout": true, "stderr": true}));
    let r = stream(&u, "", 30);
    assert_eq!(r["exit_code"].as_i64(), Some(0), "{r}");
    assert_eq!(r["status"]["status"], "Success", "{r}");
    let out = r["stdout"].as_str().unwrap_or_default();
    let map = out.lines().next().unwrap_or_default();
    assert!(out.ends_with(&format!("{}\n", pod.config["hostname"].as_str().unwrap())), "{r}");
    if handler == "nested" {
        let (start, count) = pod_range(&pod);
        assert_eq!(root_range(map), (start, count), "the streamed exec is not in the pod's range: {map}");
    } else {
        assert_eq!(map.split_whitespace().collect::<Vec<_>>(), ["0", "0", "4294967295"]);
    }
    // kubectl attach: the container's own output, live
    let u = url("Attach", json!({"container_id": app, "stdout": true, "stderr": true}));
    let r = stream(&u, "", 3);
    let ticks: Vec<&str> = r["stdout"].as_str().unwrap_or_default().lines().collect();
    assert!(ticks.len() >= 3 && ticks.iter().all(|t| t.starts_with("tick")), "attach: {r}");
    if handler == "nested" {
        assert_nested_traces(&pod);
    }
    remove_and_check(&mut pod);
}

#[test]
fn streaming_exec_and_attach_runc_handler() {
    need_cri!("streaming_exec_and_attach_runc_handler");
    streaming("cri-stream-runc", "runc");
}

#[test]
fn streaming_exec_and_attach_nested() {
    need_cri!("streaming_exec_and_attach_nested");
    streaming("cri-stream-nested", "nested");
}

/// kubectl port-forward to a busybox httpd in the pod: containerd enters the network namespace
/// it made for the pod (its path, not the pause process's) and dials localhost there. Under
/// nested on containerd 1.x the interfaces moved into the pod's own namespace; the engine's
/// path is re-pointed at that namespace, so it reaches the server.
fn port_forward(test: &str, handler: &str) {
    let mut pod = Pod::run(test, handler, "CONTAINER");
    pod.start("web", &["sh", "-c", "mkdir -p /www && echo forwarded-$HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www"]);
    let python = std::env::var("NESTRUN_CRI_PYTHON").unwrap_or_else(|_| "/var/lib/nestrun-test/cri-venv/bin/python".into());
    let mut got = Value::Null;
    // until httpd listens; each URL serves one stream
    for _ in 0..20 {
        let r = cri("PortForward", json!({"pod_sandbox_id": pod.id, "port": [8080]}));
        let u = r["url"].as_str().unwrap_or_default().to_string();
        assert!(u.starts_with("http://127.0.0.1:") && u.contains("/portforward/"), "PortForward answered {r}");
        let mut c = std::process::Command::new(&python);
        c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cri.py")).args(["portforward", &u, "8080", "GET /index.html HTTP/1.0\\r\\n\\r\\n", "10"]);
        let o = run_cmd(c, Duration::from_secs(60)).ok();
        got = serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("cri.py portforward: bad JSON ({e}): {}", o.stdout));
        if got["data"].as_str().is_some_and(|d| d.contains("forwarded-")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(got["ports"], json!([8080, 8080]), "{got}");
    let body = got["data"].as_str().unwrap_or_default();
    assert!(body.starts_with("HTTP/1.") && body.contains(&format!("forwarded-{}", pod.config["hostname"].as_str().unwrap())), "port-forward to 8080: {got}");
    if handler == "nested" {
        assert_nested_traces(&pod);
    }
    remove_and_check(&mut pod);
}

#[test]
fn port_forward_runc_handler() {
    need_cri!("port_forward_runc_handler");
    port_forward("cri-pf-runc", "runc");
}

#[test]
fn port_forward_nested() {
    need_cri!("port_forward_nested");
    port_forward("cri-pf-nested", "nested");
}

//! Golden fixtures: real config.json files captured from docker, containerd (ctr) and podman
//! (`scripts/capture-spec.sh`), rewritten with pinned facts and compared with the blessed output.
//!
//! Each `spec-fixtures/<source>-<scenario>/` holds
//! - `input.json`: the engine's config.json, verbatim;
//! - `facts.json`: the `Facts` gather would produce for it (written by capture-spec.sh);
//! - `expected.json` (pretty JSON of the rewritten spec) or `expected-error.txt` (the exact
//!   error message, for bundles nestrun must refuse);
//! - optionally `known-bug.txt`: the expectation is what the rewrite SHOULD do but does not yet.
//!   The mismatch is reported, not failed; once the rewrite matches, the test fails until the
//!   file is deleted (a strict expected-failure). Blessing never touches such a fixture.
//!
//! `NESTRUN_BLESS=1 cargo test golden` rewrites expected.json / expected-error.txt from the
//! current pipeline. Review the diff (git diff spec-fixtures) before committing it.
//!
//! Besides the comparison, every fixture checks that the rewrite is idempotent and that every
//! output passes libcontainer's `Validator::validate_spec` (the checks youki runs before create).
//! One of those checks stats a network namespace `path` when net.* sysctls are set (to refuse
//! sysctls in the host netns); captured paths (podman's /run/netns/netns-...) are gone by now,
//! so the validator sees a copy without namespace paths: a joined netns is checked as a
//! private one, which is what nestrun requires of it anyway.
//!
//! Output is compared as canonical JSON: object keys sorted, and the capability sets (HashSets
//! in oci-spec, so in random order) sorted.
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;
use serde_json::Value;

use crate::facts::Facts;

/// The captured scenarios; each must have a fixture (an empty or half-copied directory fails).
const SCENARIOS: &[&str] = &[
    "dockerd-default",
    "dockerd-limits",
    "dockerd-volume",
    "dockerd-varlibdocker",
    "dockerd-readonly",
    "dockerd-user",
    "dockerd-privileged",
    "dockerd-userns-host",
    "dockerd-hostnet",
    "containerd-ctr",
    "podman-default",
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec-fixtures")
}

/// Keys sorted (whatever serde_json's map type), capability arrays sorted.
pub(crate) fn canonical(v: Value) -> Value {
    fn walk(v: Value, path: &[String]) -> Value {
        match v {
            Value::Object(m) => {
                let mut entries: Vec<(String, Value)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let mut out = serde_json::Map::new();
                for (k, v) in entries {
                    let mut p = path.to_vec();
                    p.push(k.clone());
                    out.insert(k, walk(v, &p));
                }
                Value::Object(out)
            }
            Value::Array(a) => {
                let is_capset = path.len() == 3 && path[0] == "process" && path[1] == "capabilities";
                let mut a: Vec<Value> = a.into_iter().map(|x| walk(x, path)).collect();
                if is_capset {
                    a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
                }
                Value::Array(a)
            }
            v => v,
        }
    }
    walk(v, &[])
}

fn to_canonical(spec: &Spec) -> Value {
    canonical(serde_json::to_value(spec).expect("a Spec serialises"))
}

/// The first JSON pointer where `a` and `b` differ, with both values there.
pub(crate) fn first_diff(a: &Value, b: &Value, at: &str) -> Option<String> {
    let show = |v: Option<&Value>| v.map_or("<absent>".to_string(), |v| {
        let s = v.to_string();
        if s.chars().count() > 300 { format!("{}...", s.chars().take(300).collect::<String>()) } else { s }
    });
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_diff(u, v, &p) {
                            return Some(d);
                        }
                    }
                    (u, v) => return Some(format!("{p}: expected {}, got {}", show(u), show(v))),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{at}/{i}");
                match (x.get(i), y.get(i)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_diff(u, v, &p) {
                            return Some(d);
                        }
                    }
                    (u, v) => return Some(format!("{p}: expected {}, got {} (lengths {} vs {})", show(u), show(v), x.len(), y.len())),
                }
            }
            None
        }
        _ if a == b => None,
        _ => Some(format!("{}: expected {}, got {}", if at.is_empty() { "/" } else { at }, show(Some(a)), show(Some(b)))),
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("serialises");
    s.push('\n');
    s
}

/// What youki checks before create (`Validator::validate_spec`), on a copy without namespace
/// paths: see the module doc. Shared with the fuzzer (`crate::fuzz`).
pub(crate) fn validate_for_create(spec: &Spec) -> Result<(), String> {
    let mut for_validator = spec.clone();
    if let Some(nss) = for_validator.linux_mut().as_mut().and_then(|l| l.namespaces_mut().as_mut()) {
        for ns in nss.iter_mut() {
            ns.set_path(None);
        }
    }
    libcontainer::validator::Validator::validate_spec(&for_validator).map_err(|e| format!("{e} ({e:?})"))
}

/// What rewriting one fixture gave, for comparison with its expectation.
enum Outcome {
    Spec(Value),
    Error(String),
}

/// Run one fixture. Err is a failure message (already naming the fixture); Ok(Some) a note.
fn check(dir: &Path, bless: bool) -> Result<Option<String>, String> {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let fail = |msg: String| Err(format!("[{name}] {msg}"));
    let read = |f: &str| std::fs::read(dir.join(f)).map_err(|e| format!("[{name}] {f}: {e}"));

    let input_path = dir.join("input.json");
    let spec = crate::bundle::parse_spec(&input_path, &read("input.json")?).map_err(|e| format!("[{name}] input.json: {e}"))?;
    let facts: Facts = serde_json::from_slice(&read("facts.json")?).map_err(|e| format!("[{name}] facts.json: {e}"))?;

    let outcome = match crate::rewrite::rewrite(spec, &facts) {
        Ok(out) => {
            let v = to_canonical(&out);
            // Idempotence: the runtime may see its own output again (restart, re-create).
            match crate::rewrite::rewrite(out.clone(), &facts) {
                Ok(again) => {
                    if let Some(d) = first_diff(&v, &to_canonical(&again), "") {
                        return fail(format!("not idempotent: rewriting the output again changes it at {d}"));
                    }
                }
                Err(e) => return fail(format!("not idempotent: rewriting the output again fails: {e}")),
            }
            if let Err(e) = validate_for_create(&out) {
                return fail(format!("libcontainer's validator rejects the output: {e}"));
            }
            // The security invariants the fuzzer checks, on every fixture: a bless never
            // writes an output that hands the host over.
            if let Err(e) = crate::fuzz::invariants(&out, &facts) {
                return fail(format!("output breaks an invariant: {e}"));
            }
            Outcome::Spec(v)
        }
        Err(e) => Outcome::Error(e.to_string()),
    };

    let expected_json = dir.join("expected.json");
    let expected_err = dir.join("expected-error.txt");
    let known_bug = dir.join("known-bug.txt");

    if bless && !known_bug.exists() {
        let (write, remove, text) = match &outcome {
            Outcome::Spec(v) => (&expected_json, &expected_err, pretty(v)),
            Outcome::Error(e) => (&expected_err, &expected_json, format!("{e}\n")),
        };
        std::fs::write(write, text).map_err(|e| format!("[{name}] write {}: {e}", write.display()))?;
        let _ = std::fs::remove_file(remove);
        return Ok(Some(format!("[{name}] blessed {}", write.file_name().unwrap().to_string_lossy())));
    }

    let mismatch: Option<String> = match (expected_json.exists(), expected_err.exists()) {
        (true, true) => return fail("has both expected.json and expected-error.txt".into()),
        (false, false) => return fail("has no expected.json or expected-error.txt (run with NESTRUN_BLESS=1 to create it)".into()),
        (true, false) => {
            let text = std::fs::read_to_string(&expected_json).map_err(|e| format!("[{name}] expected.json: {e}"))?;
            let want: Value = serde_json::from_str(&text).map_err(|e| format!("[{name}] expected.json: {e}"))?;
            let want = canonical(want);
            match &outcome {
                Outcome::Error(e) => Some(format!("expected a rewritten spec, got the error: {e}")),
                Outcome::Spec(got) => first_diff(&want, got, "").map(|d| format!("output differs from expected.json; first difference at {d}")),
            }
        }
        (false, true) => {
            let want = std::fs::read_to_string(&expected_err).map_err(|e| format!("[{name}] expected-error.txt: {e}"))?;
            let want = want.trim_end_matches('\n');
            match &outcome {
                Outcome::Spec(_) => Some(format!("expected the error {want:?}, but the rewrite succeeded")),
                Outcome::Error(e) if e != want => Some(format!("wrong error:\n  expected: {want}\n  got:      {e}")),
                Outcome::Error(_) => None,
            }
        }
    };

    match (mismatch, known_bug.exists()) {
        (None, false) => Ok(None),
        (Some(m), false) => fail(format!("{m}\n  (if the change is intended: NESTRUN_BLESS=1 cargo test golden, then review git diff spec-fixtures/{name})")),
        (Some(m), true) => Ok(Some(format!("[{name}] KNOWN BUG still present ({}): {m}", known_bug.display()))),
        (None, true) => fail(format!("matches its expectation now: the known bug is fixed, delete {}", known_bug.display())),
    }
}

#[test]
fn golden_fixtures() {
    let root = fixtures_dir();
    let bless = std::env::var_os("NESTRUN_BLESS").is_some_and(|v| v == "1");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();

    let mut failures = Vec::new();
    let names: Vec<String> = dirs.iter().map(|d| d.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for s in SCENARIOS {
        if !names.iter().any(|n| n == s) {
            failures.push(format!("[{s}] scenario has no fixture directory in {}", root.display()));
        }
    }
    if dirs.len() < SCENARIOS.len() {
        failures.push(format!("{} fixtures in {}, fewer than the {} scenarios", dirs.len(), root.display(), SCENARIOS.len()));
    }
    for d in &dirs {
        match check(d, bless) {
            Ok(Some(note)) => eprintln!("{note}"),
            Ok(None) => {}
            Err(f) => failures.push(f),
        }
    }
    assert!(failures.is_empty(), "{} of {} golden fixtures failed:\n{}", failures.len(), dirs.len(), failures.join("\n"));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn invariants_catch_a_blessed_output_that_hands_the_host_over() {
        let dir = fixtures_dir().join("dockerd-privileged");
        let facts: Facts = serde_json::from_slice(&std::fs::read(dir.join("facts.json")).unwrap()).unwrap();
        let good: Spec = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        assert_eq!(crate::fuzz::invariants(&good, &facts), Ok(()));
        let mut v = serde_json::to_value(&good).unwrap();
        v["linux"]["devices"].as_array_mut().unwrap().push(json!({"path": "/dev/sg0", "type": "c", "major": 21, "minor": 0}));
        let e = crate::fuzz::invariants(&serde_json::from_value(v).unwrap(), &facts).unwrap_err();
        assert!(e.contains("outside the allowed list"), "{e}");
        let mut v = serde_json::to_value(&good).unwrap();
        v["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
        let e = crate::fuzz::invariants(&serde_json::from_value(v).unwrap(), &facts).unwrap_err();
        assert!(e.contains("allow-all device rule"), "{e}");
        let mut v = serde_json::to_value(&good).unwrap();
        v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
        assert!(crate::fuzz::invariants(&serde_json::from_value(v).unwrap(), &facts).unwrap_err().contains("maps host root"));
    }

    #[test]
    fn first_diff_names_the_json_pointer() {
        let a = json!({"mounts": [{"destination": "/proc"}, {"destination": "/dev"}], "a/b": 1});
        let b = json!({"mounts": [{"destination": "/proc"}, {"destination": "/sys"}], "a/b": 1});
        assert_eq!(first_diff(&a, &b, "").unwrap(), "/mounts/1/destination: expected \"/dev\", got \"/sys\"");
        assert_eq!(first_diff(&a, &a, ""), None);
        let c = json!({"mounts": [{"destination": "/proc"}], "a/b": 2});
        assert!(first_diff(&a, &c, "").unwrap().starts_with("/a~1b: expected 1, got 2"));
    }

    #[test]
    fn capability_sets_are_compared_as_sets() {
        let a = json!({"process": {"capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"]}, "args": ["b", "a"]}});
        let b = json!({"process": {"capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"]}, "args": ["b", "a"]}});
        assert_eq!(canonical(a), canonical(b));
        let c = json!({"process": {"args": ["a", "b"]}});
        assert_ne!(canonical(json!({"process": {"args": ["b", "a"]}})), canonical(c), "other arrays keep their order");
    }
}

//! Fuzzing on stable Rust, without dependencies (cargo-fuzz/libFuzzer need nightly, and the
//! project uses no nightly-only tooling). A small mutation engine drives ordinary `#[test]`s:
//!
//! - `parse`: `bundle::parse_spec` on arbitrary bytes (byte-level and JSON-aware mutations of
//!   the captured configs in `spec-fixtures/*/input.json`) never panics.
//! - `rewrite`: every spec that parses, with randomly varied `Facts`, is rewritten without a
//!   panic; an Ok output is idempotent, re-parses from its own JSON (the shadow config.json),
//!   keeps the system-container invariants (see [`invariants`]) and passes libcontainer's
//!   validator (unless the input itself already failed it). A spec that passes nestrun's own
//!   validation at create (`crate::validate`) is rewritten without error, or with one of the
//!   refusals the rewrite owns ([`rewrite_owns`]), and its output (the spec itself in plain
//!   mode) always passes libcontainer's validator: every refusal of that validator comes from
//!   nestrun's, in one line, first.
//! - `meminfo`, `cpuinfo`, `stat`, `misc`: the FUSE renderers on mutated captured samples
//!   (`src/fuse/testdata/`) and random numbers never panic and keep their format invariants.
//! - `parsers`: the cgroup/cpu-list/sysctl parsers never panic and return in-range values.
//!
//! Environment:
//! - `NESTRUN_FUZZ_SEED` (decimal or 0x-hex): the run's seed (each target derives its own
//!   from it); default fixed, so CI is deterministic.
//! - `NESTRUN_FUZZ_ITERS`: cases per target (default small, and at most 1.5 s per target, so
//!   the suite takes seconds in a debug build). `NESTRUN_FUZZ_SECONDS`: stop each target after
//!   that long.
//! - `NESTRUN_FUZZ_REPLAY=target/fuzz-crashes/<target>-<n>.bin`: run just that case (the
//!   other targets skip), without catching the panic, so its backtrace shows.
//!
//! A failing case (panic or broken invariant) is written to `target/fuzz-crashes/` and the
//! test fails naming the file, the seed and the replay command. `scripts/fuzz` is the long run.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libcontainer::oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, LinuxSeccompAction, Spec};
use serde_json::{json, Value};

use crate::facts::{DataDir, Facts, Mode};

// ---------------------------------------------------------------------------------------------
// Random numbers, configuration, the driver
// ---------------------------------------------------------------------------------------------

const DEFAULT_SEED: u64 = 0x6e65_7374_7275_6e21; // "nestrun!"

/// xorshift64* seeded through splitmix64 (so nearby seeds give unrelated streams).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
    /// True with probability 1/n.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    /// Mostly small numbers, sometimes boundary values, sometimes anything.
    fn interesting_u64(&mut self) -> u64 {
        match self.below(6) {
            0 => *self.pick(&[0, 1, 2, 7, 100, 1023, 1024, 4096, 65535, 65536, 65537, 1 << 20, 1 << 30]),
            1 => *self.pick(&[u32::MAX as u64, u32::MAX as u64 + 1, i32::MAX as u64, i64::MAX as u64, u64::MAX, u64::MAX - 1, 1 << 62, (1 << 62) - 1, 0x7FFF_FFFF_FFFF_F000]),
            2 => self.next(),
            3 => self.next() >> self.below(64),
            _ => self.below(1 << 16) as u64,
        }
    }
    fn interesting_u32(&mut self) -> u32 {
        match self.below(4) {
            0 => *self.pick(&[0, 1, 1000, 65535, 65536, 65537, 100000, 1 << 20, 1 << 31, u32::MAX - 65535, u32::MAX - 1, u32::MAX]),
            1 => self.next() as u32,
            2 => (self.below(4096) as u32) * 65536,
            _ => self.below(1 << 17) as u32,
        }
    }
}

/// Decimal integers written into text by the mutators.
const INTERESTING_INTS: &[&str] = &[
    "0", "-0", "-1", "1", "255", "256", "65535", "65536", "2147483647", "2147483648", "-2147483648", "4294967295",
    "4294967296", "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551615",
    "18446744073709551616", "99999999999999999999999999999999", "1e999", "-1e999", "1.5", "0x10", "00",
];

struct Config {
    seed: u64,
    iters: usize,
    deadline: Option<Duration>,
    replay: Option<PathBuf>,
}

fn config() -> Config {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let seed = var("NESTRUN_FUZZ_SEED").map(|s| {
        let s = s.trim();
        let parsed = match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => s.parse(),
        };
        parsed.unwrap_or_else(|_| panic!("NESTRUN_FUZZ_SEED={s:?} is not a decimal or 0x-hex u64"))
    });
    let iters = var("NESTRUN_FUZZ_ITERS").map(|s| s.trim().parse().unwrap_or_else(|_| panic!("NESTRUN_FUZZ_ITERS={s:?} is not a number")));
    let secs = var("NESTRUN_FUZZ_SECONDS").map(|s| s.trim().parse::<f64>().unwrap_or_else(|_| panic!("NESTRUN_FUZZ_SECONDS={s:?} is not a number")));
    Config {
        seed: seed.unwrap_or(DEFAULT_SEED),
        iters: iters.unwrap_or(0),
        deadline: secs.map(Duration::from_secs_f64),
        replay: var("NESTRUN_FUZZ_REPLAY").map(PathBuf::from),
    }
}

/// `target/fuzz-crashes` of the source tree, whatever CARGO_TARGET_DIR the build used.
fn crash_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("fuzz-crashes")
}

/// Without NESTRUN_FUZZ_ITERS/SECONDS a target also stops after this long, so the default run
/// stays short on a loaded CI machine (the cases are the same, only fewer).
const DEFAULT_SECONDS: f64 = 1.5;

/// A case is a list of byte strings (spec bytes, facts JSON, renderer parameters...), written
/// as `<len>\n<bytes>` each, so a crash file replays exactly.
fn encode(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 12).sum());
    for p in parts {
        out.extend_from_slice(format!("{}\n", p.len()).as_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn decode(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut parts = Vec::new();
    while !bytes.is_empty() {
        let nl = bytes.iter().position(|&b| b == b'\n').ok_or("case file: missing length line")?;
        let len: usize = std::str::from_utf8(&bytes[..nl]).ok().and_then(|s| s.parse().ok()).ok_or("case file: bad length line")?;
        let rest = &bytes[nl + 1..];
        if rest.len() < len {
            return Err("case file: truncated part".into());
        }
        parts.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    Ok(parts)
}

fn parts<const N: usize>(case: &[u8]) -> Result<[Vec<u8>; N], String> {
    decode(case)?.try_into().map_err(|v: Vec<Vec<u8>>| format!("case file: {} parts, expected {N}", v.len()))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "<non-string panic payload>".into())
}

/// Runs one target: `gen` makes an encoded case, `check` runs it and returns a statistics
/// bucket ("ok", "refused", ...) or what is wrong. Panics (test failure) listing the saved
/// failing cases.
fn run(target: &str, default_iters: usize, mut gen: impl FnMut(&mut Rng) -> Vec<u8>, check: impl Fn(&[u8]) -> Result<&'static str, String>) {
    let cfg = config();
    if let Some(path) = &cfg.replay {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.rsplit_once('-').map(|(t, _)| t) != Some(target) {
            return; // another target's case
        }
        let case = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match check(&case) {
            Ok(bucket) => eprintln!("fuzz {target}: replayed {} without failure ({bucket})", path.display()),
            Err(msg) => panic!("fuzz {target}: replayed {}: {msg}", path.display()),
        }
        return;
    }
    let seed = cfg.seed ^ target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let mut rng = Rng::new(seed);
    let iters = if cfg.iters > 0 { cfg.iters } else { default_iters };
    let deadline = cfg.deadline.or_else(|| (cfg.iters == 0).then(|| Duration::from_secs_f64(DEFAULT_SECONDS)));
    let start = Instant::now();
    let mut buckets: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let mut failures: Vec<String> = Vec::new();
    let mut done = 0;
    for i in 0..iters {
        if deadline.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        let case = gen(&mut rng);
        let outcome = match catch_unwind(AssertUnwindSafe(|| check(&case))) {
            Ok(Ok(bucket)) => Ok(bucket),
            Ok(Err(msg)) => Err(msg),
            Err(p) => Err(format!("panicked: {}", panic_text(&*p))),
        };
        done += 1;
        match outcome {
            Ok(bucket) => *buckets.entry(bucket).or_default() += 1,
            Err(msg) => {
                let dir = crash_dir();
                let path = dir.join(format!("{target}-{i}.bin"));
                let saved = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, &case));
                let file = match saved {
                    Ok(()) => path.display().to_string(),
                    Err(e) => format!("<could not save {}: {e}>", path.display()),
                };
                let msg: String = if msg.chars().count() > 2000 { format!("{}...", msg.chars().take(2000).collect::<String>()) } else { msg };
                failures.push(format!(
                    "case {i}: {msg}\n  saved: {file}\n  replay: NESTRUN_FUZZ_REPLAY={file} cargo test --bin nestrun fuzz::\n  rerun:  NESTRUN_FUZZ_SEED={:#x} NESTRUN_FUZZ_ITERS={}",
                    cfg.seed,
                    i + 1
                ));
                if failures.len() >= 3 {
                    break;
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {target}: {done} cases in {secs:.2} s ({:.0}/s), seed {:#x}, {} failures, {buckets:?}",
        done as f64 / secs.max(1e-9),
        cfg.seed,
        failures.len()
    );
    assert!(failures.is_empty(), "fuzz {target} (NESTRUN_FUZZ_SEED={:#x}): {} failing cases\n{}", cfg.seed, failures.len(), failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Byte- and text-level mutations
// ---------------------------------------------------------------------------------------------

const MAX_CASE: usize = 1 << 20;

/// 1..8 byte-level mutations: bit flips, inserts (random bytes or dictionary tokens), deletes,
/// duplicated ranges, splices from another corpus entry, interesting integers, truncation.
fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[&[u8]], dict: &[&str]) {
    for _ in 0..1 + rng.below(8) {
        let len = data.len();
        let pos = rng.below(len + 1);
        match rng.below(9) {
            0 if len > 0 => {
                let p = rng.below(len);
                data[p] ^= 1 << rng.below(8);
            }
            1 => {
                let b = rng.next() as u8;
                data.insert(pos, b);
            }
            2 => {
                let tok = rng.pick(dict).as_bytes();
                data.splice(pos..pos, tok.iter().copied());
            }
            3 if len > 0 => {
                let n = 1 + rng.below(64.min(len - pos.min(len - 1)));
                let p = pos.min(len - 1);
                data.drain(p..(p + n).min(len));
            }
            4 if len > 0 => {
                let p = rng.below(len);
                let n = 1 + rng.below(256.min(len - p));
                let chunk = data[p..p + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            5 if !corpus.is_empty() => {
                let other = rng.pick(corpus);
                if !other.is_empty() {
                    let p = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - p).min(4096));
                    let end = (pos + rng.below(n + 1)).min(len);
                    data.splice(pos..end, other[p..p + n].iter().copied());
                }
            }
            6 => {
                // Replace the digit run at or after pos with an interesting integer.
                let start = (pos..len).find(|&i| data[i].is_ascii_digit()).unwrap_or(pos);
                let end = (start..len).find(|&i| !data[i].is_ascii_digit()).unwrap_or(len);
                let int = rng.pick(INTERESTING_INTS).as_bytes();
                data.splice(start..end, int.iter().copied());
            }
            7 if len > 0 => {
                let p = rng.below(len);
                data[p] = rng.next() as u8;
            }
            8 if rng.one_in(4) => data.truncate(pos),
            _ => {}
        }
    }
    data.truncate(MAX_CASE);
}

/// Line-aware mutations for the /proc samples, then maybe some byte-level ones.
fn mutate_text(rng: &mut Rng, text: &str, corpus: &[&[u8]]) -> Vec<u8> {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(String::from).collect();
    for _ in 0..rng.below(6) {
        let n = lines.len();
        let i = rng.below(n.max(1));
        match rng.below(7) {
            0 if n > 0 => {
                lines.remove(i);
            }
            1 if n > 0 => {
                let l = lines[i].clone();
                let at = rng.below(n + 1);
                lines.insert(at, l);
            }
            2 if n > 1 => {
                let j = rng.below(n);
                lines.swap(i, j);
            }
            3 if n > 0 => {
                // An interesting integer for one whitespace-separated number of the line.
                let words: Vec<&str> = lines[i].split(|c: char| c == ' ' || c == '\t').collect();
                let numeric: Vec<usize> = (0..words.len()).filter(|&k| words[k].trim().parse::<f64>().is_ok()).collect();
                if !numeric.is_empty() {
                    let k = *rng.pick(&numeric);
                    let nl = words[k].ends_with('\n');
                    let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
                    w[k] = format!("{}{}", rng.pick(INTERESTING_INTS), if nl { "\n" } else { "" });
                    lines[i] = w.join(" ");
                }
            }
            4 if n > 0 => {
                let l = lines[i].replace(" kB", "").replace('\n', "");
                lines[i] = if rng.one_in(2) { l } else { format!("{l}\n") };
            }
            5 if !corpus.is_empty() => {
                let other = String::from_utf8_lossy(corpus[rng.below(corpus.len())]).into_owned();
                let ol: Vec<&str> = other.split_inclusive('\n').collect();
                if !ol.is_empty() {
                    lines.insert(rng.below(n + 1), rng.pick(&ol).to_string());
                }
            }
            _ => {}
        }
    }
    let mut out = lines.concat().into_bytes();
    if rng.one_in(3) {
        mutate_bytes(rng, &mut out, corpus, &[" ", "\t", "\n", ":", " kB", "-", ",", "\r", "\0", "cpu", "processor\t: ", "\u{00e9}"]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Spec corpus and JSON-aware mutations
// ---------------------------------------------------------------------------------------------

struct Fixture {
    input: Vec<u8>,
    value: Value,
    facts: Facts,
}

fn fixtures() -> &'static [Fixture] {
    static F: OnceLock<Vec<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec-fixtures");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("input.json").is_file())
            .collect();
        dirs.sort();
        let out: Vec<Fixture> = dirs
            .iter()
            .map(|d| {
                let input = std::fs::read(d.join("input.json")).unwrap();
                let value = serde_json::from_slice(&input).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
                let facts = serde_json::from_slice(&std::fs::read(d.join("facts.json")).unwrap()).unwrap_or_else(|e| panic!("{}/facts.json: {e}", d.display()));
                Fixture { input, value, facts }
            })
            .collect();
        assert!(!out.is_empty(), "no fixtures in {}", root.display());
        out
    })
}

const JSON_DICT: &[&str] = &[
    "{", "}", "[", "]", "\"", ":", ",", "null", "true", "false", "-", "\\u0000", "\\ud800", "1e999", "\n", "{}", "[]", "\"\"",
    "\"..\"", "\"/\"", "\"type\"", "\"path\"", "\"linux\"", "\"process\"", "\"mounts\"",
];

/// Strings that matter to the rewrite: paths with `..`, relative, empty, the destinations and
/// sources the steps look for, namespace types, seccomp actions, device types...
const STRINGS: &[&str] = &[
    "", "/", "..", "../../etc", "/proc/../..", "/sys/fs/cgroup", "/sys/fs/cgroup/", "/proc", "/proc/sys", "/dev", "/dev/kmsg",
    "/dev/null", "/var/lib/docker", "/var/lib/docker/..", "/var/lib/containerd", "/run", "/run/lock", "relative/path", "cgroup",
    "bind", "tmpfs", "proc", "ro", "rw", "rbind", "nosuid", "/sbin/init", "/lib/systemd/systemd", "network", "pid", "user",
    "mount", "uts", "ipc", "cgroup", "time", "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_LOG", "SCMP_ACT_KILL", "SCMP_ACT_TRACE",
    "SCMP_ACT_NOTIFY", "b", "c", "u", "p", "a", "CAP_SYS_ADMIN", "CAP_FOO", "RLIMIT_NOFILE", "RLIMIT_BOGUS", "0 2147483647",
    "\u{0}", "\u{202e}", "é", "container=", "/proc/1/ns/net", "/proc/self/ns/net",
];

fn long_string(rng: &mut Rng) -> String {
    let n = *rng.pick(&[256usize, 4096, 65536]);
    match rng.below(3) {
        0 => "A".repeat(n),
        1 => "/..".repeat(n / 3),
        _ => "/d0123".repeat(n / 6),
    }
}

fn random_string(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => long_string(rng),
        1 => format!("{}{}", rng.pick(STRINGS), rng.pick(STRINGS)),
        2 => format!("/{}", (0..rng.below(6)).map(|_| *rng.pick(&["..", ".", "a", "", "proc", "sys", "dev"])).collect::<Vec<_>>().join("/")),
        _ => rng.pick(STRINGS).to_string(),
    }
}

fn random_number(rng: &mut Rng) -> Value {
    match rng.below(7) {
        0 => json!(rng.interesting_u64()),
        1 => json!(-(rng.interesting_u32() as i64)),
        2 => json!(i64::MIN),
        3 => json!(*rng.pick(&[1e308, -1e308, 0.5, -0.0, 1.8446744073709552e19, 4294967296.5])),
        4 => json!(rng.interesting_u32()),
        _ => json!(rng.below(100)),
    }
}

/// Nested arrays/objects, `depth` levels (serde_json refuses more than 128 when parsing).
fn nested(rng: &mut Rng, depth: usize) -> Value {
    let arrays = rng.one_in(2);
    let mut v = json!(1);
    for _ in 0..depth {
        v = if arrays { json!([v]) } else { json!({ "a": v }) };
    }
    v
}

fn random_value(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => json!(rng.one_in(2)),
        2 | 3 => random_number(rng),
        4 | 5 => json!(random_string(rng)),
        6 => json!([random_string(rng), rng.interesting_u64()]),
        7 => json!({ random_string(rng): random_string(rng), "type": rng.pick(STRINGS) }),
        _ => {
            let max = if rng.one_in(4) { 200 } else { 20 };
            let d = 1 + rng.below(max);
            nested(rng, d)
        }
    }
}

/// A JSON pointer segment.
#[derive(Clone)]
enum Seg {
    Key(String),
    Idx(usize),
}

fn collect_paths(v: &Value, at: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                at.push(Seg::Key(k.clone()));
                collect_paths(c, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                at.push(Seg::Idx(i));
                collect_paths(c, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn get_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, s| match s {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::Idx(i) => v.get_mut(*i),
    })
}

/// The value at `keys` (object keys), created as `{}` along the way (a non-object on the way is
/// replaced: the mutation wins).
fn ensure<'a>(v: &'a mut Value, keys: &[&str], leaf: impl FnOnce() -> Value) -> &'a mut Value {
    let mut cur = v;
    for (i, k) in keys.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let last = i + 1 == keys.len();
        let m = cur.as_object_mut().unwrap();
        if !m.contains_key(*k) {
            m.insert(k.to_string(), if last { Value::Null } else { json!({}) });
        }
        cur = m.get_mut(*k).unwrap();
    }
    if cur.is_null() {
        *cur = leaf();
    }
    cur
}

fn push(v: &mut Value, keys: &[&str], item: Value) {
    let arr = ensure(v, keys, || json!([]));
    if !arr.is_array() {
        *arr = json!([]);
    }
    arr.as_array_mut().unwrap().push(item);
}

fn set(v: &mut Value, keys: &[&str], item: Value) {
    *ensure(v, keys, || Value::Null) = item;
}

fn remove(v: &mut Value, keys: &[&str]) {
    let (last, parent) = keys.split_last().unwrap();
    if let Some(Value::Object(m)) = parent.iter().try_fold(&mut *v, |v, k| v.get_mut(*k)) {
        m.remove(*last);
    }
}

const NS_TYPES: &[&str] = &["network", "pid", "user", "mount", "uts", "ipc", "cgroup", "time"];
const SECCOMP_ACTIONS: &[&str] = &["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_LOG", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_NOTIFY"];

fn syscall_names(rng: &mut Rng) -> Vec<String> {
    use crate::rewrite::security::{HOST_SYSCALLS, NESTED_SYSCALLS};
    (0..1 + rng.below(6))
        .map(|_| match rng.below(4) {
            0 => rng.pick(HOST_SYSCALLS).to_string(),
            1 => rng.pick(NESTED_SYSCALLS).to_string(),
            2 => rng.pick(&["read", "write", "openat", "ptrace", "personality", ""]).to_string(),
            _ => random_string(rng),
        })
        .collect()
}

/// Mutations that keep the spec parseable but aim at what the rewrite steps look at.
fn mutate_semantic(rng: &mut Rng, v: &mut Value) {
    let mapping = |rng: &mut Rng| {
        let n = if rng.one_in(5) { rng.below(4) } else { 1 };
        Value::Array((0..n).map(|_| json!({"containerID": rng.interesting_u32() % if rng.one_in(2) { 1 } else { u32::MAX }, "hostID": rng.interesting_u32(), "size": rng.interesting_u32()})).collect())
    };
    match rng.below(27) {
        0 => set(v, &["linux", "uidMappings"], mapping(rng)),
        1 => set(v, &["linux", "gidMappings"], mapping(rng)),
        2 => {
            let typ = *rng.pick(&["b", "c", "u", "p", "a"]);
            let (ma, mi) = if rng.one_in(2) { *rng.pick(&[(8i64, 0i64), (1, 1), (1, 3), (1, 11), (10, 229), (10, 200), (136, 4), (5, 2)]) } else { (rng.interesting_u32() as i64, -(rng.below(3) as i64)) };
            push(v, &["linux", "devices"], json!({"path": random_string(rng), "type": typ, "major": ma, "minor": mi, "fileMode": 0o666, "uid": 0, "gid": 0}));
        }
        3 => {
            if let Some(Value::Array(a)) = v.pointer_mut("/linux/namespaces") {
                if !a.is_empty() {
                    let i = rng.below(a.len());
                    a.remove(i);
                }
            }
        }
        4 => {
            let path = *rng.pick(&["/proc/1/ns/net", "/proc/self/ns/net", "/run/netns/x", "", "relative"]);
            push(v, &["linux", "namespaces"], json!({"type": rng.pick(NS_TYPES), "path": path}));
        }
        5 => push(v, &["linux", "namespaces"], json!({"type": rng.pick(NS_TYPES)})),
        6 => remove(v, &["linux", "seccomp"]),
        7 => set(v, &["linux", "seccomp", "defaultAction"], json!(rng.pick(SECCOMP_ACTIONS))),
        8 | 9 => {
            let mut rule = json!({"names": syscall_names(rng), "action": rng.pick(SECCOMP_ACTIONS)});
            if rng.one_in(3) {
                rule["args"] = json!([{"index": rng.below(7), "value": rng.interesting_u64(), "op": "SCMP_CMP_MASKED_EQ"}]);
            }
            if rng.one_in(3) {
                rule["errnoRet"] = json!(rng.interesting_u32());
            }
            ensure(v, &["linux", "seccomp"], || json!({"defaultAction": "SCMP_ACT_ERRNO"}));
            push(v, &["linux", "seccomp", "syscalls"], rule);
        }
        10 => {
            let mut m = json!({"destination": random_string(rng), "type": rng.pick(&["bind", "cgroup", "tmpfs", "proc", "none", ""]), "source": random_string(rng)});
            if rng.one_in(2) {
                m["options"] = json!((0..rng.below(5)).map(|_| rng.pick(&["ro", "rw", "rbind", "nosuid", "rprivate", "", "mode=755"]).to_string()).collect::<Vec<_>>());
            }
            push(v, &["mounts"], m);
        }
        11 => set(v, &["process", "args"], json!([rng.pick(&["/sbin/init", "/lib/systemd/systemd", "/usr/sbin/init", "sh", ""])])),
        12 => set(v, &["process", "user", "uid"], json!(rng.interesting_u32())),
        13 => {
            let typ = *rng.pick(&["RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE", "RLIMIT_MEMLOCK", "RLIMIT_RTPRIO", "RLIMIT_NICE", "RLIMIT_STACK"]);
            push(v, &["process", "rlimits"], json!({"type": typ, "hard": rng.interesting_u64(), "soft": rng.interesting_u64()}));
        }
        14 => {
            let key = *rng.pick(&["net.ipv4.ping_group_range", "net.core.somaxconn", "kernel.shmmax", "fs.mqueue.msg_max", "user.max_user_namespaces", "kernel.domainname", "kernel.hostname", "vm.swappiness", "net/ipv4/ip_forward"]);
            let val = if rng.one_in(2) { rng.pick(&["0 2147483647", "1 0", "", "x y", "0", "-5 -1", "99999999999999999999 1", "0 65535 7"]).to_string() } else { random_string(rng) };
            let sysctl = ensure(v, &["linux", "sysctl"], || json!({}));
            if let Value::Object(m) = sysctl {
                m.insert(key.into(), json!(val));
            }
        }
        15 => set(v, &["hostname"], json!(random_string(rng))),
        16 => set(v, &["linux", *rng.pick(&["maskedPaths", "readonlyPaths"])], json!((0..rng.below(4)).map(|_| random_string(rng)).collect::<Vec<_>>())),
        17 => push(v, &["linux", "resources", "devices"], json!({"allow": rng.one_in(2), "type": rng.pick(&["a", "c", "b"]), "access": "rwm"})),
        18 => {
            if rng.one_in(2) {
                remove(v, &["linux", "cgroupsPath"]);
            } else {
                set(v, &["linux", "cgroupsPath"], json!(random_string(rng)));
            }
        }
        19 => {
            let set_name = *rng.pick(&["bounding", "effective", "permitted", "inheritable", "ambient"]);
            let caps: Vec<&str> = (0..rng.below(6)).map(|_| *rng.pick(crate::facts::CAP_NAMES)).collect();
            set(v, &["process", "capabilities", set_name], json!(caps));
        }
        20 => set(v, &["root", "path"], json!(random_string(rng))),
        21 => {
            let ann = ensure(v, &["annotations"], || json!({}));
            if let Value::Object(m) = ann {
                m.insert(rng.pick(&[crate::facts::ANN_MODE, crate::facts::ANN_PROC, "x"]).to_string(), json!(rng.pick(&["plain", "system", "host", ""])));
            }
        }
        22 => remove(v, &[*rng.pick(&["process", "linux", "root", "mounts", "hostname"])]),
        23 => {
            // What libcontainer's validator looks at besides namespaces.
            match rng.below(4) {
                0 => set(v, &["process", "scheduler"], json!({"policy": rng.pick(&["SCHED_OTHER", "SCHED_FIFO", "SCHED_DEADLINE"]), "nice": rng.below(50) as i64 - 25, "priority": rng.below(3)})),
                1 => set(v, &["process", "ioPriority"], json!({"class": "IOPRIO_CLASS_BE", "priority": rng.below(10)})),
                2 => set(v, &["linux", "intelRdt"], json!({"closID": rng.pick(&["..", ".", "a/b", "ok"])})),
                _ => set(v, &["linux", "timeOffsets"], json!({"monotonic": {"secs": 1, "nanosecs": 0}})),
            }
        }
        24 => {
            // Duplicate mounts at the same destination, or at the cgroup mount.
            if let Some(Value::Array(ms)) = v.get_mut("mounts") {
                if !ms.is_empty() {
                    let mut m = ms[rng.below(ms.len())].clone();
                    if rng.one_in(2) {
                        m["destination"] = json!("/sys/fs/cgroup");
                        m["type"] = json!("cgroup");
                    }
                    ms.push(m);
                }
            }
        }
        25 => {
            // What only nestrun's validation at create looks at (crate::validate).
            match rng.below(7) {
                0 => set(v, &["process", "oomScoreAdj"], json!(*rng.pick(&[-1001i64, -1000, 0, 1000, 1001]))),
                1 => set(v, &["process", "cwd"], json!(rng.pick(&["/", "", "tmp", "/tmp/.."]))),
                2 => push(v, &["process", "env"], json!(rng.pick(&["A=1", "NOEQUALS", "=x", "A=\u{0}"]))),
                3 => set(v, &["linux", "rootfsPropagation"], json!(rng.pick(&["shared", "rshared", "private", "", "slave"]))),
                4 => set(v, &["hooks", *rng.pick(&["prestart", "poststart", "poststop"])], json!([{"path": rng.pick(&["/bin/true", "true"])}])),
                5 => set(v, &["process", "user", "uid"], json!(*rng.pick(&[0u32, 1000, 65535, 65536, 70000, 2147483647, 2147483648]))),
                _ => push(v, &["mounts"], json!({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": [rng.pick(&["uid=0", "gid=5", "uid=70000", "gid=abc", "idmap"])]})),
            }
        }
        _ => {
            // An unknown field somewhere.
            let keys: &[&[&str]] = &[&[], &["linux"], &["process"], &["root"], &["linux", "seccomp"]];
            let at = *rng.pick(keys);
            let target = ensure(v, at, || json!({}));
            if let Value::Object(m) = target {
                let val = random_value(rng);
                m.insert(format!("x-fuzz-{}", rng.below(100)), val);
            }
        }
    }
}

/// Generic mutations at a random node: delete, duplicate, same-type tweak, other-type value.
fn mutate_node(rng: &mut Rng, v: &mut Value, type_changes: bool) {
    let mut paths = Vec::new();
    collect_paths(v, &mut Vec::new(), &mut paths);
    let path = rng.pick(&paths).clone();
    let op = rng.below(if type_changes { 5 } else { 4 });
    if op < 2 {
        // delete or duplicate, in the parent
        let Some((last, parent)) = path.split_last() else { return };
        let Some(parent) = get_mut(v, parent) else { return };
        match (parent, last) {
            (Value::Object(m), Seg::Key(k)) => {
                if op == 0 {
                    m.remove(k);
                } else if let Some(c) = m.get(k).cloned() {
                    m.insert(format!("{k}-x"), c);
                }
            }
            (Value::Array(a), Seg::Idx(i)) => {
                if op == 0 {
                    a.remove(*i);
                } else {
                    let c = a[*i].clone();
                    a.insert(*i, c);
                }
            }
            _ => {}
        }
        return;
    }
    let Some(node) = get_mut(v, &path) else { return };
    if op == 4 {
        *node = random_value(rng);
        return;
    }
    match node {
        Value::String(s) => *s = random_string(rng),
        Value::Number(_) => {
            *node = match rng.below(3) {
                0 => json!(rng.interesting_u32()),
                1 => json!(rng.interesting_u64()),
                _ => random_number(rng),
            }
        }
        Value::Bool(b) => *b = !*b,
        Value::Array(a) => {
            if a.len() > 1 && rng.one_in(2) {
                let i = rng.below(a.len());
                let j = rng.below(a.len());
                a.swap(i, j);
            } else if !a.is_empty() {
                let i = rng.below(a.len());
                a.truncate(i);
            }
        }
        Value::Object(m) => {
            m.insert(random_string(rng), random_value(rng));
        }
        Value::Null => {}
    }
}

fn mutate_spec_value(rng: &mut Rng, v: &mut Value, type_changes: bool) {
    for _ in 0..1 + rng.below(4) {
        if rng.below(10) < 6 {
            mutate_semantic(rng, v);
        } else {
            mutate_node(rng, v, type_changes);
        }
    }
}

const RLIMITS: &[&str] = &["RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE", "RLIMIT_MEMLOCK", "RLIMIT_STACK", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_BOGUS", ""];

/// The bind sources gather would ID-map: absolute, not below /proc, /sys or /dev.
fn bind_sources(v: &Value) -> Vec<String> {
    let mounts = v.get("mounts").and_then(|m| m.as_array()).map(Vec::as_slice).unwrap_or_default();
    mounts
        .iter()
        .filter(|m| m.get("type").and_then(Value::as_str) == Some("bind") || m.get("options").is_some_and(|o| o.to_string().contains("bind")))
        .filter_map(|m| m.get("source")?.as_str())
        .filter(|s| s.starts_with('/') && !["/proc", "/sys", "/dev"].iter().any(|p| Path::new(s).starts_with(p)))
        .map(String::from)
        .collect()
}

/// Random variations of a fixture's facts, within what `lifecycle::gather` can produce for
/// the idmapped sources (`sources`: the spec's bind sources it would clone): clone paths stay
/// unique and never equal an original source.
fn mutate_facts(rng: &mut Rng, f: &mut Facts, sources: &[String]) {
    for _ in 0..rng.below(5) {
        match rng.below(13) {
            0 => f.host_id = rng.interesting_u32(),
            1 => f.id_size = rng.interesting_u32(),
            2 => f.mode = if rng.one_in(8) { Mode::Plain } else { Mode::System },
            3 => f.rootfs = if rng.one_in(3) { None } else { Some(PathBuf::from(random_string(rng))) },
            4 => {
                if rng.one_in(3) {
                    f.idmapped_sources.clear();
                }
                if !sources.is_empty() {
                    let src = rng.pick(sources).clone();
                    f.idmapped_sources.retain(|(o, _)| *o != Path::new(&src));
                    f.idmapped_sources.push((PathBuf::from(src), PathBuf::from(format!("/run/nestrun-mnt/fuzz/m/{}", f.idmapped_sources.len()))));
                }
            }
            5 => {
                let n = f.runtime_caps.len();
                f.runtime_caps.truncate(rng.below(n + 1));
                if rng.one_in(2) {
                    f.runtime_caps.push(rng.pick(&["CAP_FOO", "", "cap_chown", "CAP_SYS_ADMIN"]).to_string());
                }
            }
            6 => f.rlimit_hard.push((rng.pick(RLIMITS).to_string(), rng.interesting_u64())),
            7 => f.host_namespace_paths.push(rng.pick(&["network", "pid", "ipc", "mount", "user", ""]).to_string()),
            8 => f.cgroup_path = if rng.one_in(3) { None } else { Some(PathBuf::from(random_string(rng))) },
            9 => f.data_dirs.push(DataDir { destination: PathBuf::from(random_string(rng)), source: PathBuf::from(random_string(rng)) }),
            10 => f.lib_modules = if rng.one_in(2) { None } else { Some(PathBuf::from(random_string(rng))) },
            11 => f.fuse_device = !f.fuse_device,
            _ => f.tun_device = !f.tun_device,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Targets: config.json parsing and the rewrite pipeline
// ---------------------------------------------------------------------------------------------

fn spec_corpus() -> Vec<&'static [u8]> {
    fixtures().iter().map(|f| f.input.as_slice()).collect()
}

fn gen_spec_bytes(rng: &mut Rng, byte_level_share: usize) -> Vec<u8> {
    let fx = fixtures();
    let f = rng.pick(fx);
    if rng.below(10) < byte_level_share {
        let mut data = f.input.clone();
        mutate_bytes(rng, &mut data, &spec_corpus(), JSON_DICT);
        data
    } else {
        let mut v = f.value.clone();
        mutate_spec_value(rng, &mut v, true);
        if rng.one_in(3) {
            // Sometimes nesting deeper than serde_json's limit, sometimes just below it.
            let d = *rng.pick(&[100usize, 127, 128, 129, 500]);
            let n = nested(rng, d);
            set(&mut v, &["x-deep"], n);
        }
        serde_json::to_vec(&v).unwrap()
    }
}

#[test]
fn parse_spec_never_panics() {
    run("parse", 200, |rng| encode(&[&gen_spec_bytes(rng, 5)]), |case| {
        let [bytes] = parts::<1>(case)?;
        Ok(match crate::bundle::parse_spec(Path::new("fuzz/config.json"), &bytes) {
            Ok(_) => "parsed",
            Err(e) => {
                // The error must name the file (it is shown to the engine's user).
                let msg = e.to_string();
                if !msg.starts_with("fuzz/config.json: invalid config at ") {
                    return Err(format!("parse error does not name the file and field: {msg}"));
                }
                "error"
            }
        })
    });
}

/// Syscall actions under which the call goes ahead (as in rewrite::security; TRACE and NOTIFY
/// hand the decision to a tracer or a supervisor and are not counted).
fn allows(a: LinuxSeccompAction) -> bool {
    matches!(a, LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog)
}

/// What every system-container output must keep, whatever the input.
pub(crate) fn invariants(out: &Spec, facts: &Facts) -> Result<(), String> {
    let linux = out.linux().as_ref().ok_or("output has no linux section")?;
    let nss = linux.namespaces().clone().unwrap_or_default();
    let has = |t: LinuxNamespaceType| nss.iter().any(|n| n.typ() == t);
    if !has(LinuxNamespaceType::User) {
        return Err("output has no user namespace".into());
    }
    for (kind, maps) in [("uid", linux.uid_mappings()), ("gid", linux.gid_mappings())] {
        let maps = maps.as_deref().unwrap_or_default();
        if maps.is_empty() {
            return Err(format!("output has no {kind} mapping"));
        }
        if let Some(m) = maps.iter().find(|m| m.host_id() == 0) {
            return Err(format!("output maps host root: {kind} mapping {m:?}"));
        }
    }
    if !has(LinuxNamespaceType::Network) || facts.host_namespace_paths.iter().any(|t| t == "network") {
        return Err("output shares the host's network namespace".into());
    }
    if !has(LinuxNamespaceType::Pid) || facts.host_namespace_paths.iter().any(|t| t == "pid") {
        return Err("output shares the host's pid namespace".into());
    }
    if let Some(d) = linux.devices().as_deref().unwrap_or_default().iter().find(|d| !matches!(d.typ(), LinuxDeviceType::C | LinuxDeviceType::U)) {
        return Err(format!("output hands over a non-character device: {d:?}"));
    }
    if let Some(d) = linux.devices().as_deref().unwrap_or_default().iter().find(|d| !crate::rewrite::devices::allowed(d.major(), d.minor())) {
        return Err(format!("output hands over a character device outside the allowed list: {d:?}"));
    }
    let rules = linux.resources().as_ref().and_then(|r| r.devices().clone()).unwrap_or_default();
    if let Some(r) = rules.iter().find(|r| r.allow() && r.typ().is_none_or(|t| t == LinuxDeviceType::A) && r.major().is_none()) {
        return Err(format!("output has an allow-all device rule: {r:?}"));
    }
    let sc = linux.seccomp().as_ref().ok_or("output has no seccomp profile")?;
    let rules = sc.syscalls().clone().unwrap_or_default();
    for h in crate::rewrite::security::HOST_SYSCALLS {
        let named: Vec<_> = rules.iter().filter(|r| r.names().iter().any(|n| n == h)).collect();
        if let Some(r) = named.iter().find(|r| allows(r.action())) {
            return Err(format!("seccomp allows host syscall {h}: rule {r:?}"));
        }
        let denied = named.iter().any(|r| r.args().as_ref().is_none_or(|a| a.is_empty()));
        if allows(sc.default_action()) && !denied {
            return Err(format!("seccomp allows host syscall {h}: default action {:?} and no unconditional rule denies it", sc.default_action()));
        }
    }
    Ok(())
}

fn gen_rewrite_case(rng: &mut Rng) -> Vec<u8> {
    let fx = fixtures();
    let i = rng.below(fx.len());
    let mut facts = fx[if rng.one_in(4) { rng.below(fx.len()) } else { i }].facts.clone();
    let spec = if rng.one_in(10) {
        fx[i].input.clone()
    } else {
        let mut v = fx[i].value.clone();
        for _ in 0..1 + rng.below(3) {
            if rng.one_in(12) {
                mutate_node(rng, &mut v, true);
            } else if rng.below(10) < 8 {
                mutate_semantic(rng, &mut v);
            } else {
                mutate_node(rng, &mut v, false);
            }
        }
        serde_json::to_vec(&v).unwrap()
    };
    if !rng.one_in(4) {
        let sources = serde_json::from_slice(&spec).map(|v| bind_sources(&v)).unwrap_or_default();
        mutate_facts(rng, &mut facts, &sources);
    }
    encode(&[&serde_json::to_vec(&facts).unwrap(), &spec])
}

fn check_rewrite(case: &[u8]) -> Result<&'static str, String> {
    let [facts, bytes] = parts::<2>(case)?;
    let facts: Facts = serde_json::from_slice(&facts).map_err(|e| format!("case file: facts: {e}"))?;
    let Ok(spec) = crate::bundle::parse_spec(Path::new("config.json"), &bytes) else { return Ok("unparsed") };
    let input_valid = crate::rewrite::golden::validate_for_create(&spec).is_ok();
    // What create lets through (a terminal gets its console socket, as engines give one).
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    let passes = crate::validate::validate(&spec, &crate::validate::Call { mode: facts.mode, detach: true, console_socket: terminal }).is_ok();
    let out = match crate::rewrite::rewrite(spec.clone(), &facts) {
        Ok(out) => out,
        Err(e) => {
            if e.to_string().is_empty() {
                return Err("empty rewrite error".into());
            }
            if passes && !rewrite_owns(&e) {
                return Err(format!("the rewrite refuses a spec that passes validation, with an error validation should have given: {e}"));
            }
            return Ok(if passes { "refused by the rewrite" } else { "refused by validation" });
        }
    };
    if facts.mode == Mode::Plain {
        if out != spec {
            return Err("plain mode changed the spec".into());
        }
        return match crate::rewrite::golden::validate_for_create(&spec) {
            Err(e) if passes => Err(format!("libcontainer's validator rejects a plain-mode spec that passes validation: {e}")),
            _ => Ok(if passes { "plain" } else { "plain, refused by validation" }),
        };
    }
    match crate::rewrite::rewrite(out.clone(), &facts) {
        Ok(again) if again == out => {}
        Ok(again) => {
            use crate::rewrite::golden::{canonical, first_diff};
            let (a, b) = (canonical(serde_json::to_value(&out).unwrap()), canonical(serde_json::to_value(&again).unwrap()));
            let d = first_diff(&a, &b, "").unwrap_or_else(|| "(no JSON difference)".into());
            return Err(format!("not idempotent: rewriting the output again changes it at {d}"));
        }
        Err(e) => return Err(format!("not idempotent: rewriting the output fails: {e}")),
    }
    // The shadow bundle's config.json is read back by youki: it must serialise and re-parse.
    let text = serde_json::to_vec(&out).map_err(|e| format!("output does not serialise: {e}"))?;
    match crate::bundle::parse_spec(Path::new("shadow/config.json"), &text) {
        Ok(back) if back == out => {}
        Ok(_) => return Err("output changes when its config.json is parsed back".into()),
        Err(e) => return Err(format!("output's config.json does not parse back: {e}")),
    }
    invariants(&out, &facts)?;
    match crate::rewrite::golden::validate_for_create(&out) {
        Ok(()) => Ok(if passes { "rewritten" } else { "rewritten, refused by validation" }),
        Err(e) if passes => Err(format!("libcontainer's validator rejects the output of a spec that passes validation: {e}")),
        Err(_) if !input_valid => Ok("rewritten, input already invalid"),
        Err(e) => Err(format!("libcontainer's validator rejects the output of a valid input: {e}")),
    }
}

/// The refusals that `crate::validate` leaves to the rewrite, which may still come for a spec
/// that passes validation: host namespaces (they need the facts: a path may be the host's),
/// and engine id mappings that are not the one range from 0 nestrun keeps (or that the facts'
/// range makes invalid). Anything else is a refusal validation should have made first.
fn rewrite_owns(e: &crate::rewrite::RewriteError) -> bool {
    use crate::rewrite::RewriteError as R;
    matches!(e, R::HostNamespace(..) | R::PodHostNamespace(..) | R::BadMapping { .. })
}

#[test]
fn rewrite_keeps_invariants() {
    run("rewrite", 100, gen_rewrite_case, check_rewrite);
}

// ---------------------------------------------------------------------------------------------
// Targets: FUSE renderers and parsers
// ---------------------------------------------------------------------------------------------

use crate::fuse::render::{self, cpuinfo, meminfo, misc, stat};

const MEMINFO: &str = include_str!("fuse/testdata/meminfo");
const CPUINFO: &str = include_str!("fuse/testdata/cpuinfo");
const STAT: &str = include_str!("fuse/testdata/stat");
const LOADAVG: &str = include_str!("fuse/testdata/loadavg");
const SWAPS: &str = include_str!("fuse/testdata/swaps");
const UPTIME: &str = include_str!("fuse/testdata/uptime");
const DISKSTATS: &str = include_str!("fuse/testdata/diskstats");
const MEMSTAT_V1: &str = include_str!("fuse/testdata/memory.stat.v1");
const MEMSTAT_V2: &str = include_str!("fuse/testdata/memory.stat.v2");
const SAMPLES: &[&str] = &[MEMINFO, CPUINFO, STAT, LOADAVG, SWAPS, UPTIME, DISKSTATS, MEMSTAT_V1, MEMSTAT_V2];

fn samples() -> Vec<&'static [u8]> {
    SAMPLES.iter().map(|s| s.as_bytes()).collect()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A host text: the sample mutated, or (sometimes) a synthetic big one.
fn host_text(rng: &mut Rng, sample: &str, synth: impl FnOnce(&mut Rng) -> String) -> Vec<u8> {
    match rng.below(10) {
        0 => sample.as_bytes().to_vec(),
        1 => {
            let s = synth(rng);
            mutate_text(rng, &s, &samples())
        }
        _ => mutate_text(rng, sample, &samples()),
    }
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array().map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0)).collect()).unwrap_or_default()
}

#[test]
fn meminfo_renderer() {
    run(
        "meminfo",
        400,
        |rng| {
            let host = host_text(rng, MEMINFO, |rng| MEMINFO.replace("SwapTotal:             0 kB", &format!("SwapTotal:       {} kB", rng.interesting_u64())));
            let opt = |rng: &mut Rng| if rng.one_in(3) { Value::Null } else { json!(rng.interesting_u64()) };
            let params = json!({
                "limit": opt(rng),
                "usage": rng.interesting_u64(),
                "swap": if rng.one_in(3) { Value::Null } else { json!([opt(rng), rng.interesting_u64()]) },
                "stat": (0..14).map(|_| if rng.one_in(3) { rng.interesting_u64() } else { rng.below(1 << 30) as u64 }).collect::<Vec<_>>(),
            });
            encode(&[&host, &serde_json::to_vec(&params).unwrap()])
        },
        |case| {
            let [host, params] = parts::<2>(case)?;
            let host = lossy(&host);
            let p: Value = serde_json::from_slice(&params).map_err(|e| e.to_string())?;
            let s = u64s(&p["stat"]);
            let s = |i: usize| s.get(i).copied().unwrap_or(0);
            let stat = meminfo::MemStat {
                cache: s(0), shmem: s(1), mapped: s(2), dirty: s(3), writeback: s(4), active_anon: s(5), inactive_anon: s(6),
                active_file: s(7), inactive_file: s(8), unevictable: s(9), slab: s(10), slab_reclaimable: s(11), slab_unreclaimable: s(12), anon_huge: s(13),
            };
            let swap = p["swap"].as_array().map(|a| meminfo::SwapInfo { limit: a[0].as_u64(), usage: a[1].as_u64().unwrap_or(0) });
            let input = meminfo::MemInput { host: &host, limit: p["limit"].as_u64(), usage: p["usage"].as_u64().unwrap_or(0), swap, stat: &stat };
            let out = meminfo::render(&input);
            let (inl, outl): (Vec<&str>, Vec<&str>) = (host.lines().collect(), out.lines().collect());
            if inl.len() != outl.len() {
                return Err(format!("{} lines in, {} out", inl.len(), outl.len()));
            }
            for (a, b) in inl.iter().zip(&outl) {
                let label = |l: &str| l.split_once(':').map(|(k, _)| k.to_string());
                if label(a) != label(b) {
                    return Err(format!("line {a:?} became {b:?}: label changed"));
                }
                if a.ends_with(" kB") && !b.ends_with(" kB") {
                    return Err(format!("line {a:?} became {b:?}: lost its unit"));
                }
            }
            let get = |l: &str| meminfo::host_value_kb(&out, l);
            for (part, whole) in [("MemFree", "MemTotal"), ("MemAvailable", "MemTotal"), ("SwapFree", "SwapTotal")] {
                // Only meaningful when each label appears once, as the kernel writes it.
                let once = |l: &str| host.lines().filter(|x| x.split_once(':').is_some_and(|(k, _)| k == l)).count() == 1;
                if let (true, true, Some(x), Some(t)) = (once(part), once(whole), get(part), get(whole)) {
                    if x > t {
                        return Err(format!("{part} {x} kB > {whole} {t} kB"));
                    }
                }
            }
            let (total, used) = meminfo::swap_kb(&host, swap);
            if used > total {
                return Err(format!("swap used {used} > total {total}"));
            }
            Ok("rendered")
        },
    );
}

fn processor_lines(text: &str) -> Vec<Option<usize>> {
    // Same rule as the renderer: `processor<ws>: N`.
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim_end() == "processor").then(|| v.trim().parse().ok())
        })
        .collect()
}

fn random_visible(rng: &mut Rng, ids: &[usize]) -> Vec<usize> {
    let mut v: Vec<usize> = ids.iter().copied().filter(|_| rng.one_in(2)).collect();
    for _ in 0..rng.below(3) {
        v.push(if rng.one_in(2) { rng.below(64) } else { rng.interesting_u64() as usize });
    }
    if rng.one_in(3) {
        v = ids.to_vec();
    }
    v
}

#[test]
fn cpuinfo_renderer() {
    run(
        "cpuinfo",
        400,
        |rng| {
            let host = host_text(rng, CPUINFO, |rng| {
                let block = CPUINFO.split("\n\n").next().unwrap_or("").to_string();
                (0..1 + rng.below(256)).map(|i| format!("{}\n\n", block.replacen("processor\t: 0", &format!("processor\t: {i}"), 1))).collect()
            });
            let ids: Vec<usize> = processor_lines(&lossy(&host)).into_iter().flatten().collect();
            let mut visible = random_visible(rng, &ids);
            if rng.one_in(2) {
                visible.sort_unstable();
                visible.dedup();
            }
            encode(&[&host, &serde_json::to_vec(&visible).unwrap()])
        },
        |case| {
            let [host, visible] = parts::<2>(case)?;
            let host = lossy(&host);
            let visible: Vec<usize> = serde_json::from_slice(&visible).map_err(|e| e.to_string())?;
            let out = cpuinfo::render(&host, &visible);
            let want = processor_lines(&host).into_iter().filter(|id| id.is_some_and(|c| visible.contains(&c))).count();
            let got: Vec<Option<usize>> = processor_lines(&out).into_iter().filter(|x| x.is_some()).collect();
            let expect: Vec<Option<usize>> = (0..want).map(Some).collect();
            if got != expect {
                return Err(format!("processor numbers {got:?}, expected 0..{want}"));
            }
            Ok("rendered")
        },
    );
}

/// Splits a /proc/stat line as the renderer does: the aggregate, a per-cpu line, or other.
enum StatLine {
    Aggregate,
    Cpu(usize, Vec<u64>),
    Other,
}

fn stat_line(l: &str) -> StatLine {
    let Some(after) = l.strip_prefix("cpu") else { return StatLine::Other };
    if after.starts_with(' ') {
        return StatLine::Aggregate;
    }
    let mut f = after.split_whitespace();
    match f.next().and_then(|id| id.parse().ok()) {
        Some(id) => StatLine::Cpu(id, f.map(|x| x.parse().unwrap_or(0)).collect()),
        None => StatLine::Other,
    }
}

#[test]
fn stat_renderer() {
    run(
        "stat",
        400,
        |rng| {
            let host = host_text(rng, STAT, |rng| {
                let line = STAT.lines().nth(1).unwrap_or("cpu0 1 2 3 4 5 6 7 8 9 10");
                let (_, rest) = line.split_once(' ').unwrap_or(("", ""));
                let cpus: String = (0..1 + rng.below(256)).map(|i| format!("cpu{i} {rest}\n")).collect();
                format!("{}\n{cpus}{}", STAT.lines().next().unwrap_or("cpu  0"), STAT.lines().skip(3).collect::<Vec<_>>().join("\n"))
            });
            // As the server computes it: host cpus, cpuset, quota.
            let host_cpus = render::host_cpus_from_stat(&lossy(&host));
            let cpuset = if rng.one_in(2) { None } else { Some(random_visible(rng, &host_cpus)) };
            let quota = if rng.one_in(2) { None } else { Some(*rng.pick(&[0.1, 1.0, 1.5, 3.0, 1e9, f64::INFINITY, f64::NAN, -1.0, 0.0])) };
            let usage = rng.one_in(2).then(|| (0..rng.below(300)).map(|_| [rng.interesting_u64(), rng.interesting_u64()]).collect::<Vec<_>>());
            let params = json!({"cpuset": cpuset, "quota": quota.map(|q| q.to_string()), "usage": usage});
            encode(&[&host, &serde_json::to_vec(&params).unwrap()])
        },
        |case| {
            let [host, params] = parts::<2>(case)?;
            let host = lossy(&host);
            let p: Value = serde_json::from_slice(&params).map_err(|e| e.to_string())?;
            let cpuset: Option<Vec<usize>> = p["cpuset"].as_array().map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0) as usize).collect());
            let cpuset = cpuset.map(|mut c| {
                c.sort_unstable();
                c.dedup();
                c
            });
            let quota: Option<f64> = p["quota"].as_str().and_then(|s| s.parse().ok());
            let host_cpus = render::host_cpus_from_stat(&host);
            let visible = render::visible_cpus(&host_cpus, cpuset.as_deref(), quota);
            let usage: Option<Vec<stat::CpuTicks>> = p["usage"].as_array().map(|a| a.iter().map(|x| { let v = u64s(x); stat::CpuTicks { user: v[0], system: v[1] } }).collect());
            let out = stat::render(&host, &visible, usage.as_deref());

            let ins: Vec<StatLine> = host.lines().map(stat_line).collect();
            let outs: Vec<StatLine> = out.lines().map(stat_line).collect();
            // (A last line "x\r" without its newline comes out as "x\r\n", which lines() reads as "x".)
            let others = |text: &str, ls: &[StatLine]| text.lines().zip(ls).filter(|(_, s)| matches!(s, StatLine::Other)).map(|(l, _)| l.trim_end_matches('\r').to_string()).collect::<Vec<_>>();
            if others(&host, &ins) != others(&out, &outs) {
                return Err("non-cpu lines changed".into());
            }
            if outs.iter().filter(|s| matches!(s, StatLine::Aggregate)).count() != 1 {
                return Err("not exactly one aggregate cpu line".into());
            }
            let cpus: Vec<(usize, &Vec<u64>)> = outs.iter().filter_map(|s| if let StatLine::Cpu(i, v) = s { Some((*i, v)) } else { None }).collect();
            if let Some((i, _)) = cpus.iter().find(|(i, _)| *i >= visible.len()) {
                return Err(format!("cpu{i} but only {} visible cpus", visible.len()));
            }
            // Renumbered 0..n-1 in order, when the host lists its cpus as the kernel does
            // (ascending, once each; lines swapped by the mutator keep their own numbers).
            let host_ids: Vec<usize> = ins.iter().filter_map(|s| if let StatLine::Cpu(i, _) = s { Some(*i) } else { None }).collect();
            if host_ids.windows(2).all(|w| w[0] < w[1]) {
                let idx: Vec<usize> = cpus.iter().map(|(i, _)| *i).collect();
                let expect: Vec<usize> = (0..visible.iter().filter(|c| host_ids.contains(c)).count()).collect();
                if idx != expect && visible.iter().all(|c| host_ids.contains(c)) {
                    return Err(format!("cpu lines numbered {idx:?}, expected {expect:?}"));
                }
            }
            let agg_line = out.lines().find(|l| matches!(stat_line(l), StatLine::Aggregate)).unwrap_or("");
            let agg: Vec<u64> = agg_line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(u64::MAX)).collect();
            let mut sum = [0u64; 10];
            for (_, v) in &cpus {
                for (s, x) in sum.iter_mut().zip(v.iter()) {
                    *s = s.saturating_add(*x);
                }
            }
            if agg != sum {
                return Err(format!("aggregate {agg:?} is not the sum {sum:?} of the cpu lines"));
            }
            Ok("rendered")
        },
    );
}

#[test]
fn misc_renderers() {
    run(
        "misc",
        400,
        |rng| {
            let sample = *rng.pick(&[LOADAVG, SWAPS, UPTIME, DISKSTATS]);
            let host = host_text(rng, sample, |_| "".to_string());
            let f = |rng: &mut Rng| *rng.pick(&[0.0, 1.0, 123.456, 1e6, 1e300, -1.0, f64::INFINITY, f64::NAN, 0.004, 0.005]);
            let params = json!({
                "up": f(rng).to_string(), "busy": f(rng).to_string(), "n": rng.interesting_u64() % 5000,
                "pids": if rng.one_in(4) { Value::Null } else { json!(rng.interesting_u64()) },
                "swap": [rng.interesting_u64(), rng.interesting_u64()],
            });
            encode(&[&host, &serde_json::to_vec(&params).unwrap()])
        },
        |case| {
            let [host, params] = parts::<2>(case)?;
            let host = lossy(&host);
            let p: Value = serde_json::from_slice(&params).map_err(|e| e.to_string())?;
            let fl = |k: &str| p[k].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
            let n = p["n"].as_u64().unwrap_or(0) as usize;
            let (up, busy) = (fl("up"), fl("busy"));
            let out = misc::uptime(up, busy, n);
            if up.is_finite() && busy.is_finite() && up.abs() < 1e15 {
                let f: Vec<&str> = out.trim_end_matches('\n').split(' ').collect();
                let ok = out.ends_with('\n')
                    && f.len() == 2
                    && f.iter().all(|x| x.parse::<f64>().is_ok_and(|v| v >= 0.0) && x.split_once('.').is_some_and(|(_, d)| d.len() == 2));
                if !ok {
                    return Err(format!("uptime({up}, {busy}, {n}) = {out:?}"));
                }
            }
            let pids = p["pids"].as_u64();
            let out = misc::loadavg(&host, pids);
            let hf: Vec<&str> = host.split_whitespace().collect();
            if pids.is_none() || hf.len() != 5 || !hf[3].contains('/') {
                if out != host {
                    return Err("loadavg changed a text it cannot parse".into());
                }
            } else {
                let f: Vec<&str> = out.split_whitespace().collect();
                let counts = f.get(3).and_then(|c| c.split_once('/')).and_then(|(r, t)| Some((r.parse::<u64>().ok()?, t.parse::<u64>().ok()?)));
                match counts {
                    Some((r, t)) if f.len() == 5 && r >= 1 && r <= t && out.ends_with('\n') => {}
                    _ => return Err(format!("loadavg {out:?}")),
                }
            }
            let sw = u64s(&p["swap"]);
            let out = misc::swaps(&host, sw[0], sw[1]);
            if !out.starts_with("Filename") || out.lines().count() != 1 + usize::from(sw[0] > 0) || !out.ends_with('\n') {
                return Err(format!("swaps {out:?}"));
            }
            let out = misc::cpu_online(n);
            if render::parse_cpu_list(&out).map_err(|e| e.to_string())? != (0..n.max(1)).collect::<Vec<_>>() {
                return Err(format!("cpu_online({n}) = {out:?}"));
            }
            if misc::diskstats(&host) != host {
                return Err("diskstats changed".into());
            }
            Ok("rendered")
        },
    );
}

const MOUNTINFO: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /docker/x /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified\\040dir rw,relatime - cgroup2 cgroup2 rw
";
const SMALL: &[&str] = &[
    "max\n", "-1\n", "9223372036854771712\n", "268435456\n", "0-3,8,10-11\n", "0\n", "\n", "max 100000\n", "50000 100000\n", "50000 0\n",
    "cpu user system\n0 57257632592 16797353992\n1 67576801553 22579438007\n", "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\n",
    "hierarchical_memory_limit 268435456\nhierarchical_memsw_limit 9223372036854771712\n", "1\n", " 42 \n", "+5\0",
];

#[test]
fn cgroup_and_sysctl_parsers() {
    use crate::fuse::{cgroup, sysctl};
    run(
        "parsers",
        600,
        |rng| {
            let sample = if rng.one_in(4) { *rng.pick(&[MOUNTINFO, MEMSTAT_V1, MEMSTAT_V2, STAT]) } else { *rng.pick(SMALL) };
            let mut corpus = samples();
            corpus.extend(SMALL.iter().map(|s| s.as_bytes()));
            let text = if rng.one_in(8) { sample.as_bytes().to_vec() } else { mutate_text(rng, sample, &corpus) };
            let range = if rng.one_in(2) { *rng.pick(sysctl::TABLE) } else { ("x", -(rng.interesting_u64() as i64).abs(), rng.interesting_u64() as i64) };
            encode(&[&text, &serde_json::to_vec(&[range.1, range.2]).unwrap()])
        },
        |case| {
            let [text, range] = parts::<2>(case)?;
            let t = lossy(&text);
            let _ = cgroup::parse_mountinfo(&t);
            if let Ok(Some(v)) = cgroup::parse_limit(&t) {
                if v >= 1 << 62 {
                    return Err(format!("parse_limit gave {v}, which is unlimited"));
                }
            }
            let _ = cgroup::parse_u64(&t);
            let _ = cgroup::parse_memory_stat(&t, true);
            let _ = cgroup::parse_memory_stat(&t, false);
            let _ = cgroup::v1_hierarchical_limit(&t, "hierarchical_memory_limit");
            if let Ok(Some(q)) = cgroup::parse_cpu_max(&t) {
                if !q.is_finite() || q < 0.0 {
                    return Err(format!("parse_cpu_max gave {q}"));
                }
            }
            if let Ok(v) = cgroup::parse_cpuacct_usage_all(&t) {
                if v.len() > (1 << 16) + 1 {
                    return Err(format!("parse_cpuacct_usage_all allocated {} cpus", v.len()));
                }
            }
            let _ = cgroup::parse_cpu_stat_v2(&t);
            let _ = render::host_cpus_from_stat(&t);
            if let Ok(cpus) = render::parse_cpu_list(&t) {
                if cpus.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(format!("parse_cpu_list gave an unsorted list {cpus:?}"));
                }
                let back = render::parse_cpu_list(&render::format_cpu_list(&cpus)).map_err(|e| format!("format_cpu_list output does not parse: {e}"))?;
                if back != cpus {
                    return Err("format/parse_cpu_list round trip differs".into());
                }
            }
            let r: Vec<i64> = serde_json::from_slice(&range).map_err(|e| e.to_string())?;
            let (min, max) = (r[0], r[1]);
            if let Ok(v) = sysctl::parse_value(&text, min, max) {
                if v < min || v > max {
                    return Err(format!("sysctl value {v} outside [{min}, {max}]"));
                }
            }
            Ok("parsed")
        },
    );
}

#[test]
fn case_encoding_round_trips() {
    let case = encode(&[b"", b"a\nb", &[0, 255, b'\n']]);
    assert_eq!(decode(&case).unwrap(), vec![b"".to_vec(), b"a\nb".to_vec(), vec![0, 255, b'\n']]);
    assert!(decode(b"5\nabc").is_err());
    let mut a = Rng::new(1);
    let mut b = Rng::new(1);
    assert_eq!((0..10).map(|_| a.next()).collect::<Vec<_>>(), (0..10).map(|_| b.next()).collect::<Vec<_>>());
    assert_ne!(Rng::new(1).next(), Rng::new(2).next());
}


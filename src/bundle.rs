//! Reading a bundle's config.json with errors that name the file, the field and the value,
//! and writing the rewritten spec to nestrun's shadow bundle.
use std::fs;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;
use serde_json::Value;

/// Refuse absurdly large configs before parsing (a real config.json is a few KiB).
const MAX_CONFIG_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {0} does not exist")]
    MissingBundle(PathBuf),
    #[error("bundle {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} does not exist")]
    MissingConfig(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is {size} bytes, larger than the {max} byte limit")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{path}: invalid config at {field}: {msg}")]
    Parse { path: PathBuf, field: String, msg: String },
    #[error("{path}: root.path is missing")]
    NoRoot { path: PathBuf },
    #[error("rootfs {0} does not exist")]
    MissingRootfs(PathBuf),
    #[error("rootfs {0} is not a directory")]
    RootfsNotDir(PathBuf),
    #[error("mounts[{index}] at {dest:?}: bind source {src:?} does not exist")]
    MissingMountSource { index: usize, dest: PathBuf, src: PathBuf },
    #[error("linux.namespaces[{index}] ({typ}): cannot open path {path:?}: {err}")]
    NamespacePath { index: usize, typ: String, path: PathBuf, err: std::io::Error },
    #[error("rootfs {0} is the host's root directory /: refused in system mode (the container's root would own it through the ID-mapped mount)")]
    HostRoot(PathBuf),
    #[error("mounts[{index}].destination {dest:?}: '..' components are refused in system mode")]
    DotDotDestination { index: usize, dest: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

pub fn config_path(bundle: &Path) -> PathBuf {
    bundle.join("config.json")
}

/// Parse config.json text; `path` only names the file in errors. Pure, for tests and fuzzing.
pub fn parse_spec(path: &Path, text: &[u8]) -> Result<Spec, BundleError> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize::<_, Spec>(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        // serde_json appends " at line L column C"; keep it, it is useful in a big file.
        BundleError::Parse {
            path: path.to_path_buf(),
            field: if field == "." { "top level".into() } else { field },
            msg: inner.to_string(),
        }
    })
}

/// A bundle's config.json, checked.
#[derive(Debug)]
pub struct Loaded {
    pub spec: Spec,
    /// The absolute, canonical rootfs path.
    pub rootfs: PathBuf,
    /// The file's text (for [`Unknown::of`]).
    pub text: Vec<u8>,
}

/// Load and check `<bundle>/config.json` and the rootfs it names.
pub fn load(bundle: &Path) -> Result<Loaded, BundleError> {
    let meta = fs::metadata(bundle).map_err(|_| BundleError::MissingBundle(bundle.to_path_buf()))?;
    if !meta.is_dir() {
        return Err(BundleError::NotADirectory(bundle.to_path_buf()));
    }
    let path = config_path(bundle);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BundleError::MissingConfig(path)),
        Err(source) => return Err(BundleError::Read { path, source }),
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(BundleError::TooLarge { path, size: meta.len(), max: MAX_CONFIG_BYTES });
    }
    let text = fs::read(&path).map_err(|source| BundleError::Read { path: path.clone(), source })?;
    let spec = parse_spec(&path, &text)?;
    let root = spec.root().as_ref().ok_or_else(|| BundleError::NoRoot { path: path.clone() })?;
    let rootfs = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    match fs::metadata(&rootfs) {
        Err(_) => return Err(BundleError::MissingRootfs(rootfs)),
        Ok(m) if !m.is_dir() => return Err(BundleError::RootfsNotDir(rootfs)),
        Ok(_) => {}
    }
    let rootfs = fs::canonicalize(&rootfs).map_err(|_| BundleError::MissingRootfs(rootfs.clone()))?;
    // A missing bind source otherwise fails late, inside libcontainer's init, with a message
    // that names neither the mount nor the path.
    for (index, m) in spec.mounts().iter().flatten().enumerate() {
        let is_bind = m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind");
        if let Some(src) = m.source().as_ref().filter(|_| is_bind) {
            let src = if src.is_absolute() { src.clone() } else { bundle.join(src) };
            if fs::symlink_metadata(&src).is_err() {
                return Err(BundleError::MissingMountSource { index, dest: m.destination().clone(), src });
            }
        }
    }
    // Likewise a namespace path that cannot be opened fails late and namelessly.
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    for (index, ns) in namespaces.into_iter().flatten().enumerate() {
        if let Some(p) = ns.path() {
            if let Err(err) = fs::File::open(p) {
                return Err(BundleError::NamespacePath { index, typ: ns.typ().to_string(), path: p.clone(), err });
            }
        }
    }
    Ok(Loaded { spec, rootfs, text })
}

/// What system mode refuses in a bundle that a plain runtime would run. Pure.
/// - A rootfs that resolves to `/`: nestrun ID-maps the rootfs so that the container's root
///   owns it; the host's own root directory must never be handed over that way.
/// - A mount destination with `..`: runc and libcontainer resolve it inside the rootfs (so it
///   cannot escape), but where it lands is surprising and libcontainer fails late with a
///   message that does not name the mount; refuse it up front, naming it.
pub fn check_system(spec: &Spec, rootfs: &Path) -> Result<(), BundleError> {
    if rootfs == Path::new("/") {
        return Err(BundleError::HostRoot(rootfs.to_path_buf()));
    }
    for (index, m) in spec.mounts().iter().flatten().enumerate() {
        if m.destination().components().any(|c| c == std::path::Component::ParentDir) {
            return Err(BundleError::DotDotDestination { index, dest: m.destination().clone() });
        }
    }
    Ok(())
}

/// Write the rewritten spec as `<dir>/config.json` (atomically: temp file + rename), with the
/// members of the engine's config.json that oci_spec does not know put back (see [`Unknown`]):
/// hooks and tools that read the bundle see what the engine wrote.
pub fn write_shadow(dir: &Path, spec: &Spec, unknown: &Unknown) -> Result<PathBuf, BundleError> {
    fs::create_dir_all(dir).map_err(|source| BundleError::Write { path: dir.to_path_buf(), source })?;
    let path = config_path(dir);
    let tmp = dir.join(".config.json.tmp");
    let mut out = serde_json::to_value(spec).expect("a Spec always serialises");
    unknown.apply(&mut out);
    let text = serde_json::to_vec(&out).expect("a Value always serialises");
    fs::write(&tmp, text).map_err(|source| BundleError::Write { path: tmp.clone(), source })?;
    fs::rename(&tmp, &path).map_err(|source| BundleError::Write { path: path.clone(), source })?;
    Ok(path)
}

/// The object members of an engine's config.json that a round-trip through oci_spec drops:
/// fields of newer spec versions and vendor extensions, at any depth of nested objects, by
/// path. Empty for nearly every real config. Members inside arrays (mounts, hooks) are not
/// kept: the rewrite adds and removes array elements, so positions do not match; neither are
/// members nested deeper than serde_json's 128 levels (the text then does not parse as a Value).
#[derive(Debug, Default)]
pub struct Unknown(Vec<(Vec<String>, Value)>);

impl Unknown {
    /// Of the config.json `text` that `load` parsed into `spec` (before any rewrite).
    pub fn of(text: &[u8], spec: &Spec) -> Unknown {
        let Ok(original) = serde_json::from_slice::<Value>(text) else { return Unknown::default() };
        let known = serde_json::to_value(spec).expect("a Spec always serialises");
        let mut found = vec![];
        unknown_members(&original, &known, &mut vec![], &mut found);
        Unknown(found)
    }

    /// Adds each member where `out` has the parent object and not the member: a rewrite's own
    /// value always wins, and a field the rewrite removed that oci_spec knows is not brought
    /// back.
    pub fn apply(&self, out: &mut Value) {
        for (path, value) in &self.0 {
            let (key, parents) = path.split_last().expect("member paths are never empty");
            let parent = parents.iter().try_fold(&mut *out, |at, p| at.get_mut(p.as_str()).filter(|v| v.is_object()));
            if let Some(obj) = parent.and_then(Value::as_object_mut) {
                obj.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
}

/// Paths (object keys from the top) of members of `original` that `known` lacks.
fn unknown_members(original: &Value, known: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    let (Some(o), Some(k)) = (original.as_object(), known.as_object()) else { return };
    for (key, value) in o {
        path.push(key.clone());
        match k.get(key) {
            None if !value.is_null() => out.push((path.clone(), value.clone())),
            Some(kv) => unknown_members(value, kv, path, out),
            None => {}
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_field_and_file() {
        let text = br#"{"ociVersion":"1.0.2","process":{"cwd":"/","args":["sh"],"user":{"uid":"zero","gid":0}},"root":{"path":"rootfs"}}"#;
        let err = parse_spec(Path::new("/b/config.json"), text).unwrap_err().to_string();
        assert!(err.starts_with("/b/config.json: invalid config at process.user.uid: invalid type: string \"zero\""), "{err}");
    }

    #[test]
    fn malformed_json_names_position() {
        let err = parse_spec(Path::new("c.json"), b"{\"ociVersion\": ").unwrap_err().to_string();
        assert!(err.contains("c.json: invalid config at") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn missing_bundle_and_config_are_named() {
        let err = load(Path::new("/nonexistent/bundle")).unwrap_err().to_string();
        assert_eq!(err, "bundle /nonexistent/bundle does not exist");
        let dir = std::env::temp_dir().join(format!("nestrun-bundle-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert_eq!(err, format!("{}/config.json does not exist", dir.display()));
        fs::write(dir.join("config.json"), br#"{"ociVersion":"1.0.2","root":{"path":"nope"}}"#).unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert_eq!(err, format!("rootfs {}/nope does not exist", dir.display()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_members_survive_the_rewrite_and_rewrites_win() {
        let original: Value = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
                "process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0},"x-vendor-knob":7},
                "linux":{"seccomp":{"defaultAction":"SCMP_ACT_ERRNO"},"x-new-field":{"a":[1,2]}},
                "mounts":[{"destination":"/x","type":"tmpfs","source":"tmpfs","x-in-array":1}],
                "org.example.extension":{"keep":"me"},"x-null":null}"#,
        )
        .unwrap();
        let text = serde_json::to_vec(&original).unwrap();
        let mut spec = parse_spec(Path::new("config.json"), &text).unwrap();
        let unknown = Unknown::of(&text, &spec);
        // What a rewrite does: drop a known field, change another.
        spec.linux_mut().as_mut().unwrap().set_seccomp(None);
        spec.set_hostname(Some("rewritten".into()));
        let mut out = serde_json::to_value(&spec).unwrap();
        assert!(out.get("org.example.extension").is_none(), "oci_spec itself drops unknown members");
        unknown.apply(&mut out);
        assert_eq!(out["org.example.extension"], serde_json::json!({"keep": "me"}));
        assert_eq!(out["process"]["x-vendor-knob"], 7);
        assert_eq!(out["linux"]["x-new-field"], serde_json::json!({"a": [1, 2]}));
        assert_eq!(out["hostname"], "rewritten");
        assert!(out["linux"].get("seccomp").is_none(), "a field the rewrite removed came back");
        assert!(out["mounts"][0].get("x-in-array").is_none());
        assert!(out.get("x-null").is_none());
        // The result still parses as a spec, and a second pass changes nothing.
        let again: Spec = serde_json::from_value(out.clone()).unwrap();
        assert_eq!(again.hostname().as_deref(), Some("rewritten"));
        let before = out.clone();
        unknown.apply(&mut out);
        assert_eq!(out, before);
    }


    #[test]
    fn system_mode_refuses_host_root_and_dotdot_destinations() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}},
                "mounts":[{"destination":"/ok/..hidden","type":"tmpfs","source":"tmpfs"},{"destination":"/tmp/../../x","type":"bind","source":"/etc"}]}"#,
        )
        .unwrap();
        let e = check_system(&spec, Path::new("/")).unwrap_err().to_string();
        assert!(e.starts_with("rootfs / is the host's root directory"), "{e}");
        let e = check_system(&spec, Path::new("/b/rootfs")).unwrap_err().to_string();
        assert_eq!(e, r#"mounts[1].destination "/tmp/../../x": '..' components are refused in system mode"#);
        let mut fine = spec.clone();
        fine.mounts_mut().as_mut().unwrap().pop();
        assert!(check_system(&fine, Path::new("/b/rootfs")).is_ok(), "'..hidden' is a name, not '..'");
    }

}

use anyhow::{bail, Context, Result};
use libcontainer::oci_spec::runtime::Spec;

/// runc's `spec`: a starter config.json (terminal true, like runc's, which suites rely on).
pub fn run(a: liboci_cli::Spec) -> Result<()> {
    let dir = a.bundle.unwrap_or_else(|| ".".into());
    let path = dir.join("config.json");
    if path.exists() {
        bail!("{} already exists", path.display());
    }
    let mut spec = if a.rootless { Spec::rootless(0, 0) } else { Spec::default() };
    if let Some(p) = spec.process_mut().as_mut() {
        p.set_terminal(Some(true));
    }
    std::fs::write(&path, serde_json::to_string_pretty(&spec)?).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

use anyhow::{bail, Result};
use libcgroups::common::CgroupManager;

use super::Ctx;

pub fn cgroup_manager(ctx: &Ctx, id: &str) -> Result<libcgroups::common::AnyCgroupManager> {
    let c = crate::lifecycle::load(&ctx.root, id)?;
    Ok(libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: c.spec()?.cgroup_path,
        systemd_cgroup: c.systemd(),
        container_name: id.to_string(),
    })?)
}

pub fn run(a: liboci_cli::Ps, ctx: &Ctx) -> Result<()> {
    let pids: Vec<i32> = cgroup_manager(ctx, &a.container_id)?.get_all_pids()?.iter().map(|p| p.as_raw()).collect();
    match a.format.as_str() {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => {
            let opts = if a.ps_options.is_empty() { vec!["-ef".to_string()] } else { a.ps_options.clone() };
            let out = std::process::Command::new("ps").args(&opts).output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let Some(col) = header.split_whitespace().position(|h| h == "PID") else { bail!("ps {opts:?} printed no PID column") };
            println!("{header}");
            for l in lines {
                if l.split_whitespace().nth(col).and_then(|p| p.parse::<i32>().ok()).is_some_and(|p| pids.contains(&p)) {
                    println!("{l}");
                }
            }
        }
        f => bail!("invalid ps format {f:?}: use json or table"),
    }
    Ok(())
}

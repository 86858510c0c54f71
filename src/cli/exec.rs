use anyhow::Result;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitStatus};

use super::Ctx;
use crate::lifecycle::{self, LifecycleError};

pub fn run(a: liboci_cli::Exec, ctx: &Ctx) -> Result<i32> {
    let id = a.container_id.clone();
    // Load first: an unknown id is named before anything else is looked at.
    let c = lifecycle::load(&ctx.root, &id)?;
    if let Some(p) = &a.process {
        if !p.is_file() {
            anyhow::bail!("exec process file {} does not exist", p.display());
        }
        let text = std::fs::read(p)?;
        serde_json::from_slice::<libcontainer::oci_spec::runtime::Process>(&text)
            .map_err(|e| anyhow::anyhow!("exec process file {}: invalid process: {e}", p.display()))?;
    } else if a.command.is_empty() {
        anyhow::bail!("exec needs a command or --process FILE");
    }
    if c.status() != libcontainer::container::ContainerStatus::Running && !(a.ignore_paused && c.status() == libcontainer::container::ContainerStatus::Paused) {
        anyhow::bail!("container {id:?} is {}, not running: cannot exec", c.status());
    }
    // System containers: the engine's process file gets the init's privileges (capabilities:
    // docker's exec process carries docker's default set, so exec'd root lacked e.g.
    // CAP_NET_ADMIN for its own netns's sysctls) and rlimits clamped as at create (podman's
    // exec process asks for RLIMIT_NOFILE 1048576; raising it fails with EPERM). Without a
    // process file libcontainer takes the capabilities from the rewritten spec already; with one,
    // the bounding set is the init's (honouring a drop the engine's config made).
    let rec = lifecycle::record(&ctx.root, &id);
    let mut process_file = a.process.clone();
    let mut clamped = None;
    if let (Some(p), Some(rec)) = (&a.process, &rec) {
        let mut proc_: libcontainer::oci_spec::runtime::Process = serde_json::from_slice(&std::fs::read(p)?)?;
        if rec.mode == crate::facts::Mode::System {
            crate::rewrite::security::process_privileges(&mut proc_, &lifecycle::init_caps(&c), &lifecycle::rlimit_hard());
            let f = crate::sidecar::dir(&ctx.root, &id).join(format!("exec-{}.json", std::process::id()));
            std::fs::write(&f, serde_json::to_vec(&proc_)?)?;
            process_file = Some(f.clone());
            clamped = Some(f);
        }
    }
    // cgroup v2: into the init's cgroup when the container runs its own cgroup tree below its
    // init leaf (see host::cgroup::exec_cgroup); an explicit --cgroup wins.
    let cgroup_path = rec.as_ref().and_then(|r| r.cgroup_path.clone());
    let join = match (&a.cgroup, &cgroup_path, c.pid()) {
        (None, Some(cg), Some(pid)) => crate::host::cgroup::exec_cgroup_for(cg, pid.as_raw()),
        _ => None,
    };
    // Named v1 hierarchies (name=systemd), which the cgroup manager does not join: as the init.
    let named = match (&rec, &cgroup_path) {
        (Some(r), Some(p)) if r.mode == crate::facts::Mode::System && p.is_absolute() => crate::host::cgroup::named_procs(p),
        _ => Vec::new(),
    };
    let lc = |source| LifecycleError::Libcontainer { id: id.clone(), source };
    let built = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_root_path(&ctx.root)
        .map_err(lc)?
        .with_console_socket(a.console_socket.as_ref())
        .with_pid_file(a.pid_file.as_ref())
        .map_err(lc)?
        .with_preserved_fds(a.preserve_fds)
        .as_tenant()
        .with_detach(a.detach)
        .with_cwd(a.cwd.as_ref())
        .with_env(a.env.clone().into_iter().collect())
        .with_process(process_file.as_ref())
        .with_no_new_privs(a.no_new_privs)
        .with_container_args(a.command.clone())
        .with_additional_gids(a.additional_gids.clone())
        .with_user(a.user.map(|(u, _)| u))
        .with_group(a.user.and_then(|(_, g)| g))
        .with_capabilities(a.cap.clone())
        .with_ignore_paused(a.ignore_paused)
        .with_sub_cgroup(a.cgroup.clone())
        .with_cgroup_path(join)
        .with_extra_cgroup_procs(named)
        .build();
    if let Some(f) = clamped {
        let _ = std::fs::remove_file(f);
    }
    let pid = built.map_err(lc)?;
    if a.detach {
        return Ok(0);
    }
    Ok(match waitpid(pid, None)? {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 0,
    })
}

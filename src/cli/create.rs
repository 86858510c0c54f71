use anyhow::Result;

use super::Ctx;
use crate::lifecycle::{self, CreateArgs};

pub fn args(a: &liboci_cli::Create, ctx: &Ctx) -> CreateArgs {
    CreateArgs {
        id: a.container_id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
        systemd_cgroup: ctx.systemd_cgroup,
        detach: true,
    }
}

pub fn run(a: liboci_cli::Create, ctx: &Ctx) -> Result<()> {
    lifecycle::create(&args(&a, ctx), &ctx.root)?;
    Ok(())
}

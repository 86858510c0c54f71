//! CLI parsing: runc's command lines as containerd, dockerd and podman send them.
use clap::Parser;

use super::{Cmd, Opts};

fn parse(args: &[&str]) -> Opts {
    Opts::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn containerd_shim_create_line() {
    let o = parse(&["nestrun", "--root", "/run/containerd/runc/k8s.io", "--log", "/run/x/log.json", "--log-format", "json",
        "create", "--bundle", "/run/b", "--pid-file", "/run/b/init.pid", "--console-socket", "/tmp/pty.sock", "c1"]);
    assert_eq!(o.global.log_format.as_deref(), Some("json"));
    match o.cmd {
        Cmd::Create(c) => {
            assert_eq!(c.container_id, "c1");
            assert_eq!(c.bundle, std::path::PathBuf::from("/run/b"));
            assert!(c.console_socket.is_some());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn kill_signal_is_optional_and_all_flag_works() {
    match parse(&["nestrun", "kill", "c1"]).cmd {
        Cmd::Kill(k) => assert_eq!((k.signal.as_str(), k.all), ("SIGTERM", false)),
        other => panic!("{other:?}"),
    }
    match parse(&["nestrun", "kill", "--all", "c1", "9"]).cmd {
        Cmd::Kill(k) => assert_eq!((k.signal.as_str(), k.all), ("9", true)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn signal_names_numbers_and_garbage() {
    use super::kill::parse_signal;
    use super::kill::Sig;
    assert!(matches!(parse_signal("KILL"), Ok(Sig::Std(_))));
    assert!(matches!(parse_signal("sigterm"), Ok(Sig::Std(_))));
    assert!(matches!(parse_signal("15"), Ok(Sig::Std(_))));
    // Real-time signals: docker sends systemd's stop signal SIGRTMIN+3 as "37".
    assert!(matches!(parse_signal("37"), Ok(Sig::Raw(37))));
    assert!(matches!(parse_signal("SIGRTMIN+3"), Ok(Sig::Raw(n)) if n == libc::SIGRTMIN() + 3));
    assert!(matches!(parse_signal("RTMAX-1"), Ok(Sig::Raw(n)) if n == libc::SIGRTMAX() - 1));
    let msg = "invalid signal \"FOO\": use a name like TERM or SIGKILL, RTMIN+3, or a number from 1 to 64";
    assert_eq!(parse_signal("FOO").unwrap_err(), msg);
    assert!(parse_signal("65").is_err() && parse_signal("0").is_err() && parse_signal("RTMIN+x").is_err());
}

#[test]
fn exec_and_update_lines() {
    match parse(&["nestrun", "--root", "/r", "exec", "--process", "/tmp/p.json", "--detach", "--pid-file", "/tmp/p.pid", "c1"]).cmd {
        Cmd::Exec(e) => assert!(e.detach && e.process.is_some()),
        other => panic!("{other:?}"),
    }
    match parse(&["nestrun", "update", "--resources", "-", "c1"]).cmd {
        Cmd::Update(u) => assert_eq!(u.resources, Some("-".into())),
        other => panic!("{other:?}"),
    }
    match parse(&["nestrun", "--systemd-cgroup", "delete", "--force", "c1"]).cmd {
        Cmd::Delete(d) => assert!(d.force),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_id_is_rejected_by_the_parser() {
    assert!(Opts::try_parse_from(["nestrun", "start", ""]).is_err());
    assert!(Opts::try_parse_from(["nestrun", "fuse-serve", "--help"]).is_err(), "help exits through an error value");
}

#[test]
fn usage_errors_are_one_line() {
    let e = Opts::try_parse_from(["nestrun", "create", "--bundle", "/b", ""]).unwrap_err();
    let line = super::usage_error_line(&e.render().to_string());
    assert!(!line.contains('\n') && line.contains("CONTAINER_ID") && !line.starts_with("error:"), "{line}");
}

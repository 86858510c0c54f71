//! Integration tests: real dockerd, containerd and podman driving the built nestrun binary.
//!
//! Run them with `scripts/test`, which starts the private daemons, builds the test images and
//! sets NESTRUN_TEST_IMAGES=1. Without it the engine tests print "skipped: run scripts/test"
//! and pass; the bad-input tests drive the binary directly and always run (as root).
pub mod docker_runtime;
#[macro_use]
pub mod util;
pub mod skip;

mod badinput;
mod check;
mod concurrency;
mod cri;
mod cri_cgroups;
mod cri_dind;
mod cri_kubelet;
mod cri_stream;
mod cri_slice;
mod cri_userns;
mod cri_volumes;
mod ctr;
mod diskfull;
mod gc;
mod leaks;
mod docker;
mod docker28;
mod inner;
mod nestedproc;
mod nesting;
mod podman;
mod proc;
mod reader;
mod restart;
mod seccomp;
mod sid;
mod supervisor;
mod system;
mod systemd;
mod validation;

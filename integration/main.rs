//! Integration tests: real dockerd, containerd and podman driving the built nestrun binary.

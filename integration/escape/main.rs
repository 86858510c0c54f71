//! Escape suite: a probe run as root inside nested containers.

//! A real `lockstepd` process on loopback, for the integration tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running node; killed when dropped.
pub struct Node {
    pub child: Child,
    /// `127.0.0.1:PORT` as the daemon printed it.
    pub addr: String,
    /// The node id as the daemon printed it.
    pub key: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lockstepd` on an ephemeral loopback port with `backend` and any
/// extra flags, and waits for its "listening" line. The node serves
/// uncertified (`--uncertified`): most tests are not about certification.
pub fn start(state: &Path, backend: &str, extra: &[&str]) -> Node {
    let mut flags = vec!["--uncertified"];
    flags.extend_from_slice(extra);
    start_certified(state, backend, &flags)
}

/// Starts `lockstepd` without `--uncertified`: it serves only with a
/// passing certification report (give `--trust-certifier KEY` in `extra`).
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn start_certified(state: &Path, backend: &str, extra: &[&str]) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
        .args(["--listen", "127.0.0.1:0", "--backend", backend, "--state"])
        .arg(state)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let rest = line
        .strip_prefix("lockstepd listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let (addr, key) = rest.trim().split_once(" as ").unwrap();
    Node {
        child,
        addr: addr.to_string(),
        key: key.to_string(),
    }
}

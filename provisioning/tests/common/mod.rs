//! Helpers shared by the fleet's integration tests: real `lockstepd`
//! processes on loopback (CPU backend), and the `lockstep-fleet` and
//! `lockstep` binaries.
//!
//! `lockstepd` and `lockstep` are found beside this crate's binary in the
//! target directory; `cargo test --workspace` (make test) builds them.

// Not every test binary that includes this module uses every helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use lockstep_identity::SigningKey;

pub fn fleet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lockstep-fleet"))
}

pub fn lockstepd_bin() -> PathBuf {
    let path = fleet_bin().with_file_name("lockstepd");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p lockstep-daemon), or run make test",
        path.display()
    );
    path
}

pub struct Node {
    pub child: Child,
    pub addr: String,
    pub key: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a node with a first-enrolment window open (most tests enroll an
/// unprovisioned node the way an operator at its console would).
pub fn start(state: &Path, extra: &[&str]) -> Node {
    let mut flags = vec!["--enroll-window-s", "600"];
    flags.extend_from_slice(extra);
    start_bare(state, &flags)
}

/// Starts a node with exactly these flags: no enrolment window. The key
/// is a file unless `extra` gives `--sealed-identity`.
pub fn start_bare(state: &Path, extra: &[&str]) -> Node {
    start_env(state, extra, None)
}

/// [`start_bare`] with `CREDENTIALS_DIRECTORY` set to `creds`.
pub fn start_env(state: &Path, extra: &[&str], creds: Option<&Path>) -> Node {
    let mut cmd = Command::new(lockstepd_bin());
    if let Some(c) = creds {
        cmd.env("CREDENTIALS_DIRECTORY", c);
    }
    if !extra.contains(&"--sealed-identity") {
        cmd.arg("--file-key");
    }
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--backend", "cpu", "--state"])
        .arg(state)
        // Certification is another issue's concern: serve jobs uncertified.
        .arg("--uncertified")
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

/// `lockstep-fleet --dir DIR [--db URL]`, without the caller's settings.
pub fn fleet_cmd(dir: &Path, db: Option<&str>) -> Command {
    let mut cmd = Command::new(fleet_bin());
    cmd.arg("--dir")
        .arg(dir)
        .env_remove("LOCKSTEP_KEY_PASSWORD")
        .env_remove("LOCKSTEP_FLEET_DB")
        .stdin(Stdio::null());
    if let Some(db) = db {
        cmd.args(["--db", db]);
    }
    cmd
}

pub fn fleet(dir: &Path, args: &[&str]) -> Output {
    fleet_on(dir, None, args)
}

/// [`fleet`] with the inventory in the database `db` (None: SQLite).
pub fn fleet_on(dir: &Path, db: Option<&str>, args: &[&str]) -> Output {
    fleet_cmd(dir, db).args(args).output().unwrap()
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn init(dir: &Path) -> SigningKey {
    init_on(dir, None)
}

pub fn init_on(dir: &Path, db: Option<&str>) -> SigningKey {
    ok(&fleet_on(dir, db, &["init", "--unencrypted"]));
    SigningKey::read_file(&dir.join("operator.key"), None).unwrap()
}

pub fn lockstep_bin() -> PathBuf {
    let path = fleet_bin().with_file_name("lockstep");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p lockstep-cli), or run make test",
        path.display()
    );
    path
}

pub fn submit(node: &Node, receipt: &Path, out: &Path) {
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/attention.json");
    let o = Command::new(lockstep_bin())
        .args([
            "submit",
            "--node",
            &node.addr,
            "--node-key",
            &node.key,
            "--receipt",
        ])
        .arg(receipt)
        .arg("exec")
        .arg(&program)
        .arg("--out-dir")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

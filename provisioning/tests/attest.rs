//! Attestation end to end with a software TPM (swtpm, started here on
//! loopback with its own EK CA): `lockstepd --tpm-tcti` with a TPM-sealed
//! identity, `lockstep attest` (live and on edited transcripts), and
//! `lockstep-fleet enroll` attesting by default.
//!
//! Needs the Debian packages swtpm, swtpm-tools, tpm2-tools and
//! libtss2-tcti-swtpm0 (`make deps`): without them this test fails, naming
//! them. `lockstepd` and `lockstep` are found beside this crate's binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use lockstep_tpm::testing::Swtpm;

fn fleet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lockstep-fleet"))
}

fn sibling(name: &str, package: &str) -> PathBuf {
    let path = fleet_bin().with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p {package}), or run make test",
        path.display()
    );
    path
}

struct Node {
    child: Child,
    addr: String,
    key: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node on `tpm`, with a TPM-sealed identity pinning `operator` (or a
/// file key if `operator` is None).
fn start(dir: &Path, tpm: &Swtpm, operator: Option<&str>) -> Node {
    let state = dir.join("state");
    let mut cmd = Command::new(sibling("lockstepd", "lockstep-daemon"));
    match operator {
        Some(op) => {
            let creds = dir.join("credentials");
            std::fs::create_dir_all(&creds).unwrap();
            let config = dir.join("identity.toml");
            std::fs::write(&config, format!("trusted_operators = [{op:?}]\n")).unwrap();
            let out = Command::new(sibling("lockstepd", "lockstep-daemon"))
                .arg("new-identity")
                .arg("--config")
                .arg(&config)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(creds.join("lockstep-identity"), &out.stdout).unwrap();
            cmd.args(["--sealed-identity", "lockstep-identity"])
                .env("CREDENTIALS_DIRECTORY", &creds);
        }
        None => {
            cmd.args(["--file-key", "--enroll-window-s", "600"]);
        }
    }
    let mut child = cmd
        .args([
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "cpu",
            "--uncertified",
        ])
        .arg("--state")
        .arg(&state)
        .arg("--tpm-tcti")
        .arg(tpm.tcti())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("LOCKSTEP_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
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

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("LOCKSTEP_KEY_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn lockstep(args: &[&str]) -> Output {
    run(&sibling("lockstep", "lockstep-cli"), args)
}

fn fleet(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&fleet_bin(), &all)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit 2 with one line naming `why`.
fn refused(out: &Output, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(why), "expected {why:?} in: {err}");
}

fn manifest(path: &Path, name: &str, pcr11: [u8; 32]) -> String {
    let json = serde_json::json!({
        "format": 1,
        "name": name,
        "tpm_pcr11_sha256": hex::encode(pcr11),
    });
    std::fs::write(path, json.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

fn attest_args<'a>(node: &'a Node, roots: &'a str, manifest: &'a str) -> Vec<&'a str> {
    vec![
        "attest",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--ek-roots",
        roots,
        "--accept-manifest",
        manifest,
    ]
}

/// A transcript edited by `edit`, checked again.
fn check_edited(
    transcript: &Path,
    out: &Path,
    roots: &str,
    manifest: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Output {
    let mut t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(transcript).unwrap()).unwrap();
    edit(&mut t);
    std::fs::write(out, t.to_string()).unwrap();
    lockstep(&[
        "attest",
        "--check-transcript",
        out.to_str().unwrap(),
        "--ek-roots",
        roots,
        "--accept-manifest",
        manifest,
    ])
}

#[test]
fn nodes_attest_and_the_fleet_enrolls_only_attested_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tpm = Swtpm::start();
    let other_tpm = Swtpm::start();
    let roots = tpm.ek_roots_pem();
    let roots = roots.to_str().unwrap();
    let other_roots = other_tpm.ek_roots_pem();
    let other_roots = other_roots.to_str().unwrap();
    let pcr11 = tpm.pcr(11);
    let good = manifest(&t.join("good.manifest.json"), "lockstep-test-1", pcr11);
    let mut wrong = pcr11;
    wrong[0] ^= 0xff;
    let bad = manifest(&t.join("bad.manifest.json"), "lockstep-other", wrong);

    let f = t.join("fleet");
    let operator = ok(&fleet(&f, &["init", "--unencrypted"]));
    let operator = operator.trim();
    std::fs::create_dir_all(t.join("a")).unwrap();
    let node = start(&t.join("a"), &tpm, Some(operator));

    // Attested: the report names the release, PCR 11 and the digest.
    let transcript = t.join("transcript.json");
    let mut args = attest_args(&node, roots, &good);
    args.extend(["--save-transcript", transcript.to_str().unwrap()]);
    let report = ok(&lockstep(&args));
    assert!(report.contains("release: lockstep-test-1"), "{report}");
    assert!(
        report.contains(&format!("pcr11: {}", hex::encode(pcr11))),
        "{report}"
    );
    assert!(report.contains("key_protection: tpm-sealed"), "{report}");
    let digest = report
        .lines()
        .find_map(|l| l.strip_prefix("attestation_sha256: "))
        .unwrap()
        .to_string();
    assert_eq!(digest.len(), 64);
    // The saved transcript verifies again offline, to the same digest.
    let again = ok(&lockstep(&[
        "attest",
        "--check-transcript",
        transcript.to_str().unwrap(),
        "--ek-roots",
        roots,
        "--accept-manifest",
        &good,
    ]));
    assert!(again.contains(&digest), "{again}");

    // Another release's PCR 11, other EK roots: refused, named.
    refused(&lockstep(&attest_args(&node, roots, &bad)), "measurements");
    refused(
        &lockstep(&attest_args(&node, other_roots, &good)),
        "EK chain",
    );

    // Edited transcripts are refused, each for its reason.
    let edited = t.join("edited.json");
    let out = check_edited(&transcript, &edited, roots, &good, |v| {
        let q = v["evidence"]["quote"].as_str().unwrap().to_string();
        let mut b = hex::decode(q).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        v["evidence"]["quote"] = hex::encode(b).into();
    });
    refused(&out, "quote does not verify");
    let out = check_edited(&transcript, &edited, roots, &good, |v| {
        v["nonce"] = hex::encode([0x42u8; 32]).into();
    });
    refused(&out, "quote is not for this challenge and node key");

    // Another TPM's evidence spliced in: refused.
    std::fs::create_dir_all(t.join("b")).unwrap();
    let other_node = start(&t.join("b"), &other_tpm, Some(operator));
    let other_transcript = t.join("other.json");
    let other_manifest = manifest(&t.join("other.manifest.json"), "x", other_tpm.pcr(11));
    let mut args = attest_args(&other_node, other_roots, &other_manifest);
    args.extend(["--save-transcript", other_transcript.to_str().unwrap()]);
    ok(&lockstep(&args));
    let theirs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&other_transcript).unwrap()).unwrap();
    let out = check_edited(&transcript, &edited, roots, &good, |v| {
        v["evidence"] = theirs["evidence"].clone();
    });
    refused(&out, "credential not activated");
    // Their whole TPM and evidence, under our node's key: the quote names
    // another node key.
    let out = check_edited(
        &other_transcript,
        &edited,
        other_roots,
        &other_manifest,
        |v| {
            v["node_key"] = node.key.clone().into();
        },
    );
    refused(&out, "quote is not for this challenge and node key");

    // Two at once: one is told the node is busy (exit 1).
    let mut saw_busy = false;
    for _ in 0..5 {
        let spawn = || {
            Command::new(sibling("lockstep", "lockstep-cli"))
                .args(attest_args(&node, roots, &good))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let busy: Vec<_> = outs
            .iter()
            .filter(|o| String::from_utf8_lossy(&o.stderr).contains("busy"))
            .collect();
        assert!(busy.len() <= 1);
        assert!(outs.iter().any(|o| o.status.success()));
        if let Some(b) = busy.first() {
            assert_eq!(b.status.code(), Some(1));
            saw_busy = true;
            break;
        }
    }
    assert!(saw_busy, "two concurrent attestations both ran");

    // The fleet: no EK roots yet, so enrolment refuses before the node is
    // touched; with roots but only another release accepted, it refuses
    // naming the measurements and records nothing.
    let out = fleet(&f, &["enroll", &node.addr]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("trust-ek-roots"));
    ok(&fleet(&f, &["trust-ek-roots", roots]));
    ok(&fleet(&f, &["accept-image", &bad]));
    let out = fleet(&f, &["enroll", &node.addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("measurements") && err.contains("nothing was recorded"),
        "{err}"
    );
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&fleet(&f, &["list", "--json"]))).unwrap();
    assert!(list.is_empty());
    ok(&fleet(&f, &["accept-image", &good]));
    ok(&fleet(&f, &["enroll", "--node-key", &node.key, &node.addr]));
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&fleet(&f, &["list", "--json"]))).unwrap();
    assert_eq!(list.len(), 1);
    let recorded = list[0]["attestation_sha256"].as_str().unwrap();
    assert_eq!(recorded.len(), 64);
    assert_eq!(list[0]["attested_release"], "lockstep-test-1");
    assert_eq!(list[0]["key_protection"], "tpm-sealed");
    let registry: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&fleet(&f, &["export-registry"]))).unwrap();
    assert_eq!(registry[0]["record"]["attestation_sha256"], recorded);

    // A file-key node: nothing to attest. `lockstep attest` says so; the
    // fleet refuses it unless told --allow-file-key, and records it as
    // not attested.
    std::fs::create_dir_all(t.join("c")).unwrap();
    let file_node = start(&t.join("c"), &tpm, None);
    refused(
        &lockstep(&attest_args(&file_node, roots, &good)),
        "file key",
    );
    let out = fleet(&f, &["enroll", &file_node.addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("file key"));
    ok(&fleet(&f, &["enroll", "--allow-file-key", &file_node.addr]));
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&fleet(&f, &["list", "--json"]))).unwrap();
    let file_entry = list
        .iter()
        .find(|n| n["node_id"] == file_node.key.as_str())
        .unwrap();
    assert!(file_entry["attestation_sha256"].is_null());
    assert_eq!(file_entry["key_protection"], "file");
}

#[test]
fn a_node_without_a_tpm_cannot_attest() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // A TPM that is gone: the node's TCTI reaches nothing.
    let tpm = Swtpm::start();
    let roots = tpm.ek_roots_pem();
    let good = manifest(&t.join("m.json"), "r", [0; 32]);
    let f = t.join("fleet");
    let operator = ok(&fleet(&f, &["init", "--unencrypted"]));
    std::fs::create_dir_all(t.join("a")).unwrap();
    let node = start(&t.join("a"), &tpm, Some(operator.trim()));
    let roots_copy = t.join("roots.pem");
    std::fs::copy(&roots, &roots_copy).unwrap();
    drop(tpm);
    refused(
        &lockstep(&attest_args(&node, roots_copy.to_str().unwrap(), &good)),
        "cannot attest",
    );
}

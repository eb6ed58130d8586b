//! MakeCredential proven against a real TPM: a software TPM (swtpm) with
//! tpm2-tools unwraps the challenge `challenge` made, and a quote from a
//! fresh RSA AK passes the quote checks of `verify`.
//!
//! Needs swtpm and tpm2-tools on the PATH. Without them this test fails
//! (it does not skip): CI installs
//! `swtpm swtpm-tools tpm2-tools libtss2-tcti-swtpm0`.

use lockstep_attest::{
    challenge, credential_file, quote_qualifying_data, verify, AttestError, Evidence, NodeTpm,
    PcrValue, Policy,
};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PACKAGES: &str = "apt-get install -y swtpm swtpm-tools tpm2-tools libtss2-tcti-swtpm0";

/// A running swtpm on loopback, killed and its state removed on drop.
struct Swtpm {
    child: Child,
    dir: tempfile::TempDir,
    tcti: String,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port P with P + 1 free too: the swtpm TCTI always finds
/// the control channel at the server port plus one.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = first.local_addr().expect("a bound port").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two adjacent free loopback ports");
}

fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: this test needs a software TPM and tpm2-tools ({PACKAGES})"
    );
}

impl Swtpm {
    fn start() -> Self {
        for tool in [
            "swtpm",
            "tpm2_createek",
            "tpm2_createak",
            "tpm2_activatecredential",
            "tpm2_quote",
        ] {
            require_tool(tool);
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let port = free_port_pair();
        let ctrl = port + 1;
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "startup-clear"])
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start swtpm ({e}); {PACKAGES}"));
        let tpm = Self {
            child,
            dir,
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "swtpm did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        tpm
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a tpm2-tools command against this TPM in its directory.
    fn run(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}); {PACKAGES}", args[0]));
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn must(&self, args: &[&str]) {
        if let Err(e) = self.run(args) {
            panic!("{e}");
        }
    }

    /// Creates the RSA EK and an AK of the given kind (`ecc`/`ecdsa` or
    /// `rsa`/`rsassa`) as the node does, flushing transient objects.
    fn create_keys(&self, alg: &str, scheme: &str) -> NodeTpm {
        self.must(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
        self.must(&["tpm2_flushcontext", "-t"]);
        self.must(&[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            alg,
            "-g",
            "sha256",
            "-s",
            scheme,
            "-u",
            "ak.pub",
            "-n",
            "ak.name",
        ]);
        self.must(&["tpm2_flushcontext", "-t"]);
        self.must(&["tpm2_flushcontext", "-s"]);
        NodeTpm {
            ek_public: read(&self.path("ek.pub")),
            ek_certificate: Vec::new(),
            ak_public: read(&self.path("ak.pub")),
        }
    }

    /// tpm2_activatecredential with the EK's policy session, as the node
    /// runs it; returns the recovered secret.
    fn activate(&self, credential: &[u8]) -> Result<Vec<u8>, String> {
        std::fs::write(self.path("cred.bin"), credential).unwrap();
        let _ = std::fs::remove_file(self.path("secret.out"));
        self.must(&[
            "tpm2_startauthsession",
            "--policy-session",
            "-S",
            "session.ctx",
        ]);
        self.must(&["tpm2_policysecret", "-S", "session.ctx", "-c", "e"]);
        let result = self.run(&[
            "tpm2_activatecredential",
            "-c",
            "ak.ctx",
            "-C",
            "ek.ctx",
            "-i",
            "cred.bin",
            "-o",
            "secret.out",
            "-P",
            "session:session.ctx",
        ]);
        let _ = self.run(&["tpm2_flushcontext", "session.ctx"]);
        let _ = self.run(&["tpm2_flushcontext", "-t"]);
        result.map(|()| read(&self.path("secret.out")))
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture(name: &str) -> Vec<u8> {
    read(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
}

#[test]
fn a_real_tpm_activates_the_credential_for_its_own_ak_only() {
    let tpm = Swtpm::start();
    let node = tpm.create_keys("ecc", "ecdsa");
    let secret = [0x5a; 32];
    let (pending, credential) = challenge(&node, [1; 32], secret, [2; 32]).expect("challenge");
    assert_eq!(pending.ak_name(), read(&tpm.path("ak.name")).as_slice());

    let recovered = tpm
        .activate(&credential_file(&credential))
        .expect("activation");
    assert_eq!(recovered, secret, "the TPM recovered another secret");

    // A credential for another AK (one not on this TPM) is refused by the
    // TPM: the AK name is bound into the credential's HMAC.
    let other = NodeTpm {
        ak_public: fixture("b/ak.pub"),
        ..node.clone()
    };
    let (_, foreign) = challenge(&other, [1; 32], secret, [3; 32]).expect("challenge");
    assert!(tpm.activate(&credential_file(&foreign)).is_err());

    // Another seed gives another challenge that still works.
    let (_, again) = challenge(&node, [1; 32], [7; 32], [4; 32]).expect("challenge");
    assert_ne!(again, credential);
    assert_eq!(
        tpm.activate(&credential_file(&again)).expect("activation"),
        [7; 32]
    );
}

#[test]
fn an_rsa_ak_activates_and_its_quote_passes_the_quote_checks() {
    let tpm = Swtpm::start();
    let node = tpm.create_keys("rsa", "rsassa");
    let nonce = [9; 32];
    let node_key = [0x42; 32];
    let (pending, credential) = challenge(&node, nonce, [0x33; 32], [5; 32]).expect("challenge");
    let activated_secret = tpm
        .activate(&credential_file(&credential))
        .expect("activation");

    let qualifying = hex(&quote_qualifying_data(&nonce, &node_key));
    tpm.must(&[
        "tpm2_quote",
        "-c",
        "ak.ctx",
        "-l",
        "sha256:7,11",
        "-q",
        &qualifying,
        "-m",
        "quote.msg",
        "-s",
        "quote.sig",
        "-g",
        "sha256",
    ]);
    tpm.must(&["tpm2_pcrread", "sha256:7,11", "-o", "pcrs.bin"]);
    let values = read(&tpm.path("pcrs.bin"));
    let pcrs = [7u8, 11]
        .iter()
        .zip(values.chunks_exact(32))
        .map(|(index, v)| PcrValue {
            index: *index,
            sha256: v.try_into().unwrap(),
        })
        .collect();
    let evidence = Evidence {
        quote: read(&tpm.path("quote.msg")),
        signature: read(&tpm.path("quote.sig")),
        pcrs,
        activated_secret,
    };
    // Everything up to the EK certificate holds; this TPM has none.
    let policy = Policy::new(Vec::new(), Vec::new(), 0);
    let result = verify(&pending, &evidence, &node_key, &policy);
    assert!(
        matches!(result, Err(AttestError::BadEkCertificate { .. })),
        "{result:?}"
    );
    // And the same quote for another node key is refused.
    assert_eq!(
        verify(&pending, &evidence, &[0x43; 32], &policy),
        Err(AttestError::WrongNonceOrKey)
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

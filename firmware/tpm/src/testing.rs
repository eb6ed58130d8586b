//! A software TPM for tests (feature `testing`): `swtpm` with an EK
//! certificate from a private `swtpm-localca` in a temporary directory,
//! listening on loopback only, killed on drop.
//!
//! The Debian packages swtpm, swtpm-tools, tpm2-tools and
//! libtss2-tcti-swtpm0 must be installed (`make deps`); without them
//! [`Swtpm::start`] panics naming them: the tests that need a TPM fail,
//! they are never skipped.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The packages the software TPM needs.
pub const PACKAGES: &str = "swtpm swtpm-tools tpm2-tools libtss2-tcti-swtpm0";

/// A running software TPM.
pub struct Swtpm {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: the TPM tests need the Debian packages {PACKAGES} (make deps)"
    );
}

fn require_tcti() {
    let dirs = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ];
    let found = dirs
        .iter()
        .any(|d| Path::new(d).join("libtss2-tcti-swtpm.so.0").exists());
    assert!(
        found,
        "libtss2-tcti-swtpm.so.0 is not installed: the TPM tests need the Debian packages {PACKAGES} (make deps)"
    );
}

/// Two consecutive free loopback TCP ports (server, control).
fn free_ports() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p + 1)).is_ok()
        {
            return p;
        }
    }
    panic!("no two consecutive free loopback ports");
}

impl Swtpm {
    /// Manufactures a TPM (EK and platform certificates from a fresh local
    /// CA) and starts it.
    pub fn start() -> Swtpm {
        for tool in [
            "swtpm",
            "swtpm_setup",
            "swtpm_localca",
            "tpm2_createek",
            "tpm2_pcrread",
        ] {
            require(tool);
        }
        require_tcti();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("state")).unwrap();
        std::fs::create_dir_all(d.join("ca")).unwrap();
        let write = |name: &str, text: String| {
            let mut f = std::fs::File::create(d.join(name)).unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        let ca = d.join("ca");
        write(
            "swtpm-localca.conf",
            format!(
                "statedir = {0}\nsigningkey = {0}/signkey.pem\nissuercert = {0}/issuercert.pem\ncertserial = {0}/certserial\n",
                ca.display()
            ),
        );
        write(
            "swtpm-localca.options",
            "--platform-manufacturer Lockstep\n--platform-version 2.1\n--platform-model test\n"
                .into(),
        );
        write(
            "swtpm_setup.conf",
            format!(
                "create_certs_tool = swtpm_localca\ncreate_certs_tool_config = {0}/swtpm-localca.conf\ncreate_certs_tool_options = {0}/swtpm-localca.options\n",
                d.display()
            ),
        );
        let out = Command::new("swtpm_setup")
            .args([
                "--tpm2",
                "--create-ek-cert",
                "--create-platform-cert",
                "--overwrite",
            ])
            .arg("--tpmstate")
            .arg(d.join("state"))
            .arg("--config")
            .arg(d.join("swtpm_setup.conf"))
            // Its own user config must not be read.
            .env("XDG_CONFIG_HOME", d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "swtpm_setup failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..5 {
            let port = free_ports();
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--flags", "startup-clear,not-need-init"])
                .arg("--tpmstate")
                .arg(format!("dir={}", d.join("state").display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok() {
                    return Swtpm { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start");
    }

    /// The TCTI that reaches it (`lockstepd --tpm-tcti`).
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A PEM file with the local CA's root and issuer certificates: the
    /// EK roots that trust this TPM's EK certificate.
    pub fn ek_roots_pem(&self) -> PathBuf {
        let ca = self.dir.path().join("ca");
        let mut pem = std::fs::read_to_string(ca.join("swtpm-localca-rootca-cert.pem")).unwrap();
        pem.push_str(&std::fs::read_to_string(ca.join("issuercert.pem")).unwrap());
        let path = self.dir.path().join("ek-roots.pem");
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// The current SHA-256 value of PCR `index`, read with tpm2_pcrread.
    pub fn pcr(&self, index: u8) -> [u8; 32] {
        let out = self.dir.path().join(format!("pcr{index}.bin"));
        let status = Command::new("tpm2_pcrread")
            .arg(format!("sha256:{index}"))
            .arg("-o")
            .arg(&out)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "tpm2_pcrread failed");
        std::fs::read(&out).unwrap().try_into().unwrap()
    }

    /// Its temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

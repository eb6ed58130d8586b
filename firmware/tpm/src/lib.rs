//! The node's TPM, through tpm2-tools (5.4): the only crate that knows
//! them (docs/ARCHITECTURE.md).
//!
//! One attestation is one [`Session`] in a private temporary directory
//! (mode 0700, removed on drop):
//!
//! 1. [`Tpm::begin`]: `tpm2_createek` (RSA, the standard template, so the
//!    EK certificate in NV `0x01c00002` matches it), `tpm2_nvread` of that
//!    certificate, `tpm2_createak` (ECC P-256, ECDSA SHA-256, restricted
//!    signing) under the EK. The three public parts go to the verifier.
//! 2. [`Session::respond`]: a policy session satisfied by
//!    `tpm2_policysecret -c e` (the EK's policy), `tpm2_activatecredential`
//!    of the verifier's credential (only the TPM holding that EK, with that
//!    AK loaded, recovers the secret), `tpm2_quote` of the SHA-256 PCRs
//!    asked for with the verifier's qualifying data, and `tpm2_pcrread` of
//!    the same PCRs for their values.
//!
//! Every command runs with `TPM2TOOLS_TCTI` set to the TCTI given (never
//! the tools' default), under `TPM_COMMAND_TIMEOUT_S` (killed on expiry),
//! with at most `MAX_TPM_TOOL_OUTPUT_BYTES` of its output kept. Transient
//! objects are flushed after each command, since a TCTI without a resource
//! manager (a simulator) leaves them loaded.

#![forbid(unsafe_code)]

#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_limits::{
    MAX_ACTIVATED_SECRET_BYTES, MAX_CREDENTIAL_PART_BYTES, MAX_EK_CERTIFICATE_BYTES,
    MAX_QUOTED_PCRS, MAX_QUOTE_BYTES, MAX_TPM_PUBLIC_BYTES, MAX_TPM_TOOL_OUTPUT_BYTES,
    TPM_COMMAND_TIMEOUT_S,
};

/// The TCTI `lockstepd --tpm-tcti` uses when not told: the kernel's
/// resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// The NV index of the RSA 2048 EK certificate (TCG EK Credential Profile).
pub const EK_CERT_NV_INDEX: &str = "0x01c00002";

/// The Debian package that provides the tools.
pub const TOOLS_PACKAGE: &str = "tpm2-tools";

/// Why the TPM could not do what was asked. Each is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TpmError {
    /// No TPM answers at the TCTI.
    #[error("no TPM at {tcti}: {reason}")]
    Absent { tcti: String, reason: String },
    /// A tool is not installed.
    #[error("{tool} is not installed: install the Debian package {TOOLS_PACKAGE}")]
    ToolMissing { tool: String },
    /// A tool ran and failed; the last line of its stderr.
    #[error("{tool} failed: {line}")]
    Failed { tool: String, line: String },
    /// A tool ran past `TPM_COMMAND_TIMEOUT_S` and was killed.
    #[error("{tool} did not finish within {seconds} s and was killed")]
    Timeout { tool: String, seconds: u64 },
    /// A tool's output is not what it should be (missing, over its bound).
    #[error("{tool}: {what}")]
    Output { tool: String, what: String },
    /// The request itself is malformed (PCR list, credential size).
    #[error("{0}")]
    Request(String),
    /// The session's directory or a child process could not be handled.
    #[error("TPM session: {0}")]
    Io(String),
}

/// What the verifier needs to challenge this TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmIdentity {
    /// TPM2B_PUBLIC of the EK, as `tpm2_createek -u` writes it.
    pub ek_public: Vec<u8>,
    /// The EK certificate (DER) from NV `0x01c00002`.
    pub ek_certificate: Vec<u8>,
    /// TPM2B_PUBLIC of the AK, as `tpm2_createak -u` writes it.
    pub ak_public: Vec<u8>,
}

/// One PCR's SHA-256 value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pcr {
    pub index: u8,
    pub sha256: [u8; 32],
}

/// The TPM's answer to a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmEvidence {
    /// TPMS_ATTEST as `tpm2_quote -m` writes it.
    pub quote: Vec<u8>,
    /// TPMT_SIGNATURE as `tpm2_quote -s` writes it (tss format).
    pub signature: Vec<u8>,
    /// The quoted PCRs' values, ascending.
    pub pcrs: Vec<Pcr>,
    /// The secret `tpm2_activatecredential` recovered.
    pub activated_secret: Vec<u8>,
}

/// A TPM reached through one TCTI.
#[derive(Debug, Clone)]
pub struct Tpm {
    tcti: String,
    work_dir: Option<PathBuf>,
    timeout: Duration,
}

impl Tpm {
    /// The TPM at `tcti` (e.g. `device:/dev/tpmrm0`,
    /// `swtpm:host=127.0.0.1,port=2321`).
    pub fn new(tcti: impl Into<String>) -> Tpm {
        Tpm {
            tcti: tcti.into(),
            work_dir: None,
            timeout: Duration::from_secs(TPM_COMMAND_TIMEOUT_S),
        }
    }

    /// Sessions' private directories go under `dir` (default: the
    /// system's temporary directory).
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Tpm {
        self.work_dir = Some(dir.into());
        self
    }

    /// Each command's time limit (default `TPM_COMMAND_TIMEOUT_S`).
    pub fn with_command_timeout(mut self, timeout: Duration) -> Tpm {
        self.timeout = timeout;
        self
    }

    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// Whether a TPM could be there: for a `device:` TCTI, that the device
    /// node exists (other TCTIs are found out by the first command).
    pub fn present(&self) -> Result<(), TpmError> {
        if let Some(path) = self.tcti.strip_prefix("device:") {
            let path = if path.is_empty() { "/dev/tpmrm0" } else { path };
            if !Path::new(path).exists() {
                return Err(TpmError::Absent {
                    tcti: self.tcti.clone(),
                    reason: format!("{path} does not exist"),
                });
            }
        }
        Ok(())
    }

    /// Starts an attestation: a private directory, the EK and its
    /// certificate, a fresh AK under the EK.
    pub fn begin(&self) -> Result<(Session, TpmIdentity), TpmError> {
        self.present()?;
        let parent = self.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&parent)
            .map_err(|e| TpmError::Io(format!("{}: {e}", parent.display())))?;
        let dir = tempfile::Builder::new()
            .prefix("lockstep-tpm-")
            .tempdir_in(&parent)
            .map_err(|e| {
                TpmError::Io(format!("temporary directory in {}: {e}", parent.display()))
            })?;
        set_private(dir.path())?;
        let session = Session {
            tpm: self.clone(),
            dir,
        };
        session.run(
            "tpm2_createek",
            &["-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
        )?;
        session.flush_transient();
        session.run(
            "tpm2_nvread",
            &["-C", "o", EK_CERT_NV_INDEX, "-o", "ek.crt"],
        )?;
        session.run(
            "tpm2_createak",
            &[
                "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
                "ak.pub", "-n", "ak.name",
            ],
        )?;
        session.flush_transient();
        let identity = TpmIdentity {
            ek_public: session.read("tpm2_createek", "ek.pub", MAX_TPM_PUBLIC_BYTES)?,
            ek_certificate: trim_der(session.read(
                "tpm2_nvread",
                "ek.crt",
                MAX_EK_CERTIFICATE_BYTES,
            )?),
            ak_public: session.read("tpm2_createak", "ak.pub", MAX_TPM_PUBLIC_BYTES)?,
        };
        Ok((session, identity))
    }
}

/// One attestation's private directory and the TPM it talks to.
#[derive(Debug)]
pub struct Session {
    tpm: Tpm,
    dir: tempfile::TempDir,
}

/// Checks a PCR selection: 1 to `MAX_QUOTED_PCRS` indices below 24,
/// strictly ascending.
pub fn check_pcr_selection(pcrs: &[u8]) -> Result<(), String> {
    if pcrs.is_empty() || pcrs.len() > MAX_QUOTED_PCRS {
        return Err(format!(
            "{} PCRs asked for; a quote covers 1 to {MAX_QUOTED_PCRS}",
            pcrs.len()
        ));
    }
    if pcrs.iter().any(|&p| p >= 24) {
        return Err("PCR indices are 0 to 23".into());
    }
    if pcrs.windows(2).any(|w| w[0] >= w[1]) {
        return Err("PCR indices must be strictly ascending".into());
    }
    Ok(())
}

impl Session {
    /// The directory the session's files live in (for tests).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Answers the verifier: activates `credential` (the file
    /// `tpm2_activatecredential -i` reads), quotes `pcrs` (SHA-256 bank)
    /// with `qualifying_data`, and reads their values.
    pub fn respond(
        self,
        credential: &[u8],
        qualifying_data: [u8; 32],
        pcrs: &[u8],
    ) -> Result<TpmEvidence, TpmError> {
        check_pcr_selection(pcrs).map_err(TpmError::Request)?;
        if credential.len() > 2 * MAX_CREDENTIAL_PART_BYTES + 16 {
            return Err(TpmError::Request(format!(
                "credential of {} bytes; at most {}",
                credential.len(),
                2 * MAX_CREDENTIAL_PART_BYTES + 16
            )));
        }
        let cred = self.dir.path().join("cred.in");
        std::fs::write(&cred, credential)
            .map_err(|e| TpmError::Io(format!("{}: {e}", cred.display())))?;
        self.run(
            "tpm2_startauthsession",
            &["--policy-session", "-S", "session.ctx"],
        )?;
        let activated = self
            .run("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"])
            .and_then(|_| {
                self.run(
                    "tpm2_activatecredential",
                    &[
                        "-c",
                        "ak.ctx",
                        "-C",
                        "ek.ctx",
                        "-i",
                        "cred.in",
                        "-o",
                        "secret.out",
                        "-P",
                        "session:session.ctx",
                    ],
                )
            });
        // The session is gone after a successful activation; flush it
        // either way (an error here only means it was already flushed).
        let _ = self.run("tpm2_flushcontext", &["session.ctx"]);
        self.flush_transient();
        activated?;
        let activated_secret = self.read(
            "tpm2_activatecredential",
            "secret.out",
            MAX_ACTIVATED_SECRET_BYTES,
        )?;
        let list = format!(
            "sha256:{}",
            pcrs.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let q = hex::encode(qualifying_data);
        let quoted = self.run(
            "tpm2_quote",
            &[
                "-c",
                "ak.ctx",
                "-l",
                &list,
                "-q",
                &q,
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-g",
                "sha256",
            ],
        );
        self.flush_transient();
        quoted?;
        self.run("tpm2_pcrread", &[&list, "-o", "pcrs.bin"])?;
        let values = self.read("tpm2_pcrread", "pcrs.bin", 32 * MAX_QUOTED_PCRS)?;
        if values.len() != 32 * pcrs.len() {
            return Err(TpmError::Output {
                tool: "tpm2_pcrread".into(),
                what: format!(
                    "{} bytes of PCR values for {} PCRs; is the SHA-256 bank active?",
                    values.len(),
                    pcrs.len()
                ),
            });
        }
        let pcrs = pcrs
            .iter()
            .zip(values.chunks_exact(32))
            .map(|(&index, v)| Pcr {
                index,
                sha256: v.try_into().expect("32-byte chunks"),
            })
            .collect();
        Ok(TpmEvidence {
            quote: self.read("tpm2_quote", "quote.msg", MAX_QUOTE_BYTES)?,
            signature: self.read("tpm2_quote", "quote.sig", MAX_QUOTE_BYTES)?,
            pcrs,
            activated_secret,
        })
    }

    /// Flushes every transient object of this connection (a simulator
    /// without a resource manager keeps them loaded after a tool exits).
    fn flush_transient(&self) {
        let _ = self.run("tpm2_flushcontext", &["-t"]);
    }

    fn read(&self, tool: &str, name: &str, max: usize) -> Result<Vec<u8>, TpmError> {
        let path = self.dir.path().join(name);
        let file = std::fs::File::open(&path).map_err(|e| TpmError::Output {
            tool: tool.into(),
            what: format!("{name} was not written: {e}"),
        })?;
        let mut bytes = Vec::new();
        file.take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| TpmError::Io(format!("{}: {e}", path.display())))?;
        if bytes.len() > max {
            return Err(TpmError::Output {
                tool: tool.into(),
                what: format!("{name} is over {max} bytes"),
            });
        }
        if bytes.is_empty() {
            return Err(TpmError::Output {
                tool: tool.into(),
                what: format!("{name} is empty"),
            });
        }
        Ok(bytes)
    }

    /// Runs one tool in the session's directory; returns its stdout.
    fn run(&self, tool: &str, args: &[&str]) -> Result<Vec<u8>, TpmError> {
        run_tool(
            tool,
            args,
            self.dir.path(),
            &self.tpm.tcti,
            self.tpm.timeout,
        )
    }
}

fn set_private(dir: &Path) -> Result<(), TpmError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| TpmError::Io(format!("{}: {e}", dir.display())))
}

/// An NV index is read whole: drop any padding after the certificate's
/// outer DER SEQUENCE.
fn trim_der(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(len) = der_len(&bytes) {
        if len <= bytes.len() {
            bytes.truncate(len);
        }
    }
    bytes
}

/// The total length of the DER element at the start of `b`.
fn der_len(b: &[u8]) -> Option<usize> {
    if b.len() < 2 || b[0] != 0x30 {
        return None;
    }
    let first = b[1] as usize;
    if first < 0x80 {
        return Some(2 + first);
    }
    let n = first & 0x7f;
    if n == 0 || n > 4 || b.len() < 2 + n {
        return None;
    }
    let len = b[2..2 + n]
        .iter()
        .fold(0usize, |a, &x| (a << 8) | x as usize);
    Some(2 + n + len)
}

/// Keeps at most `MAX_TPM_TOOL_OUTPUT_BYTES` of a pipe, reading the rest
/// to the end so the child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = MAX_TPM_TOOL_OUTPUT_BYTES.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        kept
    })
}

/// The last non-empty line of a tool's stderr, without ANSI noise.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("WARN"))
        .unwrap_or("(no message)");
    line.chars().take(300).collect()
}

/// Words in a tool's stderr that mean the TCTI reached no TPM.
fn tcti_failure(stderr: &str) -> bool {
    const SIGNS: [&str; 4] = [
        "Failed to initialize TCTI",
        "Could not load tcti",
        "tcti:",
        "Connection refused",
    ];
    SIGNS.iter().any(|s| stderr.contains(s))
}

/// Runs `tool args` in `dir` with `TPM2TOOLS_TCTI=tcti`, killed after
/// `timeout`; stdout and stderr bounded.
pub fn run_tool(
    tool: &str,
    args: &[&str],
    dir: &Path,
    tcti: &str,
    timeout: Duration,
) -> Result<Vec<u8>, TpmError> {
    let mut child = match Command::new(tool)
        .args(args)
        .current_dir(dir)
        .env("TPM2TOOLS_TCTI", tcti)
        // The tools read these too; only ours counts.
        .env_remove("TCTI")
        .env_remove("TPM2TOOLS_ENABLE_ERRATA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TpmError::ToolMissing { tool: tool.into() })
        }
        Err(e) => return Err(TpmError::Io(format!("starting {tool}: {e}"))),
    };
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TpmError::Timeout {
                    tool: tool.into(),
                    seconds: timeout.as_secs(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(TpmError::Io(format!("waiting for {tool}: {e}"))),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        return Ok(stdout);
    }
    let text = String::from_utf8_lossy(&stderr);
    if tcti_failure(&text) {
        return Err(TpmError::Absent {
            tcti: tcti.into(),
            reason: format!("{tool}: {}", last_line(&stderr)),
        });
    }
    Err(TpmError::Failed {
        tool: tool.into(),
        line: last_line(&stderr),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_selections_are_checked() {
        assert!(check_pcr_selection(lockstep_limits::ATTEST_PCRS).is_ok());
        assert!(check_pcr_selection(&[]).is_err());
        assert!(check_pcr_selection(&[3, 2]).is_err());
        assert!(check_pcr_selection(&[1, 1]).is_err());
        assert!(check_pcr_selection(&[24]).is_err());
        let all: Vec<u8> = (0..24).collect();
        assert!(check_pcr_selection(&all).is_ok());
    }

    #[test]
    fn a_missing_tool_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let e = run_tool(
            "tpm2_no_such_tool_here",
            &[],
            dir.path(),
            "device:/dev/null",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, TpmError::ToolMissing { .. }));
        assert!(e.to_string().contains("tpm2-tools"), "{e}");
    }

    #[test]
    fn a_hanging_tool_is_killed_and_output_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let e = run_tool(
            "sleep",
            &["30"],
            dir.path(),
            "x",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(e, TpmError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let out = run_tool(
            "head",
            &["-c", "1000000", "/dev/zero"],
            dir.path(),
            "x",
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.len(), MAX_TPM_TOOL_OUTPUT_BYTES);
        let e = run_tool(
            "sh",
            &[
                "-c",
                "echo first >&2; echo 'ERROR: the last one' >&2; exit 3",
            ],
            dir.path(),
            "x",
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "sh failed: ERROR: the last one");
    }

    #[test]
    fn an_absent_device_is_named() {
        let e = Tpm::new("device:/dev/no-such-tpm").begin().unwrap_err();
        assert!(matches!(e, TpmError::Absent { .. }), "{e}");
        assert!(e.to_string().contains("/dev/no-such-tpm"));
    }

    #[test]
    fn der_padding_is_trimmed() {
        let mut cert = vec![0x30, 0x82, 0x00, 0x03, 1, 2, 3];
        cert.extend_from_slice(&[0xff; 5]);
        assert_eq!(trim_der(cert), vec![0x30, 0x82, 0x00, 0x03, 1, 2, 3]);
        assert_eq!(trim_der(vec![1, 2]), vec![1, 2]);
    }

    /// The whole node-side exchange against a software TPM, with the
    /// credential made by `tpm2_makecredential` (offline, `-T none`).
    #[test]
    fn a_software_tpm_activates_and_quotes() {
        let sw = crate::testing::Swtpm::start();
        let tpm = Tpm::new(sw.tcti());
        let (session, id) = tpm.begin().unwrap();
        assert!(id.ek_certificate.starts_with(&[0x30, 0x82]));
        assert!(id.ek_public.len() > 256 && id.ak_public.len() > 64);
        let secret = [0x5au8; 32];
        let d = sw.dir();
        std::fs::write(d.join("ek.pub"), &id.ek_public).unwrap();
        std::fs::write(d.join("secret.bin"), secret).unwrap();
        let name = std::fs::read(session.dir().join("ak.name")).unwrap();
        let out = Command::new("tpm2_makecredential")
            .current_dir(d)
            .args([
                "-T",
                "none",
                "-e",
                "ek.pub",
                "-s",
                "secret.bin",
                "-o",
                "cred.out",
                "-n",
            ])
            .arg(hex::encode(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cred = std::fs::read(d.join("cred.out")).unwrap();
        let session_dir = session.dir().to_path_buf();
        let ev = session
            .respond(&cred, [7; 32], lockstep_limits::ATTEST_PCRS)
            .unwrap();
        assert_eq!(ev.activated_secret, secret);
        assert_eq!(ev.pcrs.len(), lockstep_limits::ATTEST_PCRS.len());
        assert_eq!(ev.pcrs[8].index, 11);
        assert_eq!(ev.pcrs[8].sha256, sw.pcr(11));
        assert!(!ev.quote.is_empty() && !ev.signature.is_empty());
        // The quote carries the qualifying data.
        assert!(ev.quote.windows(32).any(|w| w == [7; 32]));
        // The session's directory is gone with it.
        assert!(!session_dir.exists());
        // A credential for another key does not activate.
        let (session, _) = tpm.begin().unwrap();
        let e = session
            .respond(&cred, [7; 32], lockstep_limits::ATTEST_PCRS)
            .unwrap_err();
        assert!(matches!(e, TpmError::Failed { .. }), "{e}");
        // Nothing is left loaded: a third session works.
        let (session, _) = tpm.begin().unwrap();
        drop(session);
    }
}

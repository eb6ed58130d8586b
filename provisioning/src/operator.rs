//! The fleet directory's operator key: `FLEET/operator.key` (stock
//! minisign secret key file) and `FLEET/operator.pub`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use lockstep_identity::{SecretKeyError, SigningKey};

pub const SECRET_FILE: &str = "operator.key";
pub const PUBLIC_FILE: &str = "operator.pub";
/// Where an encrypted key's password comes from when there is no terminal.
pub const PASSWORD_ENV: &str = "LOCKSTEP_KEY_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("{0}")]
    Key(#[from] SecretKeyError),
    #[error(
        "the key is encrypted and there is no password: set {PASSWORD_ENV} or run on a terminal"
    )]
    NoPassword,
    #[error("the passwords do not match; run again")]
    Mismatch,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already holds an operator key; refusing to overwrite it")]
    Exists(PathBuf),
}

/// The password from the environment, else asked on the terminal.
pub fn password(confirm: bool) -> Result<String, OperatorError> {
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(OperatorError::NoPassword);
    }
    let io = |source| OperatorError::Io {
        path: PathBuf::from("/dev/tty"),
        source,
    };
    let first = rpassword::prompt_password("operator key password: ").map_err(io)?;
    if confirm {
        let again = rpassword::prompt_password("again: ").map_err(io)?;
        if again != first {
            return Err(OperatorError::Mismatch);
        }
    }
    Ok(first)
}

/// Creates the operator key pair in `dir`.
pub fn create(dir: &Path, encrypted: bool) -> Result<SigningKey, OperatorError> {
    let secret = dir.join(SECRET_FILE);
    if secret.exists() {
        return Err(OperatorError::Exists(secret));
    }
    let password = if encrypted {
        Some(password(true)?)
    } else {
        None
    };
    let key = SigningKey::generate();
    key.write_file(&secret, password.as_deref())?;
    let public = dir.join(PUBLIC_FILE);
    std::fs::write(&public, key.public_key_file()).map_err(|source| OperatorError::Io {
        path: public,
        source,
    })?;
    Ok(key)
}

/// Loads the operator key, asking for the password only if it is
/// encrypted.
pub fn load(dir: &Path) -> Result<SigningKey, OperatorError> {
    let secret = dir.join(SECRET_FILE);
    match SigningKey::read_file(&secret, None) {
        Err(SecretKeyError::PasswordNeeded { .. }) => {
            Ok(SigningKey::read_file(&secret, Some(&password(false)?))?)
        }
        other => Ok(other?),
    }
}

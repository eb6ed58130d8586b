//! The two ways a command fails, which decide the exit code.

use lockstep_backend::BackendError;

#[derive(Debug)]
pub enum Failure {
    /// The user's input is at fault: exit 2.
    Input(String),
    /// The machine or environment is: exit 1.
    Runtime(String),
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Failure {
        if e.is_input_error() {
            Failure::Input(e.to_string())
        } else {
            Failure::Runtime(e.to_string())
        }
    }
}

impl From<lockstep_kernels::BundleError> for Failure {
    fn from(e: lockstep_kernels::BundleError) -> Failure {
        Failure::Runtime(e.to_string())
    }
}

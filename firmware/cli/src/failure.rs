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

/// The status a shell reports for a process killed by SIGPIPE (128 + 13).
const CLOSED_STDOUT_EXIT: i32 = 141;

/// `lockstep … | head` must not end in a panic: Rust ignores SIGPIPE, so
/// writing to a closed pipe makes `println!` panic with "Broken pipe"
/// instead of the process dying quietly as C tools do. This hook turns
/// exactly that panic into the quiet exit a SIGPIPE would have given;
/// every other panic keeps the default report.
pub fn end_quietly_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(CLOSED_STDOUT_EXIT);
        }
        default(info);
    }));
}

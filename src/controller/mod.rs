//! The Controller service (placeholder until the controller lands).

use crate::cli::ControllerArgs;

/// Runs controller mode until SIGTERM/SIGINT.
pub async fn run(_args: ControllerArgs) -> Result<(), String> {
    Err("controller mode is not built yet".into())
}

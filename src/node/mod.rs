//! The Node service (placeholder until the node plugin lands).

use crate::cli::NodeArgs;

/// Runs node mode until SIGTERM/SIGINT.
pub async fn run(_args: NodeArgs) -> Result<(), String> {
    Err("node mode is not built yet".into())
}

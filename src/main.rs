//! Entry point: parse the command line, set up logging, run the chosen mode.

use clap::Parser;
use lvm_iscsi_csi::cli::{Cli, Command};
use lvm_iscsi_csi::{controller, node, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let common = match &cli.command {
        Command::Controller(a) => &a.common,
        Command::Node(a) => &a.common,
    };
    if let Err(e) = telemetry::init(common.log_format, &common.log_level) {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Controller(args) => controller::run(args).await,
        Command::Node(args) => node::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! Entry point: parse the command line, set up logging (and metrics), run the chosen mode.

use clap::Parser;
use lvm_iscsi_csi::cli::{Cli, Command, CommonArgs, DoctorArgs, LogFormat};
use lvm_iscsi_csi::{controller, doctor, metrics, node, telemetry};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor(args) => return run_doctor(&args).await,
        Command::Controller(args) => match start(&args.common).await {
            Ok(()) => controller::run(args).await,
            Err(code) => return code,
        },
        Command::Node(args) => match start(&args.common).await {
            Ok(()) => node::run(args).await,
            Err(code) => return code,
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logging, then the HTTP endpoints (`--metrics-address`, `--health-address`) when given.
async fn start(common: &CommonArgs) -> Result<(), ExitCode> {
    if let Err(e) = telemetry::init(common.log_format, &common.log_level) {
        eprintln!("error: {e}");
        return Err(ExitCode::from(2));
    }
    if let Err(e) = metrics::http::start_all(common.metrics_address, common.health_address).await {
        tracing::error!("{e}");
        eprintln!("error: {e}");
        return Err(ExitCode::from(2));
    }
    Ok(())
}

/// Prints the doctor's table; exit code 1 when a blocking check failed.
async fn run_doctor(args: &DoctorArgs) -> ExitCode {
    // Quiet by default: the table is the output (RUST_LOG still turns logs on).
    if let Err(e) = telemetry::init(LogFormat::Text, "warn") {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let findings = doctor::check(args).await;
    print!("{}", doctor::render(&findings));
    if doctor::blocking(&findings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

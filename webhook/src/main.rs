use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tierguard_webhook::cli::{CheckArgs, Cli, Command, OutputFormat};
use tierguard_webhook::{check, logging, serve, template};

fn run_check(args: &CheckArgs) -> ExitCode {
    let report = template::load(args.template.as_deref())
        .and_then(|t| check::check(&t, &args.paths).map_err(anyhow::Error::from));
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let text = match args.output {
        OutputFormat::Text => check::render_text(&report),
        OutputFormat::Json => match check::render_json(&report) {
            Ok(t) => t + "\n",
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    print!("{text}");
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => run_check(&args),
        Command::Serve(args) => {
            logging::init(cli.log_format);
            let result = tokio::runtime::Runtime::new()
                .context("starting the runtime")
                .and_then(|rt| rt.block_on(serve::run(args)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

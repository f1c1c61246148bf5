//! The `nearby` binary: parse the command line, load the config, run.

use std::process::ExitCode;

use clap::Parser;
use nearby::cli::{Cli, Command, ConfigArgs};
use nearby::config::{Config, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(&args),
        Command::CheckConfig(args) => match load(&args) {
            Ok(config) => {
                print!("{}", config.to_redacted_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Status(args) => block_on(nearby::ops::status::run(&args.admin, args.json)),
        Command::Lab(args) => {
            init_logs(LogFormat::Text, "warn");
            block_on(nearby::lab::run(args))
        }
    }
}

/// Runs a small command on a current-thread runtime.
fn block_on(f: impl std::future::Future<Output = u8>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => ExitCode::from(rt.block_on(f)),
        Err(e) => {
            eprintln!("nearby: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads and validates the config; on error prints one line naming the key
/// and returns exit code 2.
fn load(args: &ConfigArgs) -> Result<Config, ExitCode> {
    Config::load(args, std::env::var("FLY_REGION").ok()).map_err(|e| {
        eprintln!("nearby: invalid config: {e}");
        ExitCode::from(2)
    })
}

fn init_logs(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(args: &ConfigArgs) -> ExitCode {
    let config = match load(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logs(config.log_format, "info");
    // One thread (the default): a current-thread runtime, no cross-thread
    // wake-ups. Measured on 2 cores with 50 clients: 13.8 µs of CPU per
    // request and 59k GET/s, against 28 µs and 31k GET/s for the
    // work-stealing runtime (bench/README.md). More threads: a work-stealing
    // runtime with that many workers, for TLS-heavy or very busy sidecars.
    let mut rt = match config.threads.unwrap_or(1) {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nearby: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SIGHUP re-reads the same sources (flags, environment, file).
    let reload_args = args.clone();
    let reload: nearby::app::Reloader = Box::new(move || {
        Config::load(&reload_args, std::env::var("FLY_REGION").ok()).map_err(|e| e.to_string())
    });
    match rt.block_on(nearby::app::run(config, Some(reload))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "nearby stopped");
            ExitCode::FAILURE
        }
    }
}

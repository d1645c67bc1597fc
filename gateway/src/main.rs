//! The `callgate` command: run the gateway, run it with the embedded demo PBX, or check a
//! configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::app::Gateway;
use gateway::config::{LogFormat, Overrides, Settings};
use gateway::demo::{DemoPbx, DemoPbxConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "callgate",
    version,
    about = "WebRTC-to-SIP gateway in front of an unmodified PBX"
)]
struct Cli {
    /// Configuration file (TOML); flags and CALLGATE_* variables override it.
    #[arg(long, short, env = "CALLGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Run the gateway plus an embedded demo PBX on loopback: open http://127.0.0.1:8080/.
    Demo {
        /// SIP address of the demo PBX.
        #[arg(long, default_value = "127.0.0.1:5080")]
        pbx_addr: std::net::SocketAddr,
    },
    /// Validate a configuration file and print every problem.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::CheckConfig { file } = &command {
        return match Settings::load(Some(file), &cli.overrides) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        };
    }
    let mut settings = match Settings::load(cli.config.as_deref(), &cli.overrides) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&settings);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let demo = match command {
            Command::Demo { pbx_addr } => {
                let config = DemoPbxConfig {
                    sip_addr: pbx_addr,
                    gateway_addr: Some(settings.sip.listen),
                    ..DemoPbxConfig::default()
                };
                match DemoPbx::start(config, cancel.child_token()).await {
                    Ok(pbx) => {
                        settings.sip.proxy = pbx.sip_addr();
                        tracing::info!(pbx = %pbx.sip_addr(), "demo PBX: dial echo, early, busy, noanswer or callback");
                        Some(pbx)
                    }
                    Err(e) => {
                        eprintln!("cannot start the demo PBX on {pbx_addr}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            _ => None,
        };
        let gateway = match Gateway::start(settings).await {
            Ok(gateway) => gateway,
            Err(e) => {
                eprintln!("cannot start callgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("callgate listening on http://{}/ (SIP {})", gateway.http_addr(), gateway.sip_addr());
        wait_for_signal().await;
        let drain_timeout = gateway.services().settings.calls.drain_timeout;
        tokio::select! {
            () = gateway.drain(drain_timeout) => {}
            () = wait_for_signal() => tracing::info!("second signal: ending calls now"),
        }
        gateway.shutdown().await;
        if let Some(pbx) = demo {
            pbx.shutdown().await;
        }
        cancel.cancel();
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

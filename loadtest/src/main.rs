//! The `loadtest` command: simulated browsers against a running callgate, optionally with the
//! builtin SIP trunk in the same process, then a report (table on stdout, JSON on request).
//!
//! Exit codes: 0 when every requested call was placed, established and held to the end, 1
//! otherwise (a call failed, ended early or never started, an agent was lost, or the report
//! could not be written), 2 for bad flags.

use std::process::ExitCode;

use loadtest::cli::{self, Options, TrunkMode};
use loadtest::trunk::BuiltinTrunk;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let options = match cli::parse_args(std::env::args_os()) {
        Ok(options) => options,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    if let Ok(filter) = std::env::var("LOADTEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(options))
}

async fn run(options: Options) -> ExitCode {
    for note in &options.notes {
        eprintln!("note: {note}");
    }
    let trunk = match options.trunk {
        TrunkMode::Builtin => match BuiltinTrunk::start(options.trunk_bind).await {
            Ok(trunk) => {
                eprintln!(
                    "builtin SIP trunk listening on udp:{0}; callgate must use it as its proxy: \
                     callgate --sip-proxy {0}",
                    trunk.sip_addr()
                );
                Some(trunk)
            }
            Err(e) => {
                eprintln!(
                    "error: cannot bind the builtin SIP trunk on udp:{}: {e}",
                    options.trunk_bind
                );
                return ExitCode::FAILURE;
            }
        },
        TrunkMode::External => None,
    };
    if let Some(idle) = options.idle.clone() {
        return idle_run(idle, trunk, options.report_json.as_deref()).await;
    }
    let config = options.run.clone();
    eprintln!(
        "placing {} calls to {:?} via {}: {} at once, {}/s, hold {:.1} s, limit {:.1} s",
        config.calls,
        config.to,
        config.url,
        config.concurrency,
        config.rate.per_second(),
        config.hold.as_secs_f64(),
        config.duration_limit.as_secs_f64()
    );

    let stop = CancellationToken::new();
    let ctrl_c = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping: hanging up the calls in progress (Ctrl-C again to abort)");
                stop.cancel();
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("aborted");
                std::process::exit(130);
            }
        })
    };
    let mut outcome = match options.soak {
        Some(soak) => Outcome::Soak(Box::new(
            loadtest::soak::soak(config, soak.warmup_calls, soak.settle, stop).await,
        )),
        None => Outcome::Run(Box::new(loadtest::run::run_until(config, stop).await)),
    };
    ctrl_c.abort();
    let report = match &mut outcome {
        Outcome::Soak(soak) => &mut soak.run,
        Outcome::Run(report) => report,
    };
    if let Some(trunk) = trunk {
        report.trunk = Some(trunk.stats());
        trunk.shutdown().await;
    }
    print!("{}", report.to_table());
    let soak = match &outcome {
        Outcome::Soak(soak) => Some(soak),
        Outcome::Run(_) => None,
    };
    if let Some(soak) = soak {
        print!("{}", soak.to_table());
    }
    let report = match &outcome {
        Outcome::Soak(soak) => &soak.run,
        Outcome::Run(report) => report,
    };

    let calls = &report.calls;
    let all_good = calls.failed == 0
        && calls.ended_early == 0
        && calls.not_started == 0
        && report.agents.lost_by_reason.is_empty()
        && soak.as_ref().is_none_or(|s| s.returned_to_baseline);
    let mut code = if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if let Some(path) = &options.chart {
        let title = format!(
            "callgate under loadtest: {} calls, {} at once, {}/s",
            report.config.calls, report.config.concurrency, report.config.rate_per_second
        );
        let svg = loadtest::chart::render_svg(&title, &report.timeline);
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("error: cannot write the chart to {}: {e}", path.display());
            code = ExitCode::FAILURE;
        }
    }
    if let Some(path) = &options.report_json {
        // A soak's JSON is its SoakReport, the run's report under `run`.
        let json = match soak {
            Some(soak) => serde_json::to_string_pretty(soak),
            None => serde_json::to_string_pretty(report),
        };
        let written = json
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!(
                "error: cannot write the JSON report to {}: {e}",
                path.display()
            );
            code = ExitCode::FAILURE;
        }
    }
    code
}

/// What was run: a load run, or a soak (which holds its load run's report).
enum Outcome {
    Run(Box<loadtest::Report>),
    Soak(Box<loadtest::soak::SoakReport>),
}

/// `--idle-agents`: connect, hold idle, report callgate's RSS per agent.
async fn idle_run(
    idle: loadtest::idle::IdleConfig,
    trunk: Option<BuiltinTrunk>,
    report_json: Option<&std::path::Path>,
) -> ExitCode {
    eprintln!(
        "opening {} idle agents via {} (register: {}), idle for {:.1} s",
        idle.agents,
        idle.url,
        idle.register,
        idle.hold.as_secs_f64()
    );
    let report = loadtest::idle::idle_agents(idle).await;
    if let Some(trunk) = trunk {
        trunk.shutdown().await;
    }
    print!("{}", report.to_table());
    let mut code = if report.agents_idle == report.agents_requested {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if let Some(path) = report_json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!(
                "error: cannot write the JSON report to {}: {e}",
                path.display()
            );
            code = ExitCode::FAILURE;
        }
    }
    code
}

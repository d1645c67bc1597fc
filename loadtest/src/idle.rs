//! Idle agents (issue 5's memory target: ≤ 16 KiB per idle, connected, registered agent at
//! 10,000 agents): open N WebSockets, say `hello` and (optionally) `register` on each, read
//! callgate's RSS with all of them idle, then close them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::browser::SimBrowser;
use crate::config::WsUrl;

/// Most handshakes in flight at once.
const PARALLEL: usize = 64;
/// Per-request timeout while connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to open.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// callgate's WebSocket endpoint.
    pub url: WsUrl,
    /// How many agents.
    pub agents: u32,
    /// Agent `i` says hello as extension `extension_base + i`.
    pub extension_base: u32,
    /// The SIP password in `hello`.
    pub password: String,
    /// Send `register` after `hello` and wait for `registered`.
    pub register: bool,
    /// How long every agent stays connected and idle before the reading.
    pub hold: Duration,
    /// callgate's process, for its RSS.
    pub gateway_pid: Option<u32>,
}

/// How much memory the idle agents cost callgate.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Agents asked for.
    pub agents_requested: u32,
    /// Agents connected (and registered, with `register`) and idle at the reading.
    pub agents_idle: u32,
    /// Why the others are missing.
    pub failures: BTreeMap<String, u64>,
    /// callgate's RSS before the first connection, in bytes.
    pub rss_before_bytes: Option<u64>,
    /// callgate's RSS with every agent idle, in bytes.
    pub rss_idle_bytes: Option<u64>,
    /// (idle − before) ÷ idle agents, in bytes.
    pub rss_per_agent_bytes: Option<f64>,
    /// callgate's gauges with every agent idle.
    pub gauges_idle: BTreeMap<String, f64>,
}

/// Opens the agents, holds them idle, reads callgate, closes them.
pub async fn idle_agents(config: IdleConfig) -> IdleReport {
    let before = crate::soak::read(&config.url, None, config.gateway_pid)
        .await
        .ok();
    let slots = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = JoinSet::new();
    for index in 0..config.agents {
        let slots = slots.clone();
        let config = config.clone();
        tasks.spawn(async move {
            let _slot = slots.acquire().await.map_err(|_| "shutdown".to_string())?;
            let extension = (u64::from(config.extension_base) + u64::from(index)).to_string();
            let mut browser = SimBrowser::connect(config.url.as_str())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            browser.set_timeout(REQUEST_TIMEOUT);
            browser
                .hello(&extension, &config.password)
                .await
                .map_err(|e| format!("hello: {e}"))?;
            if config.register {
                crate::run::register(&mut browser)
                    .await
                    .map_err(|e| format!("register: {e}"))?;
            }
            Ok::<SimBrowser, String>(browser)
        });
    }
    let mut browsers = Vec::new();
    let mut failures = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(browser)) => browsers.push(browser),
            Ok(Err(reason)) => {
                let key = reason.split(':').next().unwrap_or("error").to_string();
                *failures.entry(key).or_insert(0u64) += 1;
            }
            Err(_) => *failures.entry("task".to_string()).or_insert(0u64) += 1,
        }
    }
    tokio::time::sleep(config.hold).await;
    let idle = crate::soak::read(&config.url, None, config.gateway_pid)
        .await
        .ok();
    let agents_idle = u32::try_from(browsers.len()).unwrap_or(u32::MAX);
    let rss_before = before.as_ref().and_then(|r| r.rss_bytes);
    let rss_idle = idle.as_ref().and_then(|r| r.rss_bytes);
    let per_agent = match (rss_before, rss_idle) {
        (Some(b), Some(i)) if agents_idle > 0 => {
            Some((i as f64 - b as f64) / f64::from(agents_idle))
        }
        _ => None,
    };
    let mut closing = JoinSet::new();
    for browser in browsers {
        closing.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), browser.close()).await;
        });
    }
    while closing.join_next().await.is_some() {}
    IdleReport {
        agents_requested: config.agents,
        agents_idle,
        failures,
        rss_before_bytes: rss_before,
        rss_idle_bytes: rss_idle,
        rss_per_agent_bytes: per_agent,
        gauges_idle: idle.map(|r| r.gauges).unwrap_or_default(),
    }
}

impl IdleReport {
    /// The human summary.
    pub fn to_table(&self) -> String {
        let mib =
            |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        let mut out = format!(
            "idle agents: {} of {} connected and idle\n  callgate RSS before {}, with the agents idle {}\n",
            self.agents_idle,
            self.agents_requested,
            mib(self.rss_before_bytes),
            mib(self.rss_idle_bytes)
        );
        if let Some(per) = self.rss_per_agent_bytes {
            out.push_str(&format!("  RSS per idle agent {:.1} KiB\n", per / 1024.0));
        }
        for (reason, n) in &self.failures {
            out.push_str(&format!("  failed: {reason} {n}\n"));
        }
        for (name, value) in &self.gauges_idle {
            out.push_str(&format!("  {name} {value}\n"));
        }
        out
    }
}

//! OPTIONS keepalive to the PBX: any final answer (even 404 or 407) proves it is up, and
//! `/readyz` reports a PBX that stopped answering so a load balancer sends agents elsewhere.

use std::sync::Arc;
use std::time::Duration;

use rsipstack::sip::{Method, SipMessage, StatusCodeKind, Uri};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::SipAddr;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The longest a ping waits for its answer (shorter when the interval is shorter).
const PING_TIMEOUT: Duration = Duration::from_secs(5);

use super::proxy::{ProxyHealth, ProxyRole};

/// Pings the proxy of `role` every `interval` until `cancel`, keeping `health` current.
pub(super) async fn run(
    endpoint: rsipstack::transaction::endpoint::EndpointInnerRef,
    proxy: SipAddr,
    role: ProxyRole,
    domain: String,
    interval: Duration,
    health: Arc<ProxyHealth>,
    cancel: CancellationToken,
) {
    let which = role.label();
    let timeout = interval.min(PING_TIMEOUT);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let answer = tokio::time::timeout(timeout, ping(&endpoint, &proxy, &domain)).await;
        let up = matches!(answer, Ok(Ok(_)));
        let was_up = health.set_reachable(role, up);
        match (was_up, up, answer) {
            (true, false, Ok(Err(e))) => {
                warn!(proxy = which, error = %e, "the PBX stopped answering OPTIONS");
            }
            (true, false, _) => warn!(
                proxy = which,
                ?timeout,
                "the PBX did not answer OPTIONS in time"
            ),
            (false, true, _) => info!(proxy = which, "the PBX answers OPTIONS again"),
            _ => {}
        }
    }
}

/// One OPTIONS; the final status, whatever it is.
async fn ping(
    endpoint: &rsipstack::transaction::endpoint::EndpointInnerRef,
    proxy: &SipAddr,
    domain: &str,
) -> Result<u16, String> {
    let from =
        Uri::try_from(format!("sip:callgate@{domain}").as_str()).map_err(|e| e.to_string())?;
    let target = Uri::try_from(format!("sip:{domain}").as_str()).map_err(|e| e.to_string())?;
    let request = super::message::out_of_dialog_request(endpoint, Method::Options, from, target)?;
    let key = TransactionKey::from_request(&request, TransactionRole::Client)
        .map_err(|e| e.to_string())?;
    let mut tx = Transaction::new_client(key, request, endpoint.clone(), None);
    tx.destination = Some(proxy.clone());
    tx.send().await.map_err(|e| e.to_string())?;
    while let Some(reply) = tx.receive().await {
        if let SipMessage::Response(response) = reply
            && response.status_code.kind() != StatusCodeKind::Provisional
        {
            return Ok(response.status_code.code());
        }
    }
    Err("no answer to OPTIONS".into())
}

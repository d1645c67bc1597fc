//! callgate's own view of a run: counters from its public `/metrics` endpoint (on the same
//! HTTP port as `/ws`), read before and after so the report can set what the gateway counted
//! (drops by kind, calls by result) next to what the simulated browsers saw.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::WsUrl;

/// Counter families kept from `/metrics`.
const FAMILIES: [&str; 9] = [
    "callgate_calls_total",
    "callgate_media_errors_total",
    "callgate_rtp_packets_total",
    "callgate_sip_responses_total",
    "callgate_browser_errors_total",
    "callgate_media_relay_delay_seconds",
    "callgate_media_worker_passes_total",
    "callgate_media_receive_calls_total",
    "callgate_media_received_datagrams_total",
];

/// Quantiles of callgate's relay delay over a run, from the growth of its histogram's
/// buckets: each is the upper bound of the bucket the quantile falls in (the histogram's
/// resolution), so it reads "at most".
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RelayDelay {
    /// Packets observed during the run.
    pub packets: u64,
    /// Mean, from the histogram's sum.
    pub mean_ms: f64,
    /// Half the packets were held at most this long (`None`: beyond the last bound).
    pub p50_at_most_ms: Option<f64>,
    /// 99 % of the packets were held at most this long.
    pub p99_at_most_ms: Option<f64>,
    /// 99.9 % of the packets.
    pub p999_at_most_ms: Option<f64>,
}

/// callgate's relay delay over a run from the growth of its counters (see [`increase`]);
/// `None` when it observed no packet (an older callgate, or no audio).
pub fn relay_delay(grown: &BTreeMap<String, f64>) -> Option<RelayDelay> {
    const FAMILY: &str = "callgate_media_relay_delay_seconds";
    let count = grown.get(&format!("{FAMILY}_count")).copied()?;
    if count < 1.0 {
        return None;
    }
    let sum = grown
        .get(&format!("{FAMILY}_sum"))
        .copied()
        .unwrap_or_default();
    // Cumulative counts by bound; +Inf sorts last as infinity.
    let mut buckets: Vec<(f64, f64)> = grown
        .iter()
        .filter_map(|(name, grown)| {
            let le = name.strip_prefix(&format!("{FAMILY}_bucket{{le=\""))?;
            let le = le.strip_suffix("\"}")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, *grown))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let at_most = |q: f64| {
        let wanted = q * count;
        buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= wanted)
            .map(|(bound, _)| *bound)
            .filter(|bound| bound.is_finite())
            .map(|bound| bound * 1000.0)
    };
    Some(RelayDelay {
        packets: count as u64,
        mean_ms: sum / count * 1000.0,
        p50_at_most_ms: at_most(0.5),
        p99_at_most_ms: at_most(0.99),
        p999_at_most_ms: at_most(0.999),
    })
}
/// Longest wait for the whole response.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response read.
const MAX_RESPONSE: u64 = 4 * 1024 * 1024;

/// `GET /metrics` on the gateway behind `url` (over TLS for `wss://`, trusting `ca_pem` or
/// the system's CAs); the body, or why not.
pub async fn fetch(url: &WsUrl, ca_pem: Option<&[u8]>) -> Result<String, String> {
    let authority = url.authority();
    let exchange = async {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        if !url.is_tls() {
            return get(stream, authority).await;
        }
        let config = crate::tls::client_config(ca_pem)?;
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS to {authority}: {e}"))?;
        get(stream, authority).await
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("GET {authority}/metrics timed out"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP response".to_string())?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(format!("GET http://{authority}/metrics: {status}"));
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    Ok(if chunked {
        dechunk(body)
    } else {
        body.to_string()
    })
}

/// Sends the request on `stream` and reads the whole response.
async fn get<S>(mut stream: S, authority: &str) -> Result<Vec<u8>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: callgate-loadtest\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify once the body is sent: keep what came.
    let read = stream.take(MAX_RESPONSE).read_to_end(&mut raw).await;
    match read {
        Ok(_) => Ok(raw),
        Err(_) if !raw.is_empty() => Ok(raw),
        Err(e) => Err(e.to_string()),
    }
}

/// The body of a chunked transfer (sizes in hex, each line CRLF-terminated).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(len) = usize::from_str_radix(size, 16) else {
            break;
        };
        if len == 0 {
            break;
        }
        let Some(chunk) = rest.get(..len) else {
            out.push_str(rest);
            break;
        };
        out.push_str(chunk);
        body = rest
            .get(len..)
            .unwrap_or_default()
            .trim_start_matches("\r\n");
    }
    out
}

/// The samples of the kept counter families: `name{labels}` → value.
pub fn counters(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| FAMILIES.iter().any(|f| l.starts_with(f)))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Every sample of the gauge families whose name starts with `callgate_` (from the
/// `# TYPE NAME gauge` lines): `name{labels}` → value.
pub fn gauges(text: &str) -> BTreeMap<String, f64> {
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" gauge"))
        .filter(|name| name.starts_with("callgate_"))
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let family = name.split('{').next()?;
            families
                .contains(&family)
                .then(|| Some((name.to_string(), value.trim().parse().ok()?)))?
        })
        .collect()
}

/// Every sample whose name starts with `prefix`: `name{labels}` → value.
pub fn samples(text: &str, prefix: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// How much each counter grew from `before` to `after`; zero growth left out.
pub fn increase(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(name, value)| {
            let grown = value - before.get(name).copied().unwrap_or(0.0);
            (grown > 0.0).then(|| (name.clone(), grown))
        })
        .collect()
}

#[cfg(test)]
mod tests;

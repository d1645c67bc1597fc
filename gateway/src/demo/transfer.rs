//! Call transfer in the demo PBX: REFER (RFC 3515) in an answered call.
//!
//! A REFER with one usable `Refer-To` is answered `202 Accepted` (anything
//! else 400), and the implicit subscription is then played out in the
//! REFER's dialog: NOTIFY `SIP/2.0 100 Trying` (`Subscription-State:
//! active`), and after its 2xx the final NOTIFY (`terminated;reason=
//! noresource`) with `SIP/2.0 200 OK`, or `SIP/2.0 486 Busy Here` when the
//! Refer-To user is `busy`, so the failure path can be exercised too. The
//! demo does not call the target: the transferor hangs up after the final
//! NOTIFY as it would with a real PBX, and the call ends on that BYE.
//!
//! The parsing half is pure and never panics (property tested); the NOTIFY
//! half runs in the REFER's request task and stops as soon as the call's
//! dialog is removed, so an unanswered NOTIFY never outlives its call.

use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HasHeaders;
use rsipstack::sip::{self, Header, Request, StatusCode, StatusCodeKind};
use tracing::{debug, info};

/// Keep at most this many recorded transfers; the oldest are dropped first.
pub(crate) const MAX_RECORDED_TRANSFERS: usize = 1024;

/// `Subscription-State` of the NOTIFY that reports progress.
const ACTIVE: &str = "active;expires=60";
/// `Subscription-State` of the NOTIFY that ends the subscription.
const TERMINATED: &str = "terminated;reason=noresource";

/// Where a REFER sends the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReferTarget {
    /// The Refer-To URI as received, without angle brackets or header
    /// parameters (a `?Replaces=` part is kept verbatim).
    pub(crate) uri: String,
    /// Its user part (the number or extension).
    pub(crate) user: String,
    /// Whether the URI carries `Replaces` (attended transfer).
    pub(crate) replaces: bool,
}

impl ReferTarget {
    /// What the final NOTIFY reports: 486 for the `busy` extension, else 200.
    pub(crate) fn outcome(&self) -> StatusCode {
        if self.user.eq_ignore_ascii_case("busy") {
            StatusCode::BusyHere
        } else {
            StatusCode::OK
        }
    }
}

/// The target of a REFER: exactly one `Refer-To` naming a `sip:`/`sips:` URI
/// with a user part; otherwise why not (the REFER is then answered 400).
pub(crate) fn refer_target(req: &Request) -> Result<ReferTarget, &'static str> {
    let mut values = req.headers().iter().filter_map(|h| match h {
        Header::ReferTo(r) => Some(r.value()),
        Header::Other(name, value) if name.eq_ignore_ascii_case("Refer-To") => Some(value.as_str()),
        _ => None,
    });
    let value = values.next().ok_or("no Refer-To")?;
    if values.next().is_some() {
        return Err("more than one Refer-To");
    }
    parse_refer_to(value)
}

/// Parse a `Refer-To` header value (name-addr or addr-spec, RFC 3515 §2.1).
pub(crate) fn parse_refer_to(value: &str) -> Result<ReferTarget, &'static str> {
    let value = value.trim();
    let uri = match value.find('<') {
        Some(open) => {
            // '<' is one byte, so `open + 1` is a char boundary.
            let rest = &value[open + 1..];
            let close = rest.find('>').ok_or("unclosed '<' in Refer-To")?;
            &rest[..close]
        }
        // addr-spec: anything after ';' are header parameters (RFC 3261 §20).
        None => value.split(';').next().unwrap_or_default(),
    }
    .trim();
    if uri.is_empty() {
        return Err("empty Refer-To");
    }
    let parsed = sip::Uri::try_from(uri).map_err(|_| "unparseable Refer-To URI")?;
    if !matches!(parsed.scheme, Some(sip::Scheme::Sip | sip::Scheme::Sips)) {
        return Err("Refer-To is not a sip: URI");
    }
    let user = parsed
        .user()
        .filter(|u| !u.is_empty())
        .ok_or("Refer-To has no user part")?
        .to_string();
    let replaces = parsed
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("replaces"));
    Ok(ReferTarget {
        uri: uri.to_string(),
        user,
        replaces,
    })
}

/// A `message/sipfrag` body holding just a status line (RFC 3420).
pub(crate) fn sipfrag(status: &StatusCode) -> Vec<u8> {
    format!("SIP/2.0 {} {}\r\n", status.code(), status.text()).into_bytes()
}

fn notify_headers(subscription_state: &str) -> Vec<Header> {
    vec![
        Header::Event("refer".into()),
        Header::SubscriptionState(subscription_state.into()),
        Header::ContentType("message/sipfrag;version=2.0".into()),
    ]
}

/// Play out the REFER's subscription in `dialog`: NOTIFY 100 Trying, then,
/// once that is answered 2xx, the final NOTIFY with `outcome`. Stops early
/// when a NOTIFY is refused or unanswered, or the dialog is gone. The caller
/// bounds it by the call's lifetime.
pub(crate) async fn notify_progress(dialog: &InviteDialog, outcome: StatusCode) {
    let final_code = outcome.code();
    let steps = [(StatusCode::Trying, ACTIVE), (outcome, TERMINATED)];
    for (status, state) in steps {
        let body = sipfrag(&status);
        match dialog.notify(Some(notify_headers(state)), Some(body)).await {
            Ok(Some(resp)) if resp.status_code.kind() == StatusCodeKind::Successful => {
                debug!(sipfrag = status.code(), "transfer NOTIFY answered");
            }
            Ok(Some(resp)) => {
                info!(sipfrag = status.code(), response = %resp.status_code, "transfer NOTIFY refused");
                return;
            }
            Ok(None) => {
                debug!("dialog no longer confirmed; transfer NOTIFYs stop");
                return;
            }
            Err(e) => {
                info!(sipfrag = status.code(), error = %e, "transfer NOTIFY failed");
                return;
            }
        }
    }
    info!(sipfrag = final_code, "transfer finished");
}

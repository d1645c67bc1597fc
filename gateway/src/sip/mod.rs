//! The SIP edge: callgate's wrapper around rsipstack (pinned in the workspace manifest).
//! Nothing outside this module names an rsipstack type. It owns the endpoint (UDP behind
//! the malformed-message [`guard`]; TCP accepted by [`tcp`] or TLS; the kept connections to
//! the proxies in [`link`], all with Nagle off), the dialog layer, and one task per outbound
//! INVITE that turns dialog states into [`SipEvent`]s and [`SipCommand`]s into CANCEL/BYE.

pub mod dialog_states;
pub mod guard;
pub mod hep;
pub mod inbound;
mod keepalive;
mod link;
pub mod message;
pub mod proxy;
pub mod registration;
mod stream_guard;
pub mod tcp;
pub mod tls;

pub use inbound::{IncomingInvite, InviteInfo};
pub use message::{IncomingMessage, OutgoingMessage};

/// What the PBX sends an agent outside its calls. Boxed: every session's inbox channel
/// allocates a block of 32 of these up front, and they are rare.
pub enum AgentInbound {
    /// A call.
    Invite(Box<IncomingInvite>),
    /// A text.
    Message(Box<IncomingMessage>),
}
pub use registration::{RegisterRequest, RegistrationEvent, RegistrationHandle, RegistrationSink};
pub use tls::SipTlsSettings;

/// Sessions' inboxes for inbound calls, by the Contact user they registered.
pub(crate) type Inboxes =
    Arc<std::sync::Mutex<std::collections::HashMap<String, mpsc::UnboundedSender<AgentInbound>>>>;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rsipstack::EndpointBuilder;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{Dialog, DialogState, TerminatedReason, TransactionHandle};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, SipMessage, StatusCode, Uri};
use rsipstack::transaction::endpoint::MessageInspector;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::SipTransport;

/// How long a SIP TCP or TLS connection may stay silent (nothing read from the peer) before
/// it is closed: rsipstack's default, set explicitly so that it is ours. It closes idle
/// strangers' connections, and callgate's own connection to the PBX too, which is why a TLS
/// set-up needs the OPTIONS keepalive (see `config`).
pub const STREAM_IDLE_CLOSE: std::time::Duration = std::time::Duration::from_millis(
    rsipstack::transport::transport_layer::DEFAULT_STREAM_IDLE_TIMEOUT_MS as u64,
);

/// How long a BYE waits after we answered an in-dialog request (an INFO, a REFER NOTIFY, a
/// re-INVITE…): rsipstack sends that answer from another task, and a BYE overtaking it
/// leaves the PBX with an unanswered transaction (see `answer_in_dialog`).
const IN_DIALOG_REPLY_GRACE: std::time::Duration = std::time::Duration::from_millis(150);

/// What the SIP edge needs to know.
#[derive(Debug, Clone)]
pub struct SipEdgeConfig {
    /// Local address for UDP and TCP.
    pub listen: SocketAddr,
    /// Transport for requests callgate originates.
    pub transport: SipTransport,
    /// The PBX / outbound proxy.
    pub proxy: SocketAddr,
    /// The proxy new requests go to while `proxy` does not answer the keepalive.
    pub secondary_proxy: Option<SocketAddr>,
    /// Domain used in From/To/Request-URI.
    pub domain: String,
    /// Header-name prefixes of inbound INVITE headers passed to the browser.
    pub header_prefixes: Vec<String>,
    /// Homer collector and capture id for HEP v3 SIP capture, if enabled.
    pub hep: Option<(SocketAddr, u32)>,
    /// Source addresses whose INVITE/MESSAGE may reach agents (the PBX); others get 403.
    pub trusted_sources: Vec<std::net::IpAddr>,
    /// How often the PBX is pinged with OPTIONS; zero turns the keepalive off.
    pub keepalive_interval: std::time::Duration,
    /// Trust and server name for `transport = tls`.
    pub tls: SipTlsSettings,
}

/// Called for every SIP response received (any method), for the metrics.
pub type ResponseObserver = Arc<dyn Fn(u16) + Send + Sync>;

/// One outbound call as the SIP leg sees it.
#[derive(Clone)]
pub struct OutboundInvite {
    /// callgate's call id, for log correlation only.
    pub call_id: String,
    /// The agent's extension (From user, digest username).
    pub extension: String,
    /// The agent's SIP password for digest challenges.
    pub password: String,
    /// Digest username when it differs from the extension (token mode's credentials).
    pub auth_user: Option<String>,
    /// The number dialled (Request-URI/To user), already validated.
    pub target: String,
    /// The SDP offer.
    pub sdp: String,
    /// Extra headers, already validated against the allowed prefixes.
    pub headers: Vec<(String, String)>,
}

/// What happened on an outbound INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipEvent {
    /// 101-199, with the body when it carries SDP.
    Provisional {
        /// Status code.
        status: u16,
        /// SDP, if any.
        sdp: Option<String>,
    },
    /// 2xx received and ACKed.
    Answered {
        /// SDP, if any.
        sdp: Option<String>,
        /// RFC 4028 session timer from the 2xx: (`Session-Expires` seconds, we refresh).
        session_timer: Option<(u32, bool)>,
    },
    /// The PBX refreshed the session with an UPDATE.
    SessionRefreshed,
    /// Final failure.
    Failed {
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
    /// No response could be obtained (transport failure, Timer B).
    Unreachable {
        /// What failed.
        reason: String,
    },
    /// The PBX ended the established dialog.
    RemoteBye,
    /// The caller cancelled an inbound call before it was answered.
    CallerCancelled,
    /// The dialog is confirmed; its identifiers make `Replaces` for an attended transfer.
    DialogEstablished {
        /// SIP Call-ID.
        call_id: String,
        /// Our tag.
        local_tag: String,
        /// The far end's tag.
        remote_tag: String,
    },
    /// The final response to our REFER (0 when none came).
    ReferOutcome {
        /// Status code.
        status: u16,
    },
    /// A NOTIFY about our REFER (RFC 3515 sipfrag).
    TransferProgress {
        /// The status line in the sipfrag.
        status: u16,
        /// Whether the subscription ended (the last report).
        done: bool,
    },
    /// The final response to our re-INVITE (status 0 when none came).
    ReinviteOutcome {
        /// Status code.
        status: u16,
        /// SDP answer, if any.
        sdp: Option<String>,
    },
    /// The PBX re-INVITEd; answer with [`SipCommand::ReplyReinvite`].
    RemoteReinvite {
        /// Its SDP offer, if any.
        sdp: Option<String>,
    },
    /// The PBX's answer, in its ACK, to the offer our 2xx made for its offer-less re-INVITE.
    ReinviteAckAnswer {
        /// The SDP answer.
        sdp: String,
    },
    /// A DTMF digit in a SIP INFO (`application/dtmf-relay` or `application/dtmf`).
    Dtmf {
        /// The digit.
        digit: char,
    },
}

/// Requests to an outbound call's SIP task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipCommand {
    /// CANCEL the INVITE (deferred by the stack until a provisional arrives).
    Cancel,
    /// BYE the dialog.
    Bye,
    /// Send a re-INVITE with this SDP offer.
    Reinvite {
        /// SDP offer.
        sdp: String,
        /// `Session-Expires` (we refresh) while a session timer runs.
        session_expires: Option<u32>,
    },
    /// Answer the PBX's pending re-INVITE.
    ReplyReinvite {
        /// Status code.
        status: u16,
        /// SDP answer for a 2xx.
        sdp: Option<String>,
    },
    /// Send one DTMF digit as SIP INFO `application/dtmf-relay`.
    Info {
        /// The digit.
        digit: char,
        /// Tone length in milliseconds.
        duration_ms: u32,
    },
    /// Send a REFER (RFC 3515) with this `Refer-To` value and `Referred-By`.
    Refer {
        /// `<sip:…>` with an optional `?Replaces=` part.
        refer_to: String,
        /// `<sip:agent@domain>`.
        referred_by: String,
    },
    /// Answer an inbound INVITE with 200 OK and this SDP.
    Accept {
        /// Our SDP (answer, or offer for an offer-less INVITE).
        sdp: String,
    },
    /// Refuse an inbound INVITE.
    Reject {
        /// The final status (486, 603, 480, …).
        status: u16,
    },
}

/// Receives the events of one outbound call.
pub type SipEventSink = Box<dyn FnMut(SipEvent) + Send>;

// A call's SIP channels carry boxed values: an unbounded tokio channel allocates its first
// block of 32 slots when it is created, and commands and events are rare, so 8-byte slots
// keep that block small for every call (48- and 72-byte ones cost ~3 KiB per call).

/// Commands to one call's SIP task.
pub(crate) type CommandSender = mpsc::UnboundedSender<Box<SipCommand>>;
/// The SIP task's end of [`CommandSender`].
pub(crate) type CommandReceiver = mpsc::UnboundedReceiver<Box<SipCommand>>;
/// Events of one call, from its SIP task or the helpers it spawns.
pub(crate) type EventSender = mpsc::UnboundedSender<Box<SipEvent>>;
/// The session's end of an inbound call's events.
pub type EventReceiver = mpsc::UnboundedReceiver<Box<SipEvent>>;

/// Control handle of one outbound call; dropping it ends the call on the SIP side too.
pub struct SipCallHandle {
    commands: CommandSender,
}

impl SipCallHandle {
    /// Asks the call's task to CANCEL or BYE.
    pub fn send(&self, command: SipCommand) {
        let _ = self.commands.send(Box::new(command));
    }
}

/// Why the SIP edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum SipStartError {
    /// Binding a socket failed.
    #[error("cannot bind SIP {transport} on {addr}: {source}")]
    Bind {
        /// udp or tcp.
        transport: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// rsipstack refused its configuration.
    #[error("SIP stack: {0}")]
    Stack(String),
}

/// The running SIP endpoint.
pub struct SipEdge {
    config: SipEdgeConfig,
    local: SocketAddr,
    dialogs: Arc<DialogLayer>,
    inboxes: Inboxes,
    registered: Arc<std::sync::atomic::AtomicI64>,
    cancel: CancellationToken,
    malformed: Arc<AtomicU64>,
    untrusted: Arc<AtomicU64>,
    tcp_refused: Arc<AtomicU64>,
    proxies: Arc<proxy::ProxyHealth>,
    /// Fans rsipstack's dialog states out to the calls (one channel for the edge, not one per call).
    dialog_states: Arc<dialog_states::DialogStateRouter>,
}

/// Sees every SIP message: counts responses for the metrics and copies messages to Homer.
struct Inspector {
    on_response: ResponseObserver,
    hep: Option<hep::HepSender>,
    local: SocketAddr,
}

impl Inspector {
    fn capture(
        &self,
        msg: &SipMessage,
        source: Option<SocketAddr>,
        destination: Option<SocketAddr>,
    ) {
        let (Some(hep), Some(source), Some(destination)) = (&self.hep, source, destination) else {
            return;
        };
        hep.capture(source, destination, false, &msg.to_bytes());
    }
}

impl MessageInspector for Inspector {
    fn before_send(&self, msg: SipMessage, dest: Option<&SipAddr>) -> SipMessage {
        if self.hep.is_some() {
            let destination = dest.and_then(|d| d.get_socketaddr().ok());
            self.capture(&msg, Some(self.local), destination);
        }
        msg
    }

    fn after_received(&self, msg: SipMessage, from: Option<&SipAddr>) -> SipMessage {
        if let SipMessage::Response(response) = &msg {
            (self.on_response)(response.status_code.code());
        }
        if self.hep.is_some() {
            let source = from.and_then(|f| f.get_socketaddr().ok());
            self.capture(&msg, source, Some(self.local));
        }
        msg
    }
}

/// Binds the SIP UDP socket. With port 0 (tests, ephemeral set-ups) the port the OS picks
/// must be free for TCP as well (the TCP listener, or the TLS connection's source address);
/// one taken on the TCP side (e.g. by an outgoing connection) is skipped for another.
async fn bind_udp(listen: SocketAddr) -> Result<tokio::net::UdpSocket, SipStartError> {
    let mut skipped = 0;
    loop {
        let udp = tokio::net::UdpSocket::bind(listen)
            .await
            .map_err(|source| SipStartError::Bind {
                transport: "udp",
                addr: listen,
                source,
            })?;
        if listen.port() != 0 {
            return Ok(udp);
        }
        let local = udp.local_addr().map_err(|source| SipStartError::Bind {
            transport: "udp",
            addr: listen,
            source,
        })?;
        match std::net::TcpListener::bind(local) {
            Ok(_) => return Ok(udp),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && skipped < 20 => skipped += 1,
            Err(source) => {
                return Err(SipStartError::Bind {
                    transport: "tcp",
                    addr: local,
                    source,
                });
            }
        }
    }
}

impl SipEdge {
    /// Binds UDP (guarded) and TCP on `config.listen` and starts serving.
    pub async fn start(
        config: SipEdgeConfig,
        on_response: ResponseObserver,
        cancel: CancellationToken,
    ) -> Result<SipEdge, SipStartError> {
        let udp = bind_udp(config.listen).await?;
        let local = udp.local_addr().map_err(|source| SipStartError::Bind {
            transport: "udp",
            addr: config.listen,
            source,
        })?;
        let malformed = Arc::new(AtomicU64::new(0));
        let transport_layer = TransportLayer::new(cancel.child_token());
        transport_layer.set_stream_idle_timeout(STREAM_IDLE_CLOSE);
        let guarded = Arc::new(guard::GuardedUdpSocket::new(udp, malformed.clone()));
        let udp_conn = UdpConnection::from_socket(guarded, None, Some(cancel.child_token()))
            .await
            .map_err(|e| SipStartError::Stack(e.to_string()))?;
        transport_layer.add_transport(udp_conn.into());
        // TLS: the TCP side of the listen address is the source of our connections to the
        // proxies (see `tls`), not a listener. UDP and TCP: we accept TCP ourselves (see `tcp`).
        let proxies = std::iter::once(config.proxy).chain(config.secondary_proxy);
        let (tcp_listener, links) = match config.transport {
            SipTransport::Tls => {
                let mut links = Vec::new();
                for proxy in proxies {
                    let (dialer, fallback) = tls::Dialer::new(&config.tls, local, proxy)
                        .map_err(|e| SipStartError::Stack(format!("TLS: {e}")))?;
                    if proxy == config.proxy {
                        transport_layer.set_tls_config(fallback);
                    }
                    links.push(link::Dialer::Tls(dialer));
                }
                (None, links)
            }
            SipTransport::Udp | SipTransport::Tcp => {
                let listener = tcp::bind(local).map_err(|source| SipStartError::Bind {
                    transport: "tcp",
                    addr: local,
                    source,
                })?;
                let links = match config.transport {
                    SipTransport::Tcp => proxies
                        .map(|proxy| link::Dialer::Tcp(tcp::Dialer::new(proxy)))
                        .collect(),
                    _ => Vec::new(),
                };
                (Some(listener), links)
            }
        };

        let endpoint = EndpointBuilder::new()
            .with_user_agent(concat!("callgate/", env!("CARGO_PKG_VERSION")))
            // Call-IDs end in our own address, not the library's default domain.
            .with_option(rsipstack::transaction::endpoint::EndpointOption {
                callid_suffix: Some(local.ip().to_string()),
                ..Default::default()
            })
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transport_layer)
            .with_transport_inspector(Box::new(stream_guard::StreamGuard::new(malformed.clone())))
            .with_inspector(Box::new(Inspector {
                on_response,
                hep: match config.hep {
                    Some((collector, id)) => {
                        Some(hep::HepSender::new(collector, id).map_err(|e| {
                            SipStartError::Bind {
                                transport: "hep",
                                addr: collector,
                                source: e,
                            }
                        })?)
                    }
                    None => None,
                },
                local,
            }))
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| SipStartError::Stack(e.to_string()))?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let tcp_refused = Arc::new(AtomicU64::new(0));
        if let Some(listener) = tcp_listener {
            let admission = tcp::Admission {
                trusted: config.trusted_sources.clone(),
                slots: tcp::UntrustedSlots::new(tcp::MAX_UNTRUSTED_CONNECTIONS),
                refused: tcp_refused.clone(),
            };
            tcp::serve(
                listener,
                admission,
                endpoint.inner.clone(),
                cancel.child_token(),
            );
        }
        let mut links = links.into_iter();
        if let Some(primary) = links.next() {
            // The primary's connection is up before the first REGISTER leaves.
            link::keep(primary, endpoint.inner.clone(), cancel.child_token()).await;
        }
        for secondary in links {
            tokio::spawn(link::keep(
                secondary,
                endpoint.inner.clone(),
                cancel.child_token(),
            ));
        }
        tokio::spawn(async move { endpoint.serve().await });
        let inboxes: Inboxes = Arc::default();
        let untrusted = Arc::new(AtomicU64::new(0));
        let dialog_states = dialog_states::DialogStateRouter::start(cancel.child_token());
        let routing = Routing {
            dialog_states: dialog_states.clone(),
            inboxes: inboxes.clone(),
            local,
            transport: config.transport,
            prefixes: config.header_prefixes.clone(),
            trusted: config.trusted_sources.clone(),
            untrusted: untrusted.clone(),
        };
        tokio::spawn(serve_incoming(dialogs.clone(), incoming, routing));
        let proxies = Arc::new(proxy::ProxyHealth::new(
            config.proxy,
            config.secondary_proxy,
        ));
        if !config.keepalive_interval.is_zero() {
            let roles = std::iter::once((proxy::ProxyRole::Primary, config.proxy)).chain(
                config
                    .secondary_proxy
                    .map(|addr| (proxy::ProxyRole::Secondary, addr)),
            );
            for (role, addr) in roles {
                tokio::spawn(keepalive::run(
                    dialogs.endpoint.clone(),
                    proxy_addr(config.transport, addr),
                    role,
                    config.domain.clone(),
                    config.keepalive_interval,
                    proxies.clone(),
                    cancel.child_token(),
                ));
            }
        }
        info!(%local, proxy = %config.proxy, secondary = ?config.secondary_proxy, transport = ?config.transport, "SIP endpoint listening");
        Ok(SipEdge {
            config,
            local,
            dialogs,
            inboxes,
            registered: Arc::default(),
            proxies,
            cancel,
            malformed,
            untrusted,
            tcp_refused,
            dialog_states,
        })
    }

    /// The bound SIP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The Contact users of the agents currently routed here (diagnostics and tests).
    pub fn agent_contacts(&self) -> Vec<String> {
        self.inboxes
            .lock()
            .map(|inboxes| inboxes.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Agents currently registered with the PBX.
    pub fn registered_count(&self) -> i64 {
        self.registered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// INVITEs and MESSAGEs refused with 403 for coming from outside `trusted_sources`.
    pub fn untrusted_count(&self) -> u64 {
        self.untrusted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// SIP TCP connections from untrusted addresses closed because
    /// [`tcp::MAX_UNTRUSTED_CONNECTIONS`] were open.
    pub fn tcp_refused_count(&self) -> u64 {
        self.tcp_refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Malformed datagrams seen on the UDP port so far.
    pub fn malformed_count(&self) -> u64 {
        self.malformed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Dialogs the stack currently tracks (leak checks).
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// Transactions in progress, 2xx awaiting their ACK, and agents routed here (leak
    /// checks and the `callgate_table_entries` gauge).
    pub fn table_sizes(&self) -> (usize, usize, usize) {
        let stats = self.dialogs.endpoint.get_stats();
        let routes = self.inboxes.lock().map(|i| i.len()).unwrap_or(0);
        (stats.running_transactions, stats.waiting_ack, routes)
    }

    /// The ids of the dialogs the stack tracks (leak reports).
    pub fn dialog_ids(&self) -> Vec<String> {
        self.dialogs.all_dialog_ids()
    }

    /// Stops the endpoint.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Registers an agent with the PBX and routes INVITEs for `request.contact_user` into
    /// `inbox` while the returned handle lives.
    pub fn register(
        &self,
        request: RegisterRequest,
        inbox: mpsc::UnboundedSender<AgentInbound>,
        events: RegistrationSink,
    ) -> Result<RegistrationHandle, String> {
        // The registrar URI names the transport (TCP, TLS): rsipstack sends a REGISTER to
        // the outbound proxy on the Request-URI's transport, UDP without the parameter.
        let registrar_param = uri_transport_param(self.config.transport);
        let server = Uri::try_from(format!("sip:{}{registrar_param}", self.config.domain).as_str())
            .map_err(|e| format!("bad registrar URI: {e}"))?;
        let contact = contact_uri(&request.contact_user, self.local, self.config.transport)?;
        if let Ok(mut inboxes) = self.inboxes.lock() {
            inboxes.insert(request.contact_user.clone(), inbox);
        }
        let target = registration::Target {
            server,
            proxies: self.proxies.clone(),
            contact,
        };
        Ok(registration::start(
            self.dialogs.endpoint.clone(),
            target,
            request,
            events,
            self.inboxes.clone(),
            self.registered.clone(),
        ))
    }

    /// False while no proxy answers the OPTIONS keepalive (always true without it), so
    /// `/readyz` can send agents to a gateway whose PBX is up.
    pub fn pbx_reachable(&self) -> bool {
        self.proxies.reachability().any()
    }

    /// Which proxies answer, which one new requests use, and how often it failed over.
    pub fn proxy_status(&self) -> proxy::ProxyStatus {
        self.proxies.status()
    }

    /// Sends a SIP MESSAGE for the agent; returns the PBX's final status.
    pub async fn send_message(&self, message: OutgoingMessage) -> Result<u16, String> {
        message::send(
            self.dialogs.endpoint.clone(),
            proxy_addr(self.config.transport, self.proxies.active()),
            &self.config.domain,
            message,
        )
        .await
    }

    /// Sends an INVITE for one call; events arrive on `events` until the call is over.
    pub fn invite(
        &self,
        invite: OutboundInvite,
        events: SipEventSink,
    ) -> Result<SipCallHandle, String> {
        let mut option = self.invite_option(&invite)?;
        // Our own Call-ID (rsipstack's format), known before the INVITE leaves, so the call's
        // dialog states are routed to it from the first.
        let sip_call_id = rsipstack::transaction::make_call_id(
            Some(&self.local.ip().to_string()),
            rsipstack::transaction::CallIdFormat::UuidWithSuffix,
        )
        .value()
        .to_string();
        let states = self.dialog_states.subscribe(&sip_call_id, None);
        option.call_id = Some(sip_call_id);
        let (commands, receiver) = mpsc::unbounded_channel();
        let span = info_span!("sip_call", call_id = %invite.call_id);
        tokio::spawn(
            run_outbound(self.dialogs.clone(), option, states, events, receiver).instrument(span),
        );
        Ok(SipCallHandle { commands })
    }

    fn invite_option(&self, invite: &OutboundInvite) -> Result<InviteOption, String> {
        let domain = &self.config.domain;
        let uri = |user: &str, host: &str| {
            Uri::try_from(format!("sip:{user}@{host}").as_str())
                .map_err(|e| format!("bad SIP URI for {user}: {e}"))
        };
        let transport_param = uri_transport_param(self.config.transport);
        let contact = Uri::try_from(
            format!("sip:{}@{}{transport_param}", invite.extension, self.local).as_str(),
        )
        .map_err(|e| format!("bad contact: {e}"))?;
        // The proxy as a loose route (RFC 3261 §8.1.2): the INVITE and the CANCEL built from
        // it go to the proxy whatever the Request-URI's domain resolves to. The active one:
        // the secondary while the primary does not answer the keepalive.
        let proxy = self.proxies.active();
        let proxy_route = Uri::try_from(format!("sip:{proxy};lr{transport_param}").as_str())
            .map_err(|e| format!("bad proxy route: {e}"))?;
        Ok(InviteOption {
            route_set: vec![rsipstack::sip::typed::Route::from(proxy_route)],
            caller: uri(&invite.extension, domain)?,
            callee: uri(&invite.target, domain)?,
            contact,
            destination: Some(proxy_addr(self.config.transport, proxy)),
            content_type: Some("application/sdp".into()),
            offer: Some(invite.sdp.clone().into_bytes()),
            credential: Some(Credential {
                username: invite.extension.clone(),
                password: invite.password.clone(),
                realm: None,
                auth_username: invite.auth_user.clone(),
            }),
            // `Supported: timer`: the PBX may impose RFC 4028 session timers, which we honour.
            headers: Some(
                std::iter::once(Header::Supported("timer".into()))
                    .chain(
                        invite
                            .headers
                            .iter()
                            .map(|(n, v)| Header::Other(n.clone(), v.clone())),
                    )
                    .collect(),
            ),
            ..Default::default()
        })
    }
}

/// The `;transport=` URI parameter of callgate's Contacts and proxy route.
fn uri_transport_param(transport: SipTransport) -> &'static str {
    match transport {
        SipTransport::Udp => "",
        SipTransport::Tcp => ";transport=tcp",
        SipTransport::Tls => ";transport=tls",
    }
}

/// `sip:<user>@<local>` with the transport parameter for TCP and TLS.
fn contact_uri(user: &str, local: SocketAddr, transport: SipTransport) -> Result<Uri, String> {
    let param = uri_transport_param(transport);
    Uri::try_from(format!("sip:{user}@{local}{param}").as_str())
        .map_err(|e| format!("bad contact: {e}"))
}

/// Where inbound INVITEs go.
struct Routing {
    inboxes: Inboxes,
    dialog_states: Arc<dialog_states::DialogStateRouter>,
    local: SocketAddr,
    transport: SipTransport,
    prefixes: Vec<String>,
    trusted: Vec<std::net::IpAddr>,
    /// INVITEs and MESSAGEs refused for coming from an untrusted address.
    untrusted: Arc<AtomicU64>,
}

impl Routing {
    /// The inbox of the agent whose Contact user is `user`, if that agent is connected.
    fn inbox(&self, user: &str) -> Option<mpsc::UnboundedSender<AgentInbound>> {
        self.inboxes
            .lock()
            .ok()
            .and_then(|inboxes| inboxes.get(user).cloned())
    }

    /// Whether the request came from a trusted PBX address (no open door for toll fraud or
    /// spam calls straight to the agents' Contacts).
    fn trusted(&self, tx: &rsipstack::transaction::transaction::Transaction) -> bool {
        let source = tx
            .connection
            .as_ref()
            .and_then(|c| c.get_remote_addr())
            .and_then(|a| a.get_socketaddr().ok());
        source.is_some_and(|s| self.trusted.contains(&s.ip()))
    }
}

fn body_text(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        None
    } else {
        Some(String::from_utf8_lossy(body).into_owned())
    }
}

/// Drives one outbound INVITE to its end.
async fn run_outbound(
    dialogs: Arc<DialogLayer>,
    option: InviteOption,
    mut subscription: dialog_states::Subscription,
    mut events: SipEventSink,
    mut commands: CommandReceiver,
) {
    let (dialog, mut invite) = match dialogs.do_invite_async(option, subscription.sender()) {
        Ok(started) => started,
        Err(e) => {
            events(SipEvent::Unreachable {
                reason: format!("cannot send INVITE: {e}"),
            });
            return;
        }
    };
    let mut invite_done = false;
    let mut confirmed: Option<rsipstack::dialog::DialogId> = None;
    let mut ended = false;
    // Results of requests sent from helper tasks, so the loop keeps serving the dialog.
    let (outcomes_tx, mut outcomes): (EventSender, _) = mpsc::unbounded_channel();
    let mut pending_reinvite: Option<PendingReinvite> = None;
    let mut established = false;
    let mut in_dialog_reply_at: Option<tokio::time::Instant> = None;
    let mut info = InfoQueue::default();
    while !ended {
        tokio::select! {
            Some(event) = outcomes.recv() => events(*event),
            result = &mut invite, if !invite_done => {
                invite_done = true;
                match result {
                    Ok(Ok((id, Some(response)))) => {
                        let status = response.status_code.code();
                        if (200..300).contains(&status) {
                            confirmed = Some(id);
                        } else if status >= 300 {
                            let reason = response
                                .wire_reason
                                .clone()
                                .unwrap_or_else(|| response.status_code.text().to_string());
                            events(SipEvent::Failed { status, reason });
                            ended = true;
                        }
                    }
                    Ok(Ok((_, None))) => {
                        events(SipEvent::Unreachable { reason: "no final response to the INVITE".into() });
                        ended = true;
                    }
                    Ok(Err(e)) => {
                        let reason = e.to_string();
                        let timeout = reason.to_ascii_lowercase().contains("timeout");
                        events(if timeout {
                            SipEvent::Failed { status: 408, reason: "Request Timeout".into() }
                        } else {
                            SipEvent::Unreachable { reason }
                        });
                        ended = true;
                    }
                    Err(join) => {
                        events(SipEvent::Unreachable { reason: format!("INVITE task failed: {join}") });
                        ended = true;
                    }
                }
            }
            state = subscription.states.recv() => match state.map(|s| *s) {
                Some(DialogState::Early(_, response)) => {
                    events(SipEvent::Provisional { status: response.status_code.code(), sdp: body_text(&response.body) });
                }
                Some(DialogState::Confirmed(id, response)) => {
                    if !established {
                        established = true;
                        events(SipEvent::DialogEstablished {
                            call_id: id.call_id.clone(),
                            local_tag: id.local_tag.clone(),
                            remote_tag: id.remote_tag.clone(),
                        });
                    }
                    confirmed = Some(id);
                    events(SipEvent::Answered {
                        sdp: body_text(&response.body),
                        session_timer: session_timer(&response),
                    });
                }
                Some(DialogState::Terminated(_, reason)) => {
                    debug!(?reason, "dialog terminated");
                    if confirmed.is_some() {
                        if matches!(reason, TerminatedReason::UasBye) {
                            events(SipEvent::RemoteBye);
                        } else if matches!(reason, TerminatedReason::Timeout) {
                            events(SipEvent::Unreachable { reason: "the PBX stopped answering in-dialog requests".into() });
                        }
                        ended = true;
                    }
                    // Before answer the INVITE's final response (above) reports the end.
                }
                Some(other) => {
                    if Box::pin(answer_in_dialog(other, &mut events, &mut pending_reinvite)).await {
                        in_dialog_reply_at = Some(tokio::time::Instant::now());
                    }
                }
                None => ended = invite_done,
            },
            command = commands.recv() => match command.map(|c| *c) {
                Some(SipCommand::Cancel) => {
                    if let Err(e) = Box::pin(dialog.cancel()).await {
                        warn!(error = %e, "CANCEL failed");
                    }
                }
                Some(SipCommand::Bye) => {
                    if let Some(pending) = pending_reinvite.take() {
                        let _ = Box::pin(pending.handle.reply(StatusCode::RequestTerminated)).await;
                    }
                    if let Some(at) = in_dialog_reply_at {
                        tokio::time::sleep_until(at + IN_DIALOG_REPLY_GRACE).await;
                    }
                    if let Err(e) = Box::pin(dialog.bye()).await {
                        debug!(error = %e, "BYE failed");
                    }
                    ended = true;
                }
                Some(SipCommand::Reinvite { sdp, session_expires }) => send_reinvite(&dialog, sdp, session_expires, outcomes_tx.clone()),
                Some(SipCommand::ReplyReinvite { status, sdp }) => {
                    if let Some(pending) = pending_reinvite.take() {
                        Box::pin(reply_reinvite(&dialog, pending, status, sdp, &outcomes_tx)).await;
                        in_dialog_reply_at = Some(tokio::time::Instant::now());
                    }
                }
                Some(SipCommand::Info { digit, duration_ms }) => info.send(&dialog, digit, duration_ms),
                Some(SipCommand::Refer { refer_to, referred_by }) => {
                    send_refer(&dialog, refer_to, referred_by, outcomes_tx.clone());
                }
                Some(SipCommand::Accept { .. } | SipCommand::Reject { .. }) => {
                    debug!("accept/reject only apply to inbound calls");
                }
                None => {
                    // The session is gone without a word: never leave a call up.
                    if confirmed.is_some() {
                        let _ = Box::pin(dialog.bye()).await;
                    } else {
                        let _ = Box::pin(dialog.cancel()).await;
                    }
                    ended = invite_done || confirmed.is_some();
                    if !ended {
                        // Wait for the INVITE's final response; a racing 2xx gets its BYE from the stack.
                        let _ = (&mut invite).await;
                        ended = true;
                    }
                }
            },
        }
    }
    debug!(confirmed = ?confirmed.as_ref().map(|id| id.to_string()), dialog = %dialog.id(), "outbound SIP task done");
    if let Some(id) = confirmed {
        dialogs.remove_dialog(&id);
    }
}

/// Awaits an optional boxed future (a `select!` branch guarded by `is_some()`), so a call's
/// task can drop a finished sub-task's state instead of carrying it to the end of the call.
async fn run_until_done<F: std::future::Future<Output = ()> + Unpin>(future: &mut Option<F>) {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// The PBX's re-INVITE waiting for the call machine's answer.
pub(super) struct PendingReinvite {
    handle: TransactionHandle,
    /// Its CSeq when it carried no offer: our 2xx then offers, and the answer rides its ACK.
    offerless_cseq: Option<u32>,
}

/// How often the ACK to an offer-less re-INVITE is looked for: rsipstack keeps the last ACK
/// on the dialog but reports no event for it on an outbound call's dialog.
const ACK_ANSWER_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Answers the PBX's re-INVITE as the call machine decided; when that 2xx made the offer (the
/// re-INVITE had none), watches for the ACK carrying the PBX's answer (64×T1 at most) and
/// reports it as [`SipEvent::ReinviteAckAnswer`].
async fn reply_reinvite(
    dialog: &rsipstack::dialog::invite_dialog::InviteDialog,
    pending: PendingReinvite,
    status: u16,
    sdp: Option<String>,
    outcomes: &EventSender,
) {
    let offered = (200..300).contains(&status) && sdp.is_some();
    Box::pin(reply_with_sdp(pending.handle, status, sdp)).await;
    let Some(cseq) = pending.offerless_cseq.filter(|_| offered) else {
        return;
    };
    let dialog = dialog.clone();
    let outcomes = outcomes.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(32);
        while tokio::time::Instant::now() < deadline && !outcomes.is_closed() {
            let ack = dialog
                .last_remote_ack()
                .filter(|ack| ack.cseq_header().and_then(|c| c.seq()).ok() == Some(cseq));
            if let Some(ack) = ack {
                if let Some(sdp) = body_text(&ack.body) {
                    let _ = outcomes.send(Box::new(SipEvent::ReinviteAckAnswer { sdp }));
                }
                return;
            }
            tokio::time::sleep(ACK_ANSWER_POLL).await;
        }
    });
}

/// Answers the in-dialog requests both call directions share; re-INVITEs are reported and
/// their transaction handle kept until the call machine decides.
/// Returns true when it answered a request: a BYE sent right after must wait a moment, since
/// rsipstack sends that answer from another task and a BYE overtaking it leaves the PBX
/// with an unanswered transaction (SIPp aborts the call; a transferee's subscription breaks).
/// A browser hanging up on a received INFO digit hits exactly that.
async fn answer_in_dialog(
    state: DialogState,
    events: &mut SipEventSink,
    pending_reinvite: &mut Option<PendingReinvite>,
) -> bool {
    match state {
        DialogState::Updated(_, request, handle) => {
            if request.method == Method::Invite {
                let sdp = body_text(&request.body);
                let offerless_cseq = match sdp {
                    None => request.cseq_header().and_then(|c| c.seq()).ok(),
                    Some(_) => None,
                };
                let pending = PendingReinvite {
                    handle,
                    offerless_cseq,
                };
                if let Some(stale) = pending_reinvite.replace(pending) {
                    let _ = stale.handle.reply(StatusCode::RequestPending).await;
                }
                events(SipEvent::RemoteReinvite { sdp });
            } else {
                // UPDATE without a new session description: a session refresh.
                let _ = handle.reply(StatusCode::OK).await;
                events(SipEvent::SessionRefreshed);
                return true;
            }
        }
        DialogState::Info(_, request, handle) => {
            let content_type = request.headers.iter().find_map(|h| match h {
                Header::ContentType(ct) => Some(ct.value().to_string()),
                _ => None,
            });
            let code = rsipstack::sip::event_packages::parse_info_dtmf(
                content_type.as_deref(),
                &request.body,
            );
            let digit = code.and_then(crate::media::rtp::dtmf_char);
            let status = match digit {
                None if content_type.is_some() => StatusCode::UnsupportedMediaType,
                _ => StatusCode::OK,
            };
            let _ = handle.reply(status).await;
            if let Some(digit) = digit {
                events(SipEvent::Dtmf { digit });
            }
            return true;
        }
        DialogState::Notify(_, request, handle) => {
            let _ = handle.reply(StatusCode::OK).await;
            if let Some((status, done)) = refer_progress(&request) {
                events(SipEvent::TransferProgress { status, done });
            }
            return true;
        }
        DialogState::Options(_, _, handle) | DialogState::Message(_, _, handle) => {
            let _ = handle.reply(StatusCode::OK).await;
            return true;
        }
        DialogState::Refer(_, _, handle) => {
            let _ = handle.reply(StatusCode::Decline).await;
            return true;
        }
        _ => {}
    }
    false
}

/// `Session-Expires: N;refresher=uac|uas` of a 2xx to our INVITE: (N, we refresh). Without
/// a refresher parameter the UAC (we) refreshes (RFC 4028 §7.2).
fn session_timer(response: &rsipstack::sip::Response) -> Option<(u32, bool)> {
    let value = response.headers.iter().find_map(|h| match h {
        Header::SessionExpires(v) => Some(v.value().to_string()),
        Header::Other(name, v) if name.eq_ignore_ascii_case("Session-Expires") => Some(v.clone()),
        _ => None,
    })?;
    let mut parts = value.split(';');
    let seconds = parts
        .next()?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|s| *s > 0)?;
    let refresher_uas = parts.any(|p| p.trim().eq_ignore_ascii_case("refresher=uas"));
    Some((seconds, !refresher_uas))
}

/// The sipfrag status of a REFER NOTIFY and whether its subscription ended.
fn refer_progress(request: &rsipstack::sip::Request) -> Option<(u16, bool)> {
    let event = request.headers.iter().find_map(|h| match h {
        Header::Event(e) => Some(e.value().to_ascii_lowercase()),
        _ => None,
    })?;
    if !event.starts_with("refer") {
        return None;
    }
    let body = String::from_utf8_lossy(&request.body);
    let status = body
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse::<u16>()
        .ok()?;
    let terminated = request.headers.iter().any(|h| match h {
        Header::SubscriptionState(state) => state
            .value()
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("terminated"),
        _ => false,
    });
    Some((status, terminated || status >= 200))
}

/// Sends a REFER from a helper task; its final status comes back through `outcomes`.
fn send_refer(
    dialog: &rsipstack::dialog::invite_dialog::InviteDialog,
    refer_to: String,
    referred_by: String,
    outcomes: EventSender,
) {
    let dialog = dialog.clone();
    tokio::spawn(async move {
        let headers = vec![Header::Other("Referred-By".into(), referred_by)];
        let status = match dialog.refer(refer_to, Some(headers), None).await {
            Ok(Some(response)) => response.status_code.code(),
            Ok(None) => 481,
            Err(e) => {
                debug!(error = %e, "REFER failed");
                0
            }
        };
        let _ = outcomes.send(Box::new(SipEvent::ReferOutcome { status }));
    });
}

/// Sends a re-INVITE from a helper task; its outcome comes back through `outcomes`.
fn send_reinvite(
    dialog: &rsipstack::dialog::invite_dialog::InviteDialog,
    sdp: String,
    session_expires: Option<u32>,
    outcomes: EventSender,
) {
    let dialog = dialog.clone();
    tokio::spawn(async move {
        let mut headers = vec![Header::ContentType("application/sdp".into())];
        if let Some(seconds) = session_expires {
            headers.push(Header::Supported("timer".into()));
            headers.push(Header::SessionExpires(
                format!("{seconds};refresher=uac").into(),
            ));
        }
        let event = match dialog.reinvite(Some(headers), Some(sdp.into_bytes())).await {
            Ok(Some(response)) => SipEvent::ReinviteOutcome {
                status: response.status_code.code(),
                sdp: body_text(&response.body),
            },
            Ok(None) => SipEvent::ReinviteOutcome {
                status: 481,
                sdp: None,
            },
            Err(e) => {
                debug!(error = %e, "re-INVITE failed");
                SipEvent::ReinviteOutcome {
                    status: 0,
                    sdp: None,
                }
            }
        };
        let _ = outcomes.send(Box::new(event));
    });
}

/// A proxy as rsipstack addresses it, on the configured transport.
fn proxy_addr(transport: SipTransport, proxy: SocketAddr) -> SipAddr {
    let transport = match transport {
        SipTransport::Udp => rsipstack::sip::transport::Transport::Udp,
        SipTransport::Tcp => rsipstack::sip::transport::Transport::Tcp,
        SipTransport::Tls => rsipstack::sip::transport::Transport::Tls,
    };
    SipAddr {
        r#type: Some(transport),
        addr: proxy.into(),
    }
}

/// Answers a pending re-INVITE.
async fn reply_with_sdp(handle: TransactionHandle, status: u16, sdp: Option<String>) {
    let headers = sdp
        .as_ref()
        .map(|_| vec![Header::ContentType("application/sdp".into())]);
    let body = sdp.map(String::into_bytes);
    // Only queues the response for the transaction's task, so awaiting here cannot stall.
    let _ = handle
        .respond(StatusCode::from(status), headers, body)
        .await;
}

/// A call's SIP INFO digits, sent one at a time: each waits for the previous one's final
/// response. Sent at once they left in any order (spawned tasks), and over UDP a later INFO
/// overtaking a lost one makes the PBX refuse the lost one's retransmission (RFC 3261
/// §12.2.2: lower CSeq, 500), so that digit was gone.
#[derive(Default)]
pub(super) struct InfoQueue {
    digits: Option<mpsc::UnboundedSender<(char, u32)>>,
}

impl InfoQueue {
    /// Queues one digit as SIP INFO `application/dtmf-relay`; the sending task starts with
    /// the call's first digit and ends with the call.
    pub(super) fn send(
        &mut self,
        dialog: &rsipstack::dialog::invite_dialog::InviteDialog,
        digit: char,
        duration_ms: u32,
    ) {
        let digits = self.digits.get_or_insert_with(|| {
            let (digits, mut queued) = mpsc::unbounded_channel::<(char, u32)>();
            let dialog = dialog.clone();
            tokio::spawn(async move {
                while let Some((digit, duration_ms)) = queued.recv().await {
                    let headers = vec![Header::ContentType("application/dtmf-relay".into())];
                    let body = format!("Signal={digit}\r\nDuration={duration_ms}\r\n");
                    match Box::pin(dialog.info(Some(headers), Some(body.into_bytes()))).await {
                        Ok(Some(response)) if response.status_code.code() >= 300 => {
                            debug!(%digit, status = response.status_code.code(), "INFO refused");
                        }
                        Ok(_) => {}
                        Err(e) => debug!(%digit, error = %e, "INFO failed"),
                    }
                }
            });
            digits
        });
        let _ = digits.send((digit, duration_ms));
    }
}

/// Hands an out-of-dialog INVITE to the session whose Contact it names; 404 when no agent
/// registered that Contact, 480 when its session is gone.
fn route_invite(
    dialogs: &Arc<DialogLayer>,
    mut tx: rsipstack::transaction::transaction::Transaction,
    routing: &Routing,
) {
    let user = tx.original.uri.user().unwrap_or_default().to_string();
    let inbox = routing.inbox(&user);
    let Some(inbox) = inbox else {
        debug!("INVITE for an unknown agent");
        tokio::spawn(async move {
            let _ = tx.reply(StatusCode::NotFound).await;
        });
        return;
    };
    let Ok(contact) = contact_uri(&user, routing.local, routing.transport) else {
        tokio::spawn(async move {
            let _ = tx.reply(StatusCode::BadRequest).await;
        });
        return;
    };
    // The dialog's key as the PBX chose it (Call-ID, From tag); without a From tag there is
    // no dialog to route (RFC 3261 §8.1.1.3 makes it mandatory).
    let Ok(key) = rsipstack::dialog::DialogId::try_from((
        &tx.original,
        rsipstack::transaction::key::TransactionRole::Server,
    )) else {
        debug!("INVITE without Call-ID or From tag");
        tokio::spawn(async move {
            let _ = tx.reply(StatusCode::BadRequest).await;
        });
        return;
    };
    let states = routing
        .dialog_states
        .subscribe(&key.call_id, Some(&key.remote_tag));
    let info = inbound::invite_info(&tx, &routing.prefixes);
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (event_tx, events) = mpsc::unbounded_channel();
    let offered = IncomingInvite {
        info,
        handle: SipCallHandle { commands },
        events,
    };
    if inbox.send(AgentInbound::Invite(Box::new(offered))).is_err() {
        tokio::spawn(async move {
            let _ = tx.reply(StatusCode::TemporarilyUnavailable).await;
        });
        return;
    }
    let sink: SipEventSink = Box::new(move |event| {
        let _ = event_tx.send(Box::new(event));
    });
    tokio::spawn(inbound::run_inbound(
        dialogs.clone(),
        tx,
        contact,
        states,
        sink,
        command_rx,
    ));
}

/// Hands an out-of-dialog MESSAGE to the session whose Contact it names (200), else 404.
fn route_message(mut tx: rsipstack::transaction::transaction::Transaction, routing: &Routing) {
    let user = tx.original.uri.user().unwrap_or_default().to_string();
    let inbox = routing.inbox(&user);
    let info = inbound::invite_info(&tx, &[]);
    let content_type = tx
        .original
        .headers
        .iter()
        .find_map(|h| match h {
            Header::ContentType(ct) => Some(ct.value().to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "text/plain".into());
    let text = String::from_utf8_lossy(&tx.original.body).into_owned();
    let status = match inbox {
        Some(inbox) if text.len() <= 4096 => {
            let message = IncomingMessage {
                from: info.from,
                display_name: info.display_name,
                text,
                content_type,
            };
            if inbox.send(AgentInbound::Message(Box::new(message))).is_ok() {
                StatusCode::OK
            } else {
                StatusCode::TemporarilyUnavailable
            }
        }
        Some(_) => StatusCode::RequestEntityTooLarge,
        None => StatusCode::NotFound,
    };
    tokio::spawn(async move {
        let _ = tx.reply(status).await;
    });
}

/// Requests the PBX sends us: in-dialog ones go to their dialog, the rest are refused with
/// the status RFC 3261 prescribes.
async fn serve_incoming(
    dialogs: Arc<DialogLayer>,
    mut incoming: rsipstack::transaction::TransactionReceiver,
    routing: Routing,
) {
    while let Some(mut tx) = incoming.recv().await {
        let method = tx.original.method;
        match dialogs.match_dialog(&tx) {
            Some(Dialog::Invite(mut dialog)) => {
                tokio::spawn(async move {
                    if let Err(e) = dialog.handle(&mut tx).await {
                        debug!(error = %e, "in-dialog request failed");
                    }
                });
            }
            Some(_) => {
                let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
            }
            None if matches!(method, Method::Invite | Method::Message) && !routing.trusted(&tx) => {
                warn!(
                    ?method,
                    "request to an agent from an untrusted address refused"
                );
                routing
                    .untrusted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(async move {
                    let _ = tx.reply(StatusCode::Forbidden).await;
                });
            }
            None if method == Method::Invite => route_invite(&dialogs, tx, &routing),
            None if method == Method::Message => route_message(tx, &routing),
            None => {
                let status = match method {
                    Method::Options => StatusCode::OK,
                    Method::Ack => continue,
                    Method::Bye
                    | Method::Cancel
                    | Method::Info
                    | Method::Update
                    | Method::PRack => StatusCode::CallTransactionDoesNotExist,
                    _ => StatusCode::MethodNotAllowed,
                };
                tokio::spawn(async move {
                    let _ = tx.reply(status).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod memory_footprint {
    /// The element type of a channel end.
    trait Slot {
        type Value;
    }
    impl<T> Slot for tokio::sync::mpsc::UnboundedSender<T> {
        type Value = T;
    }
    impl<T> Slot for tokio::sync::mpsc::UnboundedReceiver<T> {
        type Value = T;
    }

    /// Every call creates these channels; their first block is 32 slots whatever is sent.
    #[test]
    fn per_call_channel_slots_stay_small() {
        use std::mem::size_of;
        assert!(size_of::<<super::CommandSender as Slot>::Value>() <= 8);
        assert!(size_of::<<super::CommandReceiver as Slot>::Value>() <= 8);
        assert!(size_of::<<super::EventSender as Slot>::Value>() <= 8);
        assert!(size_of::<<super::EventReceiver as Slot>::Value>() <= 8);
    }

    /// A call's SIP task lives as long as the call and is allocated whole when spawned:
    /// rsipstack's larger futures (the INVITE server transaction's driver, BYE, CANCEL,
    /// replies) are boxed so that only the one in progress takes memory. Before, an inbound
    /// call's task was 10.5 KiB and an outbound one 3.2 KiB.
    #[tokio::test]
    async fn a_calls_sip_task_stays_small() {
        use std::sync::Arc;

        use rsipstack::dialog::dialog_layer::DialogLayer;
        use rsipstack::sip::{SipMessage, Uri};
        use rsipstack::transaction::key::{TransactionKey, TransactionRole};
        use rsipstack::transaction::transaction::Transaction;
        use tokio_util::sync::CancellationToken;

        let invite = "INVITE sip:agent-1@127.0.0.1:5060 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-footprint\r\n\
            From: <sip:pbx@127.0.0.1>;tag=pbx-tag\r\n\
            To: <sip:agent-1@127.0.0.1>\r\n\
            Call-ID: footprint@127.0.0.1\r\n\
            CSeq: 1 INVITE\r\n\
            Contact: <sip:pbx@127.0.0.1:5080>\r\n\
            Content-Length: 0\r\n\r\n";
        let Ok(SipMessage::Request(request)) = SipMessage::try_from(invite) else {
            panic!("the test INVITE parses");
        };
        let Ok(key) = TransactionKey::from_request(&request, TransactionRole::Server) else {
            panic!("the test INVITE has a transaction key");
        };
        let Ok(contact) = Uri::try_from("sip:agent-1@127.0.0.1:5060") else {
            panic!("the contact parses");
        };
        let endpoint = rsipstack::EndpointBuilder::new().build();
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let cancel = CancellationToken::new();
        let router = super::dialog_states::DialogStateRouter::start(cancel.clone());

        let tx = Transaction::new_server(key, request, endpoint.inner.clone(), None);
        let (_commands, receiver) = tokio::sync::mpsc::unbounded_channel();
        let inbound = super::inbound::run_inbound(
            dialogs.clone(),
            tx,
            contact,
            router.subscribe("footprint@127.0.0.1", Some("pbx-tag")),
            Box::new(|_| {}),
            receiver,
        );
        assert!(
            std::mem::size_of_val(&inbound) <= 4096,
            "inbound call task: {} bytes",
            std::mem::size_of_val(&inbound)
        );

        let (_commands, receiver) = tokio::sync::mpsc::unbounded_channel();
        let outbound = super::run_outbound(
            dialogs,
            rsipstack::dialog::invitation::InviteOption::default(),
            router.subscribe("ours@127.0.0.1", None),
            Box::new(|_| {}),
            receiver,
        );
        assert!(
            std::mem::size_of_val(&outbound) <= 2560,
            "outbound call task: {} bytes",
            std::mem::size_of_val(&outbound)
        );
        cancel.cancel();
    }
}

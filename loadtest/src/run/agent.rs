//! One simulated agent: a WebSocket session that places one call per ticket and reports how
//! each went.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Active, AgentMsg, Ticket};
use crate::browser::{CallEvent, CallOptions, SimBrowser, SimCall};
use crate::clock;
use crate::config::RunConfig;
use crate::media::MediaStats;
use crate::{Error, MediaEnd};

/// How long the last echoes may take to come back after we stop sending.
const DRAIN: Duration = Duration::from_secs(1);
/// How long `call_ended` may take after our hangup.
const HANGUP_CONFIRM: Duration = Duration::from_secs(3);
/// Per-request timeout of an agent's WebSocket (hello, call, hangup).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `register` and waits for `registered`; a `registration_failed` is an error.
pub(crate) async fn register(browser: &mut SimBrowser) -> crate::Result<()> {
    let request = signaling::ClientMessage::Register {
        request_id: browser.next_request_id(),
    };
    browser.request(&request, "register").await?;
    let reply = browser
        .wait_for("registered", |m| {
            matches!(
                m,
                signaling::ServerMessage::Registered(_)
                    | signaling::ServerMessage::RegistrationFailed(_)
            )
        })
        .await?;
    match reply {
        signaling::ServerMessage::Registered(_) => Ok(()),
        other => Err(Error::Unexpected(Box::new(other))),
    }
}

/// How one call ended, from the load generator's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// Answered, media connected, held for the whole hold time, hung up by us.
    Completed,
    /// Established (answered, media connected) but ended before the hold time was over; the
    /// reason is e.g. `ended:media_timeout` (callgate's cause) or `duration_limit`.
    EndedEarly(String),
    /// Never established; the reason is e.g. `refused:no_common_codec`, `ended:busy`,
    /// `setup_timeout`, `media_connect_timeout`, `websocket`.
    Failed(String),
    /// Handed to an agent only after the run was stopped; never requested.
    NotStarted,
}

/// Everything measured about one call.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// How it ended.
    pub result: CallResult,
    /// `call` request sent → `call_answered` received.
    pub setup: Option<Duration>,
    /// `call` request sent → ICE+DTLS connected on our side.
    pub media_connect: Option<Duration>,
    /// Established → hung up (or ended): what counts towards call-minutes.
    pub talk: Duration,
    /// Final media statistics (after the last echoes were awaited), if the call got a peer.
    pub media: Option<MediaStats>,
    /// Our hangup was acknowledged but no `call_ended` followed in time.
    pub hangup_unconfirmed: bool,
    /// How late the call was requested relative to its slot in the schedule.
    pub start_lag: Duration,
}

impl CallOutcome {
    fn new(result: CallResult, start_lag: Duration) -> CallOutcome {
        CallOutcome {
            result,
            setup: None,
            media_connect: None,
            talk: Duration::ZERO,
            media: None,
            hangup_unconfirmed: false,
            start_lag,
        }
    }
}

/// A simulated agent and its channels.
pub(crate) struct Agent {
    index: u32,
    config: Arc<RunConfig>,
    tickets: mpsc::Receiver<Ticket>,
    idle: mpsc::UnboundedSender<AgentMsg>,
    outcomes: mpsc::UnboundedSender<CallOutcome>,
    active: Arc<Active>,
    cancel: CancellationToken,
    connect_slots: Arc<Semaphore>,
}

/// Why a step of the call flow did not go on.
enum Stop {
    /// The call failed or ended early (already recorded in the outcome).
    Call,
    /// The WebSocket is unusable: the agent is lost.
    Agent(String),
}

/// What came of waiting for a call event.
enum Wait {
    Event(CallEvent),
    Error(Error),
    TimedOut,
    Cancelled,
}

impl Agent {
    #[allow(
        clippy::too_many_arguments,
        reason = "plain wiring from the run, used once"
    )]
    pub(crate) fn new(
        index: u32,
        config: Arc<RunConfig>,
        tickets: mpsc::Receiver<Ticket>,
        idle: mpsc::UnboundedSender<AgentMsg>,
        outcomes: mpsc::UnboundedSender<CallOutcome>,
        active: Arc<Active>,
        cancel: CancellationToken,
        connect_slots: Arc<Semaphore>,
    ) -> Agent {
        Agent {
            index,
            config,
            tickets,
            idle,
            outcomes,
            active,
            cancel,
            connect_slots,
        }
    }

    /// Connects, then places a call per ticket until the tickets run out.
    pub(crate) async fn run(mut self) {
        let mut browser = match self.connect().await {
            Ok(browser) => browser,
            Err(reason) => {
                let _ = self.idle.send(AgentMsg::Lost(reason));
                return;
            }
        };
        if self.idle.send(AgentMsg::Idle(self.index)).is_err() {
            return;
        }
        let mut calls_on_this_connection = 0u64;
        while let Some(ticket) = self.tickets.recv().await {
            if self
                .config
                .reconnect_every
                .is_some_and(|every| calls_on_this_connection >= every)
                && !self.cancel.is_cancelled()
            {
                // Registration churn: leave (unregistering first) and come back.
                self.leave(&mut browser).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), browser.close()).await;
                browser = match self.connect().await {
                    Ok(browser) => browser,
                    Err(reason) => {
                        let _ = self.outcomes.send(CallOutcome::new(
                            CallResult::Failed(format!("reconnect:{reason}")),
                            Duration::ZERO,
                        ));
                        let _ = self.idle.send(AgentMsg::Lost(reason));
                        return;
                    }
                };
                calls_on_this_connection = 0;
            }
            calls_on_this_connection += 1;
            let start_lag = clock::now().saturating_duration_since(ticket.due);
            if self.cancel.is_cancelled() {
                let _ = self
                    .outcomes
                    .send(CallOutcome::new(CallResult::NotStarted, start_lag));
                continue;
            }
            let mut outcome = CallOutcome::new(CallResult::Completed, start_lag);
            let flow = self.place_call(&mut browser, &mut outcome).await;
            tracing::debug!(agent = self.index, call = ticket.index, result = ?outcome.result, "call done");
            let _ = self.outcomes.send(outcome);
            if let Err(Stop::Agent(reason)) = flow {
                let _ = self.idle.send(AgentMsg::Lost(reason));
                return;
            }
            if self.idle.send(AgentMsg::Idle(self.index)).is_err() {
                break;
            }
        }
        self.leave(&mut browser).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), browser.close()).await;
    }

    /// Unregisters before the WebSocket closes (when registered), so the churn exercises the
    /// explicit path; errors are ignored (closing unregisters too).
    async fn leave(&self, browser: &mut SimBrowser) {
        if !self.config.register {
            return;
        }
        let request = signaling::ClientMessage::Unregister {
            request_id: browser.next_request_id(),
        };
        if browser.request(&request, "unregister").await.is_ok() {
            let _ = browser
                .wait_for("unregistered", |m| {
                    matches!(m, signaling::ServerMessage::Unregistered(_))
                })
                .await;
        }
    }

    async fn connect(&self) -> Result<SimBrowser, String> {
        let _slot = tokio::select! {
            slot = self.connect_slots.acquire() => slot.map_err(|_| "shutdown".to_string())?,
            () = self.cancel.cancelled() => return Err("duration_limit".into()),
        };
        let extension = (u64::from(self.config.extension_base) + u64::from(self.index)).to_string();
        let connecting = async {
            let mut browser = SimBrowser::connect_trusting(
                self.config.url.as_str(),
                self.config.ca_pem.as_deref(),
            )
            .await?;
            browser.set_timeout(REQUEST_TIMEOUT);
            browser.hello(&extension, &self.config.password).await?;
            if self.config.register {
                register(&mut browser).await?;
            }
            Ok::<_, Error>(browser)
        };
        tokio::select! {
            result = connecting => result.map_err(|e| match e.code() {
                Some(code) => format!("hello_refused:{code}"),
                None => classify(&e).0,
            }),
            () = self.cancel.cancelled() => Err("duration_limit".into()),
        }
    }

    /// The whole life of one call; fills `outcome` as it goes.
    async fn place_call(
        &self,
        browser: &mut SimBrowser,
        outcome: &mut CallOutcome,
    ) -> Result<(), Stop> {
        let config = &self.config;
        let options = CallOptions {
            start_paused: true,
            rtt_window: Some(self.active.rtt.clone()),
            pacer: self.active.pacer.clone(),
            ..CallOptions::default()
        };
        let call = match browser.call_with(&config.to, options).await {
            Ok(call) => call,
            Err(e) => {
                if let Error::BadAnswer { call_id, .. } = &e {
                    let _ = browser.hangup(call_id).await;
                }
                return Err(fail(outcome, &e));
            }
        };
        let call_id = call.call_id().to_string();
        let requested_at = call.requested_at();

        // Until answered.
        let setup_deadline = requested_at + config.setup_timeout;
        let answered_at = loop {
            match self.wait_event(browser, &call_id, setup_deadline).await {
                Wait::Event(CallEvent::Answered(_)) => {
                    break browser.last_event_at().unwrap_or_else(clock::now);
                }
                Wait::Event(CallEvent::Ended(ended)) => {
                    outcome.result = CallResult::Failed(format!("ended:{}", ended.cause));
                    outcome.media = Some(call.stop().await);
                    return Err(Stop::Call);
                }
                Wait::Event(_) => continue,
                Wait::Error(e) => {
                    let stop = fail(outcome, &e);
                    outcome.media = Some(call.stop().await);
                    return Err(stop);
                }
                Wait::TimedOut => {
                    outcome.result = CallResult::Failed("setup_timeout".into());
                    return self.abandon(browser, call, outcome).await;
                }
                Wait::Cancelled => {
                    outcome.result = CallResult::Failed("duration_limit".into());
                    return self.abandon(browser, call, outcome).await;
                }
            }
        };
        outcome.setup = Some(answered_at.saturating_duration_since(requested_at));

        // Until ICE+DTLS are up on our side.
        let connect_left = setup_deadline.saturating_duration_since(clock::now());
        let connected = tokio::select! {
            r = call.wait_connected(connect_left.max(Duration::from_millis(1))) => Some(r),
            () = self.cancel.cancelled() => None,
        };
        match connected {
            Some(Ok(_)) => {}
            Some(Err(Error::Timeout { .. })) => {
                outcome.result = CallResult::Failed("media_connect_timeout".into());
                return self.abandon(browser, call, outcome).await;
            }
            Some(Err(_)) => {
                let why = media_end(&call.stats());
                outcome.result = CallResult::Failed(format!("media:{why}"));
                return self.abandon(browser, call, outcome).await;
            }
            None => {
                outcome.result = CallResult::Failed("duration_limit".into());
                return self.abandon(browser, call, outcome).await;
            }
        }
        outcome.media_connect = call
            .stats()
            .connected_at
            .map(|at| at.saturating_duration_since(requested_at));

        // Established: talk for the hold time.
        self.active.up();
        let established_at = clock::now();
        let result = self
            .talk(browser, &call, &call_id, answered_at + config.hold)
            .await;
        let flow = match result {
            Ok(()) => self.hang_up(browser, &call, &call_id, outcome).await,
            Err((reason, stop)) => {
                outcome.result = CallResult::EndedEarly(reason.clone());
                if reason == "duration_limit" {
                    // Our own doing: hang up properly, the call itself is fine.
                    self.hang_up(browser, &call, &call_id, outcome).await
                } else {
                    // The call is already over on the gateway's side, or the socket broke.
                    let _ = call.stop_sending().await;
                    stop
                }
            }
        };
        outcome.talk = clock::now().saturating_duration_since(established_at);
        // The call is over at the gateway, which has dropped its peer: dropping ours without
        // DTLS close_notify sends nothing more, so callgate's `unknown_source` counter is left
        // to real stray packets.
        outcome.media = Some(call.stats());
        drop(call);
        self.active.down();
        flow
    }

    /// Sends audio until `until`, watching for the call ending on its own.
    async fn talk(
        &self,
        browser: &mut SimBrowser,
        call: &SimCall,
        call_id: &str,
        until: Instant,
    ) -> Result<(), (String, Result<(), Stop>)> {
        if call.start_sending().await.is_err() {
            let why = media_end(&call.stats());
            return Err((format!("media:{why}"), Err(Stop::Call)));
        }
        loop {
            let media_ended = call.wait_for(
                until.saturating_duration_since(clock::now()),
                "the media to end",
                |s| s.ended.is_some(),
            );
            let step = tokio::select! {
                w = self.wait_event(browser, call_id, until) => Some(w),
                r = media_ended => match r {
                    Ok(_) => None,
                    // Timed out: the hold is over, the media is fine.
                    Err(Error::Timeout { .. }) => Some(Wait::TimedOut),
                    Err(_) => None,
                },
            };
            match step {
                Some(Wait::TimedOut) => return Ok(()),
                Some(Wait::Cancelled) => return Err(("duration_limit".into(), Ok(()))),
                Some(Wait::Event(CallEvent::Ended(ended))) => {
                    return Err((format!("ended:{}", ended.cause), Err(Stop::Call)));
                }
                Some(Wait::Event(_)) => continue,
                Some(Wait::Error(e)) => {
                    let (reason, agent_lost) = classify(&e);
                    let stop = if agent_lost {
                        Stop::Agent(reason.clone())
                    } else {
                        Stop::Call
                    };
                    return Err((reason, Err(stop)));
                }
                None => {
                    let why = media_end(&call.stats());
                    // The gateway's `call_ended` usually follows: read it for the cause.
                    let grace = clock::now() + Duration::from_millis(500);
                    if let Wait::Event(CallEvent::Ended(ended)) =
                        self.wait_event(browser, call_id, grace).await
                    {
                        return Err((format!("ended:{}", ended.cause), Err(Stop::Call)));
                    }
                    let _ = browser.hangup(call_id).await;
                    return Err((format!("media:{why}"), Err(Stop::Call)));
                }
            }
        }
    }

    /// Stops sending, waits for the last echoes, hangs up and waits for `call_ended`.
    async fn hang_up(
        &self,
        browser: &mut SimBrowser,
        call: &SimCall,
        call_id: &str,
        outcome: &mut CallOutcome,
    ) -> Result<(), Stop> {
        if let Ok(sent) = call.stop_sending().await {
            let _ = call
                .wait_for(DRAIN, "the last echoes", |s| s.frames_received >= sent)
                .await;
        }
        if let Err(e) = browser.hangup(call_id).await {
            let (reason, agent_lost) = classify(&e);
            // `unknown_call`: the gateway ended it meanwhile; its call_ended is on its way.
            if agent_lost {
                return Err(Stop::Agent(reason));
            }
        }
        let until = clock::now() + HANGUP_CONFIRM;
        loop {
            match self.wait_event_uncancellable(browser, call_id, until).await {
                Wait::Event(CallEvent::Ended(_)) => return Ok(()),
                Wait::Event(_) => continue,
                Wait::Error(e) => {
                    let (reason, agent_lost) = classify(&e);
                    outcome.hangup_unconfirmed = true;
                    return if agent_lost {
                        Err(Stop::Agent(reason))
                    } else {
                        Ok(())
                    };
                }
                Wait::TimedOut | Wait::Cancelled => {
                    outcome.hangup_unconfirmed = true;
                    return Ok(());
                }
            }
        }
    }

    /// Gives up on a call that is not established: hang up (CANCEL or BYE at the gateway),
    /// stop its peer.
    async fn abandon(
        &self,
        browser: &mut SimBrowser,
        call: SimCall,
        outcome: &mut CallOutcome,
    ) -> Result<(), Stop> {
        let hangup = tokio::time::timeout(REQUEST_TIMEOUT, browser.hangup(call.call_id())).await;
        outcome.media = Some(call.stop().await);
        match hangup {
            Ok(Err(e)) if classify(&e).1 => Err(Stop::Agent(classify(&e).0)),
            _ => Err(Stop::Call),
        }
    }

    /// The next event about `call_id` before `until`, unless the run is stopped first.
    async fn wait_event(&self, browser: &mut SimBrowser, call_id: &str, until: Instant) -> Wait {
        tokio::select! {
            w = self.wait_event_uncancellable(browser, call_id, until) => w,
            () = self.cancel.cancelled() => Wait::Cancelled,
        }
    }

    /// The next event about `call_id` before `until`.
    async fn wait_event_uncancellable(
        &self,
        browser: &mut SimBrowser,
        call_id: &str,
        until: Instant,
    ) -> Wait {
        loop {
            if clock::now() >= until {
                return Wait::TimedOut;
            }
            match tokio::time::timeout_at(until.into(), browser.next_event_for(call_id)).await {
                Err(_) => return Wait::TimedOut,
                Ok(Ok(event)) => return Wait::Event(event),
                // The browser's own per-read timeout; our deadline decides.
                Ok(Err(Error::Timeout { .. })) => continue,
                Ok(Err(e)) => return Wait::Error(e),
            }
        }
    }
}

/// Records a failure from `e` and says whether the agent survives it.
fn fail(outcome: &mut CallOutcome, e: &Error) -> Stop {
    let (reason, agent_lost) = classify(e);
    outcome.result = CallResult::Failed(reason.clone());
    if agent_lost {
        Stop::Agent(reason)
    } else {
        Stop::Call
    }
}

/// A stable reason for an error of the simulated browser, and whether its WebSocket is gone.
pub(crate) fn classify(e: &Error) -> (String, bool) {
    match e {
        Error::Refused(m) => (format!("refused:{}", m.code), false),
        Error::Timeout { .. } => ("no_reply".into(), false),
        Error::Closed { .. } => ("websocket_closed".into(), true),
        Error::WebSocket(_) => ("websocket_error".into(), true),
        Error::BadAnswer { .. } => ("bad_sdp_answer".into(), false),
        Error::IncompleteAck(_) | Error::Unexpected(_) => ("protocol_error".into(), false),
        Error::BadFrame(_) | Error::BinaryFrame => ("protocol_error".into(), true),
        // Our own side failed: not the gateway's fault, and reported as such.
        Error::Rtc(_) | Error::Io(_) | Error::InvalidDigit(_) | Error::MediaStopped(_) => {
            ("generator_error".into(), false)
        }
    }
}

/// A short name for why a call's media ended.
fn media_end(stats: &MediaStats) -> &'static str {
    match &stats.ended {
        Some(MediaEnd::RemoteClosed) => "remote_closed",
        Some(MediaEnd::IceDisconnected) => "ice_disconnected",
        Some(MediaEnd::Failed(_)) => "failed",
        Some(MediaEnd::Stopped | MediaEnd::Dropped) => "stopped",
        None => "not_connected",
    }
}

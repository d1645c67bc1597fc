//! One simulated call's media: a str0m peer on its own UDP socket, driven by one tokio task.
//!
//! The task follows str0m's run loop (drain `poll_output` to a timeout after every single
//! mutation, then wait for the socket, the timeout, the next frame slot or a command). It sleeps
//! between events; there is no polling: 40 idle calls cost ~7 ms of CPU per second in total.
//! Per call it holds one `Rtc` (most of the ~75 KB a call costs), one socket, a 2 KB receive
//! buffer and the ~2 KB statistics.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::{Codec, CodecExtra};
use str0m::media::{Frequency, MediaData, MediaTime, Mid, Pt, TelephoneEvent};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::pacer::{FramePacer, LEAD};
use crate::clock;
use crate::media::{
    FRAME_INTERVAL, FrameChecker, G711, MediaEnd, MediaStats, SAMPLES_PER_FRAME, dtmf_digit,
    dtmf_event, encode_frame,
};
use crate::{Error, Result};

/// Most frames sent in one wake-up to catch up after the task was scheduled late; beyond
/// that slots are skipped (and counted) rather than bursting.
const MAX_CATCH_UP: u64 = 3;
/// Longest sleep between two looks at the clock, whatever str0m's next timeout says.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Most consecutive already-due wake-ups handled without yielding to the socket and commands.
const MAX_DUE_STREAK: u32 = 8;
/// How long a graceful stop may take to flush DTLS close_notify.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// Default length of one DTMF tone.
const DTMF_DURATION: Duration = Duration::from_millis(100);
/// Volume of our DTMF tones in -dBm0 (RFC 4733 §2.3.4); 10 is what Chrome sends.
const DTMF_VOLUME: u8 = 10;
/// UDP receive buffer; larger than any datagram str0m or a gateway sends (MTU ~1200).
const RECV_BUFFER: usize = 2048;

/// A call placed by a [`crate::SimBrowser`]: its identity, its SDP and its running media.
///
/// Dropping it ends the media task at once (without DTLS close_notify); [`SimCall::stop`]
/// closes DTLS politely and returns the final statistics.
pub struct SimCall {
    call_id: String,
    pub(crate) call_uuid: Option<String>,
    offer_sdp: String,
    answer_sdp: String,
    local_addr: SocketAddr,
    codec: Option<G711>,
    requested_at: Instant,
    commands: mpsc::Sender<Command>,
    stats: watch::Receiver<MediaStats>,
    task: JoinHandle<()>,
}

/// Requests from the [`SimCall`] handle to its task.
enum Command {
    Dtmf {
        event: u8,
        duration: Duration,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Start sending audio (after `start_paused`).
    StartSending,
    /// Send no more audio; replies with the number of frames sent.
    StopSending(oneshot::Sender<u64>),
    Stop,
}

/// Everything [`SimCall::start`] needs: the negotiated peer and where it lives.
pub(crate) struct CallSetup {
    pub call_id: String,
    pub call_uuid: Option<String>,
    pub offer_sdp: String,
    pub answer_sdp: String,
    pub rtc: Rtc,
    pub mid: Mid,
    pub socket: UdpSocket,
    pub local_addr: SocketAddr,
    pub send: Option<(Pt, G711)>,
    pub frame_limit: Option<u64>,
    pub start_paused: bool,
    pub rtt_window: Option<std::sync::Arc<crate::media::RttWindow>>,
    pub started_at: Instant,
    /// When the `call` (or `answer`) request was sent.
    pub requested_at: Instant,
    /// Audio frames leave through the run's pacer, at their slot instants.
    pub paced: Option<PacedSend>,
}

/// A paced call's way out: the run's pacer and a second handle on the call's socket that the
/// pacing thread sends from.
pub(crate) struct PacedSend {
    pub pacer: Arc<FramePacer>,
    pub socket: Arc<std::net::UdpSocket>,
}

impl SimCall {
    /// Spawns the media task for a negotiated peer.
    pub(crate) fn start(setup: CallSetup) -> SimCall {
        let mut stats = MediaStats::new(setup.started_at);
        stats.codec = setup.send.map(|(_, codec)| codec);
        let (stats_tx, stats_rx) = watch::channel(stats);
        let (commands_tx, commands_rx) = mpsc::channel(4);
        let task = MediaTask {
            rtc: setup.rtc,
            socket: setup.socket,
            local_addr: setup.local_addr,
            mid: setup.mid,
            send: setup.send.map(|(pt, _)| pt),
            frame_limit: setup.frame_limit,
            paused: setup.start_paused,
            send_stopped: false,
            started_at: setup.started_at,
            media_start: None,
            next_slot: 0,
            next_seq: 0,
            checker: FrameChecker::default(),
            rtt_window: setup.rtt_window,
            paced: setup.paced,
            paced_slots: VecDeque::new(),
            phase: random_phase(),
            last_dtmf_end: None,
            stats: stats_tx,
            commands: commands_rx,
            stopping: None,
            remote_closed: false,
            ice_disconnected: false,
        };
        let handle = tokio::spawn(task.run());
        SimCall {
            call_id: setup.call_id,
            call_uuid: setup.call_uuid,
            offer_sdp: setup.offer_sdp,
            answer_sdp: setup.answer_sdp,
            local_addr: setup.local_addr,
            codec: setup.send.map(|(_, codec)| codec),
            requested_at: setup.requested_at,
            commands: commands_tx,
            stats: stats_rx,
            task: handle,
        }
    }

    /// The gateway's id for this call, used by `hangup` and by every event about it.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The call UUID the gateway sent to the PBX (ours, or the one it generated).
    pub fn call_uuid(&self) -> Option<&str> {
        self.call_uuid.as_deref()
    }

    /// The SDP offer we sent, for assertions on what the gateway was given.
    pub fn offer_sdp(&self) -> &str {
        &self.offer_sdp
    }

    /// The gateway's SDP answer, for assertions on what it chose (`a=ice-lite`, codecs...).
    pub fn answer_sdp(&self) -> &str {
        &self.answer_sdp
    }

    /// Our UDP address: the one address the gateway's media port should see for this call.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The G.711 codec we send with, `None` if the answer left no PCMU/PCMA (then we only
    /// receive).
    pub fn codec(&self) -> Option<G711> {
        self.codec
    }

    /// When the request that created the call (`call`, or `answer` for an inbound call) was
    /// sent: the start of the call's setup latency as a browser sees it.
    pub fn requested_at(&self) -> Instant {
        self.requested_at
    }

    /// Starts sending audio on a call placed with [`CallOptions::start_paused`]: the first
    /// frame leaves at once if ICE and DTLS are up, otherwise as soon as they are. Frame slots
    /// count from then, so the pause is not reported as `skipped_slots`.
    ///
    /// [`CallOptions::start_paused`]: crate::CallOptions::start_paused
    pub async fn start_sending(&self) -> Result<()> {
        self.commands
            .send(Command::StartSending)
            .await
            .map_err(|_| self.stopped())
    }

    /// Stops sending audio (the call keeps receiving) and returns how many frames were sent:
    /// the final `frames_sent`, so a caller can wait for the last echoes before hanging up.
    pub async fn stop_sending(&self) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::StopSending(reply))
            .await
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())
    }

    /// A snapshot of the media statistics so far.
    pub fn stats(&self) -> MediaStats {
        self.stats.borrow().clone()
    }

    /// Waits until ICE and DTLS are up; returns the time it took since the call was prepared.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Duration> {
        let stats = self
            .wait_for(timeout, "ICE+DTLS connected", |s| s.connected_at.is_some())
            .await?;
        Ok(stats.time_to_connect().unwrap_or_default())
    }

    /// Waits until at least `n` distinct intact frames came back.
    pub async fn wait_frames(&self, n: u64, timeout: Duration) -> Result<MediaStats> {
        self.wait_for(timeout, "frames to come back", |s| s.frames_received >= n)
            .await
    }

    /// Waits until `done` holds for the statistics (checked at every change); fails at once
    /// if the media task ends first, so a dead call does not cost the whole timeout.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &'static str,
        mut done: impl FnMut(&MediaStats) -> bool,
    ) -> Result<MediaStats> {
        let mut rx = self.stats.clone();
        let waited = tokio::time::timeout(timeout, async {
            let outcome = rx
                .wait_for(|s| done(s) || s.ended.is_some())
                .await
                .map(|s| s.clone());
            // An error means the task is gone without publishing an end; report what we have.
            outcome.unwrap_or_else(|_| {
                let mut s = rx.borrow().clone();
                s.ended
                    .get_or_insert(MediaEnd::Failed("media task vanished".into()));
                s
            })
        })
        .await;
        match waited {
            Ok(stats) if done(&stats) => Ok(stats),
            Ok(stats) => Err(Error::MediaStopped(format!(
                "{:?} while waiting for {what}",
                stats.ended
            ))),
            Err(_) => Err(Error::Timeout {
                after: timeout,
                what,
            }),
        }
    }

    /// Sends one DTMF digit (`0-9 * # A-D`) as RFC 4733 telephone-events, 100 ms long.
    ///
    /// Returns once str0m has queued the event; its packets then go out over the tone's
    /// duration. Space digits at least 150 ms apart (str0m enforces a 50 ms pause).
    pub async fn send_dtmf(&self, digit: char) -> Result<()> {
        self.send_dtmf_for(digit, DTMF_DURATION).await
    }

    /// Sends one DTMF digit lasting `duration` (40 ms to 6 s).
    pub async fn send_dtmf_for(&self, digit: char, duration: Duration) -> Result<()> {
        let event = dtmf_event(digit).ok_or(Error::InvalidDigit(digit))?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Dtmf {
                event,
                duration,
                reply,
            })
            .await
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// Closes the peer (RTCP BYE, DTLS close_notify), waits for the task to finish and returns
    /// the final statistics.
    pub async fn stop(self) -> MediaStats {
        // A full or closed channel means the task is already on its way out.
        let _ = self.commands.try_send(Command::Stop);
        let _ = tokio::time::timeout(STOP_GRACE * 2, self.task).await;
        self.stats.borrow().clone()
    }

    fn stopped(&self) -> Error {
        let why = self.stats.borrow().ended.clone();
        Error::MediaStopped(format!("{why:?}"))
    }
}

/// The task owning one call's `Rtc` and socket.
struct MediaTask {
    rtc: Rtc,
    socket: UdpSocket,
    local_addr: SocketAddr,
    mid: Mid,
    /// Payload type to send audio with; `None` when only receiving.
    send: Option<Pt>,
    frame_limit: Option<u64>,
    /// No audio until `Command::StartSending`.
    paused: bool,
    /// No more audio after `Command::StopSending`.
    send_stopped: bool,
    started_at: Instant,
    /// Set on `Event::Connected` (or on `StartSending` after a pause): frame slot 0 is at
    /// this instant.
    media_start: Option<Instant>,
    next_slot: u64,
    next_seq: u32,
    checker: FrameChecker,
    /// The run's shared window of round trips, if any.
    rtt_window: Option<std::sync::Arc<crate::media::RttWindow>>,
    /// Audio frames go through the pacer (prepared [`LEAD`] ahead of their slot).
    paced: Option<PacedSend>,
    /// Slot instants of the frames written to str0m and not yet transmitted, oldest first.
    paced_slots: VecDeque<Instant>,
    /// Where in the frame interval this call's frames fall (drawn at random, as two real
    /// calls' are independent: calls started at 50 per second would otherwise all send in
    /// the same instant of every 20 ms).
    phase: Duration,
    /// RTP time of the last DTMF event counted, to collapse its repeated end packets.
    last_dtmf_end: Option<u64>,
    stats: watch::Sender<MediaStats>,
    commands: mpsc::Receiver<Command>,
    /// Deadline of a graceful stop in progress.
    stopping: Option<Instant>,
    remote_closed: bool,
    ice_disconnected: bool,
}

impl MediaTask {
    async fn run(mut self) {
        let end = self.drive().await;
        self.stats.send_modify(|s| s.ended = Some(end));
    }

    /// The run loop; returns why it stopped.
    async fn drive(&mut self) -> MediaEnd {
        let mut buf = vec![0u8; RECV_BUFFER];
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        let mut due_streak = 0u32;
        loop {
            let rtc_deadline = match self.drain() {
                Ok(at) => at,
                Err(e) => return MediaEnd::Failed(e),
            };
            if let Some(end) = self.finished() {
                return end;
            }
            let now = clock::now();
            let mut wake = rtc_deadline.min(now + MAX_SLEEP);
            if let Some(at) = self.next_frame_at() {
                wake = wake.min(at);
            }
            if let Some(at) = self.stopping {
                wake = wake.min(at);
            }
            // A deadline already due is handled now: a tokio sleep rounds up to the next
            // millisecond tick, and str0m asks for an immediate timeout after every write
            // (the packet leaves only on the next `Input::Timeout`), so going through the
            // timer would add ~1 ms to every frame's round trip. The streak bound keeps the
            // socket and commands served should str0m keep asking.
            if wake <= now && due_streak < MAX_DUE_STREAK {
                due_streak += 1;
                if let Err(e) = self.on_wake(now) {
                    return MediaEnd::Failed(e);
                }
                continue;
            }
            due_streak = 0;
            sleep.as_mut().reset(wake.into());

            tokio::select! {
                command = self.commands.recv(), if self.stopping.is_none() => match command {
                    None => return MediaEnd::Dropped,
                    Some(Command::Stop) => {
                        if let Err(e) = self.rtc.close() {
                            return MediaEnd::Failed(e.to_string());
                        }
                        self.stopping = Some(clock::now() + STOP_GRACE);
                    }
                    Some(Command::Dtmf { event, duration, reply }) => {
                        let result = self.start_dtmf(event, duration);
                        let _ = reply.send(result);
                    }
                    Some(Command::StartSending) => {
                        if self.paused {
                            self.paused = false;
                            // Nothing was sent yet: slot 0 is now (or at Connected).
                            if self.media_start.is_some() {
                                self.media_start = Some(self.first_slot(clock::now()));
                                self.next_slot = 0;
                            }
                        }
                    }
                    Some(Command::StopSending(reply)) => {
                        self.send_stopped = true;
                        let _ = reply.send(self.stats.borrow().frames_sent);
                    }
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => {
                        let now = clock::now();
                        let data = buf.get(..n).unwrap_or_default();
                        // Datagrams str0m cannot demultiplex (not STUN/DTLS/RTP/RTCP) are
                        // dropped here, as a browser would.
                        if let Ok(receive) =
                            Receive::new(Protocol::Udp, source, self.local_addr, data)
                            && let Err(e) = self.rtc.handle_input(Input::Receive(now, receive))
                        {
                            return MediaEnd::Failed(e.to_string());
                        }
                    }
                    // ICMP port unreachable surfaces as ConnectionRefused on Linux; ICE
                    // consent will notice a gone gateway on its own.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                    Err(e) => return MediaEnd::Failed(format!("udp receive: {e}")),
                },
                () = &mut sleep => {
                    if let Err(e) = self.on_wake(clock::now()) {
                        return MediaEnd::Failed(e);
                    }
                }
            }
        }
    }

    /// Why the loop should stop now, if it should.
    fn finished(&self) -> Option<MediaEnd> {
        if !self.rtc.is_alive() {
            return Some(if self.stopping.is_some() {
                MediaEnd::Stopped
            } else if self.remote_closed {
                MediaEnd::RemoteClosed
            } else {
                MediaEnd::Failed("str0m peer died".into())
            });
        }
        if self.stopping.is_some_and(|at| clock::now() >= at) {
            return Some(MediaEnd::Stopped);
        }
        if self.ice_disconnected {
            return Some(MediaEnd::IceDisconnected);
        }
        None
    }

    /// Polls str0m until it only has a timeout left: sends datagrams, handles events.
    fn drain(&mut self) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(t) => {
                    let paced_audio = self
                        .paced
                        .as_ref()
                        .filter(|_| self.send.is_some_and(|pt| is_rtp_with(&t.contents, pt)));
                    if let Some(paced) = paced_audio {
                        let slot = next_paced_slot(&mut self.paced_slots, clock::now());
                        let handed = slot.map(|slot| {
                            paced
                                .pacer
                                .send_at(slot, &paced.socket, t.destination, &t.contents)
                        });
                        if handed.is_none() {
                            paced.pacer.count_unpaced();
                        }
                        let sent = handed.unwrap_or_else(|| {
                            self.socket.try_send_to(&t.contents, t.destination).is_ok()
                        });
                        if !sent {
                            self.stats.send_modify(|s| s.send_errors += 1);
                        }
                    } else if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                        self.stats.send_modify(|s| s.send_errors += 1);
                    }
                }
                Output::Event(event) => self.on_event(event),
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                let now = clock::now();
                self.media_start = Some(self.first_slot(now));
                self.stats.send_modify(|s| s.connected_at = Some(now));
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.ice_disconnected = true;
            }
            Event::MediaData(data) => self.on_media(&data),
            Event::MediaEgressStats(stats) => {
                if let Some(rtt) = stats.rtt {
                    let us = rtt.as_micros() as u64;
                    self.stats.send_modify(|s| s.peer_rtt_us = Some(us));
                }
            }
            Event::Closed => self.remote_closed = true,
            _ => {}
        }
    }

    fn on_media(&mut self, data: &MediaData) {
        let codec = data.params.spec().codec;
        if codec.is_tele() {
            if let CodecExtra::Tele(report) = data.codec_extra
                && report.end
                && self.last_dtmf_end != Some(data.time.numer())
            {
                self.last_dtmf_end = Some(data.time.numer());
                let digit = dtmf_digit(report.event).unwrap_or('?');
                self.stats.send_modify(|s| s.push_dtmf(digit));
            }
            return;
        }
        if !matches!(codec, Codec::PCMU | Codec::PCMA) {
            self.stats.send_modify(|s| s.other_payload += 1);
            return;
        }
        // The packet's arrival time, as we fed it to str0m: no second clock read.
        let received_us = micros_since(self.started_at, data.network_time);
        let checker = &mut self.checker;
        let mut transit = None;
        self.stats
            .send_modify(|s| transit = checker.check(s, &data.data, received_us));
        if let (Some(window), Some(us)) = (&self.rtt_window, transit) {
            window.record(us);
        }
    }

    /// When the next audio frame is due, if we are sending.
    fn next_frame_at(&self) -> Option<Instant> {
        let start = self.media_start?;
        self.send?;
        if self.paused || self.limit_reached() || self.stopping.is_some() {
            return None;
        }
        let slot = start + slot_offset(self.next_slot);
        Some(slot.checked_sub(self.lead()).unwrap_or(slot))
    }

    /// How far ahead of its slot a frame is prepared: [`LEAD`] when paced.
    fn lead(&self) -> Duration {
        if self.paced.is_some() {
            LEAD
        } else {
            Duration::ZERO
        }
    }

    /// Slot 0 of a call whose media starts now: at the call's own phase of the frame
    /// interval, and at least the lead away when paced, so the first frame reaches the pacer
    /// in time too.
    fn first_slot(&self, now: Instant) -> Instant {
        now + self.lead() + self.phase
    }

    fn limit_reached(&self) -> bool {
        self.send_stopped
            || self
                .frame_limit
                .is_some_and(|limit| u64::from(self.next_seq) >= limit)
    }

    /// A timer fired: advance str0m's clock, then send any due frames.
    fn on_wake(&mut self, now: Instant) -> Result<(), String> {
        self.rtc
            .handle_input(Input::Timeout(now))
            .map_err(|e| e.to_string())?;
        self.drain()?;
        let (Some(start), Some(pt)) = (self.media_start, self.send) else {
            return Ok(());
        };
        // Paced frames are written ahead of their slot; the pacer sends them on time.
        let horizon = now + self.lead();
        if self.stopping.is_some()
            || self.paused
            || self.limit_reached()
            || horizon < start + slot_offset(self.next_slot)
        {
            return Ok(());
        }
        let due = (horizon - start).as_micros() as u64 / FRAME_INTERVAL.as_micros() as u64;
        if due >= self.next_slot + MAX_CATCH_UP {
            let skip = due + 1 - MAX_CATCH_UP - self.next_slot;
            self.next_slot += skip;
            self.stats.send_modify(|s| s.skipped_slots += skip);
        }
        while self.next_slot <= due && !self.limit_reached() {
            self.send_frame(now, start, pt)?;
            self.drain()?;
        }
        Ok(())
    }

    /// Writes the frame for `next_slot` (one mutation; the caller drains).
    fn send_frame(&mut self, now: Instant, start: Instant, pt: Pt) -> Result<(), String> {
        let slot = self.next_slot;
        self.next_slot += 1;
        let seq = self.next_seq;
        let wallclock = start + slot_offset(slot);
        // The send time the round trip is measured from: a paced frame leaves at its slot.
        let sent_at = if self.paced.is_some() { wallclock } else { now };
        let frame = encode_frame(seq, micros_since(self.started_at, sent_at));
        let rtp_time = MediaTime::new(slot * SAMPLES_PER_FRAME, Frequency::EIGHT_KHZ);
        let Some(writer) = self.rtc.writer(self.mid) else {
            return Err("audio m-line vanished".into());
        };
        match writer.write(pt, wallclock, rtp_time, Arc::<[u8]>::from(&frame[..])) {
            Ok(()) => {
                self.next_seq += 1;
                if self.paced.is_some() {
                    self.paced_slots.push_back(wallclock);
                }
                self.stats.send_modify(|s| s.frames_sent += 1);
            }
            Err(_) => self.stats.send_modify(|s| s.send_errors += 1),
        }
        Ok(())
    }

    /// Queues one RFC 4733 event through str0m's writer (one mutation; the loop drains).
    fn start_dtmf(&mut self, event: u8, duration: Duration) -> Result<()> {
        let Some(start) = self.media_start else {
            return Err(Error::Rtc("DTMF before ICE+DTLS connected".into()));
        };
        let Some(pt) = self.send else {
            return Err(Error::Rtc("DTMF needs a negotiated G.711 codec".into()));
        };
        let now = clock::now();
        // The event's RTP timestamp is "now" on the same 8 kHz clock as the audio frames.
        let samples = (now - start).as_micros() as u64 * 8 / 1_000;
        let rtp_time = MediaTime::new(samples, Frequency::EIGHT_KHZ);
        let writer = self
            .rtc
            .writer(self.mid)
            .ok_or_else(|| Error::Rtc("audio m-line vanished".into()))?;
        writer
            .telephone_event(TelephoneEvent {
                event,
                end: true,
                volume: DTMF_VOLUME,
                duration,
            })
            .write(pt, now, rtp_time, Vec::new())
            .map_err(|e| Error::Rtc(e.to_string()))?;
        self.stats.send_modify(|s| s.dtmf_sent += 1);
        Ok(())
    }
}

/// The slot of the audio frame str0m transmits now: the oldest written frame's, skipping
/// any more than half a frame interval old (str0m dropped that frame); `None` when there is
/// none, or when it is already due (then the datagram leaves at once).
fn next_paced_slot(slots: &mut VecDeque<Instant>, now: Instant) -> Option<Instant> {
    while let Some(&slot) = slots.front() {
        slots.pop_front();
        if slot + FRAME_INTERVAL / 2 >= now {
            return (slot > now).then_some(slot);
        }
    }
    None
}

/// Whether `datagram` is an (S)RTP packet of payload type `pt` (RFC 5761 §4: the second byte
/// of RTCP is 192–223; SRTP leaves the header in the clear).
fn is_rtp_with(datagram: &[u8], pt: Pt) -> bool {
    match datagram {
        [first, second, ..] => {
            (128..192).contains(first) && !(192..224).contains(second) && *second & 0x7f == *pt
        }
        _ => false,
    }
}

/// A uniformly random offset within one frame interval, to the microsecond.
fn random_phase() -> Duration {
    let interval_us = u64::try_from(FRAME_INTERVAL.as_micros()).unwrap_or(20_000);
    Duration::from_micros(rand::random::<u64>() % interval_us)
}

/// Offset of frame slot `slot` from the media start.
fn slot_offset(slot: u64) -> Duration {
    FRAME_INTERVAL * u32::try_from(slot).unwrap_or(u32::MAX)
}

/// Microseconds from `start` to `at` (0 if `at` is earlier).
fn micros_since(start: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(start).as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_audio_rtp_of_our_payload_type_is_paced() {
        let pcmu = Pt::from(0);
        // RTP, version 2, PT 0 with and without the marker bit.
        assert!(is_rtp_with(&[0x80, 0x00, 0, 1], pcmu));
        assert!(is_rtp_with(&[0x80, 0x80, 0, 1], pcmu));
        // Another payload type (telephone-event 101), RTCP (SR = 200), not RTP, too short.
        assert!(!is_rtp_with(&[0x80, 101, 0, 1], pcmu));
        assert!(!is_rtp_with(&[0x80, 200, 0, 1], pcmu));
        assert!(!is_rtp_with(&[0x16, 0xfe, 0xfd], pcmu));
        assert!(!is_rtp_with(&[0x80], pcmu));
    }

    #[test]
    fn a_transmitted_frame_takes_its_own_slot_and_skips_the_ones_str0m_dropped() {
        let now = clock::now();
        let ms = Duration::from_millis;
        // A frame str0m never transmitted (20 ms old), then the frame going out now, 6 ms
        // ahead of its slot, then the next one.
        let mut slots: VecDeque<Instant> = [now - ms(14), now + ms(6), now + ms(26)].into();
        assert_eq!(next_paced_slot(&mut slots, now), Some(now + ms(6)));
        assert_eq!(slots.len(), 1);
        // A frame whose slot has just passed (its task ran late) leaves at once.
        let mut slots: VecDeque<Instant> = [now - ms(2)].into();
        assert_eq!(next_paced_slot(&mut slots, now), None);
        assert!(slots.is_empty());
        assert_eq!(next_paced_slot(&mut VecDeque::new(), now), None);
    }

    #[test]
    fn phases_fall_within_one_frame_interval() {
        let phases: Vec<Duration> = (0..200).map(|_| random_phase()).collect();
        assert!(phases.iter().all(|&p| p < FRAME_INTERVAL));
        // Not all the same: 200 draws over 20,000 µs.
        let first = phases.first().copied();
        assert!(phases.iter().any(|&p| Some(p) != first));
    }
}

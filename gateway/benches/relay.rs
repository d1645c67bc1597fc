//! One relayed packet through a real bridge, in memory, in each direction:
//!
//! - `browser_to_sip`: an SRTP packet from the browser → SRTP unprotect, RTP parsing →
//!   payload-type map and sequence/timestamp rewrite → the plain RTP bytes for the PBX;
//! - `sip_to_browser`: a plain RTP packet from the PBX → source check, map and rewrite →
//!   RTP write and SRTP protect → the SRTP datagram for the browser.
//!
//! By default the bridge does the browser leg's SRTP itself with the keys of the DTLS
//! handshake (`webrtc.direct_srtp`); each case also runs `via_str0m`, with every packet
//! through str0m (`Rtc::handle_input`, `write_rtp`, its send queue and timer pass), as
//! with that setting off. Before measuring, the browser sends one batch (untimed): the
//! bridge relays directly only once the browser's packets passed its keys.
//!
//! The browser is a second str0m `Rtc` (full ICE, DTLS client) and the two are driven to
//! connected in memory: a real ICE and DTLS-SRTP handshake, no sockets. The handshake
//! negotiates what callgate gets from a browser offering every profile (AEAD-AES-256-GCM,
//! the choice of str0m's DTLS layer, dimpl); AEAD-AES-128-GCM and AES-CM-128-HMAC-SHA1-80
//! are then installed on both sides with str0m's test hook (same key material, other
//! profile), since the pinned str0m offers no way to choose the profile in the handshake.
//!
//! Each way also runs with SRTP keyed by SDES on the SIP leg (`+ sip_sdes_aes_cm_80`): the
//! bridge then protects what it sends the PBX and unprotects what the PBX sends (the PBX's
//! packets are protected beforehand, outside the timed part). `srtp_only/…` times callgate's
//! SRTP module alone on a 172-byte G.711 packet.
//!
//! Run: `cargo bench -p gateway --bench relay` (options: `--runs N`, `--packets N`, a
//! filter word such as `sip_to_browser` or `aes_cm`). Each run relays `--packets` packets
//! in batches of 1,000 prepared beforehand (the browser's encryption and the clock are
//! outside the timed part); the report is the time per packet, min/median/max over runs.
//!
//! `…/interleaved/N_bridges` relays through N bridges taking turns packet by packet, as a
//! media worker with N calls does (`--bridges N`, repeatable; default 1, 20 and 200): the
//! difference from one hot bridge is what the per-call state costs in cache misses. Each
//! also runs `+ loopback_send` (a real 200-byte loopback `send_to` before every packet), and
//! `loopback_send_only` times that send alone; `+ loopback_send + sleeps` also sleeps 400 µs
//! (untimed) after every 10 packets, so the relay runs right after wake-ups as a loaded
//! media worker's does. `loopback_send/paced_…/receiver_blocked` times
//! a send that wakes a receiver sleeping on the other core (as callgate's sends wake a
//! loadtest on loopback), `…/receiver_spinning` one whose receiver never sleeps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::media::inmemory::InMemoryBridge;
use gateway::media::srtp::{MAX_RTP_TRAILER, SrtpReceiver, SrtpSender};
use gateway::media::{SipTarget, WebRtcFactory};
use gateway::sdp::{G711, MasterKey, SrtpKeys, SrtpSuite};
use str0m::change::SdpAnswer;
use str0m::config::KeyingMaterial;
use str0m::crypto::dtls::SrtpProfile;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const BROWSER: &str = "127.0.0.1:40000";
const GATEWAY: &str = "127.0.0.1:20000";
const PBX: &str = "127.0.0.1:30000";
const BATCH: usize = 1000;
const FRAME: Duration = Duration::from_millis(20);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a literal socket address")
}

/// The simulated browser and callgate's bridge, connected.
struct Pair {
    browser: Rtc,
    mid: Mid,
    pt: Pt,
    bridge: InMemoryBridge,
    now: Instant,
    browser_connected: bool,
    /// RTP state of the PBX's stream.
    pbx_seq: u16,
    pbx_ts: u32,
    /// Browser-side RTP time.
    browser_ts: u64,
    /// SDES on the SIP leg: the PBX's side of it (its sender, its receiver of our packets).
    pbx_srtp: Option<(SrtpSender, SrtpReceiver)>,
    /// The browser's str0m measured a round trip from callgate's receiver reports.
    browser_rtt_seen: bool,
    /// The browser's ICE agent gave up on the pair (its consent checks went unanswered).
    browser_ice_disconnected: bool,
}

/// SDES keys of the benchmark's SIP leg.
fn sdes_keys() -> SrtpKeys {
    SrtpKeys {
        suite: SrtpSuite::AesCm128HmacSha1_80,
        tag: 1,
        local: MasterKey([0x11; 30]),
        remote: MasterKey([0x22; 30]),
    }
}

impl Pair {
    fn new(sip_srtp: Option<SrtpKeys>) -> Pair {
        let now = gateway::clock::now();
        let factory = WebRtcFactory::new().expect("a DTLS certificate");
        let mut config = Rtc::builder()
            .clear_codecs()
            .enable_pcmu(true, false)
            .set_reordering_size_audio(0)
            .set_reordering_timeout_audio(None)
            .set_stats_interval(Some(Duration::from_secs(1)));
        config.codec_config().add_config(
            126.into(),
            None,
            Codec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            FormatParams::parse_line("0-15"),
        );
        let mut browser = config.build(now);
        browser.add_local_candidate(Candidate::host(addr(BROWSER), "udp").expect("host candidate"));
        let mut api = browser.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let negotiated = factory
            .accept_offer(&offer.to_sdp_string(), G711::Pcmu, addr(GATEWAY), now)
            .expect("callgate accepts the offer");
        let answer = SdpAnswer::from_sdp_string(&negotiated.answer_sdp).expect("answer parses");
        browser
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the browser accepts the answer");
        let target = SipTarget {
            remote: addr(PBX),
            telephone_event: Some(101),
            srtp: sip_srtp,
        };
        let pbx_srtp = sip_srtp.map(|keys| {
            (
                SrtpSender::new(keys.suite, &keys.remote).expect("PBX sender"),
                SrtpReceiver::new(keys.suite, &keys.local).expect("PBX receiver"),
            )
        });
        let bridge = InMemoryBridge::new(negotiated, addr(GATEWAY), target, now);
        let mut pair = Pair {
            browser,
            mid,
            pt: 0.into(),
            bridge,
            now,
            browser_connected: false,
            pbx_seq: 1000,
            pbx_ts: 160_000,
            browser_ts: 0,
            pbx_srtp,
            browser_rtt_seen: false,
            browser_ice_disconnected: false,
        };
        for _ in 0..10_000 {
            pair.pump();
            if pair.browser_connected && pair.bridge.is_connected() {
                return pair;
            }
            pair.advance_to_next_timeout();
        }
        panic!("ICE and DTLS did not connect in memory");
    }

    /// Exchanges datagrams until both sides are quiet (untimed housekeeping).
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            loop {
                match self.browser.poll_output().expect("browser output") {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => {
                        self.bridge
                            .browser_datagram(&t.contents, addr(BROWSER), self.now);
                        moved = true;
                    }
                    Output::Event(event) => self.on_browser_event(event),
                }
            }
            moved |= self.hand_bridge_output_to_browser();
            if !moved {
                return;
            }
        }
    }

    fn on_browser_event(&mut self, event: Event) {
        match event {
            Event::Connected => self.browser_connected = true,
            Event::MediaEgressStats(stats) if stats.rtt.is_some() => self.browser_rtt_seen = true,
            Event::IceConnectionStateChange(state) if state.is_disconnected() => {
                self.browser_ice_disconnected = true
            }
            _ => {}
        }
    }

    /// The browser's microphone gives str0m the next 20 ms of audio, sent at `now`.
    fn browser_writes_a_frame(&mut self) {
        self.browser_ts += 160;
        let frame = [0xd5u8; 160];
        self.browser
            .writer(self.mid)
            .expect("audio writer")
            .write(
                self.pt,
                self.now,
                MediaTime::new(self.browser_ts, Frequency::EIGHT_KHZ),
                Arc::<[u8]>::from(&frame[..]),
            )
            .expect("browser write");
    }

    /// One 20 ms frame each way in lockstep, both sides' timers run, everything delivered:
    /// a call in simulated time (untimed; the checks use it, not the measurements).
    fn talk_one_frame(&mut self) {
        self.now += FRAME;
        self.browser_writes_a_frame();
        self.browser
            .handle_input(Input::Timeout(self.now))
            .expect("browser timeout");
        self.pump();
        let mut pbx = Vec::with_capacity(1);
        self.pbx_frames(1, &mut pbx);
        for (packet, at) in &pbx {
            self.bridge.sip_datagram(packet, addr(PBX), *at);
        }
        self.bridge.handle_timeout(self.now);
        self.pump();
    }

    /// Delivers what the bridge sent the browser and drops what it sent the PBX; true when
    /// there was something for the browser.
    fn hand_bridge_output_to_browser(&mut self) -> bool {
        let datagrams: Vec<Vec<u8>> = self
            .bridge
            .to_browser()
            .iter()
            .map(|(_, d)| d.to_vec())
            .collect();
        self.bridge.to_browser().clear();
        self.bridge.to_sip().clear();
        for datagram in &datagrams {
            self.deliver_to_browser(datagram);
        }
        !datagrams.is_empty()
    }

    fn deliver_to_browser(&mut self, datagram: &[u8]) {
        let input = Input::Receive(
            self.now,
            Receive {
                proto: Protocol::Udp,
                source: addr(GATEWAY),
                destination: addr(BROWSER),
                contents: datagram.try_into().expect("a datagram str0m accepts"),
            },
        );
        self.browser.handle_input(input).expect("browser input");
    }

    fn advance_to_next_timeout(&mut self) {
        self.now += Duration::from_millis(10);
        self.browser
            .handle_input(Input::Timeout(self.now))
            .expect("browser timeout");
        self.bridge.handle_timeout(self.now);
    }

    /// Runs both sides' timers up to `now` (untimed).
    fn housekeeping(&mut self) {
        self.browser
            .handle_input(Input::Timeout(self.now))
            .expect("browser timeout");
        if self.bridge.poll_timeout().is_some_and(|at| at <= self.now) {
            self.bridge.handle_timeout(self.now);
        }
        self.pump();
    }

    /// Re-keys both sides with `profile` (same key material shape as DTLS exports): str0m's
    /// contexts, and the bridge's own RTP path when `direct`.
    fn rekey(&mut self, profile: SrtpProfile, direct: bool) {
        let material: Vec<u8> = (0..profile.keying_material_len())
            .map(|i| (i * 7 + 3) as u8)
            .collect();
        self.browser
            ._set_srtp_keys(KeyingMaterial::new(&material), profile, true);
        self.bridge
            .rtc_mut()
            .expect("str0m runs the leg until the browser's first packets")
            ._set_srtp_keys(KeyingMaterial::new(&material), profile, false);
        if direct {
            let keys = shared_dtls::ExportedSrtpKeys {
                material,
                profile,
                active: false,
            };
            self.bridge.rekey_direct(keys, self.now);
        }
    }

    /// Relays one batch of the browser's frames (untimed), as a call's first second does:
    /// the bridge relays RTP itself only once the browser's packets passed its keys.
    fn prime(&mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        self.browser_batch(&mut batch);
        for (packet, at) in &batch {
            self.bridge.browser_datagram(packet, addr(BROWSER), *at);
        }
        // The bridge's answers (STUN, RTCP) reach the browser, or its ICE gives up.
        self.hand_bridge_output_to_browser();
        self.pump();
    }

    /// The browser encrypts the next `BATCH` frames; returns their SRTP datagrams and times.
    fn browser_batch(&mut self, out: &mut Vec<(Vec<u8>, Instant)>) {
        out.clear();
        for i in 0..BATCH {
            self.now += FRAME;
            if i % 50 == 0 {
                self.housekeeping();
            }
            self.browser_writes_a_frame();
            // The frame leaves on the timeout str0m asks for at once.
            for _ in 0..4 {
                let due = loop {
                    match self.browser.poll_output().expect("browser output") {
                        Output::Timeout(at) => break at <= self.now,
                        Output::Transmit(t) => out.push((t.contents.to_vec(), self.now)),
                        Output::Event(_) => {}
                    }
                };
                if !due {
                    break;
                }
                self.browser
                    .handle_input(Input::Timeout(self.now))
                    .expect("browser timeout");
            }
        }
    }

    /// The PBX's next `BATCH` RTP packets.
    fn pbx_batch(&mut self, out: &mut Vec<(Vec<u8>, Instant)>) {
        out.clear();
        for i in 0..BATCH {
            self.now += FRAME;
            if i % 50 == 0 {
                self.housekeeping();
            }
            self.pbx_frames(1, out);
        }
    }

    /// Appends the PBX's next `n` RTP packets, stamped `now`.
    fn pbx_frames(&mut self, n: usize, out: &mut Vec<(Vec<u8>, Instant)>) {
        for _ in 0..n {
            self.pbx_seq = self.pbx_seq.wrapping_add(1);
            self.pbx_ts = self.pbx_ts.wrapping_add(160);
            let mut packet = vec![0x80, 0];
            packet.extend_from_slice(&self.pbx_seq.to_be_bytes());
            packet.extend_from_slice(&self.pbx_ts.to_be_bytes());
            packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            packet.extend_from_slice(&[0xd5; 160]);
            if let Some((sender, _)) = self.pbx_srtp.as_mut() {
                let len = packet.len();
                packet.resize(len + MAX_RTP_TRAILER, 0);
                let len = sender.protect_rtp(&mut packet, len).expect("PBX protects");
                packet.truncate(len);
            }
            out.push((packet, self.now));
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    BrowserToSip,
    SipToBrowser,
}

/// Nanoseconds per packet of each run.
fn measure(pair: &mut Pair, way: Way, runs: usize, packets: usize) -> Vec<f64> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut results = Vec::with_capacity(runs);
    // Warm-up: one batch, also checks that packets come out.
    for run in 0..=runs {
        let mut spent = Duration::ZERO;
        let mut relayed = 0usize;
        let mut done = 0;
        while done < packets {
            match way {
                Way::BrowserToSip => pair.browser_batch(&mut batch),
                Way::SipToBrowser => pair.pbx_batch(&mut batch),
            }
            pair.bridge.to_sip().clear();
            pair.bridge.to_browser().clear();
            let start = gateway::clock::now();
            for (packet, at) in &batch {
                match way {
                    Way::BrowserToSip => pair.bridge.browser_datagram(packet, addr(BROWSER), *at),
                    Way::SipToBrowser => pair.bridge.sip_datagram(packet, addr(PBX), *at),
                }
            }
            spent += gateway::clock::now() - start;
            relayed += match way {
                Way::BrowserToSip => pair.bridge.to_sip().len(),
                Way::SipToBrowser => pair.bridge.to_browser().len(),
            };
            if run == 0 && done == 0 {
                check_output(pair, way);
            }
            // Frames, not datagrams: the browser's batch also carries its RTCP.
            done += BATCH;
        }
        assert!(
            relayed >= done,
            "only {relayed} of {done} packets were relayed; errors {:?}",
            pair.bridge.errors()
        );
        if run > 0 {
            results.push(spent.as_nanos() as f64 / done as f64);
        }
    }
    results
}

/// Nanoseconds per packet of each run, with `pairs.len()` bridges taking turns packet by
/// packet, as a media worker serving many calls does: each packet meets a bridge whose state
/// the previous packets pushed out of the CPU caches. One run relays `BATCH` packets of each
/// bridge. With `send`, each packet is also preceded by one 200-byte `send_to` on loopback
/// (to a socket nobody reads): what a kernel send costs next to the relay, directly and in
/// the caches it leaves behind.
/// What the interleaved relay does besides relaying.
#[derive(Clone, Copy, PartialEq)]
enum Around {
    Nothing,
    /// A real loopback send before every packet.
    LoopbackSend,
    /// That, and a 400 µs sleep (untimed) after every 10 packets: the thread sleeps and is
    /// woken as a loaded media worker is (~2,000 times a second at 200 calls).
    LoopbackSendAndSleeps,
}

fn measure_interleaved(pairs: &mut [Pair], way: Way, runs: usize, around: Around) -> Vec<f64> {
    let mut batches: Vec<Vec<(Vec<u8>, Instant)>> =
        pairs.iter().map(|_| Vec::with_capacity(BATCH)).collect();
    let mut results = Vec::with_capacity(runs);
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let sink_addr = sink.local_addr().expect("addr");
    let junk = [0u8; 200];
    for run in 0..=runs {
        for (pair, batch) in pairs.iter_mut().zip(batches.iter_mut()) {
            match way {
                Way::BrowserToSip => pair.browser_batch(batch),
                Way::SipToBrowser => pair.pbx_batch(batch),
            }
            pair.bridge.to_sip().clear();
            pair.bridge.to_browser().clear();
        }
        let mut spent = Duration::ZERO;
        let mut start = gateway::clock::now();
        let mut since_sleep = 0;
        for i in 0..BATCH {
            for (pair, batch) in pairs.iter_mut().zip(batches.iter()) {
                let Some((packet, at)) = batch.get(i) else {
                    continue;
                };
                if around != Around::Nothing {
                    let _ = sender.send_to(&junk, sink_addr);
                }
                if around == Around::LoopbackSendAndSleeps {
                    since_sleep += 1;
                    if since_sleep == 10 {
                        since_sleep = 0;
                        spent += gateway::clock::now() - start;
                        std::thread::sleep(Duration::from_micros(400));
                        start = gateway::clock::now();
                    }
                }
                match way {
                    Way::BrowserToSip => pair.bridge.browser_datagram(packet, addr(BROWSER), *at),
                    Way::SipToBrowser => pair.bridge.sip_datagram(packet, addr(PBX), *at),
                }
            }
        }
        spent += gateway::clock::now() - start;
        let mut relayed = 0;
        for pair in pairs.iter_mut() {
            relayed += match way {
                Way::BrowserToSip => pair.bridge.to_sip().len(),
                Way::SipToBrowser => pair.bridge.to_browser().len(),
            };
        }
        // A few frames per batch leave the simulated browser during its untimed housekeeping
        // (and are relayed there): count what the timed loop relayed, and want nearly all.
        let done = BATCH * pairs.len();
        assert!(
            relayed * 100 >= done * 98,
            "only {relayed} of {done} packets were relayed"
        );
        if run > 0 {
            results.push(spent.as_nanos() as f64 / relayed as f64);
        }
    }
    results
}

/// The relayed packets are what they should be: the PBX gets PCMU RTP with our payload,
/// the browser decrypts what the bridge sent.
fn check_output(pair: &mut Pair, way: Way) {
    match way {
        Way::BrowserToSip => {
            let sip = pair.bridge.to_sip();
            let (to, packet) = sip.iter().next().expect("one RTP packet to the PBX");
            assert_eq!(to, addr(PBX));
            let mut packet = packet.to_vec();
            if let Some((_, receiver)) = pair.pbx_srtp.as_mut() {
                let len = receiver
                    .unprotect_rtp(&mut packet)
                    .expect("the PBX's SRTP check passes");
                packet.truncate(len);
            }
            assert_eq!(packet.len(), 12 + 160, "plain RTP, no extensions");
            assert_eq!(packet[1] & 0x7f, 0, "PCMU");
            assert!(packet[12..].iter().all(|&b| b == 0xd5), "the payload");
        }
        Way::SipToBrowser => {
            let datagrams: Vec<Vec<u8>> = pair
                .bridge
                .to_browser()
                .iter()
                .map(|(_, d)| d.to_vec())
                .collect();
            let mut audio = 0;
            for datagram in datagrams {
                pair.deliver_to_browser(&datagram);
                loop {
                    match pair.browser.poll_output().expect("browser output") {
                        Output::Timeout(_) => break,
                        Output::Event(Event::MediaData(data)) => {
                            assert!(data.data.iter().all(|&b| b == 0xd5), "the payload");
                            audio += 1;
                        }
                        _ => {}
                    }
                }
            }
            assert!(audio > 0, "the browser decrypted the relayed audio");
        }
    }
}

fn summary(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[0],
        values[values.len() / 2],
        values[values.len() - 1],
    )
}

fn main() {
    let mut runs = None;
    let mut packets = None;
    let mut filter = None;
    let mut bridges: Vec<usize> = Vec::new();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this too, without it:
    // then one short run per case checks the relayed packets without measuring.
    let mut benchmarking = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = Some(args.next().and_then(|v| v.parse().ok()).expect("--runs N")),
            "--packets" => {
                packets = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--packets N"),
                )
            }
            "--bench" => benchmarking = true,
            "--bridges" => bridges.push(
                args.next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .expect("--bridges N (N > 0; may be repeated)"),
            ),
            other if !other.starts_with('-') => filter = Some(other.to_string()),
            _ => {}
        }
    }
    let runs: usize = runs.unwrap_or(if benchmarking { 5 } else { 1 });
    let packets: usize = packets.unwrap_or(if benchmarking { 100_000 } else { 2_000 });
    println!(
        "relay: {runs} runs of {packets} packets each; ns per relayed packet (min / median / max){}",
        if benchmarking {
            ""
        } else {
            " — a check run under cargo test, not a measurement: use cargo bench"
        }
    );
    for (profile_name, profile) in [
        ("aead_aes_256_gcm (negotiated)", None),
        ("aead_aes_128_gcm", Some(SrtpProfile::AEAD_AES_128_GCM)),
        (
            "aes_cm_128_hmac_sha1_80",
            Some(SrtpProfile::AES128_CM_SHA1_80),
        ),
    ] {
        for (way_name, way) in [
            ("browser_to_sip", Way::BrowserToSip),
            ("sip_to_browser", Way::SipToBrowser),
        ] {
            for (sip_srtp, direct) in [
                (None, true),
                (Some(sdes_keys()), true),
                (None, false),
                (Some(sdes_keys()), false),
            ] {
                // SDES on the SIP leg is measured with the negotiated browser profile only.
                if sip_srtp.is_some() && profile.is_some() {
                    continue;
                }
                let name = format!(
                    "{way_name}/{profile_name}{}{}",
                    if sip_srtp.is_some() {
                        " + sip_sdes_aes_cm_80"
                    } else {
                        ""
                    },
                    if direct { "" } else { " via_str0m" }
                );
                if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                    continue;
                }
                let mut pair = Pair::new(sip_srtp);
                pair.bridge.set_direct_srtp(direct);
                if let Some(profile) = profile {
                    pair.rekey(profile, direct);
                }
                pair.prime();
                assert_eq!(
                    pair.bridge.relays_rtp_directly(),
                    direct,
                    "{name}: RTP goes around str0m exactly when direct SRTP is on"
                );
                let mut results = measure(&mut pair, way, runs, packets);
                let (min, median, max) = summary(&mut results);
                println!("{name:<60} {min:>8.0} {median:>8.0} {max:>8.0}");
            }
        }
    }
    // Keys that do not match the browser's (as if a tap had caught another connection's):
    // the bridge tries them on the browser's first packets, then leaves RTP with str0m, and
    // the audio flows all along (`measure` checks every packet reaches the PBX).
    let name = "browser_to_sip/mismatched_direct_keys_fall_back_to_str0m";
    if filter.as_ref().is_none_or(|f| name.contains(f.as_str())) {
        let mut pair = Pair::new(None);
        let wrong = shared_dtls::ExportedSrtpKeys {
            material: vec![0x5a; 2 * (32 + 12)],
            profile: SrtpProfile::AEAD_AES_256_GCM,
            active: false,
        };
        pair.bridge.rekey_direct(wrong, pair.now);
        pair.prime();
        assert!(
            !pair.bridge.relays_rtp_directly(),
            "mismatched keys are dropped"
        );
        let mut results = measure(&mut pair, Way::BrowserToSip, runs, packets);
        let (min, median, max) = summary(&mut results);
        println!("{name:<60} {min:>8.0} {median:>8.0} {max:>8.0}");
    }
    // After the browser's packets passed the bridge's own keys, a forged packet and a
    // replayed one are dropped and counted, and the genuine ones still reach the PBX (a
    // check, also under `cargo test`; nothing is timed).
    let name = "browser_to_sip/forged_and_replayed_direct_packets_are_dropped";
    if filter.as_ref().is_none_or(|f| name.contains(f.as_str())) {
        let mut pair = Pair::new(None);
        pair.prime();
        assert!(pair.bridge.relays_rtp_directly());
        let mut batch = Vec::with_capacity(BATCH);
        pair.browser_batch(&mut batch);
        let frames: Vec<&(Vec<u8>, Instant)> = batch
            .iter()
            .filter(|(d, _)| d.len() > 100 && (128..192).contains(&d[0]) && d[1] & 0x7f < 64)
            .collect();
        let (genuine, at) = frames.first().expect("the browser sent audio");
        let mut forged = genuine.clone();
        if let Some(last) = forged.last_mut() {
            *last ^= 0x01;
        }
        pair.bridge.to_sip().clear();
        pair.bridge.browser_datagram(&forged, addr(BROWSER), *at);
        pair.bridge.browser_datagram(genuine, addr(BROWSER), *at);
        pair.bridge.browser_datagram(genuine, addr(BROWSER), *at);
        let errors = pair.bridge.errors();
        let count = |kind: &str| {
            errors
                .iter()
                .find(|(k, _)| *k == kind)
                .map_or(0, |(_, n)| *n)
        };
        assert_eq!(
            (count("srtp_auth"), count("srtp_replay")),
            (1, 1),
            "{errors:?}"
        );
        assert_eq!(
            pair.bridge.to_sip().len(),
            1,
            "only the genuine packet, once"
        );
        println!("{name:<60} checked");
    }
    // Once the browser's RTP passed the bridge's own keys, str0m is let go and the bridge
    // keeps the leg: a minute of a call in simulated time, frame by frame both ways. The
    // browser's str0m checks consent every few seconds and gives up on a pair whose checks
    // go unanswered; it measures its round trip from our receiver reports, and we ours from
    // its (a check, also under `cargo test`; nothing is timed).
    let name = "browser_leg/kept_by_the_bridge_answers_consent_and_reports_rtcp";
    if filter.as_ref().is_none_or(|f| name.contains(f.as_str())) {
        let mut pair = Pair::new(None);
        pair.prime();
        assert!(pair.bridge.relays_rtp_directly());
        assert!(pair.bridge.keeps_the_leg(), "str0m let go");
        assert!(pair.bridge.rtc_mut().is_none());
        pair.browser_rtt_seen = false;
        let sent_before = pair.bridge.stats().to_browser;
        for _ in 0..(60 * 50) {
            pair.talk_one_frame();
        }
        let (rtcp_in, rtcp_out, consent) = pair.bridge.kept_leg_counts();
        assert!(
            !pair.browser_ice_disconnected,
            "the browser's ICE gave up: {consent} consent checks answered"
        );
        assert!(consent >= 10, "{consent} consent checks answered in 60 s");
        assert!(rtcp_out >= 10, "{rtcp_out} reports sent in 60 s");
        assert!(
            rtcp_in >= 10,
            "{rtcp_in} of the browser's reports opened in 60 s"
        );
        assert!(
            pair.browser_rtt_seen,
            "the browser read our receiver reports"
        );
        let (browser_leg, _) = pair.bridge.quality();
        assert!(browser_leg.rtt_ms.is_some(), "{browser_leg:?}");
        assert_eq!(browser_leg.lost, 0, "{browser_leg:?}");
        assert!(
            pair.bridge.stats().to_browser >= sent_before + 2_900,
            "the PBX's audio kept reaching the browser"
        );
        assert!(pair.bridge.is_connected());
        // Then the browser falls silent (closed without a word, gone): 30 s after its last
        // consent check the leg is over, reported once.
        pair.bridge.take_events();
        for _ in 0..32 {
            pair.now += Duration::from_secs(1);
            pair.bridge.handle_timeout(pair.now);
        }
        let failures: Vec<String> = pair
            .bridge
            .take_events()
            .into_iter()
            .filter_map(|e| match e.kind {
                gateway::media::MediaEventKind::Failed { reason } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(failures, ["ICE consent expired"], "{failures:?}");
        println!("{name:<60} checked");
    }
    // Many bridges taking turns (negotiated profile, plain RTP to the PBX): what the state of
    // many calls costs per packet, against the single hot bridge above.
    if bridges.is_empty() {
        bridges = if benchmarking {
            vec![1, 20, 200]
        } else {
            vec![2]
        };
    }
    for &count in &bridges {
        for (way_name, way) in [
            ("browser_to_sip", Way::BrowserToSip),
            ("sip_to_browser", Way::SipToBrowser),
        ] {
            let name = format!("{way_name}/interleaved/{count}_bridges");
            if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let mut pairs: Vec<Pair> = (0..count).map(|_| Pair::new(None)).collect();
            for pair in &mut pairs {
                pair.prime();
            }
            for (around, suffix) in [
                (Around::Nothing, ""),
                (Around::LoopbackSend, " + loopback_send"),
                (Around::LoopbackSendAndSleeps, " + loopback_send + sleeps"),
            ] {
                let mut results = measure_interleaved(&mut pairs, way, runs.min(3), around);
                let (min, median, max) = summary(&mut results);
                let name = format!("{name}{suffix}");
                println!("{name:<60} {min:>8.0} {median:>8.0} {max:>8.0}");
            }
        }
    }
    // The loopback send alone, to subtract from the `+ loopback_send` cases.
    let name = "loopback_send_only";
    if filter.as_ref().is_none_or(|f| name.contains(f.as_str())) {
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sink_addr = sink.local_addr().expect("addr");
        let mut results = Vec::new();
        for _ in 0..runs.min(3) {
            let start = gateway::clock::now();
            for _ in 0..packets {
                let _ = sender.send_to(&[0u8; 200], sink_addr);
            }
            results.push((gateway::clock::now() - start).as_nanos() as f64 / packets as f64);
        }
        let (min, median, max) = summary(&mut results);
        println!("{name:<60} {min:>8.0} {median:>8.0} {max:>8.0}");
    }
    // A loopback send that must wake its receiver, against one whose receiver never sleeps:
    // under load, every datagram callgate sends to a sleeping loadtest wakes it.
    for blocked in [true, false] {
        let name = format!(
            "loopback_send/paced_20000_per_s/receiver_{}",
            if blocked { "blocked" } else { "spinning" }
        );
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let mut results = paced_sends(blocked, runs.min(3), packets.min(20_000));
        let (min, median, max) = summary(&mut results);
        println!("{name:<60} {min:>8.0} {median:>8.0} {max:>8.0}");
    }
    for suite in SrtpSuite::ALL {
        let name = format!("srtp_only/protect+unprotect/{}", suite.name());
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let mut results = srtp_only(suite, runs, packets);
        let (min, median, max) = summary(&mut results);
        println!("{name:<60} {min:>8.0} {median:>8.0} {max:>8.0}");
    }
}

/// Nanoseconds inside `send_to` per 200-byte loopback datagram, sent 20,000 times a second
/// (a media worker's rate at 200 calls) to a receiver thread that either blocks in `recv`
/// (the scheduler puts it on the other, idle core: each send wakes it there) or polls a
/// non-blocking socket without ever sleeping. The sender spins between sends, so its own
/// wake-ups are not in the figure.
fn paced_sends(receiver_blocks: bool, runs: usize, packets: usize) -> Vec<f64> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let sink_addr = sink.local_addr().expect("addr");
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    if receiver_blocks {
        sink.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
    } else {
        sink.set_nonblocking(true).expect("non-blocking");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let _ = sink.recv_from(&mut buf);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let interval = Duration::from_nanos(50_000);
    let mut results = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut inside = Duration::ZERO;
        let mut next = gateway::clock::now();
        for _ in 0..packets {
            let start = gateway::clock::now();
            let _ = sender.send_to(&[0u8; 200], sink_addr);
            inside += gateway::clock::now() - start;
            next += interval;
            while gateway::clock::now() < next {
                std::hint::spin_loop();
            }
        }
        results.push(inside.as_nanos() as f64 / packets as f64);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    results
}

/// Nanoseconds to protect and then unprotect one 172-byte RTP packet in place, per run.
fn srtp_only(suite: SrtpSuite, runs: usize, packets: usize) -> Vec<f64> {
    let key = MasterKey([0x33; 30]);
    let mut sender = SrtpSender::new(suite, &key).expect("sender");
    let mut receiver = SrtpReceiver::new(suite, &key).expect("receiver");
    let mut buf = [0u8; 12 + 160 + MAX_RTP_TRAILER];
    let mut seq: u16 = 0;
    let mut results = Vec::with_capacity(runs);
    for run in 0..=runs {
        let start = gateway::clock::now();
        for _ in 0..packets {
            seq = seq.wrapping_add(1);
            buf[..2].copy_from_slice(&[0x80, 0]);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            buf[8..12].copy_from_slice(&0x0bad_cafeu32.to_be_bytes());
            buf[12..172].fill(0xd5);
            let len = sender.protect_rtp(&mut buf, 172).expect("protect");
            let plain = receiver.unprotect_rtp(&mut buf[..len]).expect("unprotect");
            assert_eq!(plain, 172);
        }
        let spent = gateway::clock::now() - start;
        assert!(buf[12..172].iter().all(|&b| b == 0xd5), "round trip");
        if run > 0 {
            results.push(spent.as_nanos() as f64 / packets as f64);
        }
    }
    results
}

#!/usr/bin/env python3
"""An SDES (RFC 4568) SIP peer for callgate's integration tests (gateway/tests/it/srtp.rs).

It plays the PBX over real loopback sockets: as UAS it answers one INVITE, as UAC it places
one. Its SRTP is libsrtp's (the `pylibsrtp` wheel bundles it), independent of callgate's own
implementation: every packet from callgate is unprotected with the key callgate put in its
SDP, re-protected with this peer's own key and echoed back to its source. Optionally it also
sends a tampered copy and a replay of echoed packets, and one SRTCP receiver report.

Bounded: it exits after one call, or after --timeout seconds whatever happens. Loopback only.
On stdout: `READY <sip port>` once listening, and one JSON summary line at the end.
"""

import argparse
import base64
import json
import os
import random
import re
import select
import socket
import struct
import sys
import time

import pylibsrtp

SUITES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


def parse_message(data):
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers.append((name.strip().lower(), value.strip()))
    return lines[0], headers, body


def header(headers, name, short=None):
    for n, v in headers:
        if n == name or (short and n == short):
            return v
    return None


def all_headers(headers, name, short=None):
    return [v for n, v in headers if n == name or (short and n == short)]


def sdp_crypto(sdp):
    """(proto, [(tag, suite, key bytes)], (ip, port)) of the first audio m-line."""
    proto, cryptos, ip, port = None, [], None, None
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("c=IN IP4 "):
            ip = line.split()[2]
        elif line.startswith("m=audio "):
            parts = line.split()
            port, proto = int(parts[1]), parts[2]
        elif line.startswith("a=crypto:"):
            tag, suite, params = line[len("a=crypto:"):].split()[:3]
            key = base64.b64decode(params[len("inline:"):].split("|")[0])
            cryptos.append((int(tag), suite, key))
    return proto, cryptos, (ip, port)


def bind_rtp_pair(attempts=50):
    """An RTP socket on an OS-chosen even port and its RTCP companion one above. The port
    above a free one may be taken (tests run in parallel), so a pair that cannot be had is
    released and another tried."""
    for _ in range(attempts):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("127.0.0.1", port + 1))
                return rtp, rtcp
            except OSError:
                rtcp.close()
        rtp.close()
    raise OSError("no free RTP/RTCP port pair on 127.0.0.1")


class Peer:
    def __init__(self, args):
        self.args = args
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", args.sip_port))
        self.rtp, self.rtcp = bind_rtp_pair()
        self.key = os.urandom(30)
        self.tx = None
        self.rx = None
        self.summary = {
            "result": "none",
            "status": None,
            "srtp": False,
            "suite": None,
            "rx_ok": 0,
            "rx_failed": 0,
            "echoed": 0,
            "rtcp_ok": 0,
            "rtcp_failed": 0,
            "tampered_sent": 0,
            "replayed_sent": 0,
            "their_proto": None,
        }
        self.media_target = None
        self.dialog = None
        self.cseq = 1
        self.last_echo = None
        self.tag = 1

    def sdp(self, proto, crypto_lines):
        port = self.rtp.getsockname()[1]
        lines = [
            "v=0",
            "o=peer 1 1 IN IP4 127.0.0.1",
            "s=sdes-peer",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            f"m=audio {port} {proto} 0 8 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
        ]
        lines += crypto_lines
        lines.append("a=sendrecv")
        return "\r\n".join(lines) + "\r\n"

    def key_line(self, tag, suite):
        return f"a=crypto:{tag} {suite} inline:{base64.b64encode(self.key).decode()}"

    def start_srtp(self, suite, their_key):
        profile = SUITES[suite]
        tx = pylibsrtp.Policy(key=self.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=profile)
        tx.allow_repeat_tx = True
        rx = pylibsrtp.Policy(key=their_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                              srtp_profile=profile)
        self.tx = pylibsrtp.Session(tx)
        self.rx = pylibsrtp.Session(rx)
        self.summary["srtp"] = True
        self.summary["suite"] = suite

    def send_sip(self, text, to):
        self.sip.sendto(text.encode(), to)

    # ---- UAS

    def answer(self, start, headers, body, source):
        proto, cryptos, target = sdp_crypto(body)
        self.summary["their_proto"] = proto
        self.media_target = target
        mode = self.args.answer
        if mode == "refuse":
            self.respond(headers, source, "488 Not Acceptable Here", "")
            return False
        crypto_lines = []
        answer_proto = "RTP/AVP"
        if mode in ("savp", "avp"):
            usable = [c for c in cryptos if c[1] == self.args.suite] or \
                [c for c in cryptos if c[1] in SUITES]
            if not usable:
                self.respond(headers, source, "488 Not Acceptable Here", "")
                return False
            tag, suite, their_key = usable[0]
            self.tag = tag
            self.start_srtp(suite, their_key)
            crypto_lines = [self.key_line(tag, suite)]
            answer_proto = "RTP/SAVP" if mode == "savp" else "RTP/AVP"
        sdp = self.sdp(answer_proto, crypto_lines)
        self.to_tag = "peer%08x" % random.getrandbits(32)
        ok = self.respond(headers, source, "200 OK", sdp, to_tag=self.to_tag)
        deadline = time.time() + 4
        while time.time() < deadline:
            data = self.recv_sip(0.5)
            if data is None:
                self.send_sip(ok, source)
                continue
            start2, _, _ = parse_message(data[0])
            if start2.startswith("ACK "):
                return True
        return True

    def respond(self, headers, source, status, body, to_tag=None):
        lines = [f"SIP/2.0 {status}"]
        for via in all_headers(headers, "via", "v"):
            lines.append(f"Via: {via}")
        lines.append(f"From: {header(headers, 'from', 'f')}")
        to = header(headers, "to", "t")
        if to_tag and ";tag=" not in to:
            to += f";tag={to_tag}"
        elif ";tag=" not in to:
            to += ";tag=peer-final"
        lines.append(f"To: {to}")
        lines.append(f"Call-ID: {header(headers, 'call-id', 'i')}")
        lines.append(f"CSeq: {header(headers, 'cseq')}")
        lines.append(f"Contact: <sip:peer@127.0.0.1:{self.sip.getsockname()[1]}>")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        text = "\r\n".join(lines) + "\r\n\r\n" + body
        self.send_sip(text, source)
        return text

    # ---- UAC

    def invite(self):
        target = tuple(self.args.target.rsplit(":", 1))
        target = (target[0], int(target[1]))
        mode = self.args.offer
        crypto_lines = []
        if mode in ("savp", "avp"):
            crypto_lines = [self.key_line(1, self.args.suite)]
            if self.args.suite != "AES_CM_128_HMAC_SHA1_80":
                crypto_lines.append(self.key_line(2, "AES_CM_128_HMAC_SHA1_80"))
        proto = "RTP/SAVP" if mode == "savp" else "RTP/AVP"
        sdp = self.sdp(proto, crypto_lines)
        port = self.sip.getsockname()[1]
        call_id = "peer-%016x@127.0.0.1" % random.getrandbits(64)
        branch = "z9hG4bK%016x" % random.getrandbits(64)
        from_tag = "uac%08x" % random.getrandbits(32)
        uri = self.args.uri
        invite = (
            f"INVITE {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:5551234@127.0.0.1>;tag={from_tag}\r\n"
            f"To: <{uri}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:peer@127.0.0.1:{port}>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp.encode())}\r\n\r\n{sdp}"
        )
        deadline = time.time() + self.args.timeout
        next_send, interval = time.time(), 0.5
        while time.time() < deadline:
            if next_send is not None and time.time() >= next_send:
                self.send_sip(invite, target)
                next_send, interval = time.time() + interval, min(interval * 2, 4)
            data = self.recv_sip(0.2)
            if data is None:
                continue
            start, headers, body = parse_message(data[0])
            if not start.startswith("SIP/2.0 "):
                self.handle_request(start, headers, body, data[1])
                continue
            status = int(start.split()[1])
            if status < 200:
                next_send = None
                continue
            to = header(headers, "to", "t")
            self.summary["status"] = status
            if status >= 300:
                ack = (
                    f"ACK {uri} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:5551234@127.0.0.1>;tag={from_tag}\r\n"
                    f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
                )
                self.send_sip(ack, target)
                self.summary["result"] = "refused"
                return False
            contact = header(headers, "contact", "m")
            remote = re.search(r"<([^>]+)>", contact).group(1) if contact else uri
            ack = (
                f"ACK {remote} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{random.getrandbits(64):016x};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:5551234@127.0.0.1>;tag={from_tag}\r\n"
                f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            )
            self.send_sip(ack, data[1])
            proto, cryptos, media = sdp_crypto(body)
            self.summary["their_proto"] = proto
            self.media_target = media
            if mode in ("savp", "avp"):
                if not cryptos:
                    self.summary["result"] = "answer_without_crypto"
                    return False
                _, suite, their_key = cryptos[0]
                self.start_srtp(suite, their_key)
            return True
        self.summary["result"] = "timeout"
        return False

    # ---- shared

    def recv_sip(self, timeout):
        ready, _, _ = select.select([self.sip], [], [], timeout)
        if not ready:
            return None
        return self.sip.recvfrom(65535)

    def handle_request(self, start, headers, body, source):
        method = start.split()[0]
        if method == "ACK":
            return None
        if method == "INVITE":
            # A re-INVITE: answer with the same session.
            self.respond(headers, source, "200 OK", self.sdp(
                "RTP/SAVP" if self.summary["srtp"] else "RTP/AVP",
                [self.key_line(self.tag, self.summary["suite"])] if self.summary["srtp"] else []),
                to_tag=None)
            return None
        self.respond(headers, source, "200 OK", "")
        return method

    def echo(self, packet, source):
        if self.rx is not None:
            try:
                plain = self.rx.unprotect(packet)
            except Exception:
                self.summary["rx_failed"] += 1
                return
            self.summary["rx_ok"] += 1
            out = self.tx.protect(plain)
        else:
            self.summary["rx_ok"] += 1
            out = packet
        n = self.summary["echoed"]
        if self.args.tamper and self.rx is not None and n in (30, 60):
            bad = bytearray(out)
            bad[20] ^= 0x01
            self.rtp.sendto(bytes(bad), source)
            self.summary["tampered_sent"] += 1
        self.rtp.sendto(out, source)
        self.summary["echoed"] += 1
        if self.args.tamper and self.rx is not None and n in (45, 75) and self.last_echo:
            self.rtp.sendto(self.last_echo, source)
            self.summary["replayed_sent"] += 1
        self.last_echo = out

    def rtcp_in(self, packet, source):
        if self.rx is None:
            return
        try:
            plain = self.rx.unprotect_rtcp(packet)
            self.summary["rtcp_ok"] += 1
        except Exception:
            self.summary["rtcp_failed"] += 1
            return
        # A receiver report back, protected, with one report block on the sender's stream
        # (RFC 3550 6.4.2): LSR is the middle 32 bits of the sender report's NTP time, DLSR
        # our (negligible) delay, so the sender can compute the round trip.
        block = b""
        if len(plain) >= 16 and plain[1] == 200:
            sender, ntp_msw, ntp_lsw = struct.unpack("!III", plain[4:16])
            lsr = ((ntp_msw & 0xFFFF) << 16) | (ntp_lsw >> 16)
            block = struct.pack("!IIIIII", sender, 0, 0, 0, lsr, 0)
        count = len(block) // 24
        rr = struct.pack("!BBHI", 0x80 | count, 201, 1 + 6 * count, 0x5EED5EED) + block
        self.rtcp.sendto(self.tx.protect_rtcp(rr), source)

    def media_loop(self):
        deadline = time.time() + self.args.timeout
        while time.time() < deadline:
            ready, _, _ = select.select([self.sip, self.rtp, self.rtcp], [], [], 0.2)
            for sock in ready:
                data, source = sock.recvfrom(65535)
                if sock is self.rtp:
                    self.echo(data, source)
                elif sock is self.rtcp:
                    self.rtcp_in(data, source)
                else:
                    start, headers, body = parse_message(data)
                    if start.startswith("SIP/2.0"):
                        continue
                    if self.handle_request(start, headers, body, source) == "BYE":
                        self.summary["result"] = "bye"
                        return
        self.summary["result"] = "timeout"

    def run(self):
        print(f"READY {self.sip.getsockname()[1]}", flush=True)
        if self.args.mode == "uas":
            deadline = time.time() + self.args.timeout
            while time.time() < deadline:
                data = self.recv_sip(0.2)
                if data is None:
                    continue
                start, headers, body = parse_message(data[0])
                if start.startswith("INVITE "):
                    if self.answer(start, headers, body, data[1]):
                        self.media_loop()
                    else:
                        self.summary["result"] = "refused"
                    break
                if not start.startswith("SIP/2.0"):
                    self.respond(headers, data[1], "200 OK", "")
        elif self.invite():
            self.media_loop()
        print(json.dumps(self.summary), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["uas", "uac"], required=True)
    parser.add_argument("--sip-port", type=int, default=0)
    parser.add_argument("--answer", choices=["savp", "avp", "plain", "refuse"], default="savp")
    parser.add_argument("--offer", choices=["savp", "avp", "plain"], default="savp")
    parser.add_argument("--suite", default="AES_CM_128_HMAC_SHA1_80")
    parser.add_argument("--target")
    parser.add_argument("--uri")
    parser.add_argument("--tamper", action="store_true")
    parser.add_argument("--timeout", type=float, default=20)
    Peer(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())

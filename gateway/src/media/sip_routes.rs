//! Which call a datagram on a media worker's shared SIP-leg pair belongs to
//! (`rtp.sockets = "shared"`): by the PBX's RTP address from each call's SDP, latched on the
//! first packet; by SSRC when a PBX sends several calls from one address. Worker-owned; per
//! packet one hash lookup of the source address (RTCP: two; a shared address: one more, of
//! the SSRC); no allocation.

use std::collections::HashMap;
use std::net::SocketAddr;

use tracing::{debug, info};

use super::bridge::Bridge;

/// The bridges a PBX RTP address belongs to: one, as with PBXs that give each call its own
/// port; or several (a PBX that sends every call from one address), told apart by SSRC.
enum SipRoute {
    One(usize),
    Several(Box<SharedAddress>),
}

/// Bridges sharing one PBX address, and the SSRCs that tell them apart (one lookup per
/// packet however many calls share the address).
struct SharedAddress {
    slots: Vec<usize>,
    /// Each bridge's own SSRC (an echo reflects it) and the PBX stream's SSRC it received.
    by_ssrc: HashMap<u32, usize>,
    /// The address is this worker's own shared socket: the PBX connected two of our calls
    /// to each other (direct media), so a call's own SSRC marks the sender, not the receiver.
    hairpin: bool,
}

impl SharedAddress {
    /// Adds a bridge and its SSRCs.
    fn add(&mut self, slot: usize, bridge: &Bridge) {
        if !self.slots.contains(&slot) {
            self.slots.push(slot);
        }
        if !self.hairpin {
            self.by_ssrc.insert(bridge.sip_ssrc, slot);
        }
        if let Some(ssrc) = bridge.pbx_ssrc {
            self.by_ssrc.insert(ssrc, slot);
        }
    }
}

/// What [`SipRoutes::resolve`] found for a datagram.
pub(super) enum Resolved {
    /// The bridge in this slot; `alone` when no other call shares its PBX address.
    Bridge { slot: usize, alone: bool },
    /// No call expects this source (or only its own audio would come back to it).
    Unknown,
    /// Several calls share the source and the SSRC matches none of them.
    Ambiguous,
}

/// The shared pair's routing table: PBX RTP address → bridge(s), and the bridges still
/// waiting for their first packet (which may latch to another port of the PBX's IP).
pub(super) struct SipRoutes {
    /// The worker's own shared RTP address: a route to it is a hairpin.
    own: Option<SocketAddr>,
    by_source: HashMap<SocketAddr, SipRoute>,
    /// Bridges routed by the PBX's SDP address that have not yet received a packet from it.
    unlatched: Vec<usize>,
}

impl SipRoutes {
    /// An empty table for a worker whose shared RTP socket is `own`.
    pub fn new(own: Option<SocketAddr>) -> SipRoutes {
        SipRoutes {
            own,
            by_source: HashMap::new(),
            unlatched: Vec::new(),
        }
    }

    /// PBX addresses routed (the leak check's table size).
    pub fn len(&self) -> usize {
        self.by_source.len()
    }

    /// The PBX RTP address a datagram's source stands for: RTCP comes from the port above
    /// the RTP port, or from the RTP port itself.
    fn rtp_source(&self, source: SocketAddr, rtcp_socket: bool) -> SocketAddr {
        let below = SocketAddr::new(source.ip(), source.port().wrapping_sub(1));
        if rtcp_socket && self.by_source.contains_key(&below) {
            below
        } else {
            source
        }
    }

    /// The bridge a datagram belongs to by the PBX's RTP address; bridges sharing an
    /// address are told apart by SSRC (RTP's, or an RTCP sender's). `None` when no call is
    /// routed by that address: the caller applies pending commands, looks again, and then
    /// asks [`SipRoutes::latch_candidate`].
    pub fn lookup(
        &mut self,
        slots: &[Option<Bridge>],
        source: SocketAddr,
        rtcp_socket: bool,
        ssrc: Option<u32>,
    ) -> Option<Resolved> {
        let rtp_source = self.rtp_source(source, rtcp_socket);
        let hairpin = self.own == Some(rtp_source);
        Some(match self.by_source.get_mut(&rtp_source)? {
            // One call pointed at our own socket: only its own packets come back; never play
            // a call's audio to itself.
            SipRoute::One(_) if hairpin => Resolved::Unknown,
            SipRoute::One(slot) => Resolved::Bridge {
                slot: *slot,
                alone: true,
            },
            SipRoute::Several(shared) => match ssrc.and_then(|s| pick(shared, slots, s)) {
                Some(slot) => Resolved::Bridge { slot, alone: false },
                None => Resolved::Ambiguous,
            },
        })
    }

    /// For RTP from an address no call is routed by: the one unlatched bridge expecting RTP
    /// from that IP (symmetric RTP from another port, e.g. behind NAT); none or several:
    /// unknown. RTCP never latches.
    pub fn latch_candidate(
        &self,
        slots: &[Option<Bridge>],
        source: SocketAddr,
        rtcp_socket: bool,
    ) -> Resolved {
        if rtcp_socket {
            return Resolved::Unknown;
        }
        let mut candidates = self.unlatched.iter().copied().filter(|&slot| {
            slots[slot]
                .as_ref()
                .and_then(|b| b.sip_remote)
                .is_some_and(|remote| remote.ip() == source.ip())
        });
        match (candidates.next(), candidates.next()) {
            (Some(slot), None) => Resolved::Bridge { slot, alone: true },
            _ => Resolved::Unknown,
        }
    }

    /// Brings the route of the bridge in `slot` in line with its PBX address (after a
    /// connect or a latch), and lists it as unlatched until its first packet. Bridges on
    /// per-call sockets are left alone.
    pub fn reroute(&mut self, slots: &mut [Option<Bridge>], slot: usize) {
        let Some(bridge) = slots[slot].as_ref() else {
            return;
        };
        if !bridge.rtp.is_shared() {
            return;
        }
        let (route, wanted, latched) = (bridge.sip_route, bridge.sip_remote, bridge.latched);
        if route != wanted {
            if let Some(old) = route {
                self.unroute(old, slot);
            }
            if let Some(new) = wanted {
                self.route(slots, new, slot);
            }
            if let Some(bridge) = slots[slot].as_mut() {
                bridge.sip_route = wanted;
            }
        }
        let waiting = wanted.is_some() && !latched;
        let listed = self.unlatched.iter().position(|&s| s == slot);
        match (waiting, listed) {
            (true, None) => self.unlatched.push(slot),
            (false, Some(i)) => {
                self.unlatched.swap_remove(i);
            }
            _ => {}
        }
    }

    /// Drops every trace of the bridge in `slot`, routed by `route`, as it is removed.
    pub fn forget(&mut self, slot: usize, route: Option<SocketAddr>) {
        if let Some(route) = route {
            self.unroute(route, slot);
        }
        self.unlatched.retain(|&s| s != slot);
    }

    /// Adds `slot` to the bridges of PBX address `addr`.
    fn route(&mut self, slots: &[Option<Bridge>], addr: SocketAddr, slot: usize) {
        let Some(bridge) = slots[slot].as_ref() else {
            return;
        };
        let Some(route) = self.by_source.get_mut(&addr) else {
            self.by_source.insert(addr, SipRoute::One(slot));
            return;
        };
        match route {
            SipRoute::One(other) if *other == slot => {}
            SipRoute::One(other) => {
                let mut shared = SharedAddress {
                    slots: Vec::new(),
                    by_ssrc: HashMap::new(),
                    hairpin: self.own == Some(addr),
                };
                if let Some(first) = slots[*other].as_ref() {
                    shared.add(*other, first);
                }
                shared.add(slot, bridge);
                *route = SipRoute::Several(Box::new(shared));
                info!(
                    pbx = %addr,
                    "calls share a PBX RTP address on the shared SIP-leg socket: told apart \
                     by SSRC (rtp.sockets = \"per_call\" avoids relying on it)"
                );
            }
            SipRoute::Several(shared) => {
                shared.add(slot, bridge);
                debug!(pbx = %addr, calls = shared.slots.len(), "another call on a shared PBX address");
            }
        }
    }

    /// Takes `slot` out of the bridges of PBX address `addr`.
    fn unroute(&mut self, addr: SocketAddr, slot: usize) {
        let Some(route) = self.by_source.get_mut(&addr) else {
            return;
        };
        match route {
            SipRoute::One(other) if *other == slot => {
                self.by_source.remove(&addr);
            }
            SipRoute::One(_) => {}
            SipRoute::Several(shared) => {
                shared.slots.retain(|&s| s != slot);
                shared.by_ssrc.retain(|_, s| *s != slot);
                if let [last] = shared.slots[..] {
                    *route = SipRoute::One(last);
                }
            }
        }
    }
}

/// Among bridges sharing one PBX address: the one whose PBX stream (or reflected own stream)
/// has this SSRC, else the only one that has received nothing yet and did not send it (on a
/// hairpin a call's own SSRC marks the sender), which then owns the SSRC.
fn pick(shared: &mut SharedAddress, slots: &[Option<Bridge>], ssrc: u32) -> Option<usize> {
    if let Some(&slot) = shared.by_ssrc.get(&ssrc) {
        return Some(slot);
    }
    let mut fresh = shared.slots.iter().copied().filter(|&slot| {
        slots[slot]
            .as_ref()
            .is_some_and(|bridge| bridge.pbx_ssrc.is_none() && bridge.sip_ssrc != ssrc)
    });
    let (Some(first), None) = (fresh.next(), fresh.next()) else {
        return None;
    };
    shared.by_ssrc.insert(ssrc, first);
    Some(first)
}

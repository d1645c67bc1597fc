//! The SIP-leg RTP port range: even ports for RTP, the next odd port for RTCP.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

/// Hands out RTP/RTCP socket pairs from the configured range, least recently used first so a
/// late packet of an old call does not reach a new one. Control plane only; the lock is
/// taken at call setup and teardown, never per packet.
#[derive(Debug, Clone)]
pub struct PortPool {
    ip: IpAddr,
    free: Arc<Mutex<VecDeque<u16>>>,
    total: usize,
}

/// A bound RTP socket and its RTCP companion; returns its port to the pool when dropped.
#[derive(Debug)]
pub struct RtpPair {
    /// RTP socket (even port).
    pub rtp: UdpSocket,
    /// RTCP socket (RTP port + 1).
    pub rtcp: UdpSocket,
    lease: PortLease,
}

/// Keeps a port out of the pool until dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    free: Arc<Mutex<VecDeque<u16>>>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut free) = self.free.lock() {
            free.push_back(self.port);
        }
    }
}

/// The SIP-leg ports of one call, advertised in its SDP: a pair of its own from the range, or
/// the shared pair of the media worker that relays it (`rtp.sockets`).
#[derive(Debug)]
pub enum SipLegPorts {
    /// Leased for this call alone; released when the bridge drops it.
    PerCall(RtpPair),
    /// The worker's shared pair, at this RTP address.
    Shared(SocketAddr),
}

impl SipLegPorts {
    /// The local RTP address (advertised in SDP).
    pub fn rtp_addr(&self) -> SocketAddr {
        match self {
            SipLegPorts::PerCall(pair) => pair.rtp_addr(),
            SipLegPorts::Shared(addr) => *addr,
        }
    }
}

impl RtpPair {
    /// Splits the pair for a media worker, which keeps the lease as long as the sockets.
    pub fn into_parts(self) -> (UdpSocket, UdpSocket, PortLease) {
        (self.rtp, self.rtcp, self.lease)
    }

    /// The local RTP address (advertised in SDP).
    pub fn rtp_addr(&self) -> SocketAddr {
        self.rtp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new([0, 0, 0, 0].into(), self.lease.port))
    }
}

impl PortPool {
    /// A pool over the even ports of `min..=max` (RTCP on the odd port above each).
    pub fn new(ip: IpAddr, min: u16, max: u16) -> PortPool {
        let first = min + (min % 2);
        let ports: VecDeque<u16> = (first..max).step_by(2).collect();
        PortPool {
            ip,
            total: ports.len(),
            free: Arc::new(Mutex::new(ports)),
        }
    }

    /// Pairs leased now (the soak's leak check).
    pub fn leased(&self) -> usize {
        self.total.saturating_sub(self.available())
    }

    /// Free pairs left.
    pub fn available(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Binds the next free pair; ports taken by other programs are skipped (and retried
    /// later). Fails with `AddrNotAvailable` when the range is exhausted.
    pub fn allocate(&self) -> io::Result<RtpPair> {
        let attempts = self.available();
        for _ in 0..attempts {
            let port = {
                let mut free = self
                    .free
                    .lock()
                    .map_err(|_| io::Error::other("port pool poisoned"))?;
                match free.pop_front() {
                    Some(p) => p,
                    None => break,
                }
            };
            let lease = PortLease {
                port,
                free: self.free.clone(),
            };
            let Ok(rtp) = UdpSocket::bind((self.ip, port)) else {
                continue;
            };
            let Ok(rtcp) = UdpSocket::bind((self.ip, port + 1)) else {
                continue;
            };
            rtp.set_nonblocking(true)?;
            rtcp.set_nonblocking(true)?;
            return Ok(RtpPair { rtp, rtcp, lease });
        }
        Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "SIP-leg RTP port range exhausted",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_returned_on_drop() {
        let pool = PortPool::new([127, 0, 0, 1].into(), 41001, 41006);
        assert_eq!(pool.available(), 2, "41002 and 41004");
        let a = pool.allocate().expect("first pair");
        assert_eq!(a.rtp_addr().port() % 2, 0);
        assert_eq!(
            a.rtcp.local_addr().expect("addr").port(),
            a.rtp_addr().port() + 1
        );
        let b = pool.allocate().expect("second pair");
        assert_eq!(
            pool.allocate().expect_err("exhausted").kind(),
            io::ErrorKind::AddrNotAvailable
        );
        drop(a);
        drop(b);
        assert_eq!(pool.available(), 2);
    }
}

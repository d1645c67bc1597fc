//! Batched UDP I/O for a media worker: `recvmmsg` and `sendmmsg` over buffers allocated once
//! per worker, so one system call moves up to [`MAX_BATCH`] datagrams and no datagram
//! allocates. The kernel's per-syscall cost is most of a relayed packet's cost under load
//! (docs/benchmarks.md), which is why this exists.
//!
//! The only `unsafe` of the media core lives here: the `libc` calls and the raw
//! `sockaddr` conversions, each with its invariant stated. GSO/GRO (`quinn-udp`) was not used:
//! both merge datagrams of one flow (same peer), and a media worker's datagrams go to and come
//! from a different peer each, 50 per second per peer, so there is nothing for them to merge;
//! `sendmmsg` batches datagrams to different destinations.
//!
//! Public so that the `floor` bench measures a bare relay on exactly this socket layer.
#![allow(
    unsafe_code,
    reason = "recvmmsg/sendmmsg have no safe std wrapper; the unsafe is confined to this module"
)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::Duration;

/// Most datagrams one system call moves.
pub const MAX_BATCH: usize = 64;
/// Largest datagram a worker receives or sends (browsers and PBXs stay under ~1,300 bytes).
pub const DATAGRAM: usize = 2048;

/// Room for one datagram's ancillary data: the arrival timestamp (a `cmsghdr` and a
/// `timespec`, 32 bytes on 64-bit Linux) with margin; `u64` keeps the `cmsghdr` aligned.
const CONTROL_WORDS: usize = 8;

/// The buffers both batch directions share: a datagram buffer, an address and an iovec per
/// slot, and the `mmsghdr`s the kernel reads, each pointing at its slot's iovec (which points
/// at its buffer). Boxed slices never move their contents, so the pointers stay valid for as
/// long as the boxes live; the caller points each header at its address (and control data).
struct Slots {
    bufs: Box<[[u8; DATAGRAM]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl Slots {
    /// `size` slots (clamped to 1..=[`MAX_BATCH`]) whose iovecs start `iov_len` long.
    fn new(size: usize, iov_len: usize) -> Slots {
        let size = size.clamp(1, MAX_BATCH);
        let mut bufs = vec![[0u8; DATAGRAM]; size].into_boxed_slice();
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let addrs: Box<[libc::sockaddr_storage]> =
            vec![unsafe { mem::zeroed() }; size].into_boxed_slice();
        let mut iovecs: Box<[libc::iovec]> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len,
            })
            .collect();
        let hdrs = iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is plain old data; all-zero is a valid value (no name, no
                // control data); the iovec pointer is set right below.
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        Slots {
            bufs,
            addrs,
            iovecs,
            hdrs,
        }
    }
}

/// Preallocated receive buffers for one `recvmmsg` call.
pub struct RecvBatch {
    bufs: Box<[[u8; DATAGRAM]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    /// Each datagram's ancillary data (its arrival time when the socket asked for it).
    #[allow(dead_code, reason = "owns the buffers `hdrs` point into")]
    controls: Box<[[u64; CONTROL_WORDS]]>,
    iovecs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Datagrams filled by the last [`RecvBatch::recv`].
    filled: usize,
}

// SAFETY: the raw pointers in `iovecs` and `hdrs` point into `bufs`, `addrs` and `iovecs`,
// heap allocations owned by this value that are never reallocated; moving the value to
// another thread moves their only owner with them.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Buffers for `size` datagrams per call (1..=[`MAX_BATCH`]).
    pub fn new(size: usize) -> RecvBatch {
        let Slots {
            bufs,
            mut addrs,
            iovecs,
            mut hdrs,
        } = Slots::new(size, DATAGRAM);
        let mut controls = vec![[0u64; CONTROL_WORDS]; hdrs.len()].into_boxed_slice();
        for ((h, addr), control) in hdrs
            .iter_mut()
            .zip(addrs.iter_mut())
            .zip(controls.iter_mut())
        {
            // The kernel writes the source address and the ancillary data here.
            h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = sockaddr_storage_len();
            h.msg_hdr.msg_control = control.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = mem::size_of::<[u64; CONTROL_WORDS]>() as _;
        }
        RecvBatch {
            bufs,
            addrs,
            controls,
            iovecs,
            hdrs,
            filled: 0,
        }
    }

    /// How many datagrams the last call returned.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// True when the last call returned nothing (or there was none).
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// How many datagrams one call may return.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives up to [`RecvBatch::capacity`] datagrams without blocking; `Ok(0)` is never
    /// returned (an empty socket is `WouldBlock`). Fewer than the capacity means the socket's
    /// queue was empty when the kernel looked, so edge-triggered readiness will report the
    /// next datagram.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.filled = 0;
        for (h, iov) in self.hdrs.iter_mut().zip(self.iovecs.iter()) {
            h.msg_hdr.msg_namelen = sockaddr_storage_len();
            h.msg_hdr.msg_controllen = mem::size_of::<[u64; CONTROL_WORDS]>() as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
            debug_assert_eq!(iov.iov_len, DATAGRAM);
        }
        let vlen = libc::c_uint::try_from(self.hdrs.len()).unwrap_or(1);
        // SAFETY: every header points at live buffers of the lengths it states (set up in
        // `new`, owned by `self`, borrowed mutably for the call); no timeout pointer.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.filled = usize::try_from(n).unwrap_or(0);
        Ok(self.filled)
    }

    /// Datagram `i` of the last call and its source (`None` for a source that is not IPv4 or
    /// IPv6, which a UDP socket of ours never yields).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.filled {
            return None;
        }
        let len = (self.hdrs[i].msg_len as usize).min(DATAGRAM);
        let source = from_storage(&self.addrs[i], self.hdrs[i].msg_hdr.msg_namelen)?;
        Some((&self.bufs[i][..len], source))
    }

    /// Datagram `i` of the last call, writable (SRTP from the PBX is opened in place), and its
    /// source.
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        if i >= self.filled {
            return None;
        }
        let len = (self.hdrs[i].msg_len as usize).min(DATAGRAM);
        let source = from_storage(&self.addrs[i], self.hdrs[i].msg_hdr.msg_namelen)?;
        Some((&mut self.bufs[i][..len], source))
    }
}

impl RecvBatch {
    /// When datagram `i` of the last call arrived in the socket (wall clock, since the Unix
    /// epoch), if the socket was set up with [`enable_arrival_timestamps`].
    pub fn arrival(&self, i: usize) -> Option<Duration> {
        if i >= self.filled {
            return None;
        }
        let hdr = &self.hdrs[i].msg_hdr;
        if hdr.msg_controllen == 0 || hdr.msg_flags & libc::MSG_CTRUNC != 0 {
            return None;
        }
        // SAFETY: `msg_control`/`msg_controllen` describe this batch's own control buffer as
        // the kernel filled it; CMSG_FIRSTHDR/CMSG_NXTHDR stay within it, and a header is
        // read as a timespec only when the kernel says it carries one (level, type and
        // length checked), unaligned reads for the payload.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                let header = std::ptr::read_unaligned(cmsg);
                let wanted = libc::CMSG_LEN(mem::size_of::<libc::timespec>() as _) as usize;
                if header.cmsg_level == libc::SOL_SOCKET
                    && header.cmsg_type == libc::SCM_TIMESTAMPNS
                    && header.cmsg_len as usize >= wanted
                {
                    let ts: libc::timespec =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                    let secs = u64::try_from(ts.tv_sec).ok()?;
                    let nanos = u32::try_from(ts.tv_nsec).ok()?;
                    return Some(Duration::new(secs, nanos));
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        None
    }
}

/// Asks the kernel to stamp each datagram the socket receives with its arrival time
/// (`SO_TIMESTAMPNS`), which [`RecvBatch::arrival`] reads: the start of the time callgate
/// holds a packet, its queueing in the socket included.
pub fn enable_arrival_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a plain setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Default for RecvBatch {
    /// A batch with no buffers: what a worker leaves in place of its batch while it hands
    /// the batch's datagrams to itself (no allocation).
    fn default() -> RecvBatch {
        RecvBatch {
            bufs: Box::default(),
            addrs: Box::default(),
            controls: Box::default(),
            iovecs: Box::default(),
            hdrs: Box::default(),
            filled: 0,
        }
    }
}

/// Datagrams queued for one socket and sent together with `sendmmsg`.
pub struct SendBatch {
    bufs: Box<[[u8; DATAGRAM]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    queued: usize,
}

// SAFETY: as for `RecvBatch`: the pointers only reach into boxes this value owns.
unsafe impl Send for SendBatch {}

/// What a [`SendBatch::flush`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub sent: u64,
    /// Datagrams it refused (dropped and counted by the caller).
    pub failed: u64,
    /// System calls made.
    pub calls: u64,
}

impl Flushed {
    /// Adds another flush's outcome.
    pub fn add(&mut self, other: Flushed) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.calls += other.calls;
    }
}

impl SendBatch {
    /// Room for `size` datagrams (1..=[`MAX_BATCH`]).
    pub fn new(size: usize) -> SendBatch {
        let Slots {
            bufs,
            mut addrs,
            iovecs,
            mut hdrs,
        } = Slots::new(size, 0);
        for (h, addr) in hdrs.iter_mut().zip(addrs.iter_mut()) {
            // `push` writes each destination here and sets the length it uses.
            h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
        }
        SendBatch {
            bufs,
            addrs,
            iovecs,
            hdrs,
            queued: 0,
        }
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// True when the next push needs a flush first.
    pub fn is_full(&self) -> bool {
        self.queued == self.hdrs.len()
    }

    /// Copies a datagram in; false (and nothing queued) when full or larger than
    /// [`DATAGRAM`]. The caller flushes when [`SendBatch::is_full`].
    pub fn push(&mut self, contents: &[u8], to: SocketAddr) -> bool {
        if self.is_full() || contents.len() > DATAGRAM {
            return false;
        }
        let i = self.queued;
        self.bufs[i][..contents.len()].copy_from_slice(contents);
        self.iovecs[i].iov_len = contents.len();
        self.hdrs[i].msg_hdr.msg_namelen = to_storage(to, &mut self.addrs[i]);
        self.hdrs[i].msg_len = 0;
        self.queued += 1;
        true
    }

    /// Sends everything queued on `fd` (one `sendmmsg` per run of datagrams the kernel
    /// takes; a datagram it refuses is skipped and counted as failed) and empties the batch.
    pub fn flush(&mut self, fd: RawFd) -> Flushed {
        let mut done = Flushed::default();
        let mut start = 0;
        while start < self.queued {
            let vlen = libc::c_uint::try_from(self.queued - start).unwrap_or(1);
            done.calls += 1;
            // SAFETY: headers start..queued point at live buffers whose lengths were set by
            // `push`; the batch is borrowed mutably for the call.
            let n = unsafe { libc::sendmmsg(fd, self.hdrs[start..].as_mut_ptr(), vlen, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first datagram was refused (a full send buffer, an unreachable
                // destination): drop it and go on with the rest.
                done.failed += 1;
                start += 1;
            } else {
                let n = usize::try_from(n).unwrap_or(0).max(1);
                done.sent += n as u64;
                start += n;
            }
        }
        self.queued = 0;
        done
    }
}

fn sockaddr_storage_len() -> libc::socklen_t {
    libc::socklen_t::try_from(mem::size_of::<libc::sockaddr_storage>()).unwrap_or(128)
}

/// Writes `addr` into `storage` as the kernel expects it; returns its length.
fn to_storage(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe {
                std::ptr::write(
                    (storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                    sin,
                )
            };
            libc::socklen_t::try_from(mem::size_of::<libc::sockaddr_in>()).unwrap_or(16)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe {
                std::ptr::write(
                    (storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
            libc::socklen_t::try_from(mem::size_of::<libc::sockaddr_in6>()).unwrap_or(28)
        }
    }
}

/// Reads a source address the kernel wrote into `storage`.
fn from_storage(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is long enough.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn addresses_round_trip_through_sockaddr_storage() {
        for addr in [
            "127.0.0.1:5004".parse::<SocketAddr>(),
            "[::1]:40000".parse::<SocketAddr>(),
            "203.0.113.9:65535".parse::<SocketAddr>(),
        ] {
            let addr = addr.expect("literal address");
            // SAFETY: plain old data.
            let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
            let len = to_storage(addr, &mut storage);
            assert_eq!(from_storage(&storage, len), Some(addr));
        }
    }

    #[test]
    fn a_batch_goes_out_in_one_call_and_comes_back_in_one_call() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind rx");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind tx");
        let to = rx.local_addr().expect("rx addr");
        let from = tx.local_addr().expect("tx addr");
        let mut out = SendBatch::new(4);
        for i in 0..4u8 {
            assert!(out.push(&[i; 10], to));
        }
        assert!(out.is_full());
        assert!(!out.push(&[9; 10], to), "a full batch takes nothing more");
        let flushed = out.flush(tx.as_raw_fd());
        assert_eq!(
            flushed,
            Flushed {
                sent: 4,
                failed: 0,
                calls: 1
            }
        );
        assert!(out.is_empty());
        rx.set_nonblocking(true).expect("nonblocking");
        let mut batch = RecvBatch::new(8);
        let n = batch
            .recv(rx.as_raw_fd())
            .expect("four datagrams are queued");
        assert_eq!(n, 4, "one call takes every queued datagram");
        for i in 0..4 {
            let (data, source) = batch.get(i).expect("filled");
            assert_eq!(source, from);
            assert_eq!(data, &[i as u8; 10]);
        }
        assert!(batch.get(4).is_none());
        assert!(
            batch.arrival(0).is_none(),
            "no arrival time unless the socket asked for it"
        );
        let empty = batch.recv(rx.as_raw_fd()).expect_err("nothing left");
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_refused_datagram_is_counted_and_the_rest_still_goes() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind rx");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind tx");
        let to = rx.local_addr().expect("rx addr");
        let mut out = SendBatch::new(3);
        assert!(out.push(b"one", to));
        // An IPv6 destination on an IPv4 socket is refused by the kernel.
        assert!(out.push(b"two", "[::1]:9".parse().expect("literal")));
        assert!(out.push(b"three", to));
        let flushed = out.flush(tx.as_raw_fd());
        assert_eq!(flushed.sent, 2);
        assert_eq!(flushed.failed, 1);
        let mut buf = [0u8; 16];
        let (n, _) = rx.recv_from(&mut buf).expect("first");
        assert_eq!(&buf[..n], b"one");
        let (n, _) = rx.recv_from(&mut buf).expect("third");
        assert_eq!(&buf[..n], b"three");
    }

    #[test]
    fn arrival_times_are_read_from_the_kernel_stamps() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind rx");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind tx");
        enable_arrival_timestamps(rx.as_raw_fd()).expect("SO_TIMESTAMPNS");
        rx.set_nonblocking(true).expect("nonblocking");
        let to = rx.local_addr().expect("rx addr");
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        for i in 0..3u8 {
            tx.send_to(&[i; 20], to).expect("send");
        }
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        let mut batch = RecvBatch::new(8);
        assert_eq!(batch.recv(rx.as_raw_fd()).expect("three queued"), 3);
        let mut previous = Duration::ZERO;
        for i in 0..3 {
            let at = batch.arrival(i).expect("stamped");
            assert!(
                at >= before.saturating_sub(Duration::from_millis(5))
                    && at <= after + Duration::from_millis(5),
                "{at:?} not within {before:?}..{after:?}"
            );
            assert!(at >= previous, "stamps in arrival order");
            previous = at;
        }
        assert!(batch.arrival(3).is_none());
    }
}

//! Live Linux interfaces through `AF_PACKET`: a `TPACKET_V3` mmap receive ring per interface
//! ([`AfPacketRx`]) and a batched `sendmmsg` transmitter ([`AfPacketTx`]).
//!
//! Own code over `libc`: the crates that wrap `AF_PACKET` rings are unmaintained, GPL, or
//! young, and the part we need (open, one ring, walk its blocks, send a batch) is small.
//!
//! # Receive
//!
//! [`AfPacketRx::open`] creates a raw packet socket that receives nothing until it is bound
//! (protocol 0), switches it to `TPACKET_V3`, maps a ring of [`RingConfig::block_count`]
//! blocks of [`RingConfig::block_size`] bytes, optionally turns on `PACKET_IGNORE_OUTGOING`
//! (frames sent *out of* the interface, ours included, are never read back: what an inline
//! port needs; a passive port leaves it off, so that it also sees what the local host sends
//! on a tapped interface), binds it to the interface for every protocol and puts the interface in promiscuous mode (a membership: the kernel turns it
//! off again when the socket closes). The kernel fills a block and hands it to us when it is
//! full or after [`RingConfig::block_timeout_ms`] — the latency a lone frame can see.
//! [`AfPacketRx::next_frame`] returns the next frame of the current block, borrowing the ring
//! until the next call, and gives a block back to the kernel once every frame of it was
//! returned; `Ok(None)` means "nothing now", never "the end" (a live interface does not end).
//! The caller copies each frame once (into the packet pool).
//!
//! # Transmit
//!
//! [`AfPacketTx`] is a second packet socket on the interface that receives nothing (protocol
//! 0, never bound to a protocol) and sends whole Ethernet frames: [`AfPacketTx::queue`]
//! copies a frame into a batch, [`AfPacketTx::flush`] sends the batch with `sendmmsg` (one
//! system call for up to [`TX_BATCH`] frames). A `TPACKET` TX ring would save that copy, but
//! it needs its own mapping, a status handshake per slot and a `send` kick anyway; at the
//! rates a veth or a 10 Gb/s link gives a single core the copy is not the bottleneck (the pool
//! copy on receive is made anyway), so the simpler path was chosen.
//!
//! # Kernel facts
//!
//! * Offloads: with GRO/LRO the kernel hands over merged frames larger than the MTU, and with
//!   TX checksum offload on a local sender a frame's checksum is not filled in yet
//!   (`TP_STATUS_CSUMNOTREADY`, counted in [`KernelStats::csum_not_ready`]). Turn them off:
//!   `ethtool -K IF gro off gso off tso off tx off` (docs/live.md).
//! * [`AfPacketRx::stats`] reads `PACKET_STATISTICS` (`tp_drops`: frames the ring had no room
//!   for; `tp_freeze_q_cnt`: times the ring was full). Reading resets the kernel's counters;
//!   the values here are accumulated.
//! * 802.1Q tags are taken out of the frame by the kernel (they are in the ring header, not in
//!   the bytes); a frame is handed on as the kernel gives it, untagged.
//!
//! Everything needs root or `CAP_NET_RAW`; every error names the interface and the step.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{PacketRecord, PortError};

/// Frames per `sendmmsg` call at most.
pub const TX_BATCH: usize = 64;

/// The receive ring's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block: a multiple of the page size; also the largest frame the ring can take.
    pub block_size: u32,
    /// Blocks in the ring (the ring is `block_size * block_count` bytes per interface).
    pub block_count: u32,
    /// A block that holds frames is handed over after this many milliseconds even when not
    /// full (1 or more): the most a lone frame waits in the kernel.
    pub block_timeout_ms: u32,
}

impl Default for RingConfig {
    /// 64 blocks of 256 KiB (16 MiB per interface), 1 ms block timeout.
    fn default() -> RingConfig {
        RingConfig { block_size: 1 << 18, block_count: 64, block_timeout_ms: 1 }
    }
}

/// The ring's frame slot size hint (`tp_frame_size`); `TPACKET_V3` packs frames of any size.
const FRAME_SIZE: u32 = 2048;

/// Counters of one interface's receive ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames the kernel passed to the socket (`tp_packets`, dropped ones included).
    pub packets: u64,
    /// Frames dropped because the ring was full (`tp_drops`).
    pub drops: u64,
    /// Times the ring was frozen full (`tp_freeze_q_cnt`).
    pub freezes: u64,
    /// Frames whose checksum the sender's TX offload had not filled in.
    pub csum_not_ready: u64,
}

fn iface_err(iface: &str, action: &str, source: io::Error) -> PortError {
    PortError::Interface { iface: iface.to_string(), action: action.to_string(), source }
}

fn ifindex(iface: &str) -> Result<i32, PortError> {
    let name = CString::new(iface).map_err(|_| {
        iface_err(
            iface,
            "looking up the interface",
            io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in the name"),
        )
    })?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(iface_err(
            iface,
            "looking up the interface (is it in this network namespace?)",
            io::Error::last_os_error(),
        ));
    }
    Ok(idx as i32)
}

fn packet_socket(iface: &str) -> Result<OwnedFd, PortError> {
    // SAFETY: plain system call; protocol 0 means the socket receives nothing until bound.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let action = if e.raw_os_error() == Some(libc::EPERM) {
            "opening a packet socket (needs root or CAP_NET_RAW)"
        } else {
            "opening a packet socket"
        };
        return Err(iface_err(iface, action, e));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` and we pass its exact size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn bind(fd: &OwnedFd, ifindex: i32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is a valid sockaddr_ll and we pass its exact size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A `TPACKET_V3` receive ring on one interface (see the module docs).
pub struct AfPacketRx {
    iface: String,
    fd: OwnedFd,
    ring: *mut u8,
    cfg: RingConfig,
    /// The block being read (or to be read next).
    block: usize,
    /// True while `block` is ours (its status said so) and not yet given back.
    holding: bool,
    /// Frames of the held block not yet returned, and the offset of the next one.
    left: u32,
    offset: usize,
    stats: KernelStats,
}

// SAFETY: the ring is a private mapping of this value's socket; only `&mut self` methods touch
// it, so moving the value to another thread moves sole access with it.
unsafe impl Send for AfPacketRx {}

impl AfPacketRx {
    /// Opens `iface` for receiving (see the module docs); with `ignore_outgoing`, frames sent
    /// out of the interface (by anyone) are not received.
    pub fn open(iface: &str, cfg: RingConfig, ignore_outgoing: bool) -> Result<AfPacketRx, PortError> {
        let page = 4096u32;
        if cfg.block_size == 0
            || !cfg.block_size.is_multiple_of(page)
            || cfg.block_count == 0
            || cfg.block_timeout_ms == 0
        {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "block size {} must be a positive multiple of {page}, block count {} and block timeout {} ms at least 1",
                    cfg.block_size, cfg.block_count, cfg.block_timeout_ms
                ),
            );
            return Err(iface_err(iface, "configuring the ring", e));
        }
        let index = ifindex(iface)?;
        let fd = packet_socket(iface)?;
        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)
            .map_err(|e| iface_err(iface, "selecting TPACKET_V3", e))?;
        let req = libc::tpacket_req3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.block_count,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: cfg.block_size / FRAME_SIZE * cfg.block_count,
            tp_retire_blk_tov: cfg.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(|e| iface_err(iface, "creating the receive ring (PACKET_RX_RING)", e))?;
        let len = cfg.block_size as usize * cfg.block_count as usize;
        // SAFETY: maps the ring the kernel just created for this socket; the length is the
        // ring's exact size. The mapping is unmapped in Drop.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(iface_err(iface, "mapping the receive ring", io::Error::last_os_error()));
        }
        // From here on, Drop unmaps the ring whatever fails.
        let rx = AfPacketRx {
            iface: iface.to_string(),
            fd,
            ring: ring.cast(),
            cfg,
            block: 0,
            holding: false,
            left: 0,
            offset: 0,
            stats: KernelStats::default(),
        };
        if ignore_outgoing {
            let one: libc::c_int = 1;
            setsockopt(&rx.fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)
                .map_err(|e| iface_err(iface, "ignoring outgoing frames (PACKET_IGNORE_OUTGOING, Linux 4.20+)", e))?;
        }
        bind(&rx.fd, index, libc::ETH_P_ALL as u16).map_err(|e| iface_err(iface, "binding the packet socket", e))?;
        let mreq = libc::packet_mreq {
            mr_ifindex: index,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt(&rx.fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(|e| iface_err(iface, "turning on promiscuous mode", e))?;
        Ok(rx)
    }

    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    fn block_ptr(&self, i: usize) -> *mut libc::tpacket_block_desc {
        // SAFETY: `i < block_count`, so the offset stays inside the mapping.
        unsafe { self.ring.add(i * self.cfg.block_size as usize) }.cast()
    }

    fn corrupt(&self, detail: String) -> PortError {
        iface_err(&self.iface, "reading the receive ring", io::Error::new(io::ErrorKind::InvalidData, detail))
    }

    /// True when a frame is waiting (the next [`AfPacketRx::next_frame`] returns it). Gives
    /// back to the kernel a block whose frames were all returned.
    pub fn ready(&mut self) -> bool {
        loop {
            if self.left > 0 {
                return true;
            }
            let bd = self.block_ptr(self.block);
            if self.holding {
                // SAFETY: the block descriptor lies at the start of a block of the mapping;
                // the release fence orders our reads of the block before the hand-back.
                unsafe {
                    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                    std::ptr::write_volatile(
                        std::ptr::addr_of_mut!((*bd).hdr.bh1.block_status),
                        libc::TP_STATUS_KERNEL,
                    );
                }
                self.holding = false;
                self.block = (self.block + 1) % self.cfg.block_count as usize;
                continue;
            }
            // SAFETY: as above; the kernel writes the status last, and the acquire fence orders
            // our reads of the block after it.
            let (status, num, first) = unsafe {
                let st = std::ptr::read_volatile(std::ptr::addr_of!((*bd).hdr.bh1.block_status));
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                (st, (*bd).hdr.bh1.num_pkts, (*bd).hdr.bh1.offset_to_first_pkt)
            };
            if status & libc::TP_STATUS_USER == 0 {
                return false;
            }
            self.holding = true;
            self.left = num;
            self.offset = first as usize;
        }
    }

    /// The next received frame, borrowing the ring until the next call; `Ok(None)` when none
    /// is waiting now.
    pub fn next_frame(&mut self) -> Result<Option<PacketRecord<'_>>, PortError> {
        if !self.ready() {
            return Ok(None);
        }
        let bs = self.cfg.block_size as usize;
        let hdr_len = std::mem::size_of::<libc::tpacket3_hdr>();
        if self.offset + hdr_len > bs {
            return Err(self.corrupt(format!("frame header at offset {} beyond the block", self.offset)));
        }
        let base = self.block_ptr(self.block).cast::<u8>();
        // SAFETY: the block is ours (TP_STATUS_USER seen) and the header lies inside it
        // (checked above); the kernel aligns headers to TPACKET_ALIGNMENT.
        let h = unsafe { std::ptr::read(base.add(self.offset).cast::<libc::tpacket3_hdr>()) };
        let start = self.offset + usize::from(h.tp_mac);
        let len = h.tp_snaplen as usize;
        if start + len > bs {
            return Err(self.corrupt(format!("frame of {len} bytes at offset {start} beyond the block")));
        }
        if h.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0 {
            self.stats.csum_not_ready += 1;
        }
        self.left -= 1;
        self.offset += h.tp_next_offset as usize;
        // SAFETY: `start + len <= block_size` (checked), the block stays ours until a later
        // call gives it back, and the borrow of `self` keeps that call away.
        let data = unsafe { std::slice::from_raw_parts(base.add(start), len) };
        let ts_ns = u64::from(h.tp_sec) * 1_000_000_000 + u64::from(h.tp_nsec);
        Ok(Some(PacketRecord { ts_ns, data, orig_len: h.tp_len }))
    }

    /// The ring's counters as last read by [`stats`](AfPacketRx::stats) (no system call).
    pub fn last_stats(&self) -> KernelStats {
        self.stats
    }

    /// The ring's counters so far (reads and accumulates `PACKET_STATISTICS`).
    pub fn stats(&mut self) -> Result<KernelStats, PortError> {
        // SAFETY: plain old data; zeroed is valid.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` is writable and `len` is its exact size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(iface_err(&self.iface, "reading the ring statistics", io::Error::last_os_error()));
        }
        self.stats.packets += u64::from(st.tp_packets);
        self.stats.drops += u64::from(st.tp_drops);
        self.stats.freezes += u64::from(st.tp_freeze_q_cnt);
        Ok(self.stats)
    }
}

impl Drop for AfPacketRx {
    fn drop(&mut self) {
        let len = self.cfg.block_size as usize * self.cfg.block_count as usize;
        // SAFETY: `ring` is the mapping made in `open`, of exactly `len` bytes, and no frame
        // borrows it any more (`&mut self`).
        unsafe { libc::munmap(self.ring.cast(), len) };
    }
}

/// A batched transmitter on one interface (see the module docs).
pub struct AfPacketTx {
    iface: String,
    fd: OwnedFd,
    /// Queued frames, back to back, and where each ends.
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Frames sent, and frames the kernel refused (with the last refusal).
    sent: u64,
    failed: u64,
    last_error: Option<io::Error>,
}

impl AfPacketTx {
    /// Opens `iface` for sending.
    pub fn open(iface: &str) -> Result<AfPacketTx, PortError> {
        let index = ifindex(iface)?;
        let fd = packet_socket(iface)?;
        // Protocol 0: the socket is bound to the interface but receives nothing.
        bind(&fd, index, 0).map_err(|e| iface_err(iface, "binding the sending socket", e))?;
        Ok(AfPacketTx {
            iface: iface.to_string(),
            fd,
            bytes: Vec::with_capacity(TX_BATCH * 2048),
            ends: Vec::with_capacity(TX_BATCH),
            sent: 0,
            failed: 0,
            last_error: None,
        })
    }

    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Queues a copy of `frame`; sends the batch when it is full.
    pub fn queue(&mut self, frame: &[u8]) {
        self.bytes.extend_from_slice(frame);
        self.ends.push(self.bytes.len());
        if self.ends.len() >= TX_BATCH {
            self.flush();
        }
    }

    /// Sends every queued frame (`sendmmsg`, retried until all were taken or one is refused;
    /// a refused frame is counted in [`AfPacketTx::failed`] and skipped).
    pub fn flush(&mut self) {
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for &end in &self.ends {
            iov.push(libc::iovec {
                // The kernel only reads through this pointer (send path).
                iov_base: self.bytes[start..end].as_ptr() as *mut libc::c_void,
                iov_len: end - start,
            });
            start = end;
        }
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain old data; all-zero is valid (no address: the socket's
                // bound interface is used).
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut done = 0;
        while done < msgs.len() {
            let rest = &mut msgs[done..];
            // SAFETY: every header points at one iovec of `iov`, which points into `bytes`;
            // all outlive the call, and `rest.len()` is the exact number of headers.
            let n = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first frame of the rest was refused: count it and go on with the others.
                self.failed += 1;
                self.last_error = Some(e);
                done += 1;
            } else {
                self.sent += n as u64;
                done += n as usize;
            }
        }
        self.bytes.clear();
        self.ends.clear();
    }

    /// Frames sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Frames the kernel refused so far (e.g. larger than the MTU, interface down).
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// The last refusal, if any.
    pub fn last_error(&self) -> Option<&io::Error> {
        self.last_error.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_and_geometry_are_named() {
        let e = AfPacketRx::open("no-such-if0", RingConfig::default(), true).err().unwrap().to_string();
        assert!(e.contains("no-such-if0"), "{e}");
        let cfg = RingConfig { block_size: 1000, ..RingConfig::default() };
        let e = AfPacketRx::open("lo", cfg, true).err().unwrap().to_string();
        assert!(e.contains("lo") && e.contains("block size 1000"), "{e}");
        assert!(AfPacketTx::open("no-such-if0").err().unwrap().to_string().contains("no-such-if0"));
    }
}

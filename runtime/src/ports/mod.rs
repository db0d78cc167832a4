//! Packet ports: where frames enter and leave the platform.
//!
//! Five pieces live here, each in its own module:
//!
//! * [`pcap`] — [`PcapReader`], a streaming reader for legacy pcap (micro- and nanosecond
//!   resolution, either byte order) and pcapng files, built on `pcap-parser`'s block
//!   parsers. It never loads a whole file: it keeps one bounded buffer and hands out each
//!   frame as a [`PacketRecord`] that borrows that buffer until the next call.
//! * [`writer`] — [`PcapWriter`], a small buffered writer of nanosecond legacy pcap files,
//!   the format every tool (Wireshark, tcpdump, tshark) reads.
//! * [`gen`] — a deterministic traffic generator: seeded TCP (HTTP/1.1 keep-alive) and UDP
//!   (DNS-like) flows, interleaved, with correct checksums and sequence arithmetic, and a
//!   summary of exactly what it wrote, so tests can check a pipeline against ground truth.
//! * [`af_packet`] — live Linux interfaces: a `TPACKET_V3` receive ring ([`AfPacketRx`]) and
//!   a batched `sendmmsg` transmitter ([`AfPacketTx`]) per interface (docs/live.md).
//! * `dpdk` (feature `dpdk`) — DPDK ports through the system's DPDK: EAL set-up, RX queues
//!   with RSS where the device has it, frames received straight into the pool (zero-copy)
//!   or copied into it (docs/dpdk.md).
//! * [`rst`] — [`Resets`], the two TCP `RST|ACK` frames that reset both ends of the
//!   connection a frame belongs to (an inline IPS's `reject`).
//!
//! # Contract shared by the ports
//!
//! * Timestamps are nanoseconds since the Unix epoch (`u64`), whatever the file stored.
//! * A frame carries its captured bytes and its original length on the wire; the captured
//!   length is `data.len()`.
//! * Every failure is a [`PortError`] that names the file (or the name given to an
//!   in-memory source) and, for malformed input, the byte offset of the bad record. The
//!   reader never panics on any input; the fuzz target `pcap_reader` checks that.
//!
//! ```
//! use runtime::ports::{LinkType, PcapReader, PcapWriter};
//!
//! let mut w = PcapWriter::to_vec(LinkType::Ethernet);
//! w.write(1_000, &[0u8; 60], 60).unwrap();
//! let bytes = w.into_inner().unwrap();
//!
//! let mut r = PcapReader::from_bytes("mem", bytes).unwrap();
//! let p = r.next_packet().unwrap().unwrap();
//! assert_eq!((p.ts_ns, p.data.len(), p.orig_len), (1_000, 60, 60));
//! assert!(r.next_packet().unwrap().is_none());
//! ```

pub mod af_packet;
#[cfg(feature = "dpdk")]
pub mod dpdk;

/// One DPDK port's counters (`rte_eth_stats`). Plain data, outside the `dpdk` feature, so that
/// reports can carry them in every build.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DpdkStats {
    /// Frames received (`ipackets`).
    pub ipackets: u64,
    /// Frames sent (`opackets`).
    pub opackets: u64,
    /// Bytes received (`ibytes`).
    pub ibytes: u64,
    /// Bytes sent (`obytes`).
    pub obytes: u64,
    /// Frames the device dropped because its RX queue was full (`imissed`): they never
    /// reached `rx` and are not in the run's packets in.
    pub imissed: u64,
    /// Erroneous frames received (`ierrors`).
    pub ierrors: u64,
    /// Failed transmissions (`oerrors`).
    pub oerrors: u64,
    /// Frames dropped because no mbuf was free to receive them (`rx_nombuf`).
    pub rx_nombuf: u64,
    /// Each RX queue's counters (`q_ipackets`, `q_ibytes`, `q_errors`; DPDK keeps them for
    /// the first 16 queues), in queue order.
    pub queues: Vec<DpdkQueueStats>,
}

/// One RX queue's counters (from `rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DpdkQueueStats {
    /// Frames received on the queue (`q_ipackets`).
    pub ipackets: u64,
    /// Their bytes (`q_ibytes`).
    pub ibytes: u64,
    /// Frames dropped in the queue (`q_errors`).
    pub errors: u64,
}
pub mod gen;
pub mod pcap;
pub mod rst;
pub mod writer;

use std::path::PathBuf;

pub use af_packet::{AfPacketRx, AfPacketTx, KernelStats, RingConfig};
pub use pcap::{PcapReader, ReaderStats};
pub use rst::{Resets, RstError};
pub use writer::{PcapWriter, Sink};

/// The link layer of every frame in a capture.
///
/// A capture holds one link type; the reader refuses pcapng files whose interfaces
/// disagree, so a consumer never has to switch decoders mid-stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum LinkType {
    /// Ethernet II (`LINKTYPE_ETHERNET`, 1), optionally 802.1Q-tagged.
    Ethernet,
    /// Bare IPv4 or IPv6 packets (`LINKTYPE_RAW` 101, `LINKTYPE_IPV4` 228, `LINKTYPE_IPV6` 229).
    RawIp,
    /// Linux "cooked" capture v1 (`LINKTYPE_LINUX_SLL`, 113).
    LinuxSll,
}

impl LinkType {
    /// Maps a pcap/pcapng `LINKTYPE_*` number to a link type, or `None` if unsupported.
    pub fn from_pcap(linktype: u32) -> Option<LinkType> {
        match linktype {
            1 => Some(LinkType::Ethernet),
            101 | 228 | 229 => Some(LinkType::RawIp),
            113 => Some(LinkType::LinuxSll),
            _ => None,
        }
    }

    /// The `LINKTYPE_*` number written to files (`RawIp` is written as 101, `LINKTYPE_RAW`).
    pub fn to_pcap(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::RawIp => 101,
            LinkType::LinuxSll => 113,
        }
    }
}

/// One captured frame, borrowed from the reader's buffer.
///
/// The borrow ends at the next call to [`PcapReader::next_packet`]; copy `data` to keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketRecord<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The captured bytes (`data.len()` is the captured length).
    pub data: &'a [u8],
    /// The frame's length on the wire, as the capture recorded it (it may exceed
    /// `data.len()` when the capture clipped the frame to its snap length).
    pub orig_len: u32,
}

/// Why a port could not open, read or write a capture.
///
/// `path` is the file's path, or the name given to an in-memory source or sink.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The operating system refused an open, read or write.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The input does not start like a pcap or pcapng file (empty, garbage, or a header
    /// that is cut short).
    #[error("{}: not a pcap or pcapng capture: {detail}", path.display())]
    NotACapture { path: PathBuf, detail: String },
    /// The capture's link type is not one of [`LinkType`]'s.
    #[error("{}: unsupported link type {linktype}", path.display())]
    UnsupportedLinkType { path: PathBuf, linktype: u32 },
    /// A pcapng file whose interfaces do not share one link type.
    #[error(
        "{}: interfaces have different link types ({first} and {other}); one link type per capture is supported",
        path.display()
    )]
    MixedLinkTypes { path: PathBuf, first: u32, other: u32 },
    /// A record or block that cannot be right (absurd length, inconsistent fields,
    /// a packet on an interface that was never described). `offset` is the byte offset
    /// of the record or block from the start of the file.
    #[error("{}: corrupt capture at byte offset {offset}: {detail}", path.display())]
    Corrupt { path: PathBuf, offset: u64, detail: String },
    /// The writer was asked to store a frame larger than its snap length.
    #[error("{}: frame of {len} bytes exceeds the snap length {snaplen}", path.display())]
    FrameTooLarge { path: PathBuf, len: usize, snaplen: u32 },
    /// A live interface could not be opened or read (`action` says which step failed).
    #[error("interface `{iface}`: {action}: {source}")]
    Interface {
        iface: String,
        action: String,
        #[source]
        source: std::io::Error,
    },
}

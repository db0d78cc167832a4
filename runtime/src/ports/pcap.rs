//! A streaming reader for legacy pcap and pcapng captures.
//!
//! # Contract
//!
//! [`PcapReader`] reads a capture front to back, one frame per
//! [`next_packet`](PcapReader::next_packet) call, from a file or from bytes in memory. It
//! recognises the format from the first four bytes:
//!
//! * legacy pcap with microsecond (`0xa1b2c3d4`) or nanosecond (`0xa1b23c4d`) timestamps,
//!   in either byte order, and the little-endian "modified" (Kuznetzov) variant
//!   (`0xa1b2cd34`);
//! * pcapng (`0x0a0d0d0a`), either byte order, any number of sections.
//!
//! The record and block layouts are decoded by `pcap-parser`'s parsers; this module owns the
//! buffering, the limits and the policies below. Timestamps come out in nanoseconds since
//! the epoch.
//!
//! # Invariants
//!
//! * **Bounded memory.** The reader holds one buffer. It starts at 1 MiB (or the input's
//!   size, if smaller) and grows only to fit one record or block, which is at most
//!   [`MAX_BLOCK`] bytes; the whole file is never loaded.
//! * **No panics.** Every length is checked before it is used; malformed input becomes a
//!   [`PortError`], never a panic or an unbounded allocation (the fuzz target
//!   `pcap_reader` exercises this).
//! * **Offsets.** [`PortError::Corrupt`] names the byte offset, from the start of the file,
//!   of the record or block that was wrong.
//! * After `next_packet` has returned an error or `Ok(None)`, the reader is finished and
//!   every later call returns `Ok(None)`.
//!
//! # Policies
//!
//! * **Killed captures.** A file that ends in the middle of a record or block (a capture
//!   process that was killed, a copy still in progress) ends the stream cleanly: the
//!   packets before the cut are returned, then `Ok(None)`, and
//!   [`ReaderStats::truncated_tail`] is set so the caller can report it.
//! * **Absurd lengths.** A record whose captured length exceeds [`MAX_CAPLEN`] (256 KiB),
//!   or exceeds its snap length by more than [`SNAPLEN_SLACK`] bytes (a snap length of 0
//!   means "none"), is [`PortError::Corrupt`]: it is almost certainly a misaligned or
//!   damaged record, and continuing would produce garbage frames. A pcapng block longer
//!   than [`MAX_BLOCK`], shorter than 12 bytes, or not a multiple of 4 is corrupt too.
//! * **Clipped frames.** A record that captured fewer bytes than were on the wire is
//!   returned as is (`data.len() < orig_len`) and counted in
//!   [`ReaderStats::snaplen_clipped`]. A legacy record claiming `orig_len < caplen` is
//!   passed through unchanged.
//! * **pcapng timestamps** use each interface's `if_tsresol` (decimal or binary; default
//!   microseconds) and `if_tsoffset` (seconds added to every timestamp; negative results
//!   clamp to 0). A resolution finer than 10^-19 s or 2^-63 s is corrupt.
//! * **pcapng blocks.** Enhanced and Simple Packet Blocks yield frames. A Simple Packet
//!   Block carries no timestamp: it gets the timestamp of the previous frame of the file
//!   (0 if it is the first), which keeps timestamps non-decreasing; its captured length is
//!   the smallest of its original length, its data, and interface 0's snap length. Every
//!   other block (name resolution, interface statistics, decryption secrets, custom,
//!   unknown types) is skipped and counted in [`ReaderStats::skipped_blocks`]; section
//!   headers and interface descriptions are consumed, not counted. A new section resets
//!   the interface list, as the format says.
//! * **One link type.** All interfaces of all sections must decode as the same
//!   [`LinkType`]; otherwise [`PortError::MixedLinkTypes`] names both numbers. A link type
//!   outside [`LinkType`] is [`PortError::UnsupportedLinkType`]. A pcapng file must describe
//!   an interface before its first packet (else `Corrupt`), and one that ends before any
//!   interface description has no link type to report, so opening it fails with
//!   [`PortError::NotACapture`].
//! * **Not a capture.** An empty file, unknown magic, or a header cut short is
//!   [`PortError::NotACapture`]. Legacy pcap's `thiszone` field is ignored (every writer
//!   sets it to 0).

use std::fs::File;
use std::io::{Cursor, ErrorKind, Read};
use std::path::{Path, PathBuf};

use pcap_parser::pcap::{parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header};
use pcap_parser::pcapng::{parse_block_be, parse_block_le, parse_sectionheaderblock, Block};

use super::{LinkType, PacketRecord, PortError};

/// Largest captured length accepted for one frame (256 KiB).
pub const MAX_CAPLEN: u32 = 256 * 1024;
/// How far a captured length may exceed the capture's snap length before it is corrupt.
pub const SNAPLEN_SLACK: u32 = 4096;
/// Largest pcapng block accepted (16 MiB); this also bounds the reader's buffer.
pub const MAX_BLOCK: usize = 16 * 1024 * 1024;

const INITIAL_BUFFER: usize = 1024 * 1024;
const SHB_MAGIC: u32 = 0x0a0d_0d0a;
const BOM_MAGIC: u32 = 0x1a2b_3c4d;
/// `if_tsoffset` option code in an Interface Description Block.
const OPT_IF_TSOFFSET: u16 = 14;

/// Counters describing what the reader has seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReaderStats {
    /// Frames returned.
    pub packets: u64,
    /// Captured bytes returned (sum of `data.len()`).
    pub bytes: u64,
    /// The file ended in the middle of a record or block.
    pub truncated_tail: bool,
    /// pcapng blocks that carried no packet and were skipped (not counting section headers
    /// and interface descriptions).
    pub skipped_blocks: u64,
    /// Frames whose captured length is below their original length.
    pub snaplen_clipped: u64,
}

#[derive(Clone, Copy, Debug)]
enum Legacy {
    Le,
    Be,
    Modified,
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    snaplen: u32,
    /// Timestamp units per second.
    units_per_sec: u128,
    /// Seconds added to every timestamp.
    ts_offset: i64,
}

#[derive(Debug)]
enum Format {
    Legacy {
        kind: Legacy,
        nanos: bool,
        snaplen: u32,
    },
    Ng {
        big_endian: bool,
        interfaces: Vec<Interface>,
        /// The first interface's link type number, for error messages.
        first_linktype: Option<u32>,
        last_ts: u64,
    },
}

/// What one step of the block/record loop produced; ranges index `buf`.
enum Step {
    Packet { ts_ns: u64, start: usize, len: usize, orig_len: u32 },
    Skipped,
    End,
}

/// A streaming pcap / pcapng reader. See the [module docs](self) for the policies.
pub struct PcapReader {
    name: PathBuf,
    src: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// Start of unconsumed data in `buf`.
    pos: usize,
    /// End of valid data in `buf`.
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    done: bool,
    total: Option<u64>,
    format: Format,
    link: LinkType,
    stats: ReaderStats,
}

impl std::fmt::Debug for PcapReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapReader")
            .field("name", &self.name)
            .field("offset", &self.bytes_read())
            .field("link", &self.link)
            .field("format", &self.format)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl PcapReader {
    /// Opens a capture file and reads its header (for pcapng: up to its first interface
    /// description).
    pub fn open(path: &Path) -> Result<PcapReader, PortError> {
        let io_err = |source| PortError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io_err)?;
        let total = file.metadata().map_err(io_err)?.len();
        PcapReader::new(path.to_path_buf(), Box::new(file), Some(total))
    }

    /// Reads a capture held in memory; `name` stands for the path in errors.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<PcapReader, PortError> {
        let total = bytes.len() as u64;
        PcapReader::new(PathBuf::from(name), Box::new(Cursor::new(bytes)), Some(total))
    }

    /// Reads a capture from any byte stream; `name` stands for the path in errors.
    pub fn from_reader(
        name: &str,
        src: Box<dyn Read + Send>,
        total_bytes: Option<u64>,
    ) -> Result<PcapReader, PortError> {
        PcapReader::new(PathBuf::from(name), src, total_bytes)
    }

    fn new(name: PathBuf, src: Box<dyn Read + Send>, total: Option<u64>) -> Result<PcapReader, PortError> {
        let cap =
            total.map_or(INITIAL_BUFFER, |t| usize::try_from(t).unwrap_or(INITIAL_BUFFER).clamp(64, INITIAL_BUFFER));
        let mut r = PcapReader {
            name,
            src,
            buf: vec![0; cap],
            pos: 0,
            end: 0,
            base: 0,
            eof: false,
            done: false,
            total,
            format: Format::Legacy { kind: Legacy::Le, nanos: false, snaplen: 0 },
            link: LinkType::Ethernet,
            stats: ReaderStats::default(),
        };
        r.read_header()?;
        Ok(r)
    }

    /// The link type of every frame.
    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// The next frame, or `Ok(None)` at the end of the capture (or after an error).
    pub fn next_packet(&mut self) -> Result<Option<PacketRecord<'_>>, PortError> {
        if self.done {
            return Ok(None);
        }
        // Each pass consumes at least 12 bytes of input, so the loop ends with the file.
        loop {
            let step = match self.step() {
                Ok(s) => s,
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            };
            match step {
                Step::Skipped => continue,
                Step::End => {
                    self.done = true;
                    return Ok(None);
                }
                Step::Packet { ts_ns, start, len, orig_len } => {
                    self.stats.packets += 1;
                    self.stats.bytes += len as u64;
                    if (len as u64) < u64::from(orig_len) {
                        self.stats.snaplen_clipped += 1;
                    }
                    return Ok(Some(PacketRecord { ts_ns, data: &self.buf[start..start + len], orig_len }));
                }
            }
        }
    }

    /// Bytes of the input consumed so far (the offset of the next record), for progress.
    pub fn bytes_read(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// The input's size, when known.
    pub fn total_bytes(&self) -> Option<u64> {
        self.total
    }

    /// Counters so far.
    pub fn stats(&self) -> ReaderStats {
        self.stats.clone()
    }

    // ---- buffering ----

    /// Makes `buf[pos..]` hold at least `n` bytes; `Ok(false)` if the input ends first.
    /// Callers keep `n <= MAX_BLOCK + 24`.
    fn fill(&mut self, n: usize) -> Result<bool, PortError> {
        while self.end - self.pos < n {
            if self.eof {
                return Ok(false);
            }
            if self.pos + n > self.buf.len() {
                self.buf.copy_within(self.pos..self.end, 0);
                self.base += self.pos as u64;
                self.end -= self.pos;
                self.pos = 0;
                if n > self.buf.len() {
                    let grown = (self.buf.len() * 2).clamp(n, n.max(MAX_BLOCK));
                    self.buf.resize(grown, 0);
                }
            }
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => return Err(PortError::Io { path: self.name.clone(), source }),
            }
        }
        Ok(true)
    }

    fn u32_at(&self, at: usize, big_endian: bool) -> u32 {
        let b = [self.buf[at], self.buf[at + 1], self.buf[at + 2], self.buf[at + 3]];
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn not_a_capture(&self, detail: impl Into<String>) -> PortError {
        PortError::NotACapture { path: self.name.clone(), detail: detail.into() }
    }

    fn corrupt(&self, offset: u64, detail: impl Into<String>) -> PortError {
        PortError::Corrupt { path: self.name.clone(), offset, detail: detail.into() }
    }

    /// The stream ends here; if bytes are left over, the file was cut mid-record.
    fn end_of_input(&mut self) -> Step {
        if self.end > self.pos {
            self.stats.truncated_tail = true;
        }
        Step::End
    }

    // ---- headers ----

    fn read_header(&mut self) -> Result<(), PortError> {
        if !self.fill(4)? {
            return Err(self.not_a_capture(if self.end == 0 {
                "the input is empty".to_string()
            } else {
                format!("only {} bytes", self.end)
            }));
        }
        let magic = self.u32_at(0, false);
        match magic {
            SHB_MAGIC => self.read_ng_header(),
            0xa1b2_c3d4 | 0xa1b2_3c4d | 0xa1b2_cd34 | 0xd4c3_b2a1 | 0x4d3c_b2a1 => self.read_legacy_header(),
            _ => Err(self.not_a_capture(format!("unknown magic number 0x{magic:08x}"))),
        }
    }

    fn read_legacy_header(&mut self) -> Result<(), PortError> {
        if !self.fill(24)? {
            return Err(self.not_a_capture("the pcap file header is cut short"));
        }
        let header = match parse_pcap_header(&self.buf[..24]) {
            Ok((_, h)) => h,
            Err(_) => return Err(self.not_a_capture("malformed pcap file header")),
        };
        let linktype = header.network.0 as u32;
        self.link = LinkType::from_pcap(linktype)
            .ok_or(PortError::UnsupportedLinkType { path: self.name.clone(), linktype })?;
        let kind = if header.is_modified_format() {
            Legacy::Modified
        } else if header.is_bigendian() {
            Legacy::Be
        } else {
            Legacy::Le
        };
        self.format = Format::Legacy { kind, nanos: header.is_nanosecond_precision(), snaplen: header.snaplen };
        self.pos = 24;
        Ok(())
    }

    fn read_ng_header(&mut self) -> Result<(), PortError> {
        if !self.fill(12)? {
            return Err(self.not_a_capture("the pcapng section header is cut short"));
        }
        let big_endian = match self.u32_at(8, false) {
            BOM_MAGIC => false,
            m if m == BOM_MAGIC.swap_bytes() => true,
            m => {
                return Err(
                    self.not_a_capture(format!("pcapng byte-order magic 0x{m:08x} is neither 0x1a2b3c4d nor its swap"))
                )
            }
        };
        let len = self.u32_at(4, big_endian) as usize;
        if !(28..=MAX_BLOCK).contains(&len) || len & 3 != 0 {
            return Err(self.not_a_capture(format!("pcapng section header length {len}")));
        }
        if !self.fill(len)? {
            return Err(self.not_a_capture("the pcapng section header is cut short"));
        }
        if parse_sectionheaderblock(&self.buf[..len]).is_err() {
            return Err(self.not_a_capture("malformed pcapng section header"));
        }
        self.pos = len;
        self.format = Format::Ng { big_endian, interfaces: Vec::new(), first_linktype: None, last_ts: 0 };
        // Read ahead to the first interface description, so that link_type() is known.
        // Each step consumes at least 12 bytes, so this ends with the input.
        loop {
            if matches!(&self.format, Format::Ng { first_linktype: Some(_), .. }) {
                return Ok(());
            }
            let offset = self.bytes_read();
            match self.step_ng()? {
                Step::Skipped => {}
                Step::End => {
                    return Err(self.not_a_capture("the pcapng file ends before its first interface description block"))
                }
                // step_ng refuses packets before an interface is described.
                Step::Packet { .. } => return Err(self.corrupt(offset, "packet before any interface description")),
            }
        }
    }

    // ---- records ----

    fn step(&mut self) -> Result<Step, PortError> {
        match self.format {
            Format::Legacy { kind, nanos, snaplen } => self.step_legacy(kind, nanos, snaplen),
            Format::Ng { .. } => self.step_ng(),
        }
    }

    fn check_caplen(&self, offset: u64, caplen: u32, snaplen: u32) -> Result<(), PortError> {
        if caplen > MAX_CAPLEN {
            return Err(self.corrupt(offset, format!("captured length {caplen} exceeds the {MAX_CAPLEN}-byte limit")));
        }
        if snaplen != 0 && caplen > snaplen.saturating_add(SNAPLEN_SLACK) {
            return Err(self.corrupt(offset, format!("captured length {caplen} far exceeds the snap length {snaplen}")));
        }
        Ok(())
    }

    fn step_legacy(&mut self, kind: Legacy, nanos: bool, snaplen: u32) -> Result<Step, PortError> {
        let hdr = match kind {
            Legacy::Modified => 24,
            _ => 16,
        };
        if !self.fill(hdr)? {
            return Ok(self.end_of_input());
        }
        let offset = self.bytes_read();
        let caplen = self.u32_at(self.pos + 8, matches!(kind, Legacy::Be));
        self.check_caplen(offset, caplen, snaplen)?;
        let total = hdr + caplen as usize;
        if !self.fill(total)? {
            return Ok(self.end_of_input());
        }
        let rec = &self.buf[self.pos..self.pos + total];
        let parsed = match kind {
            Legacy::Le => parse_pcap_frame(rec),
            Legacy::Be => parse_pcap_frame_be(rec),
            Legacy::Modified => parse_pcap_frame_modified(rec),
        };
        let (ts_sec, frac, orig_len, len) = match parsed {
            Ok((_, b)) => (b.ts_sec, b.ts_usec, b.origlen, b.data.len()),
            Err(_) => return Err(self.corrupt(offset, "malformed pcap record")),
        };
        let frac_ns = if nanos { u64::from(frac) } else { u64::from(frac) * 1_000 };
        let ts_ns = u64::from(ts_sec) * 1_000_000_000 + frac_ns;
        let start = self.pos + hdr;
        self.pos += total;
        Ok(Step::Packet { ts_ns, start, len, orig_len })
    }

    fn step_ng(&mut self) -> Result<Step, PortError> {
        let Format::Ng { big_endian, .. } = self.format else {
            return Ok(Step::End);
        };
        if !self.fill(12)? {
            return Ok(self.end_of_input());
        }
        let offset = self.bytes_read();
        let block_type = self.u32_at(self.pos, big_endian);
        // A section header carries its own byte order.
        let be = if block_type == SHB_MAGIC {
            match self.u32_at(self.pos + 8, false) {
                BOM_MAGIC => false,
                m if m == BOM_MAGIC.swap_bytes() => true,
                m => return Err(self.corrupt(offset, format!("section header with byte-order magic 0x{m:08x}"))),
            }
        } else {
            big_endian
        };
        let len = self.u32_at(self.pos + 4, be) as usize;
        if len < 12 || len & 3 != 0 || len > MAX_BLOCK {
            return Err(self.corrupt(offset, format!("block of type 0x{block_type:08x} has length {len}")));
        }
        if !self.fill(len)? {
            return Ok(self.end_of_input());
        }
        let pos = self.pos;
        let raw = &self.buf[pos..pos + len];
        let parsed = if be { parse_block_be(raw) } else { parse_block_le(raw) };
        let block = match parsed {
            Ok((_, b)) => b,
            Err(_) => return Err(self.corrupt(offset, format!("malformed block of type 0x{block_type:08x}"))),
        };
        let Format::Ng { big_endian, interfaces, first_linktype, last_ts } = &mut self.format else {
            return Ok(Step::End);
        };
        let corrupt = |detail: String| PortError::Corrupt { path: self.name.clone(), offset, detail };
        let step = match block {
            Block::SectionHeader(_) => {
                *big_endian = be;
                interfaces.clear();
                Step::Skipped
            }
            Block::InterfaceDescription(idb) => {
                let linktype = idb.linktype.0 as u32;
                let Some(link) = LinkType::from_pcap(linktype) else {
                    return Err(PortError::UnsupportedLinkType { path: self.name.clone(), linktype });
                };
                match *first_linktype {
                    None => {
                        *first_linktype = Some(linktype);
                        self.link = link;
                    }
                    Some(first) if self.link != link => {
                        return Err(PortError::MixedLinkTypes { path: self.name.clone(), first, other: linktype })
                    }
                    Some(_) => {}
                }
                let units_per_sec = ts_units(idb.if_tsresol)
                    .ok_or_else(|| corrupt(format!("unsupported if_tsresol 0x{:02x}", idb.if_tsresol)))?;
                let ts_offset =
                    idb.options.iter().find(|o| o.code.0 == OPT_IF_TSOFFSET && o.value().len() >= 8).map_or(0, |o| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&o.value()[..8]);
                        if be {
                            i64::from_be_bytes(b)
                        } else {
                            i64::from_le_bytes(b)
                        }
                    });
                interfaces.push(Interface { snaplen: idb.snaplen, units_per_sec, ts_offset });
                Step::Skipped
            }
            Block::EnhancedPacket(epb) => {
                let Some(iface) = interfaces.get(epb.if_id as usize) else {
                    return Err(corrupt(format!(
                        "packet on interface {}, but the section describes {}",
                        epb.if_id,
                        interfaces.len()
                    )));
                };
                let len = epb.data.len().min(epb.caplen as usize);
                let ts_raw = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let ts_ns = to_ns(ts_raw, iface);
                *last_ts = ts_ns;
                let snaplen = iface.snaplen;
                let caplen = epb.caplen;
                let orig_len = epb.origlen;
                self.check_caplen(offset, caplen, snaplen)?;
                Step::Packet { ts_ns, start: pos + 28, len, orig_len }
            }
            Block::SimplePacket(spb) => {
                let Some(iface) = interfaces.first() else {
                    return Err(corrupt("simple packet block before any interface".into()));
                };
                let mut len = spb.data.len().min(spb.origlen as usize);
                if iface.snaplen != 0 {
                    len = len.min(iface.snaplen as usize);
                }
                let ts_ns = *last_ts;
                let orig_len = spb.origlen;
                self.check_caplen(offset, len as u32, 0)?;
                Step::Packet { ts_ns, start: pos + 12, len, orig_len }
            }
            _ => {
                self.stats.skipped_blocks += 1;
                Step::Skipped
            }
        };
        self.pos += len;
        Ok(step)
    }
}

/// Timestamp units per second for an `if_tsresol` byte, if supported.
fn ts_units(tsresol: u8) -> Option<u128> {
    let v = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        (v <= 19).then(|| 10u128.pow(v))
    } else {
        (v <= 63).then(|| 1u128 << v)
    }
}

/// Converts a raw pcapng timestamp to nanoseconds since the epoch, clamping to `u64`.
fn to_ns(raw: u64, iface: &Interface) -> u64 {
    let ns = u128::from(raw) * 1_000_000_000 / iface.units_per_sec;
    let ns = ns as i128 + i128::from(iface.ts_offset) * 1_000_000_000;
    ns.clamp(0, i128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(ts_units(6), Some(1_000_000));
        assert_eq!(ts_units(9), Some(1_000_000_000));
        assert_eq!(ts_units(0x80 | 10), Some(1024));
        assert_eq!(ts_units(20), None);
        assert_eq!(ts_units(0x80 | 64), None);
    }

    #[test]
    fn ns_conversion_clamps() {
        let us = Interface { snaplen: 0, units_per_sec: 1_000_000, ts_offset: 0 };
        assert_eq!(to_ns(1_500_000, &us), 1_500_000_000);
        let neg = Interface { ts_offset: -10, ..us };
        assert_eq!(to_ns(1_000_000, &neg), 0);
        let huge = Interface { units_per_sec: 1, ..us };
        assert_eq!(to_ns(u64::MAX, &huge), u64::MAX);
    }
}

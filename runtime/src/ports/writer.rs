//! A buffered writer of legacy pcap files with nanosecond timestamps.
//!
//! # Contract
//!
//! * The file starts with the 24-byte global header: magic `0xa1b23c4d` (nanosecond
//!   resolution) in little-endian byte order, version 2.4, `thiszone` and `sigfigs` 0,
//!   snap length [`SNAPLEN`] (262144), and the link type given at creation. Wireshark,
//!   tcpdump and [`PcapReader`](super::PcapReader) all read it.
//! * Each [`PcapWriter::write`] appends one 16-byte record header and the frame. The
//!   timestamp is split into seconds and nanoseconds; seconds are a `u32` in the format,
//!   so times from 2106 on cannot be stored and are rejected as
//!   [`PortError::Corrupt`] rather than wrapped silently.
//! * The stored original length is `max(orig_len, data.len())`: a record never claims to
//!   have captured more than was on the wire.
//! * Frames longer than the snap length are refused with [`PortError::FrameTooLarge`]
//!   (the reader would treat them as corrupt).
//! * Output is buffered; [`PcapWriter::finish`] (or [`PcapWriter::into_inner`]) flushes it
//!   and reports a failing flush. A file made by [`PcapWriter::create`] is written under a
//!   temporary name ([`AtomicFile`]) and renamed into place only by `finish`: a writer dropped
//!   without finishing (a failed run) leaves an existing file of that name untouched and no
//!   half file behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{LinkType, PortError};
use crate::files::AtomicFile;

/// Where a [`PcapWriter`] writes: any `Write` that can be closed — flushed, and for an
/// [`AtomicFile`] renamed into place.
pub trait Sink: Write {
    /// Flushes; makes the bytes final.
    fn close(&mut self) -> std::io::Result<()> {
        self.flush()
    }
}

impl Sink for Vec<u8> {}
impl Sink for File {}
impl Sink for BufWriter<File> {}
impl Sink for BufWriter<AtomicFile> {
    fn close(&mut self) -> std::io::Result<()> {
        self.flush()?;
        self.get_mut().commit()
    }
}

/// Snap length written in the header, and the largest frame accepted.
pub const SNAPLEN: u32 = 262_144;

/// Nanosecond-resolution pcap magic number.
const MAGIC_NS: u32 = 0xa1b2_3c4d;

/// A pcap writer over any `Write` sink; by default a buffered file.
#[derive(Debug)]
pub struct PcapWriter<W: Sink = BufWriter<AtomicFile>> {
    out: W,
    path: PathBuf,
    packets: u64,
}

impl PcapWriter<BufWriter<AtomicFile>> {
    /// Starts writing `path` (under a temporary name until [`finish`](Self::finish)) with
    /// the pcap header for `link`.
    pub fn create(path: &Path, link: LinkType) -> Result<PcapWriter, PortError> {
        let file = AtomicFile::create(path).map_err(|source| PortError::Io { path: path.to_path_buf(), source })?;
        PcapWriter::new(BufWriter::with_capacity(1 << 16, file), path, link)
    }
}

impl PcapWriter<Vec<u8>> {
    /// An in-memory writer (for tests); take the bytes with [`PcapWriter::into_inner`].
    pub fn to_vec(link: LinkType) -> PcapWriter<Vec<u8>> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(&header(link));
        PcapWriter { out, path: PathBuf::from("<memory>"), packets: 0 }
    }
}

impl<W: Sink> PcapWriter<W> {
    /// Wraps `out`, writing the pcap header at once; `name` is used in errors.
    pub fn new(mut out: W, name: &Path, link: LinkType) -> Result<PcapWriter<W>, PortError> {
        out.write_all(&header(link)).map_err(|source| PortError::Io { path: name.to_path_buf(), source })?;
        Ok(PcapWriter { out, path: name.to_path_buf(), packets: 0 })
    }

    /// Appends one frame captured at `ts_ns` (nanoseconds since the epoch).
    pub fn write(&mut self, ts_ns: u64, data: &[u8], orig_len: u32) -> Result<(), PortError> {
        if data.len() > SNAPLEN as usize {
            return Err(PortError::FrameTooLarge { path: self.path.clone(), len: data.len(), snaplen: SNAPLEN });
        }
        let secs = u32::try_from(ts_ns / 1_000_000_000).map_err(|_| PortError::Corrupt {
            path: self.path.clone(),
            offset: 0,
            detail: format!("timestamp {ts_ns} ns does not fit pcap's 32-bit seconds"),
        })?;
        let nanos = (ts_ns % 1_000_000_000) as u32;
        let caplen = data.len() as u32; // <= SNAPLEN, checked above
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&secs.to_le_bytes());
        rec[4..8].copy_from_slice(&nanos.to_le_bytes());
        rec[8..12].copy_from_slice(&caplen.to_le_bytes());
        rec[12..16].copy_from_slice(&orig_len.max(caplen).to_le_bytes());
        self.out
            .write_all(&rec)
            .and_then(|()| self.out.write_all(data))
            .map_err(|source| PortError::Io { path: self.path.clone(), source })?;
        self.packets += 1;
        Ok(())
    }

    /// Frames written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes and returns the number of frames written.
    pub fn finish(self) -> Result<u64, PortError> {
        let packets = self.packets;
        self.into_inner()?;
        Ok(packets)
    }

    /// Closes and hands back the sink (for [`PcapWriter::to_vec`], the file's bytes).
    pub fn into_inner(mut self) -> Result<W, PortError> {
        self.out.close().map_err(|source| PortError::Io { path: self.path.clone(), source })?;
        Ok(self.out)
    }
}

fn header(link: LinkType) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC_NS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone (8..12) and sigfigs (12..16) stay 0.
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&link.to_pcap().to_le_bytes());
    h
}

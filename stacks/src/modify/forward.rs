//! One connection forwarded by the modifying TCP monitor: both directions' output streams,
//! their sequence/acknowledgment maps, retransmissions and the frames that carry them.
//!
//! Protocol logic without I/O (STYLE.md habit 2): [`ConnFwd`] takes the segments the monitor
//! saw and the original bytes the NFs judged, and returns frames to send; the monitor moves
//! them to TX.
//!
//! Per direction `d` (the sender's), in stream offsets (0 = the byte after the SYN):
//!
//! ```text
//! original:  [ acked_in ........ forwarded | wait (received, not judged/held) ]
//! output:    [ acked_out ... sent_out ... acked_out + out.len() ]
//!            seq on the wire = first_seq + output offset (the sender's ISN is kept)
//! ```
//!
//! * **Forwarding is at stream level**: an original data segment is never sent itself; its
//!   bytes join `wait`, and once judged ([`ConnFwd::pump`]) they are rewritten through the
//!   direction's [`EditList`] and re-segmented into frames of at most the receiver's MSS,
//!   within the receiver's window. Pure ACKs, SYNs and RSTs are forwarded at once, with
//!   numbers remapped.
//! * **Acknowledgments** from the receiver are in output offsets; they are mapped back to
//!   original offsets ([`EditList::in_of`], conservative inside a replacement) before they
//!   reach the sender, and they prune the list and the output buffer.
//! * **Retransmissions**: the output bytes not yet acknowledged are kept (`out`); a sender's
//!   retransmission of original bytes already forwarded is answered by resending their
//!   output range ([`EditList::out_lo`]/[`EditList::out_hi`]) from there — the same bytes,
//!   whatever segmentation the sender chose. If all of it was acknowledged already, a probe
//!   just below the receiver's next expected byte makes the receiver repeat its ACK.
//! * **Options**: SYNs keep MSS and window scale; SACK-permitted and timestamps are turned
//!   into NOPs, so no SACK block ever needs remapping and the segments the monitor builds
//!   need no options.
//! * **Upgraded mid-stream** ([`ConnFwd::resume`]): a connection that ran on the cheap path
//!   (frames forwarded as received) joins at `base`, the end of what already left. Below
//!   `base` the maps are the identity and nothing is kept: a sender's repeat of those bytes
//!   (a retransmission, or a hole filled late) is passed on as it came, with the
//!   acknowledgment remapped; from `base` on, everything above applies. The receiver's
//!   window is counted from its own last acknowledgment, which may lie below `base` for a
//!   while.
//! * Ethernet + IPv4 without VLAN tag only (what live AF_PACKET ports deliver); other
//!   connections are not taken over.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use super::edits::EditList;
use crate::parse::tcp_flags;
use crate::splicer::wire::{self, Mac};

/// Where a direction's frames go and what they say about their ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    /// Ethernet source, destination.
    pub macs: (Mac, Mac),
    /// IP source, destination.
    pub ips: (Ipv4Addr, Ipv4Addr),
    /// TCP source, destination ports.
    pub ports: (u16, u16),
    /// The port the frames leave by.
    pub egress: u8,
}

impl Template {
    /// The template of a frame's direction (untagged Ethernet/IPv4/TCP), leaving by `egress`.
    pub fn of(frame: &[u8], egress: u8) -> Option<Template> {
        let s = wire::segment(frame)?;
        let dst: Mac = frame.get(0..6)?.try_into().ok()?;
        Some(Template { macs: (s.src_mac, dst), ips: (s.src, s.dst), ports: (s.sport, s.dport), egress })
    }
}

/// A segment the monitor saw (after its reassembler took it).
#[derive(Clone, Copy, Debug)]
pub struct SegIn<'a> {
    /// 0: client → server, 1: server → client.
    pub dir: usize,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// TCP flags.
    pub flags: u8,
    /// Window field as sent.
    pub window: u16,
    /// Payload length.
    pub payload_len: usize,
    /// The whole frame.
    pub frame: &'a [u8],
}

/// Counters of one connection (summed by the monitor).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdCounts {
    /// Data frames built (first transmissions).
    pub data_frames: u64,
    /// Output bytes sent the first time.
    pub data_bytes: u64,
    /// Data frames resent for a retransmission of the sender.
    pub resent_frames: u64,
    /// Probes sent for a retransmission of bytes already acknowledged.
    pub probes: u64,
    /// Control frames forwarded (ACK, SYN, FIN, RST).
    pub control_frames: u64,
    /// Edits dropped because the stream ended inside them.
    pub edits_dropped: u64,
    /// Frames passed as they came: repeats of bytes that left on the cheap path before an
    /// upgrade.
    pub passed_frames: u64,
}

/// One direction's state (see the module docs).
#[derive(Clone, Debug, Default)]
struct Dir {
    first_seq: Option<u32>,
    /// Largest payload the receiver takes (its MSS option; 536 without one).
    mss: u16,
    /// Original bytes `[forwarded, forwarded + wait.len())`, received, not rewritten yet.
    wait: VecDeque<u8>,
    /// Output bytes `[acked_out, acked_out + out.len())`.
    out: VecDeque<u8>,
    acked_out: u64,
    sent_out: u64,
    /// The sender's FIN: original offset.
    fin_at: Option<u64>,
    fin_sent: bool,
    tmpl: Option<Template>,
    /// The acknowledgment number (mapped) and window field the sender last sent.
    ack: Option<u32>,
    window: u16,
    /// The receiver's window in bytes (scaled), from its last segment.
    rcv_window: u64,
    /// The receiver's last acknowledgment, output offset: the window's left edge (below
    /// `acked_out` only after an upgrade mid-stream, until the receiver catches up).
    rcv_ack: u64,
    ip_id: u16,
}

/// Unwraps a 32-bit sequence offset near `near`.
fn unwrap(rel: u32, near: u64) -> u64 {
    let base = near & !0xffff_ffff;
    let cands = [base.wrapping_sub(1 << 32), base, base + (1 << 32)];
    cands
        .into_iter()
        .map(|b| b.wrapping_add(u64::from(rel)))
        .filter(|v| *v < (1 << 62))
        .min_by_key(|v| v.abs_diff(near))
        .unwrap_or(u64::from(rel))
}

/// Turns SACK-permitted (kind 4) and timestamp (kind 8) options of a SYN into NOPs; returns
/// the MSS option and the window scale, if present.
fn scrub_syn_options(opts: &mut [u8]) -> (Option<u16>, Option<u8>) {
    let (mut mss, mut ws) = (None, None);
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    break;
                }
                match kind {
                    2 if len == 4 => mss = Some(u16::from_be_bytes([opts[i + 2], opts[i + 3]])),
                    3 if len == 3 => ws = Some(opts[i + 2].min(14)),
                    4 | 8 => opts[i..i + len].fill(1),
                    _ => {}
                }
                i += len;
            }
        }
    }
    (mss, ws)
}

/// A 32-bit sequence offset unwrapped near the 64-bit stream offset `near`.
pub fn unwrap_offset(rel: u32, near: u64) -> u64 {
    unwrap(rel, near)
}

/// Reads the MSS and window scale options of a SYN frame (untagged Ethernet/IPv4/TCP).
pub fn syn_options(frame: &[u8]) -> (Option<u16>, Option<u8>) {
    let Some(ihl) = frame.get(14).map(|b| usize::from(b & 0x0f) * 4) else { return (None, None) };
    let t = 14 + ihl;
    let Some(off) = frame.get(t + 12).map(|b| usize::from(b >> 4) * 4) else { return (None, None) };
    match frame.get(t + 20..t + off) {
        Some(opts) => scrub_syn_options(&mut opts.to_vec()),
        None => (None, None),
    }
}

/// One direction of a connection upgraded mid-stream ([`ConnFwd::resume`]), as the monitor
/// knows it when the upgrade is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// The sender's ISN + 1 (`None`: its SYN was not seen yet).
    pub first_seq: Option<u32>,
    /// Original offset where the modification path starts: every byte before it left on the
    /// cheap path (the end of the highest segment the sender sent, or its FIN).
    pub base: u64,
    /// The sender's FIN (at `base`) already left.
    pub fin: bool,
    /// The receiver's last acknowledgment of this direction, original offset (≤ `base`).
    pub rcv_acked: u64,
    /// The receiver's window in bytes (scaled).
    pub rcv_window: u64,
    /// The receiver's MSS (536 when it announced none).
    pub mss: u16,
    /// The acknowledgment number and raw window field the sender last sent (for the frames
    /// built in its name).
    pub ack: Option<u32>,
    /// Raw window field.
    pub window: u16,
}

/// One forwarded connection (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct ConnFwd {
    dirs: [Dir; 2],
    /// Original offset of each direction the sender was told arrived although the monitor
    /// still holds it ([`ack_ahead`](Self::ack_ahead)); acknowledgments never go below it.
    ack_floor: [u64; 2],
    wscale: [Option<u8>; 2],
    /// Original offset where each direction joined the modification path (0 unless
    /// upgraded mid-stream, [`resume`](Self::resume)).
    base: [u64; 2],
    /// Counters.
    pub counts: FwdCounts,
}

impl ConnFwd {
    /// A connection whose SYN is about to be seen.
    pub fn new() -> ConnFwd {
        let mut c = ConnFwd::default();
        for d in &mut c.dirs {
            d.mss = 536;
            d.rcv_window = 65_535;
        }
        c
    }

    /// A connection that ran on the cheap path until now (its frames forwarded as received),
    /// forwarded from here on: direction `d` from `dirs[d].base`. `wscale`: the window scale
    /// each direction's SYN announced. The caller opens the edit lists at the same bases
    /// ([`EditList::starting_at`]).
    pub fn resume(dirs: [Resume; 2], wscale: [Option<u8>; 2]) -> ConnFwd {
        let mut c = ConnFwd::new();
        c.wscale = wscale;
        for (d, r) in c.dirs.iter_mut().zip(dirs) {
            d.first_seq = r.first_seq;
            d.mss = r.mss.max(64);
            d.acked_out = r.base;
            d.sent_out = r.base;
            d.rcv_ack = r.rcv_acked.min(r.base);
            d.rcv_window = r.rcv_window;
            d.fin_at = r.fin.then_some(r.base);
            d.fin_sent = r.fin;
            d.ack = r.ack;
            d.window = r.window;
        }
        c.base = [dirs[0].base, dirs[1].base];
        c
    }

    /// Original bytes held (waiting) plus output bytes kept for retransmission, both
    /// directions: what the limit `max_held_bytes` bounds.
    pub fn held(&self) -> usize {
        self.dirs.iter().map(|d| d.wait.len() + d.out.len()).sum()
    }

    /// Original bytes of direction `d` received so far (forwarded + waiting): where the next
    /// bytes of [`push`](Self::push) go.
    pub fn received(&self, d: usize, list: &EditList) -> u64 {
        list.forwarded() + self.dirs[d].wait.len() as u64
    }

    /// The original offset of direction `d`'s FIN, once seen.
    pub fn fin_at(&self, d: usize) -> Option<u64> {
        self.dirs[d].fin_at
    }

    /// Whether the sender's SYN of direction `d` was seen.
    pub fn started(&self, d: usize) -> bool {
        self.dirs[d].first_seq.is_some()
    }

    /// New in-order original bytes of direction `d` at offset `at` (the part already known is
    /// skipped). Returns false for a hole (bytes before `at` never came): the connection can
    /// no longer be forwarded consistently.
    pub fn push(&mut self, d: usize, at: u64, bytes: &[u8], list: &EditList) -> bool {
        let have = self.received(d, list);
        if at > have {
            return false;
        }
        let skip = (have - at) as usize;
        if skip < bytes.len() {
            self.dirs[d].wait.extend(&bytes[skip..]);
        }
        true
    }

    fn frame(&mut self, d: usize, seq: u32, flags: u8, payload: &[u8]) -> Option<(u8, Vec<u8>)> {
        let dir = &mut self.dirs[d];
        let t = dir.tmpl?;
        dir.ip_id = dir.ip_id.wrapping_add(1);
        let ack = dir.ack;
        let f = wire::build(&wire::Out {
            macs: t.macs,
            ips: t.ips,
            ports: t.ports,
            seq,
            ack: ack.unwrap_or(0),
            flags: flags | if ack.is_some() { tcp_flags::ACK } else { 0 },
            window: dir.window,
            mss: None,
            ip_id: dir.ip_id,
            payload,
        });
        Some((t.egress, f))
    }

    /// A segment the monitor saw. `lists` are both directions' edit lists (index = `dir`).
    /// Frames to send now go to `out`.
    pub fn segment(&mut self, s: &SegIn<'_>, egress: u8, lists: &mut [EditList; 2], out: &mut Vec<(u8, Vec<u8>)>) {
        let d = s.dir;
        let o = 1 - d;
        if let Some(t) = Template::of(s.frame, egress) {
            self.dirs[d].tmpl = Some(t);
        }
        if s.flags & tcp_flags::SYN != 0 {
            self.syn(s, egress, out);
            return;
        }
        let Some(first) = self.dirs[d].first_seq else { return };
        // The acknowledgment: output offsets of the other direction, mapped back.
        if s.flags & tcp_flags::ACK != 0 {
            if let Some(ofirst) = self.dirs[o].first_seq {
                let od = &mut self.dirs[o];
                let y = unwrap(s.ack.wrapping_sub(ofirst), od.acked_out);
                let data_end = od.acked_out + od.out.len() as u64;
                let fin_acked = od.fin_sent && y > data_end;
                let y = y.min(data_end);
                od.rcv_ack = od.rcv_ack.max(y);
                let dup = y == od.acked_out && od.sent_out > od.acked_out && s.payload_len == 0;
                if y > od.acked_out {
                    let n = (y - od.acked_out) as usize;
                    od.out.drain(..n.min(od.out.len()));
                    od.acked_out = y;
                }
                let l = &mut lists[o];
                let x = if fin_acked { od.fin_at.unwrap_or(0) + 1 } else { l.in_of(y).min(l.forwarded()) };
                l.prune(x.min(l.forwarded()));
                let floor = self.ack_floor[o];
                if dup && x < floor {
                    // The sender was acknowledged ahead: it will not repeat these bytes, so
                    // the receiver's duplicate ACK is answered here.
                    let to = self.dirs[o].acked_out + u64::from(self.dirs[o].mss);
                    self.resend_out(o, self.dirs[o].acked_out, to, out);
                }
                let x = x.max(floor);
                self.dirs[d].ack = Some(ofirst.wrapping_add(x as u32));
            }
            let ws = match (self.wscale[0], self.wscale[1]) {
                (Some(_), Some(_)) => self.wscale[d].unwrap_or(0),
                _ => 0,
            };
            self.dirs[o].rcv_window = u64::from(s.window) << ws;
        }
        self.dirs[d].window = s.window;
        let start = unwrap(s.seq.wrapping_sub(first), lists[d].forwarded());
        let end = start + s.payload_len as u64;
        if s.flags & tcp_flags::FIN != 0 && self.dirs[d].fin_at.is_none() {
            self.dirs[d].fin_at = Some(end);
        }
        if s.flags & tcp_flags::RST != 0 {
            let seq = first.wrapping_add(self.dirs[d].sent_out as u32);
            if let Some(f) = self.frame(d, seq, tcp_flags::RST, &[]) {
                self.counts.control_frames += 1;
                out.push(f);
            }
            return;
        }
        let fwd = lists[d].forwarded();
        let mut answered = false;
        let base = self.base[d];
        if s.payload_len > 0 && start < base {
            // Bytes of the cheap path (before the upgrade): they pass as they came.
            answered = self.pass_original(d, s, start, end.min(base), out);
        }
        if s.payload_len > 0 && start.max(base) < end.min(fwd) {
            // The sender repeats bytes that already left: resend their output.
            answered |= self.resend(d, start.max(base), end.min(fwd), &lists[d], out);
        }
        if s.flags & tcp_flags::FIN != 0 && self.dirs[d].fin_sent {
            // A repeated FIN: what is still unacknowledged before it, then the FIN (an insert
            // at the very end belongs to no original byte the sender could repeat).
            let fin_at = self.dirs[d].fin_at.unwrap_or(fwd);
            if !answered && self.dirs[d].sent_out > self.dirs[d].acked_out {
                self.resend(d, start.min(fin_at), fin_at, &lists[d], out);
            }
            let fin_seq = first.wrapping_add(self.dirs[d].acked_out as u32 + self.dirs[d].out.len() as u32);
            if let Some(f) = self.frame(d, fin_seq, tcp_flags::FIN, &[]) {
                self.counts.control_frames += 1;
                out.push(f);
                answered = true;
            }
        }
        if s.payload_len == 0 && s.flags & tcp_flags::FIN == 0 && !answered {
            // A pure ACK (a duplicate one too: the sender's fast retransmit needs it).
            let dir = &self.dirs[d];
            let seq = first.wrapping_add((dir.sent_out + u64::from(dir.fin_sent)) as u32);
            if let Some(f) = self.frame(d, seq, 0, &[]) {
                self.counts.control_frames += 1;
                out.push(f);
            }
        }
    }

    fn syn(&mut self, s: &SegIn<'_>, egress: u8, out: &mut Vec<(u8, Vec<u8>)>) {
        let d = s.dir;
        let mut f = s.frame.to_vec();
        if wire::segment(&f).is_none() {
            return;
        }
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        f.truncate((14 + total).min(f.len()));
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let t = 14 + ihl;
        let off = usize::from(f[t + 12] >> 4) * 4;
        let (mss, ws) = match f.get_mut(t + 20..t + off) {
            Some(opts) => scrub_syn_options(opts),
            None => (None, None),
        };
        wire::fill_checksums(&mut f);
        if f.len() < 60 {
            f.resize(60, 0);
        }
        let o = 1 - d;
        if self.dirs[d].first_seq.is_none() {
            self.dirs[d].first_seq = Some(s.seq.wrapping_add(1));
            self.dirs[o].mss = mss.unwrap_or(536).max(64);
            self.wscale[d] = ws;
        }
        self.dirs[d].window = s.window;
        if s.flags & tcp_flags::ACK != 0 {
            self.dirs[d].ack = Some(s.ack);
        }
        self.counts.control_frames += 1;
        out.push((egress, f));
    }

    /// Tells direction `d`'s sender that its bytes up to original offset `upto` arrived,
    /// although the monitor still holds some of them (they are kept in `wait` and go out once
    /// judged): a sender whose congestion window is down to the held bytes can then go on
    /// sending the bytes that complete a held pattern. Later acknowledgments never go below.
    pub fn ack_ahead(&mut self, d: usize, upto: u64, out: &mut Vec<(u8, Vec<u8>)>) {
        let o = 1 - d;
        let (Some(first), Some(ofirst)) = (self.dirs[d].first_seq, self.dirs[o].first_seq) else { return };
        if upto <= self.ack_floor[d] {
            return;
        }
        self.ack_floor[d] = upto;
        self.dirs[o].ack = Some(first.wrapping_add(upto as u32));
        let dir = &self.dirs[o];
        let seq = ofirst.wrapping_add((dir.sent_out + u64::from(dir.fin_sent)) as u32);
        if let Some(f) = self.frame(o, seq, 0, &[]) {
            self.counts.control_frames += 1;
            out.push(f);
        }
    }

    /// Resets both ends (a limit was passed): an RST each way at the next expected number.
    pub fn resets(&mut self, out: &mut Vec<(u8, Vec<u8>)>) {
        for d in 0..2 {
            if let Some(first) = self.dirs[d].first_seq {
                let dir = &self.dirs[d];
                let seq = first.wrapping_add((dir.sent_out + u64::from(dir.fin_sent)) as u32);
                if let Some(f) = self.frame(d, seq, tcp_flags::RST, &[]) {
                    self.counts.control_frames += 1;
                    out.push(f);
                }
            }
        }
    }

    /// Passes original bytes `[from, to)` of segment `s` (all before the direction's `base`:
    /// they left on the cheap path, unchanged) as they came, acknowledgment remapped.
    fn pass_original(&mut self, d: usize, s: &SegIn<'_>, from: u64, to: u64, out: &mut Vec<(u8, Vec<u8>)>) -> bool {
        let Some(first) = self.dirs[d].first_seq else { return false };
        let Some(seg) = wire::segment(s.frame) else { return false };
        let n = ((to - from) as usize).min(seg.payload.len());
        let seq = first.wrapping_add(from as u32);
        match self.frame(d, seq, tcp_flags::PSH, &seg.payload[..n]) {
            Some(f) => {
                self.counts.passed_frames += 1;
                out.push(f);
                true
            }
            None => false,
        }
    }

    /// Resends the output of original `[from, to)` of direction `d` (clipped to what is kept);
    /// a probe when all of it was acknowledged. Returns whether something was sent.
    fn resend(&mut self, d: usize, from: u64, to: u64, list: &EditList, out: &mut Vec<(u8, Vec<u8>)>) -> bool {
        let Some(first) = self.dirs[d].first_seq else { return false };
        let dir = &self.dirs[d];
        // At or below what was acknowledged ahead, the sender's repeat stands for everything
        // not acknowledged by the receiver.
        let lo = if from <= self.ack_floor[d] { dir.acked_out } else { list.out_lo(from).max(dir.acked_out) };
        let hi = if dir.fin_sent && Some(to) == dir.fin_at { dir.sent_out } else { list.out_hi(to).min(dir.sent_out) };
        if lo >= hi {
            // Already acknowledged (or never sent): make the receiver repeat its ACK.
            let seq = first.wrapping_add(dir.acked_out as u32).wrapping_sub(1);
            if let Some(f) = self.frame(d, seq, 0, &[]) {
                self.counts.probes += 1;
                out.push(f);
                return true;
            }
            return false;
        }
        self.resend_out(d, lo, hi, out);
        true
    }

    /// Resends output `[lo, hi)` of direction `d` (clipped to what is kept and was sent).
    fn resend_out(&mut self, d: usize, lo: u64, hi: u64, out: &mut Vec<(u8, Vec<u8>)>) {
        let Some(first) = self.dirs[d].first_seq else { return };
        let dir = &self.dirs[d];
        let (lo, hi) = (lo.max(dir.acked_out), hi.min(dir.sent_out));
        let mss = u64::from(dir.mss);
        let mut at = lo;
        let mut buf = Vec::new();
        while at < hi {
            let n = (hi - at).min(mss);
            let dir = &self.dirs[d];
            let i = (at - dir.acked_out) as usize;
            buf.clear();
            buf.extend(dir.out.range(i..i + n as usize));
            let seq = first.wrapping_add(at as u32);
            if let Some(f) = self.frame(d, seq, tcp_flags::PSH, &buf) {
                self.counts.resent_frames += 1;
                out.push(f);
            }
            at += n;
        }
    }

    /// Rewrites the judged original bytes of direction `d` — up to original offset `limit`
    /// (everything received when `None`) — and sends what the receiver's window allows, then
    /// the FIN once everything before it left.
    pub fn pump(&mut self, d: usize, list: &mut EditList, limit: Option<u64>, out: &mut Vec<(u8, Vec<u8>)>) {
        let Some(first) = self.dirs[d].first_seq else { return };
        let fwd = list.forwarded();
        let have = fwd + self.dirs[d].wait.len() as u64;
        let fin = self.dirs[d].fin_at;
        let lim = limit.map_or(have, |l| l.clamp(fwd, have));
        if lim > fwd || (fin == Some(fwd) && lim == fwd) {
            let at_end = fin == Some(lim);
            let n = (lim - fwd) as usize;
            let data: Vec<u8> = self.dirs[d].wait.range(..n).copied().collect();
            let mut rewritten = Vec::with_capacity(n + 16);
            let (used, dropped) = list.generate(&data, at_end, &mut rewritten);
            self.counts.edits_dropped += dropped;
            let dir = &mut self.dirs[d];
            dir.wait.drain(..used);
            dir.out.extend(rewritten);
        }
        // Send within the receiver's window.
        let mss = u64::from(self.dirs[d].mss);
        let mut buf = Vec::new();
        loop {
            let dir = &self.dirs[d];
            let end = dir.acked_out + dir.out.len() as u64;
            let wnd_end = dir.rcv_ack.min(dir.acked_out) + dir.rcv_window;
            let stop = end.min(wnd_end);
            if dir.sent_out >= stop {
                break;
            }
            let n = (stop - dir.sent_out).min(mss);
            let i = (dir.sent_out - dir.acked_out) as usize;
            buf.clear();
            buf.extend(dir.out.range(i..i + n as usize));
            let seq = first.wrapping_add(dir.sent_out as u32);
            let last = dir.sent_out + n == end;
            let Some(f) = self.frame(d, seq, if last { tcp_flags::PSH } else { 0 }, &buf) else { break };
            out.push(f);
            self.counts.data_frames += 1;
            self.counts.data_bytes += n;
            self.dirs[d].sent_out += n;
        }
        let dir = &self.dirs[d];
        let all_out = dir.sent_out == dir.acked_out + dir.out.len() as u64;
        if !dir.fin_sent && dir.fin_at == Some(list.forwarded()) && dir.wait.is_empty() && all_out {
            let seq = first.wrapping_add(dir.sent_out as u32);
            if let Some(f) = self.frame(d, seq, tcp_flags::FIN, &[]) {
                self.counts.control_frames += 1;
                out.push(f);
                self.dirs[d].fin_sent = true;
            }
        }
    }
}

#[cfg(test)]
mod tests;

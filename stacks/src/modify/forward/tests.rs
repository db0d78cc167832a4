//! A client, a server and lossy links around one [`ConnFwd`]: random edits, random
//! segmentation, random loss (hence real retransmissions, resegmented at random): the
//! server's stream is always the reference rewrite and the client's bytes are all
//! acknowledged.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::modify::edits::{Edit, EditLimits};
use actors::modify::ModifyError;

const LIM: EditLimits = EditLimits { max_edits: 1 << 20, max_insert_bytes: 1 << 30 };
const C: Mac = [2, 0, 0, 0, 0, 1];
const S: Mac = [2, 0, 0, 0, 0, 2];

fn ips(d: usize) -> (Ipv4Addr, Ipv4Addr) {
    let (c, s) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    if d == 0 {
        (c, s)
    } else {
        (s, c)
    }
}

fn frame(d: usize, seq: u32, ack: u32, fl: u8, mss: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let (macs, ports) = if d == 0 { ((C, S), (40000, 80)) } else { ((S, C), (80, 40000)) };
    wire::build(&wire::Out { macs, ips: ips(d), ports, seq, ack, flags: fl, window: 65535, mss, ip_id: 0, payload })
}

fn feed(c: &mut ConnFwd, lists: &mut [EditList; 2], d: usize, f: &[u8], out: &mut Vec<(u8, Vec<u8>)>) {
    let s = wire::segment(f).unwrap();
    let seg = SegIn {
        dir: d,
        seq: s.seq,
        ack: s.ack,
        flags: s.flags,
        window: s.window,
        payload_len: s.payload.len(),
        frame: f,
    };
    c.segment(&seg, 1 - d as u8, lists, out);
}

fn reference(data: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    for e in edits {
        out.extend_from_slice(&data[pos..e.at as usize]);
        out.extend_from_slice(&e.with);
        pos = (e.at + e.len) as usize;
    }
    out.extend_from_slice(&data[pos..]);
    out
}

/// A tiny LCG (the test must not depend on a random crate's stream).
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// Adds `edits` (offsets taken modulo the data) to `list`; returns those accepted, sorted.
/// Those before the list's forwarded point must be refused as too late.
fn add_edits(list: &mut EditList, data: &[u8], edits: &[(u64, u64, Vec<u8>)]) -> Result<Vec<Edit>, TestCaseError> {
    let mut kept = Vec::new();
    for (at, len, with) in edits {
        let at = at % (data.len() as u64 + 1);
        let e = Edit { at, len: (*len).min(data.len() as u64 - at), with: with.clone() };
        let early = at < list.forwarded();
        match list.add(e.clone()) {
            Ok(()) => {
                prop_assert!(!early, "an edit before the upgrade point was accepted");
                kept.push(e);
            }
            Err(err) => prop_assert!(!early || matches!(err, ModifyError::TooLate { .. }), "{err}"),
        }
    }
    kept.sort_by_key(|e| e.at);
    Ok(kept)
}

fn run(data: &[u8], edits: &[(u64, u64, Vec<u8>)], seed: u64, loss: u64) -> Result<(), TestCaseError> {
    run_upgraded(data, edits, seed, loss, None)
}

/// The connection of [`run`]; with `upgrade = Some(k)` it starts on the cheap path (every
/// frame passed as it is, both ways, through the same lossy links, no [`ConnFwd`]) and is
/// upgraded ([`ConnFwd::resume`]) once the client has sent `k` bytes: the server must then
/// receive the original bytes up to the upgrade point and the rewrite after it.
fn run_upgraded(
    data: &[u8],
    edits: &[(u64, u64, Vec<u8>)],
    seed: u64,
    loss: u64,
    upgrade: Option<u64>,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let mut lists = [EditList::new(LIM), EditList::new(LIM)];
    let mut want = Vec::new();
    if upgrade.is_none() {
        want = reference(data, &add_edits(&mut lists[0], data, edits)?);
    }
    let mut c = ConnFwd::new();
    let mut out = Vec::new();
    let (cisn, sisn) = (0xffff_ff00u32, 77u32);
    if upgrade.is_none() {
        feed(&mut c, &mut lists, 0, &frame(0, cisn, 0, tcp_flags::SYN, Some(100), &[]), &mut out);
        feed(
            &mut c,
            &mut lists,
            1,
            &frame(1, sisn, cisn + 1, tcp_flags::SYN | tcp_flags::ACK, Some(120), &[]),
            &mut out,
        );
    }
    out.clear();
    let cfirst = cisn.wrapping_add(1);
    let mut cheap = upgrade.is_some();
    // The last acknowledgment the server sent (what the monitor's tracker knows).
    let mut server_acked = 0u64;
    // Frames from here on are the monitor's (before: the client's own, passed as they came).
    let mut mss_from = if cheap { u64::MAX } else { 0 };
    // Client state: acked original offset; server state: received output.
    let mut acked = 0u64;
    let mut rcv = Vec::new();
    let mut ooo: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut next_new = 0u64;
    let mut fin_sent = false;
    let mut server_fin = false;
    for _round in 0..3000 {
        if acked == data.len() as u64 + 1 && server_fin && !cheap {
            break;
        }
        if cheap && next_new >= upgrade.unwrap_or(0) {
            // The upgrade: the client's bytes up to what it sent (and its FIN, if sent) left
            // on the cheap path.
            cheap = false;
            let base = next_new;
            let dirs = [
                Resume {
                    first_seq: Some(cfirst),
                    base,
                    fin: fin_sent,
                    rcv_acked: server_acked.min(base),
                    rcv_window: 65535,
                    mss: 120,
                    ack: Some(sisn + 1),
                    window: 65535,
                },
                Resume {
                    first_seq: Some(sisn + 1),
                    base: 0,
                    fin: false,
                    rcv_acked: 0,
                    rcv_window: 65535,
                    mss: 100,
                    ack: Some(cfirst.wrapping_add(server_acked as u32)),
                    window: 65535,
                },
            ];
            c = ConnFwd::resume(dirs, [None, None]);
            mss_from = base;
            // As the board opens them: a direction whose FIN left on the cheap path ended.
            let client = if fin_sent { EditList::ended_at(LIM, base) } else { EditList::starting_at(LIM, base) };
            lists = [client, EditList::starting_at(LIM, 0)];
            want = reference(data, &add_edits(&mut lists[0], data, edits)?);
        }
        // The client sends a burst: new bytes, or (no progress) a retransmission.
        let mut segs = Vec::new();
        let from = if rng.next(4) == 0 { acked } else { next_new };
        let mut at = from.min(data.len() as u64);
        for _ in 0..1 + rng.next(4) {
            if at >= data.len() as u64 {
                break;
            }
            let n = (1 + rng.next(150)).min(data.len() as u64 - at);
            segs.push((at, n));
            at += n;
        }
        next_new = next_new.max(at);
        for (at, n) in segs {
            let fin = at + n == data.len() as u64;
            let fl = tcp_flags::ACK | if fin { tcp_flags::FIN } else { 0 };
            let f = frame(0, cfirst.wrapping_add(at as u32), sisn + 1, fl, None, &data[at as usize..(at + n) as usize]);
            if cheap {
                out.push((1, f));
                next_new = next_new.max(at + n);
                fin_sent |= fin;
                continue;
            }
            feed(&mut c, &mut lists, 0, &f, &mut out);
            // The monitor's frontier: the bytes are contiguous once everything before came.
            let have = c.received(0, &lists[0]);
            if at <= have && at + n > have {
                prop_assert!(c.push(0, at, &data[at as usize..(at + n) as usize], &lists[0]));
            }
            if fin {
                fin_sent = true;
            }
        }
        if next_new == data.len() as u64 && !fin_sent && !cheap {
            let f =
                frame(0, cfirst.wrapping_add(data.len() as u32), sisn + 1, tcp_flags::ACK | tcp_flags::FIN, None, &[]);
            feed(&mut c, &mut lists, 0, &f, &mut out);
            fin_sent = true;
        }
        if fin_sent && rng.next(3) == 0 && acked <= data.len() as u64 && !cheap {
            // The FIN itself retransmitted.
            let f =
                frame(0, cfirst.wrapping_add(data.len() as u32), sisn + 1, tcp_flags::ACK | tcp_flags::FIN, None, &[]);
            feed(&mut c, &mut lists, 0, &f, &mut out);
        }
        if !cheap {
            c.pump(0, &mut lists[0], None, &mut out);
        }
        // The link to the server loses some frames; the server acks cumulatively.
        for (egress, f) in std::mem::take(&mut out) {
            prop_assert_eq!(egress, 1);
            if rng.next(100) < loss {
                continue;
            }
            let s = wire::segment(&f).unwrap();
            let off = u64::from(s.seq.wrapping_sub(cfirst));
            prop_assert!(off < mss_from || s.payload.len() <= 120, "frame of {} bytes over the MSS", s.payload.len());
            if off < (1 << 31) && !s.payload.is_empty() {
                ooo.insert(off, s.payload.to_vec());
            }
            while let Some((&o, _)) = ooo.first_key_value() {
                let p = ooo.pop_first().unwrap().1;
                let end = o + p.len() as u64;
                if o > rcv.len() as u64 {
                    ooo.insert(o, p);
                    break;
                }
                if end > rcv.len() as u64 {
                    let skip = rcv.len() - o as usize;
                    rcv.extend_from_slice(&p[skip..]);
                }
            }
            if s.flags & tcp_flags::FIN != 0 && off == rcv.len() as u64 {
                server_fin = true;
            }
            let ack = cfirst.wrapping_add(rcv.len() as u32 + u32::from(server_fin));
            let a = frame(1, sisn + 1, ack, tcp_flags::ACK, None, &[]);
            let mut back = Vec::new();
            server_acked = rcv.len() as u64;
            if cheap {
                back.push((0, a));
            } else {
                feed(&mut c, &mut lists, 1, &a, &mut back);
                c.pump(0, &mut lists[0], None, &mut out);
            }
            for (eg, b) in back {
                prop_assert_eq!(eg, 0);
                if rng.next(100) < loss {
                    continue;
                }
                let s = wire::segment(&b).unwrap();
                let x = u64::from(s.ack.wrapping_sub(cfirst));
                prop_assert!(x <= data.len() as u64 + 1);
                acked = acked.max(x);
            }
        }
        if cheap {
            prop_assert_eq!(&rcv[..], &data[..rcv.len()], "the cheap path passes the bytes as they are");
            continue;
        }
        prop_assert!(rcv.len() <= want.len());
        prop_assert_eq!(&rcv[..], &want[..rcv.len()]);
    }
    prop_assert_eq!(rcv, want);
    prop_assert_eq!(acked, data.len() as u64 + 1, "the client's bytes and FIN are all acknowledged");
    prop_assert!(server_fin);
    Ok(())
}

#[test]
fn syn_options_are_scrubbed() {
    // MSS, SACK-permitted, timestamps, NOP, window scale.
    let mut o = [2, 4, 5, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 3, 3, 7];
    assert_eq!(scrub_syn_options(&mut o), (Some(1460), Some(7)));
    assert_eq!(o, [2, 4, 5, 0xb4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 7]);
}

#[test]
fn sequence_offsets_unwrap_across_zero() {
    assert_eq!(unwrap(5, 0), 5);
    assert_eq!(unwrap(0xffff_fff0, 0x1_0000_0005), 0xffff_fff0);
    assert_eq!(unwrap(3, 0xffff_fff0), 0x1_0000_0003);
}

#[test]
fn a_match_split_across_segments_is_rewritten() {
    let data = b"xxfooyyfo".iter().chain(b"ozz").copied().collect::<Vec<u8>>();
    let edits = vec![(2, 3, b"barbaz".to_vec()), (7, 3, b"barbaz".to_vec())];
    run(&data, &edits, 1, 0).unwrap();
}

#[test]
fn an_upgrade_mid_stream_rewrites_from_the_upgrade_point() {
    let data = b"foo foo foo foo foo foo foo foo".to_vec();
    // The edit at 0 comes too late (refused), the one at 20 applies.
    let edits = vec![(0, 3, b"X".to_vec()), (20, 3, b"barbaz".to_vec())];
    run_upgraded(&data, &edits, 3, 0, Some(10)).unwrap();
    run_upgraded(&data, &edits, 4, 20, Some(10)).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// No loss: random edits and segmentations.
    #[test]
    fn output_is_the_reference_rewrite(
        data in proptest::collection::vec(any::<u8>(), 0..2000),
        edits in proptest::collection::vec((0u64..2000, 0u64..8, proptest::collection::vec(any::<u8>(), 0..12)), 0..30),
        seed in any::<u64>(),
    ) {
        run(&data, &edits, seed, 0)?;
    }

    /// Loss both ways: retransmissions, resegmented, come out as the same bytes.
    #[test]
    fn retransmissions_are_consistent(
        data in proptest::collection::vec(any::<u8>(), 1..1500),
        edits in proptest::collection::vec((0u64..1500, 0u64..8, proptest::collection::vec(any::<u8>(), 0..12)), 0..30),
        seed in any::<u64>(),
        loss in 1u64..30,
    ) {
        run(&data, &edits, seed, loss)?;
    }

    /// Upgraded mid-stream, with or without loss: the bytes before the upgrade point arrive
    /// as they were (repeats of them pass as they came), the rest as the reference rewrite.
    #[test]
    fn an_upgraded_connection_is_rewritten_from_the_upgrade_point(
        data in proptest::collection::vec(any::<u8>(), 1..1500),
        edits in proptest::collection::vec((0u64..1500, 0u64..8, proptest::collection::vec(any::<u8>(), 0..12)), 0..30),
        seed in any::<u64>(),
        loss in 0u64..30,
        at in 0u64..1500,
    ) {
        let k = at % (data.len() as u64 + 1);
        run_upgraded(&data, &edits, seed, loss, Some(k))?;
    }
}

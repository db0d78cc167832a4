//! Property test of the TCP tracker over several interleaved connections: random payloads
//! cut into random segments, reordered, duplicated, retransmitted with consistent overlaps →
//! every direction's reassembled bytes equal the original; the frontier never moves
//! backwards; each `DataReady` extends the previous one exactly (so every event's visible
//! stream is a prefix of the final stream).

use proptest::prelude::*;
use stacks::flow_table::{Direction, EndReason, FlowId};
use stacks::parse::tcp_flags::{ACK, FIN, SYN};
use stacks::tcp::{Segment, TcpConfig, TcpEvent, TcpState, TcpTracker};

#[derive(Clone, Debug)]
struct Conn {
    isn: [u32; 2],
    data: [Vec<u8>; 2],
}

/// (connection, direction, offset, len) pieces, plus duplicates.
fn pieces(conns: &[Conn], cuts: &[usize]) -> Vec<(usize, usize, usize, usize)> {
    let mut out = Vec::new();
    let mut k = 0;
    for (c, conn) in conns.iter().enumerate() {
        for d in 0..2 {
            let mut off = 0;
            let len = conn.data[d].len();
            while off < len {
                let n = (cuts[k % cuts.len()]).clamp(1, len - off);
                k += 1;
                out.push((c, d, off, n));
                off += n;
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn interleaved_connections_reassemble_exactly(
        conns in prop::collection::vec(
            (any::<u32>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..3000), prop::collection::vec(any::<u8>(), 0..3000))
                .prop_map(|(a, b, x, y)| Conn { isn: [a, b], data: [x, y] }),
            1..5),
        cuts in prop::collection::vec(1usize..700, 1..20),
        order in prop::collection::vec(any::<u32>(), 1..200),
        dup_every in 2usize..9,
    ) {
        let mut t = TcpTracker::new(TcpConfig::default());
        let mut ev = Vec::new();
        let id = |c: usize| FlowId { index: c as u32, generation: 1 };
        let dir = |d: usize| if d == 0 { Direction::ToServer } else { Direction::ToClient };
        // Handshakes first.
        for (c, conn) in conns.iter().enumerate() {
            let seg = |d, seq, ack, flags| Segment { dir: dir(d), seq, ack, flags, window: 100, options: &[], payload: &[] };
            t.segment(id(c), &seg(0, conn.isn[0], 0, SYN), &mut ev);
            t.segment(id(c), &seg(1, conn.isn[1], conn.isn[0].wrapping_add(1), SYN | ACK), &mut ev);
            t.segment(id(c), &seg(0, conn.isn[0].wrapping_add(1), conn.isn[1].wrapping_add(1), ACK), &mut ev);
        }
        ev.clear();
        // Pieces shuffled by `order`, every `dup_every`-th sent twice, some re-cut overlapping.
        let mut ps = pieces(&conns, &cuts);
        for i in (1..ps.len()).rev() {
            let j = order[i % order.len()] as usize % (i + 1);
            ps.swap(i, j);
        }
        let mut sends = Vec::new();
        for (i, p) in ps.iter().enumerate() {
            sends.push(*p);
            if i % dup_every == 0 {
                sends.push(*p);
            }
            if i % (dup_every + 1) == 0 && p.3 > 2 {
                // A consistent overlapping retransmission: the second half again.
                sends.push((p.0, p.1, p.2 + p.3 / 2, p.3 - p.3 / 2));
            }
        }
        let mut frontier = vec![[0u64; 2]; conns.len()];
        let mut hashed: Vec<[Vec<u8>; 2]> = vec![[Vec::new(), Vec::new()]; conns.len()];
        for (c, d, off, n) in sends {
            let conn = &conns[c];
            let seq = conn.isn[d].wrapping_add(1).wrapping_add(off as u32);
            let ack = conn.isn[1 - d].wrapping_add(1);
            let s = Segment { dir: dir(d), seq, ack, flags: ACK, window: 100, options: &[], payload: &conn.data[d][off..off + n] };
            t.segment(id(c), &s, &mut ev);
            for e in ev.drain(..) {
                if let TcpEvent::DataReady { dir: ed, from, to } = e {
                    let di = if ed == Direction::ToServer { 0 } else { 1 };
                    prop_assert_eq!(from, frontier[c][di], "DataReady starts at the previous frontier");
                    prop_assert!(to > from, "the frontier only moves forward");
                    frontier[c][di] = to;
                    let stream = t.get(id(c)).unwrap().stream(ed).unwrap();
                    for sl in stream.read(from, to).unwrap().data() {
                        hashed[c][di].extend_from_slice(sl);
                    }
                    // What an event exposes is a prefix of the original bytes.
                    prop_assert_eq!(&hashed[c][di][..], &conn.data[di][..to as usize]);
                }
            }
        }
        for (c, conn) in conns.iter().enumerate() {
            for (d, (got, want)) in hashed[c].iter().zip(&conn.data).enumerate() {
                prop_assert_eq!(got, want, "connection {} direction {}", c, d);
            }
            let got = t.end(id(c), EndReason::Shutdown, &mut ev).unwrap();
            prop_assert!(got.halves().iter().all(|h| h.state == TcpState::Established));
            t.recycle(got);
        }
        prop_assert_eq!(t.budget().used, 0, "every chunk given back");
    }
}

fn seg(dir: Direction, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Segment<'_> {
    Segment { dir, seq, ack, flags, window: 100, options: &[], payload }
}

#[test]
fn simultaneous_open() {
    let mut t = TcpTracker::new(TcpConfig::default());
    let id = FlowId { index: 0, generation: 1 };
    let mut ev = vec![];
    t.segment(id, &seg(Direction::ToServer, 100, 0, SYN, b""), &mut ev);
    t.segment(id, &seg(Direction::ToClient, 500, 0, SYN, b""), &mut ev);
    let c = t.get(id).unwrap();
    assert_eq!((c.halves()[0].state, c.halves()[1].state), (TcpState::SynRcvd, TcpState::SynRcvd));
    t.segment(id, &seg(Direction::ToServer, 100, 501, SYN | ACK, b""), &mut ev);
    t.segment(id, &seg(Direction::ToClient, 500, 101, SYN | ACK, b""), &mut ev);
    t.segment(id, &seg(Direction::ToServer, 101, 501, ACK, b""), &mut ev);
    t.segment(id, &seg(Direction::ToClient, 501, 101, ACK, b""), &mut ev);
    let c = t.get(id).unwrap();
    assert_eq!((c.halves()[0].state, c.halves()[1].state), (TcpState::Established, TcpState::Established));
    assert!(ev.contains(&TcpEvent::Established));
}

#[test]
fn half_close_keeps_the_other_direction_flowing() {
    let mut t = TcpTracker::new(TcpConfig::default());
    let id = FlowId { index: 0, generation: 1 };
    let mut ev = vec![];
    t.segment(id, &seg(Direction::ToServer, 0, 0, SYN, b""), &mut ev);
    t.segment(id, &seg(Direction::ToClient, 0, 1, SYN | ACK, b""), &mut ev);
    t.segment(id, &seg(Direction::ToServer, 1, 1, ACK, b"request"), &mut ev);
    // The client is done sending: FIN, acknowledged.
    t.segment(id, &seg(Direction::ToServer, 8, 1, FIN | ACK, b""), &mut ev);
    t.segment(id, &seg(Direction::ToClient, 1, 9, ACK, b""), &mut ev);
    let c = t.get(id).unwrap();
    assert_eq!((c.halves()[0].state, c.halves()[1].state), (TcpState::FinWait2, TcpState::CloseWait));
    // The server keeps sending.
    ev.clear();
    t.segment(id, &seg(Direction::ToClient, 1, 9, ACK, b"response"), &mut ev);
    assert!(ev.contains(&TcpEvent::DataReady { dir: Direction::ToClient, from: 0, to: 8 }), "{ev:?}");
    t.segment(id, &seg(Direction::ToClient, 9, 9, FIN | ACK, b""), &mut ev);
    t.segment(id, &seg(Direction::ToServer, 9, 10, ACK, b""), &mut ev);
    let c = t.get(id).unwrap();
    assert_eq!((c.halves()[0].state, c.halves()[1].state), (TcpState::TimeWait, TcpState::Closed));
}

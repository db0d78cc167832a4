//! Impairment of a TCP connection's plan: segments lost before the capture point (and
//! retransmitted), reordered, or duplicated — drawn from a random stream of its own.
//!
//! # Contract
//!
//! [`Impairer::impair`] rewrites one connection's planned packets, in order, so that:
//!
//! * **The byte streams are unchanged.** Every data segment is still sent with its own
//!   sequence number and bytes, at least once; no segment is cut or merged. A reassembler
//!   reconstructs exactly the streams of the unimpaired plan.
//! * **Only data segments are impaired.** SYN, FIN, RST and pure ACKs are never lost,
//!   moved or copied, and every held-back segment is sent before the next *barrier*: a
//!   packet with SYN, FIN or RST, or a data segment of the peer (which answers only once it
//!   has all the bytes). So a retransmission never comes after the teardown, and the peer
//!   never answers a message it could not have received whole.
//! * **ACKs stay coherent.** While a segment is missing at the receiver (held back, or
//!   lost after the capture point), the receiver's ACKs in between acknowledge only up to
//!   that segment's first byte (duplicate ACKs); afterwards they are as planned.
//! * **The number of packets a connection sends in the capture's main schedule is
//!   unchanged**: a lost or reordered segment is moved, not added. A duplicate is added, but
//!   marked [`Pkt::extra`]: the generator writes it right after the packet before it in the
//!   plan, drawing its time gap from this stream ([`Impairer::gap_ns`]), so the main random
//!   stream — which plans the flows and interleaves them — sees exactly the draws it sees
//!   without impairment. Impairment therefore never changes which flows exist or what they
//!   carry, only the order, timing and copies of each connection's own packets.
//!
//! # The three impairments
//!
//! Each data segment `D` not already inside an impairment draws one number: with
//! probability `loss` it is lost, else with `reorder` reordered, else with `duplicate`
//! duplicated (so `loss + reorder + duplicate` is at most 1). Then:
//!
//! * **Lost** (before the capture point): `D` is not seen where it was sent; the capture
//!   shows the sender's next data segment `E` first (a hole), then 0–2 more packets of the
//!   connection, then `D`'s retransmission (same sequence number and bytes). Needs an `E`
//!   before the barrier; otherwise `D` passes unimpaired.
//! * **Reordered**: `D` is swapped with `E`: the capture shows `E`, then `D` right after it
//!   (with the receiver's packets between them in between). Needs an `E` before the barrier.
//! * **Duplicated** (lost after the capture point): `D` is seen, then 0–3 more packets of
//!   the connection (up to the barrier), then `D` again, identical.
//!
//! The packets inside an impairment's window are not impaired themselves, so impairments
//! never nest; the counts in [`Impaired`] are those applied, which can be fewer than the
//! probabilities suggest (a message's last segment cannot be lost or reordered).

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{GenConfig, Kind, Pkt};

/// Segments impaired in one connection (or a whole run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Impaired {
    pub lost: u64,
    pub reordered: u64,
    pub duplicated: u64,
}

/// What one data segment draws.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Lost,
    Reordered,
    Duplicated,
}

/// Impairs TCP plans from its own random stream (see the module docs).
pub(super) struct Impairer {
    rng: ChaCha8Rng,
    loss: f64,
    reorder: f64,
    duplicate: f64,
}

impl Impairer {
    /// `None` when `cfg` (already sanitized) asks for no impairment: then nothing is drawn
    /// and nothing changes.
    pub fn new(cfg: &GenConfig) -> Option<Impairer> {
        if cfg.loss + cfg.reorder + cfg.duplicate <= 0.0 {
            return None;
        }
        Some(Impairer {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x696d_7061_6972_2d31),
            loss: cfg.loss,
            reorder: cfg.reorder,
            duplicate: cfg.duplicate,
        })
    }

    /// The time from a packet to the duplicate written right after it: 1 to 200 µs, as the
    /// main schedule's gaps.
    pub fn gap_ns(&mut self) -> u64 {
        self.rng.gen_range(1..=200u64) * 1_000
    }

    fn fate(&mut self) -> Option<Fate> {
        let u: f64 = self.rng.gen();
        if u < self.loss {
            Some(Fate::Lost)
        } else if u < self.loss + self.reorder {
            Some(Fate::Reordered)
        } else if u < self.loss + self.reorder + self.duplicate {
            Some(Fate::Duplicated)
        } else {
            None
        }
    }

    /// Rewrites one TCP connection's `plan` (see the module docs); returns what it did.
    pub fn impair(&mut self, plan: &mut VecDeque<Pkt>) -> Impaired {
        let pkts: Vec<Pkt> = plan.drain(..).collect();
        let mut done = Impaired::default();
        let mut i = 0;
        // Each pass moves `i` forward by at least one packet.
        while i < pkts.len() {
            let d = pkts[i];
            let (Kind::Tcp { seq: d_seq, .. }, true) = (d.kind, d.len > 0) else {
                plan.push_back(d);
                i += 1;
                continue;
            };
            let Some(fate) = self.fate() else {
                plan.push_back(d);
                i += 1;
                continue;
            };
            let barrier = (i + 1..pkts.len()).find(|&k| is_barrier(&pkts[k], d.to_server)).unwrap_or(pkts.len());
            let next_same = (i + 1..barrier).find(|&k| pkts[k].to_server == d.to_server && pkts[k].len > 0);
            // The window: packets written between D's place and D (again), `i + 1..end`.
            let end = match fate {
                Fate::Lost => next_same.map(|e| (e + 1 + self.rng.gen_range(0..=2)).min(barrier)),
                Fate::Reordered => next_same.map(|e| e + 1),
                Fate::Duplicated => Some((i + 1 + self.rng.gen_range(0..=3)).min(barrier)),
            };
            let Some(end) = end else {
                plan.push_back(d);
                i += 1;
                continue;
            };
            let mut again = d;
            match fate {
                Fate::Lost => done.lost += 1,
                Fate::Reordered => done.reordered += 1,
                Fate::Duplicated => {
                    done.duplicated += 1;
                    plan.push_back(d);
                    again.extra = true;
                }
            }
            for p in &pkts[i + 1..end] {
                let mut p = *p;
                // The receiver still misses D: its ACKs stop at D's first byte.
                if let Kind::Tcp { ack: Some(ack), .. } = &mut p.kind {
                    if p.to_server != d.to_server {
                        *ack = d_seq;
                    }
                }
                plan.push_back(p);
            }
            plan.push_back(again);
            i = end;
        }
        done
    }
}

/// A packet no held-back segment of the `to_server` side may pass: SYN, FIN or RST from
/// either side, or data from the peer.
fn is_barrier(p: &Pkt, to_server: bool) -> bool {
    match p.kind {
        Kind::Tcp { flags, .. } => flags.syn || flags.fin || flags.rst || (p.to_server != to_server && p.len > 0),
        Kind::Udp => true,
    }
}

//! The generator's impairment (`loss`, `reorder`, `duplicate`) and log-uniform response
//! sizes: without them the output is byte-identical to the generator before they existed;
//! with them it is deterministic, the summary counts what was written, ACKs never run
//! ahead of what the receiver can have, and the byte streams rebuilt by sequence number
//! are those of the unimpaired run.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use etherparse::{NetHeaders, PacketHeaders, PayloadSlice, TransportHeader};
use runtime::ports::gen::{GenConfig, GenSummary, SizeDist};

mod gen_frames;
use gen_frames::{collect, digest};

/// A mix of everything but impairment: TLS, SSH, DNS, IPv6, VLANs, attacks, small MSS.
fn mix() -> GenConfig {
    GenConfig {
        flows: 300,
        seed: 5,
        udp_fraction: 0.2,
        tls_fraction: 0.2,
        ssh_fraction: 0.1,
        ipv6_fraction: 0.3,
        vlan_fraction: 0.2,
        mss: 536,
        response_size: (0, 70_000),
        attacks: 12,
        concurrency: 40,
        ..GenConfig::default()
    }
}

/// The IDS benchmark's capture before this change, at 500 flows.
fn bench() -> GenConfig {
    GenConfig {
        flows: 500,
        seed: 14,
        udp_fraction: 0.2,
        tls_fraction: 0.15,
        ssh_fraction: 0.05,
        attacks: 10,
        response_size: (200, 200_000),
        concurrency: 256,
        ..GenConfig::default()
    }
}

fn impaired(cfg: GenConfig) -> GenConfig {
    GenConfig { loss: 0.05, reorder: 0.05, duplicate: 0.03, ..cfg }
}

#[test]
fn without_impairment_the_output_is_that_of_the_generator_before_it() {
    // (frames, digest) recorded with the generator of main 8f77b4f, before the options existed.
    for (name, cfg, want) in [
        ("default", GenConfig::default(), (2990, 7181889872916921692)),
        ("mix", mix(), (51605, 16647371436574531276)),
        ("bench", bench(), (86950, 16703062487047245889)),
    ] {
        let (frames, s) = collect(&cfg);
        assert_eq!((frames.len(), digest(&frames)), want, "{name}");
        assert_eq!((s.lost, s.reordered, s.duplicated), (0, 0, 0));
        let json = toml::to_string(&s).unwrap();
        for field in ["lost", "reordered", "duplicated"] {
            assert!(!json.contains(field), "{name}: the manifest without impairment is unchanged");
        }
    }
}

/// One TCP segment as captured.
struct Seg {
    flow: usize,
    /// 0: client to server; 1: server to client.
    dir: usize,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    payload: Vec<u8>,
}

/// Parses every frame; recounts the summary's per-flow figures and checks them; returns
/// the TCP segments.
fn recount(frames: &[(u64, Vec<u8>)], s: &GenSummary) -> Vec<Seg> {
    assert_eq!(s.packets, frames.len() as u64);
    assert_eq!(s.bytes, frames.iter().map(|f| f.1.len() as u64).sum::<u64>());
    let by_tuple: HashMap<(SocketAddr, SocketAddr), usize> =
        s.flows.iter().enumerate().map(|(i, f)| ((f.client, f.server), i)).collect();
    let mut counts = vec![([0u64; 2], [0u64; 2], [0u64; 2], None, 0u64); s.flows.len()];
    let mut segs = Vec::new();
    let mut prev = 0;
    for (ts, f) in frames {
        assert!(*ts > prev, "timestamps strictly increase");
        prev = *ts;
        let h = PacketHeaders::from_ethernet_slice(f).expect("frame parses");
        let payload = match h.payload {
            PayloadSlice::Tcp(p) | PayloadSlice::Udp(p) => p.to_vec(),
            _ => panic!("no transport payload"),
        };
        let (sip, dip) = match h.net.as_ref().expect("ip") {
            NetHeaders::Ipv4(ip, _) => (IpAddr::from(ip.source), IpAddr::from(ip.destination)),
            NetHeaders::Ipv6(ip, _) => (IpAddr::from(ip.source), IpAddr::from(ip.destination)),
        };
        let (sp, dp, tcp) = match h.transport.expect("transport") {
            TransportHeader::Tcp(t) => (t.source_port, t.destination_port, Some(t)),
            TransportHeader::Udp(u) => (u.source_port, u.destination_port, None),
            _ => panic!("unexpected transport"),
        };
        let (src, dst) = (SocketAddr::new(sip, sp), SocketAddr::new(dip, dp));
        let (flow, dir) = match by_tuple.get(&(src, dst)) {
            Some(&i) => (i, 0),
            None => (by_tuple[&(dst, src)], 1),
        };
        let c = &mut counts[flow];
        c.0[dir] += 1;
        c.1[dir] += f.len() as u64;
        c.2[dir] += payload.len() as u64;
        c.3.get_or_insert(*ts);
        c.4 = *ts;
        if let Some(t) = tcp {
            segs.push(Seg {
                flow,
                dir,
                seq: t.sequence_number,
                ack: t.ack.then_some(t.acknowledgment_number),
                syn: t.syn,
                fin: t.fin,
                rst: t.rst,
                payload,
            });
        }
    }
    for (f, c) in s.flows.iter().zip(&counts) {
        assert_eq!([f.pkts_toserver, f.pkts_toclient], c.0, "flow {}", f.id);
        assert_eq!([f.bytes_toserver, f.bytes_toclient], c.1, "flow {}", f.id);
        assert_eq!([f.payload_toserver, f.payload_toclient], c.2, "flow {}", f.id);
        assert_eq!((Some(f.first_ts_ns), f.last_ts_ns), (c.3, c.4), "flow {}", f.id);
    }
    segs
}

/// What a receiver rebuilds of each flow's two directions, by sequence number, and what the
/// capture shows of the impairment: (streams, segments behind the frontier, segments
/// beyond it).
#[allow(clippy::type_complexity)]
fn rebuild(segs: &[Seg], flows: usize) -> (Vec<[Vec<u8>; 2]>, u64, u64) {
    struct Side {
        /// Next in-order sequence number (after the SYN).
        next: Option<u32>,
        /// Segments beyond `next`, by offset from it at arrival.
        held: BTreeMap<u32, Vec<u8>>,
        bytes: Vec<u8>,
        fin: bool,
    }
    let mut sides: Vec<[Side; 2]> = (0..flows)
        .map(|_| std::array::from_fn(|_| Side { next: None, held: BTreeMap::new(), bytes: Vec::new(), fin: false }))
        .collect();
    let (mut behind, mut beyond) = (0, 0);
    for s in segs {
        // ACKs acknowledge only bytes the receiver has in order.
        if let (Some(ack), Some(peer_next)) = (s.ack, sides[s.flow][1 - s.dir].next) {
            let ahead = ack.wrapping_sub(peer_next) as i32;
            assert!(ahead <= 0, "flow {} dir {}: ACK {ack} runs ahead of the in-order {peer_next}", s.flow, s.dir);
        }
        let side = &mut sides[s.flow][s.dir];
        if s.syn {
            assert!(s.payload.is_empty());
            side.next = Some(s.seq.wrapping_add(1));
            continue;
        }
        let next = side.next.expect("the SYN comes first");
        assert!(!side.fin || s.payload.is_empty(), "no data after the FIN");
        if s.fin || s.rst {
            assert_eq!(s.seq, next, "flow {}: FIN/RST only once every byte was sent in order", s.flow);
            side.fin |= s.fin;
            assert!(side.held.is_empty(), "flow {}: no hole at the teardown", s.flow);
            if s.fin {
                side.next = Some(next.wrapping_add(1));
            }
            continue;
        }
        if s.payload.is_empty() {
            continue;
        }
        let off = s.seq.wrapping_sub(next);
        if off > u32::MAX / 2 {
            // Behind the frontier: a retransmission of bytes already in order.
            behind += 1;
            continue;
        }
        if off > 0 {
            beyond += 1;
            side.held.insert(s.seq, s.payload.clone());
            continue;
        }
        side.bytes.extend_from_slice(&s.payload);
        let mut n = next.wrapping_add(s.payload.len() as u32);
        while let Some(p) = side.held.remove(&n) {
            side.bytes.extend_from_slice(&p);
            n = n.wrapping_add(p.len() as u32);
        }
        side.next = Some(n);
    }
    let streams = sides
        .into_iter()
        .map(|[c, s]| {
            assert!(c.held.is_empty() && s.held.is_empty(), "every hole is filled");
            [c.bytes, s.bytes]
        })
        .collect();
    (streams, behind, beyond)
}

#[test]
fn impaired_streams_rebuild_to_the_unimpaired_ones() {
    for base in [mix(), bench(), GenConfig { flows: 200, seed: 3, mss: 100, ..GenConfig::default() }] {
        let (plain_frames, plain) = collect(&base);
        let plain_streams = rebuild(&recount(&plain_frames, &plain), plain.flows.len()).0;
        let cfg = impaired(base.clone());
        cfg.validate().unwrap();
        let (frames, s) = collect(&cfg);
        let segs = recount(&frames, &s);
        let (streams, behind, beyond) = rebuild(&segs, s.flows.len());
        assert!(s.lost > 0 && s.reordered > 0 && s.duplicated > 0, "{} {} {}", s.lost, s.reordered, s.duplicated);
        assert_eq!(s.lost, s.flows.iter().map(|f| f.lost).sum::<u64>());
        assert_eq!(s.reordered, s.flows.iter().map(|f| f.reordered).sum::<u64>());
        assert_eq!(s.duplicated, s.flows.iter().map(|f| f.duplicated).sum::<u64>());
        // Each duplicate is one more frame; loss and reordering move frames.
        assert_eq!(s.packets, plain.packets + s.duplicated);
        // Every lost or reordered segment shows a later one first; every duplicate and every
        // one they overtook... at least: the duplicates arrive behind the frontier.
        assert!(beyond >= s.lost + s.reordered, "{beyond} segments beyond the frontier");
        assert!(behind >= s.duplicated, "{behind} segments behind the frontier");
        // Same flows, same bytes.
        assert_eq!(s.flows.len(), plain.flows.len());
        for (a, b) in s.flows.iter().zip(&plain.flows) {
            assert_eq!(
                (a.client, a.server, a.app, a.requests, &a.teardown),
                (b.client, b.server, b.app, b.requests, &b.teardown)
            );
            assert!(a.payload_toserver >= b.payload_toserver && a.payload_toclient >= b.payload_toclient);
        }
        assert!(streams == plain_streams, "the rebuilt streams equal the unimpaired ones");
        // UDP is never impaired.
        for (a, b) in s.flows.iter().zip(&plain.flows).filter(|(a, _)| a.proto == "udp") {
            assert_eq!(
                (a.pkts_toserver, a.pkts_toclient, a.bytes_toserver),
                (b.pkts_toserver, b.pkts_toclient, b.bytes_toserver)
            );
        }
    }
}

#[test]
fn impairment_is_deterministic_and_each_kind_alone_works() {
    let cfg = impaired(mix());
    let (a, sa) = collect(&cfg);
    let (b, sb) = collect(&cfg);
    assert!(a == b);
    assert_eq!(sa, sb);
    assert_ne!(digest(&a), digest(&collect(&GenConfig { seed: 6, ..cfg.clone() }).0));
    for (loss, reorder, duplicate) in
        [(0.1, 0.0, 0.0), (0.0, 0.1, 0.0), (0.0, 0.0, 0.1), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
    {
        let cfg = GenConfig { loss, reorder, duplicate, ..mix() };
        let (frames, s) = collect(&cfg);
        let (streams, _, _) = rebuild(&recount(&frames, &s), s.flows.len());
        let (pf, ps) = collect(&mix());
        assert!(streams == rebuild(&recount(&pf, &ps), ps.flows.len()).0, "{loss} {reorder} {duplicate}");
        assert_eq!((s.lost > 0, s.reordered > 0, s.duplicated > 0), (loss > 0.0, reorder > 0.0, duplicate > 0.0));
    }
}

/// Many seeds, tiny segments, heavy impairment of every kind at once: the streams still
/// rebuild to the unimpaired ones, and the ACKs never run ahead (checked in `rebuild`).
#[test]
fn heavy_impairment_over_many_seeds() {
    for seed in 1..=24 {
        let base = GenConfig {
            flows: 30,
            seed,
            mss: 64,
            concurrency: 8,
            rst_fraction: 0.5,
            response_size: (0, 4_000),
            response_size_dist: if seed % 2 == 0 { SizeDist::LogUniform } else { SizeDist::Uniform },
            tls_fraction: 0.3,
            ssh_fraction: 0.2,
            ..GenConfig::default()
        };
        let (pf, ps) = collect(&base);
        let want = rebuild(&recount(&pf, &ps), ps.flows.len()).0;
        for (loss, reorder, duplicate) in [(0.3, 0.3, 0.3), (0.0, 1.0, 0.0), (0.5, 0.0, 0.5)] {
            let cfg = GenConfig { loss, reorder, duplicate, ..base.clone() };
            let (frames, s) = collect(&cfg);
            let (streams, _, _) = rebuild(&recount(&frames, &s), s.flows.len());
            assert!(streams == want, "seed {seed}: {loss} {reorder} {duplicate}");
            assert_eq!(s.packets, ps.packets + s.duplicated);
        }
    }
}

#[test]
fn impairment_options_are_validated_and_clamped() {
    let bad = GenConfig { loss: 1.5, reorder: -0.1, duplicate: f64::NAN, ..GenConfig::default() };
    let e = bad.validate().unwrap_err();
    for word in ["loss must be in [0, 1], not 1.5", "reorder must be in [0, 1]", "duplicate must be in [0, 1]"] {
        assert!(e.contains(word), "{word} missing from {e}");
    }
    let over = GenConfig { loss: 0.5, reorder: 0.4, duplicate: 0.3, ..GenConfig::default() };
    let e = over.validate().unwrap_err();
    assert!(e.contains("loss + reorder + duplicate must be at most 1"), "{e}");
    // generate() clamps and scales rather than panics.
    for cfg in [bad, over] {
        let (frames, s) = collect(&GenConfig { flows: 20, ..cfg });
        recount(&frames, &s);
    }
}

#[test]
fn config_from_toml_with_the_new_keys() {
    let cfg: GenConfig =
        toml::from_str("loss = 0.01\nreorder = 0.02\nduplicate = 0.005\nresponse_size = [100, 1000000]\nresponse_size_dist = \"log_uniform\"\n")
            .unwrap();
    assert_eq!((cfg.loss, cfg.reorder, cfg.duplicate), (0.01, 0.02, 0.005));
    assert_eq!(cfg.response_size_dist, SizeDist::LogUniform);
    assert!(toml::from_str::<GenConfig>("response_size_dist = \"zipf\"\n").is_err());
}

/// HTTP response body sizes, from the Content-Length headers of the rebuilt streams.
fn http_bodies(cfg: &GenConfig) -> Vec<u64> {
    let (frames, s) = collect(cfg);
    let (streams, _, _) = rebuild(&recount(&frames, &s), s.flows.len());
    let mut out = Vec::new();
    for [_, server] in &streams {
        let text = String::from_utf8_lossy(server);
        for part in text.split("Content-Length: ").skip(1) {
            out.push(part.split("\r\n").next().unwrap().parse().unwrap());
        }
    }
    out
}

#[test]
fn log_uniform_response_sizes_are_mostly_small_with_a_few_large() {
    let base = GenConfig {
        flows: 100,
        seed: 11,
        udp_fraction: 0.0,
        requests_per_flow: (3, 3),
        response_size: (100, 100_000),
        ..GenConfig::default()
    };
    let uniform = http_bodies(&base);
    let log = http_bodies(&GenConfig { flows: 400, ..log_cfg(&base) });
    assert_eq!(log.len(), 1200);
    assert!(log.iter().all(|&n| (100..=100_000).contains(&n)));
    let median = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    // Uniform: median near 50 kB. Log-uniform over 101..=100,001: median near
    // sqrt(101 · 100,001) ≈ 3.2 kB; each decade holds about a third of the sizes.
    assert!(median(&uniform) > 40_000, "{}", median(&uniform));
    let m = median(&log);
    assert!((2_000..5_000).contains(&m), "log-uniform median {m}");
    for (lo, hi) in [(100, 1_000), (1_000, 10_000), (10_000, 100_001)] {
        let share = log.iter().filter(|&&n| n >= lo && n < hi).count() as f64 / log.len() as f64;
        assert!((0.27..0.40).contains(&share), "[{lo}, {hi}): {share}");
    }
    // Equal bounds and a zero minimum work too.
    for range in [(0, 0), (7, 7), (0, 1), (0, 100_000)] {
        let sizes = http_bodies(&GenConfig { flows: 30, response_size: range, ..log_cfg(&base) });
        assert!(sizes.iter().all(|&n| n >= u64::from(range.0) && n <= u64::from(range.1)), "{range:?}");
        assert!(!sizes.is_empty());
    }
}

fn log_cfg(base: &GenConfig) -> GenConfig {
    GenConfig { response_size_dist: SizeDist::LogUniform, ..base.clone() }
}

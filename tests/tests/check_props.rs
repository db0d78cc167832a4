//! Property test of the consistency claim: generated traffic — many interleaved flows, then
//! impaired with loss, reordering, duplicated and overlapping retransmissions, RSTs in odd
//! places — through generated chains of 1–5 NFs with random subscriptions, sides and
//! parallel groups: every mode agrees with mode a. The same on corrupted captures
//! (truncated, bytes flipped, the wrong link type in the header, zero-length records,
//! corrupted deterministically from the case's seed): malformed frames are dropped alike.
//!
//! CI runs a few cases; `PROPTEST_CASES=200 cargo test -p tests --test check_props` runs
//! more. A failure shrinks to a small case, which proptest saves under
//! `tests/proptest-regressions/` and replays first from then on.

use etherparse::PacketBuilder;
use microboxes::check::{check, CheckError, CheckOptions};
use microboxes::{App, Mode, RunError};
use proptest::prelude::*;
use runtime::ports::gen::{generate, GenConfig};
use runtime::ports::{LinkType, PcapWriter};
use stacks::parse::{parse, tcp_flags, Transport};

/// Rebuilds a TCP frame with other flags and payload (Ethernet + IPv4/IPv6 only).
fn rebuild(frame: &[u8], seq_delta: u32, flags: u8, payload: &[u8]) -> Option<Vec<u8>> {
    let p = parse(LinkType::Ethernet, frame).ok()?;
    let Transport::Tcp(t) = p.transport else { return None };
    if p.vlan.is_some() {
        return None;
    }
    let ip = p.ip?;
    let eth = PacketBuilder::ethernet2([2; 6], [4; 6]);
    let l3 = match (ip.src, ip.dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => return None,
    };
    let mut b = l3.tcp(t.src_port, t.dst_port, t.seq.wrapping_add(seq_delta), t.window);
    if flags & tcp_flags::ACK != 0 {
        b = b.ack(t.ack);
    }
    if flags & tcp_flags::RST != 0 {
        b = b.rst();
    }
    if flags & tcp_flags::PSH != 0 {
        b = b.psh();
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).ok()?;
    Some(v)
}

#[derive(Clone, Debug)]
struct Impair {
    loss: u8,
    dup: u8,
    reorder: u8,
    overlap: u8,
    rst: u8,
    seed: u64,
}

fn impaired(cfg: &GenConfig, imp: &Impair) -> Vec<(u64, Vec<u8>)> {
    let mut frames = Vec::new();
    generate(cfg, |ts, f| {
        frames.push((ts, f.to_vec()));
        Ok::<(), ()>(())
    })
    .unwrap();
    let mut x = imp.seed | 1;
    let mut roll = |pct: u8| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 100) < u64::from(pct)
    };
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    for (ts, f) in frames {
        if roll(imp.loss) {
            continue;
        }
        let payload = parse(LinkType::Ethernet, &f).ok().map(|p| p.payload(&f).to_vec()).unwrap_or_default();
        if roll(imp.rst) {
            if let Some(r) = rebuild(&f, 0, tcp_flags::RST | tcp_flags::ACK, b"") {
                out.push((ts, r));
            }
        }
        out.push((ts, f.clone()));
        if payload.len() > 2 && roll(imp.overlap) {
            // A retransmission overlapping the segment's second half, plus one new byte's worth
            // less: consistent bytes.
            let half = payload.len() / 2;
            if let Some(r) = rebuild(&f, half as u32, tcp_flags::ACK | tcp_flags::PSH, &payload[half..]) {
                out.push((ts, r));
            }
        }
        if roll(imp.dup) {
            out.push((ts, f));
        }
        if out.len() >= 2 && roll(imp.reorder) {
            let n = out.len();
            out.swap(n - 1, n - 2);
        }
    }
    // Keep capture timestamps non-decreasing after reordering.
    let mut last = 0;
    for (ts, _) in &mut out {
        last = (*ts).max(last);
        *ts = last;
    }
    out
}

#[derive(Clone, Debug)]
enum NfKind {
    Firewall { drop_udp: bool, drop_port: Option<u16>, stateful: bool },
    FlowStats { subscribe: Option<&'static str> },
    StreamHash { side: Option<&'static str> },
    Dpi,
}

fn nf_strategy() -> impl Strategy<Value = NfKind> {
    prop_oneof![
        (any::<bool>(), prop::option::of(prop_oneof![Just(80u16), Just(53u16)]), any::<bool>())
            .prop_map(|(drop_udp, drop_port, stateful)| NfKind::Firewall { drop_udp, drop_port, stateful }),
        prop::option::of(prop_oneof![Just("PKT/TCP"), Just("PKT/UDP"), Just("PKT")])
            .prop_map(|subscribe| NfKind::FlowStats { subscribe }),
        prop::option::of(prop_oneof![Just("client"), Just("server"), Just("both")])
            .prop_map(|side| NfKind::StreamHash { side }),
        Just(NfKind::Dpi),
    ]
}

fn app_text(nfs: &[NfKind], groups: &[Vec<usize>], dir: &std::path::Path) -> String {
    let mut s = String::new();
    if !groups.is_empty() {
        let g: Vec<String> = groups
            .iter()
            .map(|g| format!("[{}]", g.iter().map(|i| format!("\"nf{i}\"")).collect::<Vec<_>>().join(", ")))
            .collect();
        s += &format!("parallel = [{}]\n", g.join(", "));
    }
    s += "[runtime]\nring_capacity = 64\n[stack.tcp]\n";
    for (i, nf) in nfs.iter().enumerate() {
        s += &format!("[[nf]]\nname = \"nf{i}\"\n");
        match nf {
            NfKind::Firewall { drop_udp, drop_port, stateful } => {
                s += &format!("kind = \"firewall\"\nstateful = {stateful}\nrules = [");
                if *drop_udp {
                    s += "{ action = \"drop\", proto = \"udp\" }, ";
                }
                if let Some(p) = drop_port {
                    s += &format!("{{ action = \"drop\", dst_port = {p}, src = \"198.51.100.0/24\" }}, ");
                }
                s += "]\n";
            }
            NfKind::FlowStats { subscribe } => {
                s += &format!(
                    "kind = \"flow_stats\"\noutput = {:?}\n",
                    dir.join(format!("nf{i}.jsonl")).display().to_string()
                );
                if let Some(t) = subscribe {
                    s += &format!("subscribe = [\"{t}\"]\n");
                }
            }
            NfKind::StreamHash { side } => {
                s += &format!(
                    "kind = \"stream_hash\"\noutput = {:?}\n",
                    dir.join(format!("nf{i}.jsonl")).display().to_string()
                );
                if let Some(sd) = side {
                    s += &format!("side = \"{sd}\"\n");
                }
            }
            NfKind::Dpi => {
                s +=
                    &format!("kind = \"dpi\"\noutput = {:?}\n", dir.join(format!("nf{i}.jsonl")).display().to_string());
            }
        }
    }
    s
}

/// Random parallel groups: `cuts` cuts the chain of `n` NFs into runs.
fn groups(n: usize, cuts: &[bool]) -> Vec<Vec<usize>> {
    let mut groups = Vec::new();
    let mut cur = vec![0usize];
    for i in 1..n {
        if cuts[i - 1] {
            if cur.len() > 1 {
                groups.push(std::mem::take(&mut cur));
            }
            cur = vec![i];
        } else {
            cur.push(i);
        }
    }
    if cur.len() > 1 {
        groups.push(cur);
    }
    groups
}

/// Checks modes b, c, d against mode a on `input`. With `input_may_fail`, a run of mode a
/// that fails on the input (a capture the reader rejects part-way) ends the case: the other
/// modes are not compared (they read the same bytes).
fn check_all_modes(
    nfs: &[NfKind],
    cuts: &[bool],
    dir: &std::path::Path,
    input: &std::path::Path,
    single_core: bool,
    input_may_fail: bool,
) -> Result<(), TestCaseError> {
    let text = app_text(nfs, &groups(nfs.len(), cuts), dir);
    let app = App::parse(&text, "generated.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let opts = CheckOptions { modes: vec![Mode::B, Mode::C, Mode::D], single_core, ..CheckOptions::default() };
    match check(&app, input, &opts) {
        // The controller refused the random groups (a dropper before a reader, ...): a
        // correct refusal, not a divergence. Try the case without explicit groups.
        Err(CheckError::Run { mode: Mode::D, source: RunError::Config(problems) }) => {
            prop_assert!(problems.iter().all(|p| p.contains("parallel group")), "{problems:?}");
            let app = App::parse(&app_text(nfs, &[], dir), "generated.toml").unwrap();
            let r = check(&app, input, &opts).unwrap();
            prop_assert!(r.consistent(), "{}\n{}", r.to_text(), app_text(nfs, &[], dir));
        }
        Err(CheckError::Failed { mode: Mode::A, .. }) if input_may_fail => {}
        Err(e) => prop_assert!(false, "{e}\n{text}"),
        Ok(r) => prop_assert!(r.consistent(), "{}\n{text}", r.to_text()),
    }
    Ok(())
}

/// How a capture is corrupted.
#[derive(Clone, Copy, Debug)]
enum Corruption {
    /// Cut at a random byte.
    Truncate,
    /// Random bytes of the records flipped.
    Flip,
    /// The header names another link type (raw IP or Linux SLL) than the frames have.
    WrongLink,
    /// Records of length zero inserted between frames.
    ZeroLength,
}

/// The pcap bytes of `frames`, corrupted by `how`, deterministically from `seed`.
fn corrupted(frames: &[(u64, Vec<u8>)], how: Corruption, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut w = PcapWriter::to_vec(LinkType::Ethernet);
    for (ts, f) in frames {
        w.write(*ts, f, f.len() as u32).unwrap();
        if matches!(how, Corruption::ZeroLength) && next() % 4 == 0 {
            w.write(*ts, &[], 0).unwrap();
        }
    }
    let mut bytes = w.into_inner().unwrap();
    let records = bytes.len() - 24;
    match how {
        Corruption::Truncate if records > 0 => bytes.truncate(24 + (next() as usize % records)),
        Corruption::Flip if records > 0 => {
            for _ in 0..1 + next() % 16 {
                let at = 24 + next() as usize % records;
                bytes[at] ^= 1 << (next() % 8);
            }
        }
        Corruption::WrongLink => {
            let link = if next() % 2 == 0 { LinkType::RawIp } else { LinkType::LinuxSll };
            bytes[20..24].copy_from_slice(&link.to_pcap().to_le_bytes());
        }
        _ => {}
    }
    bytes
}

/// Generated traffic: `udp` and `rst` in percent.
fn traffic(flows: usize, seed: u64, udp: u8, rst: u8, concurrency: usize) -> GenConfig {
    GenConfig {
        flows,
        seed,
        udp_fraction: f64::from(udp) / 100.0,
        rst_fraction: f64::from(rst) / 100.0,
        concurrency,
        response_size: (0, 6000),
        ..GenConfig::default()
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 64, ..ProptestConfig::default() })]
    #[test]
    fn every_mode_agrees_with_private_stacks(
        flows in 3usize..30,
        seed in any::<u64>(),
        udp in 0u8..40,
        rst in 0u8..40,
        concurrency in 1usize..12,
        imp in (0u8..8, 0u8..8, 0u8..10, 0u8..10, 0u8..3, any::<u64>())
            .prop_map(|(loss, dup, reorder, overlap, rst, seed)| Impair { loss, dup, reorder, overlap, rst, seed }),
        nfs in prop::collection::vec(nf_strategy(), 1..=5),
        cuts in prop::collection::vec(any::<bool>(), 5),
        single_core in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let frames = impaired(&traffic(flows, seed, udp, rst, concurrency), &imp);
        let input = dir.path().join("in.pcap");
        let mut w = PcapWriter::create(&input, LinkType::Ethernet).unwrap();
        for (ts, f) in &frames {
            w.write(*ts, f, f.len() as u32).unwrap();
        }
        w.finish().unwrap();
        check_all_modes(&nfs, &cuts, dir.path(), &input, single_core, false)?;
    }

    #[test]
    fn every_mode_agrees_on_corrupted_captures(
        flows in 3usize..20,
        seed in any::<u64>(),
        udp in 0u8..40,
        how in prop_oneof![
            Just(Corruption::Truncate),
            Just(Corruption::Flip),
            Just(Corruption::WrongLink),
            Just(Corruption::ZeroLength),
        ],
        nfs in prop::collection::vec(nf_strategy(), 1..=4),
        cuts in prop::collection::vec(any::<bool>(), 4),
        single_core in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let frames = impaired(&traffic(flows, seed, udp, 0, 4), &Impair { loss: 0, dup: 0, reorder: 0, overlap: 0, rst: 0, seed });
        let input = dir.path().join("in.pcap");
        std::fs::write(&input, corrupted(&frames, how, seed)).unwrap();
        check_all_modes(&nfs, &cuts, dir.path(), &input, single_core, true)?;
    }
}

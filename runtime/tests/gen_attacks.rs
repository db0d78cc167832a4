//! The generator's `attacks` option: carriers are TCP, spread, deterministic, and carry
//! their attack string; `attacks = 0` is byte-identical to the generator before the option existed.

use runtime::ports::gen::{Attack, GenConfig};

mod gen_frames;
use gen_frames::{collect, digest};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn zero_attacks_is_the_traffic_of_the_generator_without_the_option() {
    // Digests of the generator's output before `attacks` existed (commit 0b66736).
    let (frames, s) = collect(&GenConfig::default());
    assert_eq!((frames.len(), digest(&frames)), (EXPECTED_DEFAULT.0, EXPECTED_DEFAULT.1));
    assert_eq!(s.attacks, 0);
    assert!(s.flows.iter().all(|f| f.attack.is_none()));
    let json = toml::to_string(&s).unwrap();
    assert!(!json.contains("attack"), "the manifest without attacks is unchanged: {json}");
}

const EXPECTED_DEFAULT: (usize, u64) = (2990, 7181889872916921692);

#[test]
fn attacks_are_planted_in_spread_tcp_flows() {
    let base = GenConfig { flows: 400, seed: 9, ..GenConfig::default() };
    let (plain_frames, plain) = collect(&base);
    let cfg = GenConfig { attacks: 10, ..base.clone() };
    let (frames, s) = collect(&cfg);
    assert_eq!(s.attacks, 10);
    let carriers: Vec<_> = s.flows.iter().filter(|f| f.attack.is_some()).collect();
    assert_eq!(carriers.len(), 10);
    for (k, f) in carriers.iter().enumerate() {
        let a = f.attack.unwrap();
        assert_eq!(f.proto, "tcp");
        assert_eq!(a.kind, Attack::ALL[k % 4]);
        assert_eq!(a.sid, a.kind.sid());
    }
    // Spread: every tenth of the flow ids holds one carrier.
    for (k, f) in carriers.iter().enumerate() {
        assert!(f.id as usize >= k * 40, "carrier {k} is flow {}", f.id);
    }
    assert_eq!(s.flows.len(), plain.flows.len());
    // The attack strings are on the wire; deterministic.
    let all: Vec<u8> = frames.iter().flat_map(|(_, f)| f.iter().copied()).collect();
    for needle in [&b"GET /admin/obj/"[..], b"?file=../../etc/passwd", b"UNION+SELECT", b"\r\nroot@gen: 1\r\n"] {
        assert!(contains(&all, needle), "{}", String::from_utf8_lossy(needle));
    }
    assert_eq!(digest(&frames), digest(&collect(&cfg).0));
    assert_ne!(digest(&frames), digest(&plain_frames));
}

#[test]
fn more_attacks_than_flows_is_refused_and_clamped() {
    let cfg = GenConfig { flows: 3, attacks: 5, udp_fraction: 0.0, ..GenConfig::default() };
    let e = cfg.validate().unwrap_err();
    assert!(e.contains("attacks must be at most flows (3), not 5"), "{e}");
    assert_eq!(collect(&cfg).1.attacks, 3);
}

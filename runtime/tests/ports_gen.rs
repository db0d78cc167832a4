//! Tests of the traffic generator: counts recounted from the frames, checksums, TCP
//! sequence arithmetic, HTTP content, determinism, and configuration checks.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use etherparse::{NetHeaders, PacketHeaders, PayloadSlice, TransportHeader, VlanHeader};
use runtime::ports::gen::{generate, GenApp, GenConfig, GenSummary};
use runtime::ports::{LinkType, PcapReader, PcapWriter};

/// One generated frame, parsed.
struct Parsed {
    ts: u64,
    len: usize,
    src: SocketAddr,
    dst: SocketAddr,
    vlan: Option<u16>,
    tcp: Option<etherparse::TcpHeader>,
    payload: Vec<u8>,
}

fn collect(cfg: &GenConfig) -> (Vec<(u64, Vec<u8>)>, GenSummary) {
    let mut frames = Vec::new();
    let summary = generate(cfg, |ts, f| {
        frames.push((ts, f.to_vec()));
        Ok::<(), Infallible>(())
    })
    .unwrap();
    (frames, summary)
}

/// Parses a frame and checks its IP, TCP and UDP checksums.
fn parse(ts: u64, f: &[u8]) -> Parsed {
    let h = PacketHeaders::from_ethernet_slice(f).expect("frame parses");
    let payload = match h.payload {
        PayloadSlice::Tcp(p) | PayloadSlice::Udp(p) => p.to_vec(),
        _ => panic!("no transport payload"),
    };
    let vlan = match h.vlan {
        None => None,
        Some(VlanHeader::Single(v)) => Some(v.vlan_id.value()),
        Some(VlanHeader::Double(_)) => panic!("double vlan"),
    };
    let (sip, dip, ipv4) = match h.net.as_ref().expect("ip") {
        NetHeaders::Ipv4(ip, _) => {
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            (IpAddr::from(ip.source), IpAddr::from(ip.destination), Some(ip.clone()))
        }
        NetHeaders::Ipv6(ip, _) => (IpAddr::from(ip.source), IpAddr::from(ip.destination), None),
    };
    let v6 = match h.net.as_ref().unwrap() {
        NetHeaders::Ipv6(ip, _) => Some(ip.clone()),
        _ => None,
    };
    let (sport, dport, tcp) = match h.transport.expect("transport") {
        TransportHeader::Tcp(t) => {
            let sum = match (&ipv4, &v6) {
                (Some(ip), _) => t.calc_checksum_ipv4(ip, &payload).unwrap(),
                (_, Some(ip)) => t.calc_checksum_ipv6(ip, &payload).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(t.checksum, sum, "tcp checksum");
            (t.source_port, t.destination_port, Some(t))
        }
        TransportHeader::Udp(u) => {
            let sum = match (&ipv4, &v6) {
                (Some(ip), _) => u.calc_checksum_ipv4(ip, &payload).unwrap(),
                (_, Some(ip)) => u.calc_checksum_ipv6(ip, &payload).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(u.checksum, sum, "udp checksum");
            (u.source_port, u.destination_port, None)
        }
        _ => panic!("unexpected transport"),
    };
    Parsed { ts, len: f.len(), src: SocketAddr::new(sip, sport), dst: SocketAddr::new(dip, dport), vlan, tcp, payload }
}

/// Recounts every per-flow figure from the frames and compares with the summary; also
/// checks addresses, timestamps, and TCP sequence/acknowledgment arithmetic.
fn check_against_frames(cfg: &GenConfig, frames: &[(u64, Vec<u8>)], s: &GenSummary) {
    assert_eq!(s.packets, frames.len() as u64);
    assert_eq!(s.bytes, frames.iter().map(|f| f.1.len() as u64).sum::<u64>());
    assert_eq!(s.flows.len(), cfg.flows);
    let mut by_tuple = HashMap::new();
    for (i, f) in s.flows.iter().enumerate() {
        assert_eq!(f.id, i as u64);
        assert_eq!(f.client.port(), 1024 + i as u16, "client ports in order, never reused");
        assert!(by_tuple.insert((f.client, f.server), i).is_none(), "unique 5-tuple");
        match f.client.ip() {
            IpAddr::V4(a) => assert!(matches!(a.octets(), [192, 0, 2, _] | [198, 51, 100, _])),
            IpAddr::V6(a) => assert_eq!(a.segments()[..2], [0x2001, 0xdb8]),
        }
        match f.server.ip() {
            IpAddr::V4(a) => assert_eq!(a.octets()[..3], [203, 0, 113]),
            IpAddr::V6(a) => assert_eq!(a.segments()[..2], [0x2001, 0xdb8]),
        }
        assert_eq!(f.server.port(), f.app.port());
        assert_eq!(f.proto == "udp", f.app == GenApp::Dns);
    }
    #[derive(Default, Clone)]
    struct Count {
        p: [u64; 2],
        b: [u64; 2],
        pl: [u64; 2],
        first: Option<u64>,
        last: u64,
        next_seq: [Option<u32>; 2],
        fins: u32,
        rsts: u32,
        syns: u32,
        client_stream: Vec<u8>,
        server_stream: Vec<u8>,
    }
    let mut counts = vec![Count::default(); s.flows.len()];
    let mut prev_ts = None;
    let mut wraps = 0;
    for (ts, f) in frames {
        if let Some(p) = prev_ts {
            assert!(*ts > p, "timestamps strictly increase");
            assert!(*ts - p >= 1_000 && *ts - p <= 200_000);
        } else {
            assert_eq!(*ts, cfg.start_ts_ns);
        }
        prev_ts = Some(*ts);
        let p = parse(*ts, f);
        let (idx, d) = match by_tuple.get(&(p.src, p.dst)) {
            Some(&i) => (i, 0),
            None => (by_tuple[&(p.dst, p.src)], 1),
        };
        let flow = &s.flows[idx];
        assert_eq!(p.vlan, flow.vlan);
        let c = &mut counts[idx];
        c.p[d] += 1;
        c.b[d] += p.len as u64;
        c.pl[d] += p.payload.len() as u64;
        c.first.get_or_insert(p.ts);
        c.last = p.ts;
        if let Some(t) = &p.tcp {
            // seq continues where this side left off; ack is the peer's next sequence number.
            if let Some(expect) = c.next_seq[d] {
                assert_eq!(t.sequence_number, expect, "flow {idx} dir {d}");
            }
            if t.ack {
                assert_eq!(Some(t.acknowledgment_number), c.next_seq[1 - d], "ack flow {idx}");
            } else {
                assert!(t.syn && d == 0, "only the first SYN lacks ACK");
            }
            let used = p.payload.len() as u32 + t.syn as u32 + t.fin as u32;
            let next = t.sequence_number.wrapping_add(used);
            if next < t.sequence_number {
                wraps += 1;
            }
            c.next_seq[d] = Some(next);
            c.fins += t.fin as u32;
            c.rsts += t.rst as u32;
            c.syns += t.syn as u32;
            if t.syn {
                assert!(p.payload.is_empty());
                assert!(!t.options.is_empty(), "MSS option on SYN");
            }
            if d == 0 {
                c.client_stream.extend_from_slice(&p.payload);
            } else {
                c.server_stream.extend_from_slice(&p.payload);
            }
        }
    }
    for (f, c) in s.flows.iter().zip(&counts) {
        assert_eq!([f.pkts_toserver, f.pkts_toclient], c.p, "flow {}", f.id);
        assert_eq!([f.bytes_toserver, f.bytes_toclient], c.b, "flow {}", f.id);
        assert_eq!([f.payload_toserver, f.payload_toclient], c.pl, "flow {}", f.id);
        assert_eq!(Some(f.first_ts_ns), c.first);
        assert_eq!(f.last_ts_ns, c.last);
        if f.proto == "tcp" {
            assert_eq!(c.syns, 2);
            let (lo, hi) = cfg.requests_per_flow;
            assert!(f.requests >= lo && f.requests <= hi);
            match f.teardown.as_str() {
                "fin" => assert_eq!((c.fins, c.rsts), (2, 0)),
                "rst" => assert_eq!((c.fins, c.rsts), (0, 1)),
                t => panic!("teardown {t}"),
            }
            match f.app {
                GenApp::Http => {
                    // `GET /admin/obj/` when the flow carries that attack.
                    let reqs = count(&c.client_stream, b"GET /");
                    assert_eq!(reqs, f.requests as usize);
                    assert_eq!(count(&c.client_stream, b"User-Agent: mbox-gen\r\n"), reqs);
                    assert_eq!(count(&c.server_stream, b"HTTP/1.1 200 OK\r\n"), reqs);
                    if reqs > 0 {
                        assert!(c.client_stream.starts_with(b"GET /"));
                        assert!(c.server_stream.starts_with(b"HTTP/1.1 200 OK\r\n"));
                    }
                }
                GenApp::Tls => check_tls(f.id, f.requests, &c.client_stream, &c.server_stream),
                GenApp::Ssh => check_ssh(f.requests, &c.client_stream, &c.server_stream),
                GenApp::Dns => panic!("a TCP flow marked dns"),
            }
        } else {
            assert_eq!(f.teardown, "none");
            assert!((1..=3).contains(&f.requests));
            assert_eq!(f.pkts_toserver, f.requests as u64);
            assert_eq!(f.pkts_toclient, f.requests as u64);
        }
    }
    if cfg.flows >= 50 && cfg.udp_fraction < 0.5 {
        assert!(wraps > 0, "some sequence numbers wrap");
    }
}

/// Walks a TLS byte stream as records: each header's length fits the stream exactly.
/// Returns (content type, payload) per record.
fn tls_records(stream: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < stream.len() {
        let h = &stream[i..i + 5];
        assert!(matches!(h[0], 20..=23) && h[1] == 3, "record header {h:?} at {i}");
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        assert!(len <= 16_384, "record of {len} bytes");
        out.push((h[0], &stream[i + 5..i + 5 + len]));
        i += 5 + len;
    }
    assert_eq!(i, stream.len(), "records end with the stream");
    out
}

/// TLS: ClientHello (with the SNI `f<id>.example.net`), CCS, Finished, then application
/// data; the server: ServerHello, CCS, application data.
fn check_tls(id: u64, requests: u32, client: &[u8], server: &[u8]) {
    let c = tls_records(client);
    let s = tls_records(server);
    assert_eq!((c[0].0, c[0].1[0]), (22, 1), "ClientHello first");
    let sni = format!("f{id}.example.net");
    assert_eq!(count(c[0].1, sni.as_bytes()), 1, "SNI in the ClientHello");
    assert_eq!((c[1].0, c[2].0), (20, 23), "CCS, Finished");
    assert_eq!((s[0].0, s[0].1[0]), (22, 2), "ServerHello first");
    assert_eq!((s[1].0, s[2].0), (20, 23));
    assert!(c[3..].iter().chain(&s[3..]).all(|r| r.0 == 23), "then application data only");
    assert!(c.len() - 3 >= requests as usize, "a record per request at least");
}

/// SSH: both banners, then binary packets whose 4-byte lengths fit the stream exactly.
fn check_ssh(requests: u32, client: &[u8], server: &[u8]) {
    let mut packets = 0;
    for (stream, banner) in
        [(client, &b"SSH-2.0-OpenSSH_9.6 mbox-gen\r\n"[..]), (server, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")]
    {
        assert!(stream.starts_with(banner));
        let mut i = banner.len();
        while i < stream.len() {
            let len = u32::from_be_bytes(stream[i..i + 4].try_into().unwrap()) as usize;
            assert!((1..=32_768).contains(&len));
            i += 4 + len;
            packets += usize::from(stream == client);
        }
        assert_eq!(i, stream.len());
    }
    assert!(packets >= requests as usize);
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[test]
fn default_config_counts_match_frames() {
    let cfg = GenConfig::default();
    cfg.validate().unwrap();
    let (frames, s) = collect(&cfg);
    check_against_frames(&cfg, &frames, &s);
    assert!(s.flows.iter().any(|f| f.proto == "udp"));
    assert!(s.flows.iter().any(|f| f.teardown == "rst"));
    assert!(s.flows.iter().any(|f| f.client.is_ipv6()));
}

#[test]
fn vlan_ipv6_small_mss_variant() {
    let cfg = GenConfig {
        flows: 60,
        seed: 7,
        udp_fraction: 0.3,
        ipv6_fraction: 0.5,
        vlan_fraction: 1.0,
        rst_fraction: 0.5,
        mss: 64,
        concurrency: 5,
        request_size: (10, 300),
        response_size: (0, 3000),
        requests_per_flow: (0, 4),
        ..GenConfig::default()
    };
    cfg.validate().unwrap();
    let (frames, s) = collect(&cfg);
    check_against_frames(&cfg, &frames, &s);
    assert!(s.flows.iter().all(|f| f.vlan.is_some_and(|v| (1..=4094).contains(&v))));
}

#[test]
fn request_size_is_respected() {
    let cfg = GenConfig {
        flows: 20,
        udp_fraction: 0.0,
        requests_per_flow: (1, 1),
        request_size: (500, 500),
        response_size: (1234, 1234),
        ..GenConfig::default()
    };
    let (frames, s) = collect(&cfg);
    check_against_frames(&cfg, &frames, &s);
    let resp_head =
        "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: application/octet-stream\r\n\r\n".len() as u64;
    for f in &s.flows {
        assert_eq!(f.payload_toserver, 500);
        assert_eq!(f.payload_toclient, resp_head + 1234);
    }
}

#[test]
fn empty_responses_and_single_flow() {
    let cfg = GenConfig {
        flows: 1,
        udp_fraction: 0.0,
        response_size: (0, 0),
        requests_per_flow: (2, 2),
        ..GenConfig::default()
    };
    let (frames, s) = collect(&cfg);
    check_against_frames(&cfg, &frames, &s);
    let f = &s.flows[0];
    assert_eq!(f.requests, 2);
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: application/octet-stream\r\n\r\n".len() as u64;
    assert_eq!(f.payload_toclient, 2 * head);
}

#[test]
fn zero_flows_give_an_empty_valid_capture() {
    let cfg = GenConfig { flows: 0, ..GenConfig::default() };
    let mut w = PcapWriter::to_vec(LinkType::Ethernet);
    let s = generate(&cfg, |ts, f| w.write(ts, f, f.len() as u32)).unwrap();
    assert_eq!((s.packets, s.bytes, s.flows.len()), (0, 0, 0));
    let bytes = w.into_inner().unwrap();
    assert_eq!(bytes.len(), 24);
    let mut r = PcapReader::from_bytes("gen", bytes).unwrap();
    assert!(r.next_packet().unwrap().is_none());
}

#[test]
fn through_pcap_and_back() {
    let cfg = GenConfig { flows: 30, seed: 3, ..GenConfig::default() };
    let (frames, s) = collect(&cfg);
    let mut w = PcapWriter::to_vec(LinkType::Ethernet);
    let s2 = generate(&cfg, |ts, f| w.write(ts, f, f.len() as u32)).unwrap();
    assert_eq!(s, s2);
    let mut r = PcapReader::from_bytes("gen", w.into_inner().unwrap()).unwrap();
    let mut back = Vec::new();
    for _ in 0..frames.len() + 1 {
        match r.next_packet().unwrap() {
            Some(p) => back.push((p.ts_ns, p.data.to_vec())),
            None => break,
        }
    }
    assert!(back == frames);
}

#[test]
fn same_seed_same_bytes_different_seed_differs() {
    let cfg = GenConfig { flows: 40, ..GenConfig::default() };
    let (a, sa) = collect(&cfg);
    let (b, sb) = collect(&cfg);
    assert!(a == b);
    assert_eq!(sa, sb);
    let (c, _) = collect(&GenConfig { seed: 2, ..cfg });
    assert!(a != c);
}

#[test]
fn sink_errors_stop_generation() {
    let cfg = GenConfig { flows: 10, ..GenConfig::default() };
    let mut n = 0;
    let r = generate(&cfg, |_, _| {
        n += 1;
        if n == 5 {
            Err("full")
        } else {
            Ok(())
        }
    });
    assert_eq!(r.unwrap_err(), "full");
    assert_eq!(n, 5);
}

#[test]
fn validate_lists_every_problem() {
    assert!(GenConfig::default().validate().is_ok());
    let bad = GenConfig {
        udp_fraction: 1.5,
        rst_fraction: f64::NAN,
        ipv6_fraction: -0.1,
        requests_per_flow: (3, 1),
        request_size: (10, 5),
        response_size: (0, u32::MAX),
        mss: 10,
        concurrency: 0,
        flows: 1_000_000,
        ..GenConfig::default()
    };
    let e = bad.validate().unwrap_err();
    for word in [
        "udp_fraction",
        "rst_fraction",
        "ipv6_fraction",
        "requests_per_flow",
        "request_size",
        "response_size",
        "mss",
        "concurrency",
        "flows",
    ] {
        assert!(e.contains(word), "{word} missing from {e}");
    }
    assert!(!e.contains("vlan_fraction"));
    // generate() clamps rather than panics.
    let clamped = GenConfig { flows: 3, response_size: (0, 100), ..bad };
    let (frames, s) = collect(&clamped);
    assert_eq!(s.flows.len(), 3);
    assert_eq!(s.packets, frames.len() as u64);
}

#[test]
fn config_from_toml() {
    let cfg: GenConfig = toml::from_str("flows = 5\nseed = 9\nrequest_size = [200, 300]\n").unwrap();
    assert_eq!((cfg.flows, cfg.seed, cfg.request_size), (5, 9, (200, 300)));
    assert_eq!(cfg.mss, 1460);
    assert!(toml::from_str::<GenConfig>("flowz = 5\n").is_err());
}

#[test]
fn tls_and_ssh_mix_has_its_shares_and_well_formed_streams() {
    let cfg = GenConfig {
        flows: 2000,
        seed: 21,
        udp_fraction: 0.2,
        tls_fraction: 0.3,
        ssh_fraction: 0.1,
        mss: 536,
        response_size: (0, 40_000),
        attacks: 40,
        ..GenConfig::default()
    };
    cfg.validate().unwrap();
    let (frames, s) = collect(&cfg);
    check_against_frames(&cfg, &frames, &s);
    let share = |app: GenApp| s.flows.iter().filter(|f| f.app == app).count() as f64 / s.flows.len() as f64;
    for (app, want) in [(GenApp::Dns, 0.2), (GenApp::Tls, 0.3), (GenApp::Ssh, 0.1), (GenApp::Http, 0.4)] {
        let got = share(app);
        assert!((got - want).abs() < 0.03, "{app:?}: {got} vs {want}");
    }
    // Attacks go to HTTP flows only, all of them planted.
    assert_eq!(s.attacks, 40);
    assert!(s.flows.iter().filter(|f| f.attack.is_some()).all(|f| f.app == GenApp::Http));
    // Same configuration, same bytes.
    assert!(collect(&cfg).0 == frames);
}

#[test]
fn only_tls_or_only_ssh() {
    for (tls, ssh) in [(1.0, 0.0), (0.0, 1.0)] {
        let cfg = GenConfig {
            flows: 50,
            udp_fraction: 0.0,
            tls_fraction: tls,
            ssh_fraction: ssh,
            requests_per_flow: (0, 3),
            response_size: (0, 70_000),
            attacks: 5,
            ..GenConfig::default()
        };
        let (frames, s) = collect(&cfg);
        check_against_frames(&cfg, &frames, &s);
        let want = if tls > 0.0 { GenApp::Tls } else { GenApp::Ssh };
        assert!(s.flows.iter().all(|f| f.app == want));
        assert_eq!(s.attacks, 0, "no HTTP flow to carry them");
    }
}

#[test]
fn mix_shares_over_one_are_refused_and_scaled() {
    let cfg = GenConfig { udp_fraction: 0.5, tls_fraction: 0.4, ssh_fraction: 0.4, ..GenConfig::default() };
    let e = cfg.validate().unwrap_err();
    assert!(e.contains("udp_fraction + tls_fraction + ssh_fraction must be at most 1"), "{e}");
    let (_, s) = collect(&GenConfig { flows: 400, ..cfg });
    assert!(s.flows.iter().all(|f| f.app != GenApp::Http), "TLS and SSH scaled to fill what UDP leaves");
    assert!(s.flows.iter().any(|f| f.app == GenApp::Tls) && s.flows.iter().any(|f| f.app == GenApp::Ssh));
    let bad = GenConfig { tls_fraction: 1.5, ssh_fraction: f64::NAN, ..GenConfig::default() };
    let e = bad.validate().unwrap_err();
    assert!(e.contains("tls_fraction must be in [0, 1]") && e.contains("ssh_fraction"), "{e}");
}

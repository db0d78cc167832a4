//! The DPI NF end to end: generated HTTP + DNS traffic, a hand-built capture with TLS (SNI,
//! ClientHello split over two segments), SSH, SMTP, DNS over TCP and an unknown protocol,
//! and the real curl ↔ http.server captures — in stream mode (behind the TCP monitor) and in
//! packets mode; and the consistency checker on a DPI app.

use std::collections::HashMap;
use std::path::Path;

use microboxes::check::{check, CheckOptions};
use microboxes::{App, RunOptions};
use nfs::dpi::DpiRecord;
use runtime::ports::gen::GenConfig;
use tests::*;

fn dpi_app(out: &Path, on: &str) -> App {
    let tcp = if on == "stream" { "[stack.tcp]\n" } else { "" };
    let text =
        format!("{tcp}[[nf]]\nname = \"dpi\"\nkind = \"dpi\"\non = {on:?}\noutput = {:?}\n", out.display().to_string());
    App::parse(&text, "dpi.toml").unwrap()
}

/// Runs the app; returns the records by client port, and the DPI NF's counters.
fn run_dpi(app: &App, input: &Path, out: &Path) -> (HashMap<u16, DpiRecord>, HashMap<String, u64>) {
    let r = microboxes::run(app, RunOptions::new(input)).unwrap();
    assert!(r.ok(), "{}", r.to_text());
    assert_eq!(r.packets_out, r.packets_in);
    let counters: HashMap<String, u64> =
        r.actors.iter().find(|a| a.name == "dpi").unwrap().counters.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let text = std::fs::read_to_string(out).unwrap();
    let mut recs = HashMap::new();
    for line in text.lines() {
        let rec: DpiRecord = serde_json::from_str(line).unwrap();
        let port = rec.src_port.unwrap_or(0);
        assert!(recs.insert(port, rec).is_none(), "one record per flow: {line}");
    }
    (recs, counters)
}

#[test]
fn generated_http_and_dns_are_detected_with_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    let truth = gen_pcap(&input, &GenConfig { flows: 300, seed: 11, udp_fraction: 0.25, ..GenConfig::default() });
    for on in ["stream", "packets"] {
        let out = dir.path().join(format!("dpi-{on}.jsonl"));
        let (recs, counters) = run_dpi(&dpi_app(&out, on), &input, &out);
        assert_eq!(recs.len(), truth.flows.len(), "{on}: one record per flow");
        let (mut tcp, mut udp) = (0, 0);
        for f in &truth.flows {
            let rec = &recs[&f.client.port()];
            assert_eq!(rec.dest_port, Some(f.server.port()), "{on}: {rec:?}");
            assert_eq!(rec.src_ip.as_deref(), Some(f.client.ip().to_string().as_str()), "{on}: {rec:?}");
            if f.proto == "tcp" {
                tcp += 1;
                let host = match f.server.ip() {
                    std::net::IpAddr::V4(a) => a.to_string(),
                    std::net::IpAddr::V6(a) => format!("[{a}]"),
                };
                assert_eq!(
                    (rec.proto.as_str(), rec.app_proto.as_str(), rec.host.as_deref()),
                    ("TCP", "http", Some(host.as_str())),
                    "{on}: {f:?}"
                );
            } else {
                udp += 1;
                // The generator's UDP flows are real DNS queries for q0.f<id>.example.com first.
                let host = format!("q0.f{}.example.com", f.id);
                assert_eq!(
                    (rec.proto.as_str(), rec.app_proto.as_str(), rec.host.as_deref()),
                    ("UDP", "dns", Some(host.as_str())),
                    "{on}: {f:?}"
                );
            }
        }
        assert!(tcp > 100 && udp > 30, "{tcp} {udp}");
        assert_eq!(counters["detected_http"], tcp);
        assert_eq!(counters["detected_dns"], udp);
        assert_eq!(counters["unknown"], 0);
        assert_eq!(counters["flows_open"], 0);
        assert!(counters["bytes_inspected"] > 0);
        // Responses and later requests come after the decision: DPI unsubscribed from the
        // flow, so they are not delivered at all.
        assert_eq!(counters["events_after_detection"], 0, "{counters:?}");
        assert!(counters["not_delivered_by_flow_subscription"] > 0, "{counters:?}");
    }
}

// ---- a hand-built capture ----

const C: [u8; 4] = [192, 0, 2, 10];
const S: [u8; 4] = [198, 51, 100, 20];

/// A TCP connection with proper sequence numbers.
struct Conn {
    cport: u16,
    sport: u16,
    cseq: u32,
    sseq: u32,
}

/// This file's connection-aware shorthands over the shared capture builder.
trait Cap {
    fn conn(&mut self, c: &mut Conn, from_client: bool, syn: bool, payload: &[u8]);
    fn open(&mut self, cport: u16, sport: u16) -> Conn;
    fn dgram(&mut self, from_client: bool, cport: u16, sport: u16, payload: &[u8]);
}

impl Cap for Capture {
    fn conn(&mut self, c: &mut Conn, from_client: bool, syn: bool, payload: &[u8]) {
        use stacks::parse::tcp_flags::{ACK, PSH, SYN};
        let (src, dst) = if from_client { ((C, c.cport), (S, c.sport)) } else { ((S, c.sport), (C, c.cport)) };
        let (seq, ack) = if from_client { (c.cseq, c.sseq) } else { (c.sseq, c.cseq) };
        let mut flags = 0;
        if syn {
            flags |= SYN;
        }
        if !(syn && from_client) {
            flags |= ACK;
        }
        if !payload.is_empty() {
            flags |= PSH;
        }
        self.tcp(src, dst, seq, ack, flags, payload);
        let adv = payload.len() as u32 + u32::from(syn);
        if from_client {
            c.cseq = c.cseq.wrapping_add(adv);
        } else {
            c.sseq = c.sseq.wrapping_add(adv);
        }
    }

    fn open(&mut self, cport: u16, sport: u16) -> Conn {
        let mut c = Conn { cport, sport, cseq: 1000 + u32::from(cport), sseq: 90_000 };
        self.conn(&mut c, true, true, b"");
        self.conn(&mut c, false, true, b"");
        self.conn(&mut c, true, false, b"");
        c
    }

    fn dgram(&mut self, from_client: bool, cport: u16, sport: u16, payload: &[u8]) {
        let (src, dst) = if from_client { ((C, cport), (S, sport)) } else { ((S, sport), (C, cport)) };
        self.udp(src, dst, payload);
    }
}

fn be16(v: &mut Vec<u8>, x: usize) {
    v.extend_from_slice(&(x as u16).to_be_bytes());
}

/// A TLS 1.3-style ClientHello record with SNI `name` (server_name after other extensions).
fn client_hello(name: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]); // supported_groups
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]); // supported_versions 1.3
    ext.extend_from_slice(&[0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]); // key_share
    ext.extend(0..32u8);
    be16(&mut ext, 0); // server_name
    be16(&mut ext, name.len() + 5);
    be16(&mut ext, name.len() + 3);
    ext.push(0);
    be16(&mut ext, name.len());
    ext.extend_from_slice(name.as_bytes());
    let mut body = vec![3, 3];
    body.extend(100..132u8);
    body.push(0); // no session id
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02, 1, 0]);
    be16(&mut body, ext.len());
    body.extend_from_slice(&ext);
    let mut rec = vec![22, 3, 1];
    be16(&mut rec, body.len() + 4);
    rec.push(1);
    rec.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    rec.extend_from_slice(&body);
    rec
}

fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn custom(path: &Path) {
    let mut cap = Capture::default();
    let mut tls = cap.open(50001, 443);
    let mut ssh = cap.open(50002, 22);
    let mut smtp = cap.open(50003, 25);
    let mut other = cap.open(50004, 7000);
    let mut dns = cap.open(50005, 53);
    // TLS: the ClientHello in two segments, interleaved with the others.
    let hello = client_hello("secure.example.net");
    cap.conn(&mut tls, true, false, &hello[..60]);
    cap.conn(&mut ssh, false, false, b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n");
    cap.conn(&mut smtp, false, false, b"220 mail.example.com ESMTP Postfix (Ubuntu)\r\n");
    cap.conn(&mut tls, true, false, &hello[60..]);
    cap.conn(&mut ssh, true, false, b"SSH-2.0-OpenSSH_9.6\r\n");
    cap.conn(&mut smtp, true, false, b"EHLO client.example.org\r\n");
    cap.conn(&mut other, true, false, b"HELLO FRIEND how are you\r\n");
    cap.conn(&mut other, false, false, b"+FINE thanks\r\n");
    let q = dns_query("www.example.com");
    let mut t = Vec::new();
    be16(&mut t, q.len());
    t.extend_from_slice(&q);
    cap.conn(&mut dns, true, false, &t);
    // UDP DNS to a port that is not 53: the bytes decide.
    cap.dgram(true, 50006, 5300, &dns_query("udp.example.org"));
    // More data after detection.
    cap.conn(&mut tls, false, false, &[22, 3, 3, 0, 2, 0, 0]);
    cap.conn(&mut ssh, true, false, &[0; 64]);
    cap.save(path);
}

#[test]
fn tls_ssh_smtp_dns_tcp_and_unknown_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("custom.pcap");
    custom(&input);
    for on in ["stream", "packets"] {
        let out = dir.path().join(format!("dpi-{on}.jsonl"));
        let (recs, counters) = run_dpi(&dpi_app(&out, on), &input, &out);
        let got = |p: u16| (recs[&p].app_proto.as_str(), recs[&p].host.as_deref());
        assert_eq!(got(50001), ("tls", Some("secure.example.net")), "{on}");
        assert_eq!(got(50002), ("ssh", None), "{on}");
        assert_eq!(got(50003), ("smtp", Some("mail.example.com")), "{on}");
        assert_eq!(got(50004), ("unknown", None), "{on}");
        assert_eq!(got(50005), ("dns", Some("www.example.com")), "{on}");
        assert_eq!(got(50006), ("dns", Some("udp.example.org")), "{on}");
        assert_eq!(recs[&50001].dest_ip.as_deref(), Some("198.51.100.20"));
        assert_eq!(recs[&50001].dest_port, Some(443));
        assert_eq!(recs.len(), 6, "{on}");
        for (k, v) in [
            ("detected_tls", 1),
            ("detected_ssh", 1),
            ("detected_smtp", 1),
            ("detected_dns", 2),
            ("unknown", 1),
            ("detected_http", 0),
        ] {
            assert_eq!(counters[k], v, "{on}: {k} {counters:?}");
        }
        assert_eq!(counters["events_after_detection"], 0, "{on}: {counters:?}");
        assert!(counters["not_delivered_by_flow_subscription"] >= 2, "{on}: {counters:?}");
    }
}

#[test]
fn real_captures_are_http_with_the_host_sent() {
    let dir = tempfile::tempdir().unwrap();
    for cap in ["clean_oneshot", "clean_keepalive", "loss_reorder_dup", "heavy_loss"] {
        let input = repo_file(&format!("tests/fixtures/captures/{cap}.pcap"));
        let out = dir.path().join(format!("{cap}.jsonl"));
        let (recs, counters) = run_dpi(&dpi_app(&out, "stream"), &input, &out);
        assert!(!recs.is_empty(), "{cap}");
        for r in recs.values() {
            assert_eq!((r.app_proto.as_str(), r.host.as_deref()), ("http", Some("10.77.0.2:8000")), "{cap}: {r:?}");
            assert_eq!(r.dest_port, Some(8000));
        }
        assert_eq!(counters["detected_http"], recs.len() as u64, "{cap}");
    }
}

#[test]
fn a_dpi_app_is_consistent_across_modes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.pcap");
    gen_pcap(&input, &GenConfig { flows: 120, seed: 5, udp_fraction: 0.2, ..GenConfig::default() });
    let custom_cap = dir.path().join("custom.pcap");
    custom(&custom_cap);
    for on in ["stream", "packets"] {
        let app = dpi_app(&dir.path().join("dpi.jsonl"), on);
        for cap in [&input, &custom_cap] {
            let r = check(&app, cap, &CheckOptions::default()).unwrap();
            assert!(r.consistent(), "{on}: {}", r.to_text());
        }
    }
    let app = dpi_app(&dir.path().join("dpi.jsonl"), "stream");
    let r = check(&app, &repo_file("tests/fixtures/captures/loss_reorder_dup.pcap"), &CheckOptions::default()).unwrap();
    assert!(r.consistent(), "{}", r.to_text());
}

#[test]
fn dpi_options_are_strict() {
    let bad = App::parse("[[nf]]\nname = \"d\"\nkind = \"dpi\"\non = \"frames\"\nmax_bytes = 0\n", "bad.toml");
    assert!(bad.is_err());
    let bad = App::parse("[[nf]]\nname = \"d\"\nkind = \"dpi\"\non = \"packets\"\nmax_bytes = 0\n", "bad.toml")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("max_bytes"), "{bad}");
    let bad = App::parse("[[nf]]\nname = \"d\"\nkind = \"dpi\"\non = \"packets\"\nbogus = 1\n", "bad.toml")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("bogus"), "{bad}");
    // Stream mode needs the TCP monitor: loading says DATA_RDY comes only from it.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("custom.pcap");
    custom(&input);
    let e = App::parse("[[nf]]\nname = \"d\"\nkind = \"dpi\"\n", "s.toml").unwrap_err().to_string();
    assert!(e.contains("DATA_RDY") && e.contains("add `[stack.tcp]`"), "{e}");
    // An NF after it can subscribe to its event (the type is registered while loading).
    let text = format!(
        "[[nf]]\nname = \"d\"\nkind = \"dpi\"\non = \"packets\"\n[[nf]]\nname = \"after\"\nkind = \"flow_stats\"\nsubscribe = [\"EVENT/DPI_DETECT\"]\noutput = {:?}\n",
        dir.path().join("f.jsonl").display().to_string()
    );
    let app = App::parse(&text, "ok.toml").unwrap_or_else(|e| panic!("{e}"));
    let r = microboxes::run(&app, RunOptions::new(&input)).unwrap();
    assert!(r.ok(), "{}", r.to_text());
}

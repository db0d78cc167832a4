//! The generator's traffic mix (`tls_fraction`, `ssh_fraction`) as DPI sees it: every flow
//! is classified as the protocol it was generated as — by the pure classifier on each
//! flow's first bytes (also from the client's bytes alone, as Figure 7c's server-side setups
//! see them), and by the DPI NF behind the TCP monitor with setup 3's subscriptions
//! (`side = "server"`, `direction = "to_server"`), in packets and in stream mode.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use microboxes::{App, RunOptions};
use nfs::dpi::{classify, DpiRecord, Protocol, Verdict};
use runtime::ports::gen::{GenApp, GenConfig, GenSummary};
use tests::*;

fn mix() -> GenConfig {
    GenConfig {
        flows: 300,
        seed: 19,
        udp_fraction: 0.2,
        tls_fraction: 0.3,
        ssh_fraction: 0.15,
        attacks: 12,
        ..GenConfig::default()
    }
}

fn protocol(app: GenApp) -> Protocol {
    match app {
        GenApp::Http => Protocol::Http,
        GenApp::Tls => Protocol::Tls,
        GenApp::Ssh => Protocol::Ssh,
        GenApp::Dns => Protocol::Dns,
    }
}

/// The host DPI reports for a generated flow.
fn host(f: &runtime::ports::gen::GenFlow) -> Option<String> {
    match f.app {
        GenApp::Http => Some(match f.server.ip() {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        }),
        GenApp::Tls => Some(format!("f{}.example.net", f.id)),
        GenApp::Ssh => None,
        GenApp::Dns => Some(format!("q0.f{}.example.com", f.id)),
    }
}

/// Each flow's first 4 KiB per direction (client → server, server → client), by flow id;
/// for UDP the first datagram of each direction.
fn first_bytes(frames: &[(u64, Vec<u8>)], s: &GenSummary) -> HashMap<u64, [Vec<u8>; 2]> {
    let by_tuple: HashMap<(SocketAddr, SocketAddr), u64> =
        s.flows.iter().map(|f| ((f.client, f.server), f.id)).collect();
    let mut out: HashMap<u64, [Vec<u8>; 2]> = HashMap::new();
    for (_, f) in frames {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let (src, dst) = match p.net.unwrap() {
            NetSlice::Ipv4(ip) => {
                (IpAddr::from(ip.header().source_addr()), IpAddr::from(ip.header().destination_addr()))
            }
            NetSlice::Ipv6(ip) => {
                (IpAddr::from(ip.header().source_addr()), IpAddr::from(ip.header().destination_addr()))
            }
        };
        let (sport, dport, payload, udp) = match p.transport.unwrap() {
            TransportSlice::Tcp(t) => (t.source_port(), t.destination_port(), t.payload().to_vec(), false),
            TransportSlice::Udp(u) => (u.source_port(), u.destination_port(), u.payload().to_vec(), true),
            _ => unreachable!(),
        };
        let (a, b) = (SocketAddr::new(src, sport), SocketAddr::new(dst, dport));
        let (id, d) = match by_tuple.get(&(a, b)) {
            Some(&id) => (id, 0),
            None => (by_tuple[&(b, a)], 1),
        };
        let buf = &mut out.entry(id).or_default()[d];
        if udp && !buf.is_empty() {
            continue;
        }
        let room = 4096usize.saturating_sub(buf.len());
        buf.extend_from_slice(&payload[..payload.len().min(room)]);
    }
    out
}

#[test]
fn the_classifier_names_each_generated_flows_protocol() {
    let cfg = mix();
    let (frames, s) = {
        let mut frames = Vec::new();
        let s = runtime::ports::gen::generate(&cfg, |ts, f| {
            frames.push((ts, f.to_vec()));
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap();
        (frames, s)
    };
    for app in [GenApp::Http, GenApp::Tls, GenApp::Ssh, GenApp::Dns] {
        assert!(s.flows.iter().filter(|f| f.app == app).count() > 20, "{app:?} present");
    }
    let bytes = first_bytes(&frames, &s);
    for f in &s.flows {
        let [ts, tc] = &bytes[&f.id];
        let proto = if f.proto == "tcp" { 6 } else { 17 };
        let ports = (f.client.port(), f.server.port());
        let want = Verdict::Detected { protocol: protocol(f.app), host: host(f) };
        assert_eq!(classify(ts, tc, proto, ports), want, "flow {} ({:?})", f.id, f.app);
        // From the client's bytes alone (Figure 7c's `direction = "to_server"` setups).
        assert_eq!(classify(ts, b"", proto, ports), want, "flow {} client bytes only", f.id);
    }
}

fn dpi_app(out: &std::path::Path, on: &str) -> App {
    let text = format!(
        "[stack.tcp]\n[[nf]]\nname = \"dpi\"\nkind = \"dpi\"\non = {on:?}\nside = \"server\"\n\
         direction = \"to_server\"\noutput = {:?}\n",
        out.display().to_string()
    );
    App::parse(&text, "dpi.toml").unwrap()
}

#[test]
fn the_dpi_nf_with_setup_3s_subscriptions_names_each_flows_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mix.pcap");
    let truth = gen_pcap(&input, &mix());
    for on in ["packets", "stream"] {
        let out = dir.path().join(format!("dpi-{on}.jsonl"));
        let r = microboxes::run(&dpi_app(&out, on), RunOptions::new(&input)).unwrap();
        assert!(r.ok(), "{}", r.to_text());
        let text = std::fs::read_to_string(&out).unwrap();
        let recs: HashMap<u16, DpiRecord> = text
            .lines()
            .map(|l| serde_json::from_str::<DpiRecord>(l).unwrap())
            .map(|r| (r.src_port.unwrap_or(0), r))
            .collect();
        assert_eq!(recs.len(), truth.flows.len(), "{on}: one record per flow");
        for f in &truth.flows {
            let rec = &recs[&f.client.port()];
            assert_eq!(
                (rec.app_proto.as_str(), rec.host.clone()),
                (f.app.name(), host(f)),
                "{on}: flow {} {:?}",
                f.id,
                f.app
            );
        }
    }
}

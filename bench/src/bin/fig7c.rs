//! Figure 7c: DPI + Signature_Match on the TCP monitor under five subscription setups, run
//! on two generated traffic mixes whose make-up is printed (the factors depend on it):
//!
//! * **mix A, web-heavy**: 70 % HTTP, 10 % TLS, 5 % SSH, 15 % DNS-like UDP flows; one flow
//!   in 20 carries an attack string of `apps/ids.rules` (always an HTTP flow);
//! * **mix B, little HTTP**: 15 % HTTP, 45 % TLS, 15 % SSH, 25 % DNS; one flow in 50 carries
//!   an attack.
//!
//! Both: 1–3 exchanges per TCP connection, requests of 100–600 bytes, responses of
//! 2,000–30,000 bytes, MSS 1460. The setups (`apps/fig7c/*.toml`):
//!
//! 1. both sides' events: every TCP packet raises the client's and the server's update, and
//!    both NFs take both (`side = "both"`), payloads per packet;
//! 2. client side only (`side = "client"`);
//! 3. the server half's updates from client packets only (`side = "server"`,
//!    `direction = "to_server"`);
//! 4. setup 3 plus dynamic subscriptions: DPI unsubscribes from a flow once decided; the
//!    matcher inspects a flow only after DPI said HTTP (`after_dpi = "http"`) and stops
//!    after its first alert (`stop_after_alert`), packets mode;
//! 5. as 4 on the TCP monitor's reassembled streams (`on = "stream"`).
//!
//! For each mix and setup it prints the NF events handled per input packet (DPI + matcher),
//! the median packets/s over the repetitions, the factor against setup 1 and the paper's
//! factor; it checks that setup 4 handles fewer events than setup 3 and that setups 4 and 5
//! alert on exactly setup 3's alerts restricted to HTTP flows (a failed check is reported and
//! makes the program exit with an error, after the plot). It also runs the TCP monitor with
//! no NF on the same capture: the ceiling that no subscription setup can pass here. Writes
//! `target/fig7c.svg`: one panel per mix, measured factor beside the paper's for each setup.
//!
//! `cargo run -p bench --release --bin fig7c -- [--flows N] [--reps R]`

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context as _, Result};
use bench::{bar_chart_svg, median, Bar, BarChart, BarGroup};
use microboxes::RunOptions;
use runtime::ports::gen::{generate, GenApp, GenConfig, GenSummary};
use runtime::ports::{LinkType, PcapWriter};

/// (app file, short name, the paper's throughput relative to setup 1 as a number and as
/// the paper words it)
const SETUPS: &[(&str, &str, f64, &str)] = &[
    ("apps/fig7c/1-both-sides.toml", "1 both sides", 1.0, "1.0x"),
    ("apps/fig7c/2-client-side.toml", "2 client side", 1.2, "1.2x"),
    ("apps/fig7c/3-server-side.toml", "3 server side", 2.6, "2.6x"),
    ("apps/fig7c/4-dynamic.toml", "4 dynamic", 5.0, "~5x"),
    // "about 15 % below setup 4": 0.85 × ~5.
    ("apps/fig7c/5-stream.toml", "5 as 4, stream", 4.25, "~4.25x"),
];

/// One traffic mix.
struct Mix {
    name: &'static str,
    what: &'static str,
    cfg: GenConfig,
}

fn mixes(flows: usize) -> Vec<Mix> {
    let base = GenConfig { flows, response_size: (2_000, 30_000), ..GenConfig::default() };
    vec![
        Mix {
            name: "A",
            what: "web-heavy",
            cfg: GenConfig {
                seed: 77,
                udp_fraction: 0.15,
                tls_fraction: 0.10,
                ssh_fraction: 0.05,
                attacks: flows / 20,
                ..base.clone()
            },
        },
        Mix {
            name: "B",
            what: "little HTTP",
            cfg: GenConfig {
                seed: 78,
                udp_fraction: 0.25,
                tls_fraction: 0.45,
                ssh_fraction: 0.15,
                attacks: flows / 50,
                ..base
            },
        },
    ]
}

/// The make-up of a generated capture, in words.
fn describe(s: &GenSummary, cfg: &GenConfig) -> String {
    let n = s.flows.len().max(1);
    let count = |app: GenApp| s.flows.iter().filter(|f| f.app == app).count();
    let pct = |k: usize| 100.0 * k as f64 / n as f64;
    let (http, tls, ssh, dns) = (count(GenApp::Http), count(GenApp::Tls), count(GenApp::Ssh), count(GenApp::Dns));
    let to_client =
        s.flows.iter().filter(|f| f.attack.is_some_and(|a| a.kind == runtime::ports::gen::Attack::ShellPrompt)).count();
    format!(
        "{n} flows: {http} HTTP ({:.0} %), {tls} TLS ({:.0} %), {ssh} SSH ({:.0} %), {dns} DNS/UDP ({:.0} %); \
         {} HTTP flows carry an attack ({} in a request, {to_client} in a response);\n  \
         {}-{} exchanges per TCP flow, requests {}-{} B, responses {}-{} B, MSS {}; {} packets, {:.1} MB",
        pct(http),
        pct(tls),
        pct(ssh),
        pct(dns),
        s.attacks,
        s.attacks as usize - to_client,
        cfg.requests_per_flow.0,
        cfg.requests_per_flow.1,
        cfg.request_size.0,
        cfg.request_size.1,
        cfg.response_size.0,
        cfg.response_size.1,
        cfg.mss,
        s.packets,
        s.bytes as f64 / 1e6,
    )
}

/// (client port, sid) of every alert in an EVE alert file.
fn alerts(path: &Path) -> Result<BTreeSet<(u64, u64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: {line}", path.display()))?;
        let port = if v["direction"] == "to_client" { &v["dest_port"] } else { &v["src_port"] };
        out.insert((port.as_u64().unwrap_or(0), v["alert"]["signature_id"].as_u64().unwrap_or(0)));
    }
    Ok(out)
}

/// Per setup: median packets/s, NF events handled per packet (DPI, matcher), events that
/// reached the two NF actors per packet (handled or passed on unhandled), alerts.
struct Measured {
    pps: f64,
    events: (f64, f64),
    reached: f64,
    alerts: BTreeSet<(u64, u64)>,
}

/// Runs the five setups (and the TCP monitor with no NF, the ceiling) `reps` times,
/// alternating; returns the capture's summary, the setups' results and the stack-only
/// median packets/s.
fn run_mix(mix: &Mix, reps: usize, dir: &Path) -> Result<(GenSummary, Vec<Measured>, f64)> {
    let input = dir.join(format!("mix{}.pcap", mix.name));
    let mut w = PcapWriter::create(&input, LinkType::Ethernet)?;
    let s = generate(&mix.cfg, |ts, f| w.write(ts, f, f.len() as u32))?;
    w.finish()?;
    let mut pps: Vec<Vec<f64>> = vec![Vec::new(); SETUPS.len()];
    let mut out: Vec<Option<Measured>> = (0..SETUPS.len()).map(|_| None).collect();
    let mut stack_only = Vec::new();
    let bare = microboxes::App::parse("[stack.tcp]\n", "stack only").map_err(|e| anyhow::anyhow!("{e}"))?;
    for rep in 0..reps.max(1) {
        let mut opts = RunOptions::new(&input);
        opts.prefix = Some(format!("fig7c{}-{}{rep}-bare", std::process::id(), mix.name));
        let r = microboxes::run(&bare, opts).map_err(|e| anyhow::anyhow!("stack only: {e}"))?;
        anyhow::ensure!(r.ok(), "{}", r.to_text());
        stack_only.push(r.packets_per_s);
        for (i, (file, ..)) in SETUPS.iter().enumerate() {
            let app = bench::load_app(file, dir)?;
            let mut opts = RunOptions::new(&input);
            opts.prefix = Some(format!("fig7c{}-{}{rep}-{i}", std::process::id(), mix.name));
            let r = microboxes::run(&app, opts).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
            anyhow::ensure!(r.ok(), "{}", r.to_text());
            pps[i].push(r.packets_per_s);
            let handled = |name: &str| r.actors.iter().find(|a| a.name == name).map_or(0, |a| a.handled_total);
            let per_pkt = |name| handled(name) as f64 / r.packets_in.max(1) as f64;
            let reached: u64 = r
                .actors
                .iter()
                .filter(|a| a.name == "dpi" || a.name == "ids")
                .map(|a| a.handled_total + a.passed)
                .sum();
            out[i] = Some(Measured {
                pps: 0.0,
                events: (per_pkt("dpi"), per_pkt("ids")),
                reached: reached as f64 / r.packets_in.max(1) as f64,
                alerts: alerts(&dir.join("alerts.jsonl"))?,
            });
        }
    }
    let measured = out
        .into_iter()
        .zip(&pps)
        .map(|(m, p)| {
            let mut m = m.expect("every setup ran");
            m.pps = median(p);
            m
        })
        .collect();
    Ok((s, measured, median(&stack_only)))
}

fn main() -> Result<()> {
    let (flows, reps) = bench::flows_and_reps(1000)?;
    let dir = std::env::temp_dir().join(format!("mbox-bench-fig7c-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Figure 7c: DPI + Signature_Match (apps/ids.rules) on the TCP monitor, setups apps/fig7c/*.toml; \
         {reps} repetitions, {cores} cores"
    );
    let mut charts = Vec::new();
    let mut failures = Vec::new();
    for mix in mixes(flows) {
        let (s, m, bare) = run_mix(&mix, reps, &dir)?;
        println!("\nmix {} ({}): {}", mix.name, mix.what, describe(&s, &mix.cfg));
        println!(
            "{:<16} {:>14} {:>14} {:>10} {:>12} {:>8} {:>8} {:>8}",
            "setup", "NF events/pkt", "(dpi + ids)", "reached", "median pps", "vs 1", "paper", "alerts"
        );
        let base = m[0].pps;
        let mut groups = Vec::new();
        for ((_, name, paper, paper_text), r) in SETUPS.iter().zip(&m) {
            let f = if base > 0.0 { r.pps / base } else { 0.0 };
            let ev = r.events.0 + r.events.1;
            println!(
                "{:<16} {:>14.2} {:>14} {:>10.2} {:>12.0} {:>7.2}x {:>8} {:>8}",
                name,
                ev,
                format!("({:.2} + {:.2})", r.events.0, r.events.1),
                r.reached,
                r.pps,
                f,
                paper_text,
                r.alerts.len()
            );
            groups.push(BarGroup {
                label: name.to_string(),
                note: Some(format!("{ev:.2} NF events/pkt")),
                bars: vec![Bar::new(f, format!("{f:.2}x")), Bar::new(*paper, *paper_text)],
            });
        }
        let ceiling = if base > 0.0 { bare / base } else { 0.0 };
        println!(
            "{:<16} {:>14.2} {:>14} {:>10.2} {:>12.0} {:>7.2}x {:>8} {:>8}",
            "(no NF, ceiling)", 0.0, "", 0.0, bare, ceiling, "", ""
        );
        // Checks: fewer events with dynamic subscriptions; the same alerts on HTTP flows.
        let (e3, e4) = (m[2].events.0 + m[2].events.1, m[3].events.0 + m[3].events.1);
        let apps: HashMap<u64, GenApp> = s.flows.iter().map(|f| (u64::from(f.client.port()), f.app)).collect();
        let http3: BTreeSet<(u64, u64)> =
            m[2].alerts.iter().filter(|(port, _)| apps.get(port) == Some(&GenApp::Http)).copied().collect();
        let fewer = e4 < e3;
        let same4 = m[3].alerts == http3;
        let same5 = m[4].alerts == http3;
        println!(
            "check: setup 4 handles fewer NF events/pkt than setup 3 ({e4:.2} vs {e3:.2}, {:+.0} %): {}; \
             setups 4 and 5 alert on setup 3's alerts in HTTP flows ({} alerts): {}",
            (e4 / e3 - 1.0) * 100.0,
            if fewer { "yes" } else { "NO" },
            http3.len(),
            match (same4, same5) {
                (true, true) => "yes".to_string(),
                _ => format!("NO (setup 4: {}, setup 5: {})", m[3].alerts.len(), m[4].alerts.len()),
            }
        );
        if !fewer {
            failures.push(format!("mix {}: setup 4 handles {e4:.2} events/pkt, setup 3 {e3:.2}", mix.name));
        }
        if !(same4 && same5) {
            let diff = |a: &BTreeSet<(u64, u64)>| format!("{:?}", a.symmetric_difference(&http3).collect::<Vec<_>>());
            failures.push(format!(
                "mix {}: alerts differ from setup 3's in HTTP flows (client port, sid): setup 4 {}, setup 5 {}",
                mix.name,
                diff(&m[3].alerts),
                diff(&m[4].alerts)
            ));
        }
        let http = s.flows.iter().filter(|f| f.app == GenApp::Http).count();
        charts.push(BarChart {
            title: format!(
                "Figure 7c, mix {} ({}: {:.0} % HTTP flows): throughput relative to setup 1",
                mix.name,
                mix.what,
                100.0 * http as f64 / s.flows.len().max(1) as f64
            ),
            y_label: "throughput vs setup 1".into(),
            series: vec!["measured (here)".into(), "paper".into()],
            groups,
            colors: vec!["#1f77b4".into(), "#9e9e9e".into()],
            footnote: Some(format!(
                "{} flows, {} packets; {cores} cores for RX, stack, DPI, matcher, TX; median of {reps} runs; \
                 the TCP monitor alone (no NF) ran at {ceiling:.2}x",
                s.flows.len(),
                s.packets
            )),
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "\n(NF events/pkt: events DPI and the matcher handled per input packet; reached: events per packet that \
         reached their actors, handled or passed on unhandled (filtered by side, direction or a flow's \
         subscription); pps: packets/s of the whole run)"
    );
    let plot = Path::new("target/fig7c.svg");
    bar_chart_svg(plot, &charts)?;
    println!("plot: {}", plot.display());
    anyhow::ensure!(failures.is_empty(), "checks failed:\n{}", failures.join("\n"));
    Ok(())
}

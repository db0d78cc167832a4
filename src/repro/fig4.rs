//! The paper's Figure 4, measured: three packets of one TCP flow through the TCP monitor
//! and three NFs, in each execution mode, drawn side by side (`mbox fig4 -o DIR`).
//!
//! What runs:
//!
//! * the input is three data segments of one TCP connection (client → server, 100 bytes
//!   each, no handshake: the TCP monitor picks the connection up mid-stream), written to a
//!   temporary pcap;
//! * the app is `[stack.tcp]` and three NFs `NF1`, `NF2`, `NF3`: a small custom NF that
//!   subscribes to `PKT/TCP`, reads nothing, drops nothing, publishes nothing (so that mode d
//!   groups all three in parallel by itself) and busy-waits a fixed synthetic work time per
//!   packet (`--work-us`, default [`DEFAULT_WORK_US`]) so that the shapes are easy to read;
//! * every ring holds 2 descriptors (`[runtime] ring_capacity = 2`): RX reads the capture as
//!   fast as it can, so with the default rings a stage would take all three packets in one
//!   burst and hand them on together; with 2-slot rings each stage hands a packet on almost
//!   as soon as it is done with it, as if the packets arrived one after another;
//! * every mode runs through the engine ([`crate::engine::run`]) with tracing on; in mode a
//!   each private-stack NF (`actors::private::PrivateChain`) records its private stack's work
//!   and its NF work apart, and the engine names them `NFk/l23`, `NFk/tcp`, `NFk/NFk`.
//!
//! Placement on two cores (the executor runs the actors placed on a core round-robin, so
//! the actors of one core never overlap in time):
//!
//! | mode | core 0 | core 1 | why |
//! | --- | --- | --- | --- |
//! | a | rx, NF1 (+ its private stacks), tx | NF2, NF3 (+ theirs) | a pipeline: NF1's actor works on packet 3 while NF2's and NF3's work on packets 1 and 2 |
//! | b | rx, l23, tcp, tx | NF1, NF2, NF3 | stack and NFs on different cores, and still one packet at a time |
//! | c | rx, l23, tcp, tx | NF1, NF2, NF3 | the stack runs ahead on its own core while the NFs work |
//! | d | rx, l23, tcp (and the other stack shards), NF1 (+ the group's splitter), tx | NF2, NF3 (+ the group's merger) | NF1 works on a packet at the same time as NF2, then NF3, on the other core |
//!
//! In mode a, RX hands NF1's actor two packets at once (the ring holds two), which it then
//! hands on together: the pipeline's step is two packets here. In mode d the stack is sharded
//! by flow hash (`[runtime] shards`); the one flow lands on one shard, and every shard is on
//! core 0 so that the stack's row does not depend on the hash.
//!
//! Every slice drawn is a measured span: `S` = the stack (the L2/3 µStack handling the
//! packet's `FRAME`, the TCP monitor its `PKT/TCP`), `NFk` = NF k handling the packet's
//! `PKT/TCP`; nothing is synthesized. RX, TX, flow events and the splitter/merger are not
//! drawn (they are in the Chrome JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::event::builtin;
use actors::{Actor, Context, Contract, EventDesc, Publication, Subscription, Verdict};
use anyhow::{anyhow, bail, Context as _, Result};
use nfs::{CustomNf, NfCommon, NfConfig};
use runtime::coremap::CoreMap;
use runtime::ports::{LinkType, PcapWriter};
use runtime::sys;
use runtime::trace::{SpanKind, TraceData};

use crate::app::{App, NfEntry};
use crate::engine::{Mode, RunOptions};
use crate::trace::render::packet_colour;

/// The synthetic work per NF and packet, µs, unless told otherwise.
pub const DEFAULT_WORK_US: u64 = 200;
/// The NFs' names, in chain order.
pub const NF_NAMES: [&str; 3] = ["NF1", "NF2", "NF3"];
/// Packets in the capture.
pub const PACKETS: u64 = 3;
/// The modes drawn, in panel order.
pub const MODES: [Mode; 4] = [Mode::A, Mode::B, Mode::C, Mode::D];
/// Spans kept per actor (plenty: a run records a few dozen).
const TRACE_CAPACITY: usize = 4096;

/// A panel's title.
pub fn title(mode: Mode) -> &'static str {
    match mode {
        Mode::A => "(a) per-NF stacks",
        Mode::B => "(b) shared stack, sequential",
        Mode::C => "(c) asynchronous stack",
        Mode::D => "(d) parallel NFs",
    }
}

/// Options of [`run_all`].
#[derive(Clone, Debug)]
pub struct Fig4Options {
    /// Synthetic work per NF and packet, µs (0: the NFs' real, tiny cost only).
    pub work_us: u64,
    /// The CPUs to use (the first two); default: this process's allowed CPUs.
    pub cpus: Option<Vec<usize>>,
}

impl Default for Fig4Options {
    fn default() -> Self {
        Fig4Options { work_us: DEFAULT_WORK_US, cpus: None }
    }
}

/// What a slice is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Work {
    /// Stack work: the L2/3 µStack or the TCP monitor handling the packet.
    Stack,
    /// NF work.
    Nf,
}

/// One measured unit of work on one of the three packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// The core it ran on (the CPU id).
    pub core: usize,
    /// Stack or NF work.
    pub work: Work,
    /// Who did it: `l23`, `tcp` or the NF's name.
    pub actor: String,
    /// Mode a: the private-stack NF whose actor did it (its private stack's work included).
    pub chain: Option<String>,
    /// The packet, 1..=3.
    pub packet: u64,
    /// The event handled (`FRAME`, `PKT/TCP`).
    pub event: String,
    /// Start, ns on the trace clock.
    pub start_ns: u64,
    /// End, ns.
    pub end_ns: u64,
}

impl Slice {
    /// The slice's label: `S` for stack work, the NF's name otherwise.
    pub fn name(&self) -> &str {
        match self.work {
            Work::Stack => "S",
            Work::Nf => &self.actor,
        }
    }

    /// Whether two slices overlap in time (touching is not overlapping).
    pub fn overlaps(&self, other: &Slice) -> bool {
        self.start_ns < other.end_ns && other.start_ns < self.end_ns
    }
}

/// One mode's run.
#[derive(Clone, Debug)]
pub struct ModeRun {
    /// The mode.
    pub mode: Mode,
    /// The slices of the three packets, by start time.
    pub slices: Vec<Slice>,
    /// The whole trace (Chrome JSON); in mode a the private chains' inner actors are
    /// appended to `actors` as `NFk/l23`, `NFk/tcp`, `NFk/NFk`, their spans nested in the
    /// chain's.
    pub trace: TraceData,
    /// The core map used.
    pub core_map: String,
    /// Actors by core, as placed (splitter and merger named with the member they run with).
    pub placement: Vec<(usize, Vec<String>)>,
}

/// The custom NF: busy-waits `work` per event, reads and changes nothing.
struct Busy {
    c: Contract,
    work: Duration,
}

impl Actor for Busy {
    fn contract(&self) -> &Contract {
        &self.c
    }
    fn handle(&mut self, _ev: &mut EventDesc, _cx: &mut Context<'_>) -> Verdict {
        let t = Instant::now();
        // Bounded: `work` is a fixed, finite duration.
        while t.elapsed() < self.work {
            std::hint::spin_loop();
        }
        Verdict::Continue
    }
}

/// The app: the TCP monitor and NF1..NF3, each busy `work_us` per packet; 2-slot rings.
pub fn app(work_us: u64) -> App {
    let mut app = App::parse("[runtime]\nring_capacity = 2\n\n[stack.tcp]\n", "fig4 app").expect("the fig4 app parses");
    let work = Duration::from_micros(work_us);
    let make = move |common: &NfCommon| -> Box<dyn Actor> {
        Box::new(Busy {
            c: Contract {
                name: common.name.clone(),
                kind: "busy".into(),
                subscriptions: vec![Subscription::new("pkt", builtin::PKT_TCP)],
                publications: Vec::<Publication>::new(),
                ..Default::default()
            },
            work,
        })
    };
    let make: nfs::MakeNf = Arc::new(make);
    for n in NF_NAMES {
        app.nfs.push(NfEntry {
            kind: "busy".into(),
            common: NfCommon::named(n),
            config: NfConfig::Custom(CustomNf { make: make.clone() }),
        });
    }
    app
}

fn csum(data: &[u8], init: u32) -> u16 {
    let mut s = init;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The three frames: data segments 1..=3 of one TCP connection, client to server.
pub fn frames() -> Vec<(u64, Vec<u8>)> {
    let (src, dst) = ([10u8, 0, 0, 1], [10u8, 0, 0, 2]);
    let (sport, dport) = (40000u16, 80u16);
    let payload_len = 100usize;
    (0..PACKETS)
        .map(|k| {
            let payload: Vec<u8> = (0..payload_len).map(|i| b'a' + ((i + k as usize) % 26) as u8).collect();
            let seq = 1000u32 + (k as u32) * payload_len as u32;
            let mut tcp = Vec::with_capacity(20 + payload_len);
            tcp.extend_from_slice(&sport.to_be_bytes());
            tcp.extend_from_slice(&dport.to_be_bytes());
            tcp.extend_from_slice(&seq.to_be_bytes());
            tcp.extend_from_slice(&5000u32.to_be_bytes()); // ack
            tcp.extend_from_slice(&[5 << 4, 0x18]); // data offset 5, PSH|ACK
            tcp.extend_from_slice(&65535u16.to_be_bytes());
            tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
            tcp.extend_from_slice(&payload);
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&src);
            pseudo.extend_from_slice(&dst);
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            let pre: u32 = pseudo.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
            let c = csum(&tcp, pre);
            tcp[16..18].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&(1 + k as u16).to_be_bytes());
            ip.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
            ip.extend_from_slice(&src);
            ip.extend_from_slice(&dst);
            let c = csum(&ip, 0);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
            f.extend_from_slice(&ip);
            f.extend_from_slice(&tcp);
            (1_000_000_000 + k * 1_000_000, f)
        })
        .collect()
}

/// Writes [`frames`] as a pcap.
pub fn write_capture(path: &Path) -> Result<()> {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).with_context(|| format!("creating {}", path.display()))?;
    for (ts, f) in frames() {
        w.write(ts, &f, f.len() as u32).with_context(|| format!("writing {}", path.display()))?;
    }
    w.finish().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The core map of `mode` over the CPUs `c0` and `c1` (equal on a one-CPU machine), for an
/// app whose mode d shards the stack `shards` ways.
pub fn core_map(mode: Mode, c0: usize, c1: usize, shards: u32) -> String {
    let (n1, n2, n3) = (NF_NAMES[0], NF_NAMES[1], NF_NAMES[2]);
    let mut lines: Vec<(String, usize)> = match mode {
        Mode::A => vec![("rx", c0), (n1, c0), (n2, c1), (n3, c1), ("tx", c0)],
        Mode::B | Mode::C => vec![("rx", c0), ("l23", c0), ("tcp", c0), (n1, c1), (n2, c1), (n3, c1), ("tx", c0)],
        Mode::D => vec![("rx", c0), ("l23", c0), ("tcp", c0), (n1, c0), (n2, c1), (n3, c1), ("tx", c0)],
    }
    .into_iter()
    .map(|(a, c)| (a.to_string(), c))
    .collect();
    if mode == Mode::D {
        // Mode d's other stack instances (flows are sharded by hash over them; the one
        // flow here lands on one of them, the others stay idle): all on core 0 with the
        // first, so that the stack's row does not depend on the flow's hash.
        for k in 1..shards {
            lines.push((format!("l23.{k}"), c0));
            lines.push((format!("tcp.{k}"), c0));
        }
    }
    let mut s = format!("# mbox fig4, mode {mode}\n[cores]\n");
    for (a, c) in lines {
        let _ = writeln!(s, "{:?} = {c}", a);
    }
    s
}

/// The two CPUs used: the first two of `cpus` (or of the allowed ones).
fn pick_cpus(opts: &Fig4Options) -> Result<(usize, usize)> {
    let cpus = match &opts.cpus {
        Some(c) => c.clone(),
        None => sys::allowed_cpus().context("reading the CPU affinity")?,
    };
    match cpus.as_slice() {
        [] => bail!("no CPU to run on"),
        [c] => Ok((*c, *c)),
        [a, b, ..] => Ok((*a, *b)),
    }
}

/// A unique temporary path.
fn temp_path(what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "mbox-fig4-{}-{}-{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Runs every mode of [`MODES`] over the three packets.
pub fn run_all(opts: &Fig4Options) -> Result<Vec<ModeRun>> {
    let input = temp_path("input.pcap");
    write_capture(&input)?;
    let out = MODES.iter().map(|m| run_mode_on(*m, &input, opts)).collect();
    let _ = std::fs::remove_file(&input);
    out
}

/// Runs one mode over the three packets.
pub fn run_mode(mode: Mode, opts: &Fig4Options) -> Result<ModeRun> {
    let input = temp_path("input.pcap");
    write_capture(&input)?;
    let out = run_mode_on(mode, &input, opts);
    let _ = std::fs::remove_file(&input);
    out
}

fn run_mode_on(mode: Mode, input: &Path, opts: &Fig4Options) -> Result<ModeRun> {
    let (c0, c1) = pick_cpus(opts)?;
    let app = app(opts.work_us);
    let map_text = core_map(mode, c0, c1, app.runtime.shards);
    let map = CoreMap::parse(&map_text, &format!("fig4 core map (mode {mode})")).map_err(|e| anyhow!("{e}"))?;
    let mut ro = RunOptions::new(input);
    ro.mode = mode;
    ro.trace = Some(TRACE_CAPACITY);
    ro.core_map = Some(map);
    let report = crate::engine::run(&app, ro).map_err(|e| anyhow!("mode {mode}: {e}"))?;
    if !report.ok() {
        bail!("mode {mode}: {}", report.errors.join("; "));
    }
    let placement = report.cores.iter().map(|c| (c.core, c.actors.clone())).collect();
    let trace = report.trace.ok_or_else(|| anyhow!("mode {mode}: no trace"))?;
    if trace.dropped > 0 {
        bail!("mode {mode}: {} spans did not fit the trace buffers", trace.dropped);
    }
    let slices = slices_of(&trace);
    Ok(ModeRun { mode, slices, trace, core_map: map_text, placement })
}

fn is_packet_event(name: &str) -> bool {
    name == "FRAME" || name == "PKT" || name.starts_with("PKT/")
}

/// The stack's and the NFs' spans of the three packets. In mode a the engine names each
/// private chain's inner actors `chain/l23`, `chain/tcp`, `chain/NFk` (the chain's own
/// span, which covers them all, is not drawn).
fn slices_of(t: &TraceData) -> Vec<Slice> {
    let events: BTreeMap<u32, &str> = t.event_types.iter().map(|(k, n)| (*k, n.as_str())).collect();
    let mut out: Vec<Slice> = t
        .spans
        .iter()
        .filter(|s| s.kind == SpanKind::Handle && (1..=PACKETS).contains(&s.seq))
        .filter_map(|s| {
            let a = t.actors.get(usize::from(s.actor))?;
            let event = *events.get(&s.event_type)?;
            if !is_packet_event(event) || a.kind.ends_with("+stacks") {
                return None;
            }
            let (chain, name) = match a.name.split_once('/') {
                Some((c, n)) => (Some(c.to_string()), n.to_string()),
                None => (None, a.name.clone()),
            };
            let work = if NF_NAMES.contains(&name.as_str()) {
                Work::Nf
            } else if stacks::registry::STACKS.iter().any(|k| k.actor == name) {
                Work::Stack
            } else {
                return None;
            };
            Some(Slice {
                core: usize::from(s.core),
                work,
                actor: name,
                chain,
                packet: s.seq,
                event: event.to_string(),
                start_ns: s.start_ns,
                end_ns: s.end_ns,
            })
        })
        .collect();
    out.sort_by_key(|s| (s.start_ns, s.end_ns));
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

// Layout, px.
const WIDTH: f64 = 1560.0;
const COLS: usize = 2;
const PANEL_GAP: f64 = 30.0;
const MARGIN: f64 = 20.0;
const LABEL_W: f64 = 150.0;
const PANEL_TOP: f64 = 70.0;
const ROW_H: f64 = 46.0;
const BAR_TOP: f64 = 16.0;
const BAR_H: f64 = 26.0;
const CHAR_W: f64 = 6.6;

fn panel_w() -> f64 {
    (WIDTH - 2.0 * MARGIN - (COLS as f64 - 1.0) * PANEL_GAP) / COLS as f64
}

fn panel_h(rows: usize) -> f64 {
    PANEL_TOP + rows.max(1) as f64 * ROW_H + 58.0
}

/// The combined SVG: one panel per mode (2 × 2), rows per core; each panel's time axis
/// spans its own run (the header of each says how long the three packets took).
pub fn render_svg(runs: &[ModeRun], work_us: u64) -> String {
    let rows_of = |r: &ModeRun| -> Vec<usize> {
        let mut c: Vec<usize> = r.placement.iter().map(|(c, _)| *c).collect();
        c.extend(r.slices.iter().map(|s| s.core));
        c.sort_unstable();
        c.dedup();
        c
    };
    let max_rows = runs.iter().map(|r| rows_of(r).len()).max().unwrap_or(1);
    let ph = panel_h(max_rows);
    let grid_rows = runs.len().div_ceil(COLS);
    let legend_h = 70.0;
    let height = 60.0 + grid_rows as f64 * (ph + PANEL_GAP) + legend_h;
    let pw = panel_w();
    let plot_w = pw - LABEL_W - 14.0;
    // Each panel's own scale: its run fills its width.
    let span_of = |r: &ModeRun| {
        let t0 = r.slices.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let t1 = r.slices.iter().map(|s| s.end_ns).max().unwrap_or(t0);
        (t0, t1)
    };

    let mut o = String::new();
    let _ = write!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12"><rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = write!(
        o,
        r#"<text x="{MARGIN}" y="28" font-size="18" font-weight="bold">Figure 4, measured: three packets of one TCP flow through a stack and three NFs</text>"#
    );
    let _ = write!(
        o,
        r##"<text x="{MARGIN}" y="48" fill="#444">Each slice is a recorded span. S = stack (L2/3 µStack, TCP monitor), NFk = network function k (synthetic work {work_us} µs per packet), #n = packet n; colour = packet. Time from the first packet's stack work; each panel has its own scale.</text>"##
    );
    for (i, r) in runs.iter().enumerate() {
        let (col, row) = (i % COLS, i / COLS);
        let x0 = MARGIN + col as f64 * (pw + PANEL_GAP);
        let y0 = 60.0 + row as f64 * (ph + PANEL_GAP);
        let (t0, t1) = span_of(r);
        let range_us = ((t1 - t0) as f64 / 1000.0).max(1.0);
        let scale = plot_w / range_us; // px per µs
        let step = crate::trace::render::tick_step(range_us, 6.0);
        panel(&mut o, r, x0, y0, pw, ph, &rows_of(r), scale, step, t0);
    }
    // Legend.
    let ly = height - legend_h + 16.0;
    let _ = write!(o, r#"<text x="{MARGIN}" y="{ly}" font-weight="bold">Packets</text>"#);
    for p in 1..=PACKETS {
        let x = MARGIN + 70.0 + (p - 1) as f64 * 110.0;
        let _ = write!(
            o,
            r##"<rect x="{x}" y="{y}" width="22" height="14" fill="{c}" stroke="#555"/><text x="{tx}" y="{ly}">packet {p}</text>"##,
            y = ly - 11.0,
            c = packet_colour(Some(p)),
            tx = x + 28.0
        );
    }
    let _ = write!(
        o,
        r##"<rect x="{x}" y="{y}" width="22" height="14" fill="#ffffff" stroke="#000" stroke-width="1.5"/><text x="{tx}" y="{ly}">stack work (outlined; a µs or two each, so thin; S labels above the row where there is no room inside)</text>"##,
        x = MARGIN + 420.0,
        y = ly - 11.0,
        tx = MARGIN + 448.0
    );
    let _ = write!(
        o,
        r##"<text x="{MARGIN}" y="{y}" fill="#444">Two cores: the executor runs the actors placed on a core round-robin, so one core's slices never overlap. Rings hold 2 descriptors, so each stage hands a packet on as soon as it is done. Not drawn: RX, TX, flow events, splitter/merger (see fig4-*.json).</text>"##,
        y = ly + 24.0
    );
    o.push_str("</svg>\n");
    o
}

#[allow(clippy::too_many_arguments)]
fn panel(
    o: &mut String,
    r: &ModeRun,
    x0: f64,
    y0: f64,
    pw: f64,
    ph: f64,
    cores: &[usize],
    scale: f64,
    step: f64,
    t0_ns: u64,
) {
    let _ = write!(o, r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#bbb"/>"##);
    let _ = write!(
        o,
        r#"<text x="{x}" y="{y}" font-size="15" font-weight="bold">{t}</text>"#,
        x = x0 + 10.0,
        y = y0 + 22.0,
        t = esc(title(r.mode))
    );
    let (t_end, n) = {
        let t1 = r.slices.iter().map(|s| s.end_ns).max().unwrap_or(t0_ns);
        ((t1 - t0_ns) as f64 / 1000.0, r.slices.len())
    };
    let _ = write!(
        o,
        r##"<text x="{x}" y="{y}" fill="#555" text-anchor="end">mode {m} · {n} spans · 3 packets done in {t_end:.0} µs</text>"##,
        x = x0 + pw - 10.0,
        y = y0 + 22.0,
        m = r.mode
    );
    let px = x0 + LABEL_W;
    let plot_w = pw - LABEL_W - 14.0;
    let rows_top = y0 + PANEL_TOP;
    let rows_h = cores.len().max(1) as f64 * ROW_H;
    // Axis.
    let ay = rows_top - 6.0;
    let _ = write!(o, r##"<line x1="{px}" y1="{ay}" x2="{x2}" y2="{ay}" stroke="#333"/>"##, x2 = px + plot_w);
    let limit_us = plot_w / scale;
    for k in 0..=100 {
        let t = k as f64 * step;
        if t > limit_us + 1e-9 {
            break;
        }
        let x = px + t * scale;
        let _ = write!(
            o,
            r##"<line x1="{x:.1}" y1="{ay}" x2="{x:.1}" y2="{yb}" stroke="#ddd"/><line x1="{x:.1}" y1="{ay}" x2="{x:.1}" y2="{a5}" stroke="#333"/><text x="{x:.1}" y="{ty}" text-anchor="middle" font-size="11" fill="#333">{t} µs</text>"##,
            yb = rows_top + rows_h,
            a5 = ay - 4.0,
            ty = ay - 8.0,
        );
    }
    // Rows.
    for (i, c) in cores.iter().enumerate() {
        let y = rows_top + i as f64 * ROW_H;
        let fill = if i % 2 == 0 { "#eeeeee" } else { "#e4e4e4" };
        let _ = write!(o, r#"<rect x="{px}" y="{y}" width="{plot_w}" height="{ROW_H}" fill="{fill}"/>"#);
        let _ = write!(
            o,
            r#"<text x="{x}" y="{ty}" font-size="13" font-weight="bold">core {c}</text>"#,
            x = x0 + 10.0,
            ty = y + 20.0
        );
        let names: Vec<String> = r
            .placement
            .iter()
            .filter(|(k, _)| k == c)
            .flat_map(|(_, n)| n.iter().filter(|a| is_drawn_actor(a)).cloned())
            .collect();
        let _ = write!(
            o,
            r##"<text x="{x}" y="{ty}" font-size="10" fill="#555">{t}</text>"##,
            x = x0 + 10.0,
            ty = y + 35.0,
            t = esc(&names.join(" "))
        );
    }
    slices(o, r, cores, px, rows_top, scale, t0_ns);
    let _ = write!(
        o,
        r##"<text x="{x}" y="{y}" font-size="10" fill="#666">core map: {m}</text>"##,
        x = x0 + 10.0,
        y = y0 + ph - 12.0,
        m = esc(&r.core_map.lines().skip(2).collect::<Vec<_>>().join(", "))
    );
}

/// A panel's slices, on their cores' rows (rows start at `rows_top`, time 0 at `px`):
/// stack work first, so NF slices (wider) are never hidden under them.
fn slices(o: &mut String, r: &ModeRun, cores: &[usize], px: f64, rows_top: f64, scale: f64, t0_ns: u64) {
    let mut labels_above: Vec<(f64, f64)> = Vec::new(); // see `taken`
    let mut sorted: Vec<&Slice> = r.slices.iter().collect();
    sorted.sort_by_key(|s| (s.work, s.start_ns));
    for s in sorted {
        let Some(row) = cores.iter().position(|c| *c == s.core) else { continue };
        let y = rows_top + row as f64 * ROW_H;
        let x = px + (s.start_ns.saturating_sub(t0_ns)) as f64 / 1000.0 * scale;
        let dur_us = (s.end_ns.saturating_sub(s.start_ns)) as f64 / 1000.0;
        let w = (dur_us * scale).max(2.0);
        let (stroke, sw) = if s.work == Work::Stack { ("#000000", 1.5) } else { ("#555555", 0.8) };
        let who = match &s.chain {
            Some(c) if s.work == Work::Stack => format!("{c}'s private {}", s.actor),
            _ => s.actor.clone(),
        };
        let tip = format!(
            "{} #{} · {} handled {} · core {} · start {:.1} µs, {:.2} µs",
            s.name(),
            s.packet,
            who,
            s.event,
            s.core,
            (s.start_ns - t0_ns) as f64 / 1000.0,
            dur_us
        );
        let _ = write!(
            o,
            r#"<rect x="{x:.2}" y="{by}" width="{w:.2}" height="{BAR_H}" fill="{f}" stroke="{stroke}" stroke-width="{sw}"><title>{t}</title></rect>"#,
            by = y + BAR_TOP,
            f = packet_colour(Some(s.packet)),
            t = esc(&tip)
        );
        let full = format!("{} #{}", s.name(), s.packet);
        // Above a slice too narrow for any label: the stack's `S1` (packet 1), an NF's name.
        let short = match s.work {
            Work::Stack => format!("S{}", s.packet),
            Work::Nf => s.name().to_string(),
        };
        let inside = [full.clone(), short.clone()].into_iter().find(|l| w >= l.chars().count() as f64 * CHAR_W + 4.0);
        match inside {
            Some(l) => {
                let _ = write!(
                    o,
                    r#"<text x="{tx:.2}" y="{ty}" font-size="11" pointer-events="none">{l}</text>"#,
                    tx = x + 3.0,
                    ty = y + BAR_TOP + BAR_H / 2.0 + 4.0,
                    l = esc(&l)
                );
            }
            None => {
                // Above the bar, if that place is free in this row.
                let lw = short.chars().count() as f64 * 6.0;
                let (lx0, lx1) = (x + w / 2.0 - lw / 2.0, x + w / 2.0 + lw / 2.0);
                let key = y;
                if !taken(&labels_above, key, lx0, lx1) {
                    labels_above.push((key, lx0));
                    labels_above.push((key, lx1));
                    let _ = write!(
                        o,
                        r#"<text x="{cx:.2}" y="{ty}" font-size="10" text-anchor="middle" pointer-events="none">{l}</text>"#,
                        cx = x + w / 2.0,
                        ty = y + BAR_TOP - 3.0,
                        l = esc(&short)
                    );
                }
            }
        }
    }
}

/// Whether an actor's work is drawn (not rx, tx, splitters, mergers, idle stack shards).
fn is_drawn_actor(name: &str) -> bool {
    !matches!(name, "rx" | "tx") && !name.contains('[') && !name.starts_with("shard-") && !name.contains('.')
}

/// Whether a label from `x0` to `x1` above the row at `y` collides with one already placed
/// (`placed` holds (row y, x) pairs: each label's left, then right edge).
fn taken(placed: &[(f64, f64)], y: f64, x0: f64, x1: f64) -> bool {
    placed.chunks(2).any(|p| match p {
        [(ya, a), (_, b)] => (*ya - y).abs() < 0.5 && x0 < *b + 2.0 && x1 > *a - 2.0,
        _ => false,
    })
}

/// The SVG in a page, with each mode's placement and files.
pub fn render_html(runs: &[ModeRun], work_us: u64) -> String {
    let svg = render_svg(runs, work_us);
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mbox fig4: execution modes (Figure 4)</title>
<style>
body {{ font-family: sans-serif; margin: 12px; color: #222; }}
svg {{ max-width: 100%; height: auto; }}
rect:hover {{ stroke-width: 2.5; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 10px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }}
</style></head>
<body>
{svg}
<table><tr><th>panel</th><th>placement (actors by core, in polling order)</th><th>Chrome trace (Perfetto)</th></tr>
"#
    );
    for r in runs {
        let placed: Vec<String> = r.placement.iter().map(|(c, n)| format!("core {c}: {}", n.join(", "))).collect();
        let _ = writeln!(
            o,
            r#"<tr><td>{}</td><td>{}</td><td><a href="fig4-{m}.json">fig4-{m}.json</a></td></tr>"#,
            esc(title(r.mode)),
            esc(&placed.join(" · ")),
            m = r.mode
        );
    }
    o.push_str("</table>\n<p style=\"font-size:13px;color:#555\">Hover a slice for its details. Generated by <code>mbox fig4</code>.</p>\n</body></html>\n");
    o
}

/// Runs every mode and writes `DIR/fig4.svg`, `DIR/fig4.html` and `DIR/fig4-<mode>.json`.
pub fn write_all(dir: &Path, opts: &Fig4Options) -> Result<Vec<ModeRun>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let runs = run_all(opts)?;
    for r in &runs {
        let p = dir.join(format!("fig4-{}.json", r.mode));
        crate::trace::export::write_chrome_trace(&p, &r.trace).with_context(|| format!("writing {}", p.display()))?;
    }
    let svg = dir.join("fig4.svg");
    std::fs::write(&svg, format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}", render_svg(&runs, opts.work_us)))
        .with_context(|| format!("writing {}", svg.display()))?;
    let html = dir.join("fig4.html");
    std::fs::write(&html, render_html(&runs, opts.work_us)).with_context(|| format!("writing {}", html.display()))?;
    Ok(runs)
}

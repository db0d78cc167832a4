//! `mbox` — the Microboxes command line.
//!
//! * `mbox gen` writes deterministic synthetic traffic (TCP/HTTP and UDP) as pcap;
//! * `mbox run` runs an application file over a capture and prints what happened;
//! * `mbox streams` reassembles every TCP connection of a capture;
//! * `mbox trace render` draws a trace written by `mbox run --trace` as HTML or SVG.
//! * `mbox fig4` reproduces the paper's Figure 4 (the execution modes, measured).
//!
//! * `mbox check` runs a capture through several execution modes and compares what the NFs
//!   observed with mode a.
//! * `mbox shm list|clean` shows the shared-memory files under `/dev/shm` and removes those
//!   of dead runs.
//!
//! Exit status: 0 success, 1 any error (with a message on stderr), 2 bad usage, 3 `mbox
//! check` found a divergence, 130 interrupted by Ctrl-C (after draining and reporting).
//!
//! Where things go: results and summaries on stdout (also when the run failed), errors on
//! stderr, each cause said once; progress (bars, `mbox check`'s per-mode lines) and Ctrl-C
//! notices on stderr. `-q` prints nothing but errors.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use microboxes::{App, RunOptions};
use runtime::coremap::CoreMap;
use runtime::ports::gen::{generate, GenApp, GenConfig, SizeDist};
use runtime::ports::{LinkType, PcapWriter};

#[derive(Parser)]
#[command(name = "mbox", version, about = "Microboxes: shared µStacks and chains of network functions")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate deterministic synthetic traffic as a pcap file.
    Gen(GenArgs),
    /// Run an application file over a capture.
    Run(Box<RunArgs>),
    /// Reassemble every TCP connection of a capture: one line (or JSON object) each.
    Streams(StreamsArgs),
    /// Run a capture through several execution modes and compare everything the NFs saw and
    /// did with mode a (private stacks, one packet at a time).
    Check(CheckArgs),
    /// Serve one NF of a running `mbox run` in this process (started by `mbox run
    /// --nf-process NAME`; attaches to the run's shared memory by prefix).
    Nf(NfArgs),
    /// Work with recorded traces (`mbox run --trace FILE.json`).
    #[command(subcommand)]
    Trace(TraceCmd),
    /// Print the publish/subscribe graph the controller links for an app file (text, or
    /// Graphviz DOT with --dot); runs nothing, writes no output file.
    Graph(GraphArgs),
    /// Shared-memory files under /dev/shm: list them, or remove those of dead runs.
    #[command(subcommand)]
    Shm(ShmCmd),
    /// Talk to a running `mbox run` through its control socket /dev/shm/mbox.PREFIX.ctl:
    /// status, stats, reload (re-read the app file; docs/reconfiguration.md), graph.
    Ctl(CtlArgs),
    /// Reproduce the paper's Figure 4: three packets through a stack and three NFs in modes
    /// a, b, c and d, traced and drawn side by side (DIR/fig4.html, DIR/fig4.svg).
    Fig4(Fig4Args),
}

#[derive(Args)]
struct GraphArgs {
    /// The application file.
    app: PathBuf,
    /// Print Graphviz DOT instead of text (e.g. `mbox graph APP --dot | dot -Tsvg > g.svg`).
    #[arg(long)]
    dot: bool,
}

#[derive(Args)]
struct CtlArgs {
    /// The run's shared-memory prefix (`mbox run --prefix PREFIX`; default runPID).
    prefix: String,
    /// What to ask: status, stats, reload or graph.
    #[arg(value_parser = ["status", "stats", "reload", "graph"])]
    request: String,
    /// With graph: print Graphviz DOT instead of text.
    #[arg(long)]
    dot: bool,
    /// Print the JSON answer as it came (graph prints the graph itself otherwise).
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_secs)]
    timeout: f64,
}

#[derive(Args)]
struct Fig4Args {
    /// Output directory: fig4.svg, fig4.html and one Chrome trace per mode (fig4-a.json ...).
    #[arg(short, long)]
    output: PathBuf,
    /// Synthetic work per NF and packet, in µs (0: the NFs' real cost only).
    #[arg(long, value_name = "N", default_value_t = microboxes::repro::fig4::DEFAULT_WORK_US)]
    work_us: u64,
}

#[derive(Subcommand)]
enum ShmCmd {
    /// Every /dev/shm/mbox.* file: prefix, size, owner, and whether its run is alive.
    List,
    /// Remove the files of dead runs that belong to you (never a live run's, never another
    /// user's); says what it removed and what it kept, and why.
    Clean {
        /// Only files of this shared-memory prefix (`/dev/shm/mbox.PREFIX.*`).
        #[arg(long)]
        prefix: Option<String>,
    },
}

#[derive(Subcommand)]
enum TraceCmd {
    /// Draw a Chrome trace as a timeline, one row per core: OUT.html (zoom, hover) or OUT.svg.
    Render(TraceRenderArgs),
}

#[derive(Args)]
struct TraceRenderArgs {
    /// A Chrome Trace Event JSON file (as written by `mbox run --trace`).
    input: PathBuf,
    /// Output file: *.html or *.svg.
    #[arg(short, long)]
    output: PathBuf,
    /// Draw only slices that start in this window, in ms from the trace's start: FROM..TO
    /// (TO excluded; e.g. 100..120; either side may be left out).
    #[arg(long, value_name = "FROM..TO", value_parser = microboxes::trace::export::Selection::parse_window_ms)]
    window: Option<(f64, f64)>,
    /// Draw only the slices of these packets (numbers in the input, inclusive): FROM..TO.
    #[arg(long, value_name = "FROM..TO", value_parser = microboxes::trace::export::Selection::parse_packets)]
    packets: Option<(u64, u64)>,
    /// Draw at most this many single slices; with more selected, draw each actor's
    /// utilisation (busy fraction over time) instead.
    #[arg(long, value_name = "N", default_value_t = microboxes::trace::render::MAX_SLICES)]
    max_slices: usize,
}

#[derive(Args)]
struct NfArgs {
    /// The NF's name in the app file.
    name: String,
    /// The application file of the run.
    #[arg(long)]
    app: PathBuf,
    /// The run's shared-memory prefix.
    #[arg(long)]
    attach: String,
    /// Ring to read the NF's events from.
    #[arg(long)]
    input_ring: String,
    /// Ring to write its answers to.
    #[arg(long)]
    output_ring: String,
    /// Core to pin to.
    #[arg(long, default_value_t = 0)]
    core: usize,
    /// Link type of the capture: ethernet, raw-ip or linux-sll.
    #[arg(long, default_value = "ethernet")]
    link: String,
    /// Write the stage's report (JSON) when done: `-` for one line on stdout (how `mbox run`
    /// takes it), or a new file (an existing file or link there is refused, never replaced).
    #[arg(long)]
    report: Option<PathBuf>,
    /// The run's --output-dir: relative NF output paths go under it.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// The run is passive (`--iface A`): the NF's drops become "would drop".
    #[arg(long)]
    passive: bool,
    /// The run's execution mode (c or d): the NF process computes the run's layout from it
    /// and refuses a region made for another.
    #[arg(long, default_value = "c")]
    mode: microboxes::Mode,
}

#[derive(Args)]
struct CheckArgs {
    /// Application file (TOML).
    app: PathBuf,
    /// Input capture (pcap or pcapng).
    #[arg(long, short)]
    input: PathBuf,
    /// Modes to compare with mode a, comma separated.
    #[arg(long, default_value = "b,c,d", value_delimiter = ',')]
    modes: Vec<microboxes::Mode>,
    /// Put every actor of every mode on one core.
    #[arg(long)]
    single_core: bool,
    /// Keep each mode's NF outputs in this directory (default: a temporary one, removed).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Reload FILE (a changed app file) from packet N on, in every mode (repeatable;
    /// docs/reconfiguration.md).
    #[arg(long = "reload-at", value_name = "N:FILE")]
    reload_at: Vec<microboxes::reconfig::ScheduledReload>,
    /// No progress lines; print only errors and divergences.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct StreamsArgs {
    /// Input capture (pcap or pcapng).
    input: PathBuf,
    /// Print JSON (one object with a `connections` array) instead of lines.
    #[arg(long)]
    json: bool,
    /// Write each direction's reassembled bytes to DIR/INDEX-client.bin and DIR/INDEX-server.bin.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Connections tracked at once (as `[stack.l23] max_flows` in `mbox run`); beyond it the
    /// least recently seen is evicted, reported with end `evicted` and counted.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_flows: u64,
    /// 2: one thread reads the capture and reassembles, the other hashes (and dumps) the
    /// reassembled bytes and prints; 1: everything on one thread. Same output either way.
    /// Default: 2 when the process may use at least two CPUs, else 1.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    threads: Option<u8>,
}

fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u32 = a.trim().parse().map_err(|_| format!("`{s}` is not N or MIN-MAX"))?;
    let b: u32 = b.trim().parse().map_err(|_| format!("`{s}` is not N or MIN-MAX"))?;
    if a > b {
        return Err(format!("`{s}`: MIN is larger than MAX"));
    }
    Ok((a, b))
}

/// A response size: `N`, `MIN-MAX` (uniform) or `MIN~MAX` (log-uniform).
fn parse_size_range(s: &str) -> Result<((u32, u32), SizeDist), String> {
    match s.split_once('~') {
        Some((a, b)) => {
            let bad = || format!("`{s}` is not N, MIN-MAX or MIN~MAX");
            let a: u32 = a.trim().parse().map_err(|_| bad())?;
            let b: u32 = b.trim().parse().map_err(|_| bad())?;
            if a > b {
                return Err(format!("`{s}`: MIN is larger than MAX"));
            }
            Ok(((a, b), SizeDist::LogUniform))
        }
        None => parse_range(s)
            .map(|r| (r, SizeDist::Uniform))
            .map_err(|e| e.replace("is not N or MIN-MAX", "is not N, MIN-MAX or MIN~MAX")),
    }
}

/// A probability: a number in [0, 1].
fn parse_probability(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a probability between 0 and 1 (e.g. 0.01 for 1 %)")),
    }
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds between 0 and 86400 (e.g. 10 or 2.5)")),
    }
}

#[derive(Args)]
struct GenArgs {
    /// Number of flows (TCP connections and UDP exchanges).
    #[arg(long, default_value_t = 100)]
    flows: usize,
    /// Random seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output pcap file.
    #[arg(short, long)]
    output: PathBuf,
    /// Also write the generated flows (5-tuples and expected counts) as JSON.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Share of flows that are UDP (0..1).
    #[arg(long)]
    udp_fraction: Option<f64>,
    /// Share of flows that are TLS connections on port 443 (0..1; default 0). The TCP flows
    /// that are neither TLS nor SSH are HTTP.
    #[arg(long)]
    tls_fraction: Option<f64>,
    /// Share of flows that are SSH connections on port 22 (0..1; default 0).
    #[arg(long)]
    ssh_fraction: Option<f64>,
    /// Share of TCP connections torn down with RST instead of FIN (0..1).
    #[arg(long)]
    rst_fraction: Option<f64>,
    /// Share of flows over IPv6 (0..1).
    #[arg(long)]
    ipv6_fraction: Option<f64>,
    /// Share of flows with an 802.1Q tag (0..1).
    #[arg(long)]
    vlan_fraction: Option<f64>,
    /// HTTP requests per TCP connection: N or MIN-MAX.
    #[arg(long, value_parser = parse_range)]
    requests_per_flow: Option<(u32, u32)>,
    /// HTTP request size in bytes: N or MIN-MAX.
    #[arg(long, value_parser = parse_range)]
    request_size: Option<(u32, u32)>,
    /// Response size in bytes (HTTP body; TLS and SSH response): N, MIN-MAX (uniform) or
    /// MIN~MAX (log-uniform: each power-of-two octave of the range equally likely, so many
    /// small responses and a few large ones).
    #[arg(long, value_parser = parse_size_range, value_name = "N|MIN-MAX|MIN~MAX")]
    response_size: Option<((u32, u32), SizeDist)>,
    /// TCP maximum segment size.
    #[arg(long)]
    mss: Option<u16>,
    /// Flows active at the same time (interleaved).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Plant the attack strings of apps/ids.rules (sids 1000001-1000004) in N HTTP flows,
    /// spread over the run; --manifest names each carrier's attack and sid.
    #[arg(long, value_name = "N", default_value_t = 0)]
    attacks: usize,
    /// Probability that a TCP data segment is lost before the capture point: a later segment
    /// is seen first (a hole), then the retransmission; the receiver's ACKs stop at the hole.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    loss: Option<f64>,
    /// Probability that a TCP data segment is seen after the next segment of its direction.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    reorder: Option<f64>,
    /// Probability that a TCP data segment is seen twice (lost after the capture point and
    /// retransmitted, identical). --loss + --reorder + --duplicate is at most 1.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    duplicate: Option<f64>,
}

#[derive(Args)]
struct RunArgs {
    /// Application file (TOML).
    app: PathBuf,
    /// Input capture (pcap or pcapng).
    #[arg(long, short, required_unless_present_any = ["iface", "dpdk"], conflicts_with_all = ["iface", "dpdk"])]
    input: Option<PathBuf>,
    /// Live traffic (Linux AF_PACKET, root or CAP_NET_RAW): `A` passive (read only, nothing
    /// is sent), `A,B` inline (frames from A leave through B and vice versa unless an NF drops
    /// them). Turn offloads off first: `ethtool -K IF gro off gso off tso off tx off`.
    #[arg(long, value_name = "A[,B]", value_delimiter = ',', conflicts_with = "dpdk")]
    iface: Vec<String>,
    /// DPDK ports (an mbox built with `--features dpdk`, docs/dpdk.md): the EAL's arguments
    /// as one string, e.g. "-l 0 --no-huge -m 256 --no-pci --vdev=net_null0 --vdev=net_null1".
    #[arg(long, value_name = "EAL ARGS", requires = "ports", allow_hyphen_values = true)]
    dpdk: Option<String>,
    /// With --dpdk: port ids, `A` passive (read only) or `A,B` inline (frames from A leave
    /// through B and vice versa unless an NF drops them).
    #[arg(long, value_name = "A[,B]", value_delimiter = ',', requires = "dpdk")]
    ports: Vec<u16>,
    /// With --dpdk: end the input after N frames were received (as at the end of a capture).
    #[arg(long, value_name = "N", requires = "dpdk")]
    count: Option<u64>,
    /// With --dpdk: `zero-copy` receives frames straight into the shared packet pool (its
    /// buffers lent to DPDK as external mbuf buffers); `copy` copies each frame into it.
    #[arg(long = "dpdk-rx", value_name = "MODE", default_value = "zero-copy", value_parser = ["zero-copy", "copy"], requires = "dpdk")]
    dpdk_rx: String,
    /// With --dpdk: RX queues per port (default: one per shard in mode d, else 1); RSS with a
    /// symmetric key where the device has it.
    #[arg(long = "dpdk-queues", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=255), requires = "dpdk")]
    dpdk_queues: Option<u16>,
    /// With --dpdk, mode d: `queue` makes each frame's RX queue its shard (needs RSS and one
    /// queue per shard), `hash` hashes flows in software, `auto` takes queue where it holds;
    /// every fallback is printed.
    #[arg(long = "dpdk-shard", value_name = "HOW", default_value = "auto", value_parser = ["auto", "queue", "hash"], requires = "dpdk")]
    dpdk_shard: String,
    /// Stop after this many seconds (as on Ctrl-C: the chain drains and the run reports).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Option<f64>,
    /// With --iface: bytes per receive-ring block, a multiple of 4096 (default: the app's
    /// `[port] block_size`, else 262144); also the largest frame the ring takes.
    #[arg(long, value_name = "BYTES")]
    ring_block_size: Option<u32>,
    /// With --iface: blocks per receive ring, one ring per interface (default: the app's
    /// `[port] blocks`, else 64).
    #[arg(long, value_name = "N")]
    ring_blocks: Option<u32>,
    /// With --iface: a partly filled block is handed over after this many milliseconds, the
    /// most a frame waits in the kernel (default: the app's `[port] block_timeout_ms`, else 1).
    #[arg(long, value_name = "MS")]
    ring_timeout_ms: Option<u32>,
    /// Write emitted packets to this pcap file.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Put the NFs' output files whose path in the app file is relative (`output =
    /// "flows.jsonl"`) in this directory, created if missing; absolute paths stay. Default:
    /// the current directory.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Core map (TOML): actor name -> core id. Default: rx and the stacks on the first allowed
    /// CPU, NFs spread over the others, tx with the last NF.
    #[arg(long)]
    core_map: Option<PathBuf>,
    /// Write the full run report as JSON to this file.
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Shared-memory prefix (files /dev/shm/mbox.PREFIX.*, the control socket
    /// /dev/shm/mbox.PREFIX.ctl for `mbox ctl PREFIX`); default runPID.
    #[arg(long)]
    prefix: Option<String>,
    /// Reload FILE (a changed app file: new rules) from packet N on (repeatable;
    /// docs/reconfiguration.md). Live, use `mbox ctl PREFIX reload` or SIGHUP.
    #[arg(long = "reload-at", value_name = "N:FILE")]
    reload_at: Vec<microboxes::reconfig::ScheduledReload>,
    /// Execution mode: a (private stacks per NF), b (strictly sequential), c (asynchronous
    /// shared stack, the default), d (c with parallel NF groups).
    #[arg(long, default_value = "c")]
    mode: microboxes::Mode,
    /// Run this NF in its own OS process (`mbox nf`, attached to the run's shared memory);
    /// repeatable. Mode c.
    #[arg(long = "nf-process", value_name = "NAME")]
    nf_process: Vec<String>,
    /// Print nothing but errors (on stderr), whether the run succeeds or fails.
    #[arg(long, short)]
    quiet: bool,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// With --nf-process: an NF process that takes no event for this many seconds while
    /// events wait for it is killed and the run fails.
    #[arg(long, value_name = "SECS", default_value_t = microboxes::engine::NF_STALL_TIMEOUT.as_secs_f64(), value_parser = parse_secs)]
    nf_stall_timeout: f64,
    /// Record every actor's work and write it as Chrome Trace Event JSON (opens in Perfetto;
    /// draw it with `mbox trace render`).
    #[arg(long, value_name = "FILE.json")]
    trace: Option<PathBuf>,
    /// With --trace: keep at most this many spans per actor (the rest are counted as dropped).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, requires = "trace")]
    trace_limit: usize,
    /// With --trace: write only spans that start in this window, in ms from the run's first
    /// span: FROM..TO (TO excluded; either side may be left out).
    #[arg(long, value_name = "FROM..TO", requires = "trace", value_parser = microboxes::trace::export::Selection::parse_window_ms)]
    trace_window: Option<(f64, f64)>,
    /// With --trace: write only the spans of these packets (numbers in the input,
    /// inclusive): FROM..TO.
    #[arg(long, value_name = "FROM..TO", requires = "trace", value_parser = microboxes::trace::export::Selection::parse_packets)]
    trace_packets: Option<(u64, u64)>,
    /// Print one line of live statistics on stderr every SECS seconds (packets/s in and out,
    /// drops by reason, pool, fullest ring, kernel drops); not with --quiet.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    stats_interval: Option<f64>,
    /// Serve the live statistics in the Prometheus text format on http://ADDR:PORT/metrics
    /// while the run goes on (e.g. 127.0.0.1:9100).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Gen(a) => cmd_gen(a).map(|_| 0),
        Cmd::Run(a) => cmd_run(*a),
        Cmd::Streams(a) => cmd_streams(a).map(|_| 0),
        Cmd::Check(a) => cmd_check(a),
        Cmd::Nf(a) => cmd_nf(a).map(|_| 0),
        Cmd::Trace(TraceCmd::Render(a)) => cmd_trace_render(a).map(|_| 0),
        Cmd::Fig4(a) => cmd_fig4(a).map(|_| 0),
        Cmd::Shm(c) => cmd_shm(c).map(|_| 0),
        Cmd::Graph(a) => cmd_graph(a).map(|_| 0),
        Cmd::Ctl(a) => cmd_ctl(a),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("mbox: error: {}", error_text(&e));
            std::process::exit(1);
        }
    }
}

/// An error and its causes, each said once: a cause whose text is already part of the
/// message (errors that name their path and their OS error) is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for cause in e.chain() {
        let t = cause.to_string();
        if s.contains(&t) {
            continue;
        }
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&t);
    }
    s
}

fn cmd_shm(c: ShmCmd) -> Result<()> {
    use runtime::shm::owner::{self, State};
    match c {
        ShmCmd::List => {
            let files = owner::list().context("listing /dev/shm")?;
            if files.is_empty() {
                println!("no mbox.* files in /dev/shm");
                return Ok(());
            }
            let mut rows = vec![["file", "prefix", "size", "owner uid", "state"].map(String::from).to_vec()];
            for f in &files {
                let state = match &f.state {
                    State::Live(c) => format!("live (pid {} runs)", c.pid),
                    State::Dead(c) => format!("dead (pid {} has ended): `mbox shm clean` removes it", c.pid),
                    State::Other(why) => format!("not a region: {why}"),
                };
                let size = microboxes::report::human_bytes(f.size);
                rows.push(vec![f.path.display().to_string(), f.prefix.clone(), size, f.uid.to_string(), state]);
            }
            for line in microboxes::report::table(&rows, &[false, false, true, true, false]) {
                println!("{line}");
            }
        }
        ShmCmd::Clean { prefix } => {
            let cleaned = owner::clean(prefix.as_deref()).context("cleaning /dev/shm")?;
            for p in &cleaned.removed {
                println!("removed {}", p.display());
            }
            for (p, why) in &cleaned.kept {
                println!("kept {}: {why}", p.display());
            }
            println!("mbox shm clean: removed {} file(s), kept {}", cleaned.removed.len(), cleaned.kept.len());
        }
    }
    Ok(())
}

fn cmd_gen(a: GenArgs) -> Result<()> {
    let mut cfg = GenConfig { flows: a.flows, seed: a.seed, attacks: a.attacks, ..GenConfig::default() };
    if let Some(v) = a.udp_fraction {
        cfg.udp_fraction = v;
    }
    if let Some(v) = a.tls_fraction {
        cfg.tls_fraction = v;
    }
    if let Some(v) = a.ssh_fraction {
        cfg.ssh_fraction = v;
    }
    if let Some(v) = a.rst_fraction {
        cfg.rst_fraction = v;
    }
    if let Some(v) = a.ipv6_fraction {
        cfg.ipv6_fraction = v;
    }
    if let Some(v) = a.vlan_fraction {
        cfg.vlan_fraction = v;
    }
    if let Some(v) = a.requests_per_flow {
        cfg.requests_per_flow = v;
    }
    if let Some(v) = a.request_size {
        cfg.request_size = v;
    }
    if let Some((v, dist)) = a.response_size {
        (cfg.response_size, cfg.response_size_dist) = (v, dist);
    }
    for (v, field) in [(a.loss, &mut cfg.loss), (a.reorder, &mut cfg.reorder), (a.duplicate, &mut cfg.duplicate)] {
        if let Some(v) = v {
            *field = v;
        }
    }
    if let Some(v) = a.mss {
        cfg.mss = v;
    }
    if let Some(v) = a.concurrency {
        cfg.concurrency = v;
    }
    if let Err(e) = cfg.validate() {
        bail!("invalid generator options: {e}");
    }
    // The writer's errors name the file and the OS error.
    let mut w = PcapWriter::create(&a.output, LinkType::Ethernet).context("creating the capture")?;
    let summary = generate(&cfg, |ts, frame| w.write(ts, frame, frame.len() as u32)).context("writing the capture")?;
    w.finish().context("writing the capture")?;
    if let Some(m) = &a.manifest {
        let json = serde_json::to_string_pretty(&summary)?;
        std::fs::write(m, json).with_context(|| format!("writing {}", m.display()))?;
    }
    let tcp = summary.flows.iter().filter(|f| f.proto == "tcp").count();
    let apps = |app: GenApp| summary.flows.iter().filter(|f| f.app == app).count();
    let mix = if apps(GenApp::Tls) + apps(GenApp::Ssh) > 0 {
        format!(": {} HTTP, {} TLS, {} SSH", apps(GenApp::Http), apps(GenApp::Tls), apps(GenApp::Ssh))
    } else {
        String::new()
    };
    eprintln!(
        "mbox gen: wrote {} packets ({} bytes) in {} flows ({} TCP{mix}, {} UDP) to {}",
        summary.packets,
        summary.bytes,
        summary.flows.len(),
        tcp,
        summary.flows.len() - tcp,
        a.output.display()
    );
    if summary.lost + summary.reordered + summary.duplicated > 0 {
        eprintln!(
            "mbox gen: impaired TCP data segments: {} lost before the capture point (then retransmitted), {} reordered, {} duplicated",
            summary.lost, summary.reordered, summary.duplicated
        );
    }
    if a.attacks > 0 {
        eprintln!(
            "mbox gen: planted {} of {} attacks (apps/ids.rules sids 1000001-1000004){}",
            summary.attacks,
            a.attacks,
            if summary.attacks < a.attacks as u64 { "; too few HTTP flows for the rest" } else { "" }
        );
    }
    Ok(())
}

fn cmd_fig4(a: Fig4Args) -> Result<()> {
    let opts = microboxes::repro::fig4::Fig4Options { work_us: a.work_us, ..Default::default() };
    let runs = microboxes::repro::fig4::write_all(&a.output, &opts)?;
    for r in &runs {
        let placed: Vec<String> = r.placement.iter().map(|(c, n)| format!("core {c}: {}", n.join(" "))).collect();
        eprintln!(
            "mbox fig4: {:<30} {:>3} spans drawn · {}",
            microboxes::repro::fig4::title(r.mode),
            r.slices.len(),
            placed.join(" | ")
        );
    }
    eprintln!("mbox fig4: wrote {0}/fig4.html, {0}/fig4.svg and {0}/fig4-{{a,b,c,d}}.json", a.output.display());
    Ok(())
}

fn cmd_trace_render(a: TraceRenderArgs) -> Result<()> {
    use microboxes::trace::render::{render_to_file, Format, RenderOptions, Selection};
    Format::from_path(&a.output).map_err(|e| anyhow::anyhow!("{e}"))?;
    let spans = microboxes::trace::export::read_chrome_trace(&a.input).map_err(|e| anyhow::anyhow!("{e}"))?;
    let title = format!(
        "mbox trace: {}",
        a.input.file_name().map_or_else(|| a.input.display().to_string(), |n| n.to_string_lossy().into_owned())
    );
    let selection = Selection { window_us: a.window, packets: a.packets };
    let opts = RenderOptions { max_slices: a.max_slices, selection, ..RenderOptions::default() };
    let d = render_to_file(&spans, &title, &a.output, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sel = if selection.is_all() {
        String::new()
    } else {
        format!(" ({} selected: {})", d.selected, selection.describe())
    };
    if d.aggregated {
        eprintln!(
            "mbox trace render: {} of {} spans{sel} are more than --max-slices {}: drew each actor's utilisation \
             over time to {} (choose --window or --packets to see single spans)",
            d.selected,
            d.total,
            a.max_slices,
            a.output.display()
        );
    } else {
        eprintln!("mbox trace render: drew {} of {} spans{sel} to {}", d.slices, d.total, a.output.display());
    }
    Ok(())
}

fn cmd_nf(a: NfArgs) -> Result<()> {
    let mut app = App::load(&a.app).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(d) = &a.output_dir {
        microboxes::engine::resolve_outputs(&mut app, d);
    }
    if a.passive {
        app.set_passive();
    }
    let link = microboxes::engine::parse_link(&a.link).with_context(|| format!("unknown link type `{}`", a.link))?;
    let report =
        microboxes::engine::serve_nf(&app, &a.name, link, a.mode, &a.attach, &a.input_ring, &a.output_ring, a.core)
            .map_err(|e| anyhow::anyhow!("nf `{}`: {e}", a.name))?;
    let json = serde_json::to_string(&report)?;
    match &a.report {
        Some(p) if p.as_os_str() == "-" => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{json}").and_then(|_| out.flush()).context("writing the report to stdout")?;
        }
        Some(p) => {
            // `create_new` is O_CREAT|O_EXCL: it never follows a link, never opens a FIFO.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p)
                .with_context(|| format!("creating the report file {} (it must not exist yet)", p.display()))?;
            f.write_all(json.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
        }
        None => {}
    }
    if let Some(e) = &report.error {
        bail!("nf `{}`: {e}", a.name);
    }
    Ok(())
}

/// The app file's warnings ([`App::warnings`]), on stderr unless `quiet`.
fn print_warnings(app: &App, quiet: bool) {
    for w in app.warnings.iter().filter(|_| !quiet) {
        eprintln!("mbox: warning: {w}");
    }
}

fn cmd_graph(a: GraphArgs) -> Result<()> {
    let app = App::load(&a.app).map_err(|e| anyhow::anyhow!("{e}"))?;
    let g = microboxes::graph::graph(&app).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let mut out = std::io::stdout().lock();
    let text = if a.dot { g.to_dot() } else { g.to_text() };
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).context("writing the graph to stdout")?;
    Ok(())
}

fn cmd_ctl(a: CtlArgs) -> Result<i32> {
    let v = microboxes::control::request(&a.prefix, &a.request, std::time::Duration::from_secs_f64(a.timeout))
        .map_err(anyhow::Error::msg)?;
    let ok = v["ok"].as_bool().unwrap_or(false);
    let mut out = std::io::stdout().lock();
    let text = match (a.request.as_str(), a.json, ok) {
        ("graph", false, true) => v[if a.dot { "dot" } else { "text" }].as_str().unwrap_or_default().to_string(),
        _ => format!("{}\n", serde_json::to_string_pretty(&v)?),
    };
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).context("writing to stdout")?;
    if !ok {
        eprintln!("mbox ctl: error: {}", v["error"].as_str().unwrap_or("the run said no"));
    }
    Ok(if ok { 0 } else { 1 })
}

fn cmd_check(a: CheckArgs) -> Result<i32> {
    let app = App::load(&a.app).map_err(|e| anyhow::anyhow!("{e}"))?;
    print_warnings(&app, a.quiet);
    let opts = microboxes::check::CheckOptions {
        modes: a.modes,
        single_core: a.single_core,
        work_dir: a.work_dir,
        fault: None,
        progress: !a.quiet,
        reloads: a.reload_at.clone(),
    };
    let report = microboxes::check::check(&app, &a.input, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !a.quiet || !report.consistent() {
        print!("{}", report.to_text());
    }
    Ok(if report.consistent() { 0 } else { 3 })
}

fn cmd_streams(a: StreamsArgs) -> Result<()> {
    let mut opts = microboxes::streams::StreamsOptions {
        dump: a.dump.clone(),
        single_thread: match a.threads {
            Some(n) => n == 1,
            None => std::thread::available_parallelism().map_or(true, |n| n.get() < 2),
        },
        ..Default::default()
    };
    opts.flows.max_flows = usize::try_from(a.max_flows).unwrap_or(usize::MAX);
    let mut out = std::io::stdout().lock();
    // Its errors name the capture: no context to add.
    let (report, written) = if a.json {
        let report = microboxes::streams::streams(&a.input, opts)?;
        let w = writeln!(out, "{}", serde_json::to_string_pretty(&report)?);
        (report, w)
    } else {
        // Lines as connections end (memory bounded by --max-flows, not by the capture).
        let mut w = Ok(());
        let report = microboxes::streams::streams_each(&a.input, opts, &mut |c| {
            if w.is_ok() {
                w = writeln!(out, "{}", c.line());
            }
            Ok(())
        })?;
        (report, w)
    };
    match written {
        // `mbox streams x.pcap | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing to stdout")?,
    }
    if let Some(n) = report.eviction_note() {
        eprintln!("mbox streams: {n}");
    }
    if !a.json {
        let malformed: u64 = report.malformed.values().sum();
        eprintln!(
            "mbox streams: {} packets, {} TCP connections, {} non-TCP frames, {} malformed; peak reassembly memory {} B",
            report.packets,
            report.connections_seen,
            report.non_tcp,
            malformed,
            report.memory_high_water
        );
    }
    if let Some(w) = &report.warning {
        eprintln!("mbox streams: warning: {w}");
    }
    Ok(())
}

/// Ctrl-C and SIGTERM: drain and report (a second one quits at once); SIGHUP: reload the
/// app file (docs/reconfiguration.md). Signals are taken on a thread of their own
/// (`signal-hook`), never in a handler.
fn signals(stop: Arc<AtomicBool>, reload: Arc<AtomicBool>, prefix: String) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing the signal handlers")?;
    let presses = AtomicU32::new(0);
    std::thread::Builder::new()
        .name("mbox-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    reload.store(true, Ordering::SeqCst);
                } else if presses.fetch_add(1, Ordering::SeqCst) == 0 {
                    eprintln!("\nmbox: interrupted — draining the chain (press Ctrl-C again to quit at once)");
                    stop.store(true, Ordering::SeqCst);
                } else {
                    let _ = runtime::shm::owner::clean_own(&prefix);
                    let _ = std::fs::remove_file(microboxes::control::socket_path(&prefix));
                    std::process::exit(130);
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

fn cmd_run(a: RunArgs) -> Result<i32> {
    let mut app = App::load(&a.app).map_err(|e| anyhow::anyhow!("{e}"))?;
    let core_map = match &a.core_map {
        Some(p) => Some(CoreMap::load(p).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    if let Some(d) = &a.output_dir {
        std::fs::create_dir_all(d)
            .with_context(|| format!("--output-dir {}: cannot create the directory", d.display()))?;
        microboxes::engine::resolve_outputs(&mut app, d);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let prefix = a.prefix.clone().unwrap_or_else(|| format!("run{}", std::process::id()));
    let reload_signal = Arc::new(AtomicBool::new(false));
    signals(stop.clone(), reload_signal.clone(), prefix.clone())?;

    let input = a.input.clone().unwrap_or_default();
    let mut opts = RunOptions::new(&input);
    if a.iface.is_empty() && (a.ring_block_size.is_some() || a.ring_blocks.is_some() || a.ring_timeout_ms.is_some()) {
        bail!("--ring-block-size, --ring-blocks and --ring-timeout-ms size the receive rings of --iface; they need --iface");
    }
    if !a.iface.is_empty() {
        // The app's `[port]` table, each flag overriding its key.
        opts.live = Some(microboxes::engine::LiveOptions {
            ifaces: a.iface.clone(),
            ring: app.port.ring_with(a.ring_block_size, a.ring_blocks, a.ring_timeout_ms),
        });
    }
    if let Some(eal_args) = &a.dpdk {
        opts.dpdk = Some(microboxes::engine::DpdkOptions {
            eal_args: eal_args.clone(),
            ports: a.ports.clone(),
            count: a.count,
            copy: a.dpdk_rx == "copy",
            queues: a.dpdk_queues.unwrap_or(0),
            shard: a.dpdk_shard.clone(),
        });
    }
    opts.duration = a.duration.map(std::time::Duration::from_secs_f64);
    opts.output = a.output.clone();
    opts.output_dir = a.output_dir.clone();
    opts.core_map = core_map;
    opts.prefix = Some(prefix);
    opts.stop = stop.clone();
    opts.reloads = a.reload_at.clone();
    opts.app_file = Some(a.app.clone());
    opts.control = true;
    opts.reload_signal = Some(reload_signal);
    opts.mode = a.mode;
    if let (false, Some(note)) = (a.quiet, app.parallel_note(a.mode)) {
        eprintln!("mbox: note: {note}");
    }
    print_warnings(&app, a.quiet);
    opts.external = a.nf_process.clone();
    opts.nf_stall_timeout = std::time::Duration::from_secs_f64(a.nf_stall_timeout);
    opts.trace = a.trace.as_ref().map(|_| a.trace_limit);
    let interval = a.stats_interval.filter(|_| !a.quiet).map(std::time::Duration::from_secs_f64);
    // The bar would redraw over the interval lines; a live port has no end to show.
    if !a.no_progress && !a.quiet && interval.is_none() && a.iface.is_empty() && a.dpdk.is_none() {
        opts.progress = microboxes::report::progress_bar(&input);
    }
    let metrics = match &a.metrics {
        Some(addr) => Some(microboxes::live_stats::MetricsServer::bind(addr).map_err(anyhow::Error::msg)?),
        None => None,
    };
    if let (false, Some(m)) = (a.quiet, &metrics) {
        eprintln!("mbox: serving live metrics on http://{}/metrics", m.local_addr());
    }
    if interval.is_some() || metrics.is_some() {
        opts.live_stats = Some(microboxes::live_stats::Monitor::new(interval, metrics).into_fn());
    }

    let mut report = microboxes::run(&app, opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let (Some(p), Some(t)) = (&a.trace, &report.trace) {
        let sel = microboxes::trace::export::Selection { window_us: a.trace_window, packets: a.trace_packets };
        let written = microboxes::trace::export::write_chrome_trace_selected(p, t, &sel)
            .with_context(|| format!("writing {}", p.display()))?;
        report.files.push(microboxes::report::FileLine {
            path: p.display().to_string(),
            written_by: "mbox".into(),
            what: format!("trace (--trace), {written} spans"),
            bytes: std::fs::metadata(p).ok().map(|m| m.len()),
            lines: None,
            packets: None,
        });
        if !a.quiet {
            let of = if sel.is_all() {
                String::new()
            } else {
                format!(" of {} recorded ({})", t.spans.len(), sel.describe())
            };
            let dropped = if t.dropped > 0 {
                format!(
                    "; {} dropped at the limit of {} per actor: raise --trace-limit to keep more",
                    t.dropped, a.trace_limit
                )
            } else {
                String::new()
            };
            println!("mbox run: wrote {written} spans{of} to {}{dropped}", p.display());
        }
    }
    if let Some(p) = &a.stats_json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
        report.files.push(microboxes::report::FileLine {
            path: p.display().to_string(),
            written_by: "mbox".into(),
            what: "run report (--stats-json)".into(),
            bytes: std::fs::metadata(p).ok().map(|m| m.len()),
            lines: None,
            packets: None,
        });
    }
    if !a.quiet {
        print!("{}", report.summary());
    }
    if !report.ok() {
        let errors: Vec<String> = report.errors.iter().map(|e| format!("\n  {e}")).collect();
        bail!("the run had {} error(s):{}", report.errors.len(), errors.concat());
    }
    Ok(if report.interrupted { 130 } else { 0 })
}

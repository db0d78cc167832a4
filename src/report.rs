//! The run report: what `mbox run` prints and what `--stats-json` writes.
//!
//! The JSON form is the [`RunReport`] struct serialized as is; its field names are the
//! stable interface for scripts (documented in the README; fields are added, never renamed).
//! The text form ([`RunReport::summary`]) is for people: packets in / out / dropped by
//! reason, events per actor with a legend, ring back-pressure, pool balance, core placement,
//! every file written, and every warning — in aligned columns with units. Errors are not part
//! of the summary: `mbox run` prints them once, on stderr ([`RunReport::to_text`] appends them
//! for callers that want one text).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use runtime::executor::CoreReport;
use runtime::pool::PoolStats;
use runtime::ring::RingStats;
use serde::Serialize;

/// Packets (or events) dropped by one actor for one reason.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DropLine {
    /// The actor.
    pub actor: String,
    /// Its reason.
    pub reason: String,
    /// How many.
    pub packets: u64,
}

/// The TCP resets that `reject` matches asked for (`EVENT/IDS_REJECT`, two per match: one to
/// each end of the flow; docs/live.md).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ResetLine {
    /// Reject events that reached TX.
    pub rejects: u64,
    /// Resets sent on a live interface (inline runs).
    pub rst_sent: u64,
    /// Resets only written to the `-o` capture (offline or passive runs).
    pub rst_captured: u64,
    /// Resets neither sent nor written.
    pub rst_not_sent: u64,
    /// Why the last unsent ones were not sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
}

/// One actor's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct ActorSummary {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Core it ran on.
    pub core: Option<usize>,
    /// Events handled, by type name.
    pub handled: BTreeMap<String, u64>,
    /// All events handled.
    pub handled_total: u64,
    /// Events passed through without handling.
    pub passed: u64,
    /// Events published.
    pub published: u64,
    /// Drop verdicts by reason.
    pub drops: BTreeMap<String, u64>,
    /// Polls that found the next ring full.
    pub stalls: u64,
    /// Actor-specific counters.
    pub counters: BTreeMap<String, u64>,
    /// Events lost in this NF's failures (docs/running.md, "NF failures").
    pub events_lost_in_failure: u64,
}

/// One live interface's receive ring, as the kernel counts it (`PACKET_STATISTICS`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PortLine {
    /// The interface.
    pub iface: String,
    /// Frames the kernel passed to the port's socket, those it dropped included (`tp_packets`).
    pub tp_packets: u64,
    /// Frames the kernel dropped because the receive ring was full (`tp_drops`): they never
    /// reached `rx` and are not in `packets_in`.
    pub tp_drops: u64,
    /// Times the ring was frozen full (`tp_freeze_q_cnt`).
    pub tp_freeze_q_cnt: u64,
    /// Frames whose checksum a local sender's TX offload had not filled in.
    pub csum_not_ready: u64,
}

/// One ring between two stages.
#[derive(Clone, Debug, Serialize)]
pub struct RingLine {
    /// `"from -> to"`.
    pub link: String,
    /// Its counters.
    #[serde(flatten)]
    pub stats: RingStats,
}

/// A file the run wrote.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FileLine {
    /// Its path, as given (relative paths are relative to the current directory).
    pub path: String,
    /// Who wrote it: an NF's name, `tx` (the `-o` capture), `mbox` (`--trace`).
    pub written_by: String,
    /// What it is: `flow_stats output`, `output capture (-o)`, `trace (--trace)`.
    pub what: String,
    /// Its size after the run (`None` when it could not be read).
    pub bytes: Option<u64>,
    /// Lines in it (JSON-lines outputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
    /// Packets in it (the `-o` capture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
}

/// Everything a run reports.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// App file.
    pub app: String,
    /// Input capture.
    pub input: String,
    /// Its size.
    pub input_bytes: Option<u64>,
    /// Output capture.
    pub output: Option<String>,
    /// Frames read.
    pub packets_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Frames emitted.
    pub packets_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Frames written to the output file.
    pub packets_written: u64,
    /// Frames dropped (sum of `dropped`).
    pub packets_dropped: u64,
    /// Drops by actor and reason.
    pub dropped: Vec<DropLine>,
    /// Non-packet events whose propagation an actor ended.
    pub event_drops: Vec<DropLine>,
    /// TCP resets for `reject` matches.
    pub resets: ResetLine,
    /// A live run's interfaces and their kernel ring counters (empty for a capture file).
    pub ports: Vec<PortLine>,
    /// A DPDK run's ports and their `rte_eth_stats` counters (docs/dpdk.md); absent otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dpdk_ports: Vec<crate::engine::DpdkPortLine>,
    /// A DPDK run's receive mode, shard choice, set-up notes and zero-copy books; absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpdk: Option<crate::engine::DpdkRunLine>,
    /// RX polls that waited for a free buffer.
    pub rx_pool_stalls: u64,
    /// RX polls that waited for ring room.
    pub rx_ring_stalls: u64,
    /// RX polls that waited because enough packets were in flight (pacing, `actors::io`).
    pub rx_paced: u64,
    /// Times RX raised its pacing limit because no buffer came back for 1 ms.
    pub rx_pace_raised: u64,
    /// Per-actor numbers, chain order.
    pub actors: Vec<ActorSummary>,
    /// Per-ring numbers, chain order.
    pub rings: Vec<RingLine>,
    /// Pool counters.
    pub pool: PoolStats,
    /// allocated == freed and nothing in use.
    pub pool_balanced: bool,
    /// Executor threads.
    pub cores: Vec<CoreReport>,
    /// Controller links.
    pub links: Vec<String>,
    /// Wall time.
    pub elapsed_s: f64,
    /// Input packets per second of wall time.
    pub packets_per_s: f64,
    /// The process's peak resident memory (`VmHWM`), when `/proc` tells: NF processes
    /// (`--nf-process`) are not included.
    pub peak_rss_bytes: Option<u64>,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
    /// Reloads, accepted and refused (docs/reconfiguration.md).
    pub reconfigurations: Vec<crate::reconfig::Reconfiguration>,
    /// Things to know.
    pub warnings: Vec<String>,
    /// Things that went wrong (the command exits non-zero).
    pub errors: Vec<String>,
    /// The recorded trace (with `--trace`); written separately, not part of the stats JSON.
    #[serde(skip)]
    pub trace: Option<runtime::trace::TraceData>,
    /// Execution mode.
    pub mode: String,
    /// Every file the run wrote: NF outputs, the `-o` capture, the trace.
    pub files: Vec<FileLine>,
    /// NFs that ran in their own process: (name, pid).
    pub nf_processes: Vec<(String, u32)>,
    /// Every NF failure the run contained or stopped at, in the order they happened per NF
    /// (docs/running.md, "NF failures").
    pub failures: Vec<actors::supervise::Failure>,
    /// Packet-buffer references a dead NF process held, released at the end of the run.
    pub buffers_reclaimed: u64,
    /// With observation on: every NF's log, by NF name.
    #[serde(skip)]
    pub observations: BTreeMap<String, Vec<String>>,
    /// With observation on: every packet's fate, in the order it left the chain.
    #[serde(skip)]
    pub emitted: Vec<Emitted>,
}

/// A packet's fate at the end of the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emitted {
    /// Its number in the input.
    pub seq: u64,
    /// Its flow's canonical name (first packet's number), 0 for none.
    pub flow: u64,
    /// `"actor: reason"` when dropped.
    pub dropped: Option<String>,
}

impl RunReport {
    /// True when nothing went wrong.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The human summary and then every error (`error: ...` lines).
    pub fn to_text(&self) -> String {
        let mut s = self.summary();
        for e in &self.errors {
            let _ = writeln!(s, "error: {e}");
        }
        s
    }

    /// The human summary: everything but the errors (`mbox run` prints it on stdout, the
    /// errors on stderr).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "mbox run: {} on {} (mode {})", self.app, self.input, self.mode);
        let _ = writeln!(
            s,
            "  packets: {} in, {} out, {} dropped   ({} in, {} out; {}, {:.0} packets/s)",
            self.packets_in,
            self.packets_out,
            self.packets_dropped,
            human_bytes(self.bytes_in),
            human_bytes(self.bytes_out),
            human_duration(self.elapsed_s),
            self.packets_per_s
        );
        if let Some(rss) = self.peak_rss_bytes {
            let _ = writeln!(s, "  memory: peak resident {} (VmHWM)", human_bytes(rss));
        }
        for d in &self.dropped {
            let _ = writeln!(s, "  dropped by {}: {}: {}", d.actor, d.reason, d.packets);
        }
        for d in &self.event_drops {
            let _ = writeln!(s, "  events stopped by {}: {}: {}", d.actor, d.reason, d.packets);
        }
        self.failures_text(&mut s);
        for r in &self.reconfigurations {
            let from =
                r.from_packet.map_or_else(|| "no packet came after it".to_string(), |n| format!("from packet {n}"));
            if r.accepted {
                let _ = writeln!(
                    s,
                    "  reload ({}, {:.3} s): generation {} from {}, {from}: {}",
                    r.trigger,
                    r.requested_at_s,
                    r.generation,
                    r.file,
                    if r.changes.is_empty() { "nothing changed".to_string() } else { r.changes.join("; ") }
                );
            } else {
                let _ = writeln!(
                    s,
                    "  reload ({}, {:.3} s) of {} refused, nothing changed: {}",
                    r.trigger,
                    r.requested_at_s,
                    r.file,
                    r.errors.join("; ")
                );
            }
        }
        for p in &self.ports {
            let _ = writeln!(
                s,
                "  port {}: {} frames from the kernel; kernel ring drops: {} (tp_drops), {} ring freezes (tp_freeze_q_cnt)",
                p.iface, p.tp_packets, p.tp_drops, p.tp_freeze_q_cnt
            );
        }
        if let Some(d) = &self.dpdk {
            let _ = write!(s, "  dpdk: receive {}, shards by {}", d.rx_mode, d.shard_by);
            if d.rx_mode == "zero-copy" {
                let _ = write!(
                    s,
                    "; {} frames received into the pool, {} copied, {} lost; {} of {} lent mbufs back in DPDK's mempool",
                    d.zero_copy_frames, d.copied_frames, d.lost_frames, d.mempool_free_mbufs, d.lent_buffers
                );
            }
            let _ = writeln!(s);
            for n in &d.notes {
                let _ = writeln!(s, "  {n}");
            }
        }
        for p in &self.dpdk_ports {
            let _ = writeln!(
                s,
                "  dpdk port {}: {} frames in, {} out; imissed {}, ierrors {}, rx_nombuf {}, oerrors {}; {} RX queue(s){}",
                p.port,
                p.counters.ipackets,
                p.counters.opackets,
                p.counters.imissed,
                p.counters.ierrors,
                p.counters.rx_nombuf,
                p.counters.oerrors,
                p.rx_queues,
                if p.rss { ", RSS" } else { "" }
            );
            if p.counters.queues.len() > 1 {
                for (q, c) in p.counters.queues.iter().enumerate() {
                    let _ =
                        writeln!(s, "    queue {q}: {} frames, {} bytes, {} errors", c.ipackets, c.ibytes, c.errors);
                }
            }
        }
        let r = &self.resets;
        if r.rejects > 0 {
            let why = r.why_not.as_ref().map_or_else(String::new, |w| format!(" ({w})"));
            let _ = writeln!(
                s,
                "  reject: {} match(es), TCP resets: {} sent (rst_sent), {} written to the capture only, {} not sent{why}",
                r.rejects, r.rst_sent, r.rst_captured, r.rst_not_sent
            );
        }
        self.actors_text(&mut s);
        self.rings_text(&mut s);
        let _ = writeln!(
            s,
            "  pool: {} buffers of {}; {} allocated, {} freed, {} in use: {}",
            self.pool.buffers,
            human_bytes(self.pool.buf_size),
            self.pool.allocated,
            self.pool.freed,
            self.pool.in_use,
            if self.pool_balanced { "balanced" } else { "NOT BALANCED" }
        );
        if self.pool.lent > 0 {
            let _ = writeln!(
                s,
                "  pool: {} lent to the DPDK devices, {} came back holding a frame, {} unused at the end",
                self.pool.lent, self.pool.adopted, self.pool.returned
            );
        }
        if self.buffers_reclaimed > 0 {
            let _ = writeln!(
                s,
                "  pool: {} buffer reference(s) held by dead NF processes were reclaimed at the end",
                self.buffers_reclaimed
            );
        }
        for c in &self.cores {
            let idle = if c.elapsed_ms > 0.0 { (c.idle_ms / c.elapsed_ms * 100.0).clamp(0.0, 100.0) } else { 0.0 };
            let _ = writeln!(
                s,
                "  core {}: {} (thread {}, affinity {}; waited for work {:.0} % of {:.2} s; {:.2} s CPU)",
                c.core,
                c.actors.join(", "),
                c.tid,
                runtime::sys::format_cpu_list(&c.affinity),
                idle,
                c.elapsed_ms / 1e3,
                c.cpu_ms / 1e3
            );
        }
        for (n, pid) in &self.nf_processes {
            let _ = writeln!(s, "  nf `{n}` ran in its own process (pid {pid}), attached to the shared memory");
        }
        self.files_text(&mut s);
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }

    /// One line per NF failure: what, when, the policy applied and what was lost.
    fn failures_text(&self, s: &mut String) {
        for f in &self.failures {
            let at = match (f.seq, f.ts_ns) {
                (Some(seq), Some(ts)) => format!("at packet {seq} (capture time {})", clock(ts / 1_000_000)),
                (Some(seq), None) => format!("at packet {seq}"),
                _ => "before any packet".to_string(),
            };
            let who = match (f.pid, f.new_pid) {
                (Some(p), Some(n)) => format!(" (pid {p}; pid {n} took over)"),
                (Some(p), None) => format!(" (pid {p})"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "  NF failure: `{}`{who} {}: {} — {at}, {} UTC; on_failure = {}; {} event(s) lost ({} packet(s))",
                f.nf,
                if f.what == "panic" { "panicked" } else { "died" },
                f.message,
                clock(f.unix_ms),
                f.policy,
                f.events_lost,
                f.packets_lost
            );
        }
    }

    /// The actors' table with its legend; NF counters are shown even when 0 for NFs that
    /// write a file (an empty output then explains itself), other zero counters are hidden.
    fn actors_text(&self, s: &mut String) {
        let _ = writeln!(s, "  actors:");
        let _ = writeln!(s, "    handled: events it processed · published: events it sent on · passed: events it");
        let _ =
            writeln!(s, "    forwarded without handling (not subscribed) · stalls: waits for room in the next ring");
        let mut rows = vec![row(&["name", "kind", "core", "handled", "published", "passed", "stalls"])];
        for a in &self.actors {
            let core = a.core.map_or("-".to_string(), |c| c.to_string());
            rows.push(vec![
                a.name.clone(),
                a.kind.clone(),
                core,
                a.handled_total.to_string(),
                a.published.to_string(),
                a.passed.to_string(),
                a.stalls.to_string(),
            ]);
        }
        let lines = table(&rows, &[false, false, true, true, true, true, true]);
        let _ = writeln!(s, "    {}", lines[0]);
        for (a, line) in self.actors.iter().zip(&lines[1..]) {
            let _ = writeln!(s, "    {line}");
            let handled = a.handled.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ");
            if !handled.is_empty() {
                let _ = writeln!(s, "      events: {handled}");
            }
            let writes = self.files.iter().any(|f| f.written_by == a.name);
            let counters: Vec<String> =
                a.counters.iter().filter(|(_, v)| writes || **v > 0).map(|(k, v)| format!("{k} {v}")).collect();
            if !counters.is_empty() {
                let _ = writeln!(s, "      counters: {}", counters.join(", "));
            }
        }
    }

    /// The rings' table (columns sized to the longest ring name).
    fn rings_text(&self, s: &mut String) {
        let _ = writeln!(s, "  rings (back-pressure: a full ring makes the producer wait; nothing is dropped):");
        let mut rows = vec![row(&["ring", "capacity", "enqueued", "full", "high-water"])];
        for r in &self.rings {
            rows.push(vec![
                r.link.clone(),
                r.stats.capacity.to_string(),
                r.stats.enqueued.to_string(),
                r.stats.full_events.to_string(),
                r.stats.high_water.to_string(),
            ]);
        }
        for line in table(&rows, &[false, true, true, true, true]) {
            let _ = writeln!(s, "    {line}");
        }
        if self.rx_pool_stalls + self.rx_ring_stalls + self.rx_paced > 0 {
            let _ = writeln!(
                s,
                "    rx waited: {} times for a buffer, {} times for ring room, {} times for packets in flight to leave (pacing; limit raised {} times after 1 ms without a freed buffer)",
                self.rx_pool_stalls, self.rx_ring_stalls, self.rx_paced, self.rx_pace_raised
            );
        }
    }

    /// Every file written: path, size, lines or packets, and who wrote it.
    fn files_text(&self, s: &mut String) {
        if self.files.is_empty() {
            let _ = writeln!(s, "  files written: none");
            return;
        }
        let _ = writeln!(s, "  files written:");
        let rows: Vec<Vec<String>> = self
            .files
            .iter()
            .map(|f| {
                let count = match (f.lines, f.packets) {
                    (_, Some(p)) => format!("{p} packets"),
                    (Some(l), None) => format!("{l} lines"),
                    (None, None) => String::new(),
                };
                let size = f.bytes.map_or_else(|| "missing".to_string(), human_bytes);
                vec![f.path.clone(), count, size, format!("{}, by {}", f.what, f.written_by)]
            })
            .collect();
        for line in table(&rows, &[false, true, true, false]) {
            let _ = writeln!(s, "    {line}");
        }
    }
}

/// A table row from string slices.
fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Rows laid out in columns as wide as their widest cell (two spaces apart); `right[i]`
/// right-aligns column `i`. Trailing spaces are trimmed.
pub fn table(rows: &[Vec<String>], right: &[bool]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|x| x.chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(c, x)| {
                    if right.get(c).copied().unwrap_or(false) {
                        format!("{x:>w$}", w = width[c])
                    } else {
                        format!("{x:<w$}", w = width[c])
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

/// `bytes` for people: `512 B`, `45.6 kB`, `1.2 MB`, `3.40 GB` (powers of 1000).
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=999 => format!("{bytes} B"),
        1_000..=999_999 => format!("{:.1} kB", b / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

/// Seconds for people: `850 ms` below a second, `12.34 s` above.
pub fn human_duration(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

/// A progress bar on stderr for reading `input`, when stderr is a terminal and the input is
/// large enough (32 MiB) to take a while; `None` otherwise.
pub fn progress_bar(input: &std::path::Path) -> Option<crate::engine::ProgressFn> {
    use std::io::IsTerminal as _;
    use std::sync::atomic::Ordering;
    let total = std::fs::metadata(input).map(|m| m.len()).unwrap_or(0);
    if !std::io::stderr().is_terminal() || total < 32 << 20 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(Box::new(move |p: &actors::io::RxProgress| {
        bar.set_position(p.bytes.load(Ordering::Relaxed));
        bar.set_message(format!("{} packets", p.packets.load(Ordering::Relaxed)));
        if p.bytes.load(Ordering::Relaxed) >= total {
            bar.finish_and_clear();
        }
    }))
}

/// `HH:MM:SS.mmm` (UTC) of a time in ms since the epoch.
fn clock(ms: u64) -> String {
    let (s, ms) = (ms / 1000, ms % 1000);
    format!("{:02}:{:02}:{:02}.{ms:03}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

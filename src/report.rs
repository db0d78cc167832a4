//! The run report: what `mbox run` prints and what `--stats-json` writes.
//!
//! The JSON form is the [`RunReport`] struct serialized as is; its field names are the
//! stable interface for scripts (documented in the README). The text form is a summary for
//! people: packets in / out / dropped by reason, events per actor, ring back-pressure, pool
//! balance, core placement, and every warning and error.

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
    /// RX polls that waited for a free buffer.
    pub rx_pool_stalls: u64,
    /// RX polls that waited for ring room.
    pub rx_ring_stalls: u64,
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
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
    /// Things to know.
    pub warnings: Vec<String>,
    /// Things that went wrong (the command exits non-zero).
    pub errors: Vec<String>,
    /// The recorded trace (with `--trace`); written separately, not part of the stats JSON.
    #[serde(skip)]
    pub trace: Option<runtime::trace::TraceData>,
    /// Execution mode.
    pub mode: String,
    /// NFs that ran in their own process: (name, pid).
    pub nf_processes: Vec<(String, u32)>,
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

    /// The human summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "mbox run: {} on {}", self.app, self.input);
        let _ = writeln!(
            s,
            "  packets: {} in, {} out, {} dropped   ({:.2} s, {:.0} packets/s)",
            self.packets_in, self.packets_out, self.packets_dropped, self.elapsed_s, self.packets_per_s
        );
        if let Some(o) = &self.output {
            let _ = writeln!(s, "  output: {} packets written to {o}", self.packets_written);
        }
        for d in &self.dropped {
            let _ = writeln!(s, "  dropped by {}: {}: {}", d.actor, d.reason, d.packets);
        }
        for d in &self.event_drops {
            let _ = writeln!(s, "  events stopped by {}: {}: {}", d.actor, d.reason, d.packets);
        }
        let _ = writeln!(s, "  actors:");
        for a in &self.actors {
            let core = a.core.map_or("-".to_string(), |c| c.to_string());
            let handled = a.handled.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ");
            let _ = writeln!(
                s,
                "    {:<12} {:<11} core {:<3} handled {:>9}  published {:>7}  passed {:>7}  stalls {}",
                a.name, a.kind, core, a.handled_total, a.published, a.passed, a.stalls
            );
            if !handled.is_empty() {
                let _ = writeln!(s, "      events: {handled}");
            }
            let counters: Vec<String> =
                a.counters.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k} {v}")).collect();
            if !counters.is_empty() {
                let _ = writeln!(s, "      counters: {}", counters.join(", "));
            }
        }
        let _ = writeln!(s, "  rings (back-pressure: a full ring makes the producer wait; nothing is dropped):");
        for r in &self.rings {
            let _ = writeln!(
                s,
                "    {:<24} capacity {:<6} enqueued {:>9}  full {:>6}  high-water {}",
                r.link, r.stats.capacity, r.stats.enqueued, r.stats.full_events, r.stats.high_water
            );
        }
        if self.rx_pool_stalls + self.rx_ring_stalls > 0 {
            let _ = writeln!(
                s,
                "    rx waited: {} times for a buffer, {} times for ring room",
                self.rx_pool_stalls, self.rx_ring_stalls
            );
        }
        let _ = writeln!(
            s,
            "  pool: {} buffers of {} B; {} allocated, {} freed, {} in use: {}",
            self.pool.buffers,
            self.pool.buf_size,
            self.pool.allocated,
            self.pool.freed,
            self.pool.in_use,
            if self.pool_balanced { "balanced" } else { "NOT BALANCED" }
        );
        for c in &self.cores {
            let _ = writeln!(
                s,
                "  core {}: {} (thread {}, affinity {})",
                c.core,
                c.actors.join(", "),
                c.tid,
                runtime::sys::format_cpu_list(&c.affinity)
            );
        }
        for (n, pid) in &self.nf_processes {
            let _ = writeln!(s, "  nf `{n}` ran in its own process (pid {pid}), attached to the shared memory");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        for e in &self.errors {
            let _ = writeln!(s, "error: {e}");
        }
        s
    }
}

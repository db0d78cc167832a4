//! Step 7 of a run: the report. Collects RX's, TX's and every stage's report, the rings'
//! and the pool's counters, and the trace (every actor's spans, mode a's private chains'
//! inner spans as `chain/actor`), and checks the books: every packet read is either emitted
//! or dropped with a reason, and the pool balances. A mismatch is an error in the report,
//! never a footnote.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use actors::controller::Plan;
use actors::event::EventRegistry;
use actors::io::{RxReport, TxReport};
use actors::private::InnerTraceSlot;
use actors::stage::StageReport;
use runtime::coremap::Placement;
use runtime::executor::CoreReport;
use runtime::pool::PoolView;
use runtime::ring::{self, RingStats};
use runtime::shm::Region;
use runtime::trace::{Span, TraceActor, TraceData};

use super::layout::{shm_name, Layout};
use super::wire::Slots;
use super::{take, Logs, RunOptions};
use crate::app::App;
use crate::report::{ActorSummary, DropLine, FileLine, RunReport};

/// Everything a finished run leaves behind.
pub(super) struct Finished<'a> {
    pub app: &'a App,
    pub opts: &'a RunOptions,
    pub plan: &'a Plan,
    pub registry: &'a EventRegistry,
    pub placement: &'a Placement,
    pub layout: &'a Layout,
    /// The run's region: unlinked here, once the rings' and the pool's counters are read.
    pub region: Arc<Region>,
    pub pool: PoolView,
    pub slots: Slots,
    /// The NFs added while the run went on (`guests.rs`): their reports and plans.
    pub guests: Vec<(StageReport, actors::controller::PlannedActor)>,
    pub inner_traces: &'a [(String, InnerTraceSlot)],
    pub logs: Option<Logs>,
    pub cores: Vec<CoreReport>,
    pub nf_processes: Vec<(String, u32)>,
    pub started: Instant,
    pub total_bytes: Option<u64>,
    /// `--duration` ended the run (not an interruption).
    pub duration_ended: bool,
}

/// The run's report: takes every report out of its slot, the trace, the rings' and the
/// pool's counters, then releases the region and checks the books ([`assemble`]).
pub(super) fn finish(f: Finished<'_>) -> RunReport {
    let mut rx = take(&f.slots.rx);
    let mut tx = take(&f.slots.tx);
    let mut stages: Vec<StageReport> = f.slots.stages.iter().map(take).collect();
    let trace = f
        .opts
        .trace
        .map(|_| collect_trace(f.plan, f.registry, f.placement, &mut rx, &mut tx, &mut stages, f.inner_traces));
    // The NFs added while the run went on: their reports after the chain's, their plans
    // after TX's index (drops name them).
    let mut named = f.plan.clone();
    for (report, planned) in f.guests {
        while named.actors.len() < usize::from(planned.index) {
            let index = named.actors.len() as u16;
            named.actors.push(actors::controller::PlannedActor {
                index,
                name: "tx".into(),
                kind: "tx".into(),
                subscriptions: Vec::new(),
                drop_reasons: Vec::new(),
            });
        }
        named.actors.push(planned);
        stages.push(report);
    }
    let rings = ring_stats(&f.region, f.layout);
    let pool = f.pool.stats();
    let elapsed = f.started.elapsed();
    drop(f.pool);
    drop(f.region);
    let report = assemble(AssembleInput {
        app: f.app,
        opts: f.opts,
        plan: &named,
        registry: f.registry,
        placement: f.placement,
        rx,
        tx,
        stages,
        rings,
        pool,
        cores: f.cores,
        elapsed,
        total_bytes: f.total_bytes,
        duration_ended: f.duration_ended,
    });
    let observations = f
        .logs
        .map(|l| l.into_iter().map(|(k, v)| (k, v.lock().map(|g| g.clone()).unwrap_or_default())).collect())
        .unwrap_or_default();
    RunReport { trace, observations, nf_processes: f.nf_processes, ..report }
}

/// Each ring of the layout with its counters, named `from -> to`.
fn ring_stats(region: &Arc<Region>, layout: &Layout) -> Vec<(String, RingStats)> {
    layout
        .rings
        .iter()
        .enumerate()
        .map(|(i, r)| (r.label(), ring::peek_stats(region, &shm_name(i)).unwrap_or_default()))
        .collect()
}

/// The run's trace: every actor of the plan and TX, with their spans in chain order, then
/// mode a's private chains' inner actors (`chain/l23`, `chain/tcp`, `chain/nf`) on their
/// chain's core. Takes the spans out of the reports.
fn collect_trace(
    plan: &Plan,
    registry: &EventRegistry,
    placement: &Placement,
    rx: &mut RxReport,
    tx: &mut TxReport,
    stages: &mut [StageReport],
    inner_traces: &[(String, InnerTraceSlot)],
) -> TraceData {
    let core_of = |name: &str| placement.core_of(name).unwrap_or(0) as u16;
    let mut actors: Vec<TraceActor> = plan
        .actors
        .iter()
        .map(|a| TraceActor { name: a.name.clone(), kind: a.kind.clone(), core: core_of(&a.name) })
        .collect();
    actors.push(TraceActor { name: "tx".into(), kind: "tx".into(), core: core_of("tx") });
    let mut spans = std::mem::take(&mut rx.trace);
    let mut dropped = rx.trace_dropped + tx.trace_dropped;
    for s in stages.iter_mut() {
        spans.append(&mut s.trace);
        dropped += s.trace_dropped;
    }
    spans.append(&mut tx.trace);
    for (chain, slot) in inner_traces {
        let inner = slot.lock().map(|g| g.clone()).unwrap_or_default();
        let base = actors.len() as u16;
        let core = core_of(chain);
        actors.extend(inner.actors.iter().map(|(n, k)| TraceActor {
            name: format!("{chain}/{n}"),
            kind: k.clone(),
            core,
        }));
        spans.extend(inner.spans.iter().map(|s| Span {
            actor: base + s.actor,
            publisher: base + s.publisher,
            core,
            ..*s
        }));
        dropped += inner.dropped;
    }
    let event_types = registry.iter().map(|(t, n)| (t.raw(), n.to_string())).collect();
    TraceData { actors, event_types, spans, dropped, marks: Vec::new() }
}

/// What a finished run left behind, for [`assemble`].
struct AssembleInput<'a> {
    pub app: &'a App,
    pub opts: &'a RunOptions,
    pub plan: &'a Plan,
    pub registry: &'a EventRegistry,
    pub placement: &'a Placement,
    pub rx: RxReport,
    pub tx: TxReport,
    pub stages: Vec<StageReport>,
    pub rings: Vec<(String, RingStats)>,
    pub pool: runtime::pool::PoolStats,
    pub cores: Vec<runtime::executor::CoreReport>,
    pub elapsed: std::time::Duration,
    pub total_bytes: Option<u64>,
    pub duration_ended: bool,
}

/// The warnings of a live run: kernel ring drops, frames with unfilled checksums, frames the
/// kernel refused to send.
fn live_warnings(i: &AssembleInput<'_>, warnings: &mut Vec<String>) {
    for (iface, k) in &i.rx.kernel {
        if k.drops > 0 || k.freezes > 0 {
            warnings.push(format!(
                "kernel: `{iface}`: {} frame(s) dropped because the receive ring was full (tp_drops), the ring froze {} time(s) (tp_freeze_q_cnt); these frames never reached rx and are not in packets in (bigger rings: [port] blocks or --ring-blocks, docs/live.md)",
                k.drops, k.freezes
            ));
        }
        if k.csum_not_ready > 0 {
            warnings.push(format!(
                "kernel: `{iface}`: {} frame(s) arrived with their checksum not filled in (TX checksum offload of a local sender): turn offloads off with `ethtool -K IF gro off gso off tso off tx off` (docs/live.md)",
                k.csum_not_ready
            ));
        }
    }
    if i.rx.too_large > 0 && i.opts.live.is_some() {
        warnings.push(format!(
            "{} frame(s) were larger than a pool buffer (GRO/TSO merge frames): turn offloads off with `ethtool -K IF gro off gso off tso off tx off` (docs/live.md)",
            i.rx.too_large
        ));
    }
    if let Some(n) = &i.tx.note {
        warnings.push(format!("tx: {n}"));
    }
}

/// The run's report, its books checked: every packet read is emitted or dropped with a
/// reason, the pool balances, every stage finished.
fn assemble(i: AssembleInput<'_>) -> RunReport {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let actor_name = |idx: u16| i.plan.actors.get(usize::from(idx)).map_or("?".to_string(), |a| a.name.clone());
    let reason_name = |idx: u16, r: u16| {
        i.plan
            .actors
            .get(usize::from(idx))
            .and_then(|a| a.drop_reasons.get(usize::from(r)).cloned())
            .unwrap_or_else(|| format!("reason {r}"))
    };
    let mut dropped: Vec<DropLine> =
        i.tx.packet_drops
            .iter()
            .map(|((a, r), n)| DropLine { actor: actor_name(*a), reason: reason_name(*a, *r), packets: *n })
            .collect();
    if i.rx.too_large > 0 {
        dropped.insert(
            0,
            DropLine { actor: "rx".into(), reason: "frame larger than pool buffer".into(), packets: i.rx.too_large },
        );
    }
    let event_drops: Vec<DropLine> =
        i.tx.event_drops
            .iter()
            .map(|((a, r), n)| DropLine { actor: actor_name(*a), reason: reason_name(*a, *r), packets: *n })
            .collect();
    // Packets a dead NF process had taken and not passed on never reach TX: its failure
    // records count them (`supervise.rs`), as drops of the NF's with reason `nf failed`.
    for s in &i.stages {
        for f in s.failures.iter().filter(|f| f.what == "process" && f.packets_lost > 0) {
            match dropped.iter_mut().find(|d| d.actor == f.nf && d.reason == actors::supervise::NF_FAILED) {
                Some(d) => d.packets += f.packets_lost,
                None => dropped.push(DropLine {
                    actor: f.nf.clone(),
                    reason: actors::supervise::NF_FAILED.into(),
                    packets: f.packets_lost,
                }),
            }
        }
    }
    let packets_dropped: u64 = dropped.iter().map(|d| d.packets).sum();

    let input = match (&i.opts.live, &i.opts.dpdk) {
        (Some(l), _) => l.describe(),
        (None, Some(d)) => d.describe(),
        (None, None) => i.opts.input.display().to_string(),
    };
    if let Some(e) = &i.rx.error {
        // The reader's errors name the capture; say it once.
        let what = if e.contains(&input) { e.clone() } else { format!("reading `{input}`: {e}") };
        errors.push(format!("{what} (packets before it were processed)"));
    }
    if let Some(n) = &i.rx.note {
        warnings.push(format!("`{input}`: {n}"));
    }
    live_warnings(&i, &mut warnings);
    if i.rx.interrupted && i.opts.live.is_none() && i.opts.dpdk.is_none() {
        warnings.push("interrupted: input reading stopped early; the chain was drained and flushed".into());
    }
    if let Some(e) = &i.tx.error {
        errors.push(format!("writing the output: {e}"));
    }
    for s in &i.stages {
        if let Some(e) = &s.error {
            errors.push(e.clone());
        }
        if !s.finished {
            errors.push(format!("actor `{}` did not finish", s.name));
        }
    }
    if !i.rx.finished || !i.tx.finished {
        errors.push("the run did not reach the end of the chain".into());
    }
    if i.rx.packets_in != i.tx.packets_out + packets_dropped {
        errors.push(format!(
            "accounting mismatch: {} packets in, {} out + {} dropped — {} unaccounted for (this is a bug)",
            i.rx.packets_in,
            i.tx.packets_out,
            packets_dropped,
            i.rx.packets_in as i128 - (i.tx.packets_out + packets_dropped) as i128
        ));
    }
    if !i.pool.balanced() {
        errors.push(format!(
            "packet pool does not balance: {} allocated, {} freed, {} in use (this is a bug)",
            i.pool.allocated, i.pool.freed, i.pool.in_use
        ));
    }

    let actors = i
        .stages
        .iter()
        .map(|s| ActorSummary {
            name: s.name.clone(),
            kind: s.kind.clone(),
            core: i.placement.core_of(&s.name),
            handled: s.handled.iter().map(|(t, n)| (i.registry.name(*t), *n)).collect(),
            handled_total: s.handled_total(),
            passed: s.passed,
            published: s.published,
            drops: s.drops.clone(),
            stalls: s.stalls,
            counters: s.counters.iter().cloned().collect(),
            events_lost_in_failure: s.events_lost_in_failure,
        })
        .collect();

    let secs = i.elapsed.as_secs_f64();
    RunReport {
        peak_rss_bytes: runtime::sys::peak_rss_bytes(),
        app: i.app.source.clone(),
        input,
        input_bytes: i.total_bytes,
        output: i.opts.output.as_ref().map(|p| p.display().to_string()),
        packets_in: i.rx.packets_in,
        bytes_in: i.rx.bytes_in,
        packets_out: i.tx.packets_out,
        bytes_out: i.tx.bytes_out,
        packets_written: i.tx.written,
        packets_dropped,
        dropped,
        event_drops,
        resets: crate::report::ResetLine {
            rejects: i.tx.resets.requests,
            rst_sent: i.tx.resets.sent,
            rst_captured: i.tx.resets.captured,
            rst_not_sent: i.tx.resets.not_sent,
            why_not: i.tx.resets.why_not.clone(),
        },
        ports: i
            .rx
            .kernel
            .iter()
            .map(|(iface, k)| crate::report::PortLine {
                iface: iface.clone(),
                tp_packets: k.packets,
                tp_drops: k.drops,
                tp_freeze_q_cnt: k.freezes,
                csum_not_ready: k.csum_not_ready,
            })
            .collect(),
        rx_pool_stalls: i.rx.pool_stalls,
        rx_ring_stalls: i.rx.ring_stalls,
        rx_paced: i.rx.paced,
        rx_pace_raised: i.rx.pace_raised,
        actors,
        rings: i.rings.into_iter().map(|(n, s)| crate::report::RingLine { link: n, stats: s }).collect(),
        pool_balanced: i.pool.balanced(),
        pool: i.pool,
        cores: i.cores,
        links: i.plan.links.clone(),
        elapsed_s: secs,
        packets_per_s: if secs > 0.0 { i.rx.packets_in as f64 / secs } else { 0.0 },
        interrupted: i.rx.interrupted && !i.duration_ended,
        reconfigurations: Vec::new(),
        warnings,
        errors,
        trace: None,
        observations: BTreeMap::new(),
        dpdk_ports: Vec::new(),
        dpdk: None,
        nf_processes: Vec::new(),
        failures: i.stages.iter().flat_map(|s| s.failures.iter().cloned()).collect(),
        buffers_reclaimed: i.tx.reclaimed,
        mode: i.opts.mode.to_string(),
        files: files_written(i.app, i.opts, i.tx.written),
        emitted: i
            .tx
            .emitted
            .iter()
            .map(|(seq, flow, by)| crate::report::Emitted {
                seq: *seq,
                flow: *flow,
                dropped: by.map(|(a, r)| format!("{}: {}", actor_name(a), reason_name(a, r))),
            })
            .collect(),
    }
}

/// Every file the run wrote: each NF's output (size and lines) and the `-o` capture (size
/// and packets). A file that is not there (its NF failed before renaming it into place) is
/// listed with no size.
fn files_written(app: &App, opts: &RunOptions, packets_written: u64) -> Vec<FileLine> {
    let mut files: Vec<FileLine> = app
        .nfs
        .iter()
        .filter_map(|nf| {
            let path = nf.config.output()?;
            Some(FileLine {
                path: path.display().to_string(),
                written_by: nf.common.name.clone(),
                what: format!("{} output", nf.kind),
                bytes: std::fs::metadata(path).ok().map(|m| m.len()),
                lines: count_lines(path),
                packets: None,
            })
        })
        .collect();
    if let Some(p) = &opts.output {
        files.push(FileLine {
            path: p.display().to_string(),
            written_by: "tx".into(),
            what: "output capture (-o)".into(),
            bytes: std::fs::metadata(p).ok().map(|m| m.len()),
            lines: None,
            packets: Some(packets_written),
        });
    }
    files
}

/// The number of lines of a regular file (read in blocks), `None` when it cannot be read.
fn count_lines(path: &std::path::Path) -> Option<u64> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = vec![0u8; 64 << 10];
    let mut lines = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Some(lines),
            Ok(n) => lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

//! Exporting a recorded trace: Chrome Trace Event JSON, and loading it back for rendering.
//!
//! [`chrome_trace`] turns a [`TraceData`] into the JSON Object Format of the Chrome Trace
//! Event Format (`{"traceEvents": [...], "displayTimeUnit": "ns", "metadata": {...}}`),
//! which opens in Perfetto (ui.perfetto.dev) and `chrome://tracing`:
//!
//! * one process (pid 1, named `mbox`), one thread track per **core** (`tid` = core, named
//!   `core N`, sorted by core) — one core's thread runs one actor at a time, so its spans
//!   never overlap and each track reads like a row of the paper's Figure 4;
//! * one complete event (`ph: "X"`) per span, named `<actor> #<packet>` (e.g. `fw #12`),
//!   category = span kind (`rx`, `handle`, `tx`), `ts`/`dur` in microseconds relative to
//!   the earliest span, `args` = actor, actor kind, packet, flow, event type, publisher,
//!   snapshot;
//! * at most one flow arrow per handled span (`ph: "s"` / `ph: "f"`, `bp: "e"`), from the
//!   publisher's span that handled (or, for RX, read) the same packet just before, to the
//!   handler's span.
//!
//! [`write_chrome_trace`] streams the same events to a file without building the whole
//! JSON tree; [`write_chrome_trace_selected`] writes only the spans a [`Selection`] keeps (a
//! time window and/or a packet range: `mbox run --trace-window/--trace-packets`), with
//! times still measured from the run's first span, so windows mean the same in the file
//! and in `mbox trace render --window`; [`read_chrome_trace`] loads any Chrome trace back
//! as [`RenderSpan`]s for [`crate::trace::render`].

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::path::Path;

use runtime::trace::{Span, SpanKind, TraceData};
use serde_json::{json, Value};

/// The pid of the one process in the exported trace.
pub const PID: u64 = 1;

/// Which spans to keep: a time window (from, up to but not including, to) and/or a packet
/// range (inclusive). The default keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Selection {
    /// Keep spans that start in `from..to` (`to` excluded), µs from the trace's first span.
    pub window_us: Option<(f64, f64)>,
    /// Keep spans of packets `from..=to` (numbers in the input, from 1).
    pub packets: Option<(u64, u64)>,
}

impl Selection {
    /// True when the selection keeps everything.
    pub fn is_all(&self) -> bool {
        self.window_us.is_none() && self.packets.is_none()
    }

    /// Whether a span that starts at `start_us` (µs from the trace's first span) for packet
    /// `seq` is kept; a span without a packet number is kept only without a packet range.
    pub fn keeps(&self, start_us: f64, seq: Option<u64>) -> bool {
        self.window_us.is_none_or(|(a, b)| start_us >= a && start_us < b)
            && self.packets.is_none_or(|(a, b)| seq.is_some_and(|s| s >= a && s <= b))
    }

    /// For messages: `packets 10..20, window 1.5..3 ms`, or `everything`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((a, b)) = self.packets {
            parts.push(format!("packets {a}..{b}"));
        }
        if let Some((a, b)) = self.window_us {
            parts.push(format!("window {}..{} ms", a / 1000.0, b / 1000.0));
        }
        if parts.is_empty() {
            "everything".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// Parses a window in milliseconds, `FROM..TO` (either side may be left out).
    pub fn parse_window_ms(s: &str) -> Result<(f64, f64), String> {
        let (a, b) = split_range(s)?;
        let num = |t: &str, dflt: f64| -> Result<f64, String> {
            if t.is_empty() {
                return Ok(dflt);
            }
            match t.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * 1000.0),
                _ => Err(format!("`{s}`: `{t}` is not a time in ms (a number >= 0)")),
            }
        };
        let (a, b) = (num(a, 0.0)?, num(b, f64::MAX)?);
        if a > b {
            return Err(format!("`{s}`: FROM is after TO"));
        }
        Ok((a, b))
    }

    /// Parses a packet range, `FROM..TO` (inclusive; either side may be left out).
    pub fn parse_packets(s: &str) -> Result<(u64, u64), String> {
        let (a, b) = split_range(s)?;
        let num = |t: &str, dflt: u64| -> Result<u64, String> {
            if t.is_empty() {
                return Ok(dflt);
            }
            t.parse::<u64>().map_err(|_| format!("`{s}`: `{t}` is not a packet number"))
        };
        let (a, b) = (num(a, 0)?, num(b, u64::MAX)?);
        if a > b {
            return Err(format!("`{s}`: FROM is after TO"));
        }
        Ok((a, b))
    }
}

fn split_range(s: &str) -> Result<(&str, &str), String> {
    s.split_once("..")
        .map(|(a, b)| (a.trim(), b.trim()))
        .ok_or_else(|| format!("`{s}` is not a range FROM..TO (e.g. 100..200; either side may be left out)"))
}

/// One slice to draw: a span with its names resolved and its times in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderSpan {
    /// Core (the row).
    pub core: u64,
    /// Actor name (`rx`, `l23`, `fw`, `tx`, ...).
    pub actor: String,
    /// Actor kind (`rx`, `l23`, `firewall`, ...); empty when unknown.
    pub actor_kind: String,
    /// Span kind (`rx`, `handle`, `tx`).
    pub kind: String,
    /// The packet's number in the input, when known.
    pub seq: Option<u64>,
    /// The flow id, when the event had one.
    pub flow: Option<u64>,
    /// Event type name; empty when unknown.
    pub event: String,
    /// Publisher's name; empty when unknown.
    pub publisher: String,
    /// Start, µs from the start of the trace.
    pub start_us: f64,
    /// Duration, µs.
    pub dur_us: f64,
}

impl RenderSpan {
    /// The slice's label, `actor #packet` (or the actor alone).
    pub fn label(&self) -> String {
        match self.seq {
            Some(s) => format!("{} #{}", self.actor, s),
            None => self.actor.clone(),
        }
    }
}

fn kind_name(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Handle => "handle",
        SpanKind::Rx => "rx",
        SpanKind::Tx => "tx",
    }
}

/// Names resolved once for a whole trace.
struct Names<'a> {
    data: &'a TraceData,
    events: HashMap<u32, &'a str>,
    origin: u64,
}

impl<'a> Names<'a> {
    fn new(data: &'a TraceData) -> Names<'a> {
        let events = data.event_types.iter().map(|(id, n)| (*id, n.as_str())).collect();
        let origin = data.spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        Names { data, events, origin }
    }

    fn actor(&self, i: u16) -> String {
        self.data.actors.get(usize::from(i)).map_or_else(|| format!("actor{i}"), |a| a.name.clone())
    }

    fn actor_kind(&self, i: u16) -> String {
        self.data.actors.get(usize::from(i)).map_or_else(String::new, |a| a.kind.clone())
    }

    fn event(&self, t: u32) -> String {
        self.events.get(&t).map_or_else(|| format!("type{t}"), |n| (*n).to_string())
    }

    fn ts_us(&self, ns: u64) -> f64 {
        ns.saturating_sub(self.origin) as f64 / 1000.0
    }

    fn render(&self, s: &Span) -> RenderSpan {
        RenderSpan {
            core: u64::from(s.core),
            actor: self.actor(s.actor),
            actor_kind: self.actor_kind(s.actor),
            kind: kind_name(s.kind).to_string(),
            seq: Some(s.seq),
            flow: (s.flow != u64::MAX).then_some(s.flow),
            event: self.event(s.event_type),
            publisher: self.actor(s.publisher),
            start_us: self.ts_us(s.start_ns),
            dur_us: s.end_ns.saturating_sub(s.start_ns) as f64 / 1000.0,
        }
    }
}

/// The spans of `data` sorted by (core, start): the order every output uses.
fn sorted(data: &TraceData) -> Vec<&Span> {
    let mut v: Vec<&Span> = data.spans.iter().collect();
    v.sort_by_key(|s| (s.core, s.start_ns, s.end_ns));
    v
}

/// The spans of `data` ready to draw (sorted by core, then start).
pub fn render_spans(data: &TraceData) -> Vec<RenderSpan> {
    let names = Names::new(data);
    sorted(data).into_iter().map(|s| names.render(s)).collect()
}

/// For each span (by index in `spans`), the index of the span its event came from: the
/// publisher's latest span for the same packet that started no later than this one.
/// Only handled and TX spans get a link; RX spans start the chain.
fn publisher_links(spans: &[&Span]) -> Vec<Option<usize>> {
    let mut by_actor_seq: HashMap<(u16, u64), Vec<(u64, usize)>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        by_actor_seq.entry((s.actor, s.seq)).or_default().push((s.start_ns, i));
    }
    for v in by_actor_seq.values_mut() {
        v.sort_unstable();
    }
    spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.kind == SpanKind::Rx {
                return None;
            }
            let cands = by_actor_seq.get(&(s.publisher, s.seq))?;
            // Last candidate with start <= s.start, other than s itself.
            let end = cands.partition_point(|&(t, _)| t <= s.start_ns);
            cands[..end].iter().rev().map(|&(_, j)| j).find(|&j| j != i)
        })
        .collect()
}

/// Every trace event, in output order, handed to `emit` one at a time.
fn for_each_event(
    data: &TraceData,
    sel: &Selection,
    mut emit: impl FnMut(Value) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let names = Names::new(data);
    let mut spans = sorted(data);
    if !sel.is_all() {
        spans.retain(|s| sel.keeps(names.ts_us(s.start_ns), Some(s.seq)));
    }
    let cores: BTreeSet<u16> = data.actors.iter().map(|a| a.core).chain(spans.iter().map(|s| s.core)).collect();

    emit(json!({"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "ts": 0, "args": {"name": "mbox"}}))?;
    emit(json!({"ph": "M", "name": "process_sort_index", "pid": PID, "tid": 0, "ts": 0, "args": {"sort_index": 0}}))?;
    for c in &cores {
        emit(
            json!({"ph": "M", "name": "thread_name", "pid": PID, "tid": c, "ts": 0, "args": {"name": format!("core {c}")}}),
        )?;
        emit(
            json!({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": c, "ts": 0, "args": {"sort_index": c}}),
        )?;
    }

    for s in &spans {
        let mut args = json!({
            "actor": names.actor(s.actor),
            "kind": names.actor_kind(s.actor),
            "packet": s.seq,
            "event": names.event(s.event_type),
            "publisher": names.actor(s.publisher),
            "snapshot_seq": s.snapshot_seq,
        });
        if s.flow != u64::MAX {
            args["flow"] = json!(s.flow);
        }
        emit(json!({
            "ph": "X",
            "name": format!("{} #{}", names.actor(s.actor), s.seq),
            "cat": kind_name(s.kind),
            "pid": PID,
            "tid": s.core,
            "ts": names.ts_us(s.start_ns),
            "dur": s.end_ns.saturating_sub(s.start_ns) as f64 / 1000.0,
            "args": args,
        }))?;
    }

    // Run-wide marks (reconfigurations), where the first span of their packet starts.
    for m in &data.marks {
        let at = spans.iter().filter(|s| s.seq >= m.seq).map(|s| s.start_ns).min();
        if let Some(at) = at {
            emit(
                json!({"ph": "i", "s": "g", "name": m.name, "cat": "reconfiguration", "pid": PID, "tid": 0, "ts": names.ts_us(at), "args": {"packet": m.seq, "changes": m.detail}}),
            )?;
        }
    }

    // Flow arrows bind to the slice enclosing their timestamp, so each end sits in the
    // middle of its slice (a slice's start may equal the previous slice's end).
    let mid = |s: &Span| names.ts_us(s.start_ns) + s.end_ns.saturating_sub(s.start_ns) as f64 / 2000.0;
    for (id, (i, from)) in
        publisher_links(&spans).into_iter().enumerate().filter_map(|(i, l)| Some((i, l?))).enumerate()
    {
        let (src, dst) = (spans[from], spans[i]);
        emit(
            json!({"ph": "s", "id": id, "name": "publish", "cat": "event", "pid": PID, "tid": src.core, "ts": mid(src)}),
        )?;
        emit(
            json!({"ph": "f", "bp": "e", "id": id, "name": "publish", "cat": "event", "pid": PID, "tid": dst.core, "ts": mid(dst)}),
        )?;
    }
    Ok(())
}

fn metadata(data: &TraceData, sel: &Selection) -> Value {
    let names = Names::new(data);
    let kept = if sel.is_all() {
        data.spans.len()
    } else {
        data.spans.iter().filter(|s| sel.keeps(names.ts_us(s.start_ns), Some(s.seq))).count()
    };
    json!({
        "source": "microboxes",
        "spans": kept,
        "recorded_spans": data.spans.len(),
        "selection": sel.describe(),
        "dropped_spans": data.dropped,
        "marks": data.marks,
        "origin_ns": names.origin,
        "actors": data.actors,
        "event_types": data.event_types.iter().map(|(id, n)| json!({"id": id, "name": n})).collect::<Vec<_>>(),
    })
}

/// The trace as Chrome Trace Event JSON (object format).
pub fn chrome_trace(data: &TraceData) -> Value {
    let mut events = Vec::with_capacity(data.spans.len() * 3 + 16);
    let sel = Selection::default();
    let _ = for_each_event(data, &sel, |e| {
        events.push(e);
        Ok(())
    });
    json!({"traceEvents": events, "displayTimeUnit": "ns", "metadata": metadata(data, &sel)})
}

/// Writes [`chrome_trace`]'s JSON to `path`, one event per line, without building it in
/// memory first.
pub fn write_chrome_trace(path: &Path, data: &TraceData) -> std::io::Result<()> {
    write_chrome_trace_selected(path, data, &Selection::default()).map(|_| ())
}

/// [`write_chrome_trace`] of the spans `sel` keeps; returns how many were written.
pub fn write_chrome_trace_selected(path: &Path, data: &TraceData, sel: &Selection) -> std::io::Result<usize> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    w.write_all(b"{\"displayTimeUnit\":\"ns\",\"metadata\":")?;
    serde_json::to_writer(&mut w, &metadata(data, sel))?;
    w.write_all(b",\"traceEvents\":[\n")?;
    let mut first = true;
    let mut spans = 0;
    for_each_event(data, sel, |e| {
        if !first {
            w.write_all(b",\n")?;
        }
        first = false;
        spans += usize::from(e.get("ph").and_then(Value::as_str) == Some("X"));
        serde_json::to_writer(&mut w, &e)?;
        Ok(())
    })?;
    w.write_all(b"\n]}\n")?;
    w.flush()?;
    Ok(spans)
}

/// The complete (`ph: "X"`) events of a Chrome trace as [`RenderSpan`]s, sorted by core
/// then start. Accepts the object format and the bare array format; events written by
/// other tools are drawn too (their `tid` is taken as the row, their name as the label).
pub fn spans_from_chrome(v: &Value) -> Result<Vec<RenderSpan>, String> {
    let events = match v {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("traceEvents") {
            Some(Value::Array(a)) => a,
            _ => return Err("not a Chrome trace: no `traceEvents` array".into()),
        },
        _ => return Err("not a Chrome trace: neither an object nor an array".into()),
    };
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if e.get("ph").and_then(Value::as_str) != Some("X") {
            continue;
        }
        let num = |k: &str| e.get(k).and_then(Value::as_f64);
        let (Some(ts), Some(core)) = (num("ts"), e.get("tid").and_then(Value::as_u64)) else {
            return Err(format!("event {i}: a complete event needs a numeric `ts` and an integer `tid`"));
        };
        let args = e.get("args").cloned().unwrap_or(Value::Null);
        let arg_str = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let name = e.get("name").and_then(Value::as_str).unwrap_or("");
        let actor = match args.get("actor").and_then(Value::as_str) {
            Some(a) => a.to_string(),
            None => name.split(" #").next().unwrap_or(name).to_string(),
        };
        out.push(RenderSpan {
            core,
            actor,
            actor_kind: arg_str("kind"),
            kind: e.get("cat").and_then(Value::as_str).unwrap_or("").to_string(),
            seq: args.get("packet").and_then(Value::as_u64),
            flow: args.get("flow").and_then(Value::as_u64),
            event: arg_str("event"),
            publisher: arg_str("publisher"),
            start_us: ts,
            dur_us: num("dur").unwrap_or(0.0).max(0.0),
        });
    }
    out.sort_by(|a, b| a.core.cmp(&b.core).then(a.start_us.total_cmp(&b.start_us)));
    Ok(out)
}

/// Loads a Chrome trace file (ours or any other) for rendering.
pub fn read_chrome_trace(path: &Path) -> Result<Vec<RenderSpan>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    spans_from_chrome(&v).map_err(|e| format!("{}: {e}", path.display()))
}

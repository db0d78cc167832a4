//! The trace recorder's data: one [`Span`] per unit of work, kept in per-stage buffers.
//!
//! Each stage (and so each core's thread) owns its [`TraceBuffer`]: recording is a push into
//! a `Vec` the thread owns — no lock, no atomic, no allocation once the buffer has grown —
//! and the buffers are collected after the run. A buffer holds at most its capacity; spans
//! beyond it are counted as dropped, never silently lost. Recording is off unless the run
//! asks for it (`mbox run --trace FILE`): stages then carry no buffer at all and the hot path
//! pays one branch on an `Option`.
//!
//! Times are nanoseconds on one monotonic clock ([`now_ns`]) shared by every thread of the
//! process, so spans from different cores line up.

use std::sync::OnceLock;
use std::time::Instant;

/// What a span covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// An actor handled an event.
    Handle,
    /// RX read a frame and put it in the pool.
    Rx,
    /// TX emitted or dropped a packet and released it.
    Tx,
}

/// One unit of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    /// Index of the actor in the plan (RX is 0; TX is the number of actors).
    pub actor: u16,
    /// Core the actor ran on.
    pub core: u16,
    /// What kind of work.
    pub kind: SpanKind,
    /// The packet's number in the input (the event's logical timestamp).
    pub seq: u64,
    /// The flow (`FlowRef::id64`), or `u64::MAX` for none.
    pub flow: u64,
    /// The event's type id.
    pub event_type: u32,
    /// Plan index of the event's publisher.
    pub publisher: u16,
    /// Start, ns on [`now_ns`]'s clock.
    pub start_ns: u64,
    /// End, ns.
    pub end_ns: u64,
    /// The logical timestamp of the stack snapshot the event carried (0 when none).
    pub snapshot_seq: u64,
}

/// A stage's spans.
#[derive(Debug, Default)]
pub struct TraceBuffer {
    spans: Vec<Span>,
    capacity: usize,
    dropped: u64,
}

impl TraceBuffer {
    /// A buffer that keeps at most `capacity` spans.
    pub fn new(capacity: usize) -> TraceBuffer {
        TraceBuffer { spans: Vec::with_capacity(capacity.min(1 << 16)), capacity, dropped: 0 }
    }

    /// Records a span (or counts it as dropped when full).
    #[inline]
    pub fn record(&mut self, span: Span) {
        if self.spans.len() < self.capacity {
            self.spans.push(span);
        } else {
            self.dropped += 1;
        }
    }

    /// The spans and how many did not fit.
    pub fn take(&mut self) -> (Vec<Span>, u64) {
        (std::mem::take(&mut self.spans), std::mem::replace(&mut self.dropped, 0))
    }
}

/// Nanoseconds since the first call in this process (monotonic, shared by all threads).
#[inline]
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// An actor as a trace names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceActor {
    /// Name (`rx`, `l23`, an NF's name, `tx`).
    pub name: String,
    /// Kind (`rx`, `l23`, `tcp_monitor`, `firewall`, ..., `tx`).
    pub kind: String,
    /// Core it ran on.
    pub core: u16,
}

/// A recorded run: who is who, and every span.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceData {
    /// Actors by plan index (`Span::actor`); TX last.
    pub actors: Vec<TraceActor>,
    /// Event type names by id (`Span::event_type`).
    pub event_types: Vec<(u32, String)>,
    /// Every span, in no particular order.
    pub spans: Vec<Span>,
    /// Spans that did not fit the buffers.
    pub dropped: u64,
    /// Things that happened to the whole run at a packet (a reconfiguration), drawn as
    /// instant events where RX read that packet.
    #[serde(default)]
    pub marks: Vec<TraceMark>,
}

/// A run-wide event at a packet (see [`TraceData::marks`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceMark {
    /// The packet (number in the input) it applies from.
    pub seq: u64,
    /// A short name (`reload: generation 2`).
    pub name: String,
    /// What changed.
    pub detail: String,
}

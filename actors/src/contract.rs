//! The actor contract: what every µStack and network function declares and implements.
//!
//! An actor is a state machine that the runtime moves between rings (STYLE.md habit 2): it
//! sees one event at a time through [`Actor::handle`], answers a [`Verdict`], and may publish
//! events through the [`Context`]. It never touches a ring itself, so the same actor runs in a
//! thread, in its own process, or in the sequential reference mode unchanged.
//!
//! Each actor declares its [`Contract`] up front — the controller type-checks and links the
//! whole application from contracts alone, before any packet moves:
//!
//! * `subscriptions`: event types (a type accepts its descendants), each with an optional
//!   [`FlowMatch`] filter and an optional `from` naming the publishing actor;
//! * `publications`: the event types it may publish;
//! * `modifies`: whether it writes packet bytes or stack state (the controller keeps writers
//!   out of parallel groups);
//! * `drop_reasons`: the names its [`Verdict::Drop`] indices refer to, for the stats.
//!
//! Its [`ActorRole`] (µStack or NF) follows from the contract: a µStack consumes what it
//! subscribes to.

use runtime::pool::{PacketHandle, PoolView};

use crate::desc::{EventDesc, FlowRef};
use crate::event::EventType;
use crate::matcher::FlowMatch;
use crate::packet::PacketView;

/// Which half of a TCP connection an event's snapshot update is about (see
/// [`TcpSnapshot::update`](crate::desc::TcpSnapshot)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Updates of the client's (initiator's) half.
    Client,
    /// Updates of the server's (responder's) half.
    Server,
    /// Updates of both halves: two events per packet.
    Both,
}

/// A subscription port.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subscription {
    /// Port name (for messages), e.g. `"pkt"`.
    pub port: String,
    /// The subscribed type; descendants are accepted.
    pub event: EventType,
    /// Only events whose packet matches (events without a packet never match a filter).
    pub filter: Option<FlowMatch>,
    /// Only events published by this actor.
    pub from: Option<String>,
    /// Which TCP-monitor updates to receive (Figure 7c's configurations). `None`: one event
    /// per packet, the sender's update; `Client`/`Server`: every update of that half (for a
    /// packet the server sent, the client half's update is its reception); `Both`: all.
    /// Events that are not TCP-monitor updates are not affected.
    pub side: Option<Side>,
    /// Only events of packets sent this way: `Some(true)` initiator → responder,
    /// `Some(false)` the other way (Figure 7c's "server-side updates of client packets").
    pub to_server: Option<bool>,
    /// The actor rewrites these events into its own publications (a µStack layered on
    /// another: L2/3 turns `FRAME`s into `PKT`s, the TCP monitor turns L2/3's `PKT/TCP` into
    /// its own, with snapshots). Actors after it receive them from it, not from the original
    /// publisher.
    pub consumes: bool,
    /// Also receive events an earlier actor dropped (mode a's private stacks must see every
    /// packet the shared stack would).
    pub include_dropped: bool,
    /// A feedback port: its events are published by actors *after* this one and come back
    /// through the TX sink's loopback ([`crate::splice::Loopback`]), not down the rings (the
    /// splicer's `FLOW_DEST` port). The controller links it to those later publishers.
    pub feedback: bool,
}

impl Subscription {
    /// A plain subscription of `port` to `event`.
    pub fn new(port: &str, event: EventType) -> Subscription {
        Subscription { port: port.to_string(), event, ..Default::default() }
    }

    /// The same, marked as consuming (see [`Subscription::consumes`]).
    pub fn consuming(mut self) -> Subscription {
        self.consumes = true;
        self
    }
}

/// A publication port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// Port name (for messages).
    pub port: String,
    /// The published type (exactly this type; list each published descendant separately).
    pub event: EventType,
}

/// What an actor writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Modifies {
    /// Packet bytes.
    pub packets: bool,
    /// Protocol-stack state.
    pub stack_state: bool,
}

/// An actor's declared interface.
#[derive(Clone, Debug, Default)]
pub struct Contract {
    /// Unique name in the application.
    pub name: String,
    /// The kind (`"firewall"`, `"l23"`, ...).
    pub kind: String,
    /// What it receives.
    pub subscriptions: Vec<Subscription>,
    /// What it may publish.
    pub publications: Vec<Publication>,
    /// What it writes.
    pub modifies: Modifies,
    /// Names of its drop reasons; `Verdict::Drop(i)` refers to `drop_reasons[i]`.
    pub drop_reasons: Vec<String>,
}

/// What an actor is to the engine: one of the shared µStacks, or a network function.
///
/// The engine places stacks with RX, shards them in mode d, gives each NF private copies of
/// them in mode a, and keeps them out of parallel NF groups; it reads the role from the
/// contract ([`Contract::role`]), never from a kind name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActorRole {
    /// A µStack: it consumes the events it subscribes to and rewrites them into its own.
    Stack,
    /// A network function (also RX's stand-ins and mode a's private chains).
    Nf,
}

impl Contract {
    /// The actor's role. An actor that *consumes* some subscription (see
    /// [`Subscription::consumes`]: it rewrites those events into its own publications, a
    /// layer of protocol processing) is a µStack; every other actor is an NF.
    pub fn role(&self) -> ActorRole {
        role_of(self.subscriptions.iter().map(|s| s.consumes))
    }
}

/// The role of an actor whose subscriptions consume as `consumes` says (shared by
/// [`Contract::role`] and the plan's [`PlannedActor::role`](crate::controller::PlannedActor::role)).
pub(crate) fn role_of(mut consumes: impl Iterator<Item = bool>) -> ActorRole {
    if consumes.any(|c| c) {
        ActorRole::Stack
    } else {
        ActorRole::Nf
    }
}

/// An actor's answer to one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on: the event continues down the chain.
    Continue,
    /// Drop, with an index into the contract's `drop_reasons`. On a packet's own event the
    /// packet is dropped (counted, never emitted); on any other event only that event's
    /// propagation ends.
    Drop(u16),
}

/// An error an actor reports (at end of input, or from setup).
#[derive(Debug, thiserror::Error)]
#[error("{actor}: {message}")]
pub struct ActorError {
    /// The actor's name.
    pub actor: String,
    /// What went wrong.
    pub message: String,
}

/// Events published while handling one event, placed around it in the stream.
#[derive(Debug, Default)]
pub struct Outbox {
    pub(crate) before: Vec<EventDesc>,
    pub(crate) after: Vec<EventDesc>,
    /// Per-flow subscription changes asked for while handling the current event:
    /// (flow's canonical name, event type, subscribe?).
    pub(crate) changes: Vec<(u64, EventType, bool)>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Takes every event published so far: (before, after).
    pub fn take(&mut self) -> (Vec<EventDesc>, Vec<EventDesc>) {
        (std::mem::take(&mut self.before), std::mem::take(&mut self.after))
    }

    /// Number of events waiting.
    pub fn len(&self) -> usize {
        self.before.len() + self.after.len()
    }

    /// True when nothing was published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why stream bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamReadError {
    /// No TCP monitor in this application.
    #[error("this application has no TCP monitor, so there are no bytestreams to read")]
    NoStreams,
    /// The connection is not (or no longer) tracked.
    #[error("connection {0:?} is not tracked")]
    NoConnection(FlowRef),
    /// The range is not held: released already, or beyond the frontier.
    #[error("bytes {from}..{to} of that stream are not held (held: {base}..{frontier})")]
    NotHeld {
        /// Asked from.
        from: u64,
        /// Asked to.
        to: u64,
        /// First byte held.
        base: u64,
        /// Frontier now.
        frontier: u64,
    },
}

/// A piece of a bytestream range, in stream order: bytes received, or a gap.
///
/// A **gap** is a hole the TCP monitor skipped because it can never be filled (the
/// connection ended with data missing before later data, see
/// `stacks::reassembly::ByteStream::finish`): its bytes were never seen. Only its length is
/// known — it costs O(1) whatever its size, and is never read as bytes. A reader treats it as
/// a discontinuity (like Suricata's stream gap flag): a pattern must not match across it,
/// and a hash of the stream covers the received bytes only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Bytes received, in order.
    Data(&'a [u8]),
    /// This many bytes never received.
    Gap(u64),
}

impl Chunk<'_> {
    /// Length in stream bytes (a gap's included).
    pub fn len(&self) -> u64 {
        match self {
            Chunk::Data(d) => d.len() as u64,
            Chunk::Gap(n) => *n,
        }
    }

    /// True for an empty piece.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Read access to the TCP bytestreams, provided by the TCP monitor to the stages after it.
pub trait StreamAccess: Send + Sync {
    /// Calls `f` with the range `[from, to)` of one direction of `flow`'s connection, in
    /// order, as one or more [`Chunk`]s: slices of received bytes, and gaps (never filled
    /// with zeros).
    fn read(
        &self,
        flow: FlowRef,
        to_server: bool,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(Chunk<'_>),
    ) -> Result<(), StreamReadError>;

    /// The *live* frontier of a direction — where the stack is now, not where it was when an
    /// event was raised. For monitoring only: an NF that decides by it observes something no
    /// private stack would show it (the consistency checker catches exactly that).
    fn live_frontier(&self, flow: FlowRef, to_server: bool) -> Option<u64>;

    /// Asks for a change to one direction of `flow`'s bytestream (docs/modification.md).
    /// The default refuses: only the TCP monitor with `[stack.tcp.modify]` modifies.
    fn modify(
        &self,
        flow: FlowRef,
        to_server: bool,
        change: crate::modify::StreamChange,
    ) -> Result<(), crate::modify::ModifyError> {
        let _ = (flow, to_server, change);
        Err(crate::modify::ModifyError::NotEnabled)
    }

    /// Asks for `flow` to be moved from the cheap path to the modification path
    /// (`[stack.tcp.modify] upgrade = "on_request"`, docs/modification.md "Per-flow
    /// upgrade"). The default refuses: only the modifying TCP monitor upgrades.
    fn upgrade(&self, flow: FlowRef) -> Result<(), crate::modify::ModifyError> {
        let _ = flow;
        Err(crate::modify::ModifyError::NotEnabled)
    }

    /// The original stream offset from which one direction of `flow` is on the modification
    /// path (changes before it are refused as too late), or `None` while the flow is not
    /// (yet) forwarded by the modifying monitor.
    fn modifiable_from(&self, flow: FlowRef, to_server: bool) -> Option<u64> {
        let _ = (flow, to_server);
        None
    }

    /// Blocks this access needs in a run's shared-memory region to be readable from other
    /// processes: (name suffix, bytes). None by default (in-process only).
    fn region_blocks(&self) -> Vec<(String, usize)> {
        Vec::new()
    }

    /// Places the streams in `region` under `name` (`create`: the run, before any actor
    /// runs), or attaches to the blocks placed there (`!create`: an NF process). The default
    /// has nothing to place.
    fn share(&self, region: &std::sync::Arc<runtime::shm::Region>, name: &str, create: bool) -> Result<(), String> {
        let _ = (region, name, create);
        Ok(())
    }
}

/// What an actor may use while handling an event: the packet pool (read), the TCP
/// bytestreams (read) and its outbox.
pub struct Context<'a> {
    pool: &'a PoolView,
    out: &'a mut Outbox,
    me: u16,
    streams: Option<&'a dyn StreamAccess>,
    /// Published events take their own packet reference (they travel to TX); events kept
    /// inside one actor (a private stack) do not.
    retain: bool,
    end_seq: Option<u64>,
}

impl<'a> Context<'a> {
    /// A context for the actor at plan index `me`.
    pub fn new(pool: &'a PoolView, out: &'a mut Outbox, me: u16, streams: Option<&'a dyn StreamAccess>) -> Context<'a> {
        Context { pool, out, me, streams, retain: true, end_seq: None }
    }

    /// A context whose published events stay inside the calling actor (they never reach TX,
    /// so they take no packet reference): for actors that run other actors privately.
    pub fn internal(
        pool: &'a PoolView,
        out: &'a mut Outbox,
        me: u16,
        streams: Option<&'a dyn StreamAccess>,
    ) -> Context<'a> {
        Context { pool, out, me, streams, retain: false, end_seq: None }
    }

    /// The packet pool.
    pub fn pool(&self) -> &'a PoolView {
        self.pool
    }

    /// The stream access this context gives.
    pub fn streams(&self) -> Option<&'a dyn StreamAccess> {
        self.streams
    }

    /// The new bytes a `DATA_RDY` event announces — `[aux, frontier)` of its direction, as of
    /// that event, however far the TCP monitor has run ahead since — passed to `f` in order.
    pub fn data_ready(&self, ev: &EventDesc, f: &mut dyn FnMut(Chunk<'_>)) -> Result<(), StreamReadError> {
        let flow = ev.flow.ok_or(StreamReadError::NoStreams)?;
        let to_server = ev.to_server();
        let to = ev.snap.frontier[usize::from(!to_server)];
        self.read_stream(flow, to_server, ev.aux, to, f)
    }

    /// The live frontier of a stream (see [`StreamAccess::live_frontier`]; not for decisions).
    pub fn live_frontier(&self, flow: FlowRef, to_server: bool) -> Option<u64> {
        self.streams?.live_frontier(flow, to_server)
    }

    /// Bytes `[from, to)` of a stream; `to` must not pass the frontier of the event being
    /// handled (an NF sees nothing newer than its event).
    pub fn read_stream(
        &self,
        flow: FlowRef,
        to_server: bool,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(Chunk<'_>),
    ) -> Result<(), StreamReadError> {
        self.streams.ok_or(StreamReadError::NoStreams)?.read(flow, to_server, from, to, f)
    }

    /// Changes the bytestream of `ev`'s flow in `ev`'s direction (replace, insert, remove
    /// bytes, or hold them back): see [`crate::modify`] and docs/modification.md. Offsets are
    /// those of the original stream, as read with [`data_ready`](Self::data_ready).
    pub fn modify_stream(
        &self,
        ev: &EventDesc,
        change: crate::modify::StreamChange,
    ) -> Result<(), crate::modify::ModifyError> {
        let flow = ev.flow.ok_or(crate::modify::ModifyError::NotModifiable)?;
        self.streams.ok_or(crate::modify::ModifyError::NotEnabled)?.modify(flow, ev.to_server(), change)
    }

    /// Moves `ev`'s flow from the cheap path to the modification path, from the next byte
    /// the TCP monitor forwards (`[stack.tcp.modify] upgrade = "on_request"`; a no-op
    /// success when every flow is modifiable already). The request is taken by the monitor
    /// at its next packet: [`modifiable_from`](Self::modifiable_from) says from where changes
    /// are accepted once it is (see [`crate::modify`]).
    pub fn upgrade_flow(&self, ev: &EventDesc) -> Result<(), crate::modify::ModifyError> {
        let flow = ev.flow.ok_or(crate::modify::ModifyError::NotModifiable)?;
        self.streams.ok_or(crate::modify::ModifyError::NotEnabled)?.upgrade(flow)
    }

    /// The original offset from which `ev`'s direction of its flow is on the modification
    /// path, or `None` while it is not (not upgraded yet, or not forwarded by the monitor).
    pub fn modifiable_from(&self, ev: &EventDesc) -> Option<u64> {
        self.streams?.modifiable_from(ev.flow?, ev.to_server())
    }

    /// The bytes of a packet.
    pub fn packet_bytes(&self, h: PacketHandle) -> &'a [u8] {
        self.pool.data(h)
    }

    /// A header view of the packet an event is about.
    pub fn view<'e>(&self, ev: &'e EventDesc) -> Option<PacketView<'e>>
    where
        'a: 'e,
    {
        ev.packet.map(|h| PacketView::new(self.pool.data(h), &ev.meta))
    }

    /// This actor's index in the plan (the `publisher` of what it publishes).
    pub fn me(&self) -> u16 {
        self.me
    }

    /// At end of input ([`Actor::finish`]): the end marker's sequence number (one more than
    /// the number of packets read); `None` otherwise.
    pub fn end_seq(&self) -> Option<u64> {
        self.end_seq
    }

    /// The same context, marked as finishing at end marker `seq`.
    pub fn at_end(mut self, seq: u64) -> Context<'a> {
        self.end_seq = Some(seq);
        self
    }

    /// Stops delivering events of type `event` (and its descendants) of the flow this event
    /// belongs to, to this actor — from the next event on (a defined boundary, the same in
    /// every execution mode). A no-op for events without a flow.
    pub fn unsubscribe_flow(&mut self, ev: &EventDesc, event: EventType) {
        if ev.flow_start != 0 {
            self.out.changes.push((ev.flow_start, event, false));
        }
    }

    /// Undoes [`unsubscribe_flow`](Self::unsubscribe_flow) for this event's flow, from the
    /// next event on. (Subscribing to types outside the actor's contract is not possible:
    /// the controller linked the contract.)
    pub fn subscribe_flow(&mut self, ev: &EventDesc, event: EventType) {
        if ev.flow_start != 0 {
            self.out.changes.push((ev.flow_start, event, true));
        }
    }

    /// Everything published so far while handling the current event, in stream order.
    pub fn published(&self) -> impl Iterator<Item = &EventDesc> {
        self.out.before.iter().chain(self.out.after.iter())
    }

    fn stamp(&self, mut ev: EventDesc) -> EventDesc {
        ev.publisher = self.me;
        use crate::desc::desc_flags::{AFTER, BORROWED, DROPPED, PRIMARY, SPLIT};
        ev.flags &= !(PRIMARY | DROPPED | SPLIT | BORROWED | AFTER);
        if let (Some(h), true) = (ev.packet, self.retain) {
            // The new descriptor holds its own reference; the TX sink releases it.
            self.pool.retain(h);
        }
        ev
    }

    /// Publishes an event right after the one being handled.
    pub fn publish(&mut self, ev: EventDesc) {
        let ev = self.stamp(ev);
        self.out.after.push(ev);
    }

    /// Publishes an event right before the one being handled (e.g. a flow that ended
    /// before this packet arrived).
    pub fn publish_before(&mut self, ev: EventDesc) {
        let ev = self.stamp(ev);
        self.out.before.push(ev);
    }
}

/// A µStack or network function (see the module docs).
pub trait Actor: Send {
    /// The declared interface.
    fn contract(&self) -> &Contract;

    /// Handles one event this actor subscribed to. Stacks may rewrite the descriptor in
    /// place (the L2/3 stack turns a `FRAME` into a typed `PKT` event); network functions
    /// only read it.
    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict;

    /// End of input: flush state (e.g. write the records of flows still open). Events
    /// published here go down the chain before the end marker.
    fn finish(&mut self, _cx: &mut Context<'_>) -> Result<(), ActorError> {
        Ok(())
    }

    /// The end of input in steps: does part of [`finish`](Self::finish)'s work and returns
    /// whether some is left. A stage sends what a step published (before its event) down the
    /// chain before it calls the next step, so an actor that ends every flow at the end of
    /// input (the L2/3 stack) does not hold all their events at once (issue 14's memory per
    /// idle connection). The default does all of `finish` in one step.
    fn finish_step(&mut self, cx: &mut Context<'_>) -> Result<bool, ActorError> {
        self.finish(cx).map(|()| false)
    }

    /// Time passed: packet `seq` (captured at `ts_ns`) went to another instance of this
    /// actor (a shard). A stack advances its clock here — ends flows whose timeouts expired —
    /// so that every shard notices a timeout at the same packet a single instance would.
    fn tick(&mut self, _seq: u64, _ts_ns: u64, _cx: &mut Context<'_>) {}

    /// The stage took no input this round (called often, while idle: keep it cheap). An
    /// active µStack (the splicer) runs its timers and its feedback path here; what it
    /// publishes goes down the chain as if published after its last event.
    fn idle(&mut self, _cx: &mut Context<'_>) {}

    /// Actor-specific counters for the run summary, by name.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

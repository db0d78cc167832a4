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

use runtime::pool::{PacketHandle, PoolView};

use crate::desc::EventDesc;
use crate::event::EventType;
use crate::matcher::FlowMatch;
use crate::packet::PacketView;

/// A subscription port.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    /// Port name (for messages), e.g. `"pkt"`.
    pub port: String,
    /// The subscribed type; descendants are accepted.
    pub event: EventType,
    /// Only events whose packet matches (events without a packet never match a filter).
    pub filter: Option<FlowMatch>,
    /// Only events published by this actor.
    pub from: Option<String>,
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

/// What an actor may use while handling an event: the packet pool (read) and its outbox.
pub struct Context<'a> {
    pool: &'a PoolView,
    out: &'a mut Outbox,
    me: u16,
}

impl<'a> Context<'a> {
    /// A context for the actor at plan index `me`.
    pub fn new(pool: &'a PoolView, out: &'a mut Outbox, me: u16) -> Context<'a> {
        Context { pool, out, me }
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

    fn stamp(&self, mut ev: EventDesc) -> EventDesc {
        ev.publisher = self.me;
        ev.flags &= !(crate::desc::desc_flags::PRIMARY | crate::desc::desc_flags::DROPPED);
        if let Some(h) = ev.packet {
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

    /// Actor-specific counters for the run summary, by name.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

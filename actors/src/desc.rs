//! The event descriptor: what travels through the rings.
//!
//! A packet enters the system once, as a buffer in the shared pool; from then on only
//! [`EventDesc`]s move — 128-byte, `repr(C)`, `Copy` records holding the event type, the
//! packet handle (an index into the pool, never a pointer), the flow, the logical timestamp and
//! the parsed header offsets ([`PacketMeta`]) and, for events of the TCP monitor, the stack
//! snapshot ([`TcpSnapshot`]). Because nothing in a descriptor is an address,
//! a descriptor means the same thing in every process that maps the region.
//!
//! Reference counting: every descriptor that names a packet holds one reference on its
//! buffer. The RX port creates the packet's *primary* descriptor with the first reference;
//! an actor that publishes another event about the same packet takes one more (the stage
//! runner does it); the TX sink at the end of the chain releases one per descriptor. So a
//! buffer returns to the pool exactly when the last event about it is done.

use runtime::pool::PacketHandle;
use std::num::NonZeroU32;

use crate::event::{builtin, EventType};

/// Parsed header offsets and a few header fields of the packet an event is about.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Length of the frame on the wire (may exceed the captured bytes).
    pub wire_len: u32,
    /// Offset of the IP header in the frame.
    pub l3_offset: u16,
    /// Offset of the transport header.
    pub l4_offset: u16,
    /// Offset of the transport payload.
    pub payload_offset: u16,
    /// Captured payload bytes.
    pub payload_len: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1/58 ICMP); 0 for non-IP frames.
    pub proto: u8,
    /// TCP flags, 0 for other protocols.
    pub tcp_flags: u8,
    /// 4 or 6; 0 for non-IP frames.
    pub ip_version: u8,
    /// [`meta_flags`] bits.
    pub flags: u8,
}

/// Bits of [`PacketMeta::flags`].
pub mod meta_flags {
    /// The packet travels from the flow's initiator to its responder.
    pub const TO_SERVER: u8 = 0x01;
    /// The packet has transport ports (TCP, UDP; ICMP echo ident).
    pub const HAS_PORTS: u8 = 0x02;
    /// The capture cut the payload short (snaplen).
    pub const CLIPPED: u8 = 0x04;
    /// The L2/3 stack could not parse the frame (forwarded under the `forward` policy).
    pub const MALFORMED: u8 = 0x08;
}

/// Bits of [`EventDesc::flags`].
pub mod desc_flags {
    /// The packet's own descriptor (from the RX port), as opposed to an event published
    /// about it. The TX sink emits a packet when its primary descriptor arrives undropped.
    pub const PRIMARY: u8 = 0x01;
    /// A Drop verdict was given; later stages forward without handling it.
    pub const DROPPED: u8 = 0x02;
    /// A splitter's copy of an event, on its way to one member of a parallel group.
    pub const SPLIT: u8 = 0x04;
    /// A copy that holds no packet reference (all but the first copy of a split); the merger
    /// drops it after merging.
    pub const BORROWED: u8 = 0x08;
    /// Published by a parallel-group member *after* the split copy it answers: the member
    /// sends it ahead of the copy (so the copy closes its answer) and the merger puts it back
    /// after the event.
    pub const AFTER: u8 = 0x10;
}

/// Control codes carried in [`EventDesc::aux`] when the type is [`builtin::CONTROL`].
pub mod control {
    /// End of input: every actor flushes and forwards it, then finishes.
    pub const END: u64 = 1;
    /// "Packet `seq` went to another stack instance": keeps a shard's ring moving so that the
    /// merger behind the shards never waits for a shard that has nothing to send.
    pub const SKIP: u64 = 2;
}

/// A flow as the L2/3 stack names it: slot index and generation (a reused slot gets a new
/// generation, so a stale id never matches a newer flow).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowRef {
    /// Slot in the flow table, plus one.
    pub slot: NonZeroU32,
    /// Generation of that slot.
    pub generation: u32,
}

impl FlowRef {
    /// From a flow-table index (0-based) and generation.
    pub fn new(index: u32, generation: u32) -> FlowRef {
        FlowRef { slot: NonZeroU32::new(index.saturating_add(1)).expect("index + 1 > 0"), generation }
    }
    /// The 0-based flow-table index.
    pub fn index(self) -> u32 {
        self.slot.get() - 1
    }
    /// A run-unique 64-bit id: generation in the high half, index in the low half.
    pub fn id64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index())
    }
}

/// One endpoint's TCP state in a snapshot (see [`TcpSnapshot`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SideSnapshot {
    /// Sequence number after the highest byte it sent.
    pub next_seq: u32,
    /// Last acknowledgment number it sent.
    pub ack: u32,
    /// Its advertised window, scaled.
    pub window: u32,
    /// Inferred TCP state (`stacks::tcp::TcpState` as `u8`).
    pub state: u8,
    /// OR of the flags it sent.
    pub flags_seen: u8,
    /// Its window scale shift, 0xff when none.
    pub wscale: u8,
    _reserved: u8,
}

impl SideSnapshot {
    /// A side snapshot.
    pub fn new(next_seq: u32, ack: u32, window: u32, state: u8, flags_seen: u8, wscale: Option<u8>) -> SideSnapshot {
        SideSnapshot { next_seq, ack, window, state, flags_seen, wscale: wscale.unwrap_or(0xff), _reserved: 0 }
    }
}

/// The TCP monitor's stack snapshot, copied into each event it raises: the state of both
/// endpoints and the frontier of both bytestreams *as of that event* (docs/architecture.md,
/// "Snapshots and the frontier"). A network function reads stack state only through it, so it
/// sees what a private stack processing packets one at a time would show, however far the
/// shared stack has run ahead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpSnapshot {
    /// The initiator.
    pub client: SideSnapshot,
    /// The responder.
    pub server: SideSnapshot,
    /// Contiguous bytes of the client → server and server → client streams.
    pub frontier: [u64; 2],
    /// Which update raised the event: [`snapshot_update`] values.
    pub update: u8,
    _reserved: [u8; 7],
}

impl TcpSnapshot {
    /// A snapshot of both sides and both frontiers.
    pub fn new(client: SideSnapshot, server: SideSnapshot, frontier: [u64; 2], update: u8) -> TcpSnapshot {
        TcpSnapshot { client, server, frontier, update, _reserved: [0; 7] }
    }
}

/// Values of [`TcpSnapshot::update`].
pub mod snapshot_update {
    /// No snapshot (the event is not from the TCP monitor).
    pub const NONE: u8 = 0;
    /// Raised by the update of the client's half (for a packet: the client sent or received it).
    pub const CLIENT: u8 = 1;
    /// Raised by the update of the server's half.
    pub const SERVER: u8 = 2;
}

/// One µEvent in flight (see the module docs). 128 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventDesc {
    /// Logical timestamp: the number (from 1) of the input packet that caused the event.
    pub seq: u64,
    /// Capture time of that packet, in nanoseconds.
    pub ts_ns: u64,
    /// Event-specific data (flow event kind and reason, control code, ...).
    pub aux: u64,
    /// The flow, when the event belongs to one.
    pub flow: Option<FlowRef>,
    /// The packet, when the event is about one.
    pub packet: Option<PacketHandle>,
    /// The event's type.
    pub event_type: EventType,
    /// Parsed header offsets.
    pub meta: PacketMeta,
    /// Index in the plan of the actor that published the event.
    pub publisher: u16,
    /// Index in the plan of the actor that dropped it (valid with [`desc_flags::DROPPED`]).
    pub dropped_by: u16,
    /// That actor's drop reason (index into its contract's `drop_reasons`).
    pub drop_reason: u16,
    /// [`desc_flags`] bits.
    pub flags: u8,
    _reserved: u8,
    /// The TCP monitor's snapshot (zero for events of other actors).
    pub snap: TcpSnapshot,
    /// The sequence number of the flow's first packet: a name for the flow that is the
    /// same whichever stack instance tracks it (flow-table slots are not), 0 for none.
    pub flow_start: u64,
}

const _: () = assert!(std::mem::size_of::<EventDesc>() == 128);

impl EventDesc {
    /// A new event of `event_type` published by actor `publisher`, about nothing yet.
    pub fn new(event_type: EventType, publisher: u16, seq: u64, ts_ns: u64) -> EventDesc {
        EventDesc {
            seq,
            ts_ns,
            aux: 0,
            flow: None,
            packet: None,
            event_type,
            meta: PacketMeta::default(),
            publisher,
            dropped_by: 0,
            drop_reason: 0,
            flags: 0,
            _reserved: 0,
            snap: TcpSnapshot::default(),
            flow_start: 0,
        }
    }

    /// The end-of-input control descriptor.
    pub fn end_of_input(seq: u64, ts_ns: u64) -> EventDesc {
        let mut d = EventDesc::new(builtin::CONTROL, 0, seq, ts_ns);
        d.aux = control::END;
        d
    }

    /// A shard-skip marker for packet `seq` (see [`control::SKIP`]).
    pub fn skip(seq: u64, ts_ns: u64) -> EventDesc {
        let mut d = EventDesc::new(builtin::CONTROL, 0, seq, ts_ns);
        d.aux = control::SKIP;
        d
    }

    /// True for a shard-skip marker.
    pub fn is_skip(&self) -> bool {
        self.event_type == builtin::CONTROL && self.aux == control::SKIP
    }

    /// True for the end-of-input control descriptor.
    pub fn is_end(&self) -> bool {
        self.event_type == builtin::CONTROL && self.aux == control::END
    }

    /// True for a packet's primary descriptor.
    pub fn is_primary(&self) -> bool {
        self.flags & desc_flags::PRIMARY != 0
    }

    /// True once some actor dropped it.
    pub fn is_dropped(&self) -> bool {
        self.flags & desc_flags::DROPPED != 0
    }

    /// True when the packet travels from the flow's initiator.
    pub fn to_server(&self) -> bool {
        self.meta.flags & meta_flags::TO_SERVER != 0
    }
}

/// What a `FLOW` event says, encoded in [`EventDesc::aux`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEvent {
    /// The flow's first packet was seen (published just before that packet's event).
    Start,
    /// The flow ended.
    End(FlowEndReason),
}

/// Why a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEndReason {
    /// No packet for the idle timeout of its protocol.
    Timeout,
    /// FIN seen from both sides (after the linger time).
    Fin,
    /// RST seen (after the linger time).
    Rst,
    /// Evicted to make room in a full flow table.
    Evicted,
    /// End of input.
    Shutdown,
}

impl FlowEndReason {
    /// The name used in records and stats.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowEndReason::Timeout => "timeout",
            FlowEndReason::Fin => "fin",
            FlowEndReason::Rst => "rst",
            FlowEndReason::Evicted => "evicted",
            FlowEndReason::Shutdown => "shutdown",
        }
    }
}

impl FlowEvent {
    /// Encodes into an `aux` value.
    pub fn encode(self) -> u64 {
        match self {
            FlowEvent::Start => 1,
            FlowEvent::End(r) => {
                2 | (match r {
                    FlowEndReason::Timeout => 1,
                    FlowEndReason::Fin => 2,
                    FlowEndReason::Rst => 3,
                    FlowEndReason::Evicted => 4,
                    FlowEndReason::Shutdown => 5,
                } << 8)
            }
        }
    }

    /// Decodes an `aux` value; `None` if it is not a flow event encoding.
    pub fn decode(aux: u64) -> Option<FlowEvent> {
        match (aux & 0xff, aux >> 8) {
            (1, 0) => Some(FlowEvent::Start),
            (2, 1) => Some(FlowEvent::End(FlowEndReason::Timeout)),
            (2, 2) => Some(FlowEvent::End(FlowEndReason::Fin)),
            (2, 3) => Some(FlowEvent::End(FlowEndReason::Rst)),
            (2, 4) => Some(FlowEvent::End(FlowEndReason::Evicted)),
            (2, 5) => Some(FlowEvent::End(FlowEndReason::Shutdown)),
            _ => None,
        }
    }
}

/// What a `FLOW/TCP` event says, encoded in [`EventDesc::aux`] (its snapshot has the
/// connection's state after the packet that caused it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpFlowEvent {
    /// The connection's first segment was seen.
    Start {
        /// Picked up without its handshake.
        midstream: bool,
    },
    /// Both endpoints reached ESTABLISHED.
    Established,
    /// An endpoint changed state (states as `stacks::tcp::TcpState` bytes).
    StateChange {
        /// 0 for the client, 1 for the server.
        endpoint: u8,
        /// Before.
        from: u8,
        /// After.
        to: u8,
    },
    /// A retransmitted segment.
    Retransmission {
        /// Sent by the client.
        to_server: bool,
    },
}

impl TcpFlowEvent {
    /// Encodes into an `aux` value.
    pub fn encode(self) -> u64 {
        match self {
            TcpFlowEvent::Start { midstream } => 1 | (u64::from(midstream) << 8),
            TcpFlowEvent::Established => 2,
            TcpFlowEvent::StateChange { endpoint, from, to } => {
                3 | (u64::from(endpoint) << 8) | (u64::from(from) << 16) | (u64::from(to) << 24)
            }
            TcpFlowEvent::Retransmission { to_server } => 4 | (u64::from(to_server) << 8),
        }
    }

    /// Decodes an `aux` value.
    pub fn decode(aux: u64) -> Option<TcpFlowEvent> {
        let b = |i: u32| ((aux >> (8 * i)) & 0xff) as u8;
        match b(0) {
            1 => Some(TcpFlowEvent::Start { midstream: b(1) != 0 }),
            2 => Some(TcpFlowEvent::Established),
            3 => Some(TcpFlowEvent::StateChange { endpoint: b(1), from: b(2), to: b(3) }),
            4 => Some(TcpFlowEvent::Retransmission { to_server: b(1) != 0 }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_flow_events_round_trip() {
        for e in [
            TcpFlowEvent::Start { midstream: true },
            TcpFlowEvent::Start { midstream: false },
            TcpFlowEvent::Established,
            TcpFlowEvent::StateChange { endpoint: 1, from: 3, to: 8 },
            TcpFlowEvent::Retransmission { to_server: true },
        ] {
            assert_eq!(TcpFlowEvent::decode(e.encode()), Some(e));
        }
        assert_eq!(TcpFlowEvent::decode(0), None);
    }

    #[test]
    fn flow_events_round_trip() {
        let all = [
            FlowEvent::Start,
            FlowEvent::End(FlowEndReason::Timeout),
            FlowEvent::End(FlowEndReason::Fin),
            FlowEvent::End(FlowEndReason::Rst),
            FlowEvent::End(FlowEndReason::Evicted),
            FlowEvent::End(FlowEndReason::Shutdown),
        ];
        for e in all {
            assert_eq!(FlowEvent::decode(e.encode()), Some(e));
        }
        assert_eq!(FlowEvent::decode(0), None);
        assert_eq!(FlowEvent::decode(2 | (9 << 8)), None);
    }

    #[test]
    fn flow_ref_ids() {
        let f = FlowRef::new(7, 3);
        assert_eq!(f.index(), 7);
        assert_eq!(f.id64(), (3 << 32) | 7);
        assert_eq!(std::mem::size_of::<Option<FlowRef>>(), 8);
    }
}

//! # stacks — the Microboxes µStacks
//!
//! Protocol processing done once and shared by every network function in a chain. This
//! crate has the L2/3 µStack:
//!
//! * [`parse`] — a zero-copy, never-panicking parser for Ethernet (+VLAN/QinQ), Linux SLL and
//!   raw IP frames carrying IPv4/IPv6 and TCP/UDP/ICMP; malformed input is a typed
//!   [`parse::Malformed`] reason, counted by the stack;
//! * [`flow`] — the direction-independent flow key and its symmetric hash;
//! * [`flow_table`] — flows in packet time with idle timeouts, TCP close tracking and a
//!   capacity limit with counted eviction;
//! * [`l23`] — the actor that ties them together and publishes `PKT/...` and `FLOW` events.
//!
//! The TCP monitor (twin stacks, reassembly, snapshots) comes next, on top of these.
#![forbid(unsafe_code)]

pub mod flow;
pub mod flow_table;
pub mod l23;
pub mod parse;
pub mod reassembly;
pub mod shard;
pub mod tcp;
pub mod tcp_monitor;

pub use l23::{L23Config, L23Stack, MalformedPolicy};

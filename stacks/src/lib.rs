//! # stacks — the Microboxes µStacks
//!
//! Protocol processing done once and shared by every network function in a chain. The
//! µStacks run in this order (L2/3 always, the others when the app file has their table):
//!
//! * [`l23`] — the L2/3 µStack: parses every frame once and publishes `PKT/...` and `FLOW`
//!   events, built on
//!   * [`parse`] — a zero-copy, never-panicking parser for Ethernet (+VLAN/QinQ), Linux SLL
//!     and raw IP frames carrying IPv4/IPv6 and TCP/UDP/ICMP; malformed input is a typed
//!     [`parse::Malformed`] reason, counted by the stack;
//!   * [`flow`] — the direction-independent flow key and its symmetric hash;
//!   * [`flow_table`] — flows in packet time with idle timeouts, TCP close tracking and a
//!     capacity limit with counted eviction;
//! * [`tcp_monitor`] — the TCP monitor (`[stack.tcp]`): twin TCP state ([`tcp`]),
//!   reassembled bytestreams ([`reassembly`]) and snapshots for the NFs after it.
//!
//! * [`splicer`] — the TCP splicer (`[stack.splicer]`): an active µStack that completes
//!   clients' handshakes with SYN cookies, asks a policy NF for a backend (`FLOW_REQ` /
//!   `FLOW_DEST`) and splices the two connections.
//!
//! [`shard`] spreads flows over several instances of the stacks (mode d), and [`registry`]
//! lists every µStack kind for the app loader and the engine.
//!
//! ## Adding a µStack
//!
//! One module and one line, as for an NF:
//!
//! 1. write the actor in its own module (`src/NAME.rs`); its contract *consumes* what it
//!    rewrites (`Subscription::consuming`), which makes it a µStack
//!    ([`actors::Contract::role`]);
//! 2. at the end of that module, register it: a strict config struct
//!    (`#[serde(deny_unknown_fields)]`) implementing [`registry::StackConfig`] (its
//!    `build` makes one instance from a [`registry::StackContext`]) and a
//!    `pub static STACK: registry::StackKind` naming its `[stack.NAME]` table, its actor's
//!    name, its default configuration (or none: present only with its table) and its
//!    parser;
//! 3. add `&crate::NAME::STACK` to [`registry::STACKS`], at its place in the chain.
//!
//! The app loader then accepts `[stack.NAME]`, the engine builds it (per shard in mode d,
//! per NF in mode a) and places it with the other stacks; nothing else names it.
#![forbid(unsafe_code)]

pub mod flow;
pub mod flow_table;
pub mod l23;
pub mod modify;
pub mod parse;
pub mod proxy;
pub mod reassembly;
pub mod registry;
pub mod shard;
pub mod splicer;
pub mod tcp;
pub mod tcp_monitor;

pub use l23::{L23Config, L23Stack, MalformedPolicy};

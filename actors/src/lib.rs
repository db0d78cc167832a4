//! # actors — the Microboxes actor model
//!
//! Every µStack and every network function is an **actor**: a state machine with a declared
//! [`Contract`] (what it subscribes to, what it publishes, what it modifies) and a
//! [`handle`](Actor::handle) method that answers one µEvent at a time with a [`Verdict`].
//! Actors never see rings or threads; the runtime moves [`EventDesc`]s between them.
//!
//! The story of one packet:
//!
//! 1. The [`RxStage`](io::RxStage) copies a captured frame into the shared packet pool and
//!    publishes its primary `FRAME` event.
//! 2. The L2/3 µStack (crate `stacks`) subscribes to `FRAME`, parses the headers once and
//!    rewrites the event into a typed `PKT/...` event with the offsets in
//!    [`PacketMeta`]; it publishes `FLOW` events as flows start and end.
//! 3. Each network function, a [`Stage`](stage::Stage) in the chain, handles the events it
//!    subscribed to — a subscription to a type accepts its descendants ([`event`]) — and may
//!    drop the packet or publish events of its own types (`EVENT/...`).
//! 4. The [`TxSink`](io::TxSink) emits undropped packets, counts drops by actor and reason,
//!    and releases every packet reference so the pool balances.
//!
//! The same actors run in every execution mode (docs/architecture.md, "Execution modes"):
//! [`private`] gives each NF its own stacks (mode a, the reference); [`parallel`] has the
//! splitter and merger of parallel groups and the sequence merger of sharded stacks (mode
//! d); [`dynsub`] holds per-flow subscription changes; [`observe`] logs what each NF saw and
//! said, for the consistency checker.
//!
//! Before any packet moves, the [`controller`] links every subscription to the publications
//! that can satisfy it and rejects what cannot be linked, with messages naming actor, port
//! and types:
//!
//! ```
//! use actors::contract::{Contract, Publication, Subscription};
//! use actors::event::{builtin, EventRegistry};
//!
//! let reg = EventRegistry::new();
//! let stack = Contract {
//!     name: "l23".into(),
//!     publications: vec![Publication { port: "pkt".into(), event: builtin::PKT_TCP }],
//!     ..Default::default()
//! };
//! let nf = Contract {
//!     name: "ids".into(),
//!     subscriptions: vec![Subscription::new("in", builtin::FLOW_TCP)],
//!     ..Default::default()
//! };
//! let err = actors::controller::link(&[&stack, &nf], &reg).unwrap_err();
//! assert!(err.to_string().contains("actor `ids` port `in` subscribes to `FLOW/TCP`"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod boundary;
pub mod contract;
pub mod controller;
pub mod desc;
pub mod dynsub;
pub mod event;
pub mod guest;
pub mod io;
pub mod matcher;
pub mod modify;
pub mod observe;
pub mod packet;
pub mod parallel;
pub mod private;
pub mod proxy_nf;
pub mod splice;
pub mod stage;
pub mod supervise;

pub use contract::{
    Actor, ActorError, ActorRole, Chunk, Context, Contract, Modifies, Publication, Subscription, Verdict,
};
pub use desc::{EventDesc, FlowEndReason, FlowEvent, FlowRef, PacketMeta};
pub use event::{builtin, EventRegistry, EventType};

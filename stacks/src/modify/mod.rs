//! Bytestream modification in the middle, without terminating the connection
//! (docs/modification.md): the TCP monitor's `[stack.tcp.modify]`.
//!
//! * [`edits`] — one direction's modification list and its original ↔ output maps;
//! * [`forward`] — one connection forwarded at stream level: rewriting, re-segmenting,
//!   seq/ack remapping, retransmissions;
//! * [`ModifyConfig`] and [`Board`] — the limits, and where NFs' requests meet the monitor.

pub mod edits;
pub mod forward;

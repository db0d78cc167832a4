//! # nfs — Microboxes network functions
//!
//! Each network function is an [`actors::Actor`]: it declares its contract (subscriptions,
//! publications, what it modifies, its drop reasons), gets the events it subscribed to, and
//! answers a verdict. None of them parses headers: the L2/3 µStack did that once, and an NF
//! reads addresses and ports through [`actors::packet::PacketView`].
//!
//! * [`firewall`] — ordered allow/drop rules, per flow (stateful) or per packet;
//! * [`flow_stats`] — per-flow packets and bytes each way as Suricata-style JSON lines.
//!
//! [`build`] makes an NF from its app-file table: the engine calls it for every `[[nf]]`.
#![forbid(unsafe_code)]

pub mod common;
pub mod firewall;
pub mod flow_stats;

use actors::Actor;
pub use common::NfCommon;

/// The NF kinds this crate provides, for messages.
pub const KINDS: &[&str] = &["firewall", "flow_stats"];

/// Builds an NF of `kind` from the kind-specific part of its app-file table.
pub fn build(kind: &str, common: &NfCommon, options: toml::Table) -> Result<Box<dyn Actor>, Vec<String>> {
    match kind {
        "firewall" => Ok(Box::new(firewall::Firewall::from_options(common, options)?)),
        "flow_stats" => Ok(Box::new(flow_stats::FlowStats::from_options(common, options)?)),
        other => Err(vec![format!(
            "nf `{}`: unknown kind `{other}` (known kinds: {})",
            common.name,
            KINDS.join(", ")
        )]),
    }
}

//! What every network function shares: its name, the app-file subscription override, the
//! strict parsing of its options, and the form of its messages (``nf `NAME` (KIND): …``).
//!
//! In the app file each `[[nf]]` table has the common keys `name`, `kind`, `subscribe`
//! (event types replacing the NF's main input port), `filter` (a [`FlowMatch`] on that port),
//! `from` (the publisher to take them from) and `side` (`"client"` or `"server"`: only
//! the TCP monitor's events raised by that half's update), `direction` and `on_failure` (what
//! the platform does when the NF fails: `stop`, `bypass`, `drop` or `restart`); every other
//! key belongs to the kind's own config struct, which denies unknown keys.

use actors::contract::Side;
use actors::event::{EventRegistry, EventType};
use actors::matcher::FlowMatch;
use actors::Subscription;
use serde::de::DeserializeOwned;

/// The common part of an NF's app-file entry, already resolved.
#[derive(Clone, Debug, Default)]
pub struct NfCommon {
    /// Unique name.
    pub name: String,
    /// Types replacing the main port's default subscription.
    pub subscribe: Option<Vec<EventType>>,
    /// Filter on the main port.
    pub filter: Option<FlowMatch>,
    /// Publisher of the main port's events.
    pub from: Option<String>,
    /// Only TCP-monitor events of this half's updates, on the main port.
    pub side: Option<Side>,
    /// Only events of packets sent this way, on the main port.
    pub to_server: Option<bool>,
    /// What the platform does when this NF fails (`on_failure`; see [`actors::supervise`]).
    pub on_failure: actors::supervise::OnFailure,
    /// Where a running NF finds new generations of its options (set by the engine for every
    /// NF of a run; `None` elsewhere). Not part of the app file.
    pub reload: Option<std::sync::Arc<crate::reload::ReloadPort>>,
    /// The packets (numbers in the input, `[from, until)`) whose events this NF handles, when
    /// a relink adds or removes it (or may remove it while the run goes on) (docs/reconfiguration.md); `None`: all. Not part
    /// of the app file.
    /// The cell holds the first packet of `until` (`u64::MAX` while it stays): a live
    /// removal has RX stamp it.
    pub active: Option<(u64, std::sync::Arc<std::sync::atomic::AtomicU64>)>,
}

impl NfCommon {
    /// An NF named `name` with its default subscriptions.
    pub fn named(name: &str) -> NfCommon {
        NfCommon { name: name.to_string(), ..Default::default() }
    }

    /// A message about this NF, of kind `kind`: ``nf `NAME` (KIND): MSG``.
    pub fn error(&self, kind: &str, msg: impl std::fmt::Display) -> String {
        format!("nf `{}` ({kind}): {msg}", self.name)
    }

    /// The main input port's subscriptions: the override if any, else `default`.
    pub fn main_port(&self, port: &str, default: &[EventType]) -> Vec<Subscription> {
        let types = self.subscribe.as_deref().unwrap_or(default);
        types
            .iter()
            .map(|t| Subscription {
                filter: self.filter.clone(),
                from: self.from.clone(),
                side: self.side,
                to_server: self.to_server,
                ..Subscription::new(port, *t)
            })
            .collect()
    }
}

/// Deserializes a kind's options from the rest of its table, naming the NF in errors; see
/// [`deserialize_all`] (the options are `Some` when only keys that have defaults were bad).
pub fn options<T: DeserializeOwned>(nf: &str, kind: &str, table: toml::Table) -> (Option<T>, Vec<String>) {
    let (cfg, errs) = deserialize_all(table, "");
    (cfg, errs.into_iter().map(|e| format!("nf `{nf}` ({kind}): {e}")).collect())
}

pub use runtime::files::{describe, deserialize_all};

/// Resolves a list of type names against the registry.
pub fn resolve_types(nf: &str, names: &[String], reg: &EventRegistry) -> Result<Vec<EventType>, String> {
    names.iter().map(|n| reg.resolve(n).map_err(|e| format!("nf `{nf}`: key `subscribe`: {e}"))).collect()
}

/// Where an NF that reads TCP payloads takes them from (the `on` key of `dpi` and
/// `signature_match`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadSource {
    /// The TCP monitor's reassembled bytestreams (`DATA_RDY`).
    #[default]
    Stream,
    /// Packet payloads (`PKT/TCP`, `PKT/UDP`) as they arrive.
    Packets,
}

impl NfCommon {
    /// The contract of an NF of `kind` that publishes nothing, modifies nothing and drops
    /// for the given reasons.
    pub fn contract(
        &self,
        kind: &str,
        subscriptions: Vec<Subscription>,
        drop_reasons: Vec<String>,
    ) -> actors::Contract {
        actors::Contract {
            name: self.name.clone(),
            kind: kind.into(),
            subscriptions,
            publications: vec![],
            modifies: actors::contract::Modifies::default(),
            drop_reasons,
        }
    }

    /// The contract of a policy NF of `kind` (a load balancer, the proxy's selector): it takes
    /// `FLOW_REQ` on its main port `requests` and answers `FLOW_DEST` on port `dest`.
    pub fn flow_dest_contract(&self, kind: &str) -> actors::Contract {
        let mut c = self.contract(kind, self.main_port("requests", &[actors::event::builtin::FLOW_REQ]), vec![]);
        c.publications = vec![actors::Publication { port: "dest".into(), event: actors::event::builtin::FLOW_DEST }];
        c
    }
}

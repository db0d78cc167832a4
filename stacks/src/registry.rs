//! The µStack registry: every kind of µStack the engine can run, in chain order.
//!
//! Each µStack module registers itself where it is defined (STYLE.md habit 13): it exports
//! one [`StackKind`] — the name of its `[stack.NAME]` table in an app file, the name its
//! actor runs under, its configuration parser, and, through the parsed [`StackConfig`], its
//! constructor. [`STACKS`] lists them, one line each, in the order they run:
//! `l23 → tcp → splicer → proxy`. Nothing outside this crate names a µStack: the app loader parses the
//! `[stack.*]` tables with [`configure`], and the engine builds one instance of every
//! configured stack per shard with [`ConfiguredStack::build`].
//!
//! Invariants: the stacks of an app are in [`STACKS`] order; a stack with a default
//! configuration ([`StackKind::default`]) is always present, the others only when their
//! table is; every stack's actor consumes what it subscribes to, so its contract says it is
//! a µStack ([`actors::Contract::role`]).

use std::fmt::Debug;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actors::contract::StreamAccess;
use actors::Actor;
use runtime::ports::LinkType;

/// Every µStack kind, in chain order (each module's registration, one line each).
pub static STACKS: &[&StackKind] =
    &[&crate::l23::STACK, &crate::tcp_monitor::STACK, &crate::splicer::STACK, &crate::proxy::actor::STACK];

/// A kind of µStack: what an app file calls it, and how to make it.
#[derive(Debug)]
pub struct StackKind {
    /// The app file's table: `[stack.NAME]`.
    pub table: &'static str,
    /// The name its actor runs under (and reserved for the runtime: no NF may take it).
    pub actor: &'static str,
    /// The configuration used when the app has no table for it; `None`: the stack runs only
    /// when its table is present.
    pub default: Option<fn() -> Arc<dyn StackConfig>>,
    /// Parses and validates the stack's table.
    pub parse: ParseStack,
}

/// A µStack's parsed, validated configuration: a constructor of its instances.
pub trait StackConfig: Debug + Send + Sync {
    /// Builds one instance, its actor named `actor`.
    fn build(&self, actor: &str, cx: &StackContext<'_>) -> StackInstance;

    /// How many flow ids one instance can hand out, when the stack names flows: shard `k`'s
    /// instance names its flows from `k ×` this (see [`flow_ids_per_instance`]).
    fn flow_ids(&self) -> Option<u32> {
        None
    }

    /// Why the stack, so configured, sends frames of its own (through TX's loopback) —
    /// which only one shared instance can (modes b and c) — or `None` when it does not.
    fn sends_frames(&self) -> Option<&'static str> {
        None
    }
}

/// What an instance is built for.
#[derive(Clone, Copy, Debug)]
pub struct StackContext<'a> {
    /// The capture's link type (frames are parsed by it).
    pub link: LinkType,
    /// The shard this instance serves (0 when the stacks are not sharded).
    pub shard: u32,
    /// The first flow id of this shard's range (0 for shard 0).
    pub flow_base: u32,
    /// Where TX reports how far events have left the chain (stacks holding memory for the
    /// NFs free it by this).
    pub completed: &'a Arc<AtomicU64>,
    /// Some NF asked for TCP-monitor updates of a `side`: also raise the receiver's updates.
    pub receiver_events: bool,
    /// The app's NFs that run inside the split proxy µStack, in app-file order (empty for
    /// the other stacks; [`crate::proxy::actor`]).
    pub proxy_nfs: &'a [crate::proxy::actor::ProxyNfSpec],
}

impl<'a> StackContext<'a> {
    /// The context the controller links an app with (`mbox check`-time problems,
    /// `mbox graph`): Ethernet, one shard; not a run's.
    pub fn for_linking(
        completed: &'a Arc<AtomicU64>,
        receiver_events: bool,
        proxy_nfs: &'a [crate::proxy::actor::ProxyNfSpec],
    ) -> StackContext<'a> {
        StackContext { link: LinkType::Ethernet, shard: 0, flow_base: 0, completed, receiver_events, proxy_nfs }
    }
}

/// One built instance of a µStack.
pub struct StackInstance {
    /// The actor.
    pub actor: Box<dyn Actor>,
    /// The bytestreams it reassembles, for the NFs after it (the TCP monitor's).
    pub streams: Option<Arc<dyn StreamAccess>>,
    /// The feedback path and frames of an active µStack (the splicer's), for TX.
    pub loopback: Option<Arc<actors::splice::Loopback>>,
}

/// Parses a `[stack.NAME]` table into its configuration, or every problem with it.
pub type ParseStack = fn(toml::Value) -> Result<Arc<dyn StackConfig>, Vec<StackConfigError>>;

/// A problem with a `[stack.NAME]` table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct StackConfigError {
    /// The app file's key, e.g. `stack.tcp.reassembly`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl StackConfigError {
    /// A problem with key `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> StackConfigError {
        StackConfigError { key: key.into(), message: message.into() }
    }
}

/// Deserializes a `[stack.NAME]` table (at key path `table`, e.g. `stack.tcp.reassembly`)
/// into a strict config struct, reporting every bad key
/// ([`runtime::files::deserialize_all_keyed`]).
pub fn parse_table<T: serde::de::DeserializeOwned>(v: toml::Value, table: &str) -> Result<T, Vec<StackConfigError>> {
    let toml::Value::Table(t) = v else {
        return Err(vec![StackConfigError::new(table, format!("must be a table, not {}", v.type_str()))]);
    };
    let (cfg, errs) = runtime::files::deserialize_all_keyed::<T>(t, &format!("{table}."));
    let errs: Vec<StackConfigError> = errs
        .into_iter()
        .map(|e| StackConfigError::new(if e.key.is_empty() { table.to_string() } else { e.key }, e.message))
        .collect();
    match cfg {
        Some(c) if errs.is_empty() => Ok(c),
        _ => Err(errs),
    }
}

/// A µStack of an app: its kind and its configuration.
#[derive(Clone, Debug)]
pub struct ConfiguredStack {
    /// Its registration.
    pub kind: &'static StackKind,
    /// Its configuration.
    pub config: Arc<dyn StackConfig>,
}

impl ConfiguredStack {
    /// The name its actor runs under.
    pub fn name(&self) -> &'static str {
        self.kind.actor
    }

    /// Builds one instance, its actor named [`Self::name`].
    pub fn build(&self, cx: &StackContext<'_>) -> StackInstance {
        self.config.build(self.kind.actor, cx)
    }
}

/// Parses the `[stack.*]` tables of an app file into its stacks, in chain order. Collects
/// every problem: each table's, and one per table no µStack owns.
pub fn configure(mut tables: toml::Table) -> Result<Vec<ConfiguredStack>, Vec<StackConfigError>> {
    let mut stacks = Vec::new();
    let mut errs = Vec::new();
    for &kind in STACKS {
        let config = match (tables.remove(kind.table), kind.default) {
            (Some(v), _) => (kind.parse)(v),
            (None, Some(default)) => Ok(default()),
            (None, None) => continue,
        };
        match config {
            Ok(config) => stacks.push(ConfiguredStack { kind, config }),
            Err(e) => errs.extend(e),
        }
    }
    for k in tables.keys() {
        errs.push(StackConfigError::new(format!("stack.{k}"), format!("unknown µStack (known: {})", known())));
    }
    if errs.is_empty() {
        Ok(stacks)
    } else {
        Err(errs)
    }
}

/// The stacks an app without `[stack.*]` tables runs (those with a default configuration).
pub fn defaults() -> Vec<ConfiguredStack> {
    configure(toml::Table::new()).expect("default configurations are valid")
}

/// The table names of every µStack, for messages: `l23, tcp`.
pub fn known() -> String {
    STACKS.iter().map(|k| k.table).collect::<Vec<_>>().join(", ")
}

/// The flow ids one instance of `stacks` may hand out: the smallest range any of them
/// needs (all of `u32` when none names flows). Shard `k`'s flows start at `k ×` this.
pub fn flow_ids_per_instance(stacks: &[ConfiguredStack]) -> u32 {
    stacks.iter().filter_map(|s| s.config.flow_ids()).min().unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn chain_order_defaults_and_unknown_tables() {
        let names = |s: &[ConfiguredStack]| s.iter().map(|s| s.name()).collect::<Vec<_>>();
        assert_eq!(names(&defaults()), ["l23"], "L2/3 always runs");
        let both = configure(table("[tcp]\n[l23]\nmax_flows = 5\n")).unwrap();
        assert_eq!(names(&both), ["l23", "tcp"], "chain order, not file order");
        assert_eq!(flow_ids_per_instance(&both), 5);
        let e = configure(table("[ip]\n[l23]\nmax_flows = 0\n")).unwrap_err();
        assert_eq!(
            e,
            [
                StackConfigError::new("stack.l23", "max_flows must be at least 1"),
                StackConfigError::new("stack.ip", "unknown µStack (known: l23, tcp, splicer, proxy)"),
            ]
        );
    }
}

//! The application file: which µStacks and network functions run, with their options.
//!
//! ```toml
//! parallel = [["fw", "ids"]] # optional, before any table: NF groups run in parallel in mode d
//!
//! [runtime]                  # all keys optional
//! pool_buffers = 4096        # packet buffers in the shared pool
//! buffer_size = 10240        # bytes per buffer; larger frames are dropped by rx (counted)
//! ring_capacity = 1024       # descriptors per ring between two stages (rounded up to 2^n)
//! shards = 2                 # mode d: stack instances flows are sharded across
//!
//! [stack.l23]                # the L2/3 µStack; all keys optional (see stacks::l23)
//! max_flows = 100000
//! malformed = "drop"
//!
//! [stack.tcp]                # optional: the TCP monitor (twin state, reassembly, snapshots)
//! memory_limit = 268435456   # global reassembly memory, bytes
//! [stack.tcp.reassembly]     # per-direction limits and overlap policy (see stacks::reassembly)
//! overlap = "first"
//!
//! [[nf]]                     # network functions, in chain order
//! name = "fw"                # unique; letters, digits, `_`, `-`
//! kind = "firewall"          # one of the kinds nfs registers (nfs::configure lists them)
//! subscribe = ["PKT"]        # optional: replaces the NF's main input types
//! filter = { proto = "tcp" } # optional: only events whose packet matches
//! from = "l23"               # optional: take them only from this publisher
//! side = "client"            # optional: only TCP-monitor events of the client's (or server's) updates
//! direction = "to_server"    # optional: only events of packets sent this way (or "to_client")
//! # ... the kind's own keys
//! ```
//!
//! The `[stack.*]` tables are the µStacks' own (parsed through [`stacks::registry`], which
//! lists them in chain order); the `[[nf]]` entries are the NFs' (parsed through
//! [`nfs::configure`]). Unknown keys are errors at every level. Loading collects every
//! problem — file, key and reason — and reports them together.

use std::collections::HashSet;
use std::path::Path;

use actors::event::EventRegistry;
use actors::matcher::FlowMatch;
use nfs::{NfCommon, NfConfig};
use serde::Deserialize;
use stacks::registry::{self, ConfiguredStack};

/// `[runtime]`: sizes of the shared structures.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Packet buffers in the pool.
    pub pool_buffers: u32,
    /// Bytes per buffer.
    pub buffer_size: u32,
    /// Descriptors per ring.
    pub ring_capacity: u32,
    /// Mode d: stack instances that flows are sharded across.
    pub shards: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { pool_buffers: 4096, buffer_size: 10240, ring_capacity: 1024, shards: 2 }
    }
}

/// One `[[nf]]` entry, checked but not yet built.
#[derive(Clone, Debug)]
pub struct NfEntry {
    /// Kind.
    pub kind: String,
    /// Name, resolved subscriptions, filter, `from`.
    pub common: NfCommon,
    /// The kind's own options.
    pub config: NfConfig,
}

/// A loaded application file.
#[derive(Clone, Debug)]
pub struct App {
    /// Where it came from (for messages).
    pub source: String,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// The µStacks, in chain order (`[stack.*]`; the L2/3 stack always).
    pub stacks: Vec<ConfiguredStack>,
    /// The NFs in chain order.
    pub nfs: Vec<NfEntry>,
    /// Every event type the app can name.
    pub registry: EventRegistry,
    /// `parallel = [["a", "b"], ...]`: NF groups that run in parallel in mode d (when empty,
    /// mode d groups consecutive read-only NFs itself).
    pub parallel: Vec<Vec<String>>,
}

/// Everything wrong with an app file, one problem per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct AppError(pub Vec<String>);

/// Names the runtime uses for its own actors: RX, TX and every µStack's.
pub fn reserved_names() -> Vec<&'static str> {
    let mut names = vec!["rx", "tx"];
    names.extend(registry::STACKS.iter().map(|k| k.actor));
    names
}

impl App {
    /// Reads and parses an app file.
    pub fn load(path: &Path) -> Result<App, AppError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AppError(vec![format!("{}: cannot read the app file: {e}", path.display())]))?;
        App::parse(&text, &path.display().to_string())
    }

    /// Parses app-file text; `source` names it in messages.
    pub fn parse(text: &str, source: &str) -> Result<App, AppError> {
        let mut top: toml::Table =
            toml::from_str(text).map_err(|e| AppError(vec![format!("{source}: {}", e.to_string().trim_end())]))?;
        let mut errs = Vec::new();
        let at = |key: &str, msg: &str| format!("{source}: key `{key}`: {msg}");

        let runtime = match top.remove("runtime") {
            None => RuntimeConfig::default(),
            Some(v) => RuntimeConfig::deserialize(v).unwrap_or_else(|e| {
                errs.push(at("runtime", e.message()));
                RuntimeConfig::default()
            }),
        };
        if runtime.pool_buffers < 2 {
            errs.push(at("runtime.pool_buffers", "must be at least 2"));
        }
        if runtime.buffer_size < 64 {
            errs.push(at("runtime.buffer_size", "must be at least 64 bytes"));
        }
        if runtime.ring_capacity < 2 {
            errs.push(at("runtime.ring_capacity", "must be at least 2"));
        }
        if !(1..=64).contains(&runtime.shards) {
            errs.push(at("runtime.shards", "must be between 1 and 64"));
        }

        let tables = match top.remove("stack") {
            None => toml::Table::new(),
            Some(toml::Value::Table(tables)) => tables,
            Some(other) => {
                errs.push(at("stack", &format!("must be a table, not {}", other.type_str())));
                toml::Table::new()
            }
        };
        let stacks = registry::configure(tables).unwrap_or_else(|problems| {
            errs.extend(problems.iter().map(|e| at(&e.key, &e.message)));
            Vec::new()
        });

        let mut registry = EventRegistry::new();
        let mut nfs = Vec::new();
        match top.remove("nf") {
            None => {}
            Some(toml::Value::Array(items)) => {
                let mut seen = HashSet::new();
                for (i, item) in items.into_iter().enumerate() {
                    match nf_entry(i, item, source, &mut registry) {
                        Ok(nf) => {
                            let name = &nf.common.name;
                            let reserved = reserved_names();
                            if reserved.contains(&name.as_str()) {
                                errs.push(format!(
                                    "{source}: nf `{name}`: the name is reserved for the runtime ({})",
                                    reserved.join(", ")
                                ));
                            } else if !seen.insert(name.clone()) {
                                errs.push(format!("{source}: nf `{name}`: two NFs have this name"));
                            }
                            nfs.push(nf);
                        }
                        Err(mut e) => errs.append(&mut e),
                    }
                }
            }
            Some(other) => {
                errs.push(at("nf", &format!("must be an array of tables ([[nf]]), not {}", other.type_str())))
            }
        }
        let parallel = match top.remove("parallel") {
            None => Vec::new(),
            Some(v) => match Vec::<Vec<String>>::deserialize(v) {
                Ok(groups) => {
                    for g in &groups {
                        for n in g {
                            if !nfs.iter().any(|nf: &NfEntry| &nf.common.name == n) {
                                errs.push(at("parallel", &format!("`{n}` is not an NF of this app")));
                            }
                        }
                        if g.len() < 2 {
                            errs.push(at("parallel", &format!("group {g:?} needs at least two NFs")));
                        }
                    }
                    groups
                }
                Err(e) => {
                    errs.push(at("parallel", &format!("{} (expected a list of lists of NF names)", e.message())));
                    Vec::new()
                }
            },
        };
        for k in top.keys() {
            errs.push(at(k, "unknown key (known: runtime, stack, nf, parallel)"));
        }
        if errs.is_empty() {
            Ok(App { source: source.to_string(), runtime, stacks, nfs, registry, parallel })
        } else {
            Err(AppError(errs))
        }
    }
}

fn nf_entry(i: usize, item: toml::Value, source: &str, registry: &mut EventRegistry) -> Result<NfEntry, Vec<String>> {
    let toml::Value::Table(mut t) = item else {
        return Err(vec![format!("{source}: nf #{}: must be a table", i + 1)]);
    };
    let mut errs = Vec::new();
    let mut string = |t: &mut toml::Table, key: &str, required: bool, who: &str| -> Option<String> {
        match t.remove(key) {
            Some(toml::Value::String(s)) => Some(s),
            Some(other) => {
                errs.push(format!("{source}: {who}: key `{key}` must be a string, not {}", other.type_str()));
                None
            }
            None if required => {
                errs.push(format!("{source}: {who}: missing key `{key}`"));
                None
            }
            None => None,
        }
    };
    let who = format!("nf #{}", i + 1);
    let name = string(&mut t, "name", true, &who);
    let who = name.as_ref().map_or(who, |n| format!("nf `{n}`"));
    let kind = string(&mut t, "kind", true, &who);
    let from = string(&mut t, "from", false, &who);
    let side_raw = string(&mut t, "side", false, &who);
    let direction_raw = string(&mut t, "direction", false, &who);
    let side = match side_raw.as_deref() {
        None => None,
        Some("client") => Some(actors::contract::Side::Client),
        Some("server") => Some(actors::contract::Side::Server),
        Some("both") => Some(actors::contract::Side::Both),
        Some(other) => {
            errs.push(format!("{source}: {who}: key `side`: `{other}` is not \"client\", \"server\" or \"both\""));
            None
        }
    };
    if let Some(n) = &name {
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') || n.len() > 32 {
            errs.push(format!("{source}: {who}: names use 1-32 letters, digits, `_` or `-`"));
        }
    }
    let subscribe = match t.remove("subscribe") {
        None => None,
        Some(v) => match Vec::<String>::deserialize(v) {
            Ok(list) if list.is_empty() => {
                errs.push(format!("{source}: {who}: key `subscribe` is empty; remove it to use the defaults"));
                None
            }
            Ok(list) => match nfs::common::resolve_types(name.as_deref().unwrap_or("?"), &list, registry) {
                Ok(types) => Some(types),
                Err(e) => {
                    errs.push(format!("{source}: {e}"));
                    None
                }
            },
            Err(e) => {
                errs.push(format!("{source}: {who}: key `subscribe`: {}", e.message()));
                None
            }
        },
    };
    let filter = match t.remove("filter") {
        None => None,
        Some(v) => match FlowMatch::deserialize(v) {
            Ok(f) => Some(f),
            Err(e) => {
                errs.push(format!("{source}: {who}: key `filter`: {}", e.message()));
                None
            }
        },
    };
    let (Some(name), Some(kind)) = (name, kind) else { return Err(errs) };
    let to_server = match direction_raw.as_deref() {
        None => None,
        Some("to_server") => Some(true),
        Some("to_client") => Some(false),
        Some(other) => {
            errs.push(format!("{source}: {who}: key `direction`: `{other}` is not \"to_server\" or \"to_client\""));
            None
        }
    };
    let common = NfCommon { name, subscribe, filter, from, side, to_server };
    match nfs::configure(&kind, &common, t, registry) {
        Ok(config) if errs.is_empty() => Ok(NfEntry { kind, common, config }),
        Ok(_) => Err(errs),
        Err(e) => {
            errs.extend(e.into_iter().map(|e| format!("{source}: {e}")));
            Err(errs)
        }
    }
}

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
//! idle_spin_rounds = 8       # a core with no work spins this many rounds,
//! idle_yield_rounds = 64     # then yields until this many,
//! idle_sleep_us = 50         # then sleeps this long per round (0: never sleeps, yields)
//! idle_sleep_after_us = 0    # ...once idle this long
//! idle_doorbell = true       # a push into a ring wakes a sleeping core at once
//!
//! [port]                     # optional: live receive rings (mbox run --iface; flags override)
//! block_size = 262144        # bytes per AF_PACKET ring block, a multiple of 4096
//! blocks = 64                # blocks per ring, one ring per interface
//! block_timeout_ms = 1       # a partly filled block is handed over after this long
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
//! [`nfs::configure`]). Unknown keys are errors at every level.
//!
//! **Paths.** A file an NF *reads* (signature_match's `rules`) is relative to the app
//! file's directory when relative ([`App::load`]; [`App::parse`], which has no file, resolves
//! against the current directory, and [`App::parse_in`] against a directory given). A file
//! an NF *writes* (every `output`) stays relative to the current directory — the run's
//! output directory — so that outputs never land among the app files. Absolute paths are
//! used as they are.
//!
//! **Errors.** Loading collects every problem of every stage — each bad key with its value
//! and what is allowed (``key `runtime.shards` ``, ``nf `fw` (firewall): rule 2: key
//! `dst_port` ``), unknown kinds, every NF's options, duplicate or reserved names,
//! `parallel`, and the links between actors as modes b, c and d chain them (an NF reading
//! what only an absent µStack publishes gets one line naming the `[stack.*]` table to add) —
//! and reports them together, so every subcommand that loads an app prints the same list.
//! Links are checked for the NFs up to the first one whose options are wrong (the rest may
//! depend on what it publishes). The app file and rule files are read through
//! [`runtime::files::read_text`]: regular files only, at most 1 MiB and 64 MiB.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actors::controller;
use actors::event::{EventRegistry, EventType};
use actors::matcher::FlowMatch;
use actors::{Actor, Contract, Subscription};
use nfs::{NfCommon, NfConfig};
use serde::Deserialize;
use stacks::registry::{self, ConfiguredStack, StackContext, StackKind};

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
    /// Idle rounds a core thread spins before yielding ([`runtime::executor::IdlePolicy`]).
    pub idle_spin_rounds: u32,
    /// Idle rounds (spinning plus yielding) before it sleeps.
    pub idle_yield_rounds: u32,
    /// Its sleep per idle round after that, in microseconds; 0: it yields instead.
    pub idle_sleep_us: u32,
    /// ...once it has been idle this long, in microseconds.
    pub idle_sleep_after_us: u32,
    /// Its sleep is a wait on the process's doorbell, which a push into any ring ends
    /// ([`runtime::doorbell`]); false: a plain sleep.
    pub idle_doorbell: bool,
}

impl RuntimeConfig {
    /// The executor's idle policy of these settings.
    pub fn idle_policy(&self) -> runtime::executor::IdlePolicy {
        runtime::executor::IdlePolicy {
            spin_rounds: self.idle_spin_rounds,
            yield_rounds: self.idle_yield_rounds,
            sleep: std::time::Duration::from_micros(u64::from(self.idle_sleep_us)),
            sleep_after: std::time::Duration::from_micros(u64::from(self.idle_sleep_after_us)),
            doorbell: self.idle_doorbell,
            ..Default::default()
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let idle = runtime::executor::IdlePolicy::default();
        RuntimeConfig {
            pool_buffers: 4096,
            buffer_size: 10240,
            ring_capacity: 1024,
            shards: 2,
            idle_spin_rounds: idle.spin_rounds,
            idle_yield_rounds: idle.yield_rounds,
            idle_sleep_us: u32::try_from(idle.sleep.as_micros()).unwrap_or(u32::MAX),
            idle_sleep_after_us: u32::try_from(idle.sleep_after.as_micros()).unwrap_or(u32::MAX),
            idle_doorbell: idle.doorbell,
        }
    }
}

/// `[port]`: the live interfaces' `AF_PACKET` receive rings (`mbox run --iface`, docs/live.md);
/// `--ring-block-size`, `--ring-blocks` and `--ring-timeout-ms` override it. Ignored when the
/// input is a capture file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortConfig {
    /// Bytes per ring block: a positive multiple of 4096; also the largest frame the ring takes.
    pub block_size: u32,
    /// Blocks per ring (one ring per interface).
    pub blocks: u32,
    /// A partly filled block is handed over after this many milliseconds (1 or more).
    pub block_timeout_ms: u32,
}

impl Default for PortConfig {
    fn default() -> Self {
        let r = runtime::ports::RingConfig::default();
        PortConfig { block_size: r.block_size, blocks: r.block_count, block_timeout_ms: r.block_timeout_ms }
    }
}

impl PortConfig {
    /// The ring geometry it names, each of `block_size`, `blocks`, `block_timeout_ms` given
    /// (the command line's `--ring-block-size`, `--ring-blocks`, `--ring-timeout-ms`)
    /// replacing its key.
    pub fn ring_with(
        &self,
        block_size: Option<u32>,
        blocks: Option<u32>,
        block_timeout_ms: Option<u32>,
    ) -> runtime::ports::RingConfig {
        runtime::ports::RingConfig {
            block_size: block_size.unwrap_or(self.block_size),
            block_count: blocks.unwrap_or(self.blocks),
            block_timeout_ms: block_timeout_ms.unwrap_or(self.block_timeout_ms),
        }
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
    /// `[port]`: the live receive rings.
    pub port: PortConfig,
    /// The µStacks, in chain order (`[stack.*]`; the L2/3 stack always).
    pub stacks: Vec<ConfiguredStack>,
    /// The NFs in chain order (the actors after the µStacks).
    pub nfs: Vec<NfEntry>,
    /// The NFs that run inside the split proxy µStack (`[stack.proxy]`), in file order:
    /// proxy NFs such as `cache` ([`nfs::NfOptions::proxy_nf`]); see [`App::proxy_specs`].
    pub proxy_nfs: Vec<NfEntry>,
    /// Every event type the app can name.
    pub registry: EventRegistry,
    /// `parallel = [["a", "b"], ...]`: NF groups that run in parallel in mode d (when empty,
    /// mode d groups consecutive read-only NFs itself).
    pub parallel: Vec<Vec<String>>,
    /// What loads but will not work as the file probably means (e.g. an `after_dpi` gate
    /// that opens late): `mbox run` and `mbox check` print them.
    pub warnings: Vec<String>,
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
    /// Reads and parses an app file: a regular file of at most
    /// [`MAX_CONFIG_BYTES`](runtime::files::MAX_CONFIG_BYTES) (anything else is refused, never
    /// read without end). Relative paths of the files its NFs read (`rules`) are relative to
    /// the app file's directory.
    pub fn load(path: &Path) -> Result<App, AppError> {
        let text = runtime::files::read_text(path, runtime::files::MAX_CONFIG_BYTES)
            .map_err(|e| AppError(vec![format!("{}: cannot read the app file: {e}", path.display())]))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        App::parse_in(&text, &path.display().to_string(), dir)
    }

    /// Parses app-file text; `source` names it in messages. Relative paths of the files its
    /// NFs read are relative to the current directory (there is no file to be relative to);
    /// see [`App::parse_in`].
    pub fn parse(text: &str, source: &str) -> Result<App, AppError> {
        App::parse_in(text, source, Path::new(""))
    }

    /// Parses app-file text whose relative input paths (`rules`) are relative to `dir`.
    /// Every problem of every stage is collected — keys and their values, kinds, each NF's
    /// options, names, `parallel`, and the links between the actors (as modes b, c and d
    /// chain them) — and reported together, in file order within each stage.
    pub fn parse_in(text: &str, source: &str, dir: &Path) -> Result<App, AppError> {
        App::parse_with(text, source, dir, EventRegistry::new())
    }

    /// As [`App::load`], with event types numbered as in `registry` first (types it has
    /// keep their ids; new ones come after): a relink's new file, numbered as the running
    /// graph (docs/reconfiguration.md). Check the file with [`App::load`] first: types the
    /// registry holds resolve here even when no NF of this file registers them.
    pub fn load_with_registry(path: &Path, registry: EventRegistry) -> Result<App, AppError> {
        let text = runtime::files::read_text(path, runtime::files::MAX_CONFIG_BYTES)
            .map_err(|e| AppError(vec![format!("{}: cannot read the app file: {e}", path.display())]))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        App::parse_with(&text, &path.display().to_string(), dir, registry)
    }

    fn parse_with(text: &str, source: &str, dir: &Path, mut registry: EventRegistry) -> Result<App, AppError> {
        let mut top: toml::Table =
            toml::from_str(text).map_err(|e| AppError(vec![format!("{source}: {}", e.to_string().trim_end())]))?;
        let mut errs = Vec::new();
        let at = |key: &str, msg: &str| format!("{source}: key `{key}`: {msg}");

        let runtime = parse_runtime(top.remove("runtime"), &mut errs);
        let port = parse_port(top.remove("port"), &mut errs);
        let mut errs: Vec<String> = errs.into_iter().map(|e| format!("{source}: {e}")).collect();

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

        let (nfs, all_nfs_ok) = match top.remove("nf") {
            None => (Vec::new(), true),
            Some(toml::Value::Array(items)) => parse_nfs(items, source, dir, &mut registry, &mut errs),
            Some(other) => {
                errs.push(at("nf", &format!("must be an array of tables ([[nf]]), not {}", other.type_str())));
                (Vec::new(), false)
            }
        };
        let (proxy_nfs, nfs): (Vec<NfEntry>, Vec<NfEntry>) =
            nfs.into_iter().partition(|nf| nf.config.proxy_nf().is_some());
        errs.extend(proxy_problems(&stacks, &proxy_nfs).into_iter().map(|p| format!("{source}: {p}")));
        let parallel = parse_parallel(top.remove("parallel"), &nfs, all_nfs_ok, &mut errs, &at);
        for k in top.keys() {
            errs.push(at(k, "unknown key (known: runtime, port, stack, nf, parallel)"));
        }
        if !stacks.is_empty() {
            // Links of the NFs that configured (all, or those before the first that did not).
            errs.extend(link_problems(&stacks, &nfs, &registry).into_iter().map(|p| format!("{source}: {p}")));
        }
        let mut warnings = Vec::new();
        for p in gate_problems(&stacks, &nfs) {
            let line = format!("{source}: {}", p.message);
            if p.fatal {
                errs.push(line);
            } else {
                warnings.push(line);
            }
        }
        if errs.is_empty() {
            Ok(App { source: source.to_string(), runtime, port, stacks, nfs, proxy_nfs, registry, parallel, warnings })
        } else {
            Err(AppError(errs))
        }
    }

    /// The constructors of the NFs that run inside the split proxy, in file order (handed
    /// to the µStacks through [`StackContext::proxy_nfs`]).
    pub fn proxy_specs(&self) -> Vec<stacks::proxy::actor::ProxyNfSpec> {
        self.proxy_nfs
            .iter()
            .filter_map(|nf| {
                let make = nf.config.proxy_nf()?;
                Some(stacks::proxy::actor::ProxyNfSpec { name: nf.common.name.clone(), kind: nf.kind.clone(), make })
            })
            .collect()
    }

    /// Makes every NF passive (`passive = true` of the NFs that can drop: their drops become
    /// "would drop"); a passive live run (`--iface A`) does this before building.
    pub fn set_passive(&mut self) {
        for nf in &mut self.nfs {
            nf.config.set_passive();
        }
    }

    /// A note for a run in `mode` when the app's `parallel` groups do not apply to it (they
    /// are formed in mode d only): `None` when they apply or there are none.
    pub fn parallel_note(&self, mode: crate::engine::Mode) -> Option<String> {
        (!self.parallel.is_empty() && mode != crate::engine::Mode::D).then(|| {
            format!("{}: key `parallel`: NF groups run in parallel in mode d only; ignored in mode {mode}", self.source)
        })
    }
}

/// `[runtime]`: every bad key and value.
fn parse_runtime(table: Option<toml::Value>, errs: &mut Vec<String>) -> RuntimeConfig {
    let runtime = match table {
        None => RuntimeConfig::default(),
        Some(toml::Value::Table(t)) => {
            let (cfg, e) = nfs::common::deserialize_all::<RuntimeConfig>(t, "runtime.");
            errs.extend(e);
            cfg.unwrap_or_default()
        }
        Some(other) => {
            errs.push(format!("key `runtime`: must be a table, not {}", other.type_str()));
            RuntimeConfig::default()
        }
    };
    let mut bad = |key: &str, v: u32, allowed: &str| errs.push(format!("key `runtime.{key}`: {allowed}, found {v}"));
    if runtime.pool_buffers < 2 {
        bad("pool_buffers", runtime.pool_buffers, "must be at least 2");
    }
    if runtime.buffer_size < 64 {
        bad("buffer_size", runtime.buffer_size, "must be at least 64 bytes");
    }
    if runtime.ring_capacity < 2 {
        bad("ring_capacity", runtime.ring_capacity, "must be at least 2");
    }
    if !(1..=64).contains(&runtime.shards) {
        bad("shards", runtime.shards, "must be between 1 and 64");
    }
    if runtime.idle_yield_rounds < runtime.idle_spin_rounds {
        bad("idle_yield_rounds", runtime.idle_yield_rounds, "must be at least idle_spin_rounds");
    }
    if runtime.idle_sleep_after_us > 1_000_000 {
        bad("idle_sleep_after_us", runtime.idle_sleep_after_us, "must be at most 1000000 (1 s)");
    }
    if runtime.idle_sleep_us > 100_000 {
        bad("idle_sleep_us", runtime.idle_sleep_us, "must be at most 100000 (100 ms)");
    }
    runtime
}

fn parse_port(table: Option<toml::Value>, errs: &mut Vec<String>) -> PortConfig {
    let port = match table {
        None => PortConfig::default(),
        Some(toml::Value::Table(t)) => {
            let (cfg, e) = nfs::common::deserialize_all::<PortConfig>(t, "port.");
            errs.extend(e);
            cfg.unwrap_or_default()
        }
        Some(other) => {
            errs.push(format!("key `port`: must be a table, not {}", other.type_str()));
            PortConfig::default()
        }
    };
    let mut bad = |key: &str, v: u32, allowed: &str| errs.push(format!("key `port.{key}`: {allowed}, found {v}"));
    if port.block_size == 0 || !port.block_size.is_multiple_of(4096) {
        bad("block_size", port.block_size, "must be a positive multiple of 4096 bytes");
    }
    if port.blocks == 0 {
        bad("blocks", port.blocks, "must be at least 1");
    }
    if port.block_timeout_ms == 0 {
        bad("block_timeout_ms", port.block_timeout_ms, "must be at least 1 ms");
    }
    if u64::from(port.block_size) * u64::from(port.blocks) > MAX_RING_BYTES {
        let total = u64::from(port.block_size) * u64::from(port.blocks);
        errs.push(format!(
            "key `port`: block_size × blocks is {total} bytes per interface; at most {MAX_RING_BYTES} (4 GiB)"
        ));
    }
    port
}

/// The most memory one interface's receive ring may take (`[port]`).
pub const MAX_RING_BYTES: u64 = 1 << 32;

/// The `[[nf]]` entries that configured, in file order, up to the first that did not (the
/// NFs after it cannot be linked: it may publish what they read); and whether all did.
/// Every problem of every entry goes to `errs`, and names are checked on every entry.
fn parse_nfs(
    items: Vec<toml::Value>,
    source: &str,
    dir: &Path,
    registry: &mut EventRegistry,
    errs: &mut Vec<String>,
) -> (Vec<NfEntry>, bool) {
    let mut nfs = Vec::new();
    let mut all_ok = true;
    let mut seen = HashSet::new();
    let reserved = reserved_names();
    for (i, item) in items.into_iter().enumerate() {
        let (name, entry) = nf_entry(i, item, source, dir, registry);
        if let Some(name) = name {
            if reserved.contains(&name.as_str()) {
                errs.push(format!(
                    "{source}: nf `{name}`: the name is reserved for the runtime ({})",
                    reserved.join(", ")
                ));
            } else if !seen.insert(name.clone()) {
                errs.push(format!("{source}: nf `{name}`: two NFs have this name"));
            }
        }
        match entry {
            Ok(nf) if all_ok => nfs.push(nf),
            Ok(_) => {}
            Err(mut e) => {
                all_ok = false;
                errs.append(&mut e);
            }
        }
    }
    (nfs, all_ok)
}

/// `parallel = [["a", "b"], ...]`; names are checked against the NFs when all configured.
fn parse_parallel(
    value: Option<toml::Value>,
    nfs: &[NfEntry],
    all_nfs_ok: bool,
    errs: &mut Vec<String>,
    at: &dyn Fn(&str, &str) -> String,
) -> Vec<Vec<String>> {
    let Some(v) = value else { return Vec::new() };
    let shown = nfs::common::describe(&v);
    match Vec::<Vec<String>>::deserialize(v) {
        Ok(groups) => {
            for g in &groups {
                for n in g {
                    if all_nfs_ok && !nfs.iter().any(|nf| &nf.common.name == n) {
                        errs.push(at("parallel", &format!("`{n}` is not an NF of this app")));
                    }
                }
                if g.len() < 2 {
                    errs.push(at("parallel", &format!("group {g:?} needs at least two NFs")));
                }
            }
            groups
        }
        Err(_) => {
            errs.push(at("parallel", &format!("expected a list of lists of NF names, found {shown}")));
            Vec::new()
        }
    }
}

/// The problems of the NFs that run inside the split proxy (`proxy_nfs`) and of the
/// active µStacks together: a proxy NF needs `[stack.proxy]` and takes none of the keys
/// that select events (it sees the proxy's bytestreams, not events); two µStacks that send
/// frames of their own cannot share TX's one loopback.
fn proxy_problems(stacks: &[ConfiguredStack], proxy_nfs: &[NfEntry]) -> Vec<String> {
    let mut out = Vec::new();
    let proxy = stacks.iter().any(|s| std::ptr::eq(s.kind, &stacks::proxy::actor::STACK));
    for nf in proxy_nfs {
        let who = format!("nf `{}` ({})", nf.common.name, nf.kind);
        if !proxy {
            out.push(format!(
                "{who} runs inside the split proxy µStack: add `[stack.proxy]` to the app file (docs/proxy.md)"
            ));
        }
        let c = &nf.common;
        for (key, set) in [
            ("subscribe", c.subscribe.is_some()),
            ("filter", c.filter.is_some()),
            ("from", c.from.is_some()),
            ("side", c.side.is_some()),
            ("direction", c.to_server.is_some()),
        ] {
            if set {
                out.push(format!(
                    "{who}: key `{key}` does not apply to an NF inside the split proxy (it sees the proxy's bytestreams, not events)"
                ));
            }
        }
    }
    let active: Vec<&str> = stacks.iter().filter(|s| s.config.sends_frames().is_some()).map(|s| s.kind.table).collect();
    if proxy && active.len() > 1 {
        out.push(format!(
            "[stack.proxy] cannot run beside another µStack that sends frames ({}): they would share TX's one loopback",
            active.iter().filter(|t| **t != "proxy").map(|t| format!("[stack.{t}]")).collect::<Vec<_>>().join(", ")
        ));
    }
    out
}

/// The problems of every `signature_match` with `after_dpi` (see
/// [`nfs::signature::gate::problems`]), with the `dpi` NF before it.
fn gate_problems(stacks: &[ConfiguredStack], nfs: &[NfEntry]) -> Vec<nfs::signature::gate::Problem> {
    let tcp_stack = stacks.iter().any(|s| s.kind.table == "tcp");
    let mut out = Vec::new();
    for (i, nf) in nfs.iter().enumerate() {
        let NfConfig::Kind(spec) = &nf.config else { continue };
        let Some(cfg) = spec.as_any().downcast_ref::<nfs::signature::SignatureConfig>() else { continue };
        let dpi = nfs[..i].iter().rev().find(|d| d.kind == nfs::dpi::NAME).map(|d| &d.common);
        out.extend(nfs::signature::gate::problems(&nf.common, cfg, dpi, tcp_stack));
    }
    out
}

/// The link problems of the chain RX → the µStacks → `nfs`, as modes b, c and d link it,
/// found at load so that they are reported with the others. An NF that reads what only a
/// µStack the app does not run publishes gets one line naming the table to add (and the
/// chain is linked as if it were there, so that nothing else is blamed for it).
fn link_problems(stacks: &[ConfiguredStack], nfs: &[NfEntry], registry: &EventRegistry) -> Vec<String> {
    let completed = Arc::new(AtomicU64::new(0));
    let receiver_events = nfs.iter().any(|nf| nf.common.side.is_some());
    let cx = StackContext::for_linking(&completed, receiver_events, &[]);
    let mut problems = Vec::new();
    let mut nf_actors = Vec::new();
    for nf in nfs {
        match nf.config.contract_only(&nf.common) {
            Ok(a) => nf_actors.push(a),
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    // Every µStack kind in chain order: the app's, or (`missing`) one with its defaults.
    let mut chain: Vec<(&'static StackKind, Box<dyn Actor>, bool)> = Vec::new();
    for &kind in registry::STACKS {
        if let Some(s) = stacks.iter().find(|s| std::ptr::eq(s.kind, kind)) {
            chain.push((kind, s.build(&cx).actor, false));
        } else if let Ok(cfg) = (kind.parse)(toml::Value::Table(toml::Table::new())) {
            chain.push((kind, cfg.build(kind.actor, &cx).actor, true));
        }
    }
    let rx = actors::io::rx_contract();
    let mut published: Vec<EventType> = rx.publications.iter().map(|p| p.event).collect();
    published.extend(chain.iter().filter(|c| !c.2).flat_map(|c| c.1.contract().publications.iter().map(|p| p.event)));
    let mut needed = Vec::new();
    for (nf, actor) in nfs.iter().zip(&nf_actors) {
        let c = actor.contract();
        let unmet: Vec<&Subscription> =
            c.subscriptions.iter().filter(|s| !published.iter().any(|&p| s.event.covers(p))).collect();
        for (kind, stack, _) in chain.iter().filter(|c| c.2) {
            let from_it: Vec<String> = unmet
                .iter()
                .filter(|s| s.from.as_deref().is_none_or(|f| f == kind.actor))
                .filter(|s| stack.contract().publications.iter().any(|p| s.event.covers(p.event)))
                .map(|s| format!("`{}`", registry.name(s.event)))
                .collect();
            if !from_it.is_empty() {
                problems.push(format!(
                    "nf `{}` ({}) reads {}, which only the `{}` µStack publishes: add `[stack.{}]` to the app file",
                    nf.common.name,
                    nf.kind,
                    from_it.join(", "),
                    kind.actor,
                    kind.table
                ));
                needed.push(kind.table);
            }
        }
        published.extend(c.publications.iter().map(|p| p.event));
    }
    let mut contracts: Vec<&Contract> = vec![&rx];
    contracts.extend(chain.iter().filter(|c| !c.2 || needed.contains(&c.0.table)).map(|c| c.1.contract()));
    contracts.extend(nf_actors.iter().map(|a| a.contract()));
    if let Err(e) = controller::link(&contracts, registry) {
        // Two NFs of one name are already reported, in the app file's terms.
        problems.extend(e.problems.into_iter().filter(|p| !p.starts_with("two actors are named")));
    }
    problems
}

/// One `[[nf]]` entry: its name when it has one (to check names even when the rest is
/// wrong), and the entry or every problem of it.
fn nf_entry(
    i: usize,
    item: toml::Value,
    source: &str,
    dir: &Path,
    registry: &mut EventRegistry,
) -> (Option<String>, Result<NfEntry, Vec<String>>) {
    let toml::Value::Table(mut t) = item else {
        return (None, Err(vec![format!("{source}: nf #{}: must be a table", i + 1)]));
    };
    let mut errs = Vec::new();
    let mut string = |t: &mut toml::Table, key: &str, required: bool, who: &str| -> Option<String> {
        match t.remove(key) {
            Some(toml::Value::String(s)) => Some(s),
            Some(other) => {
                errs.push(format!(
                    "{source}: {who}: key `{key}`: expected a string, found {}",
                    nfs::common::describe(&other)
                ));
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
    let on_failure_raw = string(&mut t, "on_failure", false, &who);
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
    let (Some(name), Some(kind)) = (name.clone(), kind) else { return (name, Err(errs)) };
    let to_server = match direction_raw.as_deref() {
        None => None,
        Some("to_server") => Some(true),
        Some("to_client") => Some(false),
        Some(other) => {
            errs.push(format!("{source}: {who}: key `direction`: `{other}` is not \"to_server\" or \"to_client\""));
            None
        }
    };
    let on_failure = match on_failure_raw.as_deref() {
        None => actors::supervise::OnFailure::Stop,
        Some(s) => actors::supervise::OnFailure::parse(s).unwrap_or_else(|| {
            errs.push(format!(
                "{source}: {who}: key `on_failure`: `{s}` is not \"stop\", \"bypass\", \"drop\" or \"restart\""
            ));
            actors::supervise::OnFailure::Stop
        }),
    };
    let common = NfCommon {
        name: name.clone(),
        subscribe,
        filter,
        from,
        side,
        to_server,
        on_failure,
        reload: None,
        active: None,
    };
    let entry = match nfs::configure(&kind, &common, t, registry, dir) {
        Ok(config) if errs.is_empty() => Ok(NfEntry { kind, common, config }),
        Ok(_) => Err(errs),
        Err(e) => {
            errs.extend(e.into_iter().map(|e| format!("{source}: {e}")));
            Err(errs)
        }
    };
    (Some(name), entry)
}

//! # nfs — Microboxes network functions
//!
//! Each network function is an [`actors::Actor`]: it declares its contract (subscriptions,
//! publications, what it modifies, its drop reasons), gets the events it subscribed to, and
//! answers a verdict. None of them parses headers: the L2/3 µStack did that once, and an NF
//! reads addresses and ports through [`actors::packet::PacketView`].
//!
//! The kinds an app file can name (`kind = "..."` in an `[[nf]]` table), all in [`KINDS`]:
//!
//! * [`firewall`] — ordered allow/drop rules, per flow (stateful) or per packet;
//! * [`flow_stats`] — per-flow packets and bytes each way as Suricata-style JSON lines;
//!   optionally publishes `EVENT/LONG_FLOW`;
//! * [`stream_hash`] — length and SHA-256 of both bytestreams of every TCP connection, read
//!   through the TCP monitor;
//! * [`signature_match`](signature) — an IDS matching Snort/Suricata-style [`rules`] against
//!   the bytestreams or packet payloads; publishes `EVENT/IDS_ALERT` and writes EVE-like
//!   alert lines;
//! * [`dpi`] — the application protocol (HTTP, TLS, SSH, DNS, SMTP) of every flow from its
//!   first bytes; publishes `EVENT/DPI_DETECT`;
//! * [`logger`] — one JSON line per event, optionally only for flows flagged by
//!   Flow_Stats' `EVENT/LONG_FLOW`;
//! * [`http_lb`] and [`memcached_lb`] — policy NFs of the TCP splicer: they answer its
//!   `FLOW_REQ`s with a `FLOW_DEST` (HTTP pools and rules; memcached keys on a consistent
//!   hash ring, [`balance`]);
//! * [`cache`] — an HTTP object cache on the split proxy µStack: a *proxy NF*, which runs
//!   inside the `[stack.proxy]` actor through [`stacks::proxy::ProxyNf`] rather than as an
//!   actor of the chain ([`NfOptions::proxy_nf`]).
//! * [`proxy_select`] — the policy NF of the proxy's per-flow upgrade: it answers the
//!   proxy's `FLOW_REQ`s with "proxy" for flows to the servers it names, "pass" for others.
//!
//! Their protocol logic is kept apart from the actors, free of I/O: [`dpi::classify`](mod@dpi::classify) (the
//! classifiers), [`signature::matcher`] (automata and per-flow scan state) and [`rules`]
//! (the rule language). [`output`] is what they write: JSON-lines files and the EVE fields
//! they share. [`common`] is the part of an `[[nf]]` table every kind has.
//!
//! [`configure`] checks an `[[nf]]` table (the app loader calls it for each, so that every
//! error is reported together) and gives an [`NfConfig`]; [`NfConfig::build`] makes the actor.
//!
//! ## Adding an NF kind
//!
//! One new module file plus one line (and its section in the README):
//!
//! 1. Write `src/<kind>.rs` (or `src/<kind>/mod.rs`) holding, together:
//!    * `pub const NAME: &str = "<kind>";` — the name the app file uses; the module passes
//!      `NAME` wherever the kind is named (its contract's `kind`, its messages);
//!    * `pub const <WHAT>_EVENT: &str = "EVENT/<WHAT>";` for each event type it publishes;
//!    * its options: a `#[derive(Clone, Debug, Deserialize)] #[serde(deny_unknown_fields)]`
//!      config struct implementing [`NfOptions`]: `const NAME: &'static str = NAME;`,
//!      [`check`](NfOptions::check) when the options need more than serde's checks or the
//!      kind publishes or needs event types (register them there), `crate::output_field!();`
//!      when it writes a file named by its `output` key, and [`build`](NfOptions::build),
//!      which makes the actor (creating the file through [`output::JsonLines`]);
//!    * `pub const KIND: Kind<ItsConfig> = Kind::new();`;
//!    * the actor.
//! 2. Add the module's name to the one `nf_kinds!(...)` line in this file: it declares the
//!    module (`pub mod <kind>;`) and puts `&<kind>::KIND` in [`KINDS`].
//!
//! Nothing else names the kind: [`configure`] finds it in [`KINDS`], and an unknown kind's
//! message lists the names from there. The engine, the app loader, the checker and
//! `mbox nf` know NFs only through [`NfConfig`].
#![forbid(unsafe_code)]

pub mod balance;
pub mod common;
pub mod output;
pub mod reload;

/// Declares the NF kind modules and lists their [`Kind`]s in [`KINDS`], in one place.
macro_rules! nf_kinds {
    ($($kind:ident),* $(,)?) => {
        $(pub mod $kind;)*
        /// Every NF kind an app file can name, in the order messages list them.
        pub const KINDS: &[&dyn NfKind] = &[$(&$kind::KIND),*];
    };
}

// The registry: one module name per NF kind (see "Adding an NF kind" above).
nf_kinds!(
    firewall,
    flow_stats,
    stream_hash,
    signature,
    dpi,
    logger,
    http_lb,
    memcached_lb,
    word_rewriter,
    cache,
    proxy_select
);

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use actors::{Actor, EventRegistry};
pub use common::NfCommon;
use serde::de::DeserializeOwned;
pub use signature::rules;

/// A kind of NF, as [`KINDS`] lists it: its name and how it turns an `[[nf]]` table into
/// an [`NfSpec`]. Implemented by [`Kind`] for every [`NfOptions`] type.
pub trait NfKind: Sync {
    /// The name in the app file (`kind = "..."`).
    fn name(&self) -> &'static str;

    /// Checks the kind-specific part of an NF's table (the common keys are already taken
    /// out, into `common`): see [`NfOptions::check`]. Relative paths of files the NF reads
    /// ([`NfOptions::inputs`]) are resolved against `dir` first. Errors name the NF and the
    /// kind; all of them are returned (every bad key, then the checks of the rest).
    fn configure(
        &self,
        common: &NfCommon,
        options: toml::Table,
        registry: &mut EventRegistry,
        dir: &Path,
    ) -> Result<Box<dyn NfSpec>, Vec<String>>;
}

/// A kind's options: the strict config struct of its `[[nf]]` table
/// (`#[serde(deny_unknown_fields)]`), which, once checked, builds the NF.
pub trait NfOptions: DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The kind's name in the app file.
    const NAME: &'static str;

    /// Checks the parsed options beyond what serde does; registers the event types the kind
    /// publishes (under `EVENT/...`) in `registry`, so that NFs after it can subscribe, and
    /// resolves those it needs from NFs before it.
    fn check(&mut self, common: &NfCommon, registry: &mut EventRegistry) -> Result<(), Vec<String>> {
        let _ = (common, registry);
        Ok(())
    }

    /// The files this NF reads (a rule file), as written in the app file: relative ones are
    /// resolved against the app file's directory before [`check`](NfOptions::check). (The
    /// file it writes is not one: outputs stay relative to the current directory.)
    fn inputs(&mut self) -> Vec<&mut PathBuf> {
        Vec::new()
    }

    /// The file this NF writes, if any ([`output_field!`] writes this and
    /// [`set_output`](NfOptions::set_output) for an `output: PathBuf` field).
    fn output(&self) -> Option<&Path> {
        None
    }

    /// Writes this NF's output to `path` instead (nothing for an NF without output).
    fn set_output(&mut self, path: PathBuf) {
        let _ = path;
    }

    /// Makes the NF passive: its drops become "would drop" (counted as `would_drop`, alert
    /// lines say `"allowed"`), as its own `passive = true` would. The engine calls it for every
    /// NF of a passive live run (`mbox run APP --iface A`), after the options were checked and
    /// before the NF is built. Kinds that never drop keep this default, which does nothing.
    fn set_passive(&mut self) {}

    /// Builds the actor (this is where an output file is created).
    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String>;

    /// A *proxy NF* — one that runs inside the split proxy µStack on its bytestreams
    /// ([`stacks::proxy::ProxyNf`]) instead of as an actor of the chain — gives its
    /// constructor here (and refuses [`build`](NfOptions::build)); the app loader hands it
    /// to `[stack.proxy]`. The default: not one.
    fn proxy_nf(&self) -> Option<actors::proxy_nf::MakeProxyNf> {
        None
    }

    /// A reload from these options to `new` (checked as at start, with the running NF's
    /// output and passive setting): what changes, one line each, or every reason why the
    /// running NF cannot take `new` ([`reload`](crate::reload)). Called only when the
    /// options differ. The default refuses: the kind takes no new options while running.
    fn reload_changes(&self, new: &Self, common: &NfCommon) -> Result<Vec<String>, Vec<String>> {
        let _ = new;
        Err(vec![common.error(
            Self::NAME,
            "its options changed, but this kind cannot take new options while the run goes on (kinds that can: firewall, signature_match); restart the run",
        )])
    }
}

/// The [`NfKind`] whose options are `T`: `pub const KIND: Kind<MyConfig> = Kind::new();`.
pub struct Kind<T>(PhantomData<fn() -> T>);

impl<T> Kind<T> {
    /// The kind of `T`.
    pub const fn new() -> Kind<T> {
        Kind(PhantomData)
    }
}

impl<T> Default for Kind<T> {
    fn default() -> Kind<T> {
        Kind::new()
    }
}

impl<T: NfOptions> NfKind for Kind<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn configure(
        &self,
        common: &NfCommon,
        options: toml::Table,
        registry: &mut EventRegistry,
        dir: &Path,
    ) -> Result<Box<dyn NfSpec>, Vec<String>> {
        let (cfg, mut errs) = common::options::<T>(&common.name, T::NAME, options);
        let Some(mut cfg) = cfg else { return Err(errs) };
        for p in cfg.inputs() {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        if let Err(more) = cfg.check(common, registry) {
            errs.extend(more);
        }
        if errs.is_empty() {
            Ok(Box::new(cfg))
        } else {
            Err(errs)
        }
    }
}

/// One NF's checked options, of any kind (no file opened yet); every [`NfOptions`] is one.
pub trait NfSpec: std::fmt::Debug + Send + Sync {
    /// The file this NF writes, if any.
    fn output(&self) -> Option<&Path>;

    /// Writes this NF's output to `path` instead.
    fn set_output(&mut self, path: PathBuf);

    /// Makes the NF passive ([`NfOptions::set_passive`]).
    fn set_passive(&mut self);

    /// Builds the actor.
    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String>;

    /// A proxy NF's constructor ([`NfOptions::proxy_nf`]).
    fn proxy_nf(&self) -> Option<actors::proxy_nf::MakeProxyNf>;

    /// A boxed copy.
    fn box_clone(&self) -> Box<dyn NfSpec>;

    /// The options themselves, for checks across NFs (`signature_match`'s `after_dpi` looks
    /// at the `dpi` NF's options: [`signature::gate::problems`]).
    fn as_any(&self) -> &dyn std::any::Any;

    /// [`NfOptions::reload_changes`] from these options to `new` (of any kind: another
    /// kind is refused).
    fn reload_changes(&self, new: &dyn NfSpec, common: &NfCommon) -> Result<Vec<String>, Vec<String>>;
}

impl<T: NfOptions> NfSpec for T {
    fn output(&self) -> Option<&Path> {
        NfOptions::output(self)
    }

    fn set_output(&mut self, path: PathBuf) {
        NfOptions::set_output(self, path);
    }

    fn set_passive(&mut self) {
        NfOptions::set_passive(self);
    }

    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        NfOptions::build(self, common)
    }

    fn proxy_nf(&self) -> Option<actors::proxy_nf::MakeProxyNf> {
        NfOptions::proxy_nf(self)
    }

    fn box_clone(&self) -> Box<dyn NfSpec> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn reload_changes(&self, new: &dyn NfSpec, common: &NfCommon) -> Result<Vec<String>, Vec<String>> {
        match new.as_any().downcast_ref::<T>() {
            Some(new) => NfOptions::reload_changes(self, new, common),
            None => Err(vec![common.error(T::NAME, "the new app file gives it another kind")]),
        }
    }
}

impl Clone for Box<dyn NfSpec> {
    fn clone(&self) -> Self {
        self.as_ref().box_clone()
    }
}

/// Writes [`NfOptions::output`] and [`NfOptions::set_output`] for options whose
/// `output: PathBuf` field is the file the NF writes; use it inside the `impl NfOptions`.
#[macro_export]
macro_rules! output_field {
    () => {
        fn output(&self) -> Option<&std::path::Path> {
            Some(&self.output)
        }

        fn set_output(&mut self, path: std::path::PathBuf) {
            self.output = path;
        }
    };
}

/// The kind named `name`, if [`KINDS`] has it.
pub fn kind(name: &str) -> Option<&'static dyn NfKind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// An NF's options, checked but not yet acted on (no file opened): the app loader makes
/// these for every `[[nf]]` so that all configuration errors are reported together.
#[derive(Clone, Debug)]
pub enum NfConfig {
    /// An NF of a kind in [`KINDS`].
    Kind(Box<dyn NfSpec>),
    /// An NF built by code (tests, programs embedding the engine).
    Custom(CustomNf),
}

/// An NF made by a function (see [`NfConfig::Custom`]).
#[derive(Clone)]
pub struct CustomNf {
    /// Makes the actor (called once per run, and once per private chain in mode a).
    pub make: MakeNf,
}

/// A function that makes an NF actor.
pub type MakeNf = std::sync::Arc<dyn Fn(&NfCommon) -> Box<dyn Actor> + Send + Sync>;

impl std::fmt::Debug for CustomNf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomNf")
    }
}

/// Checks the kind-specific part of an NF's app-file table (see [`NfKind::configure`]),
/// resolving the relative paths of the files it reads against `dir` (the app file's
/// directory; `Path::new("")` for the current one); an unknown kind is an error listing
/// [`KINDS`].
pub fn configure(
    kind: &str,
    common: &NfCommon,
    options: toml::Table,
    registry: &mut EventRegistry,
    dir: &Path,
) -> Result<NfConfig, Vec<String>> {
    match self::kind(kind) {
        Some(k) => k.configure(common, options, registry, dir).map(NfConfig::Kind),
        None => {
            let known: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
            Err(vec![format!("nf `{}`: unknown kind `{kind}` (known kinds: {})", common.name, known.join(", "))])
        }
    }
}

impl NfConfig {
    /// The file this NF writes, if any.
    pub fn output(&self) -> Option<&Path> {
        match self {
            NfConfig::Kind(spec) => spec.output(),
            NfConfig::Custom(_) => None,
        }
    }

    /// The NF's contract, without side effects (its output, if any, goes to /dev/null): for
    /// a process that links the whole app but runs only one NF of it.
    pub fn contract_only(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        let mut c = self.clone();
        c.set_output(PathBuf::from("/dev/null"));
        c.build(common)
    }

    /// Writes this NF's output to `path` instead (the checker gives each mode its own).
    pub fn set_output(&mut self, path: PathBuf) {
        match self {
            NfConfig::Kind(spec) => spec.set_output(path),
            NfConfig::Custom(_) => {}
        }
    }

    /// Makes the NF passive: drops become "would drop" ([`NfOptions::set_passive`]; an NF
    /// built by code is left as it is).
    pub fn set_passive(&mut self) {
        match self {
            NfConfig::Kind(spec) => spec.set_passive(),
            NfConfig::Custom(_) => {}
        }
    }

    /// The constructor of a proxy NF (one that runs inside `[stack.proxy]`;
    /// [`NfOptions::proxy_nf`]), or `None` for an NF of the chain.
    pub fn proxy_nf(&self) -> Option<actors::proxy_nf::MakeProxyNf> {
        match self {
            NfConfig::Kind(spec) => spec.proxy_nf(),
            NfConfig::Custom(_) => None,
        }
    }

    /// Builds the actor (this is where output files are created).
    pub fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        match self {
            NfConfig::Kind(spec) => spec.build(common),
            NfConfig::Custom(c) => Ok((c.make)(common)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_names_and_unknown_ones_are_listed() {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "firewall",
                "flow_stats",
                "stream_hash",
                "signature_match",
                "dpi",
                "logger",
                "http_lb",
                "memcached_lb",
                "word_rewriter",
                "cache",
                "proxy_select"
            ]
        );
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        let e = configure(
            "teleporter",
            &NfCommon::named("x"),
            toml::Table::new(),
            &mut EventRegistry::new(),
            Path::new(""),
        )
        .unwrap_err();
        assert_eq!(
            e,
            ["nf `x`: unknown kind `teleporter` (known kinds: firewall, flow_stats, stream_hash, signature_match, dpi, logger, http_lb, memcached_lb, word_rewriter, cache, proxy_select)"]
        );
    }

    #[test]
    fn a_kind_configures_and_builds_through_the_list() {
        let t: toml::Table = toml::from_str("default = \"drop\"").unwrap();
        let common = NfCommon::named("fw");
        let mut c = configure("firewall", &common, t, &mut EventRegistry::new(), Path::new("")).unwrap();
        assert_eq!(c.output(), None);
        c.set_output(PathBuf::from("/dev/null"));
        let a = c.contract_only(&common).unwrap();
        assert_eq!((a.contract().name.as_str(), a.contract().kind.as_str()), ("fw", firewall::NAME));
    }

    /// `set_passive` (a passive live run) does what `passive = true` does: the firewall and
    /// the signature matcher declare no drop reasons, and the matcher publishes no resets.
    #[test]
    fn set_passive_turns_drops_into_would_drops() {
        let dir = std::env::temp_dir().join(format!("nfs-passive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("r.rules"),
            "drop tcp any any -> any any (msg:\"d\"; content:\"x\"; sid:1;)\nreject tcp any any -> any any (msg:\"r\"; content:\"y\"; sid:2;)\n",
        )
        .unwrap();
        let tables = [
            ("fw", "firewall", "default = \"drop\"".to_string()),
            ("ids", "signature_match", format!("rules = \"r.rules\"\noutput = \"{}\"", dir.join("a.jsonl").display())),
        ];
        for (name, kind, text) in tables {
            let common = NfCommon::named(name);
            let t: toml::Table = toml::from_str(&text).unwrap();
            let mut c = configure(kind, &common, t, &mut EventRegistry::new(), &dir).unwrap();
            let inline = c.contract_only(&common).unwrap();
            assert!(!inline.contract().drop_reasons.is_empty(), "{kind} drops inline");
            c.set_passive();
            let passive = c.contract_only(&common).unwrap();
            assert_eq!(passive.contract().drop_reasons, Vec::<String>::new(), "{kind}, passive");
            let publishes: Vec<&str> = passive.contract().publications.iter().map(|p| p.port.as_str()).collect();
            assert!(!publishes.contains(&"reject"), "{kind}, passive, publishes {publishes:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

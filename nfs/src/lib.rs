//! # nfs — Microboxes network functions
//!
//! Each network function is an [`actors::Actor`]: it declares its contract (subscriptions,
//! publications, what it modifies, its drop reasons), gets the events it subscribed to, and
//! answers a verdict. None of them parses headers: the L2/3 µStack did that once, and an NF
//! reads addresses and ports through [`actors::packet::PacketView`].
//!
//! * [`firewall`] — ordered allow/drop rules, per flow (stateful) or per packet;
//! * [`flow_stats`] — per-flow packets and bytes each way as Suricata-style JSON lines;
//! * [`logger`] — one JSON line per event, optionally only for flows flagged by
//!   Flow_Stats' `EVENT/LONG_FLOW`;
//! * [`stream_hash`] — length and SHA-256 of both bytestreams of every TCP connection, read
//!   through the TCP monitor.
//!
//! [`build`] makes an NF from its app-file table: the engine calls it for every `[[nf]]`.
#![forbid(unsafe_code)]

pub mod common;
pub mod dpi;
pub mod firewall;
pub mod flow_stats;
pub mod logger;
pub mod rules;
pub mod signature;
pub mod stream_hash;

use actors::Actor;
pub use common::NfCommon;

/// The NF kinds this crate provides, for messages.
pub const KINDS: &[&str] = &["firewall", "flow_stats", "stream_hash", "signature_match", "dpi", "logger"];

/// An NF's options, checked but not yet acted on (no file opened): the app loader makes
/// these for every `[[nf]]` so that all configuration errors are reported together.
#[derive(Clone, Debug)]
pub enum NfConfig {
    /// A firewall.
    Firewall(firewall::FirewallConfig, Vec<firewall::Rule>),
    /// Flow statistics.
    FlowStats(flow_stats::FlowStatsConfig),
    /// Stream hashes.
    StreamHash(stream_hash::StreamHashConfig),
    /// Signature matching (publishes `EVENT/IDS_ALERT`).
    SignatureMatch(signature::SignatureConfig),
    /// Deep packet inspection (publishes `EVENT/DPI_DETECT`).
    Dpi(dpi::DpiConfig),
    /// Event logger (optionally only flows flagged by `EVENT/LONG_FLOW`).
    Logger(logger::LoggerConfig),
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

/// Checks the kind-specific part of an NF's app-file table; registers the event types the
/// kind publishes (under `EVENT/...`) in `registry`, so that NFs after it can subscribe.
pub fn configure(
    kind: &str,
    common: &NfCommon,
    options: toml::Table,
    registry: &mut actors::EventRegistry,
) -> Result<NfConfig, Vec<String>> {
    let _ = &registry;
    match kind {
        "firewall" => {
            let cfg: firewall::FirewallConfig = common::options(&common.name, kind, options).map_err(|e| vec![e])?;
            let rules = cfg.rules(&common.name)?;
            Ok(NfConfig::Firewall(cfg, rules))
        }
        "flow_stats" => {
            let mut cfg: flow_stats::FlowStatsConfig =
                common::options(&common.name, kind, options).map_err(|e| vec![e])?;
            cfg.long_flow_event = registry
                .register(flow_stats::LONG_FLOW_EVENT)
                .map_err(|e| vec![format!("nf `{}` (flow_stats): {e}", common.name)])?;
            Ok(NfConfig::FlowStats(cfg))
        }
        "logger" => {
            let mut cfg: logger::LoggerConfig = common::options(&common.name, kind, options).map_err(|e| vec![e])?;
            if cfg.only_long_flows {
                cfg.long_flow_event = Some(registry.resolve(flow_stats::LONG_FLOW_EVENT).map_err(|_| {
                    vec![format!("nf `{}` (logger): only_long_flows needs a `flow_stats` NF with `long_flow_avg_bytes` before it", common.name)]
                })?);
            }
            cfg.registry = registry.clone();
            Ok(NfConfig::Logger(cfg))
        }
        "stream_hash" => Ok(NfConfig::StreamHash(common::options(&common.name, kind, options).map_err(|e| vec![e])?)),
        "signature_match" => {
            let mut cfg: signature::SignatureConfig =
                common::options(&common.name, kind, options).map_err(|e| vec![e])?;
            cfg.load(&common.name)?;
            cfg.alert_type = registry
                .register("EVENT/IDS_ALERT")
                .map_err(|e| vec![format!("nf `{}` (signature_match): {e}", common.name)])?;
            if let Some(p) = &cfg.after_dpi {
                let code = match p.as_str() {
                    "http" => 1,
                    "tls" => 2,
                    "ssh" => 3,
                    "dns" => 4,
                    "smtp" => 5,
                    other => {
                        return Err(vec![format!(
                            "nf `{}` (signature_match): key `after_dpi`: unknown protocol `{other}` (http, tls, ssh, dns, smtp)",
                            common.name
                        )])
                    }
                };
                let dpi = registry.resolve("EVENT/DPI_DETECT").map_err(|_| {
                    vec![format!("nf `{}` (signature_match): `after_dpi` needs a `dpi` NF before it", common.name)]
                })?;
                cfg.gate = Some((dpi, code));
            }
            Ok(NfConfig::SignatureMatch(cfg))
        }
        "dpi" => {
            let mut cfg: dpi::DpiConfig = common::options(&common.name, kind, options).map_err(|e| vec![e])?;
            cfg.validate(&common.name)?;
            cfg.event =
                registry.register(dpi::DETECT_EVENT).map_err(|e| vec![format!("nf `{}` (dpi): {e}", common.name)])?;
            Ok(NfConfig::Dpi(cfg))
        }
        other => Err(vec![format!("nf `{}`: unknown kind `{other}` (known kinds: {})", common.name, KINDS.join(", "))]),
    }
}

impl NfConfig {
    /// The files this NF writes, if any.
    pub fn output(&self) -> Option<&std::path::Path> {
        match self {
            NfConfig::Firewall(..) | NfConfig::Custom(_) => None,
            NfConfig::FlowStats(c) => Some(&c.output),
            NfConfig::StreamHash(c) => Some(&c.output),
            NfConfig::SignatureMatch(c) => Some(&c.output),
            NfConfig::Dpi(c) => c.output.as_deref(),
            NfConfig::Logger(c) => Some(&c.output),
        }
    }

    /// The NF's contract, without side effects (its output, if any, goes to /dev/null): for
    /// a process that links the whole app but runs only one NF of it.
    pub fn contract_only(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        let mut c = self.clone();
        c.set_output(std::path::PathBuf::from("/dev/null"));
        c.build(common)
    }

    /// Writes this NF's output to `path` instead (the checker gives each mode its own).
    pub fn set_output(&mut self, path: std::path::PathBuf) {
        match self {
            NfConfig::Firewall(..) | NfConfig::Custom(_) => {}
            NfConfig::FlowStats(c) => c.output = path,
            NfConfig::StreamHash(c) => c.output = path,
            NfConfig::SignatureMatch(c) => c.output = path,
            NfConfig::Dpi(c) => c.output = Some(path),
            NfConfig::Logger(c) => c.output = path,
        }
    }

    /// Builds the actor (this is where output files are created).
    pub fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        Ok(match self {
            NfConfig::Firewall(cfg, rules) => {
                Box::new(firewall::Firewall::new(common, rules.clone(), cfg.default, cfg.stateful))
            }
            NfConfig::FlowStats(cfg) => Box::new(flow_stats::FlowStats::from_config(common, cfg)?),
            NfConfig::StreamHash(cfg) => Box::new(stream_hash::StreamHash::new(common, cfg.output.clone())?),
            NfConfig::SignatureMatch(cfg) => Box::new(signature::SignatureMatch::new(common, cfg)?),
            NfConfig::Dpi(cfg) => Box::new(dpi::Dpi::new(common, cfg.clone())?),
            NfConfig::Logger(cfg) => Box::new(logger::Logger::new(common, cfg)?),
            NfConfig::Custom(c) => (c.make)(common),
        })
    }
}

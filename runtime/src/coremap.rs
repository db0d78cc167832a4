//! The core map: which core each actor runs on.
//!
//! A core map is a small TOML file written by the user:
//!
//! ```toml
//! # actor name = core id
//! [cores]
//! rx = 0
//! l23 = 0
//! fw = 1
//! ```
//!
//! Several actors may share a core; the [executor](crate::executor) multiplexes them.
//!
//! # Contract
//!
//! * Parsing is strict: a top-level key other than `[cores]` is an error, so is a value that
//!   is not a non-negative integer, and so is a duplicate key (a TOML error, reported with the
//!   file name and the TOML parser's text, which shows the line).
//! * Entries keep their file order ([`CoreMap::entries`]).
//! * [`CoreMap::place`] checks the map against an application and a machine and collects
//!   **all** problems before failing, each naming the file and the entry: an entry for an
//!   unknown actor, an entry on a core this process may not use, an actor with no entry.
//! * Without a map, [`default_placement`] gives the documented default: I/O and stack actors
//!   on the first allowed CPU, network functions round-robin over the other allowed CPUs (or
//!   on the first one if it is the only one).
//!
//! ```
//! use runtime::coremap::CoreMap;
//! let map = CoreMap::parse("[cores]\nrx = 0\nfw = 1\n", "map.toml").unwrap();
//! let actors = vec!["rx".to_string(), "fw".to_string()];
//! let placement = map.place(&actors, &[0, 1]).unwrap();
//! assert_eq!(placement.core_of("fw"), Some(1));
//! assert_eq!(placement.by_core(), vec![(0, vec!["rx".to_string()]), (1, vec!["fw".to_string()])]);
//! ```

use std::fmt;
use std::path::Path;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::sys::format_cpu_list;

/// Errors of loading, parsing and checking a core map.
#[derive(Debug, thiserror::Error)]
pub enum CoreMapError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid core map (TOML error text included, with the line).
    #[error("{0}")]
    Parse(String),
    /// The map does not fit the application or the machine: one message per problem.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// A parsed core map: `(actor, core)` entries in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreMap {
    source: String,
    entries: Vec<(String, usize)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    #[serde(default)]
    cores: OrderedEntries,
}

#[derive(Default)]
struct OrderedEntries(Vec<(String, usize)>);

impl<'de> Deserialize<'de> for OrderedEntries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedEntries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of `actor = core id` entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some((k, c)) = map.next_entry::<String, usize>()? {
                    v.push((k, c));
                }
                Ok(OrderedEntries(v))
            }
        }
        d.deserialize_map(V)
    }
}

impl CoreMap {
    /// Parses core-map text; `source` (usually the file name) prefixes every message.
    pub fn parse(text: &str, source: &str) -> Result<CoreMap, CoreMapError> {
        let file: MapFile =
            toml::from_str(text).map_err(|e| CoreMapError::Parse(format!("{source}: {}", e.to_string().trim_end())))?;
        Ok(CoreMap { source: source.to_string(), entries: file.cores.0 })
    }

    /// Reads and parses the core-map file at `path`.
    pub fn load(path: &Path) -> Result<CoreMap, CoreMapError> {
        let name = path.display().to_string();
        let text = crate::files::read_text(path, crate::files::MAX_CONFIG_BYTES)
            .map_err(|source| CoreMapError::Io { path: name.clone(), source })?;
        CoreMap::parse(&text, &name)
    }

    /// The `(actor, core)` entries, in file order.
    pub fn entries(&self) -> &[(String, usize)] {
        &self.entries
    }

    /// Where the map came from (the name given to [`CoreMap::parse`] or the path).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Checks the map against the application's `actors` and the `allowed` cores, and returns
    /// the placement (in actor order).
    ///
    /// Every actor must have an entry, and every entry must name a known actor and an allowed
    /// core. All problems are collected into [`CoreMapError::Invalid`], one line each.
    pub fn place(&self, actors: &[String], allowed: &[usize]) -> Result<Placement, CoreMapError> {
        let src = &self.source;
        let mut problems = Vec::new();
        for (actor, core) in &self.entries {
            if !actors.iter().any(|a| a == actor) {
                problems.push(format!(
                    "{src}: entry `{actor} = {core}`: unknown actor `{actor}` (actors in this app: {})",
                    actors.join(", ")
                ));
            }
            if !allowed.contains(core) {
                problems.push(format!(
                    "{src}: entry `{actor} = {core}`: core {core} is not available on this machine (available cores: {})",
                    format_cpu_list(allowed)
                ));
            }
        }
        let mut cores = Vec::with_capacity(actors.len());
        for actor in actors {
            match self.entries.iter().find(|(a, _)| a == actor) {
                Some((_, core)) => cores.push((actor.clone(), *core)),
                None => problems.push(format!("{src}: actor `{actor}` is not placed")),
            }
        }
        if problems.is_empty() {
            Ok(Placement { cores })
        } else {
            Err(CoreMapError::Invalid(problems))
        }
    }
}

/// What kind of actor, for [`default_placement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Packet I/O (RX/TX ports).
    Io,
    /// A µStack.
    Stack,
    /// A network function.
    Nf,
    /// The end of the chain (TX): with the last NF.
    Sink,
}

/// The default placement when no core map is given.
///
/// I/O and stack actors go on the first allowed CPU; NFs go round-robin, in the given order,
/// over the remaining allowed CPUs, or on the first one if only one is allowed; the sink (TX)
/// goes with the last NF before it (on the first CPU when there is none). With no allowed CPU
/// at all (which `sched_getaffinity` never reports) everything goes on core 0.
///
/// Why the sink goes with the NFs: in a passive pipeline the first core copies every byte
/// (RX into the pool, the TCP monitor into the stream store) and is the one that limits; TX
/// only drains the last ring and frees buffers, work that costs the NFs' core less (measured:
/// docs/benchmarks.md, "Issue 14: placement").
pub fn default_placement(actors: &[(String, Role)], allowed: &[usize]) -> Placement {
    let first = allowed.first().copied().unwrap_or(0);
    let rest = allowed.get(1..).unwrap_or(&[]);
    let mut next_nf = 0;
    let mut last_nf = first;
    let cores = actors
        .iter()
        .map(|(name, role)| {
            let core = match role {
                Role::Io | Role::Stack => first,
                Role::Nf if rest.is_empty() => first,
                Role::Nf => {
                    let c = rest[next_nf % rest.len()];
                    next_nf += 1;
                    last_nf = c;
                    c
                }
                Role::Sink => last_nf,
            };
            (name.clone(), core)
        })
        .collect();
    Placement { cores }
}

/// Which core each actor runs on, in actor order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// `(actor, core)` in the application's actor order.
    pub cores: Vec<(String, usize)>,
}

impl Placement {
    /// The core of `actor`, if it is placed.
    pub fn core_of(&self, actor: &str) -> Option<usize> {
        self.cores.iter().find(|(a, _)| a == actor).map(|(_, c)| *c)
    }

    /// Actors grouped by core: ascending core, actors in their given order.
    pub fn by_core(&self) -> Vec<(usize, Vec<String>)> {
        let mut cores: Vec<usize> = self.cores.iter().map(|(_, c)| *c).collect();
        cores.sort_unstable();
        cores.dedup();
        cores
            .into_iter()
            .map(|core| {
                let actors = self.cores.iter().filter(|(_, c)| *c == core).map(|(a, _)| a.clone()).collect();
                (core, actors)
            })
            .collect()
    }
}

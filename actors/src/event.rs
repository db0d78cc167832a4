//! µEvent types and their hierarchy.
//!
//! Every event type has a hierarchical id: a `u32` with one byte per level, the first level in
//! the top byte. `PKT` is `01 00 00 00`, `PKT/TCP` is `01 01 00 00`, `PKT/TCP/SYN` is
//! `01 01 01 00`. "X is an ancestor of Y" is therefore a prefix test on the bytes that X
//! uses ([`EventType::covers`]), which is what the stage runner does for every event it sees.
//! A subscription to `X` accepts `X` and every descendant: descendants carry at least the
//! fields of their ancestors (a `PKT/TCP/SYN` event is a `PKT/TCP` event is a `PKT` event).
//!
//! Built-in types are constants in [`builtin`]. Network functions register their own types
//! under an existing parent — by convention under `EVENT` — through an [`EventRegistry`],
//! which gives each new name the next free child id of its parent. Ids are assigned in
//! registration order, so the same app file always yields the same ids.
//!
//! Invariants: a level byte is never 0 except below the type's depth; at most 4 levels; at
//! most 255 children per parent. The id 0 is reserved for control descriptors
//! ([`builtin::CONTROL`]) and is no event type a user can name.

use std::collections::BTreeMap;
use std::fmt;

/// A hierarchical µEvent type id (see the module docs).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct EventType(u32);

impl EventType {
    /// Builds a type from its raw id. Raw ids are only meaningful with the registry that
    /// assigned them; prefer [`builtin`] constants and [`EventRegistry::resolve`].
    pub const fn from_raw(raw: u32) -> EventType {
        EventType(raw)
    }

    /// The raw id.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Number of levels: `PKT` is 1, `PKT/TCP/SYN` is 3, the control id 0 is 0.
    pub const fn depth(self) -> u32 {
        if self.0 == 0 {
            0
        } else {
            4 - self.0.trailing_zeros() / 8
        }
    }

    const fn mask(depth: u32) -> u32 {
        if depth == 0 {
            0
        } else {
            u32::MAX << (8 * (4 - depth))
        }
    }

    /// True when `other` is this type or one of its descendants. The control id covers
    /// nothing and is covered by nothing.
    pub const fn covers(self, other: EventType) -> bool {
        if self.0 == 0 || other.0 == 0 {
            return false;
        }
        other.0 & Self::mask(self.depth()) == self.0
    }

    /// The parent type, or `None` for a top-level type.
    pub const fn parent(self) -> Option<EventType> {
        let d = self.depth();
        if d <= 1 {
            None
        } else {
            Some(EventType(self.0 & Self::mask(d - 1)))
        }
    }

    /// The child with index `n` (1..=255) one level below; `None` when this type is already
    /// 4 levels deep or `n` is 0.
    pub const fn child(self, n: u8) -> Option<EventType> {
        let d = self.depth();
        if d >= 4 || n == 0 {
            return None;
        }
        Some(EventType(self.0 | ((n as u32) << (8 * (3 - d)))))
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match builtin::name_of(*self) {
            Some(n) => write!(f, "EventType({n})"),
            None => write!(f, "EventType({:#010x})", self.0),
        }
    }
}

/// The built-in event types (docs/architecture.md, "Event types").
pub mod builtin {
    use super::EventType;

    /// Reserved for control descriptors (end of input). Not a µEvent.
    pub const CONTROL: EventType = EventType(0);
    /// Every packet, after the L2/3 µStack parsed it.
    pub const PKT: EventType = EventType(0x0100_0000);
    /// TCP segments.
    pub const PKT_TCP: EventType = EventType(0x0101_0000);
    /// TCP segments with SYN set (and no RST).
    pub const PKT_TCP_SYN: EventType = EventType(0x0101_0100);
    /// TCP segments with FIN set (and neither SYN nor RST).
    pub const PKT_TCP_FIN: EventType = EventType(0x0101_0200);
    /// TCP segments with RST set.
    pub const PKT_TCP_RST: EventType = EventType(0x0101_0300);
    /// UDP datagrams.
    pub const PKT_UDP: EventType = EventType(0x0102_0000);
    /// ICMP and ICMPv6 messages.
    pub const PKT_ICMP: EventType = EventType(0x0103_0000);
    /// Flow lifecycle (start, end with a reason) from the L2/3 flow table.
    pub const FLOW: EventType = EventType(0x0200_0000);
    /// TCP connection lifecycle from the TCP monitor µStack.
    pub const FLOW_TCP: EventType = EventType(0x0201_0000);
    /// A TCP connection ended.
    pub const FLOW_TCP_TERMINATE: EventType = EventType(0x0201_0100);
    /// New contiguous bytes in a TCP bytestream.
    pub const DATA_RDY: EventType = EventType(0x0300_0000);
    /// A request for a flow (proxies, load balancers).
    pub const FLOW_REQ: EventType = EventType(0x0400_0000);
    /// A flow's destination was chosen.
    pub const FLOW_DEST: EventType = EventType(0x0500_0000);
    /// Periodic statistics.
    pub const STATS: EventType = EventType(0x0600_0000);
    /// Root of the types that network functions register.
    pub const EVENT: EventType = EventType(0x0700_0000);
    /// A raw frame from an RX port, before any µStack parsed it.
    pub const FRAME: EventType = EventType(0x0800_0000);

    /// Every built-in type with its name, parents before children.
    pub const ALL: &[(&str, EventType)] = &[
        ("PKT", PKT),
        ("PKT/TCP", PKT_TCP),
        ("PKT/TCP/SYN", PKT_TCP_SYN),
        ("PKT/TCP/FIN", PKT_TCP_FIN),
        ("PKT/TCP/RST", PKT_TCP_RST),
        ("PKT/UDP", PKT_UDP),
        ("PKT/ICMP", PKT_ICMP),
        ("FLOW", FLOW),
        ("FLOW/TCP", FLOW_TCP),
        ("FLOW/TCP/TERMINATE", FLOW_TCP_TERMINATE),
        ("DATA_RDY", DATA_RDY),
        ("FLOW_REQ", FLOW_REQ),
        ("FLOW_DEST", FLOW_DEST),
        ("STATS", STATS),
        ("EVENT", EVENT),
        ("FRAME", FRAME),
    ];

    /// Name of a built-in type.
    pub fn name_of(t: EventType) -> Option<&'static str> {
        ALL.iter().find(|(_, e)| *e == t).map(|(n, _)| *n)
    }
}

/// Why a type could not be registered or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventTypeError {
    /// The name is not a registered type.
    #[error("unknown event type `{name}` (known types: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// Every registered name, comma separated.
        known: String,
    },
    /// The parent of a new type is not registered.
    #[error("cannot register event type `{name}`: its parent `{parent}` is not a known event type")]
    UnknownParent {
        /// The new type.
        name: String,
        /// Its missing parent.
        parent: String,
    },
    /// A name with an empty level, bad characters, or no parent.
    #[error("cannot register event type `{name}`: {reason}")]
    BadName {
        /// The name asked for.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Four levels or 255 children already.
    #[error("cannot register event type `{name}`: the hierarchy is full there ({reason})")]
    Full {
        /// The name asked for.
        name: String,
        /// Depth or fan-out.
        reason: &'static str,
    },
}

/// Names ↔ ids of every known event type: the built-ins and those registered by NFs.
#[derive(Clone, Debug)]
pub struct EventRegistry {
    by_name: BTreeMap<String, EventType>,
    by_id: BTreeMap<EventType, String>,
}

impl Default for EventRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl EventRegistry {
    /// A registry holding the built-in types.
    pub fn new() -> EventRegistry {
        let mut r = EventRegistry { by_name: BTreeMap::new(), by_id: BTreeMap::new() };
        for (n, t) in builtin::ALL {
            r.by_name.insert((*n).to_string(), *t);
            r.by_id.insert(*t, (*n).to_string());
        }
        r
    }

    /// Registers `name` (e.g. `EVENT/DPI_DETECT`) under its parent (`EVENT`), or returns the
    /// existing id if the name is already registered (two instances of one NF kind).
    pub fn register(&mut self, name: &str) -> Result<EventType, EventTypeError> {
        if let Some(t) = self.by_name.get(name) {
            return Ok(*t);
        }
        let bad = |reason| EventTypeError::BadName { name: name.to_string(), reason };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/') {
            return Err(bad("names use A-Z, 0-9, `_` and `/` between levels"));
        }
        let (parent, leaf) =
            name.rsplit_once('/').ok_or_else(|| bad("a new type needs a parent, as in EVENT/MY_TYPE"))?;
        if leaf.is_empty() || parent.is_empty() || parent.split('/').any(str::is_empty) {
            return Err(bad("empty level"));
        }
        let parent_t = *self
            .by_name
            .get(parent)
            .ok_or_else(|| EventTypeError::UnknownParent { name: name.to_string(), parent: parent.to_string() })?;
        if parent_t.depth() >= 4 {
            return Err(EventTypeError::Full { name: name.to_string(), reason: "4 levels at most" });
        }
        let next = (1..=255u8)
            .filter_map(|n| parent_t.child(n))
            .find(|c| !self.by_id.contains_key(c))
            .ok_or(EventTypeError::Full { name: name.to_string(), reason: "255 children per type at most" })?;
        self.by_name.insert(name.to_string(), next);
        self.by_id.insert(next, name.to_string());
        Ok(next)
    }

    /// The id of a registered name.
    pub fn resolve(&self, name: &str) -> Result<EventType, EventTypeError> {
        self.by_name.get(name).copied().ok_or_else(|| EventTypeError::Unknown {
            name: name.to_string(),
            known: self.by_name.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// The name of an id (`"?0x..."` for an id nobody registered, `"CONTROL"` for 0).
    pub fn name(&self, t: EventType) -> String {
        if t == builtin::CONTROL {
            return "CONTROL".into();
        }
        self.by_id.get(&t).cloned().unwrap_or_else(|| format!("?{:#010x}", t.raw()))
    }

    /// Every registered type, by id.
    pub fn iter(&self) -> impl Iterator<Item = (EventType, &str)> {
        self.by_id.iter().map(|(t, n)| (*t, n.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::builtin::*;
    use super::*;

    #[test]
    fn hierarchy_is_a_prefix_test() {
        assert!(PKT.covers(PKT_TCP_SYN));
        assert!(PKT_TCP.covers(PKT_TCP_SYN));
        assert!(PKT_TCP.covers(PKT_TCP));
        assert!(!PKT_TCP_SYN.covers(PKT_TCP));
        assert!(!PKT_UDP.covers(PKT_TCP_SYN));
        assert!(!FLOW.covers(PKT));
        assert!(!CONTROL.covers(PKT) && !PKT.covers(CONTROL));
        assert_eq!(PKT_TCP_SYN.depth(), 3);
        assert_eq!(PKT_TCP_SYN.parent(), Some(PKT_TCP));
        assert_eq!(PKT.parent(), None);
    }

    #[test]
    fn builtins_are_consistent() {
        for (name, t) in ALL {
            let depth = name.split('/').count() as u32;
            assert_eq!(t.depth(), depth, "{name}");
            if let Some((p, _)) = name.rsplit_once('/') {
                let pt = ALL.iter().find(|(n, _)| *n == p).unwrap().1;
                assert_eq!(t.parent(), Some(pt), "{name}");
            }
        }
    }

    #[test]
    fn registering_under_a_parent() {
        let mut r = EventRegistry::new();
        let dpi = r.register("EVENT/DPI_DETECT").unwrap();
        let ids = r.register("EVENT/IDS_ALERT").unwrap();
        assert_ne!(dpi, ids);
        assert!(EVENT.covers(dpi) && EVENT.covers(ids));
        assert_eq!(r.register("EVENT/DPI_DETECT").unwrap(), dpi);
        let http = r.register("EVENT/DPI_DETECT/HTTP").unwrap();
        assert!(dpi.covers(http));
        assert_eq!(r.name(http), "EVENT/DPI_DETECT/HTTP");
        assert_eq!(r.resolve("EVENT/IDS_ALERT").unwrap(), ids);
    }

    #[test]
    fn registration_errors_name_the_problem() {
        let mut r = EventRegistry::new();
        let e = r.register("NOPE/X").unwrap_err();
        assert!(e.to_string().contains("parent `NOPE`"), "{e}");
        assert!(matches!(r.register("LONELY"), Err(EventTypeError::BadName { .. })));
        assert!(matches!(r.register("EVENT/a b"), Err(EventTypeError::BadName { .. })));
        r.register("EVENT/A").unwrap();
        r.register("EVENT/A/B").unwrap();
        r.register("EVENT/A/B/C").unwrap();
        assert!(matches!(r.register("EVENT/A/B/C/D"), Err(EventTypeError::Full { .. })));
        let e = r.resolve("PKT/SCTP").unwrap_err();
        assert!(e.to_string().contains("`PKT/SCTP`"));
    }

    #[test]
    fn fan_out_is_bounded() {
        let mut r = EventRegistry::new();
        for i in 0..255 {
            r.register(&format!("EVENT/T{i}")).unwrap();
        }
        assert!(matches!(r.register("EVENT/T255"), Err(EventTypeError::Full { .. })));
    }
}

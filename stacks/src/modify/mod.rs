//! Bytestream modification in the middle, without terminating the connection
//! (docs/modification.md): the TCP monitor's `[stack.tcp.modify]`.
//!
//! * [`edits`] — one direction's modification list and its original ↔ output maps;
//! * [`forward`] — one connection forwarded at stream level: rewriting, re-segmenting,
//!   seq/ack remapping, retransmissions;
//! * [`glue`] — the monitor's side: which connections it forwards, the cheap path and
//!   per-flow upgrades;
//! * [`ModifyConfig`] and [`Board`] — the limits, and where NFs' requests (changes,
//!   upgrades) meet the monitor.

pub mod edits;
pub mod forward;
pub mod glue;

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actors::desc::FlowRef;
use actors::modify::{ModifyError, StreamChange};
use rustc_hash::FxHashMap;

use edits::{Edit, EditLimits, EditList};

/// `[stack.tcp.modify]`: its presence makes the TCP monitor forward TCP connections itself,
/// rewritten by the NFs' changes (docs/modification.md).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModifyConfig {
    /// Changes a direction holds at most (until the receiver acknowledges them); more are
    /// refused with [`ModifyError::Limit`] and counted (`modify_refused_limit`).
    pub max_changes: usize,
    /// Replacement bytes a direction holds at most (same).
    pub max_insert_bytes: usize,
    /// Bytes a connection holds at most: original bytes waiting (not judged yet, or held)
    /// plus output bytes kept for retransmission. Over it the connection is reset (both
    /// ends, counted `modify_limit_resets`).
    pub max_held_bytes: usize,
    /// A direction whose bytes have waited this long is forwarded whatever holds say
    /// (counted `modify_hold_timeouts`): an NF that holds the start of a pattern that never
    /// completes must not stall the connection.
    pub hold_timeout_ms: u64,
    /// Which connections start on the modification path: every one (`"all"`, the
    /// default), or none until an NF asks (`"on_request"`: the cheap path first,
    /// docs/modification.md "Per-flow upgrade").
    pub upgrade: Upgrade,
}

/// `[stack.tcp.modify] upgrade`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Upgrade {
    /// Every connection whose SYN the monitor sees is forwarded on the modification path.
    #[default]
    All,
    /// Connections are forwarded as received (the cheap path) until an NF upgrades one
    /// ([`actors::Context::upgrade_flow`]).
    OnRequest,
}

impl Default for ModifyConfig {
    fn default() -> Self {
        ModifyConfig {
            max_changes: 1 << 20,
            max_insert_bytes: 64 << 20,
            max_held_bytes: 32 << 20,
            hold_timeout_ms: 40,
            upgrade: Upgrade::All,
        }
    }
}

impl ModifyConfig {
    /// The edit list limits.
    pub fn limits(&self) -> EditLimits {
        EditLimits { max_edits: self.max_changes, max_insert_bytes: self.max_insert_bytes }
    }

    /// The hold timeout.
    pub fn hold_timeout(&self) -> Duration {
        Duration::from_millis(self.hold_timeout_ms)
    }
}

/// One connection's lists and holds, on the [`Board`].
#[derive(Debug)]
pub struct Entry {
    /// Edit lists, by direction (0: client → server).
    pub lists: [EditList; 2],
    /// Each direction's hold: (held from, seen up to, set when).
    pub hold: [Option<(u64, u64, Instant)>; 2],
    /// Where each direction joined the modification path (0 unless upgraded mid-stream):
    /// the bytes before left on the cheap path.
    pub base: [u64; 2],
}

/// Where NFs' changes meet the monitor: every forwarded connection's [`Entry`], by the
/// stream store's key. Process-wide (the monitor and the NFs run in one process).
#[derive(Debug, Default)]
pub struct Board {
    entries: Mutex<FxHashMap<u64, Entry>>,
    limits: Mutex<Option<EditLimits>>,
    /// Changes refused, by reason: too late, overlap, limit.
    pub refused: [std::sync::atomic::AtomicU64; 3],
    /// Changes accepted.
    pub accepted: std::sync::atomic::AtomicU64,
    /// `upgrade = "on_request"`: flows NFs asked to upgrade, not yet taken by the monitor.
    on_request: bool,
    requests: Mutex<Vec<FlowRef>>,
    has_requests: AtomicBool,
    /// Upgrade requests received.
    pub upgrade_requests: std::sync::atomic::AtomicU64,
}

impl Board {
    /// A board whose lists have `limits`.
    pub fn new(limits: EditLimits) -> Board {
        Board { limits: Mutex::new(Some(limits)), ..Board::default() }
    }

    /// A board whose flows start on the cheap path (`upgrade = "on_request"`).
    pub fn on_request(limits: EditLimits) -> Board {
        Board { limits: Mutex::new(Some(limits)), on_request: true, ..Board::default() }
    }

    /// An NF asks for `flow` (connection `key`) to be upgraded. Every flow is modifiable
    /// already unless the board is `on_request`; a flow already upgraded stays so.
    pub fn request_upgrade(&self, key: u64, flow: FlowRef) -> Result<(), ModifyError> {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        if !self.on_request || self.with(|m| m.contains_key(&key)) {
            return Ok(());
        }
        self.upgrade_requests.fetch_add(1, Relaxed);
        let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: one pending request per flow.
        if !r.contains(&flow) {
            r.push(flow);
        }
        self.has_requests.store(true, Release);
        Ok(())
    }

    /// The pending upgrade requests (cheap when there are none: one atomic load).
    pub fn take_requests(&self) -> Vec<FlowRef> {
        use std::sync::atomic::Ordering::Acquire;
        if !self.has_requests.swap(false, Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.requests.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Where direction `dir` of connection `key` joined the modification path, if it is on it.
    pub fn base(&self, key: u64, dir: usize) -> Option<u64> {
        self.with(|m| m.get(&key).map(|e| e.base[dir]))
    }

    /// Runs `f` on the board's entries.
    pub fn with<R>(&self, f: impl FnOnce(&mut FxHashMap<u64, Entry>) -> R) -> R {
        f(&mut self.entries.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Opens connection `key`'s entry.
    pub fn open(&self, key: u64) {
        self.open_at(key, [0, 0], [false, false]);
    }

    /// Opens connection `key`'s entry with each direction's bytes before `base` already
    /// forwarded (an upgrade mid-stream), and its FIN too where `fin` says so.
    pub fn open_at(&self, key: u64, base: [u64; 2], fin: [bool; 2]) {
        let lim = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(EditLimits { max_edits: 1 << 20, max_insert_bytes: 64 << 20 });
        let list = |d: usize| {
            if fin[d] {
                EditList::ended_at(lim, base[d])
            } else {
                EditList::starting_at(lim, base[d])
            }
        };
        let lists = [list(0), list(1)];
        self.with(|m| m.insert(key, Entry { lists, hold: [None; 2], base }));
    }

    /// Closes it.
    pub fn close(&self, key: u64) {
        self.with(|m| m.remove(&key));
    }

    /// An NF's change to direction `dir` (0: client → server) of connection `key`.
    pub fn change(&self, key: u64, dir: usize, change: StreamChange) -> Result<(), ModifyError> {
        use std::sync::atomic::Ordering::Relaxed;
        let r = self.with(|m| {
            let e = m.get_mut(&key).ok_or(ModifyError::NotModifiable)?;
            match change {
                StreamChange::Replace { at, len, with } => e.lists[dir].add(Edit { at, len, with }),
                StreamChange::HoldFrom { from, seen } => {
                    e.hold[dir] = Some((from, seen.max(from), Instant::now()));
                    Ok(())
                }
                StreamChange::Release => {
                    e.hold[dir] = None;
                    Ok(())
                }
            }
        });
        match &r {
            Ok(()) => self.accepted.fetch_add(1, Relaxed),
            Err(ModifyError::TooLate { .. }) => self.refused[0].fetch_add(1, Relaxed),
            Err(ModifyError::Overlap { .. }) => self.refused[1].fetch_add(1, Relaxed),
            Err(_) => self.refused[2].fetch_add(1, Relaxed),
        };
        r
    }
}

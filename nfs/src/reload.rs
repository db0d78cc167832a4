//! Live reconfiguration of an NF's options (docs/reconfiguration.md): the generations of
//! its configuration, handed from the controller to the running actor.
//!
//! The engine gives every NF of a run a [`ReloadPort`] (in [`NfCommon::reload`]). A reload
//! appends a [`Generation`] — the new options and the sequence number of the first packet
//! they apply to — and the NF, at each event it handles, asks the port whether a newer
//! generation is due for that event ([`ReloadPort::due`]). Because every event carries the
//! sequence number of the input packet that raised it, and every execution mode hands an NF
//! the same events in the same order, "from packet N" is the same event boundary in modes
//! a–d: the reference run and the parallel runs switch at the same event.
//!
//! The read side is one relaxed load when nothing is pending (the generation counter) and
//! an [`arc_swap`] load when something is: no lock on the data path. A live reload learns
//! its packet number only when the RX port stamps it (`actors::boundary`): until then the
//! generation's `from_seq` is `u64::MAX` and it is not due.
//!
//! Which options can change is each kind's business ([`NfOptions::reload_changes`]): the
//! signature matcher's rule file, the firewall's rules and default. Everything that is part
//! of the linked contract (subscriptions, publications, drop reasons) must stay.
//!
//! [`NfCommon::reload`]: crate::common::NfCommon::reload
//! [`NfOptions::reload_changes`]: crate::NfOptions::reload_changes

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::NfSpec;

/// One configuration of an NF, from a packet number on.
#[derive(Debug)]
pub struct Generation {
    /// 1 for the configuration the run started with; each accepted reload adds one.
    pub number: u32,
    /// The first packet (input sequence number, from 1) it applies to; `u64::MAX` until
    /// the RX port has stamped a live reload.
    pub from_seq: Arc<AtomicU64>,
    /// The NF's new options.
    pub spec: Box<dyn NfSpec>,
}

/// Where an NF finds the generations of its configuration (see the module docs).
#[derive(Debug, Default)]
pub struct ReloadPort {
    /// The newest generation number pushed (0: none beyond the first).
    latest: AtomicU32,
    gens: ArcSwap<Vec<Arc<Generation>>>,
}

impl ReloadPort {
    /// An empty port.
    pub fn new() -> Arc<ReloadPort> {
        Arc::default()
    }

    /// Adds a generation (the controller; one writer at a time).
    pub fn push(&self, g: Generation) {
        let number = g.number;
        let mut v: Vec<Arc<Generation>> = self.gens.load().iter().cloned().collect();
        v.push(Arc::new(g));
        self.gens.store(Arc::new(v));
        self.latest.store(number, Ordering::Release);
    }

    /// The newest generation after `applied` that is due at an event of packet `seq`, if
    /// any; the NF then applies it and remembers its number.
    pub fn due(&self, applied: u32, seq: u64) -> Option<Arc<Generation>> {
        if self.latest.load(Ordering::Acquire) <= applied {
            return None;
        }
        let gens = self.gens.load();
        gens.iter().rev().find(|g| g.number > applied && g.from_seq.load(Ordering::Acquire) <= seq).cloned()
    }
}

/// The kind's options of `g`, when they are of type `T` (they always are: the controller
/// checked the kind).
pub fn options_of<T: 'static>(g: &Generation) -> Option<&T> {
    g.spec.as_any().downcast_ref::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_is_due_from_its_packet_on_and_only_once_stamped() {
        let port = ReloadPort::new();
        assert!(port.due(0, 100).is_none());
        let from = Arc::new(AtomicU64::new(u64::MAX));
        let spec: Box<dyn NfSpec> = Box::new(toml::from_str::<crate::firewall::FirewallConfig>("").unwrap());
        port.push(Generation { number: 2, from_seq: from.clone(), spec });
        assert!(port.due(0, 100).is_none(), "not stamped yet");
        from.store(50, Ordering::Release);
        assert!(port.due(0, 49).is_none());
        assert_eq!(port.due(0, 50).map(|g| g.number), Some(2));
        assert!(port.due(2, 60).is_none(), "applied already");
    }
}

//! The event boundary of a live reconfiguration: the RX port names the first packet a
//! reload applies to.
//!
//! A reload requested while traffic flows (`mbox ctl PREFIX reload`, SIGHUP) must apply at
//! the same event boundary in every NF, however far each has got. The controller hands the
//! reload's `from_seq` cell (initially `u64::MAX`: "not yet") to a [`Boundary`]; the RX port,
//! before it numbers its next packet, stamps every requested cell with that packet's
//! sequence number and only then publishes the packet. Every event an NF handles carries the
//! sequence number of the packet that raised it, and reaches the NF through rings whose push
//! (release) and pop (acquire) order the stamp before it, so an NF switches exactly at the
//! first event of a packet numbered `from_seq` or later — the in-band equivalent of a control
//! marker in the rings, at no cost to the data path but one relaxed load per packet at RX.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Reloads waiting for the RX port's next packet number (see the module docs).
#[derive(Debug, Default)]
pub struct Boundary {
    requested: AtomicBool,
    pending: Mutex<Vec<Arc<AtomicU64>>>,
}

impl Boundary {
    /// A boundary with nothing requested.
    pub fn new() -> Arc<Boundary> {
        Arc::default()
    }

    /// Asks RX to stamp `from_seq` with the number of its next packet.
    pub fn request(&self, from_seq: Arc<AtomicU64>) {
        self.request_all([from_seq]);
    }

    /// Asks RX to stamp every cell of `cells` with the number of its next packet: all with
    /// the same number.
    pub fn request_all(&self, cells: impl IntoIterator<Item = Arc<AtomicU64>>) {
        if let Ok(mut p) = self.pending.lock() {
            p.extend(cells);
            self.requested.store(true, Ordering::Release);
        }
    }

    /// RX, before numbering packet `next_seq`: stamps every requested cell with it.
    pub fn stamp(&self, next_seq: u64) {
        if !self.requested.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut p) = self.pending.lock() {
            for cell in p.drain(..) {
                cell.store(next_seq, Ordering::Release);
            }
            self.requested.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_packet_number_is_stamped_once() {
        let b = Boundary::new();
        b.stamp(5);
        let cell = Arc::new(AtomicU64::new(u64::MAX));
        b.request(cell.clone());
        assert_eq!(cell.load(Ordering::Acquire), u64::MAX);
        b.stamp(7);
        assert_eq!(cell.load(Ordering::Acquire), 7);
        b.stamp(9);
        assert_eq!(cell.load(Ordering::Acquire), 7);
    }
}

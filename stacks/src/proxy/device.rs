//! A queue-backed smoltcp [`Device`] for medium IP: frames the host hands in with
//! [`QueueDevice::inject`] are what the interface receives, and what it transmits is taken out
//! with [`QueueDevice::drain`]. Both queues are bounded: a full receive queue refuses the frame
//! (counted, like a drop on a full ring), so one proxy cannot grow without limit.

use std::collections::VecDeque;

use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Bounded in/out queues of IP packets seen by a smoltcp interface.
#[derive(Debug)]
pub struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    limit: usize,
    mtu: usize,
    /// Frames refused because the receive queue was full.
    pub rx_dropped: u64,
}

impl QueueDevice {
    /// A device holding at most `limit` frames each way, with the given MTU.
    pub fn new(limit: usize, mtu: usize) -> Self {
        Self { rx: VecDeque::new(), tx: VecDeque::new(), limit: limit.max(1), mtu, rx_dropped: 0 }
    }

    /// Hands one IP packet to the interface; false (and counted) when the queue is full.
    pub fn inject(&mut self, packet: Vec<u8>) -> bool {
        if self.rx.len() >= self.limit {
            self.rx_dropped += 1;
            return false;
        }
        self.rx.push_back(packet);
        true
    }

    /// Most frames held each way.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Packets waiting to be taken by [`QueueDevice::drain`].
    pub fn tx_len(&self) -> usize {
        self.tx.len()
    }

    /// Takes every packet the interface transmitted since the last call.
    pub fn drain(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.tx.drain(..)
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.max_transmission_unit = self.mtu;
        caps.medium = Medium::Ip;
        caps.checksum = ChecksumCapabilities::default();
        caps
    }

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let buffer = self.rx.pop_front()?;
        Some((RxToken { buffer }, TxToken { queue: &mut self.tx }))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        // Full: smoltcp keeps the segment and sends it on a later poll.
        if self.tx.len() >= self.limit {
            return None;
        }
        Some(TxToken { queue: &mut self.tx })
    }
}

#[doc(hidden)]
pub struct RxToken {
    buffer: Vec<u8>,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.buffer)
    }
}

#[doc(hidden)]
pub struct TxToken<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buffer = vec![0; len];
        let result = f(&mut buffer);
        self.queue.push_back(buffer);
        result
    }
}

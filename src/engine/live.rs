//! Live runs (`mbox run APP --iface A[,B]`): opens the interfaces' `AF_PACKET` ports and
//! stops the run after `--duration`.
//!
//! One interface is passive: frames are read, nothing is sent (`-o` may still record what
//! the chain emits); the port also reads what the local host sends on the interface. Two
//! interfaces are inline, a bump in the wire: a frame read on the first leaves through the
//! second and vice versa unless an NF drops it; the ports ignore outgoing frames, so what
//! they send is never read back. The frame's ingress port
//! travels beside the pool ([`actors::io::Ingress`]). The link type is Ethernet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::io::{Ingress, LiveSink, LiveSource, PacketSink, PacketSource};
use runtime::ports::{AfPacketRx, AfPacketTx, PcapWriter, RingConfig};

use super::RunError;

/// What a live run reads and sends (see the module docs).
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// One interface (passive) or two (inline).
    pub ifaces: Vec<String>,
    /// The receive rings' geometry.
    pub ring: RingConfig,
}

impl LiveOptions {
    /// True with two interfaces.
    pub fn inline(&self) -> bool {
        self.ifaces.len() == 2
    }

    /// How the run's input is named in the report: `iface m0,m1 (inline)`.
    pub fn describe(&self) -> String {
        let mode = if self.inline() { "inline" } else { "passive" };
        format!("iface {} ({mode})", self.ifaces.join(","))
    }
}

/// Opens every interface of `live` for receiving (RX's source).
pub(crate) fn open_source(live: &LiveOptions) -> Result<Box<dyn PacketSource>, RunError> {
    if live.ifaces.is_empty() || live.ifaces.len() > 2 {
        return Err(RunError::Config(vec![format!(
            "--iface takes one interface (passive) or two (inline), not {}",
            live.ifaces.len()
        )]));
    }
    if live.inline() && live.ifaces[0] == live.ifaces[1] {
        return Err(RunError::Config(vec![format!(
            "--iface {0},{0}: an inline pair needs two different interfaces",
            live.ifaces[0]
        )]));
    }
    let mut rx = Vec::new();
    for i in &live.ifaces {
        rx.push(AfPacketRx::open(i, live.ring, live.inline())?);
    }
    Ok(Box::new(LiveSource::new(rx)))
}

/// TX's sink and, inline, the table of each buffer's ingress port.
pub(crate) type TxEnd = (Box<dyn PacketSink>, Option<Arc<Ingress>>);

/// TX's sink for `live` and, inline, the ingress table; `capture` is the `-o` writer.
/// Passive: only the capture, nothing is sent.
pub(crate) fn open_sink(live: &LiveOptions, pool_buffers: u32, capture: Option<PcapWriter>) -> Result<TxEnd, RunError> {
    if !live.inline() {
        return Ok((Box::new(capture), None));
    }
    let mut tx = Vec::new();
    for i in &live.ifaces {
        tx.push(AfPacketTx::open(i)?);
    }
    Ok((Box::new(LiveSink::new(tx, capture)), Some(Ingress::new(pool_buffers))))
}

/// Sets `stop` once `duration` has passed (unless the run ended first, `done`); the returned
/// flag says whether it did.
pub(crate) fn stop_after(stop: Arc<AtomicBool>, duration: Duration, done: Arc<AtomicBool>) -> Arc<AtomicBool> {
    let fired = Arc::new(AtomicBool::new(false));
    let f = fired.clone();
    let start = Instant::now();
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
            let left = duration.saturating_sub(start.elapsed());
            if left.is_zero() {
                f.store(true, Ordering::SeqCst);
                stop.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    });
    fired
}

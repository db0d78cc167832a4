//! DPDK runs (`mbox run APP --dpdk "EAL ARGS" --ports A[,B]`): the EAL and the ports of
//! `runtime::ports::dpdk` as RX's source and TX's sink (docs/dpdk.md).
//!
//! Like a live run (`live.rs`): one port is passive (frames are read, nothing is sent, the
//! app's dropping NFs report "would drop"); two ports are inline, a frame read on the first
//! leaving through the second and vice versa unless an NF drops it; the ingress port travels
//! beside the pool ([`actors::io::Ingress`]). The link type is Ethernet. The run ends on
//! Ctrl-C, SIGTERM, `--duration`, or after `--count` frames.
//!
//! Without the `dpdk` cargo feature, [`DpdkOptions`] still parses, and the run stops with an
//! error that says how to build `mbox` with it.

use serde::Serialize;

/// What a DPDK run reads and sends (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct DpdkOptions {
    /// The EAL's arguments, whitespace-separated (`-l 0 --no-huge -m 256 --no-pci
    /// --vdev=net_pcap0,rx_pcap=in.pcap`).
    pub eal_args: String,
    /// One port id (passive) or two (inline).
    pub ports: Vec<u16>,
    /// End the input after this many frames (as at the end of a capture).
    pub count: Option<u64>,
}

impl DpdkOptions {
    /// True with two ports.
    pub fn inline(&self) -> bool {
        self.ports.len() == 2
    }

    /// How the run's input is named in the report: `dpdk ports 0,1 (inline)`.
    pub fn describe(&self) -> String {
        let mode = if self.inline() { "inline" } else { "passive" };
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        format!("dpdk ports {} ({mode})", ports.join(","))
    }
}

/// One DPDK port's counters (`rte_eth_stats`) at the end of the run, in `--stats-json`'s
/// `dpdk_ports` and on the summary's `dpdk port` lines.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DpdkPortLine {
    /// `0 (net_pcap0)`: the port id and the device's name.
    pub port: String,
    /// Its counters (flattened into the line in JSON).
    #[serde(flatten)]
    pub counters: runtime::ports::DpdkStats,
}

#[cfg(not(feature = "dpdk"))]
mod imp {
    use super::super::RunError;
    use super::{DpdkOptions, DpdkPortLine};
    use actors::io::{Ingress, PacketSink, PacketSource};
    use runtime::ports::PcapWriter;
    use std::sync::Arc;

    /// Stands for the open ports; never made without the feature.
    pub(crate) enum Ports {}

    pub(crate) fn open(_: &DpdkOptions) -> Result<(Box<dyn PacketSource>, Ports), RunError> {
        Err(RunError::Config(vec![
            "--dpdk: this mbox was built without DPDK; build it with `cargo build --release --features dpdk` after `apt-get install libdpdk-dev dpdk-dev pkg-config libclang-dev clang` (docs/dpdk.md)".into(),
        ]))
    }

    pub(crate) fn open_sink(
        ports: &Ports,
        _: &DpdkOptions,
        _: u32,
        _: Option<PcapWriter>,
    ) -> (Box<dyn PacketSink>, Option<Arc<Ingress>>) {
        match *ports {}
    }

    pub(crate) fn finish(ports: &Ports) -> Vec<DpdkPortLine> {
        match *ports {}
    }
}

#[cfg(feature = "dpdk")]
mod imp {
    use std::sync::Arc;

    use actors::io::{Ingress, Injected, PacketSink, PacketSource};
    use runtime::ports::dpdk::{DpdkConfig, DpdkPorts, DpdkRx, DpdkTx};
    use runtime::ports::{PacketRecord, PcapWriter, PortError};

    use super::super::RunError;
    use super::{DpdkOptions, DpdkPortLine};

    pub(crate) type Ports = Arc<DpdkPorts>;

    /// RX's source over the ports (round robin), ending after `count` frames if given.
    struct Source {
        rx: DpdkRx,
        last: u8,
    }

    impl PacketSource for Source {
        fn next_packet(&mut self) -> Result<Option<PacketRecord<'_>>, PortError> {
            match self.rx.next_frame() {
                Some((port, rec)) => {
                    self.last = port;
                    Ok(Some(rec))
                }
                None => Ok(None),
            }
        }
        fn ended(&self) -> bool {
            self.rx.exhausted()
        }
        fn port(&self) -> u8 {
            self.last
        }
        fn bytes_read(&self) -> u64 {
            0
        }
    }

    /// TX's sink over an inline pair: a frame from port 0 leaves through port 1 and vice
    /// versa; optionally also written to a capture (`-o`).
    struct Sink {
        tx: DpdkTx,
        capture: Option<PcapWriter>,
    }

    impl PacketSink for Sink {
        fn write(&mut self, ts_ns: u64, data: &[u8], orig_len: u32) -> Result<(), PortError> {
            self.write_from(0, ts_ns, data, orig_len)
        }
        fn write_from(&mut self, port: u8, ts_ns: u64, data: &[u8], orig_len: u32) -> Result<(), PortError> {
            self.tx.queue(usize::from(port ^ 1), data);
            match &mut self.capture {
                Some(w) => w.write(ts_ns, data, orig_len),
                None => Ok(()),
            }
        }
        fn flush_burst(&mut self) {
            self.tx.flush();
        }
        fn inject(&mut self, egress: u8, ts_ns: u64, data: &[u8]) -> Result<Injected, PortError> {
            if !self.tx.queue(usize::from(egress), data) {
                return Ok(Injected::NotSent);
            }
            if let Some(w) = &mut self.capture {
                w.write(ts_ns, data, data.len() as u32)?;
            }
            Ok(Injected::Sent)
        }
        fn finish(&mut self) -> Result<u64, PortError> {
            self.tx.flush();
            let sent = self.tx.sent();
            match self.capture.take() {
                Some(w) => w.finish().map(|_| sent),
                None => Ok(sent),
            }
        }
        fn end_note(&self) -> Option<String> {
            (self.tx.failed() > 0).then(|| {
                format!(
                    "{} frame(s) were not sent on the DPDK ports ({} found no free mbuf; the rest the device did not take after {} tries)",
                    self.tx.failed(),
                    self.tx.no_mbuf(),
                    runtime::ports::dpdk::TX_RETRIES + 1
                )
            })
        }
    }

    pub(crate) fn open(d: &DpdkOptions) -> Result<(Box<dyn PacketSource>, Ports), RunError> {
        let ports = DpdkPorts::open(&d.eal_args, &d.ports, DpdkConfig::default())
            .map_err(|e| RunError::Config(vec![e.to_string()]))?;
        let source = Source { rx: ports.rx(d.count), last: 0 };
        Ok((Box::new(source), Arc::new(ports)))
    }

    pub(crate) fn open_sink(
        ports: &Ports,
        d: &DpdkOptions,
        pool_buffers: u32,
        capture: Option<PcapWriter>,
    ) -> (Box<dyn PacketSink>, Option<Arc<Ingress>>) {
        if !d.inline() {
            return (Box::new(capture), None);
        }
        (Box::new(Sink { tx: ports.tx(), capture }), Some(Ingress::new(pool_buffers)))
    }

    pub(crate) fn finish(ports: &Ports) -> Vec<DpdkPortLine> {
        ports.finish().into_iter().map(|(port, counters)| DpdkPortLine { port, counters }).collect()
    }
}

pub(crate) use imp::{finish, open, open_sink};

/// The warnings the ports' counters call for.
pub(crate) fn warnings(lines: &[DpdkPortLine]) -> Vec<String> {
    let mut w = Vec::new();
    for DpdkPortLine { port, counters: p } in lines {
        if p.imissed > 0 || p.rx_nombuf > 0 || p.ierrors > 0 {
            w.push(format!(
                "dpdk: port {}: {} frame(s) missed because the RX queue was full (imissed), {} for want of an mbuf (rx_nombuf), {} erroneous (ierrors); these never reached rx and are not in packets in",
                port, p.imissed, p.rx_nombuf, p.ierrors
            ));
        }
        if p.oerrors > 0 {
            w.push(format!("dpdk: port {port}: {} transmission error(s) (oerrors)", p.oerrors));
        }
    }
    w
}

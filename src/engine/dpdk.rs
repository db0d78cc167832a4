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
    /// Copy each frame into the pool instead of receiving straight into it (`--dpdk-rx copy`).
    pub copy: bool,
    /// RX queues per port (`--dpdk-queues`; 0: one per shard in mode d, else 1).
    pub queues: u16,
    /// How mode d's shards are chosen (`--dpdk-shard`: `auto`, `queue` or `hash`).
    pub shard: String,
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

/// A DPDK run's set-up and receive books, in `--stats-json`'s `dpdk` and on the summary's
/// `dpdk` lines.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DpdkRunLine {
    /// `zero-copy` or `copy`.
    pub rx_mode: String,
    /// How mode d's shards were chosen: `queue`, `hash`, or `none` (not sharded).
    pub shard_by: String,
    /// What the set-up fell back on or chose (also printed when the ports open).
    pub notes: Vec<String>,
    /// Zero-copy: frames received straight into pool buffers.
    pub zero_copy_frames: u64,
    /// Zero-copy: frames copied (not in a lent buffer: another pool's mbuf, several segments).
    pub copied_frames: u64,
    /// Zero-copy: frames lost for want of a spare buffer to copy into.
    pub lost_frames: u64,
    /// Zero-copy: lent buffers (one pinned mbuf each) the devices still had when RX ended.
    pub at_device_buffers: u64,
    /// Zero-copy: pool buffers lent to DPDK at the start, one external-buffer mbuf each.
    pub lent_buffers: u64,
    /// Zero-copy: bytes of the region registered as external memory (`rte_extmem_register`;
    /// 0 if that failed, which virtual devices do not need).
    pub extmem_registered_bytes: u64,
    /// Zero-copy: of those mbufs, the ones in DPDK's mempool after the run: all of them
    /// when none leaked (virtual devices keep none in their rings).
    pub mempool_free_mbufs: u64,
}

/// One DPDK port's counters (`rte_eth_stats`) at the end of the run, in `--stats-json`'s
/// `dpdk_ports` and on the summary's `dpdk port` lines.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DpdkPortLine {
    /// `0 (net_pcap0)`: the port id and the device's name.
    pub port: String,
    /// RX queues configured.
    pub rx_queues: u16,
    /// RSS on (symmetric key) over the RX queues.
    pub rss: bool,
    /// Its counters (flattened into the line in JSON).
    #[serde(flatten)]
    pub counters: runtime::ports::DpdkStats,
}

#[cfg(not(feature = "dpdk"))]
mod imp {
    use super::super::RunError;
    use super::{DpdkOptions, DpdkPortLine, DpdkRunLine};
    use actors::io::{Ingress, PacketSink, PacketSource};
    use runtime::ports::PcapWriter;
    use std::sync::Arc;

    /// Stands for the open ports; never made without the feature.
    pub(crate) enum Ports {}

    pub(crate) fn open(
        _: &DpdkOptions,
        _: u16,
        _: &mut runtime::pool::PoolAllocator,
    ) -> Result<(Box<dyn PacketSource>, Ports), RunError> {
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

    pub(crate) fn finish(ports: &Ports) -> (Vec<DpdkPortLine>, DpdkRunLine) {
        match *ports {}
    }

    pub(crate) fn shard_queues(ports: &Ports, _: u32) -> Option<Arc<Ingress>> {
        match *ports {}
    }
}

#[cfg(feature = "dpdk")]
mod imp {
    use std::sync::Arc;

    use std::sync::Mutex;

    use actors::io::{InPool, Ingress, Injected, PacketSink, PacketSource};
    use runtime::pool::PoolAllocator;
    use runtime::ports::dpdk::{DpdkConfig, DpdkPorts, DpdkRx, DpdkTx, RxMode};
    use runtime::ports::{PacketRecord, PcapWriter, PortError};

    use super::super::RunError;
    use super::{DpdkOptions, DpdkPortLine, DpdkRunLine};

    /// The open ports and the receiver's zero-copy books, filled when RX ends.
    pub(crate) struct Run {
        ports: DpdkPorts,
        zc: Mutex<Option<(u64, u64, u64, u64)>>,
    }

    pub(crate) type Ports = Arc<Run>;

    /// RX's source over the ports' queues (round robin), ending after `count` frames if
    /// given; zero-copy or copy (runtime::ports::dpdk).
    struct Source {
        rx: DpdkRx,
        run: Ports,
    }

    impl PacketSource for Source {
        fn next_packet(&mut self) -> Result<Option<PacketRecord<'_>>, PortError> {
            Ok(self.rx.next_frame().map(|(_, rec)| rec))
        }
        fn receives_in_pool(&self) -> bool {
            self.rx.zero_copy()
        }
        fn next_in_pool(&mut self, alloc: &mut PoolAllocator) -> Result<Option<InPool>, PortError> {
            Ok(self.rx.next_in_pool(alloc).map(|(packet, ts_ns, len, orig_len)| InPool {
                packet,
                ts_ns,
                len,
                orig_len,
            }))
        }
        fn finish_pool(&mut self, alloc: &mut PoolAllocator) {
            self.rx.finish_pool(alloc);
            if let Some((adopted, copied, lost, at_device)) = self.rx.zero_copy_counts() {
                *self.run.zc.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((adopted, copied, lost, at_device as u64));
            }
        }
        fn ended(&self) -> bool {
            self.rx.exhausted()
        }
        fn port(&self) -> u8 {
            self.rx.last_origin().0
        }
        fn queue(&self) -> u8 {
            self.rx.last_origin().1
        }
        fn bytes_read(&self) -> u64 {
            0
        }
        fn end_note(&self) -> Option<String> {
            self.rx.end_note()
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

    /// Opens the ports for a run of `shards` stack instances (mode d; else 0), lending
    /// `alloc`'s buffers to them in zero-copy mode; prints the set-up's notes.
    pub(crate) fn open(
        d: &DpdkOptions,
        shards: u16,
        alloc: &mut PoolAllocator,
    ) -> Result<(Box<dyn PacketSource>, Ports), RunError> {
        let cfg = DpdkConfig {
            rx_mode: if d.copy { RxMode::Copy } else { RxMode::ZeroCopy },
            queues: d.queues,
            shards,
            shard: d.shard.parse().map_err(|e: String| RunError::Config(vec![format!("--dpdk-shard: {e}")]))?,
            ..DpdkConfig::default()
        };
        let lend = (cfg.rx_mode == RxMode::ZeroCopy).then_some(alloc);
        let ports =
            DpdkPorts::open(&d.eal_args, &d.ports, cfg, lend).map_err(|e| RunError::Config(vec![e.to_string()]))?;
        for n in ports.notes() {
            eprintln!("{n}");
        }
        let rx = ports.rx(d.count);
        let run = Arc::new(Run { ports, zc: Mutex::new(None) });
        Ok((Box::new(Source { rx, run: run.clone() }), run))
    }

    /// The per-buffer queue table RX fills and the shard splitter reads, when the queues
    /// pick the shards.
    pub(crate) fn shard_queues(run: &Ports, buffers: u32) -> Option<Arc<Ingress>> {
        run.ports.shard_by_queue().then(|| Ingress::new(buffers))
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
        (Box::new(Sink { tx: ports.ports.tx(), capture }), Some(Ingress::new(pool_buffers)))
    }

    pub(crate) fn finish(run: &Ports) -> (Vec<DpdkPortLine>, DpdkRunLine) {
        let p = &run.ports;
        let lines = p
            .finish()
            .into_iter()
            .zip(p.queues())
            .map(|((port, counters), (rx_queues, rss))| DpdkPortLine { port, rx_queues, rss, counters })
            .collect();
        let (zero_copy_frames, copied_frames, lost_frames, at_device_buffers) =
            run.zc.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or_default();
        let line = DpdkRunLine {
            rx_mode: p.rx_mode().to_string(),
            shard_by: if p.shard_by_queue() { "queue" } else { "hash" }.into(),
            notes: p.notes().to_vec(),
            zero_copy_frames,
            copied_frames,
            lost_frames,
            at_device_buffers,
            lent_buffers: p.lent_buffers() as u64,
            extmem_registered_bytes: p.extmem_registered() as u64,
            mempool_free_mbufs: p.zero_copy_mbufs_free().map_or(0, u64::from),
        };
        (lines, line)
    }
}

pub(crate) use imp::{finish, open, open_sink, shard_queues};

/// The warnings the ports' counters call for.
pub(crate) fn warnings(lines: &[DpdkPortLine]) -> Vec<String> {
    let mut w = Vec::new();
    for DpdkPortLine { port, counters: p, .. } in lines {
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

//! DPDK ports (feature `dpdk`): the system's DPDK (Debian's 22.11) through `dpdk-sys`.
//!
//! # Lifecycle
//!
//! [`DpdkPorts::open`] initialises the EAL with the user's arguments (once per process:
//! [`init_eal`]; DPDK cannot initialise it twice), checks the port ids, creates the mbuf
//! pools, configures every port with its RX queues (below) and one TX queue, starts it and
//! turns on promiscuous mode. [`DpdkPorts::rx`] and [`DpdkPorts::tx`] hand out the receive
//! and transmit halves, which the RX and TX stages own on their own threads;
//! [`DpdkPorts::finish`] reads each port's `rte_eth_stats` (with the per-queue counters) and
//! stops and closes the devices (a `net_pcap` device writes its `tx_pcap` file on stop).
//!
//! # Receive: straight into the shared pool, or copied
//!
//! [`RxMode::ZeroCopy`] (the default, faster: bench/dpdk_zero_copy.sh, docs/dpdk.md): the
//! ports receive into an mbuf pool whose data buffers *are* buffers of the run's packet pool
//! (`rte_pktmbuf_pool_create_extbuf`, one pinned external buffer per pool buffer). Three
//! quarters of the pool's buffers are **lent** to DPDK ([`PoolAllocator::lend`]); the pool
//! region is registered as external memory (`rte_extmem_register`, best effort). A frame
//! that arrives in such an mbuf is **adopted** ([`PoolAllocator::adopt`]): its buffer becomes
//! the packet, nothing is copied, and the mbuf stays parked with the receiver while the chain
//! holds the buffer. When the buffer comes back on the pool's free list, the receiver takes
//! it off again and frees the parked mbuf to DPDK (the buffer is lent again). A frame in any
//! other mbuf (a `net_ring` device hands out the sender's mbufs; a frame of several
//! segments) is copied into a spare pool buffer. The receiver asks a device for at most as
//! many frames as it has lent buffers at the device, so a device that allocates an mbuf per
//! frame (`net_pcap`) never loses one for want of an mbuf: back-pressure, as for a file. At
//! the end the buffers still lent are counted `returned`, and the pool balances exactly
//! (`allocated == freed`, `lent == adopted + returned`).
//!
//! The mbuf's data starts `RTE_PKTMBUF_HEADROOM` (128) bytes into its buffer, and the pool's
//! packet starts at its buffer's first byte, so each external buffer begins 128 bytes before
//! its pool buffer: the headroom overlaps the previous buffer's last bytes. Receiving never
//! writes the headroom (only prepending would), and transmitting uses the copy pool, so
//! that is safe. The buffers' IO addresses are their virtual ones in IOVA-as-VA mode, and
//! `RTE_BAD_IOVA` otherwise; a real NIC would also need `rte_dev_dma_map` of the region for
//! its IOMMU, which is not done (docs/dpdk.md): zero-copy is tested on virtual devices.
//!
//! [`RxMode::Copy`]: [`DpdkRx::next_frame`] lends out the mbuf's bytes until the next call
//! and RX copies the frame once into the shared pool, as for a capture or an `AF_PACKET`
//! ring. A frame of several segments is gathered into a scratch buffer.
//!
//! Timestamps: a `net_pcap` device with the RX timestamp offload gives the capture's own time
//! (microseconds in the mbuf's dynamic field), so a capture replayed through DPDK keeps its
//! times; every other device gives the wall-clock time of the burst (a NIC's timestamp counts
//! device ticks, not Unix time).
//!
//! # Queues and shards
//!
//! With [`DpdkConfig::queues`] above 1 each port gets that many RX queues (at most what the
//! device has; fewer is said in [`DpdkPorts::notes`]) and, where the device advertises RSS,
//! RSS over every hash type it offers with a *symmetric* key (`0x6d5a` repeated), so both
//! directions of a connection land in the same queue. The receiver polls every queue of
//! every port. With mode d's shards, [`ShardMode::Queue`] makes a frame's queue its shard
//! (RX notes the queue beside the pool; the shard splitter no longer parses); it needs one
//! queue per shard on every port and RSS on each; [`ShardMode::Auto`] takes it when that
//! holds and hashes in software otherwise; every fallback is one line of
//! [`DpdkPorts::notes`], which the run prints.
//!
//! # Transmit
//!
//! [`DpdkTx::queue`] allocates an mbuf, copies the frame into it and adds it to the port's
//! batch; [`DpdkTx::flush`] sends each batch with `rte_eth_tx_burst`, retrying what the
//! device did not take at most [`TX_RETRIES`] times, then frees and counts the rest
//! ([`DpdkTx::failed`], never silent). A frame that finds no free mbuf is counted the same way.
//!
//! # Threads
//!
//! The EAL binds the thread that calls `rte_eal_init` to its first lcore's CPU; [`init_eal`]
//! gives that thread its previous CPU set back, so the core map still decides where every
//! actor runs. RX and TX then call the burst functions from the executor's threads, which are
//! not EAL lcores: the mbuf pool's per-lcore cache is not used (its ring is multi-producer,
//! multi-consumer, so that is safe).
//!
//! Every error names the port and the DPDK call that failed, with `rte_strerror`'s text.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::sync::{Mutex, OnceLock};

use dpdk_sys as sys;

use super::PacketRecord;
use crate::pool::{PacketHandle, PoolAllocator, PoolView};

/// Frames per `rte_eth_rx_burst` / `rte_eth_tx_burst` call.
pub const BURST: usize = 32;
/// Times a transmit batch is offered again when the device did not take all of it.
pub const TX_RETRIES: u32 = 64;

/// Why the EAL or a port could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// `rte_eal_init` failed (or failed before in this process).
    #[error("DPDK EAL initialisation failed ({args}): {reason}")]
    Eal { args: String, reason: String },
    /// A port id that is not a probed device.
    #[error("DPDK port {port} does not exist; ports: {available} (add devices with --vdev=... or a PCI address in the EAL arguments)")]
    NoSuchPort { port: u16, available: String },
    /// A DPDK call on a port failed.
    #[error("DPDK port {port} ({name}): {call}: {reason}")]
    Port { port: u16, name: String, call: &'static str, reason: String },
    /// The mbuf pool could not be created.
    #[error("DPDK: creating the mbuf pool of {mbufs} mbufs: {reason} (with --no-huge, give the EAL memory: -m 256)")]
    Pool { mbufs: u32, reason: String },
    /// A bad option of ours.
    #[error("DPDK: {0}")]
    Config(String),
}

fn errno_text(code: c_int) -> String {
    let code = code.abs();
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    let p = unsafe { sys::rte_strerror(code) };
    if p.is_null() {
        return format!("error {code}");
    }
    // SAFETY: non-null, NUL-terminated (above); copied at once.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    format!("{s} (errno {code})")
}

fn rte_errno_text() -> String {
    // SAFETY: reads the calling thread's rte_errno.
    errno_text(unsafe { sys::mbx_rte_errno() })
}

/// The EAL's outcome, the first time it was asked for (it cannot be initialised twice).
static EAL: OnceLock<Result<String, String>> = OnceLock::new();

/// Initialises the EAL with `args` (whitespace-separated, as on a command line, without the
/// program name), once per process: a later call with the same arguments succeeds at once,
/// with other arguments it fails (the EAL cannot be set up again in a process).
pub fn init_eal(args: &str) -> Result<(), DpdkError> {
    let got = EAL.get_or_init(|| eal_init_now(args).map(|()| args.to_string()));
    match got {
        Ok(first) if first == args => Ok(()),
        Ok(first) => Err(DpdkError::Eal {
            args: args.to_string(),
            reason: format!("the EAL was already initialised in this process with `{first}`; it runs once per process"),
        }),
        Err(reason) => Err(DpdkError::Eal { args: args.to_string(), reason: reason.clone() }),
    }
}

fn eal_init_now(args: &str) -> Result<(), String> {
    let words: Vec<CString> = std::iter::once("mbox")
        .chain(args.split_whitespace())
        .map(|w| CString::new(w).map_err(|_| "NUL byte in the EAL arguments".to_string()))
        .collect::<Result<_, _>>()?;
    // The EAL may keep pointers into argv: the strings live for the rest of the process.
    let words: &'static [CString] = Box::leak(words.into_boxed_slice());
    let mut argv: Vec<*mut c_char> = words.iter().map(|w| w.as_ptr() as *mut c_char).collect();
    argv.push(std::ptr::null_mut());
    let argv: &'static mut [*mut c_char] = Box::leak(argv.into_boxed_slice());
    let cpus = crate::sys::allowed_cpus().ok();
    // SAFETY: argc counts the non-null entries of a NULL-terminated argv whose strings live
    // for the rest of the process (leaked above); called once (guarded by EAL).
    let rc = unsafe { sys::rte_eal_init((argv.len() - 1) as c_int, argv.as_mut_ptr()) };
    // The EAL pinned this thread to its first lcore; the core map decides placement.
    if let Some(c) = cpus {
        let _ = crate::sys::set_current_thread_cpus(&c);
    }
    if rc < 0 {
        return Err(format!("{} (the EAL's own log above says more)", rte_errno_text()));
    }
    Ok(())
}

/// A port's name (`net_pcap0`, a PCI address, ...).
fn port_name(port: u16) -> String {
    let mut buf = [0 as c_char; 64];
    // SAFETY: the call writes at most RTE_ETH_NAME_MAX_LEN (64) bytes, the NUL included,
    // and `buf` has 64.
    let rc = unsafe { sys::rte_eth_dev_get_name_by_port(port, buf.as_mut_ptr()) };
    if rc != 0 {
        return format!("port{port}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// Every probed port, as `0 (net_pcap0), 1 (net_null0)`.
fn available_ports() -> String {
    let mut v = Vec::new();
    for p in 0..sys::RTE_MAX_ETHPORTS as u16 {
        // SAFETY: plain query.
        if unsafe { sys::rte_eth_dev_is_valid_port(p) } == 1 {
            v.push(format!("{p} ({})", port_name(p)));
        }
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// How frames get into the shared packet pool (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RxMode {
    /// The devices receive straight into lent pool buffers.
    #[default]
    ZeroCopy,
    /// Each frame is copied from its mbuf into a pool buffer.
    Copy,
}

impl std::str::FromStr for RxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<RxMode, String> {
        match s {
            "zero-copy" => Ok(RxMode::ZeroCopy),
            "copy" => Ok(RxMode::Copy),
            other => Err(format!("unknown RX mode `{other}` (zero-copy, copy)")),
        }
    }
}

impl std::fmt::Display for RxMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RxMode::ZeroCopy => "zero-copy",
            RxMode::Copy => "copy",
        })
    }
}

/// How mode d's shards are chosen (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ShardMode {
    /// By queue where every port has RSS and one queue per shard, else by hash.
    #[default]
    Auto,
    /// By the frame's RX queue (falls back to hash, said, where that cannot hold).
    Queue,
    /// By the flow's symmetric hash, in software (the shard splitter).
    Hash,
}

impl std::str::FromStr for ShardMode {
    type Err = String;
    fn from_str(s: &str) -> Result<ShardMode, String> {
        match s {
            "auto" => Ok(ShardMode::Auto),
            "queue" => Ok(ShardMode::Queue),
            "hash" => Ok(ShardMode::Hash),
            other => Err(format!("unknown shard mode `{other}` (auto, queue, hash)")),
        }
    }
}

/// Sizes of the rings and pools, the RX mode and the queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DpdkConfig {
    /// RX descriptors per queue.
    pub rx_desc: u16,
    /// TX descriptors per port.
    pub tx_desc: u16,
    /// Mbufs in the copy pool (0: enough for every port's rings and bursts).
    pub mbufs: u32,
    /// Zero-copy or copy receive.
    pub rx_mode: RxMode,
    /// RX queues per port (0: one per shard of a mode d run, else 1).
    pub queues: u16,
    /// The run's shards (mode d's stack instances; 0 or 1: not sharded).
    pub shards: u16,
    /// How shards are chosen.
    pub shard: ShardMode,
}

impl Default for DpdkConfig {
    fn default() -> DpdkConfig {
        DpdkConfig {
            rx_desc: 1024,
            tx_desc: 1024,
            mbufs: 0,
            rx_mode: RxMode::ZeroCopy,
            queues: 0,
            shards: 0,
            shard: ShardMode::Auto,
        }
    }
}

pub use super::{DpdkQueueStats, DpdkStats};

#[derive(Clone, Debug)]
struct Port {
    id: u16,
    name: String,
    /// The mbuf's dynamic timestamp field and flag, when this port's timestamps are the
    /// capture's times (`net_pcap` with the RX timestamp offload).
    ts: Option<(c_int, u64)>,
    /// RX queues configured.
    rx_queues: u16,
    /// RSS is on.
    rss: bool,
}

/// The symmetric RSS key (`0x6d5a` repeated): both directions of a flow hash alike.
const SYMMETRIC_KEY: [u8; 52] = {
    let mut k = [0u8; 52];
    let mut i = 0;
    while i < 52 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// The zero-copy pool: pool buffers lent to DPDK as pinned external mbuf buffers.
struct ExtPool {
    mp: *mut sys::rte_mempool,
    view: PoolView,
    /// The lent buffers' indices (each has one mbuf pinned to it).
    lent: Vec<u32>,
    /// The span registered with `rte_extmem_register`, if that worked.
    registered: Option<(usize, usize)>,
}

/// Configured and started ports (see the module docs).
pub struct DpdkPorts {
    ports: Vec<Port>,
    pool: *mut sys::rte_mempool,
    ext: Option<ExtPool>,
    rx_mode: RxMode,
    by_queue: bool,
    notes: Vec<String>,
    /// Final counters, once [`DpdkPorts::finish`] ran.
    finished: Mutex<Option<Vec<(String, DpdkStats)>>>,
}

// SAFETY: the pool pointers name DPDK mempools, which are thread-safe (multi-producer,
// multi-consumer rings); ports are named by id. Nothing here is tied to a thread.
unsafe impl Send for DpdkPorts {}
// SAFETY: as above; the only mutable state is behind a Mutex.
unsafe impl Sync for DpdkPorts {}

/// The data room of a zero-copy mbuf: the headroom plus a pool buffer.
fn ext_data_room(buf_size: u32) -> Option<u16> {
    sys::RTE_PKTMBUF_HEADROOM.checked_add(buf_size).and_then(|v| u16::try_from(v).ok())
}

impl DpdkPorts {
    /// Initialises the EAL with `eal_args` (see [`init_eal`]) and opens `ids` (one or two
    /// distinct port ids). [`RxMode::ZeroCopy`] needs `lend`, the run's pool allocator,
    /// whose buffers it lends to the devices.
    pub fn open(
        eal_args: &str,
        ids: &[u16],
        cfg: DpdkConfig,
        lend: Option<&mut PoolAllocator>,
    ) -> Result<DpdkPorts, DpdkError> {
        if ids.is_empty() || ids.len() > 2 {
            return Err(DpdkError::Config(format!(
                "--ports takes one port (passive) or two (inline), not {}",
                ids.len()
            )));
        }
        if ids.len() == 2 && ids[0] == ids[1] {
            return Err(DpdkError::Config(format!(
                "--ports {0},{0}: an inline pair needs two different ports",
                ids[0]
            )));
        }
        if cfg.queues > 255 {
            return Err(DpdkError::Config(format!("--dpdk-queues {}: at most 255", cfg.queues)));
        }
        init_eal(eal_args)?;
        for &p in ids {
            // SAFETY: plain query.
            if unsafe { sys::rte_eth_dev_is_valid_port(p) } != 1 {
                return Err(DpdkError::NoSuchPort { port: p, available: available_ports() });
            }
        }
        let want_queues = match cfg.queues {
            0 if cfg.shards > 1 => cfg.shards,
            0 => 1,
            q => q,
        };
        let n = ids.len() as u32;
        let need = n * (u32::from(cfg.rx_desc) * u32::from(want_queues) + u32::from(cfg.tx_desc))
            + n * 4 * BURST as u32
            + 1024;
        let mbufs = if cfg.mbufs > 0 { cfg.mbufs } else { need.next_power_of_two() - 1 };
        let pool = create_pool(mbufs, sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16)?;
        let mut ports = DpdkPorts {
            ports: Vec::new(),
            pool,
            ext: None,
            rx_mode: cfg.rx_mode,
            by_queue: false,
            notes: Vec::new(),
            finished: Mutex::new(None),
        };
        if cfg.rx_mode == RxMode::ZeroCopy {
            let alloc = lend
                .ok_or_else(|| DpdkError::Config("zero-copy receive needs the run's packet pool (internal)".into()))?;
            ports.ext = Some(ports.lend_pool(alloc)?);
        }
        for &id in ids {
            let port = ports.setup(id, cfg, want_queues)?;
            ports.ports.push(port);
        }
        ports.by_queue = ports.choose_shards(cfg, want_queues);
        Ok(ports)
    }

    /// Lends three quarters of the pool's buffers to an external-buffer mbuf pool.
    fn lend_pool(&mut self, alloc: &mut PoolAllocator) -> Result<ExtPool, DpdkError> {
        let view = alloc.view().clone();
        let room = ext_data_room(view.buf_size()).ok_or_else(|| {
            DpdkError::Config(format!(
                "zero-copy receive: pool buffers of {} bytes are too large for an mbuf (at most {}); use --dpdk-rx copy or a smaller buffer_size",
                view.buf_size(),
                u16::MAX as u32 - sys::RTE_PKTMBUF_HEADROOM
            ))
        })?;
        let count = view.count() as usize;
        let want = count - count / 4;
        let mut lent = Vec::with_capacity(want);
        alloc.lend(want, &mut lent);
        if lent.len() < 2 * BURST {
            let n = lent.len() as u64;
            alloc.returned(n);
            return Err(DpdkError::Config(format!(
                "zero-copy receive: only {n} pool buffers could be lent (pool of {count}); raise pool_buffers or use --dpdk-rx copy"
            )));
        }
        let headroom = sys::RTE_PKTMBUF_HEADROOM as usize;
        // SAFETY: plain query.
        let va = unsafe { sys::rte_eal_iova_mode() } == sys::RTE_IOVA_VA;
        let ext: Vec<sys::rte_pktmbuf_extmem> = lent
            .iter()
            .map(|&i| {
                let addr = view.buffer_addr(i).expect("lent index in range") as usize - headroom;
                sys::rte_pktmbuf_extmem {
                    buf_ptr: addr as *mut std::os::raw::c_void,
                    buf_iova: if va { addr as u64 } else { u64::MAX },
                    buf_len: usize::from(room),
                    elt_size: room,
                }
            })
            .collect();
        // Register the span of the lent buffers as external memory (best effort: virtual
        // devices do not need it; a NIC would also need rte_dev_dma_map, not done).
        let registered = {
            let page = 4096usize;
            let lo = ext.iter().map(|e| e.buf_ptr as usize).min().unwrap_or(0) & !(page - 1);
            let hi = ext.iter().map(|e| e.buf_ptr as usize + e.buf_len).max().unwrap_or(0);
            let len = (hi - lo).div_ceil(page) * page;
            let region = view.region();
            let (rb, rl) = (region.base() as usize, region.size());
            if lo >= rb && lo + len <= rb + rl {
                // SAFETY: the span lies inside the region's mapping, page-aligned, and stays
                // mapped until finish unregisters it (the region outlives the ports).
                let rc = unsafe { sys::rte_extmem_register(lo as *mut _, len, std::ptr::null_mut(), 0, page) };
                if rc == 0 {
                    Some((lo, len))
                } else {
                    self.notes.push(format!(
                        "dpdk: rte_extmem_register of the pool failed ({}); receiving into it anyway (virtual devices do not need it)",
                        rte_errno_text()
                    ));
                    None
                }
            } else {
                self.notes.push(
                    "dpdk: the pool's buffers are not all inside its region's mapping: not registered with rte_extmem_register".into(),
                );
                None
            }
        };
        static POOLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let pname = CString::new(format!("mbx_ext{}", POOLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
            .expect("no NUL");
        // SAFETY: a fresh name; `ext` describes buffers inside the live region, one mbuf
        // each; DPDK copies the descriptors into the mbufs.
        let mp = unsafe {
            sys::rte_pktmbuf_pool_create_extbuf(
                pname.as_ptr(),
                ext.len() as u32,
                0,
                0,
                room,
                sys::SOCKET_ID_ANY,
                ext.as_ptr(),
                ext.len() as u32,
            )
        };
        if mp.is_null() {
            let reason = rte_errno_text();
            alloc.returned(lent.len() as u64);
            if let Some((lo, len)) = registered {
                // SAFETY: registered above.
                unsafe { sys::rte_extmem_unregister(lo as *mut _, len) };
            }
            return Err(DpdkError::Pool { mbufs: ext.len() as u32, reason });
        }
        Ok(ExtPool { mp, view, lent, registered })
    }

    fn setup(&mut self, id: u16, cfg: DpdkConfig, want_queues: u16) -> Result<Port, DpdkError> {
        let name = port_name(id);
        let err = |call: &'static str, rc: c_int| DpdkError::Port {
            port: id,
            name: name.clone(),
            call,
            reason: errno_text(rc),
        };
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: `info` is a writable rte_eth_dev_info.
        let rc = unsafe { sys::rte_eth_dev_info_get(id, &mut info) };
        if rc != 0 {
            return Err(err("rte_eth_dev_info_get", rc));
        }
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: the driver's name, a static NUL-terminated string.
            unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
        };
        let nq = want_queues.min(info.max_rx_queues.max(1));
        if nq < want_queues {
            self.notes.push(format!(
                "dpdk: port {id} ({name}): {want_queues} RX queues asked, the device has {}: using {nq}",
                info.max_rx_queues
            ));
        }
        // SAFETY: plain constant.
        let ts_offload = unsafe { sys::mbx_rx_offload_timestamp() };
        // net_pcap stamps every frame it reads from a capture with the capture's time (it
        // registers the timestamp field at probe and sets the flag per mbuf, without
        // advertising the offload); a device that advertises the offload gets it turned on, but
        // only net_pcap's values are Unix time.
        let capture_times = driver == "net_pcap";
        let mut conf = sys::rte_eth_conf::default();
        if info.rx_offload_capa & ts_offload != 0 && capture_times {
            conf.rxmode.offloads |= ts_offload;
        }
        let mut key = SYMMETRIC_KEY;
        let rss = nq > 1 && info.flow_type_rss_offloads != 0;
        if rss {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            let rc = &mut conf.rx_adv_conf.rss_conf;
            rc.rss_hf = info.flow_type_rss_offloads;
            let klen = usize::from(info.hash_key_size);
            if klen > 0 && klen <= key.len() {
                rc.rss_key = key.as_mut_ptr();
                rc.rss_key_len = info.hash_key_size;
            }
        } else if nq > 1 {
            self.notes.push(format!(
                "dpdk: port {id} ({name}): no RSS on this device: its {nq} RX queues are not spread by flow"
            ));
        }
        // SAFETY: `conf` is a valid configuration (zeroed but for the above); `key` outlives
        // the call (the device copies it).
        let rc = unsafe { sys::rte_eth_dev_configure(id, nq, 1, &conf) };
        if rc != 0 {
            return Err(err("rte_eth_dev_configure", rc));
        }
        let (mut rxd, mut txd) = (cfg.rx_desc, cfg.tx_desc);
        if let Some(e) = &self.ext {
            // Every queue's ring must leave lent mbufs to receive into.
            let per_queue = e.lent.len() / (2 * usize::from(nq) * 2);
            rxd = rxd.min(u16::try_from(per_queue).unwrap_or(u16::MAX)).max(32);
        }
        // SAFETY: the port is configured; the counts are in/out parameters.
        let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rxd, &mut txd) };
        if rc != 0 {
            return Err(err("rte_eth_dev_adjust_nb_rx_tx_desc", rc));
        }
        // SAFETY: plain query.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        let mut rxconf = info.default_rxconf;
        rxconf.offloads = conf.rxmode.offloads;
        let rx_pool = self.ext.as_ref().map_or(self.pool, |e| e.mp);
        for q in 0..nq {
            // SAFETY: the port is configured with `nq` RX queues; `rxconf` and the pool
            // outlive the call.
            let rc = unsafe { sys::rte_eth_rx_queue_setup(id, q, rxd, socket, &rxconf, rx_pool) };
            if rc != 0 {
                return Err(err("rte_eth_rx_queue_setup", rc));
            }
        }
        // SAFETY: as above, one TX queue.
        let rc = unsafe { sys::rte_eth_tx_queue_setup(id, 0, txd, socket, &info.default_txconf) };
        if rc != 0 {
            return Err(err("rte_eth_tx_queue_setup", rc));
        }
        // SAFETY: the queues are set up.
        let rc = unsafe { sys::rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(err("rte_eth_dev_start", rc));
        }
        // Best effort: a virtual device may not support it (and does not need it).
        // SAFETY: the port is started.
        let _ = unsafe { sys::rte_eth_promiscuous_enable(id) };
        // SAFETY: the port is started.
        let _ = unsafe { sys::rte_eth_stats_reset(id) };
        let ts = if capture_times {
            // SAFETY: NUL-terminated names from the headers; lookups only.
            let off = unsafe {
                sys::rte_mbuf_dynfield_lookup(
                    sys::RTE_MBUF_DYNFIELD_TIMESTAMP_NAME.as_ptr().cast(),
                    std::ptr::null_mut(),
                )
            };
            // SAFETY: as above.
            let bit = unsafe {
                sys::rte_mbuf_dynflag_lookup(
                    sys::RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME.as_ptr().cast(),
                    std::ptr::null_mut(),
                )
            };
            (off >= 0 && (0..64).contains(&bit)).then(|| (off, 1u64 << bit))
        } else {
            None
        };
        Ok(Port { id, name, ts, rx_queues: nq, rss })
    }

    /// Whether the queues pick the shards (see the module docs); notes every fallback.
    fn choose_shards(&mut self, cfg: DpdkConfig, want: u16) -> bool {
        if cfg.shards <= 1 || cfg.shard == ShardMode::Hash {
            if cfg.shard == ShardMode::Queue {
                self.notes.push(
                    "dpdk: --dpdk-shard queue: this run has no shards (mode d with shards > 1): nothing to pick".into(),
                );
            }
            return false;
        }
        let why = if want != cfg.shards {
            Some(format!("{want} RX queues per port for {} shards (--dpdk-queues must equal the shards)", cfg.shards))
        } else if let Some(p) = self.ports.iter().find(|p| p.rx_queues != cfg.shards) {
            Some(format!("port {} ({}) has {} RX queue(s), not {}", p.id, p.name, p.rx_queues, cfg.shards))
        } else {
            self.ports
                .iter()
                .find(|p| !p.rss)
                .map(|p| format!("port {} ({}) has no RSS, so its queues are not spread by flow", p.id, p.name))
        };
        match why {
            None => {
                self.notes.push(format!("dpdk: {} shards fed by RX queue (symmetric RSS on every port)", cfg.shards));
                true
            }
            Some(w) => {
                let asked = if cfg.shard == ShardMode::Queue { "--dpdk-shard queue" } else { "--dpdk-shard auto" };
                self.notes.push(format!("dpdk: {asked}: shards chosen by flow hash in software instead: {w}"));
                false
            }
        }
    }

    /// What the set-up had to fall back on, or chose, one line each (the run prints them).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// True when every frame's RX queue is its shard ([`ShardMode::Queue`], or
    /// [`ShardMode::Auto`] where that holds).
    pub fn shard_by_queue(&self) -> bool {
        self.by_queue
    }

    /// The receive mode.
    pub fn rx_mode(&self) -> RxMode {
        self.rx_mode
    }

    /// Each port's RX queue count and whether RSS is on, in the order given.
    pub fn queues(&self) -> Vec<(u16, bool)> {
        self.ports.iter().map(|p| (p.rx_queues, p.rss)).collect()
    }

    /// The ports, as `0 (net_pcap0)`, in the order given.
    pub fn names(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("{} ({})", p.id, p.name)).collect()
    }

    /// The receiving half: polls every queue of every port; with `limit`, it receives that
    /// many frames in all and no more (it never asks a device for more than it has left to
    /// take, so every frame the devices count was handed out).
    pub fn rx(&self, limit: Option<u64>) -> DpdkRx {
        let queues =
            self.ports.iter().enumerate().flat_map(|(i, p)| (0..p.rx_queues).map(move |q| (i, p.id, q))).collect();
        let zc = self.ext.as_ref().map(|e| {
            let count = e.view.count() as usize;
            let mut state = vec![Lent::No; count];
            for &i in &e.lent {
                state[i as usize] = Lent::AtDevice;
            }
            ZeroCopy {
                view: e.view.clone(),
                state,
                owner: vec![std::ptr::null_mut(); count],
                at_device: e.lent.len(),
                spare: Vec::new(),
                taken: Vec::with_capacity(BURST * 4),
                freeing: Vec::with_capacity(BURST * 4),
                adopted: 0,
                copied: 0,
                no_buffer: 0,
                returned: None,
            }
        });
        DpdkRx {
            left: limit,
            ports: self.ports.clone(),
            queues,
            held: [std::ptr::null_mut(); BURST],
            len: 0,
            pos: 0,
            from: 0,
            next: 0,
            current: std::ptr::null_mut(),
            scratch: Vec::new(),
            burst_ns: 0,
            zc,
        }
    }

    /// The transmitting half: port `i` is the `i`-th port given to [`DpdkPorts::open`].
    pub fn tx(&self) -> DpdkTx {
        DpdkTx {
            ports: self.ports.iter().map(|p| (p.id, Vec::with_capacity(BURST))).collect(),
            pool: self.pool,
            sent: 0,
            failed: 0,
            no_mbuf: 0,
        }
    }

    /// Each port's counters now (`port (name)`, stats); after [`DpdkPorts::finish`], the
    /// final ones.
    pub fn stats(&self) -> Vec<(String, DpdkStats)> {
        if let Some(f) = self.finished.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return f.clone();
        }
        self.ports.iter().map(|p| (format!("{} ({})", p.id, p.name), read_stats(p))).collect()
    }

    /// Zero-copy: the lent buffers' span of the region was registered with
    /// `rte_extmem_register` (bytes registered; 0 if not, or in copy mode).
    pub fn extmem_registered(&self) -> usize {
        self.ext.as_ref().and_then(|e| e.registered).map_or(0, |(_, len)| len)
    }

    /// Pool buffers lent to DPDK at the start (zero-copy; 0 in copy mode).
    pub fn lent_buffers(&self) -> usize {
        self.ext.as_ref().map_or(0, |e| e.lent.len())
    }

    /// Mbufs of the zero-copy pool sitting in DPDK's mempool now (`None` in copy mode).
    pub fn zero_copy_mbufs_free(&self) -> Option<u32> {
        // SAFETY: the pool is live until the process ends.
        self.ext.as_ref().map(|e| unsafe { sys::rte_mempool_avail_count(e.mp) })
    }

    /// Reads the final counters, then stops and closes every port (a `net_pcap` device
    /// writes its `tx_pcap` file now). Idempotent. Call it after RX and TX stopped.
    pub fn finish(&self) -> Vec<(String, DpdkStats)> {
        let mut f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = f.as_ref() {
            return s.clone();
        }
        let stats: Vec<(String, DpdkStats)> =
            self.ports.iter().map(|p| (format!("{} ({})", p.id, p.name), read_stats(p))).collect();
        for p in &self.ports {
            // SAFETY: the port was started by `open`; nobody polls it any more (the caller's
            // contract); stop then close is DPDK's order.
            unsafe {
                sys::rte_eth_dev_stop(p.id);
                sys::rte_eth_dev_close(p.id);
            }
        }
        if let Some((lo, len)) = self.ext.as_ref().and_then(|e| e.registered) {
            // SAFETY: registered in `lend_pool`; the ports that could use it are closed.
            unsafe { sys::rte_extmem_unregister(lo as *mut _, len) };
        }
        *f = Some(stats.clone());
        stats
    }
}

impl Drop for DpdkPorts {
    fn drop(&mut self) {
        self.finish();
    }
}

fn create_pool(mbufs: u32, room: u16) -> Result<*mut sys::rte_mempool, DpdkError> {
    static POOLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let pname =
        CString::new(format!("mbx_pool{}", POOLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))).expect("no NUL");
    // SAFETY: a fresh, NUL-terminated name; sizes are in range.
    let pool = unsafe { sys::rte_pktmbuf_pool_create(pname.as_ptr(), mbufs, 256, 0, room, sys::SOCKET_ID_ANY) };
    if pool.is_null() {
        return Err(DpdkError::Pool { mbufs, reason: rte_errno_text() });
    }
    Ok(pool)
}

fn read_stats(p: &Port) -> DpdkStats {
    let mut s = sys::rte_eth_stats::default();
    // SAFETY: `s` is a writable rte_eth_stats.
    let _ = unsafe { sys::rte_eth_stats_get(p.id, &mut s) };
    let nq = usize::from(p.rx_queues).min(s.q_ipackets.len());
    DpdkStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
        queues: (0..nq)
            .map(|q| DpdkQueueStats { ipackets: s.q_ipackets[q], ibytes: s.q_ibytes[q], errors: s.q_errors[q] })
            .collect(),
    }
}

fn realtime_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Where a pool buffer is, for the zero-copy receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lent {
    /// Not lent (never, or back on the pool's free list).
    No,
    /// Its mbuf is with DPDK (mempool or a device's ring).
    AtDevice,
    /// Its mbuf is parked here: the buffer holds a frame in the chain, or is back on the
    /// free list.
    Parked,
    /// Taken off the free list without an mbuf: a spare, for copied frames.
    Spare,
}

/// The zero-copy receiver's books (see the module docs).
struct ZeroCopy {
    view: PoolView,
    state: Vec<Lent>,
    /// The mbuf pinned to each buffer, once seen.
    owner: Vec<*mut sys::rte_mbuf>,
    at_device: usize,
    spare: Vec<u32>,
    taken: Vec<u32>,
    /// Parked mbufs going back to DPDK in one call.
    freeing: Vec<*mut sys::rte_mbuf>,
    adopted: u64,
    copied: u64,
    no_buffer: u64,
    /// Set by `finish_pool`: the lent buffers counted back.
    returned: Option<u64>,
}

impl ZeroCopy {
    /// Takes the buffers back off the free list: a parked one's mbuf goes back to DPDK,
    /// any other becomes a spare.
    fn relend(&mut self, alloc: &mut PoolAllocator) {
        self.taken.clear();
        self.freeing.clear();
        let _ = alloc.lend(BURST * 4, &mut self.taken);
        for k in 0..self.taken.len() {
            let i = self.taken[k];
            let st = &mut self.state[i as usize];
            if *st == Lent::Parked {
                self.freeing.push(self.owner[i as usize]);
                *st = Lent::AtDevice;
                self.at_device += 1;
            } else {
                *st = Lent::Spare;
                self.spare.push(i);
            }
        }
        if !self.freeing.is_empty() {
            // SAFETY: the mbufs pinned to these buffers, parked here since they were
            // received; their buffers are free (they came off the free list), so DPDK may
            // fill them again. One bulk return to the mempool.
            unsafe { sys::rte_pktmbuf_free_bulk(self.freeing.as_mut_ptr(), self.freeing.len() as u32) };
        }
    }
}

/// The receiving half of [`DpdkPorts`] (see the module docs).
pub struct DpdkRx {
    ports: Vec<Port>,
    /// Every (port index, port id, queue) polled, round robin.
    queues: Vec<(usize, u16, u16)>,
    /// Frames still to receive, when limited.
    left: Option<u64>,
    /// The current burst, from `queues[from]`: `held[pos..len]` are not handed out yet.
    held: [*mut sys::rte_mbuf; BURST],
    len: usize,
    pos: usize,
    from: usize,
    /// The queue to poll next.
    next: usize,
    /// The frame handed out last, freed at the next call (copy mode).
    current: *mut sys::rte_mbuf,
    scratch: Vec<u8>,
    burst_ns: u64,
    zc: Option<ZeroCopy>,
}

// SAFETY: the mbufs held are owned by this value alone (received, not yet freed); moving the
// value to another thread moves that ownership. DPDK's rx/free calls are not tied to a thread.
unsafe impl Send for DpdkRx {}

impl DpdkRx {
    fn release_current(&mut self) {
        if !self.current.is_null() {
            // SAFETY: `current` was received by this value and not freed yet.
            unsafe { sys::mbx_rte_pktmbuf_free(self.current) };
            self.current = std::ptr::null_mut();
        }
    }

    /// True once a limited receiver has handed out every frame it was to take.
    pub fn exhausted(&self) -> bool {
        self.left == Some(0) && self.pos == self.len
    }

    /// True in zero-copy mode: use [`DpdkRx::next_in_pool`].
    pub fn zero_copy(&self) -> bool {
        self.zc.is_some()
    }

    /// The port index (in the order given to [`DpdkPorts::open`]) and RX queue of the last
    /// frame.
    pub fn last_origin(&self) -> (u8, u8) {
        let (i, _, q) = self.queues.get(self.from).copied().unwrap_or((0, 0, 0));
        (i as u8, q as u8)
    }

    /// Polls the queues round robin for a burst of at most `cap` frames.
    fn fill(&mut self, cap: usize) -> bool {
        let want = self.left.map_or(cap, |l| l.min(cap as u64) as usize);
        if want == 0 {
            return false;
        }
        let n = self.queues.len();
        self.len = 0;
        self.pos = 0;
        for _ in 0..n {
            let k = self.next;
            self.next = (k + 1) % n;
            let (_, id, q) = self.queues[k];
            // SAFETY: `held` has room for BURST >= want pointers; the port has queue `q`.
            let got = unsafe { sys::mbx_rte_eth_rx_burst(id, q, self.held.as_mut_ptr(), want as u16) };
            if got > 0 {
                if let Some(l) = &mut self.left {
                    *l -= u64::from(got);
                }
                self.len = usize::from(got);
                self.from = k;
                self.burst_ns = realtime_ns();
                return true;
            }
        }
        false
    }

    fn timestamp(&self, m: *mut sys::rte_mbuf) -> u64 {
        let port = &self.ports[self.queues[self.from].0];
        match port.ts {
            // SAFETY: the field offset and flag were looked up for this mbuf layout.
            Some((off, flag)) if unsafe { sys::mbx_rte_mbuf_has_flag(m, flag) } != 0 => {
                // SAFETY: as above; net_pcap stores microseconds since the epoch.
                unsafe { sys::mbx_rte_mbuf_dynfield_u64(m, off) }.saturating_mul(1000)
            }
            _ => self.burst_ns,
        }
    }

    /// The next received frame and the index of its port (in the order given to
    /// [`DpdkPorts::open`]), borrowing the mbuf until the next call; `None` when no port has
    /// one now (or the limit was reached). Copy mode.
    pub fn next_frame(&mut self) -> Option<(u8, PacketRecord<'_>)> {
        self.release_current();
        if self.pos == self.len && !self.fill(BURST) {
            return None;
        }
        let m = self.held[self.pos];
        self.pos += 1;
        self.current = m;
        // SAFETY: `m` is a received mbuf we own until `release_current`.
        let (segs, pkt_len, data_len, data) = unsafe {
            (
                sys::mbx_rte_pktmbuf_nb_segs(m),
                sys::mbx_rte_pktmbuf_pkt_len(m),
                sys::mbx_rte_pktmbuf_data_len(m),
                sys::mbx_rte_pktmbuf_mtod(m) as *const u8,
            )
        };
        let ts_ns = self.timestamp(m);
        let from = self.queues[self.from].0 as u8;
        let bytes: &[u8] = if segs <= 1 {
            // SAFETY: a one-segment mbuf's data is `data_len` bytes at mtod, alive until the
            // mbuf is freed (next call; the borrow of `self` keeps that away).
            unsafe { std::slice::from_raw_parts(data, usize::from(data_len)) }
        } else {
            self.scratch.resize(pkt_len as usize, 0);
            // SAFETY: `scratch` has room for `pkt_len` bytes; the copy walks the segments.
            let n = unsafe { sys::mbx_rte_pktmbuf_copy_out(m, self.scratch.as_mut_ptr().cast(), pkt_len) };
            &self.scratch[..n as usize]
        };
        Some((from, PacketRecord { ts_ns, data: bytes, orig_len: pkt_len }))
    }

    /// Zero-copy mode: the next frame — its buffer (adopted through `alloc`, or a spare
    /// one it was copied into; `None` when it was too large or no spare buffer was left,
    /// both counted), its time, length and wire length; `None` when no frame is waiting or
    /// the receiver is in copy mode (see the module docs).
    pub fn next_in_pool(&mut self, alloc: &mut PoolAllocator) -> Option<(Option<PacketHandle>, u64, u32, u32)> {
        let zc = self.zc.as_mut()?;
        if self.pos == self.len {
            zc.relend(alloc);
            // Never ask for more frames than there are lent mbufs at the device: a device
            // that allocates per frame would drop the rest (net_pcap reads, then allocates).
            let cap = zc.at_device.min(BURST);
            if cap == 0 || !self.fill(cap) {
                return None;
            }
        }
        let m = self.held[self.pos];
        self.pos += 1;
        let ts_ns = self.timestamp(m);
        let zc = self.zc.as_mut().expect("zero-copy");
        // SAFETY: `m` is a received mbuf we own.
        let (segs, pkt_len, data_len, data) = unsafe {
            (
                sys::mbx_rte_pktmbuf_nb_segs(m),
                sys::mbx_rte_pktmbuf_pkt_len(m),
                sys::mbx_rte_pktmbuf_data_len(m),
                sys::mbx_rte_pktmbuf_mtod(m) as *const u8,
            )
        };
        if segs <= 1 {
            if let Some(i) = zc.view.index_of(data) {
                if zc.state[i as usize] == Lent::AtDevice {
                    zc.state[i as usize] = Lent::Parked;
                    zc.owner[i as usize] = m;
                    zc.at_device -= 1;
                    zc.adopted += 1;
                    let h = alloc.adopt(i, usize::from(data_len)).ok();
                    return Some((h, ts_ns, u32::from(data_len), pkt_len));
                }
            }
        }
        // Not one of our lent buffers (another pool's mbuf, several segments): copy.
        let len = pkt_len as usize;
        let h = match zc.spare.pop() {
            Some(i) if len <= zc.view.buf_size() as usize => {
                let buf = zc.view.buffer_addr(i).expect("spare index in range");
                // SAFETY: a spare buffer is ours alone (off the free list, no mbuf pinned to
                // it); `len` fits; the copy walks the mbuf's segments.
                unsafe { sys::mbx_rte_pktmbuf_copy_out(m, buf.cast(), pkt_len) };
                zc.state[i as usize] = Lent::No;
                zc.copied += 1;
                alloc.adopt(i, len).ok()
            }
            Some(i) => {
                zc.spare.push(i);
                let _ = alloc.adopt(u32::MAX, len); // counts too_large; never adopts
                None
            }
            None => {
                zc.no_buffer += 1;
                None
            }
        };
        // SAFETY: ours (received, not pinned to a lent buffer); its bytes were copied.
        unsafe { sys::mbx_rte_pktmbuf_free(m) };
        Some((h, ts_ns, pkt_len, pkt_len))
    }

    /// Zero-copy mode, at the end of RX: counts the lent buffers still at the device or
    /// spare as returned ([`PoolAllocator::returned`]) so that the pool balances.
    pub fn finish_pool(&mut self, alloc: &mut PoolAllocator) {
        if let Some(zc) = &mut self.zc {
            if zc.returned.is_none() {
                let n = zc.at_device as u64 + zc.spare.len() as u64;
                alloc.returned(n);
                zc.returned = Some(n);
            }
        }
    }

    /// Zero-copy counters: frames adopted, frames copied, frames lost for want of a spare
    /// buffer, lent buffers at the device now.
    pub fn zero_copy_counts(&self) -> Option<(u64, u64, u64, usize)> {
        self.zc.as_ref().map(|z| (z.adopted, z.copied, z.no_buffer, z.at_device))
    }

    /// A warning for the run's end, if zero-copy mode lost frames for want of a spare
    /// buffer (copied frames are normal: they are in the run's `dpdk` line).
    pub fn end_note(&self) -> Option<String> {
        let z = self.zc.as_ref()?;
        (z.no_buffer > 0).then(|| {
            format!(
                "dpdk zero-copy: {} frame(s) received into the pool, {} copied (not in a lent buffer), {} lost for want of a spare buffer",
                z.adopted, z.copied, z.no_buffer
            )
        })
    }
}

impl Drop for DpdkRx {
    fn drop(&mut self) {
        self.release_current();
        for &m in &self.held[self.pos..self.len] {
            // SAFETY: received and not handed out: still ours.
            unsafe { sys::mbx_rte_pktmbuf_free(m) };
        }
        self.len = 0;
        self.pos = 0;
        if let Some(zc) = &mut self.zc {
            // Parked mbufs go back to their mempool (their buffers are the pool's again).
            for (i, st) in zc.state.iter_mut().enumerate() {
                if *st == Lent::Parked {
                    // SAFETY: parked here, never freed since it was received.
                    unsafe { sys::mbx_rte_pktmbuf_free(zc.owner[i]) };
                    *st = Lent::No;
                }
            }
        }
    }
}

/// The transmitting half of [`DpdkPorts`] (see the module docs).
pub struct DpdkTx {
    /// Each port's id and its batch of filled mbufs.
    ports: Vec<(u16, Vec<*mut sys::rte_mbuf>)>,
    pool: *mut sys::rte_mempool,
    sent: u64,
    failed: u64,
    no_mbuf: u64,
}

// SAFETY: the batched mbufs are owned by this value alone; the pool is thread-safe.
unsafe impl Send for DpdkTx {}

impl DpdkTx {
    /// Copies `frame` into an mbuf queued on port index `port`; sends the batch when full.
    /// Returns false (and counts it) when the frame could not be queued: no such port, no
    /// free mbuf, or larger than an mbuf.
    pub fn queue(&mut self, port: usize, frame: &[u8]) -> bool {
        if port >= self.ports.len() {
            return false;
        }
        // SAFETY: the pool is a live mbuf pool.
        let m = unsafe { sys::mbx_rte_pktmbuf_alloc(self.pool) };
        if m.is_null() {
            self.no_mbuf += 1;
            self.failed += 1;
            return false;
        }
        let len = u16::try_from(frame.len()).unwrap_or(u16::MAX);
        // SAFETY: `m` is a fresh mbuf of ours.
        let dst = unsafe { sys::mbx_rte_pktmbuf_append(m, len) };
        if dst.is_null() || usize::from(len) != frame.len() {
            // SAFETY: ours, never queued.
            unsafe { sys::mbx_rte_pktmbuf_free(m) };
            self.failed += 1;
            return false;
        }
        // SAFETY: `append` reserved `len` writable bytes at `dst`.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), dst.cast::<u8>(), frame.len()) };
        self.ports[port].1.push(m);
        if self.ports[port].1.len() >= BURST {
            self.flush_port(port);
        }
        true
    }

    fn flush_port(&mut self, i: usize) {
        let (id, batch) = &mut self.ports[i];
        let mut done = 0usize;
        let mut tries = 0u32;
        while done < batch.len() && tries <= TX_RETRIES {
            let rest = &mut batch[done..];
            // SAFETY: `rest` holds filled mbufs of ours; the device takes ownership of the
            // first `n` it reports.
            let n = unsafe { sys::mbx_rte_eth_tx_burst(*id, 0, rest.as_mut_ptr(), rest.len() as u16) };
            done += usize::from(n);
            self.sent += u64::from(n);
            if n == 0 {
                tries += 1;
                std::hint::spin_loop();
            }
        }
        for &m in &batch[done..] {
            // SAFETY: not taken by the device: still ours.
            unsafe { sys::mbx_rte_pktmbuf_free(m) };
            self.failed += 1;
        }
        batch.clear();
    }

    /// Sends every queued frame (see the module docs).
    pub fn flush(&mut self) {
        for i in 0..self.ports.len() {
            if !self.ports[i].1.is_empty() {
                self.flush_port(i);
            }
        }
    }

    /// Frames the devices took.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Frames that were not sent: the device refused them [`TX_RETRIES`] times, no mbuf was
    /// free, or they were larger than an mbuf.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Of [`DpdkTx::failed`], those that found no free mbuf.
    pub fn no_mbuf(&self) -> u64 {
        self.no_mbuf
    }
}

impl Drop for DpdkTx {
    fn drop(&mut self) {
        for (_, batch) in &mut self.ports {
            for &m in batch.iter() {
                // SAFETY: queued, never sent: ours.
                unsafe { sys::mbx_rte_pktmbuf_free(m) };
            }
            batch.clear();
        }
    }
}

//! DPDK ports (feature `dpdk`): the system's DPDK (Debian's 22.11) through `dpdk-sys`.
//!
//! # Lifecycle
//!
//! [`DpdkPorts::open`] initialises the EAL with the user's arguments (once per process:
//! [`init_eal`]; DPDK cannot initialise it twice), checks the port ids, creates one mbuf pool
//! for all of them, configures every port with **one RX and one TX queue**, starts it and
//! turns on promiscuous mode. [`DpdkPorts::rx`] and [`DpdkPorts::tx`] hand out the receive
//! and transmit halves, which the RX and TX stages own on their own threads;
//! [`DpdkPorts::finish`] reads each port's `rte_eth_stats` and stops and closes the devices
//! (a `net_pcap` device writes its `tx_pcap` file on stop).
//!
//! # Receive: copied into the shared pool
//!
//! [`DpdkRx::next_frame`] polls the ports round robin with `rte_eth_rx_burst` (bursts of
//! [`BURST`]), hands out one frame at a time, borrowing the mbuf's bytes until the next call,
//! and frees the mbuf then. The caller (RX) copies the frame once into the shared packet pool,
//! as for a capture or an `AF_PACKET` ring. The alternative — registering the pool's region as
//! external memory (`rte_extmem_register`) and letting the device receive straight into pool
//! buffers — is not done (docs/dpdk.md says why and what it would take).
//!
//! A frame of several segments (a jumbo frame on a device with scattered RX) is gathered into
//! a scratch buffer. Timestamps: a `net_pcap` device with the RX timestamp offload gives the
//! capture's own time (microseconds in the mbuf's dynamic field), so a capture replayed
//! through DPDK keeps its times; every other device gives the wall-clock time of the burst
//! (a NIC's timestamp counts device ticks, not Unix time).
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

/// Sizes of the rings and the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DpdkConfig {
    /// RX descriptors per port.
    pub rx_desc: u16,
    /// TX descriptors per port.
    pub tx_desc: u16,
    /// Mbufs in the pool (0: enough for every port's rings and bursts).
    pub mbufs: u32,
}

impl Default for DpdkConfig {
    fn default() -> DpdkConfig {
        DpdkConfig { rx_desc: 1024, tx_desc: 1024, mbufs: 0 }
    }
}

pub use super::DpdkStats;

#[derive(Clone, Debug)]
struct Port {
    id: u16,
    name: String,
    /// The mbuf's dynamic timestamp field and flag, when this port's timestamps are the
    /// capture's times (`net_pcap` with the RX timestamp offload).
    ts: Option<(c_int, u64)>,
}

/// Configured and started ports (see the module docs).
pub struct DpdkPorts {
    ports: Vec<Port>,
    pool: *mut sys::rte_mempool,
    /// Final counters, once [`DpdkPorts::finish`] ran.
    finished: Mutex<Option<Vec<(String, DpdkStats)>>>,
}

// SAFETY: the pool pointer names a DPDK mempool, which is thread-safe (multi-producer,
// multi-consumer ring); ports are named by id. Nothing here is tied to a thread.
unsafe impl Send for DpdkPorts {}
// SAFETY: as above; the only mutable state is behind a Mutex.
unsafe impl Sync for DpdkPorts {}

impl DpdkPorts {
    /// Initialises the EAL with `eal_args` (see [`init_eal`]) and opens `ids` (one or two
    /// distinct port ids).
    pub fn open(eal_args: &str, ids: &[u16], cfg: DpdkConfig) -> Result<DpdkPorts, DpdkError> {
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
        init_eal(eal_args)?;
        for &p in ids {
            // SAFETY: plain query.
            if unsafe { sys::rte_eth_dev_is_valid_port(p) } != 1 {
                return Err(DpdkError::NoSuchPort { port: p, available: available_ports() });
            }
        }
        let n = ids.len() as u32;
        let need = n * (u32::from(cfg.rx_desc) + u32::from(cfg.tx_desc)) + n * 4 * BURST as u32 + 1024;
        let mbufs = if cfg.mbufs > 0 { cfg.mbufs } else { need.next_power_of_two() - 1 };
        static POOLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let pname = CString::new(format!("mbx_pool{}", POOLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
            .expect("no NUL");
        // SAFETY: a fresh, NUL-terminated name; sizes are in range (buffer size fits u16).
        let pool = unsafe {
            sys::rte_pktmbuf_pool_create(
                pname.as_ptr(),
                mbufs,
                256,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                sys::SOCKET_ID_ANY,
            )
        };
        if pool.is_null() {
            return Err(DpdkError::Pool { mbufs, reason: rte_errno_text() });
        }
        let mut ports = DpdkPorts { ports: Vec::new(), pool, finished: Mutex::new(None) };
        for &id in ids {
            let port = ports.setup(id, cfg)?;
            ports.ports.push(port);
        }
        Ok(ports)
    }

    fn setup(&self, id: u16, cfg: DpdkConfig) -> Result<Port, DpdkError> {
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
        // SAFETY: `conf` is a valid configuration (zeroed: no RSS, no offloads but the above).
        let rc = unsafe { sys::rte_eth_dev_configure(id, 1, 1, &conf) };
        if rc != 0 {
            return Err(err("rte_eth_dev_configure (1 RX, 1 TX queue)", rc));
        }
        let (mut rxd, mut txd) = (cfg.rx_desc, cfg.tx_desc);
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
        // SAFETY: the port is configured with one RX queue; `rxconf` and the pool outlive the call.
        let rc = unsafe { sys::rte_eth_rx_queue_setup(id, 0, rxd, socket, &rxconf, self.pool) };
        if rc != 0 {
            return Err(err("rte_eth_rx_queue_setup", rc));
        }
        // SAFETY: as above, one TX queue; NULL would mean the default txconf, we pass it.
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
        Ok(Port { id, name, ts })
    }

    /// The ports, as `0 (net_pcap0)`, in the order given.
    pub fn names(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("{} ({})", p.id, p.name)).collect()
    }

    /// The receiving half: polls every port; with `limit`, it receives that many frames in
    /// all and no more (it never asks a device for more than it has left to take, so every
    /// frame the devices count was handed out).
    pub fn rx(&self, limit: Option<u64>) -> DpdkRx {
        DpdkRx {
            left: limit,
            ports: self.ports.clone(),
            held: [std::ptr::null_mut(); BURST],
            len: 0,
            pos: 0,
            from: 0,
            next: 0,
            current: std::ptr::null_mut(),
            scratch: Vec::new(),
            burst_ns: 0,
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
        self.ports.iter().map(|p| (format!("{} ({})", p.id, p.name), read_stats(p.id))).collect()
    }

    /// Reads the final counters, then stops and closes every port (a `net_pcap` device
    /// writes its `tx_pcap` file now). Idempotent. Call it after RX and TX stopped.
    pub fn finish(&self) -> Vec<(String, DpdkStats)> {
        let mut f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = f.as_ref() {
            return s.clone();
        }
        let stats: Vec<(String, DpdkStats)> =
            self.ports.iter().map(|p| (format!("{} ({})", p.id, p.name), read_stats(p.id))).collect();
        for p in &self.ports {
            // SAFETY: the port was started by `open`; nobody polls it any more (the caller's
            // contract); stop then close is DPDK's order.
            unsafe {
                sys::rte_eth_dev_stop(p.id);
                sys::rte_eth_dev_close(p.id);
            }
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

fn read_stats(port: u16) -> DpdkStats {
    let mut s = sys::rte_eth_stats::default();
    // SAFETY: `s` is a writable rte_eth_stats.
    let _ = unsafe { sys::rte_eth_stats_get(port, &mut s) };
    DpdkStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    }
}

fn realtime_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The receiving half of [`DpdkPorts`] (see the module docs).
pub struct DpdkRx {
    ports: Vec<Port>,
    /// Frames still to receive, when limited.
    left: Option<u64>,
    /// The current burst, from port `from`: `held[pos..len]` are not handed out yet.
    held: [*mut sys::rte_mbuf; BURST],
    len: usize,
    pos: usize,
    from: usize,
    /// The port to poll next.
    next: usize,
    /// The frame handed out last, freed at the next call.
    current: *mut sys::rte_mbuf,
    scratch: Vec<u8>,
    burst_ns: u64,
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

    /// The next received frame and the index of its port (in the order given to
    /// [`DpdkPorts::open`]), borrowing the mbuf until the next call; `None` when no port has
    /// one now (or the limit was reached).
    pub fn next_frame(&mut self) -> Option<(u8, PacketRecord<'_>)> {
        self.release_current();
        if self.pos == self.len {
            let want = self.left.map_or(BURST, |l| l.min(BURST as u64) as usize);
            if want == 0 {
                return None;
            }
            let n = self.ports.len();
            self.len = 0;
            self.pos = 0;
            for _ in 0..n {
                let i = self.next;
                self.next = (i + 1) % n;
                // SAFETY: `held` has room for BURST pointers; the port has RX queue 0.
                let got =
                    unsafe { sys::mbx_rte_eth_rx_burst(self.ports[i].id, 0, self.held.as_mut_ptr(), want as u16) };
                if got > 0 {
                    if let Some(l) = &mut self.left {
                        *l -= u64::from(got);
                    }
                    self.len = usize::from(got);
                    self.from = i;
                    self.burst_ns = realtime_ns();
                    break;
                }
            }
            if self.len == 0 {
                return None;
            }
        }
        let m = self.held[self.pos];
        self.pos += 1;
        self.current = m;
        let port = &self.ports[self.from];
        // SAFETY: `m` is a received mbuf we own until `release_current`.
        let (segs, pkt_len, data_len, data) = unsafe {
            (
                sys::mbx_rte_pktmbuf_nb_segs(m),
                sys::mbx_rte_pktmbuf_pkt_len(m),
                sys::mbx_rte_pktmbuf_data_len(m),
                sys::mbx_rte_pktmbuf_mtod(m) as *const u8,
            )
        };
        let ts_ns = match port.ts {
            // SAFETY: the field offset and flag were looked up for this mbuf layout.
            Some((off, flag)) if unsafe { sys::mbx_rte_mbuf_has_flag(m, flag) } != 0 => {
                // SAFETY: as above; net_pcap stores microseconds since the epoch.
                unsafe { sys::mbx_rte_mbuf_dynfield_u64(m, off) }.saturating_mul(1000)
            }
            _ => self.burst_ns,
        };
        let from = self.from as u8;
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

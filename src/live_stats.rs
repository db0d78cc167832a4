//! Live statistics of a run: `mbox run --stats-interval SECS` (one line per interval on
//! stderr) and `--metrics ADDR:PORT` (the same counters in the Prometheus text format on
//! `GET /metrics`).
//!
//! **Sources.** Everything here is read while the executor runs, from counters the chain
//! already keeps or keeps cheaply for this purpose: RX's [`RxProgress`] (frames and bytes
//! read, frames too large for a buffer, the source's kernel drops), TX's [`TxLive`] (packets
//! and bytes out, dropped packets by actor and reason), the packet pool's counters and every
//! ring's head and tail in the shared-memory region ([`ring::peek_stats`]). All are relaxed
//! atomics stored once per burst (one relaxed add per dropped packet): nothing here adds a
//! system call or an allocation on the data path. The engine calls the [`Monitor`] about every
//! 10 ms; it reads a [`Snapshot`] only when a line or the metrics are due (at most every
//! 100 ms for the metrics) and once more when the run has ended.
//!
//! **Kernel drops.** A capture file has none; a live port reports them through
//! [`actors::io::PacketSource::kernel_drops`], and they then appear in both outputs
//! (`kernel drops N` on the line, `mbox_kernel_drops_total` in the metrics). Until a source
//! reports them they are absent, never shown as a misleading 0.
//!
//! **Format and serving.** The exposition text is written by `prometheus-client` (the
//! Prometheus project's own Rust client: small — `dtoa`, `itoa`, `parking_lot` and a derive
//! macro — maintained, and its text output is OpenMetrics, which Prometheus scrapes natively).
//! Serving is a small blocking responder on `std::net` in its own thread: it answers one
//! connection at a time (`GET /metrics`, 404 otherwise), reads at most 8 KiB of request with
//! a 2 s timeout and closes the connection after each answer. No small maintained HTTP server
//! crate fits better: `tiny_http` (last release 2022) would add four crates for one route, and
//! async servers would bring an async runtime into a program that has none.
//!
//! **Bounds.** The monitor's cost is fixed per tick (one snapshot: a few atomic loads per
//! ring and per drop reason); a scrape holds the metrics' lock only while the text is
//! encoded; a slow or silent client is cut off by the timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::io::{RxProgress, TxLive};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use runtime::pool::PoolView;
use runtime::ring;
use runtime::shm::Region;

use crate::report::DropLine;

/// A live-statistics callback: called about every 10 ms while the run goes on with the
/// run's counters, and once more with `true` when the executor has ended.
pub type LiveFn = Box<dyn FnMut(&LiveSources, bool) + Send>;

/// Where the live counters of a running chain are read from (built by the engine when the
/// chain is wired).
pub struct LiveSources {
    pub(crate) started: Instant,
    pub(crate) rx: Arc<RxProgress>,
    pub(crate) tx: Arc<TxLive>,
    pub(crate) pool: PoolView,
    pub(crate) region: Arc<Region>,
    /// Every ring: its label (`"from -> to"`) and its name in the region.
    pub(crate) rings: Vec<(String, String)>,
    /// Every actor of the plan, by index: its name and its drop reasons.
    pub(crate) actors: Vec<(String, Vec<String>)>,
}

impl LiveSources {
    /// RX's progress (for the progress bar and the drain message).
    pub fn rx(&self) -> &RxProgress {
        &self.rx
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let name = |a: u16| self.actors.get(usize::from(a)).map_or_else(|| format!("actor {a}"), |x| x.0.clone());
        let reason = |a: u16, r: u16| {
            self.actors
                .get(usize::from(a))
                .and_then(|x| x.1.get(usize::from(r)).cloned())
                .unwrap_or_else(|| format!("reason {r}"))
        };
        let mut drops: Vec<DropLine> = self
            .tx
            .drops()
            .into_iter()
            .map(|((a, r), n)| DropLine { actor: name(a), reason: reason(a, r), packets: n })
            .collect();
        let too_large = self.rx.too_large.load(Ordering::Relaxed);
        if too_large > 0 {
            drops.insert(
                0,
                DropLine { actor: "rx".into(), reason: "frame larger than pool buffer".into(), packets: too_large },
            );
        }
        if self.tx.other_drops() > 0 {
            drops.push(DropLine { actor: "?".into(), reason: "unknown reason".into(), packets: self.tx.other_drops() });
        }
        let pool = self.pool.stats();
        let rings = self
            .rings
            .iter()
            .filter_map(|(label, shm)| {
                let s = ring::peek_stats(&self.region, shm).ok()?;
                Some(RingFill { link: label.clone(), items: s.occupancy().min(s.capacity), capacity: s.capacity })
            })
            .collect();
        Snapshot {
            elapsed: self.started.elapsed(),
            packets_in: self.rx.packets.load(Ordering::Relaxed),
            bytes_in: self.rx.bytes.load(Ordering::Relaxed),
            packets_out: self.tx.packets_out.load(Ordering::Relaxed),
            bytes_out: self.tx.bytes_out.load(Ordering::Relaxed),
            drops,
            kernel_drops: self.rx.kernel_drops(),
            pool_in_use: pool.in_use,
            pool_buffers: pool.buffers,
            rings,
        }
    }
}

/// One ring's fill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingFill {
    /// `"from -> to"`.
    pub link: String,
    /// Items in it.
    pub items: u64,
    /// Its slots.
    pub capacity: u64,
}

impl RingFill {
    /// Fill in percent.
    pub fn percent(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            self.items as f64 * 100.0 / self.capacity as f64
        }
    }
}

/// The live counters at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Since the chain was wired.
    pub elapsed: Duration,
    /// Frames read from the input.
    pub packets_in: u64,
    /// Input bytes consumed (the source's, headers included for a capture file).
    pub bytes_in: u64,
    /// Packets emitted.
    pub packets_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Dropped packets by actor and reason (only those with drops).
    pub drops: Vec<DropLine>,
    /// The source's kernel drops, `None` when it has no such counter (a capture file).
    pub kernel_drops: Option<u64>,
    /// Pool buffers in use.
    pub pool_in_use: u64,
    /// Pool buffers.
    pub pool_buffers: u64,
    /// Every ring's fill, in chain order.
    pub rings: Vec<RingFill>,
}

impl Snapshot {
    /// Dropped packets, all reasons.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|d| d.packets).sum()
    }

    /// The fullest ring (the first of equals), if any.
    pub fn fullest_ring(&self) -> Option<&RingFill> {
        self.rings.iter().fold(None, |best: Option<&RingFill>, r| match best {
            Some(b) if b.percent() >= r.percent() => Some(b),
            _ => Some(r),
        })
    }

    /// The `--stats-interval` line for the interval since `prev` (see docs/running.md).
    pub fn line(&self, prev: &Snapshot) -> String {
        let secs = self.elapsed.saturating_sub(prev.elapsed).as_secs_f64().max(1e-9);
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        let mut s = format!(
            "mbox stats {:.2}s: in {:.0} pkt/s, {} total; out {:.0} pkt/s, {} total; dropped {}",
            self.elapsed.as_secs_f64(),
            rate(self.packets_in, prev.packets_in),
            self.packets_in,
            rate(self.packets_out, prev.packets_out),
            self.packets_out,
            self.dropped()
        );
        let changed: Vec<String> = self
            .drops
            .iter()
            .filter_map(|d| {
                let before =
                    prev.drops.iter().find(|p| p.actor == d.actor && p.reason == d.reason).map_or(0, |p| p.packets);
                (d.packets > before).then(|| format!("{}: {} +{}", d.actor, d.reason, d.packets - before))
            })
            .collect();
        if !changed.is_empty() {
            s.push_str(&format!(" ({})", changed.join(", ")));
        }
        s.push_str(&format!("; pool {}/{} in use", self.pool_in_use, self.pool_buffers));
        if let Some(r) = self.fullest_ring() {
            s.push_str(&format!("; fullest ring {} {:.0}% ({}/{})", r.link, r.percent(), r.items, r.capacity));
        }
        if let Some(k) = self.kernel_drops {
            s.push_str(&format!("; kernel drops {k} (+{})", k.saturating_sub(prev.kernel_drops.unwrap_or(0))));
        }
        s
    }
}

/// How often the metrics are refreshed from the counters.
const METRICS_EVERY: Duration = Duration::from_millis(100);

/// The live-statistics outputs of one run: the interval lines, the metrics server, or both.
pub struct Monitor {
    interval: Option<Duration>,
    /// The last line's snapshot (the first: zeros at the start).
    last_line: Snapshot,
    metrics: Option<MetricsServer>,
    last_metrics: Option<Instant>,
}

impl Monitor {
    /// Lines every `interval` (on stderr) and/or metrics served by `metrics`.
    pub fn new(interval: Option<Duration>, metrics: Option<MetricsServer>) -> Monitor {
        Monitor { interval, last_line: Snapshot::default(), metrics, last_metrics: None }
    }

    /// The engine's callback ([`crate::RunOptions::live`]).
    pub fn into_fn(mut self) -> LiveFn {
        Box::new(move |src: &LiveSources, finished: bool| self.tick(src, finished))
    }

    fn tick(&mut self, src: &LiveSources, finished: bool) {
        let now = src.started.elapsed();
        let line_due = self.interval.is_some_and(|i| !finished && now >= self.last_line.elapsed + i);
        let metrics_due =
            self.metrics.is_some() && (finished || self.last_metrics.is_none_or(|t| t.elapsed() >= METRICS_EVERY));
        if !line_due && !metrics_due {
            return;
        }
        let snap = src.snapshot();
        if line_due {
            eprintln!("{}", snap.line(&self.last_line));
        }
        if let (true, Some(m)) = (metrics_due, &self.metrics) {
            m.update(&snap, finished);
            self.last_metrics = Some(Instant::now());
        }
        if line_due {
            self.last_line = snap;
        }
    }
}

/// The metrics, in the Prometheus client's registry.
struct Metrics {
    registry: Registry,
    packets_in: Counter,
    bytes_in: Counter,
    packets_out: Counter,
    bytes_out: Counter,
    dropped: Family<Vec<(String, String)>, Counter>,
    kernel_drops: Option<Counter>,
    pool_in_use: Gauge,
    pool_buffers: Gauge,
    ring_items: Family<Vec<(String, String)>, Gauge>,
    ring_capacity: Family<Vec<(String, String)>, Gauge>,
    elapsed: Gauge<f64, AtomicU64>,
    finished: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mbox");
        let m = Metrics {
            registry: Registry::default(),
            packets_in: Counter::default(),
            bytes_in: Counter::default(),
            packets_out: Counter::default(),
            bytes_out: Counter::default(),
            dropped: Family::default(),
            kernel_drops: None,
            pool_in_use: Gauge::default(),
            pool_buffers: Gauge::default(),
            ring_items: Family::default(),
            ring_capacity: Family::default(),
            elapsed: Gauge::default(),
            finished: Gauge::default(),
        };
        registry.register("packets_in", "Frames read from the input", m.packets_in.clone());
        registry.register("bytes_in", "Input bytes consumed", m.bytes_in.clone());
        registry.register("packets_out", "Packets emitted at the end of the chain", m.packets_out.clone());
        registry.register("bytes_out", "Bytes of the packets emitted", m.bytes_out.clone());
        registry.register("packets_dropped", "Packets dropped, by actor and reason", m.dropped.clone());
        registry.register("pool_buffers_in_use", "Packet pool buffers in use", m.pool_in_use.clone());
        registry.register("pool_buffers", "Packet pool buffers", m.pool_buffers.clone());
        registry.register("ring_items", "Descriptors waiting in each ring", m.ring_items.clone());
        registry.register("ring_capacity", "Slots of each ring", m.ring_capacity.clone());
        registry.register("elapsed_seconds", "Seconds since the chain started", m.elapsed.clone());
        registry.register("run_finished", "1 once the run has ended (final values)", m.finished.clone());
        Metrics { registry, ..m }
    }

    fn update(&mut self, s: &Snapshot, finished: bool) {
        let up = |c: &Counter, v: u64| {
            c.inc_by(v.saturating_sub(c.get()));
        };
        up(&self.packets_in, s.packets_in);
        up(&self.bytes_in, s.bytes_in);
        up(&self.packets_out, s.packets_out);
        up(&self.bytes_out, s.bytes_out);
        for d in &s.drops {
            up(
                &self
                    .dropped
                    .get_or_create(&vec![("actor".into(), d.actor.clone()), ("reason".into(), d.reason.clone())]),
                d.packets,
            );
        }
        if let Some(k) = s.kernel_drops {
            let c = self.kernel_drops.get_or_insert_with(|| {
                let c = Counter::default();
                self.registry.register(
                    "kernel_drops",
                    "Frames the kernel dropped before the port read them",
                    c.clone(),
                );
                c
            });
            up(c, k);
        }
        self.pool_in_use.set(s.pool_in_use as i64);
        self.pool_buffers.set(s.pool_buffers as i64);
        for r in &s.rings {
            let l = vec![("ring".to_string(), r.link.clone())];
            self.ring_items.get_or_create(&l).set(r.items as i64);
            self.ring_capacity.get_or_create(&l).set(r.capacity as i64);
        }
        self.elapsed.set(s.elapsed.as_secs_f64());
        self.finished.set(i64::from(finished));
    }

    fn text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The `--metrics` HTTP endpoint: serves `GET /metrics` from its own thread until dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    metrics: Arc<Mutex<Metrics>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long the server waits for a whole request, and for a client to take each part of
/// the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request read.
const MAX_REQUEST: usize = 8 << 10;

impl MetricsServer {
    /// Listens on `addr` (e.g. `127.0.0.1:9100`; port 0 picks a free one). The error names
    /// the address and says why (address in use, not a local address, permission).
    pub fn bind(addr: &str) -> Result<MetricsServer, String> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "the address is in use (another program listens there; pick another port)".to_string()
                }
                std::io::ErrorKind::AddrNotAvailable => "not an address of this machine".to_string(),
                std::io::ErrorKind::PermissionDenied => {
                    "permission denied (ports below 1024 need privileges)".to_string()
                }
                _ => e.to_string(),
            };
            format!("--metrics {addr}: cannot listen: {why}")
        })?;
        let local = listener.local_addr().map_err(|e| format!("--metrics {addr}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("--metrics {addr}: {e}"))?;
        let metrics = Arc::new(Mutex::new(Metrics::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, st) = (metrics.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("mbox-metrics".into())
            .spawn(move || serve(&listener, &m, &st))
            .map_err(|e| format!("--metrics {addr}: starting the server thread: {e}"))?;
        Ok(MetricsServer { addr: local, metrics, stop, thread: Some(thread) })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn update(&self, s: &Snapshot, finished: bool) {
        if let Ok(mut m) = self.metrics.lock() {
            m.update(s, finished);
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The server loop: accepts (polling every 20 ms, so that a stop is seen) and answers one
/// connection at a time.
fn serve(listener: &TcpListener, metrics: &Mutex<Metrics>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let _ = answer(conn, metrics);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Reads one request (bounded in size and time) and answers it.
fn answer(mut conn: TcpStream, metrics: &Mutex<Metrics>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    conn.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    // A client trickling bytes is cut off too: the whole request within the timeout.
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST && Instant::now() < deadline {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let mut parts = line.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, kind, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            let text = metrics.lock().map(|m| m.text()).unwrap_or_default();
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
        }
        ("GET", _) => ("404 Not Found", "text/plain; charset=utf-8", "mbox serves only /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET /metrics\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(t_ms: u64, pin: u64, pout: u64, drops: &[(&str, &str, u64)]) -> Snapshot {
        Snapshot {
            elapsed: Duration::from_millis(t_ms),
            packets_in: pin,
            packets_out: pout,
            drops: drops
                .iter()
                .map(|(a, r, n)| DropLine { actor: (*a).into(), reason: (*r).into(), packets: *n })
                .collect(),
            pool_in_use: 3,
            pool_buffers: 64,
            rings: vec![
                RingFill { link: "rx -> l23".into(), items: 2, capacity: 8 },
                RingFill { link: "l23 -> tx".into(), items: 6, capacity: 8 },
            ],
            ..Snapshot::default()
        }
    }

    #[test]
    fn line_has_rates_totals_changed_drops_pool_and_fullest_ring() {
        let a = snap(1000, 100, 90, &[("fw", "blocked", 5), ("fw", "other", 1)]);
        let b = snap(1500, 600, 580, &[("fw", "blocked", 15), ("fw", "other", 1)]);
        let l = b.line(&a);
        assert!(
            l.starts_with("mbox stats 1.50s: in 1000 pkt/s, 600 total; out 980 pkt/s, 580 total; dropped 16"),
            "{l}"
        );
        assert!(l.contains("(fw: blocked +10)"), "{l}");
        assert!(!l.contains("other"), "unchanged reasons are not repeated: {l}");
        assert!(l.contains("pool 3/64 in use"), "{l}");
        assert!(l.contains("fullest ring l23 -> tx 75% (6/8)"), "{l}");
        assert!(!l.contains("kernel"), "a capture file has no kernel drops: {l}");
        let k = Snapshot { kernel_drops: Some(7), ..b.clone() };
        assert!(k.line(&a).ends_with("; kernel drops 7 (+7)"), "{}", k.line(&a));
    }

    #[test]
    fn metrics_text_has_every_name_and_follows_the_counters() {
        let mut m = Metrics::new();
        m.update(&snap(100, 10, 8, &[("fw", "blocked", 2)]), false);
        m.update(&snap(200, 20, 17, &[("fw", "blocked", 3)]), true);
        let t = m.text();
        for needle in [
            "mbox_packets_in_total 20",
            "mbox_packets_out_total 17",
            "mbox_packets_dropped_total{actor=\"fw\",reason=\"blocked\"} 3",
            "mbox_pool_buffers_in_use 3",
            "mbox_pool_buffers 64",
            "mbox_ring_items{ring=\"l23 -> tx\"} 6",
            "mbox_ring_capacity{ring=\"rx -> l23\"} 8",
            "mbox_run_finished 1",
            "# TYPE mbox_packets_in counter",
        ] {
            assert!(t.contains(needle), "{needle} missing in:\n{t}");
        }
        assert!(!t.contains("kernel"), "{t}");
        m.update(&Snapshot { kernel_drops: Some(4), ..snap(300, 20, 17, &[]) }, true);
        assert!(m.text().contains("mbox_kernel_drops_total 4"), "{}", m.text());
    }

    #[test]
    fn bind_error_names_the_address_and_the_cause() {
        let first = MetricsServer::bind("127.0.0.1:0").unwrap();
        let addr = first.local_addr().to_string();
        let e = MetricsServer::bind(&addr).err().unwrap();
        assert!(e.contains(&addr) && e.contains("in use"), "{e}");
    }
}

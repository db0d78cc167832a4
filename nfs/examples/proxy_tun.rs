//! The split proxy µStack (optionally with the cache NF) on a Linux TUN device, for trying it
//! on live traffic without the engine (`[stack.proxy]` runs it in `mbox run`; docs/proxy.md).
//!
//! `proxy_tun TUN ADDRESS PORT SECONDS pass|cache [BUFFER_BYTES]` (root; the TUN device is
//! created): packets routed into TUN go to the proxy; what it sends comes out of TUN. Runs
//! SECONDS, then prints its counters as one line. BUFFER_BYTES sizes every socket buffer
//! (default 256 KiB).

use std::os::unix::io::AsRawFd;

use nfs::cache::{CacheConfig, CacheNf};
use smoltcp::phy::{self, Device, Medium, RxToken, TunTapInterface, TxToken};
use smoltcp::time::{Duration, Instant};
use stacks::proxy::{PassThrough, ProxyConfig, ProxyNf, SplitProxy};

/// Socket buffers (each leg, each way): above 64 KiB smoltcp scales its window.
const DEFAULT_BUFFER: usize = 256 * 1024;
/// Most packets read from TUN before a poll.
const MAX_BATCH: usize = 1024;
/// Longest sleep when idle (the run's end is checked at least this often).
const MAX_WAIT: Duration = Duration::from_millis(10);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 && args.len() != 7 {
        eprintln!("usage: proxy_tun TUN ADDRESS PORT SECONDS pass|cache [BUFFER_BYTES]");
        std::process::exit(2);
    }
    let parsed = (args[2].parse::<std::net::Ipv4Addr>(), args[3].parse::<u16>(), args[4].parse::<u64>());
    let (Ok(addr), Ok(port), Ok(secs)) = parsed else {
        eprintln!("proxy_tun: ADDRESS must be IPv4, PORT a port, SECONDS a number");
        std::process::exit(2);
    };
    let mut nf: Box<dyn ProxyNf> = match args[5].as_str() {
        "pass" => Box::new(PassThrough),
        "cache" => Box::new(CacheNf::new(CacheConfig::default())),
        other => {
            eprintln!("proxy_tun: unknown NF `{other}` (pass or cache)");
            std::process::exit(2);
        }
    };
    let mut tun = match TunTapInterface::new(&args[1], Medium::Ip) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("proxy_tun: cannot open TUN `{}`: {e}", args[1]);
            std::process::exit(1);
        }
    };
    let buffer = match args.get(6).map(|b| b.parse::<usize>()) {
        None => DEFAULT_BUFFER,
        Some(Ok(b)) if (1024..=64 << 20).contains(&b) => b,
        Some(_) => {
            eprintln!("proxy_tun: BUFFER_BYTES must be a number from 1024 to 67108864");
            std::process::exit(2);
        }
    };
    let cfg = ProxyConfig { address: addr, port, rx_buffer: buffer, tx_buffer: buffer, ..ProxyConfig::default() };
    let start = Instant::now();
    let mut proxy = SplitProxy::new(cfg, start);
    let end = start + Duration::from_secs(secs);
    let fd = tun.as_raw_fd();
    while Instant::now() < end {
        let now = Instant::now();
        // Everything that arrived (bounded per round), then one poll for all of it.
        let mut got = 0;
        while got < MAX_BATCH {
            let Some((rx, _)) = tun.receive(now) else { break };
            rx.consume(|b| proxy.device.inject(b.to_vec()));
            got += 1;
        }
        proxy.poll(now, nf.as_mut());
        for p in proxy.device.drain().collect::<Vec<_>>() {
            if let Some(tx) = tun.transmit(now) {
                tx.consume(p.len(), |buf| buf.copy_from_slice(&p));
            }
        }
        if got == 0 {
            // Idle: sleep until a packet arrives or the proxy's next timer, never past
            // it (no wait at all when a socket has bytes to send now).
            let delay = proxy.poll_delay(now).map_or(MAX_WAIT, |d| d.min(MAX_WAIT));
            if delay > Duration::ZERO {
                let _ = phy::wait(fd, Some(delay));
            }
        }
    }
    println!("{:?} rx_dropped={}", proxy.stats(), proxy.device.rx_dropped);
}

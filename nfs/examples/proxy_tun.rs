//! The split proxy µStack (optionally with the cache NF) on a Linux TUN device, for trying it
//! on live traffic until `[stack.proxy]` exists in the app loader (docs/proxy.md).
//!
//! `proxy_tun TUN ADDRESS PORT SECONDS pass|cache` (root; the TUN device is created): packets
//! routed into TUN go to the proxy; what it sends comes out of TUN. Runs SECONDS, then prints
//! its counters as one line.

use std::os::unix::io::AsRawFd;

use nfs::cache::{CacheConfig, CacheNf};
use smoltcp::phy::{self, Device, Medium, RxToken, TunTapInterface, TxToken};
use smoltcp::time::{Duration, Instant};
use stacks::proxy::{PassThrough, ProxyConfig, ProxyNf, SplitProxy};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: proxy_tun TUN ADDRESS PORT SECONDS pass|cache");
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
    let cfg = ProxyConfig { address: addr, port, ..ProxyConfig::default() };
    let start = Instant::now();
    let mut proxy = SplitProxy::new(cfg, start);
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        let now = Instant::now();
        for _ in 0..256 {
            let Some((rx, _)) = tun.receive(now) else { break };
            rx.consume(|b| proxy.device.inject(b.to_vec()));
        }
        proxy.poll(now, nf.as_mut());
        for p in proxy.device.drain().collect::<Vec<_>>() {
            if let Some(tx) = tun.transmit(now) {
                tx.consume(p.len(), |buf| buf.copy_from_slice(&p));
            }
        }
        let _ = phy::wait(tun.as_raw_fd(), Some(Duration::from_millis(1)));
    }
    println!("{:?} rx_dropped={}", proxy.stats(), proxy.device.rx_dropped);
}

//! Memory per idle TCP connection (issue 14): peak resident memory of `mbox run` over captures
//! of N connections that each complete a handshake and send one 18-byte request, then stay
//! open (no FIN, no RST, all within a few seconds of packet time, far below the idle
//! timeouts), for several N; the bytes per connection are the slope between the largest and
//! smallest N, so the run's fixed cost (region, rings, pools, binary) drops out.
//!
//! Each N is run with three app files, none with an NF, all with `max_flows` above N:
//!
//! * **l23 only** — the L2/3 µStack alone (flow table), the share of the TCP monitor's
//!   numbers that is not the monitor's;
//! * **default** — the stream store and reassembly as shipped (`chunk_size` 4096), with
//!   `stream_chunks` raised to N (one chunk and one record per connection with data);
//! * **small chunks** — `chunk_size = 64`: a few bytes of data pin 64 bytes, not 4 KiB.
//!
//! The peak comes from the run's own report (`--stats-json`, `peak_rss_bytes`, the process's
//! `VmHWM`). The captures are written to a temporary directory and removed.
//!
//! `cargo build --release -p microboxes && cargo run -p bench --release --bin idle_memory -- [--conns 10000,100000,1000000] [--mbox target/release/mbox]`

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use etherparse::PacketBuilder;
use runtime::ports::{LinkType, PcapWriter};
use stacks::parse::tcp_flags::{ACK, PSH, SYN};

/// The request each connection sends: 18 bytes.
const REQUEST: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

/// One Ethernet + IPv4 + TCP frame (no options), checksums filled (etherparse builds it, as
/// the tests' `Capture` does).
fn frame(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, seq, 65535);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(ack);
    }
    if flags & PSH != 0 {
        b = b.psh();
    }
    let mut f = Vec::with_capacity(54 + payload.len());
    b.write(&mut f, payload).expect("a TCP frame without options always builds");
    f
}

/// Writes `n` idle connections: SYN, SYN-ACK, ACK, one 18-byte request; 1 µs apart.
fn write_capture(path: &Path, n: u32) -> Result<()> {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).with_context(|| format!("creating {}", path.display()))?;
    let mut t = 1_700_000_000_000_000_000u64;
    let server = ([192, 168, 0, 1], 80);
    for i in 0..n {
        let client = ([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40000 + (i % 20000) as u16);
        let (cs, ss) = (i.wrapping_mul(2_654_435_761), i.wrapping_mul(40_503).wrapping_add(7));
        for f in [
            frame(client, server, cs, 0, SYN, &[]),
            frame(server, client, ss, cs.wrapping_add(1), SYN | ACK, &[]),
            frame(client, server, cs.wrapping_add(1), ss.wrapping_add(1), ACK, &[]),
            frame(client, server, cs.wrapping_add(1), ss.wrapping_add(1), ACK | PSH, REQUEST),
        ] {
            w.write(t, &f, f.len() as u32)?;
            t += 1000;
        }
    }
    w.finish()?;
    Ok(())
}

/// Peak resident bytes of one `mbox run` of `app` over `pcap`.
fn peak(mbox: &Path, app: &Path, pcap: &Path, dir: &Path) -> Result<(u64, String)> {
    let stats = dir.join("stats.json");
    let out = Command::new(mbox)
        .args(["run", &app.display().to_string(), "--input", &pcap.display().to_string(), "-q", "--stats-json"])
        .arg(&stats)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {}", mbox.display()))?;
    if !out.status.success() {
        bail!("mbox run failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats)?)?;
    let rss = v["peak_rss_bytes"].as_u64().context("no peak_rss_bytes in the run's stats")?;
    // What the monitor refused or cut, so a run that did not hold every connection shows it.
    let mut notes = Vec::new();
    for a in v["actors"].as_array().into_iter().flatten() {
        for c in a["counters"].as_array().into_iter().flatten() {
            let (name, value) = (c[0].as_str().unwrap_or(""), c[1].as_u64().unwrap_or(0));
            if value > 0 && (name.contains("exhausted") || name.contains("refused") || name.contains("evict")) {
                notes.push(format!("{}.{name}={value}", a["name"].as_str().unwrap_or("?")));
            }
        }
    }
    Ok((rss, notes.join(" ")))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut conns: Vec<u32> = vec![10_000, 100_000, 1_000_000];
    let mut mbox = PathBuf::from("target/release/mbox");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--conns" => {
                conns = args
                    .next()
                    .context("--conns N,N,...")?
                    .split(',')
                    .map(|s| s.trim().parse().context("--conns takes numbers"))
                    .collect::<Result<_>>()?
            }
            "--mbox" => mbox = args.next().context("--mbox PATH")?.into(),
            other => bail!("unknown argument `{other}` (--conns N,N,... --mbox PATH)"),
        }
    }
    conns.sort_unstable();
    if conns.len() < 2 {
        bail!("--conns needs at least two sizes (the slope between them is the answer)");
    }
    let mbox = std::fs::canonicalize(&mbox)
        .with_context(|| format!("{} (build it: cargo build --release -p microboxes)", mbox.display()))?;
    let dir = std::env::temp_dir().join(format!("mbox-idle-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&mbox, &conns, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(mbox: &Path, conns: &[u32], dir: &Path) -> Result<()> {
    // (name, [stack.tcp] present, reassembly keys)
    let variants = [("l23 only", false, ""), ("default", true, ""), ("small chunks", true, "chunk_size = 64\n")];
    println!("peak resident memory of `mbox run` ([stack.tcp], no NF) over N idle connections");
    println!("{:<14} {:>10} {:>14} {:>16}  notes", "store", "N", "peak RSS (MB)", "bytes/conn (avg)");
    let mut peaks: Vec<Vec<(u32, u64)>> = vec![Vec::new(); variants.len()];
    for &n in conns {
        let pcap = dir.join("idle.pcap");
        write_capture(&pcap, n)?;
        for (vi, (name, tcp, reassembly)) in variants.iter().enumerate() {
            let app = dir.join("app.toml");
            let max_flows = u64::from(n) + 1024;
            let mut text = format!("[stack.l23]\nmax_flows = {max_flows}\n");
            if *tcp {
                text += &format!(
                    "\n[stack.tcp]\nmemory_limit = 0\nstream_chunks = {}\n\n[stack.tcp.reassembly]\n{reassembly}",
                    n.max(1024)
                );
            }
            std::fs::write(&app, text)?;
            let (rss, notes) = peak(mbox, &app, &pcap, dir)?;
            println!("{name:<14} {n:>10} {:>14.1} {:>16.0}  {notes}", rss as f64 / 1e6, rss as f64 / f64::from(n));
            peaks[vi].push((n, rss));
        }
        std::fs::remove_file(&pcap)?;
    }
    println!();
    for ((name, _, _), p) in variants.iter().zip(&peaks) {
        let ((n0, r0), (n1, r1)) = (p[0], p[p.len() - 1]);
        let slope = (r1 as f64 - r0 as f64) / f64::from(n1 - n0);
        println!("{name:<14} bytes per idle connection (slope {n0}..{n1}): {slope:.0}");
    }
    Ok(())
}

//! Helpers shared by the integration tests: generated captures, the `mbox` binary, app
//! files in temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use runtime::ports::gen::{generate, GenConfig, GenSummary};
use runtime::ports::{LinkType, PcapReader, PcapWriter};

/// Writes generated traffic to `path`; returns the generator's ground truth.
pub fn gen_pcap(path: &Path, cfg: &GenConfig) -> GenSummary {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).expect("create pcap");
    let s = generate(cfg, |ts, f| w.write(ts, f, f.len() as u32)).expect("generate");
    w.finish().expect("finish pcap");
    s
}

/// Every frame of a capture: (timestamp ns, bytes).
pub fn read_all(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut r = PcapReader::open(path).expect("open pcap");
    let mut out = Vec::new();
    while let Some(p) = r.next_packet().expect("read pcap") {
        out.push((p.ts_ns, p.data.to_vec()));
    }
    out
}

/// The `mbox` binary of this workspace, built on first use (cargo does not build another
/// package's binaries for this crate's tests).
pub fn mbox_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_mbox(&[], "mbox")).clone()
}

/// Builds `mbox` with cargo `features` into this test binary's target directory (same
/// profile) and returns it; with features, copied to `name` beside the default binary, so
/// that a default build afterwards does not replace it under the test.
pub fn build_mbox(features: &[&str], name: &str) -> PathBuf {
    // target/<profile>/deps/<test-exe> -> target/<profile>/mbox
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", "microboxes", "--bin", "mbox", "--manifest-path"]).arg(&manifest);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    if release {
        cmd.arg("--release");
    }
    // Build into the same target directory as this test binary.
    cmd.env("CARGO_TARGET_DIR", profile_dir.parent().expect("target dir"));
    let status = cmd.status().expect("run cargo build for mbox");
    assert!(status.success(), "building mbox (features: {features:?}) failed");
    let built = profile_dir.join("mbox");
    assert!(built.exists(), "{} missing after build", built.display());
    if name == "mbox" {
        return built;
    }
    let bin = profile_dir.join(name);
    std::fs::copy(&built, &bin).expect("copy the built mbox");
    bin
}

/// Waits at most `limit` for `child`; kills it (and says so: `None`) when it takes longer.
pub fn wait_bounded(child: &mut std::process::Child, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The pids whose parent is `pid` (from /proc/*/stat).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let Some(i) = stat.rfind(')') else { continue };
        if stat[i + 1..].split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Runs `mbox` with `args` in `dir`.
pub fn mbox(dir: &Path, args: &[&str]) -> Output {
    Command::new(mbox_bin()).args(args).current_dir(dir).output().expect("run mbox")
}

/// stdout + stderr of a finished command, for messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// True when `tshark` is on the PATH.
pub fn have_tshark() -> bool {
    Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The example app with its flow log redirected into `dir`.
pub fn example_app(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("apps/firewall_stats.toml")).expect("example app");
    let flows = dir.join("flows.jsonl");
    let text = text.replace("output = \"flows.jsonl\"", &format!("output = {:?}", flows.display().to_string()));
    assert!(text.contains(&flows.display().to_string()), "example app must set output = \"flows.jsonl\"");
    let p = dir.join("app.toml");
    std::fs::write(&p, text).expect("write app");
    p
}

/// Path of a file in the repository.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A hand-built capture: Ethernet + IPv4 TCP/UDP frames, one millisecond apart.
#[derive(Default)]
pub struct Capture {
    /// The frames, in order.
    pub frames: Vec<Vec<u8>>,
}

impl Capture {
    /// Appends a TCP segment; `flags` uses `stacks::parse::tcp_flags` (SYN, ACK, RST, FIN, PSH).
    pub fn tcp(&mut self, src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, ack: u32, flags: u8, payload: &[u8]) {
        use stacks::parse::tcp_flags::{ACK, FIN, PSH, RST, SYN};
        let mut b =
            etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src.0, dst.0, 64).tcp(src.1, dst.1, seq, 65535);
        if flags & SYN != 0 {
            b = b.syn();
        }
        if flags & ACK != 0 {
            b = b.ack(ack);
        }
        if flags & RST != 0 {
            b = b.rst();
        }
        if flags & FIN != 0 {
            b = b.fin();
        }
        if flags & PSH != 0 {
            b = b.psh();
        }
        let mut v = Vec::new();
        b.write(&mut v, payload).expect("build a TCP frame");
        self.frames.push(v);
    }

    /// Appends a UDP datagram.
    pub fn udp(&mut self, src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) {
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src.0, dst.0, 64).udp(src.1, dst.1);
        let mut v = Vec::new();
        b.write(&mut v, payload).expect("build a UDP frame");
        self.frames.push(v);
    }

    /// Writes the frames as a pcap, 1 ms apart.
    pub fn save(&self, path: &Path) {
        let mut w = PcapWriter::create(path, LinkType::Ethernet).expect("create pcap");
        for (i, f) in self.frames.iter().enumerate() {
            w.write(1_700_000_000_000_000_000 + i as u64 * 1000, f, f.len() as u32).expect("write pcap");
        }
        w.finish().expect("finish pcap");
    }
}

/// Reports a check that could not run here (a missing tool, too few CPUs, no root), visibly:
/// see [`runtime::test_support::skip`].
pub use runtime::test_support::skip;

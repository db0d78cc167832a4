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
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-exe> -> target/<profile>/mbox
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "microboxes", "--bin", "mbox", "--manifest-path"]).arg(&manifest);
        if release {
            cmd.arg("--release");
        }
        // Build into the same target directory as this test binary.
        cmd.env("CARGO_TARGET_DIR", profile_dir.parent().expect("target dir"));
        let status = cmd.status().expect("run cargo build for mbox");
        assert!(status.success(), "building mbox failed");
        let bin = profile_dir.join("mbox");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
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

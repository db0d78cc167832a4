//! Bytestream modification in the middle on a live link (docs/modification.md): `mbox run
//! apps/rewrite.toml --iface m0,m1` between a client and a server in network namespaces
//! (root only; skipped visibly without root, `ip`, veth support, `ethtool`, `curl`,
//! `python3`, `sed`).
//!
//! The server (a small Python server: HTTP/1.0, no `Content-Length`, the body ends when the
//! connection closes — a length header would be wrong once the body changed) sends a 4 MB
//! file full of `foo` and of near misses (`fo`, `ffoo`, `fooo`, …) in writes of random
//! sizes, so matches land across segment boundaries. `curl` downloads it through `mbox`:
//!
//! * [`download_is_rewritten_as_sed_does`] — the body equals the file rewritten by
//!   `sed 's/foo/barbaz/g'`, curl exits 0 (the connection completed; every wait bounded),
//!   and the word rewriter replaced words that began in an earlier segment than the one that
//!   completed them (`words_split_across_events` > 0);
//! * [`download_with_loss_is_rewritten_as_sed_does`] — the same with a lossy bridge (a small
//!   AF_PACKET forwarder in a fourth namespace between the client and `mbox`; `tc netem` is
//!   missing from this kernel) dropping 1% of the frames each way: rewritten segments and the
//!   client's ACKs are lost, the server retransmits bytes `mbox` already forwarded, and the
//!   same rewritten bytes go out again (`modify_resent_frames` > 0);
//! * [`download_in_mode_b_is_rewritten_as_sed_does`] — the first test in execution mode b
//!   (`--mode b`: one packet at a time through the stack and the NF);
//! * [`upgrade_rewrites_only_the_named_host`] — `apps/rewrite_upgrade.toml`
//!   (`[stack.tcp.modify] upgrade = "on_request"`, `only_hosts = ["example.test"]`), two
//!   downloads in one run: with `Host: other.test` the body arrives byte-identical (same
//!   SHA-256) and the connection never left the cheap path (no connection taken over, no
//!   frame rebuilt); with `Host: example.test` the word rewriter upgrades the flow at the
//!   request, and the response — every byte of which follows the upgrade — equals sed's
//!   rewrite (same SHA-256). Mode b and mode c (the default) both;
//! * [`upgrade_with_loss_rewrites_only_the_named_host`] — the same behind the 1% lossy
//!   bridge (SACK and timestamps were negotiated by the unchanged SYNs; the upgraded flow's
//!   frames carry neither, and recovery still completes).

mod netns;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use netns::{have, inline_lab, stats_json, unavailable, wait_for_log, wait_forwarding, Lab};
use tests::{mbox_bin, skip};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SERVER: &str = r#"
import random, socket, sys
addr, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
body = open(path, 'rb').read()
rng = random.Random(7)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(16)
print('Serving', flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(30)
    req = b''
    while b'\r\n\r\n' not in req:
        d = c.recv(4096)
        if not d:
            break
        req += d
    try:
        c.sendall(b'HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n')
        i = 0
        while i < len(body):
            n = rng.randint(1, 5000)
            c.sendall(body[i:i + n])
            i += n
        c.shutdown(socket.SHUT_WR)
        while c.recv(4096):
            pass
    except OSError as e:
        print('error', e, flush=True)
    c.close()
    print('served', len(body), flush=True)
"#;

/// A lossy bridge between two interfaces (AF_PACKET): drops a share of the frames each way
/// under a seeded generator, so the endpoints' kernels retransmit for real (`tc netem` is
/// missing from this kernel; DEPENDENCIES.md).
const LOSSY: &str = r#"
import random, select, socket, sys
a, b, loss = sys.argv[1], sys.argv[2], float(sys.argv[3])
rng = random.Random(11)
socks = {}
for name in (a, b):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((name, 0))
    socks[name] = s
other = {a: socks[b], b: socks[a]}
by_fd = {socks[n].fileno(): n for n in socks}
print('Bridging', flush=True)
dropped = 0
while True:
    r, _, _ = select.select(list(socks.values()), [], [], 1.0)
    for s in r:
        name = by_fd[s.fileno()]
        frame, addr = s.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        if rng.random() < loss:
            dropped += 1
            if dropped % 50 == 0:
                print('dropped', dropped, flush=True)
            continue
        other[name].send(frame)
"#;

/// 4 MB of words, `foo`s and near misses, lines of random length.
fn corpus() -> Vec<u8> {
    let pieces: [&[u8]; 10] = [b"foo", b"fo", b"f", b"o", b"ffoo", b"fooo", b"foofoo", b"bar ", b"\n", b"xyz"];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity(4 << 20);
    while out.len() < 4 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(pieces[(x % 10) as usize]);
    }
    out
}

fn start_mbox(lab: &mut Lab, ns: &str, dir: &Path, app: &str, mode: &str) -> usize {
    let bin = mbox_bin();
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps").join(app);
    let args = [
        bin.to_str().unwrap(),
        "run",
        app.to_str().unwrap(),
        "--iface",
        "m0,m1",
        "--duration",
        "150",
        "--stats-interval",
        "1",
        "--stats-json",
        "stats.json",
        "--mode",
        mode,
    ];
    lab.spawn(ns, 160, dir, &args, "mbox.log")
}

fn counter(st: &serde_json::Value, actor: &str, name: &str) -> u64 {
    let a = st["actors"].as_array().unwrap().iter().find(|a| a["name"] == actor).unwrap();
    a["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name} of {actor}: {a}"))
}

/// Client `c0` ↔ `l0` | lossy bridge | `l1` ↔ `m0` | mbox | `m1` ↔ `s0` server, one subnet.
fn lossy_lab(lab: &mut Lab, net: u8, dir: &Path) -> Result<(String, String, String), String> {
    let (c, l, m, s) = (lab.netns("c")?, lab.netns("l")?, lab.netns("m")?, lab.netns("s")?);
    lab.veth(&c, "c0", &l, "l0")?;
    lab.veth(&l, "l1", &m, "m0")?;
    lab.veth(&s, "s0", &m, "m1")?;
    lab.exec(&c, &["ip", "addr", "add", &format!("10.99.{net}.1/24"), "dev", "c0"])?;
    lab.exec(&s, &["ip", "addr", "add", &format!("10.99.{net}.2/24"), "dev", "s0"])?;
    std::fs::write(dir.join("lossy.py"), LOSSY).unwrap();
    lab.spawn(&l, 200, dir, &["python3", "-u", "lossy.py", "l0", "l1", "0.01"], "lossy.log");
    if !wait_for_log(dir, "lossy.log", "Bridging", Duration::from_secs(15)) {
        return Err("the lossy bridge did not start".into());
    }
    Ok((c, m, s))
}

/// One live rewrite run's lab (the tests run one at a time; fields drop in this order).
struct Rig {
    _one: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    lab: Lab,
    /// The client namespace.
    c: String,
    /// mbox's process index in `lab`.
    mb: usize,
    /// The corpus the server sends.
    original: Vec<u8>,
    /// The corpus's URL on the server.
    url: String,
}

/// Hold timeout of the lossy runs. Held bytes leave unrewritten when their sender pauses
/// longer than the hold timeout inside a possible pattern (the documented trade-off of
/// `hold_timeout_ms`); on a loaded machine, with retransmissions, the server's pauses pass
/// the apps' 40 ms, so these runs give it 400 ms (the acknowledgment ahead comes after one
/// timeout, the release after two).
const LOSSY_HOLD_TIMEOUT_MS: u64 = 400;

/// A copy of `apps/APP` in `dir` with `hold_timeout_ms` = [`LOSSY_HOLD_TIMEOUT_MS`]; its path.
fn patient_copy(app: &str, dir: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps").join(app);
    let text = std::fs::read_to_string(&src).unwrap();
    let patched = text.replace("hold_timeout_ms = 40\n", &format!("hold_timeout_ms = {LOSSY_HOLD_TIMEOUT_MS}\n"));
    assert_ne!(patched, text, "{} sets hold_timeout_ms = 40", src.display());
    let out = dir.join(app);
    std::fs::write(&out, patched).unwrap();
    out.to_str().unwrap().to_string()
}

/// The inline lab (lossy when `loss`), the corpus server on 10.99.`net`.2:8088 and
/// `mbox run apps/APP` in `mode`, forwarding.
fn serve_corpus(tag: &str, net: u8, loss: bool, app: &str, mode: &str) -> Rig {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let original = corpus();
    std::fs::write(d.join("corpus.txt"), &original).unwrap();
    std::fs::write(d.join("server.py"), SERVER).unwrap();
    let mut lab = Lab::new(tag);
    let (c, m, s) = if loss { lossy_lab(&mut lab, net, d).unwrap() } else { inline_lab(&mut lab, net).unwrap() };
    let addr = format!("10.99.{net}.2");
    let srv = ["python3", "-u", "server.py", &addr, "8088", "corpus.txt"];
    lab.spawn(&s, 200, d, &srv, "server.log");
    assert!(wait_for_log(d, "server.log", "Serving", Duration::from_secs(15)), "the server did not start");
    let app = if loss { patient_copy(app, d) } else { app.to_string() };
    let mb = start_mbox(&mut lab, &m, d, &app, mode);
    let url = format!("http://{addr}:8088/corpus.txt");
    wait_forwarding(&c, &url, d);
    Rig { _one, dir, lab, c, mb, original, url }
}

/// The download through `mbox` (with 1% of the frames lost between the client and `mbox`
/// when `loss`); asserts.
fn download(tag: &str, net: u8, loss: bool, mode: &str) {
    let Rig { _one, dir, mut lab, c, mb, original, url } = serve_corpus(tag, net, loss, "rewrite.toml", mode);
    let d = dir.path();
    let got = d.join("got.txt");
    let o = Command::new("timeout")
        .args(["120", "ip", "netns", "exec", &c, "curl", "-sS", "--max-time", "100", "-o"])
        .arg(&got)
        .arg(&url)
        .output()
        .unwrap();
    let status = lab.interrupt_and_wait(mb, Duration::from_secs(20));
    let log = std::fs::read_to_string(d.join("mbox.log")).unwrap_or_default();
    assert!(o.status.success(), "curl: {:?} {}\nmbox:\n{log}", o.status, String::from_utf8_lossy(&o.stderr));
    assert_eq!(status.and_then(|s| s.code()), Some(130), "mbox ends on SIGINT after draining:\n{log}");
    let sed = Command::new("sed").args(["s/foo/barbaz/g"]).arg(d.join("corpus.txt")).output().unwrap();
    assert!(sed.status.success());
    let want = sed.stdout;
    let body = std::fs::read(&got).unwrap();
    assert_ne!(want, original, "the corpus has words to replace");
    let st = stats_json(d);
    if body != want {
        let at = body.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(body.len().min(want.len()));
        panic!(
            "the download differs from sed's rewrite at byte {at} (got {} bytes, want {}):\n got: {:?}\nwant: {:?}\nmbox:\n{log}\n{st}",
            body.len(),
            want.len(),
            String::from_utf8_lossy(&body[at.saturating_sub(20)..(at + 20).min(body.len())]),
            String::from_utf8_lossy(&want[at.saturating_sub(20)..(at + 20).min(want.len())]),
        );
    }
    let words = counter(&st, "rewrite", "words_replaced");
    let split = counter(&st, "rewrite", "words_split_across_events");
    let refused = counter(&st, "rewrite", "changes_refused");
    let resent = counter(&st, "tcp", "modify_resent_frames");
    let timeouts = counter(&st, "tcp", "modify_hold_timeouts");
    assert!(split > 0, "some words straddled segments: {st}");
    assert_eq!(refused, 0, "no change came too late: {st}");
    if loss {
        assert!(resent > 0, "the server retransmitted bytes mbox had forwarded: {st}");
    }
    println!(
        "live rewrite{} (mode {mode}): {} bytes -> {} bytes equal to sed's; {words} words replaced, {split} split across segments, {resent} frames resent, {timeouts} hold timeouts, {refused} changes refused (too late or on an ended connection)",
        if loss { " with 1% loss" } else { "" },
        original.len(),
        body.len()
    );
}

fn cannot_run(check: &str, tag: &str) -> bool {
    if let Some(why) = unavailable(tag) {
        skip(check, &why);
        return true;
    }
    if !have("sed") {
        skip(check, "`sed` is not installed");
        return true;
    }
    false
}

#[test]
fn download_is_rewritten_as_sed_does() {
    let check = "live rewrite: curl through mbox apps/rewrite.toml equals sed's rewrite";
    if cannot_run(check, "r") {
        return;
    }
    download("r", 40, false, "c");
}

#[test]
fn download_in_mode_b_is_rewritten_as_sed_does() {
    let check = "live rewrite in mode b: curl through mbox --mode b apps/rewrite.toml equals sed's rewrite";
    if cannot_run(check, "rb") {
        return;
    }
    download("rb", 42, false, "b");
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// `apps/rewrite_upgrade.toml` in `mode`: one download naming another host (cheap path all
/// along), one naming example.test (upgraded, rewritten); asserts.
fn upgrade(tag: &str, net: u8, mode: &str, loss: bool) {
    let Rig { _one, dir, mut lab, c, mb, original, url } = serve_corpus(tag, net, loss, "rewrite_upgrade.toml", mode);
    let d = dir.path();
    let get = |host: &str, out: &str| {
        Command::new("timeout")
            .args(["120", "ip", "netns", "exec", &c, "curl", "-sS", "--max-time", "100", "-H"])
            .arg(format!("Host: {host}"))
            .arg("-o")
            .arg(d.join(out))
            .arg(&url)
            .output()
            .unwrap()
    };
    let other = get("other.test", "other.txt");
    let named = get("example.test:8088", "named.txt");
    let status = lab.interrupt_and_wait(mb, Duration::from_secs(20));
    let log = std::fs::read_to_string(d.join("mbox.log")).unwrap_or_default();
    for o in [&other, &named] {
        assert!(o.status.success(), "curl: {:?} {}\nmbox:\n{log}", o.status, String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(status.and_then(|s| s.code()), Some(130), "mbox ends on SIGINT after draining:\n{log}");
    let st = stats_json(d);
    let plain = std::fs::read(d.join("other.txt")).unwrap();
    assert_eq!(sha256(&plain), sha256(&original), "a flow left on the cheap path arrives byte-identical: {st}");
    let sed = Command::new("sed").args(["s/foo/barbaz/g"]).arg(d.join("corpus.txt")).output().unwrap();
    assert!(sed.status.success());
    let want = sed.stdout;
    let body = std::fs::read(d.join("named.txt")).unwrap();
    if body != want {
        let at = body.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(body.len().min(want.len()));
        panic!(
            "the upgraded download differs from sed's rewrite at byte {at} (got {} bytes, want {})\nmbox:\n{log}\n{st}",
            body.len(),
            want.len()
        );
    }
    assert_eq!(sha256(&body), sha256(&want));
    let n = |name: &str| counter(&st, "tcp", name);
    assert_eq!(n("modify_connections"), 0, "no connection was taken over at its SYN: {st}");
    assert_eq!(n("modify_flows_upgraded"), 1, "exactly the example.test flow was upgraded: {st}");
    assert_eq!(n("modify_upgrades_refused"), 0, "{st}");
    assert_eq!(counter(&st, "rewrite", "flows_host_matched"), 1, "{st}");
    assert!(counter(&st, "rewrite", "flows_host_ignored") >= 2, "the probe and the other.test flow: {st}");
    assert!(n("modify_cheap_path_bytes") >= original.len() as u64, "the other flow's bytes took the cheap path: {st}");
    assert!(n("modify_path_bytes") >= original.len() as u64, "the upgraded response took the modification path: {st}");
    let before = n("modify_upgraded_bytes_before");
    assert!(before > 0 && before < 1000, "only the request left before the upgrade: {st}");
    assert_eq!(counter(&st, "rewrite", "changes_refused"), 0, "no change came too late: {st}");
    println!(
        "live upgrade{} (mode {mode}): other.test {} bytes byte-identical (sha256 {}), example.test upgraded after {before} bytes, {} bytes equal to sed's (sha256 {}); cheap path {} payload bytes, modification path {} payload bytes; state per cheap connection {} B, per upgraded connection {} B (fixed part), high-water {} B",
        if loss { " with 1% loss" } else { "" },
        plain.len(),
        &sha256(&plain)[..16],
        body.len(),
        &sha256(&body)[..16],
        n("modify_cheap_path_bytes"),
        n("modify_path_bytes"),
        n("modify_state_bytes_cheap_connection"),
        n("modify_state_bytes_forwarded_connection"),
        n("modify_state_bytes_high_water"),
    );
}

#[test]
fn upgrade_rewrites_only_the_named_host() {
    let check = "live upgrade: apps/rewrite_upgrade.toml rewrites only the example.test flow, modes c and b";
    if cannot_run(check, "u") {
        return;
    }
    upgrade("u", 43, "c", false);
    upgrade("ub", 44, "b", false);
}

#[test]
fn upgrade_with_loss_rewrites_only_the_named_host() {
    let check =
        "live upgrade with 1% loss (lossy bridge): apps/rewrite_upgrade.toml, the upgraded flow equals sed's rewrite";
    if cannot_run(check, "ul") {
        return;
    }
    upgrade("ul", 45, "c", true);
}

#[test]
fn download_with_loss_is_rewritten_as_sed_does() {
    let check = "live rewrite with 1% loss (lossy bridge): curl through mbox equals sed's rewrite";
    if cannot_run(check, "l") {
        return;
    }
    download("l", 41, true, "c");
}

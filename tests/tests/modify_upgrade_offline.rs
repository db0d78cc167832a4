//! Per-flow upgrade from the cheap path, offline (docs/modification.md "Per-flow upgrade"):
//! a capture of HTTP keep-alive connections (`tests/fixtures/captures/clean_keepalive.pcap`,
//! every request naming host `10.77.0.2`) through `mbox run --input ... --output`.
//!
//! * [`flows_not_upgraded_pass_byte_identical`] — `apps/rewrite_upgrade.toml` (its host is
//!   not in the capture): every frame leaves exactly as it came, and no connection ever
//!   had modification state (`modify_connections`, `modify_flows_upgraded`, frames built:
//!   all 0; every payload byte counted on the cheap path; the state high-water is one cheap
//!   entry).
//! * [`an_upgraded_flow_is_rewritten_from_the_upgrade_point`] — the same app with
//!   `only_hosts = ["10.77.0.2"]` and `replace = { "HTTP" = "XTTP" }` (same length, so the
//!   capture's own acknowledgments stay valid), in mode b (one packet at a time: the upgrade
//!   is taken right after the packet that completed the first request's head). Each
//!   connection's output streams, reassembled from the emitted frames, are: the client's
//!   first request unchanged (it left before the upgrade), everything after it and the
//!   whole server stream rewritten — the reference computed here from the input.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tests::*;

const CAPTURE: &str = "tests/fixtures/captures/clean_keepalive.pcap";

/// (src ip, src port, dst ip, dst port).
type Dir = ([u8; 4], u16, [u8; 4], u16);

/// One TCP segment of an untagged Ethernet/IPv4 frame: direction, seq, flags, payload.
fn segment(f: &[u8]) -> Option<(Dir, u32, u8, &[u8])> {
    if f.len() < 34 || f[12..14] != [8, 0] || f[23] != 6 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let t = 14 + ihl;
    let off = usize::from(*f.get(t + 12)? >> 4) * 4;
    let ip = |i: usize| -> [u8; 4] { f[i..i + 4].try_into().unwrap() };
    let port = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
    let dir = (ip(26), port(t), ip(30), port(t + 2));
    let seq = u32::from_be_bytes(f[t + 4..t + 8].try_into().unwrap());
    Some((dir, seq, f[t + 13], f.get(t + off..14 + total)?))
}

/// Each direction's bytestream (offsets from its SYN), reassembled from the frames.
fn streams(frames: &[(u64, Vec<u8>)]) -> HashMap<Dir, Vec<u8>> {
    let mut isn: HashMap<Dir, u32> = HashMap::new();
    let mut parts: HashMap<Dir, BTreeMap<u64, Vec<u8>>> = HashMap::new();
    for (_, f) in frames {
        let Some((dir, seq, flags, payload)) = segment(f) else { continue };
        if flags & 0x02 != 0 {
            isn.insert(dir, seq);
            continue;
        }
        let Some(&i) = isn.get(&dir) else { continue };
        if !payload.is_empty() {
            let at = u64::from(seq.wrapping_sub(i).wrapping_sub(1));
            parts.entry(dir).or_default().entry(at).or_insert_with(|| payload.to_vec());
        }
    }
    parts
        .into_iter()
        .map(|(dir, p)| {
            let mut s = Vec::new();
            for (at, b) in p {
                let at = at as usize;
                assert!(at <= s.len(), "a hole in {dir:?} at {at}");
                if at + b.len() > s.len() {
                    s.extend_from_slice(&b[s.len() - at..]);
                }
            }
            (dir, s)
        })
        .collect()
}

fn run(dir: &Path, app: &Path, mode: &str) -> (Vec<(u64, Vec<u8>)>, serde_json::Value) {
    let input = repo_file(CAPTURE);
    let out = dir.join("out.pcap");
    let st = dir.join("stats.json");
    let args = [
        "run",
        app.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--stats-json",
        st.to_str().unwrap(),
        "--mode",
        mode,
        "-q",
    ];
    let o = mbox(dir, &args);
    assert!(o.status.success(), "{}", text(&o));
    let stats = serde_json::from_str(&std::fs::read_to_string(st).unwrap()).unwrap();
    (read_all(&out), stats)
}

fn counter(st: &serde_json::Value, actor: &str, name: &str) -> u64 {
    let a = st["actors"].as_array().unwrap().iter().find(|a| a["name"] == actor).unwrap();
    a["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name} of {actor}: {a}"))
}

#[test]
fn flows_not_upgraded_pass_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["b", "c"] {
        let (out, st) = run(dir.path(), &repo_file("apps/rewrite_upgrade.toml"), mode);
        let input = read_all(&repo_file(CAPTURE));
        let got: Vec<&Vec<u8>> = out.iter().map(|(_, f)| f).collect();
        let want: Vec<&Vec<u8>> = input.iter().map(|(_, f)| f).collect();
        assert_eq!(got.len(), want.len(), "mode {mode}: every frame leaves");
        assert!(got == want, "mode {mode}: every frame leaves exactly as it came, in order");
        let n = |name: &str| counter(&st, "tcp", name);
        for zero in ["modify_connections", "modify_flows_upgraded", "modify_data_frames", "modify_control_frames"] {
            assert_eq!(n(zero), 0, "mode {mode}: {zero}: {st}");
        }
        let payload: u64 = input.iter().filter_map(|(_, f)| segment(f)).map(|(_, _, _, p)| p.len() as u64).sum();
        assert!(payload > 0);
        assert_eq!(n("modify_cheap_path_bytes"), payload, "mode {mode}: {st}");
        assert_eq!(n("modify_path_bytes"), 0, "mode {mode}: {st}");
        // One connection: its only state was the cheap path's entry (the SYNs' MSS).
        assert_eq!(n("connections"), 1, "{st}");
        assert_eq!(n("modify_state_bytes_high_water"), n("modify_state_bytes_cheap_connection"), "mode {mode}: {st}");
        assert!(counter(&st, "rewrite", "flows_host_ignored") > 0, "{st}");
    }
}

fn replace_from(s: &[u8], from: usize, word: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = s[..from].to_vec();
    let mut i = from;
    while i < s.len() {
        if s[i..].starts_with(word) {
            out.extend_from_slice(with);
            i += word.len();
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn an_upgraded_flow_is_rewritten_from_the_upgrade_point() {
    let dir = tempfile::tempdir().unwrap();
    let app = std::fs::read_to_string(repo_file("apps/rewrite_upgrade.toml"))
        .unwrap()
        .replace(r#"replace = { "foo" = "barbaz" }"#, r#"replace = { "HTTP" = "XTTP" }"#)
        .replace(r#"only_hosts = ["example.test"]"#, r#"only_hosts = ["10.77.0.2"]"#);
    assert!(app.contains("XTTP") && app.contains("10.77.0.2"));
    let path = dir.path().join("upgrade.toml");
    std::fs::write(&path, app).unwrap();
    let (out, st) = run(dir.path(), &path, "b");
    let input = streams(&read_all(&repo_file(CAPTURE)));
    let output = streams(&out);
    let n = |name: &str| counter(&st, "tcp", name);
    let flows = counter(&st, "rewrite", "flows_host_matched");
    assert!(flows > 0, "{st}");
    assert_eq!(n("modify_flows_upgraded"), flows, "every matched flow was upgraded: {st}");
    assert_eq!(n("modify_upgrades_refused"), 0, "{st}");
    let mut checked = 0;
    for (d, s) in &input {
        let got = output.get(d).unwrap_or_else(|| panic!("no output stream for {d:?}"));
        // The client's stream starts with a request; it left before the upgrade was taken.
        let from = if s.starts_with(b"GET ") {
            s.windows(4).position(|w| w == b"\r\n\r\n").expect("a request head") + 4
        } else {
            0
        };
        let want = replace_from(s, from, b"HTTP", b"XTTP");
        assert_ne!(&want, s, "{d:?}: something to rewrite");
        assert!(got == &want, "{d:?}: got\n{}\nwant\n{}", String::from_utf8_lossy(got), String::from_utf8_lossy(&want));
        checked += 1;
    }
    assert_eq!(checked as u64, 2 * flows, "both directions of every flow checked");
    println!(
        "offline upgrade (mode b): {flows} flows upgraded, {} stream bytes checked, {} bytes before the upgrade points",
        input.values().map(|s| s.len()).sum::<usize>(),
        n("modify_upgraded_bytes_before")
    );
}

//! Signature matching speed: [`nfs::signature::matcher::Matcher::scan`] (skips ahead with a
//! SIMD prefilter over the patterns' fingerprints and steps the product DFA only near them;
//! issue 14) beside [`Matcher::scan_bytewise`] (the product DFA stepped over every byte from a
//! carried state, long chunks as independent chains: the scan before issue 14) and the
//! aho-corasick crate's own overlapping search over each chunk (its prefilters), in the same
//! run, over the same bytes cut into the same chunks, with the same patterns. The two scans
//! must report the same matches (checked); the library search is measured without the seam a
//! chunked version needs (matches across chunk boundaries are not counted there), so it is an
//! upper bound for that approach.
//!
//! The bytes: HTTP-like requests and responses (headers, text and binary-ish bodies) with an
//! attack string every 16 exchanges. Patterns: the contents of `apps/ids.rules`, and a larger
//! set (the example rules plus 400 generated URL/header contents). Also a dense input (a
//! place where a pattern can start every few bytes: the skipping scan's worst case, where
//! it falls back to stepping every byte). With `--streams DIR`, also
//! real stream contents: the files `mbox streams --dump DIR CAPTURE` wrote (each direction of
//! each connection scanned as its own stream, up to `--mb` MB of them, in name order).
//!
//! `cargo run -p bench --release --bin signature -- [--mb N] [--streams DIR]`

use std::time::Instant;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use anyhow::Result;
use nfs::signature::matcher::{DirState, Matcher};
use nfs::signature::rules::{load_rules, parse_rules, Rule};

fn traffic(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 4096);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut i = 0u64;
    while out.len() < bytes {
        i += 1;
        out.extend_from_slice(format!("GET /static/{i}/index.html?q={} HTTP/1.1\r\nHost: www{}.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\n\r\n", x % 100_000, i % 97).as_bytes());
        out.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 4000\r\n\r\n",
        );
        for _ in 0..500 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            const TEXT: &[u8] = b"abcdefghijklmnopqrstuvwxyz <>/=\"\n";
            out.push(if i.is_multiple_of(2) { TEXT[(x % TEXT.len() as u64) as usize] } else { (x >> 24) as u8 });
        }
        if i.is_multiple_of(16) {
            out.extend_from_slice(b"GET /cgi-bin/view?file=../../etc/passwd HTTP/1.1\r\n");
        }
    }
    out
}

/// The library's overlapping search over each chunk, both automata.
struct Library {
    acs: Vec<AhoCorasick>,
}

impl Library {
    fn new(rules: &[Rule]) -> Result<Library> {
        let mut lists: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        for c in rules.iter().flat_map(|r| &r.contents) {
            let p = if c.nocase { c.bytes.to_ascii_lowercase() } else { c.bytes.clone() };
            if !lists[usize::from(c.nocase)].contains(&p) {
                lists[usize::from(c.nocase)].push(p);
            }
        }
        let mut acs = Vec::new();
        for (nocase, list) in lists.iter().enumerate() {
            if !list.is_empty() {
                acs.push(
                    AhoCorasick::builder()
                        .kind(Some(AhoCorasickKind::DFA))
                        .match_kind(MatchKind::Standard)
                        .ascii_case_insensitive(nocase == 1)
                        .build(list)?,
                );
            }
        }
        Ok(Library { acs })
    }

    fn run(&self, data: &[u8], chunk: usize) -> u64 {
        let mut n = 0u64;
        for c in data.chunks(chunk) {
            for ac in &self.acs {
                n += ac.find_overlapping_iter(c).count() as u64;
            }
        }
        n
    }
}

/// Each stream scanned in chunks of `chunk` bytes, by the skipping scan or the bytewise one;
/// returns the number of matches.
fn scan(m: &Matcher, streams: &[Vec<u8>], chunk: usize, bytewise: bool) -> u64 {
    let mut hits = Vec::new();
    let mut n = 0u64;
    for s in streams {
        let mut d = DirState::default();
        m.restart(&mut d, 0);
        for c in s.chunks(chunk) {
            hits.clear();
            if bytewise {
                m.scan_bytewise(&mut d, c, &mut hits);
            } else {
                m.scan(&mut d, c, &mut hits);
            }
            n += hits.len() as u64;
        }
    }
    n
}

/// The stream files of `dir` (as `mbox streams --dump` names them), in name order, until
/// `limit` bytes.
fn load_streams(dir: &std::path::Path, limit: usize) -> Result<Vec<Vec<u8>>> {
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    names.sort();
    let (mut out, mut total) = (Vec::new(), 0);
    for p in names {
        if total >= limit {
            break;
        }
        let b = std::fs::read(&p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
        total += b.len();
        if !b.is_empty() {
            out.push(b);
        }
    }
    anyhow::ensure!(!out.is_empty(), "no non-empty *.bin stream files in {}", dir.display());
    Ok(out)
}

/// MB/s for `bytes` bytes in `secs` seconds.
fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut mb = 64usize;
    let mut streams_dir: Option<std::path::PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mb" => mb = args.next().and_then(|v| v.parse().ok()).ok_or_else(|| anyhow::anyhow!("--mb N"))?,
            "--streams" => {
                streams_dir = Some(args.next().ok_or_else(|| anyhow::anyhow!("--streams DIR"))?.into());
            }
            other => anyhow::bail!("unknown argument `{other}` (--mb N, --streams DIR)"),
        }
    }
    // Dense: every few bytes a place where an example pattern can start (the prefilter finds
    // them all; the scan falls back to stepping every byte).
    let dense: Vec<u8> = b"GeT uNiOn /adm SeLeCt /etc ".iter().copied().cycle().take(mb << 18).collect();
    let mut inputs =
        vec![("generated HTTP-like", vec![traffic(mb << 20)]), ("dense fragments (--mb / 4)", vec![dense])];
    if let Some(dir) = &streams_dir {
        inputs.push(("streams of --streams", load_streams(dir, mb << 20)?));
    }
    let example =
        load_rules(std::path::Path::new("apps/ids.rules")).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let mut big = example.clone();
    let mut text = String::new();
    for i in 0..200 {
        text += &format!("alert tcp any any -> any any (content:\"/vuln{i}/\"; sid:{};)\n", 2_000_000 + i);
        text += &format!("alert tcp any any -> any any (content:\"X-Evil-{i}:\"; nocase; sid:{};)\n", 3_000_000 + i);
    }
    big.extend(parse_rules(&text, "generated").map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?);
    for (input, streams) in &inputs {
        let total: usize = streams.iter().map(Vec::len).sum();
        println!(
            "{input}: {:.1} MB in {} stream(s); MB/s, median of 3 runs each, the three alternated",
            total as f64 / 1e6,
            streams.len()
        );
        println!(
            "{:<26} {:>6} {:>9} {:>9} {:>7} {:>9} {:>10} {:>10}",
            "patterns", "chunk", "bytewise", "skipping", "ratio", "library", "matches", "lib. m."
        );
        for (name, rules) in [("apps/ids.rules (5 rules)", &example), ("+400 contents", &big)] {
            let m = Matcher::new(rules).map_err(|e| anyhow::anyhow!(e))?;
            let lib = Library::new(rules)?;
            for chunk in [1460usize, 4096, 65536] {
                let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
                let (mut na, mut nb, mut nc) = (0, 0, 0);
                for _ in 0..3 {
                    let t = Instant::now();
                    na = scan(&m, streams, chunk, true);
                    a.push(mbps(total, t.elapsed().as_secs_f64()));
                    let t = Instant::now();
                    nb = scan(&m, streams, chunk, false);
                    b.push(mbps(total, t.elapsed().as_secs_f64()));
                    let t = Instant::now();
                    nc = streams.iter().map(|s| lib.run(s, chunk)).sum::<u64>();
                    c.push(mbps(total, t.elapsed().as_secs_f64()));
                }
                anyhow::ensure!(na == nb, "{name}, chunk {chunk}: bytewise found {na} matches, skipping {nb}");
                anyhow::ensure!(
                    nc <= na,
                    "{name}, chunk {chunk}: the library found more matches ({nc}) than the scan ({na})"
                );
                let (ma, mb, mc) = (bench::median(&a), bench::median(&b), bench::median(&c));
                println!(
                    "{:<26} {:>6} {:>9.0} {:>9.0} {:>6.2}x {:>9.0} {:>10} {:>10}",
                    name,
                    chunk,
                    ma,
                    mb,
                    mb / ma,
                    mc,
                    na,
                    nc
                );
            }
            println!("{:<26} prefilter fingerprints: {}", "", m.fingerprints());
        }
    }
    Ok(())
}

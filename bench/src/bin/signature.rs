//! Signature matching speed: [`nfs::signature::matcher::Matcher::scan`] (one product table of
//! the plain and `nocase` DFAs, stepped from a carried state, long chunks as independent
//! chains, so matches span chunks exactly) against the
//! aho-corasick crate's own overlapping search over each chunk (which uses its prefilters:
//! memchr/SIMD skips to candidate bytes) — the candidate replacement issue 14 names — in the
//! same run, over the same bytes cut into the same chunks, with the same patterns. The
//! library search is measured without the seam a chunked version needs (matches across chunk
//! boundaries are not counted there), so it is an upper bound for that replacement; the
//! match counts are printed side by side.
//!
//! The bytes: HTTP-like requests and responses (headers, text and binary-ish bodies) with an
//! attack string every 16 exchanges. Patterns: the contents of `apps/ids.rules`, and a larger
//! set (the example rules plus 400 generated URL/header contents).
//!
//! `cargo run -p bench --release --bin signature -- [--mb N]`

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

fn scan(m: &Matcher, data: &[u8], chunk: usize) -> u64 {
    let mut d = DirState::default();
    m.restart(&mut d, 0);
    let mut hits = Vec::new();
    let mut n = 0u64;
    for c in data.chunks(chunk) {
        hits.clear();
        m.scan(&mut d, c, &mut hits);
        n += hits.len() as u64;
    }
    n
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut mb = 64usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mb" => mb = args.next().and_then(|v| v.parse().ok()).ok_or_else(|| anyhow::anyhow!("--mb N"))?,
            other => anyhow::bail!("unknown argument `{other}` (--mb N)"),
        }
    }
    let data = traffic(mb << 20);
    let example =
        load_rules(std::path::Path::new("apps/ids.rules")).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let mut big = example.clone();
    let mut text = String::new();
    for i in 0..200 {
        text += &format!("alert tcp any any -> any any (content:\"/vuln{i}/\"; sid:{};)\n", 2_000_000 + i);
        text += &format!("alert tcp any any -> any any (content:\"X-Evil-{i}:\"; nocase; sid:{};)\n", 3_000_000 + i);
    }
    big.extend(parse_rules(&text, "generated").map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?);
    println!("{mb} MB of HTTP-like bytes; median of 3 runs each");
    println!(
        "{:<26} {:>6} {:>11} {:>13} {:>7} {:>13} {:>13}",
        "patterns", "chunk", "scan MB/s", "library MB/s", "ratio", "scan matches", "lib. matches"
    );
    for (name, rules) in [("apps/ids.rules (5 rules)", &example), ("+400 contents", &big)] {
        let m = Matcher::new(rules).map_err(|e| anyhow::anyhow!(e))?;
        let lib = Library::new(rules)?;
        for chunk in [1460usize, 4096, 65536] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let (mut na, mut nb) = (0, 0);
            for _ in 0..3 {
                let t = Instant::now();
                na = scan(&m, &data, chunk);
                a.push(data.len() as f64 / 1e6 / t.elapsed().as_secs_f64());
                let t = Instant::now();
                nb = lib.run(&data, chunk);
                b.push(data.len() as f64 / 1e6 / t.elapsed().as_secs_f64());
            }
            anyhow::ensure!(
                nb <= na,
                "{name}, chunk {chunk}: the library found more matches ({nb}) than the scan ({na})"
            );
            let (ma, mb) = (bench::median(&a), bench::median(&b));
            println!("{:<26} {:>6} {:>11.0} {:>13.0} {:>6.2}x {:>13} {:>13}", name, chunk, ma, mb, mb / ma, na, nb);
        }
    }
    Ok(())
}

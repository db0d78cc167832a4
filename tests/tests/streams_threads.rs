//! `mbox streams` on two threads (the default: reader/reassembler + hasher) reports exactly
//! what one thread (`--threads 1`) does — records, their order, hashes, counters, dumps —
//! on captures with interleaved connections, reordering, holes, and retransmissions that
//! repeat or contradict bytes near and far behind the frontier (conflicting overlaps are
//! counted by the hashing thread from its own copy of the last `keep_behind` bytes).

use std::path::Path;

use microboxes::streams::{streams, streams_each, ConnectionRecord, StreamsOptions};
use stacks::parse::tcp_flags::{ACK, FIN, PSH, SYN};
use tests::{mbox, text, Capture};

const C: [u8; 4] = [192, 0, 2, 1];
const S: [u8; 4] = [203, 0, 113, 1];

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `conns` connections, their segments interleaved: each direction sends random bytes in
/// random-sized segments; some segments are resent (half of them with changed bytes), from
/// just behind the frontier or far behind it; some pairs swapped; some dropped (holes).
fn hostile_mix(path: &Path, seed: u64, conns: u16) {
    let mut rng = Rng(seed | 1);
    let mut cap = Capture::default();
    // Per connection and direction: next sequence number, segments sent (seq, bytes).
    struct Dir {
        seq: u32,
        sent: Vec<(u32, Vec<u8>)>,
    }
    let mut state: Vec<[Dir; 2]> = Vec::new();
    for k in 0..conns {
        let port = 40000 + k;
        // Some start near the sequence-number wrap.
        let (isn_c, isn_s) = if k % 5 == 0 { (u32::MAX - 3000, 7) } else { (1000 * u32::from(k), 5000) };
        cap.tcp((C, port), (S, 80), isn_c, 0, SYN, b"");
        cap.tcp((S, 80), (C, port), isn_s, isn_c.wrapping_add(1), SYN | ACK, b"");
        cap.tcp((C, port), (S, 80), isn_c.wrapping_add(1), isn_s.wrapping_add(1), ACK, b"");
        state.push([
            Dir { seq: isn_c.wrapping_add(1), sent: Vec::new() },
            Dir { seq: isn_s.wrapping_add(1), sent: Vec::new() },
        ]);
    }
    let mut held: Option<(u16, usize, u32, Vec<u8>)> = None;
    for _ in 0..(u32::from(conns) * 60) {
        let k = rng.below(u64::from(conns)) as u16;
        let d = rng.below(2) as usize;
        let port = 40000 + k;
        let (src, dst) = if d == 0 { ((C, port), (S, 80)) } else { ((S, 80), (C, port)) };
        let dir = &mut state[usize::from(k)][d];
        let roll = rng.below(100);
        if roll < 15 && !dir.sent.is_empty() {
            // Resend: recent or old, same bytes or changed, whole or part.
            let i = if rng.below(2) == 0 { dir.sent.len() - 1 } else { rng.below(dir.sent.len() as u64) as usize };
            let (seq, mut bytes) = dir.sent[i].clone();
            if rng.below(2) == 0 {
                for b in bytes.iter_mut().step_by(3) {
                    *b ^= 0x5a;
                }
            }
            let cut = rng.below(bytes.len() as u64) as usize;
            cap.tcp(src, dst, seq.wrapping_add(cut as u32), 1, ACK, &bytes[cut..]);
            continue;
        }
        let most = if rng.below(4) == 0 { 1460 } else { 200 };
        let len = 1 + rng.below(most) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let seq = dir.seq;
        dir.seq = dir.seq.wrapping_add(len as u32);
        dir.sent.push((seq, bytes.clone()));
        if roll < 18 {
            continue; // dropped: a hole (filled if resent later, else a gap at the end)
        }
        if roll < 25 && held.is_none() {
            held = Some((k, d, seq, bytes)); // sent after the next segment
            continue;
        }
        cap.tcp(src, dst, seq, 1, ACK | PSH, &bytes);
        if let Some((hk, hd, hseq, hbytes)) = held.take() {
            let hport = 40000 + hk;
            let (s, t) = if hd == 0 { ((C, hport), (S, 80)) } else { ((S, 80), (C, hport)) };
            cap.tcp(s, t, hseq, 1, ACK | PSH, &hbytes);
        }
    }
    // Half the connections close.
    for k in (0..conns).step_by(2) {
        let port = 40000 + k;
        let [c, s] = &state[usize::from(k)];
        cap.tcp((C, port), (S, 80), c.seq, s.seq, FIN | ACK, b"");
        cap.tcp((S, 80), (C, port), s.seq, c.seq.wrapping_add(1), FIN | ACK, b"");
        cap.tcp((C, port), (S, 80), c.seq.wrapping_add(1), s.seq.wrapping_add(1), ACK, b"");
    }
    cap.save(path);
}

fn in_end_order(input: &Path, opts: StreamsOptions) -> Vec<ConnectionRecord> {
    let mut all = Vec::new();
    streams_each(input, opts, &mut |c| {
        all.push(c);
        Ok(())
    })
    .unwrap();
    all
}

#[test]
fn two_threads_report_exactly_what_one_does() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, conns) in [(1u64, 3u16), (7, 30), (99, 120)] {
        let input = dir.path().join(format!("mix{seed}.pcap"));
        hostile_mix(&input, seed, conns);
        // keep_behind: the default (64 KiB), one smaller than many retransmission
        // distances (the window wraps), and none at all.
        for keep in [None, Some(700u64), Some(0)] {
            let mut one = StreamsOptions { single_thread: true, ..Default::default() };
            if let Some(k) = keep {
                one.tcp.keep_behind = k;
            }
            let two = StreamsOptions { single_thread: false, ..one.clone() };
            let what = format!("seed {seed}, {conns} connections, keep_behind {keep:?}");
            let a = in_end_order(&input, one.clone());
            let b = in_end_order(&input, two.clone());
            assert_eq!(a.len(), b.len(), "{what}");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x, y, "{what}");
            }
            // Connections hashed on the reading thread (as when the hashing thread falls
            // behind): some of them, or all.
            for every in [3, 1] {
                let mixed = StreamsOptions { reader_hashes_every: Some(every), ..two.clone() };
                assert_eq!(in_end_order(&input, mixed), a, "{what}, every {every}th hashed by the reader");
            }
            let conflicts: u64 =
                a.iter().map(|c| c.to_server.overlap_conflict_bytes + c.to_client.overlap_conflict_bytes).sum();
            let gaps: u64 = a.iter().map(|c| c.to_server.gap_bytes + c.to_client.gap_bytes).sum();
            if conns >= 30 {
                // The capture does exercise what is compared.
                assert!(conflicts > 0 && gaps > 0, "{what}: conflicts {conflicts}, gaps {gaps}");
            }
            let (ra, rb) = (streams(&input, one).unwrap(), streams(&input, two.clone()).unwrap());
            assert_eq!(ra.connections, rb.connections, "{what}");
            assert_eq!(
                (ra.packets, ra.non_tcp, ra.connections_seen, ra.evicted, &ra.malformed, &ra.warning),
                (rb.packets, rb.non_tcp, rb.connections_seen, rb.evicted, &rb.malformed, &rb.warning),
                "{what}"
            );
            // Reassembly memory is this implementation's own: with a sink the reassembler
            // charges each stream for the chunks its `[base, frontier)` spans, the chunk at
            // the frontier possibly twice (one chunk per stream more, at most).
            let chunk = two.tcp.reassembly.chunk_size;
            let streams = 2 * usize::from(conns);
            assert!(
                rb.memory_high_water <= ra.memory_high_water + streams * chunk,
                "{what}: {} vs {}",
                rb.memory_high_water,
                ra.memory_high_water
            );
        }
    }
}

#[test]
fn dumps_and_cli_output_are_the_same_with_one_thread_or_two() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mix.pcap");
    hostile_mix(&input, 5, 20);
    let inp = input.to_str().unwrap();
    let (d1, d2) = (dir.path().join("d1"), dir.path().join("d2"));
    let one = mbox(dir.path(), &["streams", "--threads", "1", "--dump", d1.to_str().unwrap(), inp]);
    let two = mbox(dir.path(), &["streams", "--dump", d2.to_str().unwrap(), inp]);
    assert!(one.status.success() && two.status.success(), "{}\n{}", text(&one), text(&two));
    assert_eq!(one.stdout, two.stdout);
    // The summary on stderr too, but for the peak reassembly memory (see above).
    let summary = |o: &std::process::Output| {
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        e.split("; peak reassembly memory").next().unwrap().to_string()
    };
    assert_eq!(summary(&one), summary(&two));
    assert!(summary(&one).contains("20 TCP connections"), "{}", summary(&one));
    assert_eq!(String::from_utf8_lossy(&one.stdout).lines().count(), 20);
    let mut files: Vec<_> = std::fs::read_dir(&d1).unwrap().map(|e| e.unwrap().file_name()).collect();
    files.sort();
    assert_eq!(files.len(), 40);
    // And with every other connection hashed and dumped on the reading thread.
    let d3 = dir.path().join("d3");
    let opts = StreamsOptions { dump: Some(d3.clone()), reader_hashes_every: Some(2), ..Default::default() };
    assert_eq!(streams(&input, opts).unwrap().connections.len(), 20);
    for f in files {
        let want = std::fs::read(d1.join(&f)).unwrap();
        assert_eq!(want, std::fs::read(d2.join(&f)).unwrap(), "{f:?}");
        assert_eq!(want, std::fs::read(d3.join(&f)).unwrap(), "{f:?}");
    }
    let json1 = mbox(dir.path(), &["streams", "--json", "--threads", "1", inp]);
    let json2 = mbox(dir.path(), &["streams", "--json", inp]);
    let conns = |o: &std::process::Output| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["connections"].clone()
    };
    assert_eq!(conns(&json1), conns(&json2));
    // A bad value is refused with a clear error.
    let bad = mbox(dir.path(), &["streams", "--threads", "3", inp]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("--threads"), "{}", text(&bad));
    let help = mbox(dir.path(), &["streams", "--help"]);
    assert!(text(&help).contains("--threads"), "{}", text(&help));
}

#[test]
fn an_input_that_cannot_be_read_back_is_compared_from_a_copy() {
    // Through a FIFO the capture cannot be read again, so the reading thread keeps a copy
    // of each direction's last `keep_behind` bytes instead of file offsets: same answers.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mix.pcap");
    hostile_mix(&input, 7, 30);
    let fifo = dir.path().join("mix.fifo");
    // mkfifo is in coreutils, as the rest of what these tests run.
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for keep in [700u64, 64 << 10] {
        for every in [None, Some(2)] {
            let mut one = StreamsOptions { single_thread: true, ..Default::default() };
            one.tcp.keep_behind = keep;
            let want = in_end_order(&input, one.clone());
            let bytes = std::fs::read(&input).unwrap();
            let writer = {
                let fifo = fifo.clone();
                std::thread::spawn(move || std::fs::write(fifo, bytes))
            };
            let two = StreamsOptions { single_thread: false, reader_hashes_every: every, ..one };
            let got = in_end_order(&fifo, two);
            writer.join().unwrap().unwrap();
            assert_eq!(got, want, "keep_behind {keep}, every {every:?}");
            assert!(want.iter().any(|c| c.to_server.overlap_conflict_bytes + c.to_client.overlap_conflict_bytes > 0));
        }
    }
}

#[test]
fn errors_end_both_threads_and_name_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mix.pcap");
    hostile_mix(&input, 11, 40);
    let mut before_error = Vec::new();
    for single_thread in [true, false] {
        // The caller's error stops the run and is the one returned (not a thread's failure).
        let mut seen = 0;
        let r = streams_each(&input, StreamsOptions { single_thread, ..Default::default() }, &mut |_| {
            seen += 1;
            if seen == 3 {
                Err(microboxes::streams::StreamsError::Dump {
                    path: "stop-here".into(),
                    source: std::io::Error::other("enough"),
                })
            } else {
                Ok(())
            }
        });
        let e = r.unwrap_err().to_string();
        assert!(e.contains("stop-here") && e.contains("enough"), "{e}");
        assert_eq!(seen, 3);
        // A capture corrupt halfway: the records of connections that ended before the bad
        // record are handed over, then the reader's error names the offset.
        let mut bytes = std::fs::read(&input).unwrap();
        let half = bytes.len() / 2;
        // A record header claiming a 1 GiB frame, written over the middle of the file, is
        // corrupt wherever the record boundary lands: find the boundary by walking records.
        let mut at = 24usize;
        while at + 16 <= half {
            let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
            at += 16 + caplen;
        }
        bytes[at + 8..at + 12].copy_from_slice(&(1u32 << 30).to_le_bytes());
        let bad = dir.path().join("bad.pcap");
        std::fs::write(&bad, &bytes).unwrap();
        let mut n = 0;
        let r = streams_each(&bad, StreamsOptions { single_thread, ..Default::default() }, &mut |_| {
            n += 1;
            Ok(())
        });
        let e = r.unwrap_err().to_string();
        assert!(e.contains(&at.to_string()), "{e}");
        assert!(n < 40, "{n}");
        before_error.push(n);
    }
    assert_eq!(before_error[0], before_error[1], "records handed over before the error");
}

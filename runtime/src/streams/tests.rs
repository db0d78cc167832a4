use super::*;
use std::sync::atomic::AtomicBool;

fn byte(key: u64, dir: usize, off: u64) -> u8 {
    (key.wrapping_mul(31).wrapping_add(off.wrapping_mul(7)).wrapping_add(dir as u64 * 101) % 251) as u8
}

fn read_all(
    s: &StreamStore,
    key: u64,
    dir: usize,
    from: u64,
    to: u64,
) -> Result<Vec<Result<Vec<u8>, u64>>, StoreReadError> {
    let mut out: Vec<Result<Vec<u8>, u64>> = Vec::new();
    s.read(key, dir, from, to, &mut |p| match p {
        Piece::Data(d) => match out.last_mut() {
            Some(Ok(v)) => v.extend_from_slice(d),
            _ => out.push(Ok(d.to_vec())),
        },
        Piece::Gap(n) => out.push(Err(n)),
    })?;
    Ok(out)
}

#[test]
fn append_read_every_range() {
    let (mut w, s) = heap(StoreConfig { chunk_size: 5, chunks: 16 }).unwrap();
    let k = key(3, 9);
    let r = w.open(k).unwrap();
    w.set_present(r, 1);
    let data: Vec<u8> = (0..40u8).collect();
    // Appended in uneven pieces.
    for (a, b) in [(0, 3), (3, 4), (4, 17), (17, 40)] {
        assert!(w.append(r, 1, a, &data[a as usize..b as usize]));
        w.publish(r, 1, b);
    }
    for from in 0..=40u64 {
        for to in from..=40u64 {
            let got = read_all(&s, k, 1, from, to).unwrap();
            let flat: Vec<u8> = got.into_iter().flat_map(|p| p.unwrap()).collect();
            assert_eq!(flat, &data[from as usize..to as usize], "{from}..{to}");
        }
    }
    assert_eq!(s.read(k, 1, 0, 41, &mut |_| {}), Err(StoreReadError::NotHeld { base: 0, frontier: 40 }));
    assert_eq!(s.read(k, 1, 5, 4, &mut |_| {}), Err(StoreReadError::NotHeld { base: 0, frontier: 40 }));
    // The other direction has no stream: an empty read is fine, anything else is not held.
    assert_eq!(s.read(k, 0, 0, 0, &mut |_| {}), Ok(()));
    assert_eq!(s.read(k, 0, 0, 1, &mut |_| {}), Err(StoreReadError::NotHeld { base: 0, frontier: 0 }));
    assert_eq!(s.read(key(3, 10), 1, 0, 1, &mut |_| {}), Err(StoreReadError::NoConnection));
    assert_eq!(s.frontier(k, 1), Some(40));
    assert_eq!(w.stats().chunks_in_use, 8);
}

#[test]
fn gaps_read_as_gaps() {
    let (mut w, s) = heap(StoreConfig { chunk_size: 8, chunks: 8 }).unwrap();
    let k = key(1, 1);
    let r = w.open(k).unwrap();
    w.set_present(r, 0);
    assert!(w.append(r, 0, 0, b"abc"));
    assert!(w.append(r, 0, 10, b"xyz"));
    w.publish(r, 0, 13);
    let got = read_all(&s, k, 0, 0, 13).unwrap();
    assert_eq!(got, vec![Ok(b"abc".to_vec()), Err(7), Ok(b"xyz".to_vec())]);
    assert_eq!(read_all(&s, k, 0, 5, 11).unwrap(), vec![Err(5), Ok(b"x".to_vec())]);
    // A gap at the very start.
    let k2 = key(2, 1);
    let r2 = w.open(k2).unwrap();
    w.set_present(r2, 0);
    assert!(w.append(r2, 0, 100, b"late"));
    w.publish(r2, 0, 104);
    assert_eq!(read_all(&s, k2, 0, 0, 104).unwrap(), vec![Err(100), Ok(b"late".to_vec())]);
}

#[test]
fn released_and_reused_chunks_are_never_read() {
    let (mut w, s) = heap(StoreConfig { chunk_size: 4, chunks: 3 }).unwrap();
    let (ka, kb) = (key(1, 1), key(2, 1));
    let a = w.open(ka).unwrap();
    w.set_present(a, 0);
    assert!(w.append(a, 0, 0, b"aaaaaaaaaaaa"));
    w.publish(a, 0, 12);
    assert_eq!(w.stats().chunks_in_use, 3);
    w.release(a, 0, 9); // frees the chunks 0..4 and 4..8; base 9
    assert_eq!(w.stats().chunks_in_use, 1);
    assert_eq!(s.read(ka, 0, 8, 12, &mut |_| {}), Err(StoreReadError::NotHeld { base: 9, frontier: 12 }));
    assert_eq!(read_all(&s, ka, 0, 9, 12).unwrap(), vec![Ok(b"aaa".to_vec())]);
    // Another connection reuses the freed chunks.
    let b = w.open(kb).unwrap();
    w.set_present(b, 0);
    assert!(w.append(b, 0, 0, b"bbbbbbbb"));
    w.publish(b, 0, 8);
    assert_eq!(read_all(&s, kb, 0, 0, 8).unwrap(), vec![Ok(b"bbbbbbbb".to_vec())]);
    // The first connection closes; its key no longer reads anything.
    w.close(a);
    assert_eq!(s.read(ka, 0, 9, 12, &mut |_| {}), Err(StoreReadError::NoConnection));
    assert_eq!(w.stats().chunks_in_use, 2);
    w.close(b);
    w.close(b); // twice: no double free
    assert_eq!(w.stats().chunks_in_use, 0);
    assert!(w.open(key(5, 5)).is_some());
}

#[test]
fn exhaustion_is_counted_and_breaks_only_what_follows() {
    let (mut w, s) = heap(StoreConfig { chunk_size: 4, chunks: 2 }).unwrap();
    let k = key(1, 1);
    let r = w.open(k).unwrap();
    w.set_present(r, 0);
    assert!(!w.append(r, 0, 0, b"0123456789"));
    w.publish(r, 0, 10);
    assert_eq!(w.stats().chunks_exhausted, 1);
    assert_eq!(read_all(&s, k, 0, 0, 8).unwrap(), vec![Ok(b"01234567".to_vec())]);
    assert!(s.read(k, 0, 0, 9, &mut |_| {}).is_err());
    assert!(!w.append(r, 0, 10, b"x"), "a broken direction stays broken");
    // Records run out too (one per chunk): counted, never a panic.
    assert!(w.open(key(2, 1)).is_some());
    assert!(w.open(key(3, 1)).is_none());
    assert_eq!(w.stats().records_exhausted, 1);
}

#[test]
fn many_connections_in_one_bucket_chain() {
    // More connections than buckets' worth of spread: chains, removals from the middle.
    let (mut w, s) = heap(StoreConfig { chunk_size: 16, chunks: 64 }).unwrap();
    let mut recs = Vec::new();
    for i in 0..64u32 {
        let k = key(i % 4, i);
        let r = w.open(k).unwrap();
        w.set_present(r, 0);
        let d: Vec<u8> = (0..10).map(|o| byte(k, 0, o)).collect();
        assert!(w.append(r, 0, 0, &d));
        w.publish(r, 0, 10);
        recs.push((k, r));
    }
    for (i, &(_, r)) in recs.iter().enumerate() {
        if i % 3 == 1 {
            w.close(r);
        }
    }
    for (i, &(k, _)) in recs.iter().enumerate() {
        let got = read_all(&s, k, 0, 0, 10);
        if i % 3 == 1 {
            assert_eq!(got, Err(StoreReadError::NoConnection));
        } else {
            let want: Vec<u8> = (0..10).map(|o| byte(k, 0, o)).collect();
            assert_eq!(got.unwrap(), vec![Ok(want)]);
        }
    }
}

#[test]
fn bad_sizes_are_errors() {
    assert!(heap(StoreConfig { chunk_size: 0, chunks: 1 }).is_err());
    assert!(heap(StoreConfig { chunk_size: 1, chunks: 0 }).is_err());
    assert!(heap(StoreConfig { chunk_size: MAX_CHUNK_SIZE + 1, chunks: 1 }).is_err());
    assert_eq!(block_size(StoreConfig { chunk_size: 0, chunks: 1 }), 0);
}

#[test]
fn region_store_attaches_and_checks_its_header() {
    let region = Region::create(&format!("strm-{}", std::process::id()), 4 << 20).unwrap();
    let cfg = StoreConfig { chunk_size: 64, chunks: 32 };
    let (mut w, _) = create(&region, "tcp", cfg).unwrap();
    let r = w.open(key(1, 2)).unwrap();
    w.set_present(r, 0);
    assert!(w.append(r, 0, 0, b"shared bytes"));
    w.publish(r, 0, 12);
    let other = Region::attach(region.prefix()).unwrap();
    let s = attach(&other, "tcp").unwrap();
    assert_eq!(read_all(&s, key(1, 2), 0, 0, 12).unwrap(), vec![Ok(b"shared bytes".to_vec())]);
    let e = attach(&other, "nope").unwrap_err().to_string();
    assert!(e.contains("no block `streams.nope`"), "{e}");
    // A block that is not a store is refused by its magic.
    region.reserve("streams.fake", 4096, 64).unwrap();
    let e = attach(&other, "fake").unwrap_err().to_string();
    assert!(e.contains("magic"), "{e}");
    // A store with small first chunks (chunk_size > SMALL_CHUNK): the attached side computes
    // the same layout from the header and reads across the small and the full-size chunk.
    let (mut w, _) = create(&region, "big", StoreConfig { chunk_size: 256, chunks: 8 }).unwrap();
    let r = w.open(key(3, 4)).unwrap();
    w.set_present(r, 1);
    let data: Vec<u8> = (0..200u8).collect();
    assert!(w.append(r, 1, 0, &data));
    w.publish(r, 1, 200);
    let s = attach(&other, "big").unwrap();
    assert_eq!(read_all(&s, key(3, 4), 1, 10, 200).unwrap(), vec![Ok(data[10..].to_vec())]);
}

/// With chunks larger than [`SMALL_CHUNK`], a direction's first bytes go to a small chunk and
/// the rest to full-size ones; a direction that released everything starts small again; a
/// connection that sent a few bytes holds one small chunk and no full-size one.
#[test]
fn first_chunk_is_small() {
    let (mut w, s) = heap(StoreConfig { chunk_size: 256, chunks: 4 }).unwrap();
    let k = key(5, 1);
    let r = w.open(k).unwrap();
    w.set_present(r, 0);
    w.set_present(r, 1);
    assert_eq!(w.record_of(k), Some(r));
    assert_eq!(w.record_of(key(5, 2)), None);
    // A few bytes: one small chunk.
    assert!(w.append(r, 1, 0, b"GET / HTTP/1.0\r\n\r\n"));
    w.publish(r, 1, 18);
    assert_eq!(w.stats().chunks_in_use, 1);
    let g = s.g;
    assert_eq!(g.small, 8);
    let data: Vec<u8> = (0..700u32).map(|i| (i % 251) as u8).collect();
    // 64 bytes in the small chunk, then 256, 256 and 124 in full-size ones.
    for (a, b) in [(0usize, 10usize), (10, 64), (64, 65), (65, 700)] {
        assert!(w.append(r, 0, a as u64, &data[a..b]));
        w.publish(r, 0, b as u64);
    }
    assert_eq!(w.stats().chunks_in_use, 5);
    for from in (0..=700u64).step_by(7) {
        for to in (from..=700u64).step_by(13) {
            let got: Vec<u8> = read_all(&s, k, 0, from, to).unwrap().into_iter().flat_map(|p| p.unwrap()).collect();
            assert_eq!(got, &data[from as usize..to as usize], "{from}..{to}");
        }
    }
    // Freeing the small chunk (base past 64) leaves the rest readable and the start not.
    w.release(r, 0, 64);
    assert_eq!(w.stats().chunks_in_use, 4);
    assert!(s.read(k, 0, 63, 65, &mut |_| {}).is_err());
    assert_eq!(read_all(&s, k, 0, 64, 700).unwrap(), vec![Ok(data[64..].to_vec())]);
    // Everything released: the next bytes start in a small chunk again.
    w.release(r, 0, 700);
    assert_eq!(w.stats().chunks_in_use, 1);
    assert!(w.append(r, 0, 700, &data[..100]));
    w.publish(r, 0, 800);
    assert_eq!(w.stats().chunks_in_use, 3);
    assert_eq!(read_all(&s, k, 0, 700, 800).unwrap(), vec![Ok(data[..100].to_vec())]);
    // A gap starts a full-size chunk (the direction holds one).
    assert!(w.append(r, 1, 100, b"after a gap"));
    w.publish(r, 1, 111);
    assert_eq!(
        read_all(&s, k, 1, 0, 111).unwrap(),
        vec![Ok(b"GET / HTTP/1.0\r\n\r\n".to_vec()), Err(82), Ok(b"after a gap".to_vec())]
    );
    w.close(r);
    assert_eq!(w.record_of(k), None);
    assert_eq!(w.stats().chunks_in_use, 0);
    assert_eq!(s.read(k, 0, 700, 701, &mut |_| {}), Err(StoreReadError::NoConnection));
    // The freed chunks are reused (small for first chunks), and every record's pool still works.
    for i in 0..4 {
        let r = w.open(key(10 + i, 1)).unwrap();
        w.set_present(r, 0);
        assert!(w.append(r, 0, 0, &data[..300]));
        w.publish(r, 0, 300);
    }
    assert!(w.open(key(20, 1)).is_none());
    assert_eq!(w.stats().records_exhausted, 1);
    // 4 small chunks and 4 full-size ones (64 + 236 bytes each): the pool's full-size chunks
    // are all in use now, so a fifth stream's second chunk would break it.
    assert_eq!(w.stats().chunks_in_use, 8);
    for i in 0..4 {
        assert_eq!(read_all(&s, key(10 + i, 1), 0, 0, 300).unwrap(), vec![Ok(data[..300].to_vec())]);
    }
    assert_eq!(w.stats().chunks_exhausted, 0);
}

/// A writer appends many streams and frees what a reader has finished with (reclamation by
/// reader progress, as the TCP monitor does by TX progress), reusing chunks all the time; one
/// reader reads every byte of every stream, in published pieces, and checks each; a second
/// reader reads stale and random ranges, which may fail but must never give a wrong byte.
#[test]
fn concurrent_reader_checks_every_byte_while_writer_reclaims() {
    concurrent_run(64);
}

/// The same with chunks larger than [`SMALL_CHUNK`]: every direction that holds no chunk
/// (its start, and again each time its reader released all it held) starts in a small chunk,
/// so small and full-size chunks are reused under the reader all the time.
#[test]
fn concurrent_reader_checks_small_first_chunks() {
    concurrent_run(160);
}

fn concurrent_run(chunk_size: u32) {
    const STREAMS: u64 = 400;
    const LEN: u64 = 3000;
    let (mut w, s) = heap(StoreConfig { chunk_size, chunks: 96 }).unwrap();
    // The writer publishes (stream, frontier) events through a channel; the reader answers
    // with how far it has read (its "TX progress").
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, u64, u64)>(64);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (s, done) = (s.clone(), done.clone());
        std::thread::spawn(move || {
            let mut checked = 0u64;
            let mut n = 0u64;
            while let Ok((k, from, to)) = rx.recv() {
                let mut at = from;
                s.read(k, 0, from, to, &mut |p| match p {
                    Piece::Data(d) => {
                        for &b in d {
                            assert_eq!(b, byte(k, 0, at), "key {k:#x} offset {at}");
                            at += 1;
                        }
                    }
                    Piece::Gap(_) => panic!("no gaps written"),
                })
                .unwrap_or_else(|e| panic!("live range {from}..{to} of {k:#x}: {e}"));
                assert_eq!(at, to);
                checked += to - from;
                n += 1;
                done.store(n, Ordering::Release);
            }
            checked
        })
    };
    let stale = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut ok, mut x) = (0u64, 12345u64);
            while !stop.load(Ordering::Acquire) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let k = key((x >> 40) as u32 % STREAMS as u32, 1);
                let from = (x >> 8) % LEN;
                let to = (from + (x >> 20) % 200).min(LEN);
                let mut at = from;
                if s.read(k, 0, from, to, &mut |p| match p {
                    Piece::Data(d) => {
                        for &b in d {
                            assert_eq!(b, byte(k, 0, at), "stale read of {k:#x} at {at}");
                            at += 1;
                        }
                    }
                    Piece::Gap(n) => panic!("stale read of {k:#x} at {at}: a gap of {n} where none was written"),
                })
                .is_ok()
                {
                    ok += 1;
                }
            }
            ok
        })
    };
    // Three streams live at a time; each written in pieces; released by reader progress.
    let mut sent = 0u64;
    let mut pending: std::collections::VecDeque<(u64, RecordId, u64, bool)> = Default::default();
    let mut live: Vec<(u64, RecordId, u64)> = Vec::new();
    let mut next_stream = 0u64;
    let mut spins = 0u64;
    let mut step = 0u64;
    while next_stream < STREAMS || !live.is_empty() {
        while live.len() < 3 && next_stream < STREAMS {
            let k = key(next_stream as u32, 1);
            let Some(r) = w.open(k) else { break };
            w.set_present(r, 0);
            live.push((k, r, 0));
            next_stream += 1;
        }
        // Reclaim what the reader finished.
        let d = done.load(Ordering::Acquire);
        while pending.front().is_some_and(|p| p.0 < d) {
            let (_, r, to, last) = pending.pop_front().unwrap();
            if last {
                w.close(r);
            } else {
                w.release(r, 0, to);
            }
        }
        if live.is_empty() {
            spins += 1;
            assert!(spins < 50_000_000, "writer starved: records never came back");
            std::thread::yield_now();
            continue;
        }
        step += 1;
        let i = (step % live.len() as u64) as usize;
        let (k, r, f) = live[i];
        let n = (1 + (step * 37) % 150).min(LEN - f);
        let bytes: Vec<u8> = (f..f + n).map(|o| byte(k, 0, o)).collect();
        if w.stats().chunks_in_use + 4 > 96 {
            // Wait for the reader rather than exhaust the pool (the monitor refuses instead).
            spins += 1;
            assert!(spins < 50_000_000, "writer starved: chunks never came back");
            std::thread::yield_now();
            continue;
        }
        assert!(w.append(r, 0, f, &bytes));
        w.publish(r, 0, f + n);
        tx.send((k, f, f + n)).unwrap();
        let last = f + n == LEN;
        pending.push_back((sent, r, f + n, last));
        sent += 1;
        if last {
            live.swap_remove(i);
        } else {
            live[i].2 = f + n;
        }
    }
    drop(tx);
    let checked = reader.join().unwrap();
    stop.store(true, Ordering::Release);
    let stale_ok = stale.join().unwrap();
    assert_eq!(checked, STREAMS * LEN);
    assert_eq!(w.stats().chunks_exhausted, 0);
    eprintln!("checked {checked} bytes in {sent} reads; {stale_ok} stale reads succeeded (all correct)");
}

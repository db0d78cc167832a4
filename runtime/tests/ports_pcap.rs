//! Tests of the pcap / pcapng reader and the pcap writer against hand-built files.

use runtime::ports::{LinkType, PcapReader, PcapWriter, PortError, ReaderStats};

/// (ts_ns, data, orig_len) of one frame.
type Frame = (u64, Vec<u8>, u32);

/// Reads every frame (bounded), returning the frames and the stats.
fn read_all(r: &mut PcapReader) -> Result<(Vec<Frame>, ReaderStats), PortError> {
    let mut out = Vec::new();
    for _ in 0..1_000_000 {
        match r.next_packet()? {
            Some(p) => out.push((p.ts_ns, p.data.to_vec(), p.orig_len)),
            None => return Ok((out, r.stats())),
        }
    }
    panic!("reader did not end");
}

fn frame(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 7 + k * 13) as u8).collect()
}

// ---- hand-built legacy pcap ----

fn u32b(v: u32, be: bool) -> [u8; 4] {
    if be {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    }
}

fn legacy_header(be: bool, nanos: bool, snaplen: u32, linktype: u32) -> Vec<u8> {
    let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    let mut v = Vec::new();
    v.extend_from_slice(&u32b(magic, be));
    if be {
        v.extend_from_slice(&2u16.to_be_bytes());
        v.extend_from_slice(&4u16.to_be_bytes());
    } else {
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
    }
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&u32b(snaplen, be));
    v.extend_from_slice(&u32b(linktype, be));
    v
}

fn legacy_record(v: &mut Vec<u8>, be: bool, sec: u32, frac: u32, data: &[u8], orig: u32) {
    v.extend_from_slice(&u32b(sec, be));
    v.extend_from_slice(&u32b(frac, be));
    v.extend_from_slice(&u32b(data.len() as u32, be));
    v.extend_from_slice(&u32b(orig, be));
    v.extend_from_slice(data);
}

// ---- hand-built pcapng ----

fn block(be: bool, btype: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while body.len() & 3 != 0 {
        body.push(0);
    }
    let len = 12 + body.len() as u32;
    let mut v = Vec::new();
    v.extend_from_slice(&u32b(btype, be));
    v.extend_from_slice(&u32b(len, be));
    v.extend_from_slice(&body);
    v.extend_from_slice(&u32b(len, be));
    v
}

fn shb(be: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&u32b(0x1a2b_3c4d, be));
    if be {
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&0u16.to_be_bytes());
    } else {
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
    }
    body.extend_from_slice(&[0xff; 8]); // section length unknown
    block(be, 0x0a0d_0d0a, &body)
}

fn opt(be: bool, code: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    if be {
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        v.extend_from_slice(&code.to_le_bytes());
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    v.extend_from_slice(value);
    while v.len() & 3 != 0 {
        v.push(0);
    }
    v
}

fn idb(be: bool, linktype: u16, snaplen: u32, tsresol: Option<u8>, tsoffset: Option<i64>) -> Vec<u8> {
    let mut body = Vec::new();
    if be {
        body.extend_from_slice(&linktype.to_be_bytes());
    } else {
        body.extend_from_slice(&linktype.to_le_bytes());
    }
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&u32b(snaplen, be));
    let mut any = false;
    if let Some(r) = tsresol {
        body.extend_from_slice(&opt(be, 9, &[r]));
        any = true;
    }
    if let Some(o) = tsoffset {
        let b = if be { o.to_be_bytes() } else { o.to_le_bytes() };
        body.extend_from_slice(&opt(be, 14, &b));
        any = true;
    }
    if any {
        body.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
    }
    block(be, 1, &body)
}

fn epb(be: bool, if_id: u32, ts: u64, data: &[u8], orig: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&u32b(if_id, be));
    body.extend_from_slice(&u32b((ts >> 32) as u32, be));
    body.extend_from_slice(&u32b(ts as u32, be));
    body.extend_from_slice(&u32b(data.len() as u32, be));
    body.extend_from_slice(&u32b(orig, be));
    body.extend_from_slice(data);
    block(be, 6, &body)
}

fn spb(be: bool, data: &[u8], orig: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&u32b(orig, be));
    body.extend_from_slice(data);
    block(be, 3, &body)
}

// ---- writer → reader round trips ----

#[test]
fn roundtrip_in_memory() {
    let mut w = PcapWriter::to_vec(LinkType::Ethernet);
    let mut expect = Vec::new();
    for i in 0..200usize {
        let data = frame(i, 14 + (i * 37) % 1500);
        let ts = 1_700_000_000_123_456_789 + (i as u64) * 1_001;
        let orig = data.len() as u32 + (i % 3 == 0) as u32 * 10;
        w.write(ts, &data, orig).unwrap();
        expect.push((ts, data, orig));
    }
    assert_eq!(w.packets(), 200);
    let bytes = w.into_inner().unwrap();
    let mut r = PcapReader::from_bytes("mem", bytes.clone()).unwrap();
    assert_eq!(r.link_type(), LinkType::Ethernet);
    assert_eq!(r.total_bytes(), Some(bytes.len() as u64));
    let (got, stats) = read_all(&mut r).unwrap();
    assert_eq!(got, expect);
    assert_eq!(stats.packets, 200);
    assert_eq!(stats.bytes, expect.iter().map(|e| e.1.len() as u64).sum::<u64>());
    assert_eq!(stats.snaplen_clipped, expect.iter().filter(|e| e.1.len() < e.2 as usize).count() as u64);
    assert!(!stats.truncated_tail);
    assert_eq!(r.bytes_read(), bytes.len() as u64);
    // Finished readers stay finished.
    assert!(r.next_packet().unwrap().is_none());
}

fn temp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mbox-ports-{}-{}.pcap", tag, std::process::id()))
}

#[test]
fn roundtrip_file_larger_than_buffer() {
    let path = temp_path("big");
    let mut w = PcapWriter::create(&path, LinkType::RawIp).unwrap();
    let mut expect = Vec::new();
    // ~5 MiB, several times the reader's initial buffer, plus one maximal frame.
    for i in 0..3500usize {
        let len = if i == 1234 { 262_144 } else { 1 + (i * 101) % 1514 };
        let data = frame(i, len);
        w.write(i as u64 * 1_000_000_007, &data, len as u32).unwrap();
        expect.push((i as u64 * 1_000_000_007, data, len as u32));
    }
    assert_eq!(w.finish().unwrap(), 3500);
    let mut r = PcapReader::open(&path).unwrap();
    assert_eq!(r.link_type(), LinkType::RawIp);
    let total = std::fs::metadata(&path).unwrap().len();
    assert_eq!(r.total_bytes(), Some(total));
    let (got, _) = read_all(&mut r).unwrap();
    assert_eq!(r.bytes_read(), total);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect);
}

#[test]
fn writer_limits() {
    let mut w = PcapWriter::to_vec(LinkType::LinuxSll);
    assert!(matches!(w.write(0, &vec![0; 262_145], 262_145), Err(PortError::FrameTooLarge { len: 262_145, .. })));
    // Seconds past 2106 do not fit the format.
    assert!(w.write(u64::MAX, &[1], 1).is_err());
    // orig_len below the captured length is raised to it.
    w.write(5, &[1, 2, 3], 1).unwrap();
    let bytes = w.into_inner().unwrap();
    assert_eq!(&bytes[..4], &0xa1b2_3c4du32.to_le_bytes());
    assert_eq!(&bytes[16..20], &262_144u32.to_le_bytes());
    assert_eq!(&bytes[20..24], &113u32.to_le_bytes());
    let mut r = PcapReader::from_bytes("mem", bytes).unwrap();
    assert_eq!(r.link_type(), LinkType::LinuxSll);
    let p = r.next_packet().unwrap().unwrap();
    assert_eq!((p.ts_ns, p.data, p.orig_len), (5, &[1u8, 2, 3][..], 3));
}

#[test]
fn empty_writer_gives_valid_empty_capture() {
    let bytes = PcapWriter::to_vec(LinkType::Ethernet).into_inner().unwrap();
    assert_eq!(bytes.len(), 24);
    let mut r = PcapReader::from_bytes("empty", bytes).unwrap();
    assert!(r.next_packet().unwrap().is_none());
    assert_eq!(r.stats(), ReaderStats::default());
}

// ---- legacy pcap variants ----

fn check_legacy(be: bool, nanos: bool) {
    let mut v = legacy_header(be, nanos, 65535, 1);
    legacy_record(&mut v, be, 1_600_000_000, 123_456, &frame(1, 60), 60);
    legacy_record(&mut v, be, 1_600_000_001, 999_999, &frame(2, 100), 1500);
    let mut r = PcapReader::from_bytes("legacy", v).unwrap();
    let (got, stats) = read_all(&mut r).unwrap();
    let mul = if nanos { 1 } else { 1_000 };
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (1_600_000_000_000_000_000 + 123_456 * mul, frame(1, 60), 60));
    assert_eq!(got[1], (1_600_000_001_000_000_000 + 999_999 * mul, frame(2, 100), 1500));
    assert_eq!(stats.snaplen_clipped, 1);
}

#[test]
fn legacy_microseconds_little_endian() {
    check_legacy(false, false);
}

#[test]
fn legacy_microseconds_big_endian() {
    check_legacy(true, false);
}

#[test]
fn legacy_nanoseconds_big_endian() {
    check_legacy(true, true);
}

#[test]
fn legacy_unsupported_link_type() {
    let v = legacy_header(false, false, 65535, 147);
    match PcapReader::from_bytes("x", v) {
        Err(PortError::UnsupportedLinkType { linktype: 147, .. }) => {}
        other => panic!("{other:?}"),
    }
    for (n, lt) in [(101, LinkType::RawIp), (228, LinkType::RawIp), (229, LinkType::RawIp), (113, LinkType::LinuxSll)] {
        let r = PcapReader::from_bytes("x", legacy_header(true, false, 0, n)).unwrap();
        assert_eq!(r.link_type(), lt);
        assert_eq!(LinkType::from_pcap(lt.to_pcap()), Some(lt));
    }
}

// ---- pcapng ----

#[test]
fn pcapng_resolutions_offsets_and_skipped_blocks() {
    for be in [false, true] {
        let mut v = shb(be);
        v.extend(block(be, 4, &[0, 0, 0, 0])); // name resolution block, end of records
        v.extend(idb(be, 1, 0, None, None)); // if 0: microseconds (default)
        v.extend(idb(be, 1, 65535, Some(9), None)); // if 1: nanoseconds
        v.extend(idb(be, 1, 0, Some(0x80 | 10), Some(100))); // if 2: 1/1024 s, +100 s
        v.extend(spb(be, &frame(0, 20), 20)); // before any EPB: timestamp 0
        v.extend(epb(be, 0, 1_500_000_000_000_001, &frame(1, 61), 61));
        v.extend(block(be, 0x0000_0099, &[1, 2, 3, 4])); // unknown block
        v.extend(epb(be, 1, 1_500_000_000_000_000_002, &frame(2, 62), 100));
        v.extend(epb(be, 2, 2048 + 512, &frame(3, 63), 63));
        v.extend(spb(be, &frame(4, 64), 64)); // inherits the previous timestamp
        let mut r = PcapReader::from_bytes("ng", v).unwrap();
        assert_eq!(r.link_type(), LinkType::Ethernet);
        let (got, stats) = read_all(&mut r).unwrap();
        let ts: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            ts,
            [0, 1_500_000_000_000_001_000, 1_500_000_000_000_000_002, 102_500_000_000, 102_500_000_000],
            "be={be}"
        );
        for (i, g) in got.iter().enumerate() {
            let want = if i == 0 { frame(0, 20) } else { frame(i, 60 + i) };
            assert_eq!(g.1, want, "frame {i} be={be}");
        }
        assert_eq!(got[2].2, 100);
        assert_eq!(stats.skipped_blocks, 2);
        assert_eq!(stats.snaplen_clipped, 1);
        assert_eq!(stats.packets, 5);
        assert!(!stats.truncated_tail);
    }
}

#[test]
fn pcapng_simple_packet_clipped_to_snaplen() {
    let mut v = shb(false);
    v.extend(idb(false, 101, 32, None, None));
    v.extend(spb(false, &frame(0, 40), 40));
    let mut r = PcapReader::from_bytes("ng", v).unwrap();
    assert_eq!(r.link_type(), LinkType::RawIp);
    let (got, stats) = read_all(&mut r).unwrap();
    assert_eq!(got, vec![(0, frame(0, 32), 40)]);
    assert_eq!(stats.snaplen_clipped, 1);
}

#[test]
fn pcapng_second_section_changes_byte_order() {
    let mut v = shb(false);
    v.extend(idb(false, 1, 0, Some(9), None));
    v.extend(epb(false, 0, 7, &frame(0, 60), 60));
    v.extend(shb(true));
    v.extend(idb(true, 1, 0, Some(9), None));
    v.extend(epb(true, 0, 9, &frame(1, 60), 60));
    let mut r = PcapReader::from_bytes("ng", v).unwrap();
    let (got, _) = read_all(&mut r).unwrap();
    assert_eq!(got, vec![(7, frame(0, 60), 60), (9, frame(1, 60), 60)]);
}

#[test]
fn pcapng_mixed_link_types() {
    let mut v = shb(false);
    v.extend(idb(false, 1, 0, None, None));
    v.extend(epb(false, 0, 7, &frame(0, 60), 60));
    v.extend(idb(false, 113, 0, None, None));
    v.extend(epb(false, 1, 8, &frame(1, 60), 60));
    let mut r = PcapReader::from_bytes("ng", v).unwrap();
    assert!(r.next_packet().unwrap().is_some());
    match r.next_packet() {
        Err(e @ PortError::MixedLinkTypes { first: 1, other: 113, .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("1 and 113"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.next_packet().unwrap().is_none());
}

#[test]
fn pcapng_unsupported_link_type_and_missing_interface() {
    let mut v = shb(false);
    v.extend(idb(false, 147, 0, None, None));
    assert!(matches!(PcapReader::from_bytes("ng", v), Err(PortError::UnsupportedLinkType { linktype: 147, .. })));

    let mut v = shb(false);
    let epb_offset = v.len() as u64;
    v.extend(epb(false, 0, 7, &frame(0, 60), 60));
    match PcapReader::from_bytes("ng", v) {
        Err(PortError::Corrupt { offset, .. }) => assert_eq!(offset, epb_offset),
        other => panic!("{other:?}"),
    }

    let mut v = shb(false);
    v.extend(idb(false, 1, 0, None, None));
    let epb_offset = v.len() as u64;
    v.extend(epb(false, 3, 7, &frame(0, 60), 60));
    let mut r = PcapReader::from_bytes("ng", v).unwrap();
    match r.next_packet() {
        Err(PortError::Corrupt { offset, .. }) => assert_eq!(offset, epb_offset),
        other => panic!("{other:?}"),
    }

    // A section with no interface at all has no link type.
    assert!(matches!(PcapReader::from_bytes("ng", shb(false)), Err(PortError::NotACapture { .. })));
}

// ---- damaged input ----

#[test]
fn truncated_legacy_file_ends_cleanly() {
    let mut w = PcapWriter::to_vec(LinkType::Ethernet);
    for i in 0..10 {
        w.write(i * 1000, &frame(i as usize, 100), 100).unwrap();
    }
    let full = w.into_inner().unwrap();
    let rec = 16 + 100;
    // Cut inside the 8th record's data, inside its header, and exactly at a boundary.
    for (cut, packets, truncated) in
        [(24 + 7 * rec + 50, 7, true), (24 + 7 * rec + 5, 7, true), (24 + 7 * rec, 7, false)]
    {
        let mut r = PcapReader::from_bytes("cut", full[..cut].to_vec()).unwrap();
        let (got, stats) = read_all(&mut r).unwrap();
        assert_eq!(got.len(), packets, "cut {cut}");
        assert_eq!(stats.truncated_tail, truncated, "cut {cut}");
        assert_eq!(got[6], (6000, frame(6, 100), 100));
    }
}

#[test]
fn truncated_pcapng_file_ends_cleanly() {
    let mut v = shb(false);
    v.extend(idb(false, 1, 0, None, None));
    v.extend(epb(false, 0, 1, &frame(0, 60), 60));
    let keep = v.len();
    v.extend(epb(false, 0, 2, &frame(1, 60), 60));
    for cut in [keep + 6, keep + 40, v.len() - 1] {
        let mut r = PcapReader::from_bytes("cut", v[..cut].to_vec()).unwrap();
        let (got, stats) = read_all(&mut r).unwrap();
        assert_eq!(got.len(), 1);
        assert!(stats.truncated_tail);
    }
}

#[test]
fn garbage_is_not_a_capture() {
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xd4, 0xc3],
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec(),
        (0..4096u32).map(|i| (i * 31 % 251) as u8).collect(),
        legacy_header(false, false, 65535, 1)[..20].to_vec(),
        shb(false)[..20].to_vec(),
    ];
    for c in cases {
        match PcapReader::from_bytes("junk", c.clone()) {
            Err(e @ PortError::NotACapture { .. }) => assert!(e.to_string().starts_with("junk: ")),
            other => panic!("{:?} for {:?}", other.map(|_| ()), &c[..c.len().min(8)]),
        }
    }
}

#[test]
fn missing_file_is_io_error() {
    let p = std::path::Path::new("/nonexistent/dir/x.pcap");
    assert!(matches!(PcapReader::open(p), Err(PortError::Io { .. })));
    assert!(matches!(PcapWriter::create(p, LinkType::Ethernet), Err(PortError::Io { .. })));
}

#[test]
fn absurd_caplen_is_corrupt_with_offset() {
    let mut v = legacy_header(false, false, 262_144, 1);
    legacy_record(&mut v, false, 1, 0, &frame(0, 60), 60);
    let bad = v.len() as u64;
    // caplen 0x40000000, no data behind it.
    v.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 60, 0, 0, 0]);
    v.extend_from_slice(&[0; 64]);
    let mut r = PcapReader::from_bytes("bad", v).unwrap();
    assert!(r.next_packet().unwrap().is_some());
    match r.next_packet() {
        Err(e @ PortError::Corrupt { .. }) => {
            let PortError::Corrupt { offset, .. } = &e else { unreachable!() };
            assert_eq!(*offset, bad);
            assert!(e.to_string().contains(&format!("offset {bad}")), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.next_packet().unwrap().is_none());

    // Within 256 KiB but far beyond the snap length.
    let mut v = legacy_header(true, false, 96, 1);
    legacy_record(&mut v, true, 1, 0, &frame(0, 96), 1500);
    legacy_record(&mut v, true, 1, 0, &frame(0, 9000), 9000);
    let mut r = PcapReader::from_bytes("bad", v).unwrap();
    assert!(r.next_packet().unwrap().is_some());
    assert!(matches!(r.next_packet(), Err(PortError::Corrupt { offset: 136, .. })));

    // pcapng: an absurd block length, and an EPB whose caplen exceeds its block.
    let mut v = shb(false);
    v.extend(idb(false, 1, 0, None, None));
    let off = v.len() as u64;
    v.extend_from_slice(&6u32.to_le_bytes());
    v.extend_from_slice(&0x7fff_fff0u32.to_le_bytes());
    v.extend_from_slice(&[0; 64]);
    let mut r = PcapReader::from_bytes("bad", v).unwrap();
    assert!(matches!(r.next_packet(), Err(PortError::Corrupt { offset, .. }) if offset == off));

    let mut v = shb(false);
    v.extend(idb(false, 1, 0, None, None));
    let mut b = epb(false, 0, 1, &frame(0, 60), 60);
    b[20..24].copy_from_slice(&5000u32.to_le_bytes()); // caplen
    v.extend(b);
    let mut r = PcapReader::from_bytes("bad", v).unwrap();
    assert!(matches!(r.next_packet(), Err(PortError::Corrupt { .. })));
}

// ---- robustness: mutated captures never panic and always end ----

#[test]
fn mutated_captures_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let mut w = PcapWriter::to_vec(LinkType::Ethernet);
    for i in 0..6 {
        w.write(i * 77, &frame(i as usize, 40 + i as usize), 60).unwrap();
    }
    seeds.push(w.into_inner().unwrap());
    let mut v = legacy_header(true, false, 64, 101);
    legacy_record(&mut v, true, 1, 2, &frame(0, 64), 1500);
    seeds.push(v);
    for be in [false, true] {
        let mut v = shb(be);
        v.extend(block(be, 4, &[0, 0, 0, 0]));
        v.extend(idb(be, 1, 128, Some(9), Some(-3)));
        v.extend(epb(be, 0, 99, &frame(1, 30), 30));
        v.extend(spb(be, &frame(2, 24), 24));
        v.extend(idb(be, 1, 0, Some(0x83), None));
        v.extend(epb(be, 1, 1 << 40, &frame(3, 17), 17));
        seeds.push(v);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    for round in 0..5_000 {
        let mut d = seeds[round % seeds.len()].clone();
        for _ in 0..rng.gen_range(1..6) {
            let len = d.len();
            match rng.gen_range(0..5) {
                0 if len > 0 => d[rng.gen_range(0..len)] ^= 1 << rng.gen_range(0..8),
                1 if len > 0 => d[rng.gen_range(0..len)] = rng.gen(),
                2 => d.truncate(rng.gen_range(0..=len)),
                3 if len >= 4 => {
                    // Overwrite a 32-bit field with an interesting value.
                    let at = rng.gen_range(0..=len - 4) & !3;
                    let val: u32 = [0, 1, 0xffff_ffff, 0x8000_0000, 0x40000, 12, 28, 32][rng.gen_range(0..8)];
                    d[at..at + 4].copy_from_slice(&val.to_le_bytes());
                }
                _ => {
                    let at = rng.gen_range(0..=len);
                    let extra: Vec<u8> = (0..rng.gen_range(1..32)).map(|_| rng.gen()).collect();
                    d.splice(at..at, extra);
                }
            }
        }
        let total = d.len() as u64;
        if let Ok(mut r) = PcapReader::from_bytes("m", d) {
            let mut n = 0;
            while let Ok(Some(_)) = r.next_packet() {
                n += 1;
                assert!(n <= total / 12 + 1, "reader does not progress");
            }
            assert!(r.bytes_read() <= total);
            assert!(r.next_packet().unwrap().is_none());
        }
    }
}

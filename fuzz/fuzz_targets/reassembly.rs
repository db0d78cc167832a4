//! Fuzz target for the TCP bytestream reassembler.
//!
//! Input: a 6-byte header (first sequence number, chunk size, limits, policy), then ops of 4
//! bytes or more — insert (sequence offset, length, fill byte), release, finish, clear — run on
//! two streams sharing a small budget. Checked after every op: the frontier never moves
//! backwards and only passes holes in `finish`, the base never passes the frontier, memory
//! stays within the out-of-order bound plus what was not released, the budget matches the
//! streams' memory and its limit, and what is readable equals a shadow copy of the stream.
//!
//! Run on stable: `cargo fuzz run --sanitizer none reassembly`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacks::reassembly::{Budget, ByteStream, Chunk, OverlapPolicy, ReassemblyConfig};

/// What the stream must hold, byte by byte, from offset 0 (bounded by the input size).
struct Shadow {
    bytes: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (head, mut ops) = data.split_at(6);
    let first_seq = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let cfg = ReassemblyConfig {
        chunk_size: usize::from(head[4] % 64) + 1,
        max_ooo_bytes: usize::from(head[5] & 0x0f) * 64,
        max_ooo_segments: usize::from(head[5] >> 4),
        max_ahead: 4096,
        depth: if head[4] & 0x80 != 0 { Some(3000) } else { None },
        overlap: if head[4] & 0x40 != 0 { OverlapPolicy::Last } else { OverlapPolicy::First },
    };
    let cs = cfg.chunk_size;
    let mut budget = Budget::with_limit(16 * 1024);
    let mut streams = [ByteStream::new(first_seq, &cfg), ByteStream::new(!first_seq, &cfg)];
    let mut shadows = [Shadow { bytes: Vec::new() }, Shadow { bytes: Vec::new() }];
    let ooo_bound = (cfg.max_ooo_bytes.div_ceil(cs) + 2) * cs;
    let mut steps = 0;
    while ops.len() >= 4 && steps < 10_000 {
        steps += 1;
        let (op, rest) = ops.split_at(4);
        ops = rest;
        let which = usize::from(op[0] & 1);
        let s = &mut streams[which];
        let shadow = &mut shadows[which];
        let before = s.frontier();
        match op[0] >> 1 & 7 {
            0..=4 => {
                // Insert: a signed offset around the frontier (wide or near), length, fill.
                let near = i64::from(i16::from_le_bytes([op[1], op[2]])) / 8;
                let wide = i64::from(i16::from_le_bytes([op[1], op[2]])) << 16;
                let rel = if op[0] & 0x10 != 0 { wide } else { near };
                let len = usize::from(op[3]) * 4;
                let fill = op[0] >> 5;
                let seq = s.frontier_seq().wrapping_add(rel as u32);
                // The payload: `fill` selects a pattern; pattern 0 is the shadow's own
                // bytes where known (a consistent retransmission).
                let start = before as i64 + rel;
                let payload: Vec<u8> = (0..len)
                    .map(|i| {
                        let off = start + i as i64;
                        match fill {
                            0 => usize::try_from(off)
                                .ok()
                                .and_then(|o| shadow.bytes.get(o).copied())
                                .unwrap_or(off as u8),
                            f => (off as u8).wrapping_mul(f),
                        }
                    })
                    .collect();
                let ins = s.insert(seq, &payload, &mut budget);
                assert!(ins.duplicate + ins.conflicting + ins.old <= len as u64);
                assert_eq!(ins.advanced, s.frontier() - before);
                if ins.refused.is_some() && ins.refused != Some(stacks::reassembly::Refused::Depth) {
                    assert_eq!(ins.advanced, 0);
                    assert_eq!(ins.new_ooo, 0);
                }
            }
            5 => {
                let to = s.frontier() * u64::from(op[1]) / 255;
                s.release_until(to, &mut budget);
            }
            6 => {
                let f = s.finish(&mut budget);
                assert_eq!(s.frontier(), before + f.delivered + f.gap_bytes);
                assert_eq!(s.ooo_bytes(), 0);
            }
            _ => {
                if op[1] == 0 {
                    s.clear(&mut budget);
                    assert_eq!(s.memory(), 0);
                }
            }
        }
        let f = s.frontier();
        assert!(f >= before, "frontier moved backwards");
        assert!(s.base() <= f);
        assert_eq!(s.stats().bytes, f);
        if let Some(d) = cfg.depth {
            assert!(f <= d);
        }
        assert!(s.ooo_bytes() <= cfg.max_ooo_bytes);
        assert!(s.ooo_ranges() <= cfg.max_ooo_segments);
        // Held in order: from the chunk of the base to the chunk of the last byte.
        let chunks = f.div_ceil(cs as u64).saturating_sub(s.base() / cs as u64);
        let in_order = chunks as usize * cs;
        assert!(s.memory() <= in_order + ooo_bound, "memory {} > {} + {}", s.memory(), in_order, ooo_bound);
        // The bytes readable now must match the shadow where it knows them; newly delivered
        // bytes extend it (a gap skipped by `finish` is a `Chunk::Gap` of its length: the
        // shadow holds zeros there).
        let b = s.base();
        let mut got = Vec::new();
        for c in s.read(b, f).expect("[base, frontier) is readable") {
            match c {
                Chunk::Data(d) => got.extend_from_slice(d),
                Chunk::Gap(n) => got.resize(got.len() + n as usize, 0),
            }
        }
        assert_eq!(got.len() as u64, f - b);
        let known = shadow.bytes.len() as u64;
        for (i, byte) in got.iter().enumerate() {
            let off = b + i as u64;
            if off < known {
                assert_eq!(*byte, shadow.bytes[off as usize], "byte below the frontier changed");
            }
        }
        // The shadow is extended after every op and releases never pass the frontier, so
        // nothing is released before it was shadowed.
        assert!(b <= known);
        if f > known {
            shadow.bytes.extend_from_slice(&got[(known - b) as usize..]);
        }
        assert_eq!(budget.used, streams.iter().map(ByteStream::memory).sum::<usize>());
        assert!(budget.used <= budget.limit, "finish allocates nothing; inserts respect it");
    }
    for s in &mut streams {
        s.clear(&mut budget);
    }
    assert_eq!(budget.used, 0);
});

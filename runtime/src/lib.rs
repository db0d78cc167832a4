//! Memory and execution for Microboxes.
//!
//! Everything above this crate (actors, µStacks, network functions) is plain safe Rust that
//! moves small descriptors between actors. This crate provides where those descriptors and
//! the packets they name live, and where the actors run:
//!
//! * [`shm`] — one shared-memory [`Region`](shm::Region) per run (a file under `/dev/shm`),
//!   carved into named blocks. Nothing in it is a pointer, so another process can attach to
//!   it by prefix and map it anywhere.
//! * [`pool`] — fixed-size packet buffers in the region, named by a 4-byte
//!   [`PacketHandle`](pool::PacketHandle), with reference counts and a free list. A packet is
//!   copied once, on the way in.
//! * [`ring`] — bounded single-producer/single-consumer rings of `Copy` descriptors in the
//!   region; handles that cannot be cloned, burst operations, every refusal counted.
//! * [`coremap`] and [`executor`] — which core each actor runs on (a TOML file, checked
//!   against the application and the machine), and one pinned thread per core that polls its
//!   actors round-robin.
//! * [`sys`] — CPU affinity, thread ids, the effective uid, file space; [`ports`] — packet
//!   sources and sinks (pcap and pcapng reader, pcap writer, traffic generator).
//! * [`trace`] — the trace recorder's spans, kept in per-stage buffers with no lock.
//! * [`files`] — reading user-written files (app, core map, rules) with size and type limits.
//!
//! Unsafe code is confined to `shm`, `ring`, `pool` and `sys`, each block with a `// SAFETY:`
//! comment; every other module, and every crate above this one, is safe code.
//!
//! ```
//! use runtime::{pool, ring, shm::Region};
//!
//! // One region for the run; the file is removed when the last handle drops.
//! let region = Region::create(&format!("doc-lib-{}", std::process::id()), 1 << 20)?;
//! let (mut alloc, mut release, view) = pool::create(&region, "pkts", 64, 2048)?;
//! let (mut tx, mut rx) = ring::create::<pool::PacketHandle>(&region, "rx-to-fw", 64)?;
//!
//! // The RX side copies a packet into the pool and sends its handle ...
//! let h = alloc.alloc(b"\x45\x00 an IPv4 packet")?;
//! tx.push(h).expect("ring has room");
//!
//! // ... the NF side reads it in place, then hands the buffer back.
//! let got = rx.pop().expect("one handle");
//! assert_eq!(&view.data(got)[..2], b"\x45\x00");
//! assert!(release.release(got));
//! assert!(view.stats().balanced());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cells;
pub mod coremap;
pub mod doorbell;
pub mod executor;
pub mod files;
pub mod pool;
pub mod ports;
pub mod ring;
pub mod shm;
pub mod streams;
pub mod sys;
pub mod test_support;
pub mod trace;

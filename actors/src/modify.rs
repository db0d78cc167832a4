//! Bytestream modification in the middle, without terminating the connection: what a
//! network function asks of the TCP monitor ([`Context::modify_stream`](crate::Context::modify_stream)).
//!
//! Offsets are **stream offsets** of one direction of a connection — the same numbers as
//! the `[aux, frontier)` of a `DATA_RDY` event (0 is the first byte after the SYN) — always
//! in the *original* stream, the one the NF reads. The TCP monitor (with
//! `[stack.tcp.modify]`) keeps a modification list per direction, rewrites the bytes it
//! forwards, remaps sequence and acknowledgment numbers, and answers retransmissions with
//! the same rewritten bytes (docs/modification.md).
//!
//! * [`StreamChange::Replace`] — replace `len` bytes at `at` with `with` (`len = 0` inserts,
//!   an empty `with` removes). Changes of one direction must not overlap, and must lie at or
//!   after what the monitor already forwarded ([`ModifyError::TooLate`]).
//! * [`StreamChange::HoldFrom`] — bytes before `from` are judged; `[from, seen)` waits: the NF
//!   saw the start of a pattern it can only judge with the next segment's bytes. Each
//!   `HoldFrom` replaces the previous one of the direction; [`StreamChange::Release`] lifts it.
//!   The monitor forwards held bytes itself after its `hold_timeout_ms` (never bytes past
//!   `seen` that no NF has seen), and at the sender's FIN.
//!
//! **Per-flow upgrade** (`[stack.tcp.modify] upgrade = "on_request"`): flows start on the
//! cheap path (frames forwarded as received, no modification state); an NF moves one to the
//! modification path with [`Context::upgrade_flow`](crate::Context::upgrade_flow). The
//! monitor takes the request at its next packet; from then on the flow's bytes past what
//! it already forwarded — [`Context::modifiable_from`](crate::Context::modifiable_from) —
//! may be changed; bytes before stay as they left.

/// One change to a direction's bytestream (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamChange {
    /// Replace `[at, at + len)` of the original stream with `with`.
    Replace {
        /// First original byte replaced (or where `with` is inserted when `len` is 0).
        at: u64,
        /// Original bytes replaced (0: insert).
        len: u64,
        /// What the receiver gets instead (empty: remove).
        with: Vec<u8>,
    },
    /// Bytes before `from` are judged (every change for them was asked): forward them; hold
    /// `[from, seen)` — bytes the NF has seen (`seen`: its event's frontier) but cannot judge
    /// yet — until the next `HoldFrom` of this direction (or the monitor's timeout).
    HoldFrom {
        /// First byte held.
        from: u64,
        /// End of the bytes the NF has seen.
        seen: u64,
    },
    /// Lift the direction's hold.
    Release,
}

/// Why a change was refused. The stream is then forwarded as if the change was never asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModifyError {
    /// No TCP monitor with `[stack.tcp.modify]` in this run (or the NF runs in another
    /// process, where the monitor's lists are not reachable).
    #[error("stream modification needs the TCP monitor with [stack.tcp.modify], in the same process")]
    NotEnabled,
    /// The connection is not one the monitor forwards itself (unknown, ended, midstream,
    /// not Ethernet/IPv4, or given up after a limit).
    #[error("connection is not being forwarded by the modifying TCP monitor")]
    NotModifiable,
    /// The bytes at `at` were already forwarded (up to `forwarded`).
    #[error("bytes from {at} were already forwarded (up to {forwarded})")]
    TooLate {
        /// Where the change starts.
        at: u64,
        /// Original bytes forwarded so far.
        forwarded: u64,
    },
    /// The change overlaps another change of the same direction.
    #[error("change at {at} overlaps another change")]
    Overlap {
        /// Where the change starts.
        at: u64,
    },
    /// The direction's list or its held bytes are full (`max_changes`, `max_insert_bytes`).
    #[error("the direction's modification list is full ({0})")]
    Limit(&'static str),
}

//! A deterministic traffic generator: seeded TCP and UDP flows, interleaved, as Ethernet
//! frames, with a summary of exactly what was written.
//!
//! # Contract
//!
//! [`generate`] writes every frame through a sink `(ts_ns, frame)` in timestamp order and
//! returns a [`GenSummary`]. The same [`GenConfig`] always yields byte-identical output
//! (everything is drawn from one ChaCha8 stream seeded with `cfg.seed`, in a fixed order).
//! The summary's per-flow packet, frame-byte and payload-byte counts equal what the sink
//! received; tests recount them by parsing the frames.
//!
//! # The traffic
//!
//! * **Frames:** Ethernet II, 802.1Q-tagged for a `vlan_fraction` of the flows (VLAN id
//!   1..=4094), carrying IPv4 (TTL 64) or, for an `ipv6_fraction` of the flows, IPv6 (hop
//!   limit 64). IP, TCP and UDP checksums are correct. MAC addresses are locally
//!   administered and derived from the IP addresses (`02:00:…` clients, `02:01:…` servers).
//! * **Addresses:** IPv4 clients in 192.0.2.0/24 and 198.51.100.0/24, IPv4 servers in
//!   203.0.113.0/24 (hosts .1–.254); IPv6 clients in 2001:db8:0:1::/64, IPv6 servers in
//!   2001:db8:0:113::/64. Flow `i` (0-based) uses client port `1024 + i`, so no two flows
//!   share a 5-tuple and ports are never reused within a run; that bounds a run at
//!   [`MAX_FLOWS`] flows. Servers listen on 80 (HTTP), 443 (TLS), 22 (SSH) and 53 (UDP).
//! * **Traffic mix** ([`GenApp`]): each flow is UDP (DNS-like) with probability
//!   `udp_fraction`; a TCP flow is TLS or SSH so that, in expectation, `tls_fraction` and
//!   `ssh_fraction` of *all* flows are (both default to 0), and HTTP otherwise. The choice
//!   among TCP applications is drawn from a separate stream, so with both fractions 0 the
//!   output is byte-identical to the generator before they existed.
//! * **HTTP flows** (TCP, port 80): SYN, SYN-ACK (both with an MSS option),
//!   ACK, with seeded initial sequence numbers of which a quarter lie within 4 KiB below
//!   2^32, so sequence numbers wrap inside the flow. Then `requests_per_flow` HTTP/1.1
//!   keep-alive exchanges: a `GET /obj/<n>` request of `request_size` bytes (its headers
//!   padded by an `X-Pad` header; a request is never shorter than its mandatory headers),
//!   cut into MSS-sized segments with PSH on the last, acknowledged by the server; then a
//!   `200 OK` response with `Content-Length: <n>` and a body of `response_size` bytes of
//!   deterministic data, cut into MSS segments with PSH on the last, acknowledged by the
//!   client after every second segment and after the last. Teardown: with probability
//!   `rst_fraction` a RST (with ACK) from a random side; otherwise FIN from a random side,
//!   its ACK, FIN from the other side, and the final ACK. Sequence and acknowledgment
//!   numbers follow TCP's modular arithmetic (SYN and FIN count one).
//! * **TLS flows** (TCP, port 443; handshake and teardown as HTTP's): a TLS 1.3-style
//!   ClientHello record with the SNI `f<id>.example.net` (x25519 key share, three cipher
//!   suites); the server's flight: a ServerHello record, ChangeCipherSpec and one
//!   application-data record of 800..=4000 bytes standing for the encrypted certificate;
//!   the client's ChangeCipherSpec and a 53-byte Finished record; then `requests_per_flow`
//!   exchanges: one application-data record of `request_size` bytes from the client and a
//!   response of `response_size` bytes in records of at most 16,384 bytes (5-byte record
//!   headers added), each record sent as its own MSS-cut message.
//! * **SSH flows** (TCP, port 22): the client's banner `SSH-2.0-OpenSSH_9.6 mbox-gen`, the
//!   server's `SSH-2.0-OpenSSH_9.2p1 Debian-2`, then `requests_per_flow` exchanges of binary
//!   packets (a 4-byte length, then opaque bytes): `request_size` bytes from the client, a
//!   response of `response_size` bytes in packets of at most 32,768 bytes.
//! * **UDP flows:** one to three DNS-like query/response pairs (a standard A query for
//!   `q<k>.f<id>.example.com` and an answer with one A record), client port → 53.
//!   `requests` counts the queries; `teardown` is `"none"`.
//! * **Response sizes** (`response_size = (MIN, MAX)`: HTTP bodies, and the TLS and SSH
//!   responses) are uniform over the range by default; with `response_size_dist =
//!   "log_uniform"` ([`SizeDist::LogUniform`], `mbox gen --response-size MIN~MAX`) they are
//!   log-uniform by octaves: `size + 1` falls in each power-of-two octave of
//!   `MIN + 1..=MAX + 1` equally often (uniformly within it), so a capture has many small
//!   transfers and a few large ones — over 100~1000000, about a quarter of the responses in
//!   each decade. The uniform draw is the generator's original one.
//! * **Interleaving and time:** up to `concurrency` flows are active at once; each step
//!   picks one active flow uniformly and emits its next packet; a finished flow is replaced
//!   by the next new one. The first frame is stamped `start_ts_ns`; each later frame 1 to
//!   200 µs (uniform, whole microseconds) after the previous one, so timestamps strictly
//!   increase.
//! * **Impairment** (`loss`, `reorder`, `duplicate`, probabilities per TCP data segment,
//!   default 0; `mbox gen --loss P --reorder P --duplicate P`): a segment *lost* before the
//!   capture point is seen only later, as its retransmission, after the next segment of its
//!   direction (a hole) and 0–2 more packets of the flow; a *reordered* segment is seen right
//!   after the next segment of its direction; a *duplicated* one (lost after the capture
//!   point) is seen, then 0–3 packets of the flow later again, identical. While the receiver
//!   misses a segment its ACKs acknowledge only up to it; SYN, FIN, RST, pure ACKs and UDP
//!   are never impaired, and a held-back segment is always sent before the next SYN, FIN or
//!   RST and before the peer's next data. A reassembler rebuilds exactly the byte streams of
//!   the unimpaired configuration: impairment is drawn from a stream of its own, and a duplicate
//!   is written right after the packet before it with its time gap from that stream, so the
//!   main stream — flows and their interleaving — draws as without impairment. The summary
//!   counts every frame written, duplicates included, and how many segments were lost,
//!   reordered and duplicated ([`GenSummary::lost`], …; per flow too) — fewer than the
//!   probabilities times the segments, as a message's last segment cannot be lost or
//!   reordered (no later segment to show first). With all three 0
//!   nothing is drawn and the output is byte-identical to the generator before the options
//!   existed. `gen/impair.rs` tells the details.
//!
//! * **Attacks** (`attacks = N`, default 0): N HTTP flows carry one attack string each, in
//!   their first request (or first response), matching one rule of the example rule set
//!   `apps/ids.rules`: [`Attack::HttpAdmin`] (`GET /admin/…`, sid 1000001),
//!   [`Attack::PasswdAccess`] (`?file=../../etc/passwd`, sid 1000002), [`Attack::SqlInjection`]
//!   (`?id=1+UNION+SELECT+…`, sid 1000003) and [`Attack::ShellPrompt`] (a `root@…` line in the
//!   response, sid 1000004), in that order, cycling. The carriers are spread over the run:
//!   attack `k` goes to the first HTTP flow at or after a seeded position in the `k`-th of N
//!   equal slices of the flow ids (fewer are planted when a slice's tail has no HTTP flow;
//!   [`GenSummary::attacks`] counts them). Positions are drawn from a second stream, so
//!   `attacks = 0` gives exactly the traffic of a generator without the option (with
//!   attacks, a carrier's longer messages may take more segments, which changes the
//!   interleaving of the flows after it). Each carrier's [`GenFlow::attack`] names its attack.
//!   TLS and SSH flows never carry one: the rules look at HTTP requests and responses, and
//!   a matcher told to inspect only HTTP flows (`after_dpi = "http"`) must see every attack.
//!
//! # Invariants and policies
//!
//! * Memory is bounded by the active flows' plans (a few words per packet) and their
//!   message headers; response bodies are computed on the fly, never stored.
//! * [`GenConfig::validate`] lists every problem with a configuration. [`generate`] does not
//!   fail or panic on an invalid one: it clamps each value into its valid range (fractions
//!   and probabilities into [0, 1], NaN to 0, `loss + reorder + duplicate` scaled down to 1,
//!   reversed ranges swapped, `mss` into 64..=9000, `concurrency` to at least 1, `flows` to
//!   at most [`MAX_FLOWS`], sizes to their maxima). Callers that take a configuration from a
//!   user should validate it first.
//! * The only errors are the sink's, returned as they come; frames written before the
//!   error stay written.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{PacketBuilder, PacketBuilderStep, TcpOptionElement, VlanId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod impair;
use impair::{Impaired, Impairer};

/// Most flows in one run (client ports 1024..=65535, never reused).
pub const MAX_FLOWS: usize = 65536 - 1024;
/// Largest MSS accepted.
pub const MAX_MSS: u16 = 9000;
/// Largest HTTP request size accepted.
pub const MAX_REQUEST_SIZE: u32 = 1 << 20;
/// Largest HTTP response body accepted.
pub const MAX_RESPONSE_SIZE: u32 = 1 << 30;
/// Most HTTP requests per TCP connection accepted.
pub const MAX_REQUESTS_PER_FLOW: u32 = 100_000;

const TCP_WINDOW: u16 = 64_240;
const HTTP_PORT: u16 = 80;
const TLS_PORT: u16 = 443;
const SSH_PORT: u16 = 22;
const DNS_PORT: u16 = 53;
/// Largest TLS record payload (RFC 8446 §5.1).
const TLS_MAX_RECORD: usize = 16_384;
/// Largest SSH binary packet the generator writes.
const SSH_MAX_PACKET: usize = 32_768;
const FIRST_CLIENT_PORT: u16 = 1024;

/// The generator's configuration. Every field has a default; unknown keys are errors.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenConfig {
    /// Total flows (TCP + UDP).
    pub flows: usize,
    /// Seed of the random stream; the same configuration always gives the same bytes.
    pub seed: u64,
    /// Share of the flows that are UDP (DNS-like).
    pub udp_fraction: f64,
    /// Share of the flows that are TLS connections (port 443); default 0.
    pub tls_fraction: f64,
    /// Share of the flows that are SSH connections (port 22); default 0. The rest of the
    /// TCP flows (`1 - udp_fraction - tls_fraction - ssh_fraction`) are HTTP.
    pub ssh_fraction: f64,
    /// Share of the TCP connections torn down by RST instead of FIN.
    pub rst_fraction: f64,
    /// Share of the flows over IPv6.
    pub ipv6_fraction: f64,
    /// Share of the flows that are 802.1Q-tagged.
    pub vlan_fraction: f64,
    /// Keep-alive HTTP requests per TCP connection (inclusive range).
    pub requests_per_flow: (u32, u32),
    /// HTTP request size in bytes, headers included (inclusive range).
    pub request_size: (u32, u32),
    /// HTTP response body size in bytes (inclusive range); also the size of each TLS and
    /// SSH response. Drawn as `response_size_dist` says.
    pub response_size: (u32, u32),
    /// How response sizes are drawn from `response_size`: uniformly (the default) or
    /// log-uniformly (many small, a few large; see the module docs).
    pub response_size_dist: SizeDist,
    /// TCP maximum segment size: the most payload bytes per segment.
    pub mss: u16,
    /// Flows active at once, interleaved.
    pub concurrency: usize,
    /// Timestamp of the first frame, nanoseconds since the epoch.
    pub start_ts_ns: u64,
    /// HTTP flows that carry an attack string of the example rules (see the module docs).
    pub attacks: usize,
    /// Probability that a TCP data segment is lost before the capture point and
    /// retransmitted (see the module docs); default 0.
    pub loss: f64,
    /// Probability that a TCP data segment is swapped with the next one of its direction;
    /// default 0.
    pub reorder: f64,
    /// Probability that a TCP data segment appears twice (lost after the capture point and
    /// retransmitted); default 0. `loss + reorder + duplicate` is at most 1.
    pub duplicate: f64,
}

/// How sizes are drawn from an inclusive range `(MIN, MAX)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeDist {
    /// Every size equally likely (`mbox gen --response-size MIN-MAX`).
    #[default]
    Uniform,
    /// Log-uniform by octaves (`MIN~MAX`): `size + 1` falls in each power-of-two octave
    /// `[(MIN+1)·2^k, (MIN+1)·2^(k+1))` of the range equally often, uniformly within it
    /// (the top octave in proportion to the part inside the range). Many small sizes, a few
    /// large ones.
    LogUniform,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            flows: 100,
            seed: 1,
            udp_fraction: 0.1,
            tls_fraction: 0.0,
            ssh_fraction: 0.0,
            rst_fraction: 0.2,
            ipv6_fraction: 0.1,
            vlan_fraction: 0.0,
            requests_per_flow: (1, 3),
            request_size: (100, 600),
            response_size: (0, 20_000),
            mss: 1460,
            concurrency: 32,
            start_ts_ns: 1_700_000_000_000_000_000,
            attacks: 0,
            response_size_dist: SizeDist::Uniform,
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
        }
    }
}

impl GenConfig {
    /// Checks every field; the error lists all problems, separated by `"; "`.
    pub fn validate(&self) -> Result<(), String> {
        let mut errs = Vec::new();
        for (name, v) in [
            ("udp_fraction", self.udp_fraction),
            ("tls_fraction", self.tls_fraction),
            ("ssh_fraction", self.ssh_fraction),
            ("rst_fraction", self.rst_fraction),
            ("ipv6_fraction", self.ipv6_fraction),
            ("vlan_fraction", self.vlan_fraction),
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                errs.push(format!("{name} must be in [0, 1], not {v}"));
            }
        }
        for (name, (lo, hi), max) in [
            ("requests_per_flow", self.requests_per_flow, MAX_REQUESTS_PER_FLOW),
            ("request_size", self.request_size, MAX_REQUEST_SIZE),
            ("response_size", self.response_size, MAX_RESPONSE_SIZE),
        ] {
            if lo > hi {
                errs.push(format!("{name}: minimum {lo} exceeds maximum {hi}"));
            }
            if hi > max {
                errs.push(format!("{name}: maximum {hi} exceeds the limit {max}"));
            }
        }
        let mix = self.udp_fraction + self.tls_fraction + self.ssh_fraction;
        if mix > 1.0 + 1e-9 {
            errs.push(format!(
                "udp_fraction + tls_fraction + ssh_fraction must be at most 1, not {mix} \
                 (the rest of the flows are HTTP)"
            ));
        }
        let impair = self.loss + self.reorder + self.duplicate;
        if impair > 1.0 + 1e-9 {
            errs.push(format!(
                "loss + reorder + duplicate must be at most 1, not {impair} (each data segment draws at most one)"
            ));
        }
        if !(64..=MAX_MSS).contains(&self.mss) {
            errs.push(format!("mss must be in 64..={MAX_MSS}, not {}", self.mss));
        }
        if self.concurrency < 1 {
            errs.push("concurrency must be at least 1".to_string());
        }
        if self.flows > MAX_FLOWS {
            errs.push(format!("flows must be at most {MAX_FLOWS} (client ports are not reused), not {}", self.flows));
        }
        if self.attacks > self.flows {
            errs.push(format!("attacks must be at most flows ({}), not {}", self.flows, self.attacks));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// The `mbox gen` options that make this configuration (`--flows` and `--seed` always,
    /// the others where they differ from the default), e.g. for a benchmark to print how to
    /// reproduce its capture. `start_ts_ns` has no option: it is left out.
    pub fn cli_args(&self) -> Vec<String> {
        let d = GenConfig::default();
        let mut out = vec![format!("--flows {}", self.flows), format!("--seed {}", self.seed)];
        for (flag, v, dv) in [
            ("--udp-fraction", self.udp_fraction, d.udp_fraction),
            ("--tls-fraction", self.tls_fraction, d.tls_fraction),
            ("--ssh-fraction", self.ssh_fraction, d.ssh_fraction),
            ("--rst-fraction", self.rst_fraction, d.rst_fraction),
            ("--ipv6-fraction", self.ipv6_fraction, d.ipv6_fraction),
            ("--vlan-fraction", self.vlan_fraction, d.vlan_fraction),
            ("--loss", self.loss, d.loss),
            ("--reorder", self.reorder, d.reorder),
            ("--duplicate", self.duplicate, d.duplicate),
        ] {
            if v != dv {
                out.push(format!("{flag} {v}"));
            }
        }
        let range = |(a, b): (u32, u32), sep: char| if a == b { a.to_string() } else { format!("{a}{sep}{b}") };
        for (flag, v, dv) in [
            ("--requests-per-flow", self.requests_per_flow, d.requests_per_flow),
            ("--request-size", self.request_size, d.request_size),
        ] {
            if v != dv {
                out.push(format!("{flag} {}", range(v, '-')));
            }
        }
        let log = self.response_size_dist == SizeDist::LogUniform;
        if self.response_size != d.response_size || log {
            let (a, b) = self.response_size;
            let r = if log { format!("{a}~{b}") } else { range((a, b), '-') };
            out.push(format!("--response-size {r}"));
        }
        if self.mss != d.mss {
            out.push(format!("--mss {}", self.mss));
        }
        if self.concurrency != d.concurrency {
            out.push(format!("--concurrency {}", self.concurrency));
        }
        if self.attacks != d.attacks {
            out.push(format!("--attacks {}", self.attacks));
        }
        out
    }

    /// A copy with every value clamped into its valid range (see the module docs).
    fn sanitized(&self) -> GenConfig {
        let frac = |v: f64| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        let range = |(a, b): (u32, u32), max: u32| (a.min(b).min(max), a.max(b).min(max));
        let udp = frac(self.udp_fraction);
        let (mut tls, mut ssh) = (frac(self.tls_fraction), frac(self.ssh_fraction));
        if udp + tls + ssh > 1.0 {
            // Scale the TCP applications down to what UDP leaves.
            let k = (1.0 - udp) / (tls + ssh);
            (tls, ssh) = (tls * k, ssh * k);
        }
        let (mut loss, mut reorder, mut duplicate) = (frac(self.loss), frac(self.reorder), frac(self.duplicate));
        let impair = loss + reorder + duplicate;
        if impair > 1.0 {
            (loss, reorder, duplicate) = (loss / impair, reorder / impair, duplicate / impair);
        }
        GenConfig {
            flows: self.flows.min(MAX_FLOWS),
            seed: self.seed,
            udp_fraction: udp,
            tls_fraction: tls,
            ssh_fraction: ssh,
            rst_fraction: frac(self.rst_fraction),
            ipv6_fraction: frac(self.ipv6_fraction),
            vlan_fraction: frac(self.vlan_fraction),
            requests_per_flow: range(self.requests_per_flow, MAX_REQUESTS_PER_FLOW),
            request_size: range(self.request_size, MAX_REQUEST_SIZE),
            response_size: range(self.response_size, MAX_RESPONSE_SIZE),
            mss: self.mss.clamp(64, MAX_MSS),
            concurrency: self.concurrency.max(1),
            start_ts_ns: self.start_ts_ns,
            attacks: self.attacks.min(self.flows.min(MAX_FLOWS)),
            response_size_dist: self.response_size_dist,
            loss,
            reorder,
            duplicate,
        }
    }
}

/// The application protocol of a generated flow (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenApp {
    /// HTTP/1.1 keep-alive exchanges, server port 80.
    Http,
    /// A TLS handshake (ClientHello with SNI) and application-data records, port 443.
    Tls,
    /// SSH banners and binary packets, port 22.
    Ssh,
    /// DNS-like UDP query/response pairs, port 53.
    Dns,
}

impl GenApp {
    /// The server's port.
    pub fn port(self) -> u16 {
        match self {
            GenApp::Http => HTTP_PORT,
            GenApp::Tls => TLS_PORT,
            GenApp::Ssh => SSH_PORT,
            GenApp::Dns => DNS_PORT,
        }
    }

    /// The name DPI reports for it (Suricata's `app_proto`): `http`, `tls`, `ssh`, `dns`.
    pub fn name(self) -> &'static str {
        match self {
            GenApp::Http => "http",
            GenApp::Tls => "tls",
            GenApp::Ssh => "ssh",
            GenApp::Dns => "dns",
        }
    }
}

/// An attack string planted in a flow (see the module docs); each matches one rule of
/// `apps/ids.rules`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    /// The first request is `GET /admin/obj/<n>` (sid 1000001).
    HttpAdmin,
    /// The first request's URI ends in `?file=../../etc/passwd` (sid 1000002).
    PasswdAccess,
    /// The first request's URI ends in `?id=1+UNION+SELECT+password+FROM+users` (sid 1000003).
    SqlInjection,
    /// The first response has a header line `root@gen: 1` (sid 1000004, to the client).
    ShellPrompt,
}

impl Attack {
    /// The attacks in the order they are planted.
    pub const ALL: [Attack; 4] = [Attack::HttpAdmin, Attack::PasswdAccess, Attack::SqlInjection, Attack::ShellPrompt];

    /// The `sid` of the rule in `apps/ids.rules` that this attack triggers.
    pub fn sid(self) -> u32 {
        match self {
            Attack::HttpAdmin => 1_000_001,
            Attack::PasswdAccess => 1_000_002,
            Attack::SqlInjection => 1_000_003,
            Attack::ShellPrompt => 1_000_004,
        }
    }
}

/// An attack as recorded in the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenAttack {
    pub kind: Attack,
    /// The rule it triggers in `apps/ids.rules`.
    pub sid: u32,
}

/// What was written for one flow. Directions are from the client's point of view.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenFlow {
    /// Index of the flow, 0-based, in creation order.
    pub id: u64,
    /// `"tcp"` or `"udp"`.
    pub proto: String,
    /// The application protocol (`"dns"` for every UDP flow).
    pub app: GenApp,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// 802.1Q VLAN id, if tagged.
    pub vlan: Option<u16>,
    pub pkts_toserver: u64,
    pub pkts_toclient: u64,
    /// Frame bytes as written (Ethernet header included).
    pub bytes_toserver: u64,
    pub bytes_toclient: u64,
    /// TCP/UDP payload bytes.
    pub payload_toserver: u64,
    pub payload_toclient: u64,
    /// Exchanges: HTTP requests, TLS or SSH request/response pairs, or DNS queries (UDP).
    pub requests: u32,
    /// `"fin"`, `"rst"` or `"none"` (UDP).
    pub teardown: String,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    /// The attack string this flow carries, if any (`attacks`); absent from JSON when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack: Option<GenAttack>,
    /// Data segments lost before the capture point (each written once, later, as its
    /// retransmission); absent from JSON when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost: u64,
    /// Data segments written after the next segment of their direction; absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reordered: u64,
    /// Data segments written twice (the copy is counted in the packets and bytes above);
    /// absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub duplicated: u64,
}

/// Totals and per-flow records of one run; `flows` is sorted by `id`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenSummary {
    pub packets: u64,
    pub bytes: u64,
    pub flows: Vec<GenFlow>,
    /// Flows that carry an attack; absent from JSON when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attacks: u64,
    /// Data segments lost before the capture point, over all flows; absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost: u64,
    /// Data segments reordered, over all flows; absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reordered: u64,
    /// Data segments duplicated, over all flows; absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub duplicated: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

// ---- flow plans ----

/// A message whose byte `i` is `head[i]`, then `body_len` bytes of deterministic data.
struct Msg {
    head: Vec<u8>,
    body_len: usize,
    body_seed: u64,
}

impl Msg {
    fn len(&self) -> usize {
        self.head.len() + self.body_len
    }

    fn copy_range(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        for i in off..off + len {
            out.push(match self.head.get(i) {
                Some(&b) => b,
                None => body_byte(self.body_seed, (i - self.head.len()) as u64),
            });
        }
    }
}

fn body_byte(seed: u64, i: u64) -> u8 {
    let x = (i ^ seed).wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (x >> 56) as u8
}

#[derive(Clone, Copy)]
struct Flags {
    syn: bool,
    fin: bool,
    rst: bool,
    psh: bool,
}

const NO_FLAGS: Flags = Flags { syn: false, fin: false, rst: false, psh: false };

#[derive(Clone, Copy)]
enum Kind {
    Tcp { seq: u32, ack: Option<u32>, flags: Flags },
    Udp,
}

/// One planned packet; its payload is `msgs[msg][off..off + len]`.
#[derive(Clone, Copy)]
struct Pkt {
    to_server: bool,
    kind: Kind,
    msg: usize,
    off: usize,
    len: usize,
    /// A duplicate added by impairment: written right after the packet before it, outside
    /// the main schedule (see `impair`).
    extra: bool,
}

struct Flow {
    rec: GenFlow,
    client_mac: [u8; 6],
    server_mac: [u8; 6],
    vlan: Option<VlanId>,
    mss: u16,
    msgs: Vec<Msg>,
    plan: VecDeque<Pkt>,
}

/// Planner state for one TCP connection: both sides' next sequence numbers.
struct TcpPlan<'a> {
    plan: &'a mut VecDeque<Pkt>,
    cn: u32,
    sn: u32,
    /// Maximum segment size: the most payload bytes per segment.
    mss: usize,
}

impl TcpPlan<'_> {
    fn push(&mut self, to_server: bool, flags: Flags, ack: bool, msg: usize, off: usize, len: usize) {
        let (seq, peer) = if to_server { (self.cn, self.sn) } else { (self.sn, self.cn) };
        let kind = Kind::Tcp { seq, ack: ack.then_some(peer), flags };
        self.plan.push_back(Pkt { to_server, kind, msg, off, len, extra: false });
        let used = len as u32 + u32::from(flags.syn) + u32::from(flags.fin);
        if to_server {
            self.cn = self.cn.wrapping_add(used);
        } else {
            self.sn = self.sn.wrapping_add(used);
        }
    }

    /// Sends message `msg` (of `total` bytes) in MSS segments, PSH on the last; when
    /// `ack_every_two`, the receiver acknowledges every second segment and the last,
    /// otherwise once after the last.
    fn send(&mut self, to_server: bool, msg: usize, total: usize, ack_every_two: bool) {
        let mss = self.mss;
        let segments = total.div_ceil(mss);
        for k in 0..segments {
            let off = k * mss;
            let len = mss.min(total - off);
            let last = k + 1 == segments;
            let flags = Flags { psh: last, ..NO_FLAGS };
            self.push(to_server, flags, true, msg, off, len);
            if last || (ack_every_two && k % 2 == 1) {
                self.push(!to_server, NO_FLAGS, true, 0, 0, 0);
            }
        }
    }
}

fn pick_isn(rng: &mut ChaCha8Rng) -> u32 {
    if rng.gen_bool(0.25) {
        u32::MAX - rng.gen_range(0..4096)
    } else {
        rng.gen()
    }
}

fn client_ip(rng: &mut ChaCha8Rng, v6: bool) -> IpAddr {
    if v6 {
        let host: u32 = rng.gen_range(1..=u32::MAX);
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, (host >> 16) as u16, host as u16))
    } else {
        let host: u8 = rng.gen_range(1..=254);
        if rng.gen_bool(0.5) {
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, host))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, host))
        }
    }
}

fn server_ip(rng: &mut ChaCha8Rng, v6: bool) -> IpAddr {
    let host: u8 = rng.gen_range(1..=254);
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0x113, 0, 0, 0, u16::from(host)))
    } else {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, host))
    }
}

fn mac_for(prefix: u8, ip: IpAddr) -> [u8; 6] {
    let o = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let s = a.octets();
            [s[12], s[13], s[14], s[15]]
        }
    };
    [0x02, prefix, o[0], o[1], o[2], o[3]]
}

/// Chooses the flows that carry attacks, from its own random stream.
struct Attacker {
    rng: ChaCha8Rng,
    /// Flow ids per attack slice.
    stride: usize,
    /// Attacks planted so far.
    planted: usize,
    /// Attacks wanted.
    wanted: usize,
    /// The next carrier is the first TCP flow with an id at or after this.
    next_at: usize,
}

impl Attacker {
    fn new(cfg: &GenConfig) -> Attacker {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xa77a_c4ed_5eed_0001);
        let stride = cfg.flows.checked_div(cfg.attacks).unwrap_or(1).max(1);
        let next_at = rng.gen_range(0..stride);
        Attacker { rng, stride, planted: 0, wanted: cfg.attacks, next_at }
    }

    /// The attack HTTP flow `id` carries, if it is chosen as a carrier.
    fn pick(&mut self, id: usize) -> Option<Attack> {
        if self.planted >= self.wanted || id < self.next_at {
            return None;
        }
        let attack = Attack::ALL[self.planted % Attack::ALL.len()];
        self.planted += 1;
        // The next slice starts after this one, and after this flow.
        let slice = (self.planted * self.stride).max(id + 1);
        self.next_at = slice + self.rng.gen_range(0..self.stride);
        Some(attack)
    }
}

/// Chooses each TCP flow's application, from its own random stream.
struct Mixer {
    rng: ChaCha8Rng,
    /// Probability that a TCP flow is TLS, and that it is TLS or SSH.
    tls: f64,
    tls_or_ssh: f64,
}

impl Mixer {
    fn new(cfg: &GenConfig) -> Mixer {
        let tcp = 1.0 - cfg.udp_fraction;
        let (tls, ssh) = if tcp > 0.0 { (cfg.tls_fraction / tcp, cfg.ssh_fraction / tcp) } else { (0.0, 0.0) };
        Mixer { rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6d69_7865_645f_7463), tls, tls_or_ssh: tls + ssh }
    }

    fn pick(&mut self) -> GenApp {
        let u: f64 = self.rng.gen();
        if u < self.tls {
            GenApp::Tls
        } else if u < self.tls_or_ssh {
            GenApp::Ssh
        } else {
            GenApp::Http
        }
    }
}

fn new_flow(
    id: usize,
    cfg: &GenConfig,
    rng: &mut ChaCha8Rng,
    mixer: &mut Mixer,
    attacker: &mut Attacker,
    impairer: Option<&mut Impairer>,
) -> Flow {
    let udp = rng.gen_bool(cfg.udp_fraction);
    let v6 = rng.gen_bool(cfg.ipv6_fraction);
    let vlan_id = rng.gen_bool(cfg.vlan_fraction).then(|| rng.gen_range(1..=4094u16));
    let cip = client_ip(rng, v6);
    let sip = server_ip(rng, v6);
    // id < MAX_FLOWS, so the port stays within 1024..=65535.
    let cport = FIRST_CLIENT_PORT.wrapping_add(id as u16);
    let app = if udp { GenApp::Dns } else { mixer.pick() };
    let mut flow = Flow {
        rec: GenFlow {
            id: id as u64,
            proto: if udp { "udp" } else { "tcp" }.to_string(),
            app,
            client: SocketAddr::new(cip, cport),
            server: SocketAddr::new(sip, app.port()),
            vlan: vlan_id,
            pkts_toserver: 0,
            pkts_toclient: 0,
            bytes_toserver: 0,
            bytes_toclient: 0,
            payload_toserver: 0,
            payload_toclient: 0,
            requests: 0,
            teardown: "none".to_string(),
            first_ts_ns: 0,
            last_ts_ns: 0,
            attack: None,
            lost: 0,
            reordered: 0,
            duplicated: 0,
        },
        client_mac: mac_for(0x00, cip),
        server_mac: mac_for(0x01, sip),
        vlan: vlan_id.and_then(|v| VlanId::try_new(v).ok()),
        mss: cfg.mss,
        // msgs[0] is the empty message used by packets without payload.
        msgs: vec![Msg { head: Vec::new(), body_len: 0, body_seed: 0 }],
        plan: VecDeque::new(),
    };
    match app {
        GenApp::Dns => plan_udp(&mut flow, rng),
        GenApp::Http => {
            let attack = attacker.pick(id);
            flow.rec.attack = attack.map(|kind| GenAttack { kind, sid: kind.sid() });
            plan_tcp(&mut flow, cfg, rng, app, attack);
        }
        GenApp::Tls | GenApp::Ssh => plan_tcp(&mut flow, cfg, rng, app, None),
    }
    if let (Some(impairer), false) = (impairer, udp) {
        let Impaired { lost, reordered, duplicated } = impairer.impair(&mut flow.plan);
        (flow.rec.lost, flow.rec.reordered, flow.rec.duplicated) = (lost, reordered, duplicated);
    }
    flow
}

/// A response size drawn from `cfg.response_size` as `cfg.response_size_dist` says. The
/// uniform draw is the generator's original one (same stream, same result).
fn response_size(cfg: &GenConfig, rng: &mut ChaCha8Rng) -> usize {
    let (lo, hi) = cfg.response_size;
    match cfg.response_size_dist {
        SizeDist::Uniform => rng.gen_range(lo..=hi) as usize,
        SizeDist::LogUniform => log_uniform(rng, lo, hi) as usize,
    }
}

/// A size in `lo..=hi` (`lo <= hi`) such that `size + 1` falls in each power-of-two octave
/// of `lo + 1..=hi + 1` equally often, uniformly within it; the top octave, cut by the
/// range, in proportion to its part inside (a draw beyond `hi` is redrawn).
fn log_uniform(rng: &mut ChaCha8Rng, lo: u32, hi: u32) -> u32 {
    let (a, b) = (u64::from(lo) + 1, u64::from(hi) + 1);
    // Octaves [a·2^k, a·2^(k+1)) that start inside the range: at most 33.
    let octaves = (0..33u32).take_while(|&k| a << k <= b).count() as u32;
    if octaves <= 1 {
        return rng.gen_range(lo..=hi);
    }
    // With two octaves or more, a draw lands inside with probability above 1/2; after 64
    // misses (probability below 2^-64) the value is clamped.
    let mut v = b;
    for _ in 0..64 {
        let k = rng.gen_range(0..octaves);
        v = rng.gen_range(a << k..a << (k + 1));
        if v <= b {
            break;
        }
    }
    (v.min(b) - 1) as u32
}

fn plan_udp(flow: &mut Flow, rng: &mut ChaCha8Rng) {
    let pairs = rng.gen_range(1..=3u32);
    flow.rec.requests = pairs;
    for k in 0..pairs {
        let txid: u16 = rng.gen();
        let name = format!("q{k}.f{}.example.com", flow.rec.id);
        let mut question = Vec::new();
        for label in name.split('.') {
            question.push(label.len() as u8);
            question.extend_from_slice(label.as_bytes());
        }
        question.push(0);
        question.extend_from_slice(&[0, 1, 0, 1]); // type A, class IN
        let mut query = Vec::with_capacity(12 + question.len());
        query.extend_from_slice(&txid.to_be_bytes());
        query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        query.extend_from_slice(&question);
        let mut answer = Vec::with_capacity(query.len() + 16);
        answer.extend_from_slice(&txid.to_be_bytes());
        answer.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
        answer.extend_from_slice(&question);
        // Name pointer to offset 12, type A, class IN, TTL 300, 4 bytes of address.
        answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4]);
        answer.extend_from_slice(&[203, 0, 113, rng.gen_range(1..=254)]);
        for (to_server, bytes) in [(true, query), (false, answer)] {
            let len = bytes.len();
            flow.msgs.push(Msg { head: bytes, body_len: 0, body_seed: 0 });
            flow.plan.push_back(Pkt {
                to_server,
                kind: Kind::Udp,
                msg: flow.msgs.len() - 1,
                off: 0,
                len,
                extra: false,
            });
        }
    }
}

fn plan_tcp(flow: &mut Flow, cfg: &GenConfig, rng: &mut ChaCha8Rng, app: GenApp, attack: Option<Attack>) {
    let (c_isn, s_isn) = (pick_isn(rng), pick_isn(rng));
    let requests = rng.gen_range(cfg.requests_per_flow.0..=cfg.requests_per_flow.1);
    flow.rec.requests = requests;
    let mut msgs = std::mem::take(&mut flow.msgs);
    let mut tcp = TcpPlan { plan: &mut flow.plan, cn: c_isn, sn: s_isn, mss: usize::from(cfg.mss) };
    let syn = Flags { syn: true, ..NO_FLAGS };
    tcp.push(true, syn, false, 0, 0, 0);
    tcp.push(false, syn, true, 0, 0, 0);
    tcp.push(true, NO_FLAGS, true, 0, 0, 0);
    match app {
        GenApp::Tls => plan_tls(&mut tcp, &mut msgs, &flow.rec, cfg, rng, requests),
        GenApp::Ssh => plan_ssh(&mut tcp, &mut msgs, cfg, rng, requests),
        GenApp::Http | GenApp::Dns => plan_http(&mut tcp, &mut msgs, &flow.rec, cfg, rng, requests, attack),
    }
    let rst = rng.gen_bool(cfg.rst_fraction);
    let from_client = rng.gen_bool(0.5);
    if rst {
        let flags = Flags { rst: true, ..NO_FLAGS };
        tcp.push(from_client, flags, true, 0, 0, 0);
        flow.rec.teardown = "rst".to_string();
    } else {
        let fin = Flags { fin: true, ..NO_FLAGS };
        tcp.push(from_client, fin, true, 0, 0, 0);
        tcp.push(!from_client, NO_FLAGS, true, 0, 0, 0);
        tcp.push(!from_client, fin, true, 0, 0, 0);
        tcp.push(from_client, NO_FLAGS, true, 0, 0, 0);
        flow.rec.teardown = "fin".to_string();
    }
    flow.msgs = msgs;
}

fn plan_http(
    tcp: &mut TcpPlan,
    msgs: &mut Vec<Msg>,
    rec: &GenFlow,
    cfg: &GenConfig,
    rng: &mut ChaCha8Rng,
    requests: u32,
    mut attack: Option<Attack>,
) {
    let host = match rec.server.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    for _ in 0..requests {
        let size = rng.gen_range(cfg.request_size.0..=cfg.request_size.1) as usize;
        let obj: u32 = rng.gen_range(0..1_000_000);
        // Only the first exchange carries the attack (rules anchor at the stream start).
        let this = attack.take();
        let (dir, query) = match this {
            Some(Attack::HttpAdmin) => ("/admin", ""),
            Some(Attack::PasswdAccess) => ("", "?file=../../etc/passwd"),
            Some(Attack::SqlInjection) => ("", "?id=1+UNION+SELECT+password+FROM+users"),
            _ => ("", ""),
        };
        let mut head = format!(
            "GET {dir}/obj/{obj}{query} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mbox-gen\r\nAccept: */*\r\nX-Pad: "
        )
        .into_bytes();
        let pad = size.saturating_sub(head.len() + 4);
        head.extend((0..pad).map(|i| b'a' + (i % 26) as u8));
        head.extend_from_slice(b"\r\n\r\n");
        let req_len = head.len();
        msgs.push(Msg { head, body_len: 0, body_seed: 0 });
        tcp.send(true, msgs.len() - 1, req_len, false);

        let body_len = response_size(cfg, rng);
        let shell = if this == Some(Attack::ShellPrompt) { "root@gen: 1\r\n" } else { "" };
        let head = format!(
            "HTTP/1.1 200 OK\r\n{shell}Content-Length: {body_len}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        let resp = Msg { head, body_len, body_seed: rng.gen() };
        let resp_len = resp.len();
        msgs.push(resp);
        tcp.send(false, msgs.len() - 1, resp_len, true);
    }
}

/// `n` deterministic bytes from `seed` (the generator's body data).
fn bytes_from(seed: u64, n: usize) -> impl Iterator<Item = u8> {
    (0..n as u64).map(move |i| body_byte(seed, i))
}

/// Appends a TLS record header (TLS 1.2 on the wire) of content type `ty`.
fn tls_record_header(out: &mut Vec<u8>, ty: u8, version_minor: u8, len: usize) {
    out.extend_from_slice(&[ty, 3, version_minor]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
}

/// Appends a handshake message: type, 24-bit length, body.
fn tls_handshake(out: &mut Vec<u8>, ty: u8, body: &[u8]) {
    out.push(ty);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(body);
}

/// A ClientHello record with the SNI `sni`, an x25519 key share and three cipher suites.
/// The start of a ClientHello's or ServerHello's body: legacy version 3.3, the 32-byte
/// random, and a 32-byte legacy session id.
fn hello_head(seed: u64) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend(bytes_from(seed, 32)); // random
    body.push(32);
    body.extend(bytes_from(seed ^ 2, 32)); // legacy session id
    body
}

fn client_hello(sni: &str, seed: u64) -> Vec<u8> {
    let mut ext = Vec::new();
    // server_name: list length, type 0 (host_name), name length, name.
    let name = sni.as_bytes();
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&(name.len() as u16 + 5).to_be_bytes());
    ext.extend_from_slice(&(name.len() as u16 + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    // supported_groups (x25519), supported_versions (TLS 1.3, 1.2).
    ext.extend_from_slice(&[0x00, 0x0a, 0, 4, 0, 2, 0x00, 0x1d]);
    ext.extend_from_slice(&[0x00, 0x2b, 0, 5, 4, 3, 4, 3, 3]);
    // key_share: one x25519 share of 32 bytes.
    ext.extend_from_slice(&[0x00, 0x33, 0, 38, 0, 36, 0x00, 0x1d, 0, 32]);
    ext.extend(bytes_from(seed ^ 1, 32));
    let mut body = hello_head(seed);
    body.extend_from_slice(&[0, 6, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03]);
    body.extend_from_slice(&[1, 0]); // compression: null
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = Vec::new();
    tls_handshake(&mut hs, 1, &body);
    let mut rec = Vec::new();
    tls_record_header(&mut rec, 22, 1, hs.len());
    rec.extend_from_slice(&hs);
    rec
}

/// The server's first flight up to the header of the record standing for the encrypted
/// certificate (`cert_len` bytes, the message's body): ServerHello, ChangeCipherSpec.
fn server_flight_head(seed: u64, cert_len: usize) -> Vec<u8> {
    let mut body = hello_head(seed);
    body.extend_from_slice(&[0x13, 0x01, 0]);
    let mut ext = vec![0x00, 0x2b, 0, 2, 3, 4, 0x00, 0x33, 0, 36, 0x00, 0x1d, 0, 32];
    ext.extend(bytes_from(seed ^ 3, 32));
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = Vec::new();
    tls_handshake(&mut hs, 2, &body);
    let mut out = Vec::new();
    tls_record_header(&mut out, 22, 3, hs.len());
    out.extend_from_slice(&hs);
    out.extend_from_slice(&[20, 3, 3, 0, 1, 1]); // ChangeCipherSpec
    tls_record_header(&mut out, 23, 3, cert_len);
    out
}

/// Sends `total` bytes from `to_server` as records of at most `max` bytes, each with the
/// header `header(len)` and its own MSS-cut message; nothing when `total` is 0.
fn send_records(
    tcp: &mut TcpPlan,
    msgs: &mut Vec<Msg>,
    to_server: bool,
    total: usize,
    max: usize,
    seed: u64,
    header: impl Fn(usize) -> Vec<u8>,
) {
    let mut left = total;
    let mut k = 0u64;
    while left > 0 {
        let len = left.min(max);
        left -= len;
        let msg = Msg { head: header(len), body_len: len, body_seed: seed.wrapping_add(k) };
        let n = msg.len();
        msgs.push(msg);
        tcp.send(to_server, msgs.len() - 1, n, !to_server);
        k += 1;
    }
}

fn plan_tls(
    tcp: &mut TcpPlan,
    msgs: &mut Vec<Msg>,
    rec: &GenFlow,
    cfg: &GenConfig,
    rng: &mut ChaCha8Rng,
    requests: u32,
) {
    let seed: u64 = rng.gen();
    let hello = client_hello(&format!("f{}.example.net", rec.id), seed);
    let n = hello.len();
    msgs.push(Msg { head: hello, body_len: 0, body_seed: 0 });
    tcp.send(true, msgs.len() - 1, n, false);
    let cert_len = rng.gen_range(800..=4000usize);
    let flight = Msg { head: server_flight_head(seed ^ 4, cert_len), body_len: cert_len, body_seed: seed ^ 5 };
    let n = flight.len();
    msgs.push(flight);
    tcp.send(false, msgs.len() - 1, n, true);
    // The client's ChangeCipherSpec and Finished (53 bytes, encrypted).
    let mut head = vec![20, 3, 3, 0, 1, 1];
    tls_record_header(&mut head, 23, 3, 53);
    msgs.push(Msg { head, body_len: 53, body_seed: seed ^ 6 });
    tcp.send(true, msgs.len() - 1, 6 + 5 + 53, false);
    let app_data = |len: usize| {
        let mut h = Vec::with_capacity(5);
        tls_record_header(&mut h, 23, 3, len);
        h
    };
    for _ in 0..requests {
        let size = rng.gen_range(cfg.request_size.0..=cfg.request_size.1) as usize;
        send_records(tcp, msgs, true, size.max(1), TLS_MAX_RECORD, rng.gen(), app_data);
        let body_len = response_size(cfg, rng);
        send_records(tcp, msgs, false, body_len, TLS_MAX_RECORD, rng.gen(), app_data);
    }
}

fn plan_ssh(tcp: &mut TcpPlan, msgs: &mut Vec<Msg>, cfg: &GenConfig, rng: &mut ChaCha8Rng, requests: u32) {
    for (to_server, banner) in
        [(true, &b"SSH-2.0-OpenSSH_9.6 mbox-gen\r\n"[..]), (false, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")]
    {
        msgs.push(Msg { head: banner.to_vec(), body_len: 0, body_seed: 0 });
        tcp.send(to_server, msgs.len() - 1, banner.len(), false);
    }
    let packet = |len: usize| (len as u32).to_be_bytes().to_vec();
    for _ in 0..requests {
        let size = rng.gen_range(cfg.request_size.0..=cfg.request_size.1) as usize;
        send_records(tcp, msgs, true, size.max(1), SSH_MAX_PACKET, rng.gen(), packet);
        let body_len = response_size(cfg, rng);
        send_records(tcp, msgs, false, body_len, SSH_MAX_PACKET, rng.gen(), packet);
    }
}

// ---- frames ----

fn octets4(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let s = a.octets();
            [s[12], s[13], s[14], s[15]]
        }
    }
}

fn octets16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Builds `pkt` of `flow` into `frame` (cleared first); `payload` is scratch space.
fn build(flow: &Flow, pkt: &Pkt, frame: &mut Vec<u8>, payload: &mut Vec<u8>) {
    payload.clear();
    flow.msgs[pkt.msg].copy_range(pkt.off, pkt.len, payload);
    let (src, dst, smac, dmac) = if pkt.to_server {
        (flow.rec.client, flow.rec.server, flow.client_mac, flow.server_mac)
    } else {
        (flow.rec.server, flow.rec.client, flow.server_mac, flow.client_mac)
    };
    let eth = PacketBuilder::ethernet2(smac, dmac);
    let ip: PacketBuilderStep<etherparse::IpHeaders> = match (flow.vlan, src.ip()) {
        (None, IpAddr::V4(_)) => eth.ipv4(octets4(src.ip()), octets4(dst.ip()), 64),
        (None, IpAddr::V6(_)) => eth.ipv6(octets16(src.ip()), octets16(dst.ip()), 64),
        (Some(v), IpAddr::V4(_)) => eth.single_vlan(v).ipv4(octets4(src.ip()), octets4(dst.ip()), 64),
        (Some(v), IpAddr::V6(_)) => eth.single_vlan(v).ipv6(octets16(src.ip()), octets16(dst.ip()), 64),
    };
    frame.clear();
    // Writing into a Vec cannot fail for I/O reasons, and payloads are at most MAX_MSS
    // (or a small DNS message) so every length fits its header field: the results below
    // are always Ok.
    let _ = match pkt.kind {
        Kind::Udp => ip.udp(src.port(), dst.port()).write(frame, payload),
        Kind::Tcp { seq, ack, flags } => {
            let mut b = ip.tcp(src.port(), dst.port(), seq, TCP_WINDOW);
            if flags.syn {
                b = b.syn();
                let mss_opt = [TcpOptionElement::MaximumSegmentSize(flow.mss)];
                b = match b.options(&mss_opt) {
                    Ok(b) => b,
                    // Unreachable: 4 bytes of options always fit in 40.
                    Err(_) => return,
                };
            }
            if let Some(a) = ack {
                b = b.ack(a);
            }
            if flags.fin {
                b = b.fin();
            }
            if flags.rst {
                b = b.rst();
            }
            if flags.psh {
                b = b.psh();
            }
            b.write(frame, payload)
        }
    };
}

/// Generates the traffic described by `cfg` and writes every frame through
/// `sink(ts_ns, frame)` in timestamp order. Same config ⇒ byte-identical output.
///
/// An invalid `cfg` is clamped into range, not refused (see the module docs); the only
/// errors are the sink's.
pub fn generate<E>(cfg: &GenConfig, mut sink: impl FnMut(u64, &[u8]) -> Result<(), E>) -> Result<GenSummary, E> {
    let cfg = cfg.sanitized();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut active: Vec<Flow> = Vec::with_capacity(cfg.concurrency.min(cfg.flows));
    let mut done: Vec<GenFlow> = Vec::with_capacity(cfg.flows);
    let mut next_id = 0usize;
    let mut ts = cfg.start_ts_ns;
    let mut summary =
        GenSummary { packets: 0, bytes: 0, flows: Vec::new(), attacks: 0, lost: 0, reordered: 0, duplicated: 0 };
    let mut attacker = Attacker::new(&cfg);
    let mut mixer = Mixer::new(&cfg);
    let mut impairer = Impairer::new(&cfg);
    let (mut frame, mut payload) = (Vec::with_capacity(2048), Vec::with_capacity(2048));
    // Each pass emits one planned packet (and the duplicates attached to it); plans are
    // finite, so the loop ends.
    loop {
        while active.len() < cfg.concurrency && next_id < cfg.flows {
            active.push(new_flow(next_id, &cfg, &mut rng, &mut mixer, &mut attacker, impairer.as_mut()));
            next_id += 1;
        }
        if active.is_empty() {
            break;
        }
        let i = rng.gen_range(0..active.len());
        let Some(pkt) = active[i].plan.pop_front() else {
            done.push(active.swap_remove(i).rec);
            continue;
        };
        if summary.packets > 0 {
            ts = ts.saturating_add(rng.gen_range(1..=200u64) * 1_000);
        }
        let flow = &mut active[i];
        emit(flow, &pkt, ts, &mut summary, &mut frame, &mut payload, &mut sink)?;
        // Duplicates follow the packet before them, timed from the impairer's stream, so the
        // main stream draws as it would without them (see `impair`).
        while let (Some(imp), Some(dup)) = (impairer.as_mut(), flow.plan.front().filter(|p| p.extra).copied()) {
            flow.plan.pop_front();
            ts = ts.saturating_add(imp.gap_ns());
            emit(flow, &dup, ts, &mut summary, &mut frame, &mut payload, &mut sink)?;
        }
        if flow.plan.is_empty() {
            done.push(active.swap_remove(i).rec);
        }
    }
    done.sort_by_key(|f| f.id);
    summary.attacks = done.iter().filter(|f| f.attack.is_some()).count() as u64;
    summary.lost = done.iter().map(|f| f.lost).sum();
    summary.reordered = done.iter().map(|f| f.reordered).sum();
    summary.duplicated = done.iter().map(|f| f.duplicated).sum();
    summary.flows = done;
    Ok(summary)
}

/// Builds `pkt` of `flow`, hands it to `sink` stamped `ts`, and counts it.
fn emit<E>(
    flow: &mut Flow,
    pkt: &Pkt,
    ts: u64,
    summary: &mut GenSummary,
    frame: &mut Vec<u8>,
    payload: &mut Vec<u8>,
    sink: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    build(flow, pkt, frame, payload);
    sink(ts, frame)?;
    summary.packets += 1;
    summary.bytes += frame.len() as u64;
    let r = &mut flow.rec;
    if r.pkts_toserver + r.pkts_toclient == 0 {
        r.first_ts_ns = ts;
    }
    r.last_ts_ns = ts;
    if pkt.to_server {
        r.pkts_toserver += 1;
        r.bytes_toserver += frame.len() as u64;
        r.payload_toserver += pkt.len as u64;
    } else {
        r.pkts_toclient += 1;
        r.bytes_toclient += frame.len() as u64;
        r.payload_toclient += pkt.len as u64;
    }
    Ok(())
}

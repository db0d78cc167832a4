//! DPI: identifies the application protocol of every flow from its first bytes and
//! publishes one `EVENT/DPI_DETECT` per flow — the paper's example of an NF that raises a
//! custom µEvent for the NFs after it.
//!
//! ```toml
//! [stack.tcp]                # needed by on = "stream" (the default)
//!
//! [[nf]]
//! name = "dpi"
//! kind = "dpi"
//! on = "stream"              # or "packets"
//! max_bytes = 4096           # bytes kept per direction before giving up (1..=65536)
//! max_packets = 16           # payload-carrying events per flow before giving up
//! output = "dpi.jsonl"       # optional JSON lines, one per flow decided
//! ```
//!
//! **What it detects** ([`classify`], a pure function): HTTP (request line with a known
//! method and `HTTP/x.y`; the `Host:` header is the host; a server's `HTTP/1.x` status line
//! alone gives http without host), TLS (a handshake record carrying a ClientHello — the SNI
//! `server_name` is the host; a ClientHello split over segments or records is reassembled
//! up to the bound; a ServerHello alone gives tls without host), SSH (`SSH-2.0-` or
//! `SSH-1.99-` banner from either side), DNS (UDP: a sane header and a well-formed question
//! section, qname → host; TCP: the same behind the 2-byte length prefix) and SMTP (a server
//! `220` banner line naming SMTP/ESMTP — its first word is the host — or a client
//! `EHLO`/`HELO`). Ports never decide alone; the one tie-breaker is DNS: with port 53, 5353
//! or 5355 on either side, the header checks are relaxed (any standard opcode, up to 8
//! questions, the Z bit, non-empty answer sections in a query).
//!
//! **Protocol codes** (the event's `aux`): 1 http, 2 tls, 3 ssh, 4 dns, 5 smtp, 255 unknown.
//!
//! **Inputs.** `on = "stream"`: TCP bytes from the TCP monitor's `DATA_RDY` events (main
//! port `data`; reassembled, in order), UDP from `PKT/UDP` payloads (port `udp`), and the
//! flow's addresses from its `PKT/TCP/SYN` (port `syn`: a connection picked up mid-stream
//! has none, and its record has null addresses). `on = "packets"`: the payloads of `PKT/TCP`
//! and `PKT/UDP` (main port `pkt`) in arrival order — no reassembly, so a retransmission is
//! read twice — and the addresses from the flow's first packet. For UDP only the first
//! datagram of each direction is classified (datagrams are not concatenated).
//!
//! **Per flow** (keyed by the event's flow): bytes are accumulated up to `max_bytes` per
//! direction; after each addition [`classify`] runs on the whole prefix. When it detects a
//! protocol, or says no known protocol can match, or a bound is hit (`max_bytes` in a
//! direction or `max_packets` payload events: a *likely* protocol — e.g. a TLS ClientHello
//! whose SNI lies beyond the bound — is taken without host, else unknown), or the flow ends
//! with payload seen but no decision (unknown), the NF publishes ONE `EVENT/DPI_DETECT`:
//! `aux` = the code, `flow`/`flow_start` copied from the deciding event, `meta.flags` its
//! `TO_SERVER` bit, `meta.proto` the IP protocol, no packet. The flow then goes to a small
//! "done" set and the NF unsubscribes from the flow's `PKT` and `DATA_RDY` events (dynamic
//! subscriptions: they are no longer delivered, counted by the runner as
//! `not_delivered_by_flow_subscription`); any that still arrive are counted as
//! `events_after_detection`. State is
//! forgotten on the flow's end: `FLOW` end from `l23` (port `end`) and, in stream mode,
//! `FLOW/TCP/TERMINATE` (port `term`; a TCP flow's `FLOW` end is ignored there, since the
//! monitor's last `DATA_RDY`s follow it). A flow with no payload gets no event.
//!
//! **JSON lines** (optional), one per decided flow, written at the decision:
//! `{"flow_id", "proto", "app_proto", "host", "src_ip", "src_port", "dest_ip", "dest_port"}`
//! — `flow_id` is the flow's first packet number, `proto` `"TCP"`/`"UDP"`, `app_proto` as in
//! Suricata (`"http"`, `"tls"`, `"ssh"`, `"dns"`, `"smtp"`, `"unknown"`), `src` the initiator.
//!
//! Counters: `detected_<proto>`, `unknown`, `bytes_inspected`, `events_after_detection`,
//! `flows_open`, `records_written`, `stream_read_errors`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufWriter;
use std::net::IpAddr;
use std::path::PathBuf;

use actors::desc::{meta_flags, EventDesc, FlowEvent, FlowRef};
use actors::event::{builtin, EventType};
use actors::matcher::Tuple;
use actors::{Actor, ActorError, Context, Contract, Modifies, Publication, Subscription, Verdict as ActorVerdict};
use serde::{Deserialize, Serialize};

use crate::common::NfCommon;

/// The name of the event type this NF publishes.
pub const DETECT_EVENT: &str = "EVENT/DPI_DETECT";
/// Protocol code for "no known protocol" in the event's `aux`.
pub const UNKNOWN_CODE: u8 = 255;

/// The application protocols [`classify`] knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.x.
    Http,
    /// TLS.
    Tls,
    /// SSH.
    Ssh,
    /// DNS (UDP or TCP).
    Dns,
    /// SMTP.
    Smtp,
}

impl Protocol {
    /// All of them, by code.
    pub const ALL: [Protocol; 5] = [Protocol::Http, Protocol::Tls, Protocol::Ssh, Protocol::Dns, Protocol::Smtp];

    /// The code in `EVENT/DPI_DETECT`'s `aux`: 1 http, 2 tls, 3 ssh, 4 dns, 5 smtp.
    pub fn code(self) -> u8 {
        match self {
            Protocol::Http => 1,
            Protocol::Tls => 2,
            Protocol::Ssh => 3,
            Protocol::Dns => 4,
            Protocol::Smtp => 5,
        }
    }

    /// The protocol of a code (`None` for 255 "unknown" and anything else).
    pub fn from_code(code: u64) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| u64::from(p.code()) == code)
    }

    /// Suricata's `app_proto` name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tls => "tls",
            Protocol::Ssh => "ssh",
            Protocol::Dns => "dns",
            Protocol::Smtp => "smtp",
        }
    }
}

/// What [`classify`] says about a flow's first bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing decided yet: more bytes could still match. `likely` is a protocol whose start
    /// was recognised but whose detail (the host) lies beyond the bytes given — the answer
    /// to take when giving up at a bound.
    NeedMore {
        /// The protocol recognised so far, if any.
        likely: Option<Protocol>,
    },
    /// No known protocol can match these bytes, whatever follows.
    Unknown,
    /// Identified.
    Detected {
        /// The protocol.
        protocol: Protocol,
        /// HTTP `Host`, TLS SNI, DNS qname, SMTP banner host.
        host: Option<String>,
    },
}

/// One parser's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum M {
    Yes(Option<String>),
    More { tentative: bool },
    No,
}

const MORE: M = M::More { tentative: false };
const LIKELY: M = M::More { tentative: true };

/// Longest line (HTTP request line or header, SMTP banner) looked at.
const MAX_LINE: usize = 2048;

/// Identifies the application protocol from the first bytes of each direction
/// (`first_bytes_to_server`: from the initiator; for UDP the first datagram of each
/// direction), the IP protocol (6 or 17; others are [`Verdict::Unknown`]) and the ports
/// `(client, server)`, used only as the DNS tie-breaker. Never panics; the work is linear
/// in the input and bounded.
pub fn classify(first_bytes_to_server: &[u8], first_bytes_to_client: &[u8], proto: u8, ports: (u16, u16)) -> Verdict {
    let (ts, tc) = (first_bytes_to_server, first_bytes_to_client);
    let dns_port = [53, 5353, 5355].contains(&ports.0) || [53, 5353, 5355].contains(&ports.1);
    let answers: Vec<(Protocol, M)> = match proto {
        6 => vec![
            (Protocol::Http, http_request(ts)),
            (Protocol::Tls, tls_hello(ts, 1)),
            (Protocol::Ssh, ssh(ts)),
            (Protocol::Ssh, ssh(tc)),
            (Protocol::Smtp, smtp_server(tc)),
            (Protocol::Smtp, smtp_client(ts)),
            (Protocol::Dns, dns_tcp(ts, false, dns_port)),
            (Protocol::Dns, dns_tcp(tc, true, dns_port)),
            (Protocol::Http, http_response(tc)),
            (Protocol::Tls, tls_hello(tc, 2)),
        ],
        17 => vec![(Protocol::Dns, dns_udp(ts, false, dns_port)), (Protocol::Dns, dns_udp(tc, true, dns_port))],
        _ => return Verdict::Unknown,
    };
    if let Some((p, M::Yes(host))) = answers.iter().find(|(_, m)| matches!(m, M::Yes(_))) {
        return Verdict::Detected { protocol: *p, host: host.clone() };
    }
    if let Some((p, _)) = answers.iter().find(|(_, m)| *m == LIKELY) {
        return Verdict::NeedMore { likely: Some(*p) };
    }
    if answers.iter().any(|(_, m)| *m == MORE) {
        return Verdict::NeedMore { likely: None };
    }
    Verdict::Unknown
}

/// `b` starts with one of `words` (→ index), or is a proper prefix of one (→ More).
fn starts_with_any(b: &[u8], words: &[&[u8]], ignore_case: bool) -> Result<usize, M> {
    let eq = |x: &[u8], y: &[u8]| if ignore_case { x.eq_ignore_ascii_case(y) } else { x == y };
    let mut more = false;
    for (i, w) in words.iter().enumerate() {
        if b.len() >= w.len() {
            if eq(&b[..w.len()], w) {
                return Ok(i);
            }
        } else if eq(b, &w[..b.len()]) {
            more = true;
        }
    }
    Err(if more { MORE } else { M::No })
}

/// The first line of `b` (without `\r\n`), if complete within [`MAX_LINE`].
fn first_line(b: &[u8]) -> Result<&[u8], M> {
    let lim = &b[..b.len().min(MAX_LINE)];
    match lim.iter().position(|&c| c == b'\n') {
        Some(i) => Ok(lim[..i].strip_suffix(b"\r").unwrap_or(&lim[..i])),
        None if b.len() < MAX_LINE => Err(MORE),
        None => Err(M::No),
    }
}

fn printable(s: &[u8]) -> Option<String> {
    if s.is_empty() || s.len() > 255 || !s.iter().all(|&c| (0x21..=0x7e).contains(&c)) {
        return None;
    }
    std::str::from_utf8(s).ok().map(str::to_string)
}

const METHODS: &[&[u8]] =
    &[b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];

fn is_http_version(v: &[u8]) -> bool {
    v.len() == 8 && v.starts_with(b"HTTP/") && v[5].is_ascii_digit() && v[6] == b'.' && v[7].is_ascii_digit()
}

fn http_request(b: &[u8]) -> M {
    if let Err(m) = starts_with_any(b, METHODS, false) {
        return m;
    }
    let line = match first_line(b) {
        Ok(l) => l,
        Err(M::No) => return M::No,
        Err(_) => return LIKELY,
    };
    let mut parts = line.split(|&c| c == b' ');
    let (_method, target, version) = (parts.next(), parts.next(), parts.next());
    if target.is_none_or(<[u8]>::is_empty) || !version.is_some_and(is_http_version) || parts.next().is_some() {
        return M::No;
    }
    // Headers: the Host line, or the end of the header block.
    let mut rest = &b[(line.len() + 1).min(b.len())..];
    if rest.first() == Some(&b'\n') {
        rest = &rest[1..]; // the line ended in \r\n
    }
    for _ in 0..256 {
        let Some(nl) = rest.iter().take(MAX_LINE).position(|&c| c == b'\n') else { return LIKELY };
        let l = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
        if l.is_empty() {
            return M::Yes(None);
        }
        let Some(colon) = l.iter().position(|&c| c == b':') else { return M::Yes(None) };
        if l[..colon].eq_ignore_ascii_case(b"host") {
            let v = l[colon + 1..].trim_ascii();
            return M::Yes(printable(v));
        }
        rest = &rest[nl + 1..];
    }
    M::Yes(None)
}

fn http_response(b: &[u8]) -> M {
    match starts_with_any(b, &[b"HTTP/1.0 ", b"HTTP/1.1 "], false) {
        Ok(_) => M::Yes(None),
        Err(m) => m,
    }
}

fn ssh(b: &[u8]) -> M {
    match starts_with_any(b, &[b"SSH-2.0-", b"SSH-1.99-"], false) {
        Ok(_) => M::Yes(None),
        Err(m) => m,
    }
}

fn smtp_server(b: &[u8]) -> M {
    if let Err(m) = starts_with_any(b, &[b"220 ", b"220-"], false) {
        return m;
    }
    let line = match first_line(b) {
        Ok(l) => l,
        Err(m) => return m,
    };
    let upper = line.to_ascii_uppercase();
    if !upper.windows(4).any(|w| w == b"SMTP") {
        return M::No;
    }
    let host = line[4..].split(|&c| c == b' ').next().filter(|w| w.contains(&b'.')).and_then(printable);
    M::Yes(host.map(|h| h.to_ascii_lowercase()))
}

fn smtp_client(b: &[u8]) -> M {
    match starts_with_any(b, &[b"EHLO ", b"HELO "], true) {
        Ok(_) => M::Yes(None),
        Err(m) => m,
    }
}

/// A cursor over bytes: every read is checked.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }
}

/// A TLS handshake message of type `want` (1 ClientHello, 2 ServerHello) at the start of
/// `b`, possibly spread over several records and cut anywhere.
fn tls_hello(b: &[u8], want: u8) -> M {
    // Record layer: concatenate the handshake fragments.
    let mut hs: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    for _ in 0..64 {
        let Some(h) = b.get(pos..pos + 5) else {
            if pos == 0 {
                // A partial first record header: check what is there.
                let ok = b.first().is_none_or(|&t| t == 22)
                    && b.get(1).is_none_or(|&v| v == 3)
                    && b.get(2).is_none_or(|&v| v <= 4);
                return if ok { MORE } else { M::No };
            }
            break;
        };
        if h[0] != 22 || h[1] != 3 || h[2] > 4 {
            if pos == 0 {
                return M::No;
            }
            break; // the handshake records ended
        }
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if len == 0 || len > 16384 + 2048 {
            return if pos == 0 { M::No } else { break };
        }
        let end = (pos + 5 + len).min(b.len());
        hs.extend_from_slice(&b[pos + 5..end]);
        pos += 5 + len;
        if pos >= b.len() {
            break;
        }
    }
    // Handshake header: type, 24-bit length, version.
    match hs.first() {
        None => return MORE,
        Some(&t) if t != want => return M::No,
        _ => {}
    }
    if hs.len() < 6 {
        return MORE;
    }
    let hs_len = (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
    if hs[4] != 3 || hs[5] > 4 || hs_len < 38 {
        return M::No;
    }
    if want != 1 {
        return M::Yes(None);
    }
    let complete = hs.len() >= 4 + hs_len;
    let body = &hs[4..hs.len().min(4 + hs_len)];
    // Truncated: wait for more if the message is not complete yet, else malformed (still TLS).
    let short = if complete { M::Yes(None) } else { LIKELY };
    let mut c = Cur { b: body, i: 0 };
    let fixed = (|| {
        c.take(2 + 32)?; // version, random
        let sid = c.u8()?;
        if sid > 32 {
            return Some(false);
        }
        c.take(usize::from(sid))?;
        let cs = c.u16()?;
        c.take(usize::from(cs))?;
        let comp = c.u8()?;
        c.take(usize::from(comp))?;
        Some(true)
    })();
    match fixed {
        None => return short,
        Some(false) => return M::No,
        Some(true) => {}
    }
    if c.at_end() {
        return short; // no extensions (or not here yet)
    }
    let Some(ext_len) = c.u16() else { return short };
    let ext_end = c.i + usize::from(ext_len);
    for _ in 0..512 {
        if c.i >= ext_end {
            return M::Yes(None);
        }
        let (Some(ty), Some(len)) = (c.u16(), c.u16()) else { return short };
        let Some(data) = c.take(usize::from(len)) else { return short };
        if ty == 0 {
            return M::Yes(sni(data));
        }
    }
    M::Yes(None)
}

/// The host_name of a server_name extension.
fn sni(data: &[u8]) -> Option<String> {
    let mut c = Cur { b: data, i: 0 };
    let list = usize::from(c.u16()?);
    let end = (c.i + list).min(data.len());
    for _ in 0..16 {
        if c.i >= end {
            break;
        }
        let ty = c.u8()?;
        let len = c.u16()?;
        let name = c.take(usize::from(len))?;
        if ty == 0 {
            return printable(name).map(|s| s.to_ascii_lowercase());
        }
    }
    None
}

/// A DNS message: `m` is all there is (`complete`) or a prefix; `response` is the expected
/// QR bit; `relaxed` is the port tie-breaker.
fn dns_message(m: &[u8], response: bool, relaxed: bool, complete: bool) -> M {
    let short = if complete { M::No } else { MORE };
    if m.len() < 12 {
        return short;
    }
    let r16 = |i: usize| u16::from_be_bytes([m[i], m[i + 1]]);
    let flags = r16(2);
    let (qr, opcode, z, rcode) = ((flags >> 15) == 1, (flags >> 11) & 0xf, (flags >> 6) & 1, flags & 0xf);
    let (qd, an, ns, ar) = (r16(4), r16(6), r16(8), r16(10));
    if qr != response {
        return M::No;
    }
    let sane = if relaxed {
        matches!(opcode, 0 | 1 | 2 | 4 | 5) && (1..=8).contains(&qd) && an <= 256 && ns <= 256 && ar <= 256
    } else {
        opcode == 0
            && z == 0
            && qd == 1
            && if response { an <= 64 && ns <= 64 && ar <= 64 } else { an == 0 && ns == 0 && ar <= 1 && rcode == 0 }
    };
    if !sane {
        return M::No;
    }
    // The first question: a name of printable labels, then type and class.
    let mut c = Cur { b: m, i: 12 };
    let mut name: Vec<u8> = Vec::new();
    for _ in 0..128 {
        let Some(len) = c.u8() else { return short };
        if len == 0 {
            break;
        }
        if len > 63 || name.len() + usize::from(len) + 1 > 255 {
            return M::No;
        }
        let Some(label) = c.take(usize::from(len)) else { return short };
        if !label.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b'.') {
            return M::No;
        }
        if !name.is_empty() {
            name.push(b'.');
        }
        name.extend_from_slice(label);
    }
    let (Some(qtype), Some(qclass)) = (c.u16(), c.u16()) else { return short };
    if qtype == 0 || !matches!(qclass & 0x7fff, 1 | 3 | 4 | 254 | 255) {
        return M::No;
    }
    M::Yes(if name.is_empty() { None } else { String::from_utf8(name).ok().map(|s| s.to_ascii_lowercase()) })
}

fn dns_udp(b: &[u8], response: bool, relaxed: bool) -> M {
    if b.is_empty() {
        return MORE; // no datagram that way yet
    }
    dns_message(b, response, relaxed, true)
}

fn dns_tcp(b: &[u8], response: bool, relaxed: bool) -> M {
    if b.len() < 2 {
        return MORE;
    }
    let len = usize::from(u16::from_be_bytes([b[0], b[1]]));
    if len < 17 {
        return M::No;
    }
    let m = &b[2..b.len().min(2 + len)];
    dns_message(m, response, relaxed, m.len() == len)
}

// ---- the NF ----

/// Where the DPI NF reads TCP payloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpiOn {
    /// The TCP monitor's reassembled bytestreams (`DATA_RDY`).
    #[default]
    Stream,
    /// Packet payloads as they arrive.
    Packets,
}

fn default_max_bytes() -> usize {
    4096
}

fn default_max_packets() -> u32 {
    16
}

/// DPI options.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpiConfig {
    /// `"stream"` (default) or `"packets"`.
    #[serde(default)]
    pub on: DpiOn,
    /// Bytes kept per direction before giving up (1..=65536; default 4096).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Payload-carrying events per flow before giving up (1..=65536; default 16).
    #[serde(default = "default_max_packets")]
    pub max_packets: u32,
    /// Optional JSON-lines output.
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// The `EVENT/DPI_DETECT` type, as registered when the app was loaded.
    #[serde(skip)]
    pub event: EventType,
}

impl DpiConfig {
    /// Checks the bounds.
    pub fn validate(&self, nf: &str) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if !(1..=65536).contains(&self.max_bytes) {
            errs.push(format!("nf `{nf}` (dpi): key `max_bytes`: {} is not within 1..=65536", self.max_bytes));
        }
        if !(1..=65536).contains(&self.max_packets) {
            errs.push(format!("nf `{nf}` (dpi): key `max_packets`: {} is not within 1..=65536", self.max_packets));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// One line of the optional output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DpiRecord {
    /// The number of the flow's first packet in the input.
    pub flow_id: u64,
    /// `"TCP"`, `"UDP"` or the protocol number.
    pub proto: String,
    /// `"http"`, `"tls"`, `"ssh"`, `"dns"`, `"smtp"` or `"unknown"`.
    pub app_proto: String,
    /// The host, where the protocol names one.
    pub host: Option<String>,
    /// Initiator address.
    pub src_ip: Option<String>,
    /// Initiator port.
    pub src_port: Option<u16>,
    /// Responder address.
    pub dest_ip: Option<String>,
    /// Responder port.
    pub dest_port: Option<u16>,
}

#[derive(Default)]
struct FlowState {
    proto: u8,
    /// (client, client port, server, server port).
    tuple: Option<(IpAddr, u16, IpAddr, u16)>,
    buf: [Vec<u8>; 2],
    /// Payload-carrying events seen.
    events: u32,
}

/// The DPI NF (see the module docs).
pub struct Dpi {
    contract: Contract,
    cfg: DpiConfig,
    out: Option<BufWriter<File>>,
    flows: HashMap<FlowRef, FlowState>,
    done: HashSet<FlowRef>,
    detected: [u64; 5],
    unknown: u64,
    bytes_inspected: u64,
    after_detection: u64,
    written: u64,
    read_errors: u64,
    error: Option<String>,
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        n => n.to_string(),
    }
}

impl Dpi {
    /// A DPI NF (creates its output file, if any).
    pub fn new(common: &NfCommon, cfg: DpiConfig) -> Result<Dpi, String> {
        let out =
            match &cfg.output {
                Some(path) => Some(BufWriter::new(File::create(path).map_err(|e| {
                    format!("nf `{}` (dpi): cannot create output `{}`: {e}", common.name, path.display())
                })?)),
                None => None,
            };
        let mut subscriptions = match cfg.on {
            DpiOn::Stream => {
                let mut s = common.main_port("data", &[builtin::DATA_RDY]);
                s.push(Subscription::new("udp", builtin::PKT_UDP));
                s.push(Subscription::new("syn", builtin::PKT_TCP_SYN));
                s.push(Subscription::new("term", builtin::FLOW_TCP_TERMINATE));
                s
            }
            DpiOn::Packets => common.main_port("pkt", &[builtin::PKT_TCP, builtin::PKT_UDP]),
        };
        subscriptions.push(Subscription { from: Some("l23".into()), ..Subscription::new("end", builtin::FLOW) });
        let contract = Contract {
            name: common.name.clone(),
            kind: "dpi".into(),
            subscriptions,
            publications: vec![Publication { port: "detect".into(), event: cfg.event }],
            modifies: Modifies::default(),
            drop_reasons: vec![],
        };
        Ok(Dpi {
            contract,
            cfg,
            out,
            flows: HashMap::new(),
            done: HashSet::new(),
            detected: [0; 5],
            unknown: 0,
            bytes_inspected: 0,
            after_detection: 0,
            written: 0,
            read_errors: 0,
            error: None,
        })
    }

    /// Publishes the decision about `flow` on event `ev` and moves it to the done set.
    fn decide(
        &mut self,
        flow: FlowRef,
        st: &FlowState,
        result: Option<(Protocol, Option<String>)>,
        ev: &EventDesc,
        cx: &mut Context<'_>,
    ) {
        let mut d = EventDesc::new(self.cfg.event, cx.me(), ev.seq, ev.ts_ns);
        d.flow = Some(flow);
        d.flow_start = ev.flow_start;
        // The deciding event's snapshot: NFs that start inspecting the flow now know how far
        // its streams were at the decision (`signature_match`'s `after_dpi`).
        d.snap = ev.snap;
        d.meta.flags = ev.meta.flags & meta_flags::TO_SERVER;
        d.meta.proto = st.proto;
        d.aux = result.as_ref().map_or(u64::from(UNKNOWN_CODE), |(p, _)| u64::from(p.code()));
        cx.publish(d);
        match &result {
            Some((p, _)) => self.detected[usize::from(p.code() - 1)] += 1,
            None => self.unknown += 1,
        }
        if self.out.is_some() && self.error.is_none() {
            let (c, cp, s, sp) = match st.tuple {
                Some((c, cp, s, sp)) => (Some(c.to_string()), Some(cp), Some(s.to_string()), Some(sp)),
                None => (None, None, None, None),
            };
            let rec = DpiRecord {
                flow_id: ev.flow_start,
                proto: proto_name(st.proto),
                app_proto: result.as_ref().map_or("unknown", |(p, _)| p.name()).to_string(),
                host: result.and_then(|(_, h)| h),
                src_ip: c,
                src_port: cp,
                dest_ip: s,
                dest_port: sp,
            };
            let path = self.cfg.output.clone().unwrap_or_default();
            if crate::common::write_line(&mut self.out, &mut self.error, &path, &rec) {
                self.written += 1;
            }
        }
    }

    /// The flow ended: an undecided flow with payload is unknown; forget it.
    fn end_flow(&mut self, flow: FlowRef, ev: &EventDesc, cx: &mut Context<'_>) {
        self.done.remove(&flow);
        if let Some(st) = self.flows.remove(&flow) {
            if st.events > 0 {
                let ports = st.tuple.map_or((0, 0), |t| (t.1, t.3));
                let result = match classify(&st.buf[0], &st.buf[1], st.proto, ports) {
                    Verdict::Detected { protocol, host } => Some((protocol, host)),
                    Verdict::NeedMore { likely: Some(p) } => Some((p, None)),
                    _ => None,
                };
                self.decide(flow, &st, result, ev, cx);
            }
        }
    }
}

impl Actor for Dpi {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> ActorVerdict {
        let Some(flow) = ev.flow else { return ActorVerdict::Continue };
        let t = ev.event_type;
        if t == builtin::FLOW {
            if let Some(FlowEvent::End(_)) = FlowEvent::decode(ev.aux) {
                // In stream mode the monitor's last DATA_RDYs and TERMINATE follow a TCP end.
                if !(self.cfg.on == DpiOn::Stream && ev.meta.proto == 6) {
                    self.end_flow(flow, ev, cx);
                }
            }
            return ActorVerdict::Continue;
        }
        if t == builtin::FLOW_TCP_TERMINATE {
            self.end_flow(flow, ev, cx);
            return ActorVerdict::Continue;
        }
        let is_data = t == builtin::DATA_RDY;
        if !is_data && ev.packet.is_none() {
            return ActorVerdict::Continue;
        }
        if self.done.contains(&flow) {
            self.after_detection += 1;
            return ActorVerdict::Continue;
        }
        let max = self.cfg.max_bytes;
        let dir = usize::from(!ev.to_server());
        let st = self.flows.entry(flow).or_default();
        let (mut added, mut kept) = (0usize, 0usize);
        if is_data {
            st.proto = 6;
            let buf = &mut st.buf[dir];
            let res = cx.data_ready(ev, &mut |s| {
                let n = s.len().min(max.saturating_sub(buf.len()));
                buf.extend_from_slice(&s[..n]);
                added += s.len();
                kept += n;
            });
            if res.is_err() {
                self.read_errors += 1;
            }
        } else {
            let Some(view) = cx.view(ev) else { return ActorVerdict::Continue };
            if st.tuple.is_none() {
                let tu = Tuple::of(&view);
                let tu = if ev.to_server() { tu } else { tu.reversed() };
                st.proto = tu.proto;
                if let (Some(c), Some(cp), Some(s), Some(sp)) = (tu.src, tu.src_port, tu.dst, tu.dst_port) {
                    st.tuple = Some((c, cp, s, sp));
                }
            }
            let proto = view.proto();
            // In stream mode TCP packets only name the flow; the bytes come with DATA_RDY.
            let read = proto == 17 || (proto == 6 && self.cfg.on == DpiOn::Packets);
            let payload = view.payload();
            if read && !payload.is_empty() {
                st.proto = proto;
                let buf = &mut st.buf[dir];
                // UDP: only the first datagram of each direction.
                if proto == 6 || buf.is_empty() {
                    let n = payload.len().min(max.saturating_sub(buf.len()));
                    buf.extend_from_slice(&payload[..n]);
                    kept = n;
                }
                added = payload.len();
            }
        }
        if added == 0 {
            return ActorVerdict::Continue;
        }
        st.events = st.events.saturating_add(1);
        self.bytes_inspected += kept as u64;
        let ports = st.tuple.map_or((0, 0), |t| (t.1, t.3));
        let verdict = classify(&st.buf[0], &st.buf[1], st.proto, ports);
        let at_bound = st.buf.iter().any(|b| b.len() >= max) || st.events >= self.cfg.max_packets;
        let result = match verdict {
            Verdict::Detected { protocol, host } => Some(Some((protocol, host))),
            Verdict::Unknown => Some(None),
            Verdict::NeedMore { likely } if at_bound => Some(likely.map(|p| (p, None))),
            Verdict::NeedMore { .. } => None,
        };
        if let Some(result) = result {
            let st = self.flows.remove(&flow).unwrap_or_default();
            self.done.insert(flow);
            self.decide(flow, &st, result, ev, cx);
            // Decided: the flow's payload events are no longer delivered to this NF (the
            // flow-end events still are, to forget it).
            cx.unsubscribe_flow(ev, builtin::PKT);
            cx.unsubscribe_flow(ev, builtin::DATA_RDY);
        }
        ActorVerdict::Continue
    }

    fn finish(&mut self, _cx: &mut Context<'_>) -> Result<(), ActorError> {
        let path = self.cfg.output.clone().unwrap_or_default();
        crate::common::close_output(&mut self.out, &mut self.error, &path);
        if self.read_errors > 0 {
            self.error.get_or_insert(format!("{} stream reads failed", self.read_errors));
        }
        match &self.error {
            Some(e) => Err(ActorError { actor: self.contract.name.clone(), message: e.clone() }),
            None => Ok(()),
        }
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = Protocol::ALL
            .iter()
            .map(|p| (format!("detected_{}", p.name()), self.detected[usize::from(p.code() - 1)]))
            .collect();
        v.push(("unknown".into(), self.unknown));
        v.push(("bytes_inspected".into(), self.bytes_inspected));
        v.push(("events_after_detection".into(), self.after_detection));
        v.push(("flows_open".into(), self.flows.len() as u64));
        v.push(("records_written".into(), self.written));
        v.push(("stream_read_errors".into(), self.read_errors));
        v
    }
}

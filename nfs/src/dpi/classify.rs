//! The DPI classifiers: which application protocol a flow's first bytes are, with no I/O
//! and no state — a pure function of the bytes of each direction, the IP protocol and the
//! ports ([`classify`]), plus the protocol codes of `EVENT/DPI_DETECT`.
//!
//! **What it detects**: HTTP (request line with a known method and `HTTP/x.y`; the `Host:`
//! header is the host; a server's `HTTP/1.x` status line alone gives http without host), TLS
//! (a handshake record carrying a ClientHello — the SNI `server_name` is the host; a
//! ClientHello split over segments or records is reassembled up to the bound; a ServerHello
//! alone gives tls without host), SSH (`SSH-2.0-` or `SSH-1.99-` banner from either side),
//! DNS (UDP: a sane header and a well-formed question section, qname → host; TCP: the same
//! behind the 2-byte length prefix) and SMTP (a server `220` banner line naming SMTP/ESMTP —
//! its first word is the host — or a client `EHLO`/`HELO`). Ports never decide alone; the
//! one tie-breaker is DNS: with port 53, 5353 or 5355 on either side, the header checks are
//! relaxed (any standard opcode, up to 8 questions, the Z bit, non-empty answer sections in
//! a query).
//!
//! **Protocol codes** (the event's `aux`): 1 http, 2 tls, 3 ssh, 4 dns, 5 smtp, 255 unknown
//! ([`Protocol::code`], [`UNKNOWN_CODE`]). [`Protocol::from_name`] reads the names.
//!
//! Invariants: [`classify`] never panics, and its work is linear in the input and bounded.

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

    /// The protocol named `name` (its [`name`](Protocol::name): `http`, `tls`, ...).
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The IP protocol it usually runs over: 17 (UDP) for DNS, 6 (TCP) for the others.
    pub fn transport(self) -> u8 {
        match self {
            Protocol::Dns => 17,
            _ => 6,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn detected(p: Protocol, host: Option<&str>) -> Verdict {
        Verdict::Detected { protocol: p, host: host.map(str::to_string) }
    }

    /// A DNS query for `name` (one question, type A, class IN).
    fn dns_query(name: &str) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    #[test]
    fn one_classification_per_protocol() {
        let http = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHost: Example.org\r\n\r\n";
        assert_eq!(classify(http, b"", 6, (40000, 8080)), detected(Protocol::Http, Some("Example.org")));
        assert_eq!(classify(b"", b"SSH-2.0-OpenSSH_9.6\r\n", 6, (1, 2)), detected(Protocol::Ssh, None));
        let banner = b"220 mail.example.net ESMTP ready\r\n";
        assert_eq!(classify(b"", banner, 6, (1, 25)), detected(Protocol::Smtp, Some("mail.example.net")));
        let q = dns_query("www.example.com");
        assert_eq!(classify(&q, b"", 17, (5000, 9999)), detected(Protocol::Dns, Some("www.example.com")));
        let mut tcp = (q.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&q);
        assert_eq!(classify(&tcp, b"", 6, (5000, 53)), detected(Protocol::Dns, Some("www.example.com")));
        // A ServerHello alone: TLS without a host.
        let mut hello = vec![22, 3, 3, 0, 42, 2, 0, 0, 38, 3, 3];
        hello.extend_from_slice(&[0; 32]);
        hello.extend_from_slice(&[0, 0x13, 0x01, 0]);
        assert_eq!(classify(b"", &hello, 6, (1, 443)), detected(Protocol::Tls, None));
    }

    #[test]
    fn prefixes_wait_and_strangers_are_unknown() {
        assert_eq!(classify(b"GE", b"", 6, (1, 80)), Verdict::NeedMore { likely: None });
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nAccept: x", b"", 6, (1, 80)),
            Verdict::NeedMore { likely: Some(Protocol::Http) }
        );
        assert_eq!(classify(b"\x00\x01binary", b"\x00\x01binary", 6, (1, 80)), Verdict::Unknown);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n\r\n", b"", 1, (0, 0)), Verdict::Unknown, "not TCP or UDP");
    }

    #[test]
    fn codes_and_names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_code(u64::from(p.code())), Some(p));
            assert_eq!(Protocol::from_name(p.name()), Some(p));
        }
        assert_eq!(Protocol::from_code(u64::from(UNKNOWN_CODE)), None);
        assert_eq!(Protocol::from_name("gopher"), None);
    }
}

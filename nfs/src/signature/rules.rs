//! A documented subset of the Snort/Suricata rule language, for [`signature`](crate::signature).
//!
//! ```text
//! alert tcp any any -> 10.0.0.0/8 [80,8080] (msg:"admin page"; content:"GET"; nocase; offset:0; depth:10;
//!     content:"|0d 0a|admin"; distance:0; within:20; flow:to_server,established; sid:1000001; rev:2;
//!     classtype:web-application-attack;)
//! ```
//!
//! One rule per line; `#` starts a comment line; blank lines are skipped; a line ending in
//! `\` continues on the next one. Errors name the file and the rule's first line
//! (`rules.rules:7: unsupported option `pcre``), and every error of a file is reported.
//!
//! **Header**: `action proto src_addr src_port dir dst_addr dst_port`.
//! * action: `alert` (report), `drop` (report, and drop the matching packet and every later
//!   packet of its flow, both directions) or `reject` (as `drop`, plus a request to reset
//!   both ends: see [`signature`](crate::signature)); `pass` and `log` are refused;
//! * proto: `tcp`, `udp`, `ip` (either);
//! * addresses: `any`, an IP (v4 or v6), a CIDR, a list `[a,b,...]` (nested lists allowed),
//!   a negation `!x` / `![..]` (a list matches when some positive item matches — or it has
//!   none — and no negated item does). Variables (`$HOME_NET`) are refused;
//! * ports: `any`, `N`, `N:M`, `N:`, `:M`, lists `[80,8000:8080]`, negation `!N`, `![..]`;
//! * dir: `->` (source to destination) or `<>` (either way).
//!
//! **Options** (`name:value;` or `name;`, inside the parentheses):
//! * `msg:"..."` — the signature text (escapes `\"`, `\;`, `\\`);
//! * `content:"..."` — bytes to find: escapes `\"`, `\;`, `\\`, `\:`, `\|` and hex blocks
//!   `|0d 0a|`; a bare `;` or `"` inside is an error; empty contents and `content:!"..."`
//!   are refused;
//! * modifiers of the preceding content: `nocase`; `offset:N` and `depth:N` (the match starts at
//!   or after stream offset N / ends at most `depth` bytes after `offset`); `distance:N` (may
//!   be negative) and `within:N` (the match starts at least `distance` bytes after the end of
//!   the previous content's match and ends at most `distance + within` bytes after it; for the
//!   first content "previous" is the stream start). Absolute (`offset`/`depth`) and relative
//!   (`distance`/`within`) modifiers cannot be mixed on one content, nor repeated;
//! * `flow:` a comma list of `to_server`/`from_client`, `to_client`/`from_server`,
//!   `established` (accepted, not checked), `stateless` (accepted);
//! * `sid:N` (required, unique in the file, > 0), `rev:N` (default 1), `classtype:NAME`;
//! * anything else is an error naming the option.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Report an alert.
    Alert,
    /// Report, and drop the matching packet and every later packet of the flow.
    Drop,
    /// As [`Drop`](Action::Drop), and ask for a TCP RST to both ends.
    Reject,
}

impl Action {
    /// The rule-file keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Drop => "drop",
            Action::Reject => "reject",
        }
    }

    /// True for `drop` and `reject`: the rule blocks its flow.
    pub fn blocks(self) -> bool {
        self != Action::Alert
    }
}

/// The rule's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleProto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// Any IP protocol.
    Ip,
}

impl RuleProto {
    /// True when IP protocol number `p` is covered.
    pub fn matches(self, p: u8) -> bool {
        match self {
            RuleProto::Tcp => p == 6,
            RuleProto::Udp => p == 17,
            RuleProto::Ip => true,
        }
    }
}

/// An address condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrSpec {
    /// `any`.
    Any,
    /// An address or network.
    Net(IpNet),
    /// `!x`.
    Not(Box<AddrSpec>),
    /// `[a,b,...]`.
    List(Vec<AddrSpec>),
}

impl AddrSpec {
    /// True when `ip` satisfies the condition; an unknown address satisfies only `any`.
    pub fn matches(&self, ip: Option<IpAddr>) -> bool {
        match self {
            AddrSpec::Any => true,
            AddrSpec::Net(n) => ip.is_some_and(|ip| n.contains(&ip)),
            AddrSpec::Not(x) => ip.is_some() && !x.matches(ip),
            AddrSpec::List(v) => {
                let pos: Vec<_> = v.iter().filter(|x| !matches!(x, AddrSpec::Not(_))).collect();
                (pos.is_empty() || pos.iter().any(|x| x.matches(ip)))
                    && v.iter().filter(|x| matches!(x, AddrSpec::Not(_))).all(|x| x.matches(ip))
            }
        }
    }
}

/// A port condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// `any`.
    Any,
    /// `N`, `N:M`, `N:` (to 65535), `:M` (from 0): inclusive.
    Range(u16, u16),
    /// `!x`.
    Not(Box<PortSpec>),
    /// `[a,b,...]`.
    List(Vec<PortSpec>),
}

impl PortSpec {
    /// True when `port` satisfies the condition; an unknown port satisfies only `any`.
    pub fn matches(&self, port: Option<u16>) -> bool {
        match self {
            PortSpec::Any => true,
            PortSpec::Range(lo, hi) => port.is_some_and(|p| *lo <= p && p <= *hi),
            PortSpec::Not(x) => port.is_some() && !x.matches(port),
            PortSpec::List(v) => {
                let pos: Vec<_> = v.iter().filter(|x| !matches!(x, PortSpec::Not(_))).collect();
                (pos.is_empty() || pos.iter().any(|x| x.matches(port)))
                    && v.iter().filter(|x| matches!(x, PortSpec::Not(_))).all(|x| x.matches(port))
            }
        }
    }
}

/// `flow:to_server` / `flow:to_client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowDir {
    /// Client (initiator) to server.
    ToServer,
    /// Server to client.
    ToClient,
}

/// One `content` with its modifiers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Content {
    /// The bytes (hex blocks and escapes decoded).
    pub bytes: Vec<u8>,
    /// ASCII case-insensitive.
    pub nocase: bool,
    /// Absolute: starts at or after this stream offset.
    pub offset: Option<u64>,
    /// Absolute: ends at most this many bytes after `offset` (or 0).
    pub depth: Option<u64>,
    /// Relative: starts at least this many bytes after the previous match's end.
    pub distance: Option<i64>,
    /// Relative: ends at most `distance + within` bytes after the previous match's end.
    pub within: Option<u64>,
}

impl Content {
    /// True for a content positioned relative to the previous one.
    pub fn is_relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }
}

/// One parsed rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The action.
    pub action: Action,
    /// The protocol.
    pub proto: RuleProto,
    /// Source addresses.
    pub src: AddrSpec,
    /// Source ports.
    pub src_ports: PortSpec,
    /// `<>` rather than `->`.
    pub bidirectional: bool,
    /// Destination addresses.
    pub dst: AddrSpec,
    /// Destination ports.
    pub dst_ports: PortSpec,
    /// `msg`.
    pub msg: String,
    /// Contents, in order.
    pub contents: Vec<Content>,
    /// `flow:to_server` / `to_client`.
    pub flow: Option<FlowDir>,
    /// `flow:established` was given.
    pub established: bool,
    /// `sid`.
    pub sid: u32,
    /// `rev` (1 when absent).
    pub rev: u32,
    /// `classtype`.
    pub classtype: Option<String>,
    /// Line of the rule in its file (first line when continued).
    pub line: usize,
}

impl Rule {
    /// True when the header matches a packet (or data) going `src:sport -> dst:dport` with
    /// IP protocol `proto`, `to_server` telling its direction in the flow.
    pub fn header_matches(
        &self,
        proto: u8,
        src: (Option<IpAddr>, Option<u16>),
        dst: (Option<IpAddr>, Option<u16>),
        to_server: bool,
    ) -> bool {
        if !self.proto.matches(proto) {
            return false;
        }
        match self.flow {
            Some(FlowDir::ToServer) if !to_server => return false,
            Some(FlowDir::ToClient) if to_server => return false,
            _ => {}
        }
        let one = |a: (Option<IpAddr>, Option<u16>), b: (Option<IpAddr>, Option<u16>)| {
            self.src.matches(a.0) && self.src_ports.matches(a.1) && self.dst.matches(b.0) && self.dst_ports.matches(b.1)
        };
        one(src, dst) || (self.bidirectional && one(dst, src))
    }
}

/// Reads and parses a rule file (see [`parse_rules`]): a regular file of at most
/// [`MAX_RULES_BYTES`](runtime::files::MAX_RULES_BYTES) (a device, a FIFO or a larger file is
/// refused, never read without end).
pub fn load_rules(path: &Path) -> Result<Vec<Rule>, Vec<String>> {
    let text = runtime::files::read_text(path, runtime::files::MAX_RULES_BYTES)
        .map_err(|e| vec![format!("cannot read rules `{}`: {e}", path.display())])?;
    parse_rules(&text, &path.display().to_string())
}

/// Parses a rule file's text; `file` names it in messages. Returns every error of the file.
pub fn parse_rules(text: &str, file: &str) -> Result<Vec<Rule>, Vec<String>> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let mut sids: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        let (start, mut acc) = match pending.take() {
            Some((s, a)) => (s, a),
            None => {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                (n, String::new())
            }
        };
        if let Some(body) = line.strip_suffix('\\') {
            acc.push_str(body);
            acc.push(' ');
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(line);
        match parse_rule(&acc, start) {
            Ok(r) => {
                if let Some(first) = sids.get(&r.sid) {
                    errors.push(format!("{file}:{start}: duplicate sid {} (first at line {first})", r.sid));
                } else {
                    sids.insert(r.sid, start);
                    rules.push(r);
                }
            }
            Err(es) => errors.extend(es.into_iter().map(|e| format!("{file}:{start}: {e}"))),
        }
    }
    if let Some((start, _)) = pending {
        errors.push(format!("{file}:{start}: the file ends inside a continued line"));
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

/// Splits a header into tokens at whitespace, keeping `[...]` lists (which may hold spaces) whole.
fn header_tokens(h: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in h.chars() {
        match c {
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth = depth.checked_sub(1).ok_or("unbalanced `]` in the header")?;
                cur.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c if c.is_whitespace() => {}
            c => cur.push(c),
        }
    }
    if depth != 0 {
        return Err("unbalanced `[` in the header".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Splits a list body `a,b,[c,d]` at top-level commas.
fn split_list(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_addr(s: &str, nest: usize) -> Result<AddrSpec, String> {
    if nest > 16 {
        return Err("address lists nested too deep".into());
    }
    if s.starts_with('$') {
        return Err(format!("variables (`{s}`) are not supported: write addresses, CIDRs or `any`"));
    }
    if s == "any" {
        return Ok(AddrSpec::Any);
    }
    if let Some(rest) = s.strip_prefix('!') {
        let inner = parse_addr(rest, nest + 1)?;
        if inner == AddrSpec::Any {
            return Err("`!any` matches nothing".into());
        }
        return Ok(AddrSpec::Not(Box::new(inner)));
    }
    if let Some(body) = s.strip_prefix('[') {
        let body = body.strip_suffix(']').ok_or_else(|| format!("bad address list `{s}`"))?;
        let items =
            split_list(body).into_iter().map(|x| parse_addr(x.trim(), nest + 1)).collect::<Result<Vec<_>, _>>()?;
        if items.iter().any(|x| x == &AddrSpec::Any) && items.len() > 1 {
            return Err(format!("`any` inside the list `{s}`"));
        }
        return Ok(AddrSpec::List(items));
    }
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(AddrSpec::Net(n));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(AddrSpec::Net(IpNet::from(ip)));
    }
    Err(format!("bad address `{s}` (an IP, a CIDR, `any`, `[..]` or `!..`)"))
}

fn parse_port_num(s: &str, whole: &str) -> Result<u16, String> {
    s.parse::<u16>().map_err(|_| format!("bad port `{whole}`"))
}

fn parse_ports(s: &str, nest: usize) -> Result<PortSpec, String> {
    if nest > 16 {
        return Err("port lists nested too deep".into());
    }
    if s.starts_with('$') {
        return Err(format!("variables (`{s}`) are not supported: write ports or `any`"));
    }
    if s == "any" {
        return Ok(PortSpec::Any);
    }
    if let Some(rest) = s.strip_prefix('!') {
        let inner = parse_ports(rest, nest + 1)?;
        if inner == PortSpec::Any {
            return Err("`!any` matches nothing".into());
        }
        return Ok(PortSpec::Not(Box::new(inner)));
    }
    if let Some(body) = s.strip_prefix('[') {
        let body = body.strip_suffix(']').ok_or_else(|| format!("bad port list `{s}`"))?;
        let items =
            split_list(body).into_iter().map(|x| parse_ports(x.trim(), nest + 1)).collect::<Result<Vec<_>, _>>()?;
        return Ok(PortSpec::List(items));
    }
    if let Some((a, b)) = s.split_once(':') {
        let lo = if a.is_empty() { 0 } else { parse_port_num(a, s)? };
        let hi = if b.is_empty() { u16::MAX } else { parse_port_num(b, s)? };
        if a.is_empty() && b.is_empty() {
            return Err(format!("bad port range `{s}`"));
        }
        if lo > hi {
            return Err(format!("empty port range `{s}`"));
        }
        return Ok(PortSpec::Range(lo, hi));
    }
    let p = parse_port_num(s, s)?;
    Ok(PortSpec::Range(p, p))
}

/// Splits the option body at unquoted, unescaped `;` (escapes are kept for the decoders).
fn split_options(body: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut esc) = (false, false);
    for c in body.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' => {
                cur.push(c);
                esc = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted string in the options".into());
    }
    if !cur.trim().is_empty() {
        return Err(format!("option `{}` lacks its closing `;`", cur.trim()));
    }
    Ok(out)
}

/// The inside of a `"..."` value.
fn unquote<'a>(v: &'a str, opt: &str) -> Result<&'a str, String> {
    v.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .filter(|_| v.len() >= 2)
        .ok_or_else(|| format!("`{opt}` needs a quoted string"))
}

/// Decodes a quoted string's inside: escapes, and hex blocks when `hex`.
fn decode(s: &str, hex: bool, opt: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    let mut in_hex = false;
    let mut digits = String::new();
    let mut buf = [0u8; 4];
    while let Some(c) = chars.next() {
        if in_hex {
            match c {
                '|' => {
                    if !digits.is_empty() {
                        return Err(format!("`{opt}`: odd number of hex digits"));
                    }
                    in_hex = false;
                }
                c if c.is_ascii_whitespace() => {}
                c if c.is_ascii_hexdigit() => {
                    digits.push(c);
                    if digits.len() == 2 {
                        out.push(u8::from_str_radix(&digits, 16).map_err(|e| e.to_string())?);
                        digits.clear();
                    }
                }
                c => return Err(format!("`{opt}`: `{c}` in a hex block")),
            }
            continue;
        }
        match c {
            '\\' => match chars.next() {
                Some(e @ ('"' | ';' | '\\' | ':' | '|')) => out.push(e as u8),
                Some(e) => return Err(format!("`{opt}`: unknown escape `\\{e}`")),
                None => return Err(format!("`{opt}`: dangling `\\`")),
            },
            '|' if hex => in_hex = true,
            '"' => return Err(format!("`{opt}`: unescaped `\"` (write `\\\"`)")),
            ';' => return Err(format!("`{opt}`: unescaped `;` (write `\\;`)")),
            c => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
    if in_hex {
        return Err(format!("`{opt}`: unterminated hex block"));
    }
    Ok(out)
}

fn num<T: std::str::FromStr>(v: &str, opt: &str) -> Result<T, String> {
    v.trim().parse::<T>().map_err(|_| format!("`{opt}`: bad number `{v}`"))
}

/// Parses one (joined) rule line: the header, then the options one by one; every error of
/// the rule is returned.
fn parse_rule(s: &str, line: usize) -> Result<Rule, Vec<String>> {
    let (head, rest) = s.split_once('(').ok_or_else(|| vec!["missing the options `( ... )`".to_string()])?;
    let body = rest
        .trim_end()
        .strip_suffix(')')
        .ok_or_else(|| vec!["the options must end with `)` at the end of the rule".to_string()])?;
    let mut errors = Vec::new();
    let toks = header_tokens(head).map_err(|e| vec![e])?;
    let header = parse_header(&toks, &mut errors);
    let opts = match split_options(body) {
        Ok(o) => o,
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    };
    let mut o = Options::default();
    for opt in opts {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        if let Err(e) = o.apply(opt) {
            errors.push(e);
        }
    }
    if o.sid.is_none() {
        errors.push("missing `sid`".into());
    }
    match (header, o.sid) {
        (Some(h), Some(sid)) if errors.is_empty() => Ok(Rule {
            action: h.action,
            proto: h.proto,
            src: h.src,
            src_ports: h.src_ports,
            bidirectional: h.bidirectional,
            dst: h.dst,
            dst_ports: h.dst_ports,
            msg: o.msg.unwrap_or_default(),
            contents: o.contents,
            flow: o.flow,
            established: o.established,
            sid,
            rev: o.rev.unwrap_or(1),
            classtype: o.classtype,
            line,
        }),
        _ => Err(errors),
    }
}

/// A rule's header, parsed.
struct Header {
    action: Action,
    proto: RuleProto,
    src: AddrSpec,
    src_ports: PortSpec,
    bidirectional: bool,
    dst: AddrSpec,
    dst_ports: PortSpec,
}

/// Parses the 7 header tokens; on failure pushes every error of the header.
fn parse_header(toks: &[String], errors: &mut Vec<String>) -> Option<Header> {
    if toks.len() != 7 {
        errors.push(format!("the header needs 7 fields (action proto src sport -> dst dport), found {}", toks.len()));
        return None;
    }
    let action = match toks[0].as_str() {
        "alert" => Ok(Action::Alert),
        "drop" => Ok(Action::Drop),
        "reject" => Ok(Action::Reject),
        a @ ("pass" | "log" | "rejectsrc" | "rejectdst" | "rejectboth") => {
            Err(format!("action `{a}` is not supported (`alert`, `drop` or `reject`)"))
        }
        a => Err(format!("unknown action `{a}` (`alert`, `drop` or `reject`)")),
    };
    let proto = match toks[1].as_str() {
        "tcp" => Ok(RuleProto::Tcp),
        "udp" => Ok(RuleProto::Udp),
        "ip" => Ok(RuleProto::Ip),
        p => Err(format!("unsupported protocol `{p}` (tcp, udp, ip)")),
    };
    let bidi = match toks[4].as_str() {
        "->" => Ok(false),
        "<>" => Ok(true),
        d => Err(format!("bad direction `{d}` (`->` or `<>`)")),
    };
    let parts = (
        action,
        proto,
        parse_addr(&toks[2], 0),
        parse_ports(&toks[3], 0),
        bidi,
        parse_addr(&toks[5], 0),
        parse_ports(&toks[6], 0),
    );
    match parts {
        (Ok(action), Ok(proto), Ok(src), Ok(src_ports), Ok(bidirectional), Ok(dst), Ok(dst_ports)) => {
            Some(Header { action, proto, src, src_ports, bidirectional, dst, dst_ports })
        }
        (a, p, sa, sp, b, da, dp) => {
            errors.extend([a.err(), p.err(), sa.err(), sp.err(), b.err(), da.err(), dp.err()].into_iter().flatten());
            None
        }
    }
}

/// The options of a rule, as they are read.
#[derive(Default)]
struct Options {
    msg: Option<String>,
    contents: Vec<Content>,
    flow: Option<FlowDir>,
    established: bool,
    sid: Option<u32>,
    rev: Option<u32>,
    classtype: Option<String>,
}

/// An option's value, which it needs.
fn need<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, String> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| format!("`{name}` needs a value"))
}

impl Options {
    /// Reads one option (`name:value` or `name`, trimmed and not empty).
    fn apply(&mut self, o: &str) -> Result<(), String> {
        let (name, value) = match o.split_once(':') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (o, None),
        };
        match name {
            "msg" => {
                let v = decode(unquote(need(name, value)?, name)?, false, name)?;
                self.msg = Some(String::from_utf8(v).map_err(|_| "`msg` is not UTF-8".to_string())?);
            }
            "content" => self.content(need(name, value)?)?,
            "nocase" | "offset" | "depth" | "distance" | "within" => {
                let c = self.contents.last_mut().ok_or_else(|| format!("`{name}` needs a preceding `content`"))?;
                modifier(c, name, value)?;
            }
            "flow" => self.flow(need(name, value)?)?,
            "sid" => {
                let v: u32 = num(need(name, value)?, name)?;
                if v == 0 {
                    return Err("`sid` must be > 0".into());
                }
                if self.sid.replace(v).is_some() {
                    return Err("`sid` given twice".into());
                }
            }
            "rev" => {
                if self.rev.replace(num::<u32>(need(name, value)?, name)?).is_some() {
                    return Err("`rev` given twice".into());
                }
            }
            "classtype" => {
                let v = need(name, value)?;
                if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    return Err(format!("bad classtype `{v}`"));
                }
                self.classtype = Some(v.to_string());
            }
            other => return Err(format!("unsupported option `{other}`")),
        }
        Ok(())
    }

    /// `content:"..."`.
    fn content(&mut self, v: &str) -> Result<(), String> {
        if v.starts_with('!') {
            return Err("negated content (`content:!\"...\"`) is not supported".into());
        }
        let bytes = decode(unquote(v, "content")?, true, "content")?;
        if bytes.is_empty() {
            return Err("empty `content`".into());
        }
        self.contents.push(Content { bytes, ..Content::default() });
        Ok(())
    }

    /// `flow:a,b,...`.
    fn flow(&mut self, v: &str) -> Result<(), String> {
        for f in v.split(',').map(str::trim) {
            let d = match f {
                "to_server" | "from_client" => Some(FlowDir::ToServer),
                "to_client" | "from_server" => Some(FlowDir::ToClient),
                "established" => {
                    self.established = true;
                    None
                }
                "stateless" => None,
                other => return Err(format!("unsupported flow option `{other}`")),
            };
            if let Some(d) = d {
                if self.flow.is_some_and(|f| f != d) {
                    return Err("`flow` gives both directions".into());
                }
                self.flow = Some(d);
            }
        }
        Ok(())
    }
}

/// A modifier (`nocase`, `offset`, `depth`, `distance`, `within`) of content `c`.
fn modifier(c: &mut Content, name: &str, value: Option<&str>) -> Result<(), String> {
    let dup = || format!("`{name}` given twice for one content");
    // A bound no shorter than the content.
    let bound = |what: &str| -> Result<u64, String> {
        let v: u64 = num(need(name, value)?, name)?;
        if v < c.bytes.len() as u64 {
            return Err(format!("`{what}:{v}` is shorter than its content ({} bytes)", c.bytes.len()));
        }
        Ok(v)
    };
    match name {
        "nocase" => {
            if value.is_some() {
                return Err("`nocase` takes no value".into());
            }
            if c.nocase {
                return Err(dup());
            }
            c.nocase = true;
        }
        "offset" => {
            if c.offset.replace(num(need(name, value)?, name)?).is_some() {
                return Err(dup());
            }
        }
        "depth" => {
            let d = bound("depth")?;
            if c.depth.replace(d).is_some() {
                return Err(dup());
            }
        }
        "distance" => {
            if c.distance.replace(num(need(name, value)?, name)?).is_some() {
                return Err(dup());
            }
        }
        _ => {
            let w = bound("within")?;
            if c.within.replace(w).is_some() {
                return Err(dup());
            }
        }
    }
    if c.is_relative() && (c.offset.is_some() || c.depth.is_some()) {
        return Err("`offset`/`depth` and `distance`/`within` cannot be mixed on one content".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(rule: &str) -> Result<Rule, Vec<String>> {
        parse_rules(rule, "t.rules").map(|mut v| v.remove(0))
    }

    #[test]
    fn a_rule_with_every_option_parses() {
        let r = one("alert tcp 10.0.0.0/8 any <> ![192.0.2.1,192.0.2.2] [80,8000:] (msg:\"a \\\"b\\\"\"; \
                     content:\"GET\"; nocase; offset:1; depth:8; content:\"|0d 0a|x\"; distance:-2; within:9; \
                     flow:to_server,established; sid:7; rev:3; classtype:web-attack;)")
        .unwrap();
        assert_eq!((r.sid, r.rev, r.msg.as_str(), r.classtype.as_deref()), (7, 3, "a \"b\"", Some("web-attack")));
        assert!(r.bidirectional && r.established && r.flow == Some(FlowDir::ToServer));
        assert_eq!(r.dst_ports, PortSpec::List(vec![PortSpec::Range(80, 80), PortSpec::Range(8000, 65535)]));
        assert_eq!(
            r.contents,
            vec![
                Content { bytes: b"GET".to_vec(), nocase: true, offset: Some(1), depth: Some(8), ..Content::default() },
                Content { bytes: b"\r\nx".to_vec(), distance: Some(-2), within: Some(9), ..Content::default() },
            ]
        );
        assert!(r.header_matches(6, ("10.1.2.3".parse().ok(), Some(5)), ("192.0.2.9".parse().ok(), Some(8080)), true));
        assert!(!r.header_matches(6, ("10.1.2.3".parse().ok(), Some(5)), ("192.0.2.1".parse().ok(), Some(80)), true));
    }

    #[test]
    fn every_error_of_a_rule_is_named() {
        let e = one("pass tcp $HOME_NET any -> any 99999 (content:\"a\"; within:0; offset:1; distance:1; \
                     depth:2; pcre:\"/x/\";)")
        .unwrap_err();
        assert_eq!(
            e,
            [
                "t.rules:1: action `pass` is not supported (`alert`, `drop` or `reject`)",
                "t.rules:1: variables (`$HOME_NET`) are not supported: write addresses, CIDRs or `any`",
                "t.rules:1: bad port `99999`",
                "t.rules:1: `within:0` is shorter than its content (1 bytes)",
                "t.rules:1: `offset`/`depth` and `distance`/`within` cannot be mixed on one content",
                "t.rules:1: `offset`/`depth` and `distance`/`within` cannot be mixed on one content",
                "t.rules:1: unsupported option `pcre`",
                "t.rules:1: missing `sid`",
            ]
        );
        assert_eq!(
            one("alert tcp any any -> any any (nocase; sid:1;)").unwrap_err(),
            ["t.rules:1: `nocase` needs a preceding `content`"]
        );
        assert_eq!(
            one("alert tcp any any -> any any (content:\"a\"; nocase; nocase; sid:1; sid:2;)").unwrap_err(),
            ["t.rules:1: `nocase` given twice for one content", "t.rules:1: `sid` given twice"]
        );
    }
}

//! `after_dpi`: Signature_Match inspects a flow only once a `dpi` NF before it said the flow
//! carries a protocol — the paper's dynamic subscriptions (Figure 7c, setups 4 and 5).
//!
//! **Gating.** Until DPI decides, the matcher unsubscribes from the flow's payload events
//! (they are no longer delivered, counted by the runner). The detection event is DPI's own:
//! the subscriber's `side` does not filter it (`side` selects µStack updates only), whatever
//! snapshot it carries.
//!
//! **Catching up.** DPI needs at least the deciding event, often more (a request split over
//! segments, a reordered first segment), and those events passed while the flow was gated.
//! When the flow is cleared, the matcher reads what the TCP monitor's stream holds, from its
//! start up to the detection's snapshot frontier (which includes the deciding packet's
//! bytes), in each direction its main port inspects
//! (`direction`), and scans it: in stream mode and in packet mode alike. In packet mode the
//! packets covered by that scan are not scanned again (a packet event whose stream range ends
//! at or before the caught-up offset is skipped). So the flow is matched as the static
//! configuration matches it. Without `[stack.tcp]` there is no stream: in packet mode the
//! payloads DPI read before deciding are then not inspected — the app file gets a warning
//! ([`problems`]).
//!
//! **Checks at load** ([`problems`]): combinations under which the gate can never open, or
//! opens late, are refused or warned about, naming the NFs and the keys.

use actors::desc::{meta_flags, snapshot_update, EventDesc, FlowRef};
use actors::event::builtin;
use actors::{Chunk, Context};

use super::rules::RuleProto;
use super::{SignatureConfig, SignatureMatch};
use crate::common::{NfCommon, PayloadSource};
use crate::dpi::Protocol;

impl SignatureMatch {
    /// DPI said the flow carries the wanted protocol: inspect it from now on, after scanning
    /// what its streams hold up to the detection's snapshot frontier (see the module docs).
    pub(super) fn clear_flow(&mut self, flow: FlowRef, ev: &EventDesc, cx: &mut Context<'_>) {
        let fs = Self::flow_entry(&mut self.flows, &mut self.flows_tracked, flow, ev.flow_start);
        fs.cleared = true;
        if std::mem::take(&mut fs.gated) {
            cx.subscribe_flow(ev, builtin::PKT);
            cx.subscribe_flow(ev, builtin::DATA_RDY);
        }
        for dir in 0..2 {
            let to = ev.snap.frontier[dir];
            if to == 0 || !self.inspects[dir] {
                continue;
            }
            self.catch_up(flow, ev, dir, to, cx);
        }
    }

    /// Scans direction `dir` of the flow's stream from its start up to `to` and evaluates the
    /// rules on it (a block decided here takes effect from the flow's next packet).
    fn catch_up(&mut self, flow: FlowRef, ev: &EventDesc, dir: usize, to: u64, cx: &mut Context<'_>) {
        let to_server = dir == 0;
        let mut hits = std::mem::take(&mut self.hits);
        hits.clear();
        let m = &self.m;
        let fs = self.flows.get_mut(&flow).expect("entry made by clear_flow");
        let d = &mut fs.dirs[dir];
        m.restart(d, 0);
        let (mut n, mut gaps) = (0u64, 0u64);
        let read = cx.read_stream(flow, to_server, 0, to, &mut |c| match c {
            Chunk::Data(s) => {
                n += s.len() as u64;
                m.scan(d, s, &mut hits);
            }
            Chunk::Gap(len) => {
                m.gap(d, len);
                gaps += len;
            }
        });
        match read {
            Ok(()) => fs.caught_up[dir] = to,
            Err(_) => {
                // No stream (no TCP monitor, a UDP flow) or already released: matching
                // starts with the next event instead.
                d.started = false;
                d.offset = 0;
                hits.clear();
                n = 0;
            }
        }
        self.bytes_scanned += n;
        self.gap_bytes += gaps;
        self.pattern_matches += hits.len() as u64;
        self.hits = hits;
        let mut e = *ev;
        e.meta.flags = (e.meta.flags & !meta_flags::TO_SERVER) | if to_server { meta_flags::TO_SERVER } else { 0 };
        if n > 0 {
            self.evaluate(flow, &e, true, cx);
        }
        self.hits.clear();
    }

    /// Packet mode: whether a packet event's bytes were already scanned — by the catch-up
    /// at clearing (its stream range ends at or before the caught-up offset; `aux` is the
    /// frontier after the packet, set by the TCP monitor), or as the other half's update of
    /// the same packet (`side = "both"` delivers each packet twice; it is scanned once).
    pub(super) fn packet_scanned(&mut self, flow: FlowRef, ev: &EventDesc) -> bool {
        let Some(fs) = self.flows.get_mut(&flow) else { return false };
        let dir = usize::from(!ev.to_server());
        if fs.last_packet == Some(ev.seq) {
            return true;
        }
        fs.last_packet = Some(ev.seq);
        let caught_up = fs.caught_up[dir];
        caught_up > 0 && ev.snap.update != snapshot_update::NONE && ev.aux <= caught_up
    }
}

/// One problem of an `after_dpi` configuration: `fatal` ones refuse the app file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The gate can never open (the app is refused); otherwise a warning.
    pub fatal: bool,
    /// What is wrong, naming the NFs and keys.
    pub message: String,
}

/// The problems of matcher `m` (options `cfg`, with `after_dpi` set) whose detections come
/// from the DPI NF whose common keys are `dpi` (`None`: no `dpi` NF before it, reported
/// elsewhere); `tcp_stack` says
/// whether the app runs the TCP monitor.
pub fn problems(m: &NfCommon, cfg: &SignatureConfig, dpi: Option<&NfCommon>, tcp_stack: bool) -> Vec<Problem> {
    let mut out = Vec::new();
    let Some(proto) = cfg.after_dpi.as_deref().and_then(Protocol::from_name) else { return out };
    let Some(d) = dpi else { return out };
    let transport = proto.transport();
    let tname = if transport == 6 { "tcp" } else { "udp" };
    let say = |fatal: bool, msg: String| Problem { fatal, message: format!("nf `{}` ({}): {msg}", m.name, super::NAME) };
    // DPI must see the protocol's transport at all.
    if let Some(p) = d.filter.as_ref().and_then(|f| f.proto) {
        if !p.matches(transport) {
            out.push(say(
                true,
                format!(
                    "key `after_dpi = \"{}\"`: nf `{}` (dpi) key `filter` passes no {tname} packet, and {} runs over {tname}: DPI never says `{}`, so this NF would inspect nothing",
                    proto.name(), d.name, proto.name(), proto.name()
                ),
            ));
        }
    }
    if let Some(types) = &d.subscribe {
        let main = if transport == 6 { builtin::PKT_TCP } else { builtin::PKT_UDP };
        let sees = types.iter().any(|t| t.covers(main) || main.covers(*t) || (transport == 6 && *t == builtin::DATA_RDY));
        if !sees {
            out.push(say(
                true,
                format!(
                    "key `after_dpi = \"{}\"`: nf `{}` (dpi) key `subscribe` takes no {tname} payload events: DPI never says `{}`, so this NF would inspect nothing",
                    proto.name(), d.name, proto.name()
                ),
            ));
        }
    }
    // The matcher must be able to read the protocol's flows.
    if cfg.on == PayloadSource::Stream && transport == 17 {
        out.push(say(
            false,
            format!(
                "key `after_dpi = \"{}\"` with `on = \"stream\"`: streams are TCP only, so {} over UDP is never inspected (use `on = \"packets\"`)",
                proto.name(), proto.name()
            ),
        ));
    }
    if !cfg.parsed.is_empty() && !cfg.parsed.iter().any(|r| matches!((r.proto, transport), (RuleProto::Ip, _) | (RuleProto::Tcp, 6) | (RuleProto::Udp, 17))) {
        out.push(say(
            false,
            format!(
                "key `after_dpi = \"{}\"`: no rule in `{}` applies to {tname}, the transport of {}: this NF will raise no alert",
                proto.name(), cfg.rules.display(), proto.name()
            ),
        ));
    }
    if cfg.on == PayloadSource::Packets && !tcp_stack && transport == 6 {
        out.push(say(
            false,
            format!(
                "key `after_dpi = \"{}\"` with `on = \"packets\"` and no `[stack.tcp]`: the payloads nf `{}` (dpi) reads before it decides are not inspected (with `[stack.tcp]` this NF reads them from the stream when DPI decides)",
                proto.name(), d.name
            ),
        ));
    }
    out
}

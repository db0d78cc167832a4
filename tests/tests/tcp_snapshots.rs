//! Stack snapshots and the frontier under concurrency: the TCP monitor runs ahead of a slow
//! subscriber on another core, and the subscriber still sees, for every event, the state and
//! the stream bytes *of that event's packet* — exactly what a private stack processing the
//! packets one at a time (the reference, computed here sequentially) shows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actors::controller::link;
use actors::desc::{snapshot_update, SideSnapshot, TcpSnapshot};
use actors::event::{builtin, EventRegistry};
use actors::io::{PacketSink, PacketSource, RxStage, TxSink};
use actors::stage::Stage;
use actors::{Actor, ActorError, Context, Contract, EventDesc, Publication, Subscription, Verdict};
use runtime::executor::{run, CoreAssignment, Runnable};
use runtime::ports::gen::{generate, GenConfig};
use runtime::ports::{LinkType, PacketRecord, PortError};
use runtime::shm::Region;
use runtime::{pool, ring};
use sha2::{Digest, Sha256};
use stacks::flow::FlowKey;
use stacks::flow_table::{FlowTable, FlowTableConfig};
use stacks::parse::{parse, Transport};
use stacks::tcp::{HalfConnection, Segment, TcpConfig, TcpEvent, TcpTracker};
use stacks::tcp_monitor::TcpMonitor;
use stacks::{L23Config, L23Stack};

struct Frames(Vec<(u64, Vec<u8>)>, usize);

impl PacketSource for Frames {
    fn next_packet(&mut self) -> Result<Option<PacketRecord<'_>>, PortError> {
        let i = self.1;
        self.1 += 1;
        Ok(self.0.get(i).map(|(ts, f)| PacketRecord { ts_ns: *ts, data: f, orig_len: f.len() as u32 }))
    }
    fn bytes_read(&self) -> u64 {
        self.1 as u64
    }
}

struct NoSink;

impl PacketSink for NoSink {
    fn write(&mut self, _: u64, _: &[u8], _: u32) -> Result<(), PortError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<u64, PortError> {
        Ok(0)
    }
}

/// What the subscriber saw: per packet seq, the snapshot; per DATA_RDY, its range and bytes.
#[derive(Default, Debug, PartialEq, Eq)]
struct Seen {
    snaps: BTreeMap<u64, TcpSnapshot>,
    data: Vec<(u64, bool, u64, u64, String)>,
}

/// Decorator: publishes how far the wrapped actor has got (STYLE.md habit 3).
struct Progress<A>(A, Arc<AtomicU64>);

impl<A: Actor> Actor for Progress<A> {
    fn contract(&self) -> &Contract {
        self.0.contract()
    }
    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        self.1.fetch_max(ev.seq, Ordering::Relaxed);
        self.0.handle(ev, cx)
    }
    fn finish(&mut self, cx: &mut Context<'_>) -> Result<(), ActorError> {
        self.0.finish(cx)
    }
}

struct SlowRecorder {
    c: Contract,
    seen: Arc<Mutex<Seen>>,
    stack_at: Arc<AtomicU64>,
    max_lag: Arc<AtomicU64>,
}

impl Actor for SlowRecorder {
    fn contract(&self) -> &Contract {
        &self.c
    }
    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        std::thread::sleep(std::time::Duration::from_micros(30));
        let lag = self.stack_at.load(Ordering::Relaxed).saturating_sub(ev.seq);
        self.max_lag.fetch_max(lag, Ordering::Relaxed);
        let mut seen = self.seen.lock().unwrap();
        if ev.event_type == builtin::DATA_RDY {
            let mut h = Sha256::new();
            cx.data_ready(ev, &mut |c| {
                if let actors::Chunk::Data(s) = c {
                    h.update(s)
                }
            })
            .expect("the event's bytes are readable");
            let to = ev.snap.frontier[usize::from(!ev.to_server())];
            let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            seen.data.push((ev.seq, ev.to_server(), ev.aux, to, hex));
        } else {
            seen.snaps.insert(ev.seq, ev.snap);
        }
        Verdict::Continue
    }
}

fn side(h: &HalfConnection) -> SideSnapshot {
    SideSnapshot::new(h.next_seq, h.ack, h.window, h.state as u8, h.flags_seen, h.wscale)
}

/// The reference: one private stack, one packet at a time.
fn reference(frames: &[(u64, Vec<u8>)]) -> Seen {
    let mut table = FlowTable::new(FlowTableConfig::default());
    let mut tcp = TcpTracker::new(TcpConfig::default());
    let mut seen = Seen::default();
    let (mut ended, mut events) = (Vec::new(), Vec::new());
    let mut retired = Vec::new();
    let record = |tcp: &TcpTracker,
                  retired: &Vec<stacks::tcp::Connection>,
                  id,
                  seq,
                  events: &mut Vec<TcpEvent>,
                  seen: &mut Seen| {
        for e in events.drain(..) {
            if let TcpEvent::DataReady { dir, from, to } = e {
                let conn = tcp.get(id).or_else(|| retired.last()).unwrap();
                let mut h = Sha256::new();
                for s in conn.stream(dir).unwrap().read(from, to).unwrap().data() {
                    h.update(s);
                }
                let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
                seen.data.push((seq, dir == stacks::flow_table::Direction::ToServer, from, to, hex));
            }
        }
    };
    for (i, (ts, f)) in frames.iter().enumerate() {
        let seq = i as u64 + 1;
        let Ok(p) = parse(LinkType::Ethernet, f) else { continue };
        let Some((key, s)) = FlowKey::from_parsed(&p) else { continue };
        let flags = match p.transport {
            Transport::Tcp(t) => Some(t.flags),
            _ => None,
        };
        let obs = table.observe(key, s, flags, *ts, &mut ended);
        for e in ended.drain(..) {
            if let Some(conn) = tcp.end(e.info.id, e.reason, &mut events) {
                retired.push(conn);
                record(&tcp, &retired, e.info.id, seq, &mut events, &mut seen);
            }
        }
        let Transport::Tcp(t) = p.transport else { continue };
        let l4 = usize::from(p.l4_offset);
        let seg = Segment {
            dir: obs.dir,
            seq: t.seq,
            ack: t.ack,
            flags: t.flags,
            window: t.window,
            options: f.get(l4 + 20..l4 + usize::from(t.header_len)).unwrap_or(&[]),
            payload: p.payload(f),
        };
        let up = tcp.segment(obs.id, &seg, &mut events);
        let sender =
            if up.sender == stacks::tcp::Endpoint::Client { snapshot_update::CLIENT } else { snapshot_update::SERVER };
        let s = &up.after_sender;
        seen.snaps.insert(seq, TcpSnapshot::new(side(&s.half[0]), side(&s.half[1]), s.frontier, sender));
        record(&tcp, &retired, obs.id, seq, &mut events, &mut seen);
    }
    seen
}

#[test]
fn a_slow_subscriber_sees_each_events_own_state_and_bytes() {
    let mut frames = Vec::new();
    let cfg = GenConfig {
        flows: 40,
        seed: 21,
        udp_fraction: 0.0,
        concurrency: 8,
        response_size: (1000, 30_000),
        ..GenConfig::default()
    };
    generate(&cfg, |ts, f| {
        frames.push((ts, f.to_vec()));
        Ok::<(), ()>(())
    })
    .unwrap();
    let expected = reference(&frames);

    let reg = EventRegistry::new();
    let rx_c = Contract {
        name: "rx".into(),
        publications: vec![Publication { port: "f".into(), event: builtin::FRAME }],
        ..Default::default()
    };
    let l23 = L23Stack::new("l23", &L23Config::default(), LinkType::Ethernet);
    let stack_at = Arc::new(AtomicU64::new(0));
    let mut tcp = TcpMonitor::new("tcp", &TcpConfig::default());
    let completed = Arc::new(AtomicU64::new(0));
    tcp.set_completed(completed.clone());
    let streams = tcp.streams();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let max_lag = Arc::new(AtomicU64::new(0));
    let rec = SlowRecorder {
        c: Contract {
            name: "slow".into(),
            subscriptions: vec![
                Subscription::new("pkt", builtin::PKT_TCP),
                Subscription::new("data", builtin::DATA_RDY),
            ],
            ..Default::default()
        },
        seen: seen.clone(),
        stack_at: stack_at.clone(),
        max_lag: max_lag.clone(),
    };
    let plan = link(&[&rx_c, l23.contract(), tcp.contract(), rec.contract()], &reg).unwrap();

    let region = Region::create(&format!("snap{}", std::process::id()), 32 << 20).unwrap();
    let (alloc, release, view) = pool::create(&region, "p", 1024, 2048).unwrap();
    let mut rings: Vec<_> =
        (0..4).map(|i| ring::create::<EventDesc>(&region, &format!("r{i}"), 512).unwrap()).collect();
    let (p3, c3) = rings.pop().unwrap();
    let (p2, c2) = rings.pop().unwrap();
    let (p1, c1) = rings.pop().unwrap();
    let (p0, c0) = rings.pop().unwrap();
    let (rx, _, _) = RxStage::new(Box::new(Frames(frames, 0)), alloc, p0, Arc::new(AtomicBool::new(false)));
    let (s1, _) = Stage::new(Box::new(l23), plan.actors[1].clone(), c0, p1, view.clone());
    let (s2, tcp_slot) =
        Stage::new(Box::new(Progress(tcp, stack_at.clone())), plan.actors[2].clone(), c1, p2, view.clone());
    let (s3, slow_slot) = Stage::new(Box::new(rec), plan.actors[3].clone(), c2, p3, view.clone());
    let s3 = s3.with_streams(streams);
    let (mut tx, _) = TxSink::new(c3, release, view.clone(), Box::new(NoSink));
    tx.set_completed(completed);
    let allowed = runtime::sys::allowed_cpus().unwrap();
    let (a, b) = (allowed[0], *allowed.get(1).unwrap_or(&allowed[0]));
    let core_a: Vec<Box<dyn Runnable>> = vec![Box::new(rx), Box::new(s1), Box::new(s2)];
    let core_b: Vec<Box<dyn Runnable>> = vec![Box::new(s3), Box::new(tx)];
    let assignments = if a == b {
        vec![CoreAssignment { core: a, actors: core_a.into_iter().chain(core_b).collect() }]
    } else {
        vec![CoreAssignment { core: a, actors: core_a }, CoreAssignment { core: b, actors: core_b }]
    };
    run(assignments, Arc::new(AtomicBool::new(false))).unwrap();
    assert!(tcp_slot.lock().unwrap().finished && slow_slot.lock().unwrap().finished);
    assert!(view.stats().balanced());

    let seen = seen.lock().unwrap();
    assert_eq!(seen.snaps.len(), expected.snaps.len(), "one primary PKT/TCP event per TCP packet");
    for (seq, want) in &expected.snaps {
        assert_eq!(seen.snaps.get(seq), Some(want), "snapshot of packet {seq}");
    }
    assert_eq!(seen.data.len(), expected.data.len());
    for (got, want) in seen.data.iter().zip(&expected.data) {
        assert_eq!(got, want, "DATA_RDY");
    }
    let lag = max_lag.load(Ordering::Relaxed);
    assert!(lag > 50, "the stack should have run ahead of the slow subscriber (max lag {lag} packets)");
    eprintln!("the stack ran up to {lag} packets ahead of the subscriber");
}

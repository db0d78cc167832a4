//! A chain of stages over real rings, pool and executor, without any µStack: published
//! events that reference a packet hold their own buffer reference, drops are counted where
//! they happen, and the pool balances at the end.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use actors::controller::link;
use actors::event::{builtin, EventRegistry, EventType};
use actors::io::{PacketSink, PacketSource, RxStage, TxSink};
use actors::stage::Stage;
use actors::{Actor, Context, Contract, EventDesc, Publication, Subscription, Verdict};
use runtime::executor::{run, CoreAssignment, Runnable};
use runtime::ports::{PacketRecord, PortError};
use runtime::shm::Region;
use runtime::{pool, ring};

struct Frames {
    frames: Vec<Vec<u8>>,
    next: usize,
}

impl PacketSource for Frames {
    fn next_packet(&mut self) -> Result<Option<PacketRecord<'_>>, PortError> {
        let i = self.next;
        self.next += 1;
        Ok(self.frames.get(i).map(|f| PacketRecord { ts_ns: i as u64, data: f, orig_len: f.len() as u32 }))
    }
    fn bytes_read(&self) -> u64 {
        self.next as u64
    }
}

struct Count(Arc<Mutex<Vec<u64>>>);

impl PacketSink for Count {
    fn write(&mut self, ts_ns: u64, _data: &[u8], _orig_len: u32) -> Result<(), PortError> {
        self.0.lock().unwrap().push(ts_ns);
        Ok(())
    }
    fn finish(&mut self) -> Result<u64, PortError> {
        Ok(self.0.lock().unwrap().len() as u64)
    }
}

/// Publishes an ECHO about every frame (with the packet), drops every third frame.
struct Echo {
    c: Contract,
    echo: EventType,
}

impl Actor for Echo {
    fn contract(&self) -> &Contract {
        &self.c
    }
    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let mut e = EventDesc::new(self.echo, 0, ev.seq, ev.ts_ns);
        e.packet = ev.packet;
        cx.publish(e);
        if ev.seq.is_multiple_of(3) {
            Verdict::Drop(0)
        } else {
            Verdict::Continue
        }
    }
}

/// Counts ECHO events, reading their packet; stops every fifth one.
struct Sink {
    c: Contract,
    seen: u64,
}

impl Actor for Sink {
    fn contract(&self) -> &Contract {
        &self.c
    }
    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let h = ev.packet.expect("echo carries the packet");
        assert_eq!(u64::from(cx.packet_bytes(h)[0]), ev.seq % 251, "the packet an echo names");
        self.seen += 1;
        if self.seen.is_multiple_of(5) {
            Verdict::Drop(0)
        } else {
            Verdict::Continue
        }
    }
}

fn sub(event: EventType) -> Vec<Subscription> {
    vec![Subscription::new("in", event)]
}

#[test]
fn published_events_hold_references_and_the_pool_balances() {
    let n = 3000u64;
    let mut reg = EventRegistry::new();
    let echo_t = reg.register("EVENT/ECHO").unwrap();
    let rx_c = Contract {
        name: "rx".into(),
        publications: vec![Publication { port: "f".into(), event: builtin::FRAME }],
        ..Default::default()
    };
    let echo = Echo {
        c: Contract {
            name: "echo".into(),
            subscriptions: sub(builtin::FRAME),
            publications: vec![Publication { port: "out".into(), event: echo_t }],
            drop_reasons: vec!["every third".into()],
            ..Default::default()
        },
        echo: echo_t,
    };
    let sink = Sink {
        c: Contract {
            name: "sink".into(),
            subscriptions: sub(builtin::EVENT),
            drop_reasons: vec!["every fifth".into()],
            ..Default::default()
        },
        seen: 0,
    };
    let plan = link(&[&rx_c, echo.contract(), sink.contract()], &reg).unwrap();

    let region = Region::create(&format!("chain{}", std::process::id()), 8 << 20).unwrap();
    let (alloc, release, view) = pool::create(&region, "p", 16, 256).unwrap();
    let (p0, c0) = ring::create::<EventDesc>(&region, "r0", 4).unwrap();
    let (p1, c1) = ring::create::<EventDesc>(&region, "r1", 4).unwrap();
    let (p2, c2) = ring::create::<EventDesc>(&region, "r2", 4).unwrap();
    let frames = (1..=n).map(|s| vec![(s % 251) as u8; 60]).collect();
    let (rx, rx_slot, _) =
        RxStage::new(Box::new(Frames { frames, next: 0 }), alloc, p0, Arc::new(AtomicBool::new(false)));
    let (s1, slot1) = Stage::new(Box::new(echo), plan.actors[1].clone(), c0, p1, view.clone());
    let (s2, slot2) = Stage::new(Box::new(sink), plan.actors[2].clone(), c1, p2, view.clone());
    let written = Arc::new(Mutex::new(Vec::new()));
    let (tx, tx_slot) = TxSink::new(c2, release, view.clone(), Box::new(Count(written.clone())));
    let actors: Vec<Box<dyn Runnable>> = vec![Box::new(rx), Box::new(s1), Box::new(s2), Box::new(tx)];
    let core = runtime::sys::allowed_cpus().unwrap()[0];
    run(vec![CoreAssignment { core, actors }], Arc::new(AtomicBool::new(false))).unwrap();

    let rx = rx_slot.lock().unwrap().clone();
    let tx = tx_slot.lock().unwrap().clone();
    let (s1, s2) = (slot1.lock().unwrap().clone(), slot2.lock().unwrap().clone());
    assert_eq!(rx.packets_in, n);
    assert_eq!(s1.published, n);
    assert_eq!(s1.drops.get("every third"), Some(&(n / 3)));
    assert_eq!(s2.handled_total(), n, "the sink sees every echo, including those of dropped packets");
    assert_eq!(s2.passed, n, "and passes the frames on without handling them");
    assert_eq!(s2.drops.get("every fifth"), Some(&(n / 5)));
    assert_eq!(tx.packets_dropped(), n / 3);
    assert_eq!(tx.packets_out, n - n / 3);
    assert_eq!(written.lock().unwrap().len() as u64, n - n / 3);
    assert_eq!(tx.event_drops.values().sum::<u64>(), n / 5);
    assert_eq!(tx.released, 2 * n, "one release per descriptor holding the packet");
    let st = view.stats();
    assert!(st.balanced(), "{st:?}");
    assert_eq!(st.allocated, n);
    assert_eq!(st.bad_release, 0);
}

//! Sharding flows across several instances of the µStacks (mode d).
//!
//! The [`ShardSplitter`] reads RX's ring, parses just enough of each frame to find its flow
//! key, and sends the frame to stack instance `symmetric_hash(key) % K` — both directions of
//! a connection to the same instance, as a NIC's symmetric RSS would. Frames without a flow
//! (non-IP, later fragments, malformed) go to instance 0. Every other instance gets a skip
//! marker for the packet (so the merger never waits on an instance with nothing to send
//! while the others hold the pool's buffers). The end marker goes to every instance.
//!
//! Each instance is an ordinary chain of stack stages (L2/3 with its own flow-id range,
//! see [`L23Stack::with_shard`](crate::l23::L23Stack::with_shard), then the TCP monitor).
//! Their outputs meet again in a [`SeqMerger`](actors::parallel::SeqMerger), which restores
//! the input's order by packet number, so the network functions after it see exactly the
//! events a single stack would raise. Flow timeouts included: the skip markers carry every
//! packet's time, and a stack stage learns it from them ([`actors::Actor::tick`]), so each
//! instance ends its timed-out flows at the same packet as a single stack would.
//!
//! [`ShardedStreams`] lets the NFs read the bytestreams of every instance: it routes a
//! flow to the instance whose flow-id range holds it.

use std::sync::Arc;

use actors::contract::{StreamAccess, StreamReadError};
use actors::desc::{EventDesc, FlowRef};
use actors::parallel::FanOut;
use runtime::executor::{PollResult, Runnable};
use runtime::pool::PoolView;
use runtime::ports::LinkType;
use runtime::ring::{Consumer, Producer};

use crate::flow::FlowKey;
use crate::parse::parse;

const BURST: usize = 32;

/// Spreads frames over stack instances by flow (see the module docs).
pub struct ShardSplitter {
    input: Consumer<EventDesc>,
    out: FanOut,
    pool: PoolView,
    link: LinkType,
    inbuf: Vec<EventDesc>,
    end: bool,
    /// When set, a frame's instance is its receive queue (noted by RX per pool buffer:
    /// a DPDK port whose RSS already spread the flows over one queue per instance).
    queues: Option<Arc<actors::io::Ingress>>,
    /// Frames sent to each instance.
    pub counts: Vec<u64>,
}

impl ShardSplitter {
    /// A splitter from `input` over `outputs` (one per instance).
    pub fn new(
        input: Consumer<EventDesc>,
        outputs: Vec<Producer<EventDesc>>,
        pool: PoolView,
        link: LinkType,
    ) -> ShardSplitter {
        let n = outputs.len();
        ShardSplitter {
            input,
            out: FanOut::new(outputs),
            pool,
            link,
            inbuf: Vec::with_capacity(BURST),
            end: false,
            queues: None,
            counts: vec![0; n],
        }
    }

    /// Sends each frame to the instance of its receive queue instead of hashing its flow
    /// (`mbox run --dpdk-shard queue`): the device's symmetric RSS chose the queue by flow,
    /// so both directions of a connection still meet in one instance, and nothing is parsed
    /// here.
    pub fn with_queues(mut self, queues: Arc<actors::io::Ingress>) -> ShardSplitter {
        self.queues = Some(queues);
        self
    }

    fn shard_of(&self, ev: &EventDesc) -> usize {
        let Some(h) = ev.packet else { return 0 };
        if let Some(q) = &self.queues {
            return usize::from(q.get(h.index())) % self.out.len();
        }
        match parse(self.link, self.pool.data(h)).ok().and_then(|p| FlowKey::from_parsed(&p)) {
            Some((key, _)) => key.symmetric_hash() as usize % self.out.len(),
            None => 0,
        }
    }
}

impl Runnable for ShardSplitter {
    fn name(&self) -> &str {
        "shard-split"
    }

    fn poll(&mut self) -> PollResult {
        let mut work = self.out.flush();
        if self.out.blocked() {
            return PollResult::from_work(work);
        }
        if self.end {
            return PollResult::Finished;
        }
        let mut inbuf = std::mem::take(&mut self.inbuf);
        inbuf.clear();
        let n = self.input.pop_burst(&mut inbuf, BURST);
        for ev in &inbuf {
            if ev.is_end() {
                for i in 0..self.out.len() {
                    self.out.push(i, *ev);
                }
                self.end = true;
                break;
            }
            let s = self.shard_of(ev);
            self.counts[s] += 1;
            for i in 0..self.out.len() {
                self.out.push(i, if i == s { *ev } else { EventDesc::skip(ev.seq, ev.ts_ns) });
            }
        }
        self.inbuf = inbuf;
        work += n + self.out.flush();
        PollResult::from_work(work)
    }
}

/// Reads the bytestreams of sharded TCP monitors (see the module docs).
pub struct ShardedStreams {
    /// `(first flow-table slot of the instance, its streams)`, by instance.
    pub shards: Vec<(u32, Arc<dyn StreamAccess>)>,
}

impl ShardedStreams {
    fn route(&self, flow: FlowRef) -> Option<&Arc<dyn StreamAccess>> {
        self.shards.iter().rev().find(|(base, _)| flow.index() >= *base).map(|(_, s)| s)
    }
}

impl StreamAccess for ShardedStreams {
    fn read(
        &self,
        flow: FlowRef,
        to_server: bool,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(actors::contract::Chunk<'_>),
    ) -> Result<(), StreamReadError> {
        self.route(flow).ok_or(StreamReadError::NoConnection(flow))?.read(flow, to_server, from, to, f)
    }

    fn live_frontier(&self, flow: FlowRef, to_server: bool) -> Option<u64> {
        self.route(flow)?.live_frontier(flow, to_server)
    }

    fn region_blocks(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for (k, (_, s)) in self.shards.iter().enumerate() {
            out.extend(s.region_blocks().into_iter().map(|(n, b)| (format!(".{k}{n}"), b)));
        }
        out
    }

    /// Shard `k`'s streams go under `name.k`.
    fn share(&self, region: &std::sync::Arc<runtime::shm::Region>, name: &str, create: bool) -> Result<(), String> {
        for (k, (_, s)) in self.shards.iter().enumerate() {
            s.share(region, &format!("{name}.{k}"), create)?;
        }
        Ok(())
    }
}

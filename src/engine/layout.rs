//! Step 5's plan: the chain's layout — which stages run, in what order, and every shared
//! ring between them — computed once, before the shared-memory region exists.
//!
//! A [`Layout`] lists the mode d stack shards (if any), the chain's nodes after them (a
//! single stage, or a parallel group behind a splitter and a merger) and every [`Ring`] by
//! its two [`End`]s, in the order the rings are created (ring `i` is `link{i}` in the
//! region). The region is sized from it ([`Layout::region_size`]) and the wiring
//! ([`super::wire`]) takes each stage's input and output from it, so the two cannot
//! disagree:
//!
//! ```text
//! rx -> n1 -> … -> tx                                  (modes a, b, c; and d without shards)
//! rx -> shard-split -> K × (l23.k -> tcp.k) -> shard-merge -> n1 -> … -> tx   (mode d)
//! a group node: split[a+b] -> a, b -> merge[a+b]
//! ```

use std::fmt;

use actors::controller::Plan;
use actors::EventDesc;

use crate::app::RuntimeConfig;

/// One end of a ring: who writes into it or reads from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The RX stage.
    Rx,
    /// The TX sink.
    Tx,
    /// A stage, by its (instance) name.
    Stage(String),
    /// Mode d: the splitter that spreads frames over the stack shards.
    ShardSplit,
    /// Mode d: the merger that puts the shards' outputs back in order.
    ShardMerge,
    /// A parallel group's splitter, by the group's label (`a+b`).
    Split(String),
    /// A parallel group's merger, by the group's label.
    Merge(String),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Rx => f.write_str("rx"),
            End::Tx => f.write_str("tx"),
            End::Stage(name) => f.write_str(name),
            End::ShardSplit => f.write_str("shard-split"),
            End::ShardMerge => f.write_str("shard-merge"),
            End::Split(group) => write!(f, "split[{group}]"),
            End::Merge(group) => write!(f, "merge[{group}]"),
        }
    }
}

/// One ring: written by `from`, read by `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ring {
    /// The writer.
    pub from: End,
    /// The reader.
    pub to: End,
}

impl Ring {
    /// The ring's name in reports: `from -> to`.
    pub fn label(&self) -> String {
        format!("{} -> {}", self.from, self.to)
    }
}

/// The shared-memory name of ring `i`.
pub(crate) fn shm_name(i: usize) -> String {
    format!("link{i}")
}

/// A node of the chain after the stacks (or after the shard merge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// One stage: a plan index.
    Stage(usize),
    /// Mode d: NFs that run in parallel (plan indices), behind a splitter and a merger.
    Group(Vec<usize>),
}

/// The name of shard `shard`'s instance of stack `name`: `name` for shard 0, `name.k` for
/// the others.
pub(crate) fn instance_name(name: &str, shard: usize) -> String {
    if shard == 0 {
        name.to_string()
    } else {
        format!("{name}.{shard}")
    }
}

/// The chain's layout (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// Mode d with shards: per shard, its stack instances in chain order (plan index,
    /// instance name). Empty otherwise.
    pub shards: Vec<Vec<(usize, String)>>,
    /// The nodes after the stacks' shards (all of the plan after RX when not sharded).
    pub nodes: Vec<Node>,
    /// Every ring, in creation order.
    pub rings: Vec<Ring>,
}

impl Layout {
    /// The layout of `plan`, whose actors 1..=`n_stacks` are the stacks: sharded over
    /// `1 + extra_shards` instances when `extra_shards > 0`; `groups` (plan indices, each
    /// consecutive) run in parallel.
    pub fn new(plan: &Plan, n_stacks: usize, extra_shards: usize, groups: &[Vec<usize>]) -> Layout {
        let name_of = |k: usize| plan.actors[k].name.clone();
        let shards: Vec<Vec<(usize, String)>> = if extra_shards == 0 {
            Vec::new()
        } else {
            (0..=extra_shards).map(|s| (1..=n_stacks).map(|k| (k, instance_name(&name_of(k), s))).collect()).collect()
        };
        let mut nodes = Vec::new();
        let mut k = if shards.is_empty() { 1 } else { 1 + n_stacks };
        while k < plan.actors.len() {
            match groups.iter().find(|g| g[0] == k) {
                Some(g) => {
                    k += g.len();
                    nodes.push(Node::Group(g.clone()));
                }
                None => {
                    nodes.push(Node::Stage(k));
                    k += 1;
                }
            }
        }
        let mut layout = Layout { shards, nodes, rings: Vec::new() };
        layout.rings = layout.list_rings(plan);
        layout
    }

    /// The label of a group: its members' names joined by `+`.
    pub fn group_label(plan: &Plan, members: &[usize]) -> String {
        members.iter().map(|&k| plan.actors[k].name.as_str()).collect::<Vec<_>>().join("+")
    }

    /// Where a node is entered.
    fn entry(plan: &Plan, node: &Node) -> End {
        match node {
            Node::Stage(k) => End::Stage(plan.actors[*k].name.clone()),
            Node::Group(members) => End::Split(Layout::group_label(plan, members)),
        }
    }

    /// Every ring, in creation order.
    fn list_rings(&self, plan: &Plan) -> Vec<Ring> {
        let mut rings = Vec::new();
        let mut ring = |from: End, to: End| rings.push(Ring { from, to });
        let after_stacks = self.nodes.first().map_or(End::Tx, |n| Layout::entry(plan, n));
        if self.shards.is_empty() {
            ring(End::Rx, after_stacks);
        } else {
            ring(End::Rx, End::ShardSplit);
            for instances in &self.shards {
                let mut from = End::ShardSplit;
                for (_, name) in instances {
                    ring(from, End::Stage(name.clone()));
                    from = End::Stage(name.clone());
                }
                ring(from, End::ShardMerge);
            }
            ring(End::ShardMerge, after_stacks);
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let next = self.nodes.get(i + 1).map_or(End::Tx, |n| Layout::entry(plan, n));
            match node {
                Node::Stage(k) => ring(End::Stage(plan.actors[*k].name.clone()), next),
                Node::Group(members) => {
                    let label = Layout::group_label(plan, members);
                    for &k in members {
                        ring(End::Split(label.clone()), End::Stage(plan.actors[k].name.clone()));
                        ring(End::Stage(plan.actors[k].name.clone()), End::Merge(label.clone()));
                    }
                    ring(End::Merge(label), next);
                }
            }
        }
        rings
    }

    /// Bytes of shared memory the run needs: the packet pool and every ring of the layout,
    /// each with room for its header, and a margin.
    pub fn region_size(&self, rt: &RuntimeConfig) -> usize {
        let pool = rt.pool_buffers as usize * (rt.buffer_size as usize + 64) + 64 * 1024;
        let ring = ring_capacity(rt) * std::mem::size_of::<EventDesc>() + 64 * 1024;
        pool + self.rings.len() * ring + (1 << 20)
    }
}

impl Layout {
    /// A hash of everything a process attaching to the run's region must agree on: the mbox
    /// version, every ring (its ends, in creation order) and its capacity, the packet pool,
    /// and the stream stores (name and size). Recorded in the region header by the run and
    /// recomputed by `mbox nf`, which refuses a region of another layout.
    pub fn hash(&self, rt: &RuntimeConfig, stream_blocks: &[(String, usize)]) -> u64 {
        let labels: Vec<String> = self.rings.iter().map(Ring::label).collect();
        let text = format!(
            "mbox {} | rings {:?} x {} | pool {} x {} | streams {:?}",
            env!("CARGO_PKG_VERSION"),
            labels,
            ring_capacity(rt),
            rt.pool_buffers,
            rt.buffer_size,
            stream_blocks
        );
        // FNV-1a, 64 bits; never 0 (0 means "no layout recorded").
        let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        h.max(1)
    }
}

/// The name under which the TCP monitor's streams are placed in the region (`streams.tcp`,
/// and `streams.tcp.K` per shard in mode d).
pub(crate) const STREAMS_NAME: &str = "tcp";

/// Bytes of region the stream stores need, each with room for alignment.
pub(crate) fn streams_size(blocks: &[(String, usize)]) -> usize {
    blocks.iter().map(|(_, b)| b + 4096).sum()
}

/// Descriptors per ring: `[runtime] ring_capacity` rounded up to a power of two.
pub(crate) fn ring_capacity(rt: &RuntimeConfig) -> usize {
    (rt.ring_capacity as usize).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use crate::engine::{build::build, Mode};
    use runtime::ports::LinkType;

    fn labels(l: &Layout) -> Vec<String> {
        l.rings.iter().map(Ring::label).collect()
    }

    const APP: &str = "[stack.tcp]\n[[nf]]\nname = \"a\"\nkind = \"flow_stats\"\noutput = \"/dev/null\"\n[[nf]]\nname = \"b\"\nkind = \"flow_stats\"\noutput = \"/dev/null\"\n[[nf]]\nname = \"c\"\nkind = \"flow_stats\"\noutput = \"/dev/null\"\n";

    #[test]
    fn one_ring_between_consecutive_stages() {
        let app = App::parse(APP, "t").unwrap();
        let built = build(&app, LinkType::Ethernet, Mode::C, None).unwrap();
        let l = Layout::new(&built.plan, 2, 0, &[]);
        assert_eq!(labels(&l), ["rx -> l23", "l23 -> tcp", "tcp -> a", "a -> b", "b -> c", "c -> tx"]);
    }

    #[test]
    fn shards_and_groups() {
        let app = App::parse(APP, "t").unwrap();
        let built = build(&app, LinkType::Ethernet, Mode::D, None).unwrap();
        let l = Layout::new(&built.plan, 2, 1, &[vec![3, 4]]);
        let want = [
            "rx -> shard-split",
            "shard-split -> l23",
            "l23 -> tcp",
            "tcp -> shard-merge",
            "shard-split -> l23.1",
            "l23.1 -> tcp.1",
            "tcp.1 -> shard-merge",
            "shard-merge -> split[a+b]",
            "split[a+b] -> a",
            "a -> merge[a+b]",
            "split[a+b] -> b",
            "b -> merge[a+b]",
            "merge[a+b] -> c",
            "c -> tx",
        ];
        assert_eq!(labels(&l), want);
        let rt = &app.runtime;
        assert_eq!(
            l.region_size(rt) - Layout { rings: Vec::new(), ..l.clone() }.region_size(rt),
            14 * (1024 * 64 + 1024 * std::mem::size_of::<EventDesc>())
        );
    }
}

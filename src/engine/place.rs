//! Step 4 of a run: place each actor on a core, and hand each core its runnables.
//!
//! Placement follows `--single-core` (everything on the first allowed CPU), else the core
//! map, else the documented default placement (stacks with RX, NFs spread over the other
//! cores, TX with the last NF), with mode d's extra stack shards each on a core of its own where there are
//! cores. Roles come from the plan ([`actors::controller::PlannedActor::role`]): the engine
//! never recognises a stack by its kind's name.

use std::collections::BTreeMap;

use actors::controller::Plan;
use actors::ActorRole;
use runtime::coremap::{default_placement, Placement, Role};
use runtime::executor::{CoreAssignment, Runnable};
use runtime::sys;

use super::layout::instance_name;
use super::{RunError, RunOptions};

/// All actor names in chain order, with their roles: rx (the plan's first actor), the
/// stacks, the NFs, tx.
pub fn actor_roles(plan: &Plan) -> Vec<(String, Role)> {
    let mut v: Vec<(String, Role)> = plan
        .actors
        .iter()
        .map(|a| {
            let role = match a.role() {
                _ if a.index == 0 => Role::Io,
                ActorRole::Stack => Role::Stack,
                ActorRole::Nf => Role::Nf,
            };
            (a.name.clone(), role)
        })
        .collect();
    v.push(("tx".into(), Role::Sink));
    v
}

/// Places every actor of `plan`, and the stack instances of `extra_shards` more shards
/// (named `l23.1`, `tcp.1`, ...), as `opts` asks.
pub(super) fn place(opts: &RunOptions, plan: &Plan, extra_shards: usize) -> Result<Placement, RunError> {
    let mut roles = actor_roles(plan);
    let stacks: Vec<String> =
        plan.actors.iter().filter(|a| a.index > 0 && a.role() == ActorRole::Stack).map(|a| a.name.clone()).collect();
    for k in 1..=extra_shards {
        roles.extend(stacks.iter().map(|s| (instance_name(s, k), Role::Stack)));
    }
    let names: Vec<String> = roles.iter().map(|(n, _)| n.clone()).collect();
    let allowed = sys::allowed_cpus().map_err(|e| RunError::Setup(format!("reading the CPU affinity: {e}")))?;
    Ok(match &opts.core_map {
        _ if opts.single_core => Placement { cores: names.iter().map(|n| (n.clone(), allowed[0])).collect() },
        Some(map) => map.place(&names, &allowed)?,
        None => {
            let mut p = default_placement(&roles, &allowed);
            // Shard k's stacks on its own core where there are cores.
            for (name, core) in &mut p.cores {
                if let Some(k) = name.rsplit_once('.').and_then(|(_, k)| k.parse::<usize>().ok()) {
                    *core = allowed[k % allowed.len()];
                }
            }
            p
        }
    })
}

/// Each used core with its runnables, in placement order; each helper (splitter, merger)
/// right after the actor it runs with.
pub(super) fn assign(
    placement: &Placement,
    mut runnables: BTreeMap<String, Box<dyn Runnable>>,
    mut helpers: Vec<(String, Box<dyn Runnable>)>,
) -> Vec<CoreAssignment> {
    placement
        .by_core()
        .into_iter()
        .map(|(core, actor_names)| {
            let mut list: Vec<Box<dyn Runnable>> = Vec::new();
            for n in &actor_names {
                if let Some(r) = runnables.remove(n) {
                    list.push(r);
                }
                for (owner, h) in std::mem::take(&mut helpers) {
                    if &owner == n {
                        list.push(h);
                    } else {
                        helpers.push((owner, h));
                    }
                }
            }
            CoreAssignment { core, actors: list }
        })
        .collect()
}

//! NF supervision in the engine: each NF's `on_failure` policy (app-file key, see
//! [`actors::supervise`]) handed to its stage, with the means to rebuild it.
//!
//! * Every NF of the plan gets one more drop reason, [`NF_FAILED`], after its own: what its
//!   stage drops under policy `drop` and what was lost in a failure is counted under it. It
//!   is added to the plan after linking (not to the contract, where the controller would
//!   take the NF for a dropper when it forms parallel groups), identically in the run and
//!   in an NF process (both build the plan with `build_for`).
//! * Policy `restart` rebuilds the NF the way the run built it (`build_for` with only this
//!   NF built for real, wrapped in its observer when the run records logs; mode a: its
//!   private chain with fresh private stacks) and takes the fresh actor.

use std::collections::BTreeMap;
use std::sync::Arc;

use actors::controller::Plan;
use actors::supervise::{Rebuild, Supervisor, NF_FAILED};
use runtime::ports::LinkType;

use super::build::{build_for, Built};
use super::{Logs, Mode};
use crate::app::App;

/// Adds [`NF_FAILED`] to the drop reasons of every NF of `plan` that lacks it.
pub(super) fn add_failure_reasons(app: &App, plan: &mut Plan) {
    for nf in &app.nfs {
        if let Some(k) = plan.index_of(&nf.common.name) {
            let reasons = &mut plan.actors[usize::from(k)].drop_reasons;
            if !reasons.iter().any(|r| r == NF_FAILED) {
                reasons.push(NF_FAILED.into());
            }
        }
    }
}

/// The index of [`NF_FAILED`] among the drop reasons of plan actor `k` (0 if it has none,
/// which [`add_failure_reasons`] rules out for NFs).
pub(super) fn failure_reason(plan: &Plan, k: usize) -> u16 {
    plan.actors.get(k).and_then(|a| a.drop_reasons.iter().position(|r| r == NF_FAILED)).unwrap_or(0) as u16
}

/// A builder of fresh instances of NF `name`, as the run built it.
pub(super) fn rebuild(app: &App, link: LinkType, mode: Mode, logs: Option<&Logs>, name: &str) -> Rebuild {
    let (app, logs, name) = (app.clone(), logs.cloned(), name.to_string());
    Arc::new(move || {
        let Built { actors, plan, .. } =
            build_for(&app, link, mode, logs.as_ref(), Some(&name), None).map_err(|e| e.to_string())?;
        let k = plan.index_of(&name).ok_or_else(|| format!("no NF named `{name}`"))?;
        actors.into_iter().nth(usize::from(k) - 1).ok_or_else(|| format!("no actor for NF `{name}`"))
    })
}

/// A supervisor for every NF of `app`, by name.
pub(super) fn supervisors(
    app: &App,
    plan: &Plan,
    link: LinkType,
    mode: Mode,
    logs: Option<&Logs>,
) -> BTreeMap<String, Supervisor> {
    app.nfs
        .iter()
        .filter_map(|nf| {
            let name = &nf.common.name;
            let k = usize::from(plan.index_of(name)?);
            let policy = nf.common.on_failure;
            let rebuild =
                (policy == actors::supervise::OnFailure::Restart).then(|| rebuild(app, link, mode, logs, name));
            Some((name.clone(), Supervisor::new(policy, rebuild, failure_reason(plan, k))))
        })
        .collect()
}

//! Live reconfiguration (docs/reconfiguration.md): the controller's side of a reload.
//!
//! A reload re-reads the app file (or takes one given with `--reload-at N:FILE`), checks it
//! as at start — every error of the file, its rules and its links — and compares it with the
//! running app:
//!
//! * the µStacks, `[runtime]`, `[port]`, `parallel`, and the kept NFs' kinds, order and
//!   common keys (subscriptions, filters, `from`, `side`, `direction`, `on_failure`) must be
//!   unchanged (refused with a message that says so);
//! * NFs may be added and removed — a **relink**: offline (`--reload-at`) the run links the
//!   union of the graphs at start (`engine/relink.rs`); live, a removed NF retires at the
//!   packet RX stamps, and an added one is built, linked and placed in a neighbour's stage by
//!   the engine's [`LiveHost`] (`engine/guests.rs`, [`actors::guest`]);
//! * an NF whose options changed must be of a kind that takes new options while running
//!   ([`nfs::NfOptions::reload_changes`]: `signature_match`'s rules, `firewall`'s rules and
//!   default) and must run in this process (not `--nf-process`).
//!
//! An NF's `output` is not reloaded: the running NF keeps writing where it writes.
//!
//! If anything is wrong, nothing changes and every problem is reported. Otherwise the new
//! options become a new [`Generation`] of each changed NF, due from a packet number: given
//! (`--reload-at N`, offline) or stamped by the RX port at its next packet (live, through
//! [`actors::boundary::Boundary`]). Every accepted or refused reload is logged as a
//! [`Reconfiguration`] in the run report (summary, `--stats-json`) and the trace.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actors::boundary::Boundary;
use nfs::reload::{Generation, ReloadPort};
use nfs::NfConfig;
use serde::Serialize;

use crate::app::App;

/// The running chain's side of adding NFs while the run goes on (the engine's, which wired
/// the stages; `engine/guests.rs`): builds and links the added NFs against the running graph
/// and picks the stage that will host each ([`actors::guest`]).
pub trait LiveHost: Send {
    /// Builds, links and places the NFs of `new` named in `added` (already given their
    /// output paths, passive setting, reload port and removal cell), or says every reason
    /// it cannot. Called last in a reload's checks: an `Ok` is committed.
    fn prepare(&mut self, new: &App, added: &[String]) -> Result<PostGuests, Vec<String>>;
}

/// Hands the prepared NFs to their host stages, active from the packet RX stamps in the
/// given cell.
pub type PostGuests = Box<dyn FnOnce(Arc<AtomicU64>) + Send>;

/// One reload, accepted or refused, as the run report lists it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Reconfiguration {
    /// The generation it made (2 for the first accepted reload); 0 when refused.
    pub generation: u32,
    /// What asked for it: `--reload-at`, `ctl`, `SIGHUP`.
    pub trigger: String,
    /// The app file read.
    pub file: String,
    /// Seconds from the start of the run to the request.
    pub requested_at_s: f64,
    /// The first packet (number in the input, from 1) the new configuration applies to;
    /// `None` when refused, or when no packet came after a live request.
    pub from_packet: Option<u64>,
    /// Whether it was accepted.
    pub accepted: bool,
    /// What changed, `nf `NAME`: ...` lines (empty: the file was unchanged).
    pub changes: Vec<String>,
    /// Why it was refused (every problem).
    pub errors: Vec<String>,
}

/// When a reload applies.
#[derive(Clone, Copy, Debug)]
pub enum From {
    /// From this packet number on (offline `--reload-at N`).
    Packet(u64),
    /// From the next packet RX reads (live).
    NextPacket,
}

/// The controller of a run's reconfigurations (see the module docs).
#[derive(Debug)]
pub struct Controller {
    /// The configuration now in force (the latest accepted), with the running NFs' outputs.
    current: App,
    ports: BTreeMap<String, Arc<ReloadPort>>,
    boundary: Arc<Boundary>,
    external: Vec<String>,
    passive: bool,
    generation: u32,
    started: Instant,
    log: Vec<(Reconfiguration, Option<Arc<AtomicU64>>)>,
    /// Every NF of every graph so far (offline relinks), each with its active packets: the
    /// graph the run links.
    union: App,
    /// The packet of the last offline relink (0: none).
    last_relink: u64,
    /// `--output-dir`: where added NFs' relative outputs go.
    output_dir: Option<std::path::PathBuf>,
    /// Adds NFs to the running chain (none: a run without a control socket, or not wired).
    live_host: Option<Box<dyn LiveHost>>,
}

impl std::fmt::Debug for dyn LiveHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveHost")
    }
}

impl Controller {
    /// Gives every NF of `app` a reload port (in its common part) and returns the controller
    /// of the run. `passive`: the run made every NF passive; `external`: NFs in their own
    /// process.
    /// With `removable`, every NF can be removed while the run goes on (each is wrapped to
    /// retire at a packet RX stamps: one atomic load per event).
    pub fn attach(
        app: &mut App,
        passive: bool,
        external: &[String],
        output_dir: Option<&std::path::Path>,
        removable: bool,
    ) -> Controller {
        let mut ports = BTreeMap::new();
        for nf in &mut app.nfs {
            let port = ReloadPort::new();
            nf.common.reload = Some(port.clone());
            if removable && !external.contains(&nf.common.name) {
                nf.common.active = Some((0, Arc::new(AtomicU64::new(u64::MAX))));
            }
            ports.insert(nf.common.name.clone(), port);
        }
        Controller {
            union: app.clone(),
            last_relink: 0,
            output_dir: output_dir.map(std::path::Path::to_path_buf),
            current: app.clone(),
            ports,
            boundary: Boundary::new(),
            external: external.to_vec(),
            passive,
            generation: 1,
            started: Instant::now(),
            log: Vec::new(),
            live_host: None,
        }
    }

    /// Lets live reloads add NFs, through `host` (the wired chain).
    pub fn set_live_host(&mut self, host: Box<dyn LiveHost>) {
        self.live_host = Some(host);
    }

    /// The boundary the RX port stamps.
    pub fn boundary(&self) -> Arc<Boundary> {
        self.boundary.clone()
    }

    /// The generation in force (1 at start).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The graph the run links: the app it started with, plus every NF an offline relink
    /// adds (each NF active for its packets).
    pub fn union(&self) -> &App {
        &self.union
    }

    /// The app now in force.
    pub fn current(&self) -> &App {
        &self.current
    }

    /// Checks `new` (from `file`) against the running app and, if it passes, schedules it.
    /// Returns the log entry (refused ones too; they are logged as well).
    pub fn reload(&mut self, new: Result<App, Vec<String>>, file: &str, trigger: &str, from: From) -> Reconfiguration {
        let requested_at_s = self.started.elapsed().as_secs_f64();
        let planned = new.and_then(|new| self.plan(new, from));
        let (entry, cell) = match planned {
            Err(errors) => (
                Reconfiguration {
                    generation: 0,
                    trigger: trigger.into(),
                    file: file.into(),
                    requested_at_s,
                    from_packet: None,
                    accepted: false,
                    changes: Vec::new(),
                    errors,
                },
                None,
            ),
            Ok(Planned { app, specs, changes, union, retire, added, guests }) => {
                self.generation += 1;
                if let (Some(u), From::Packet(n)) = (union, from) {
                    // The added NFs' ports, for later reloads of their options.
                    for nf in &u.nfs {
                        if let Some(p) = &nf.common.reload {
                            self.ports.entry(nf.common.name.clone()).or_insert_with(|| p.clone());
                        }
                    }
                    self.union = u;
                    self.last_relink = n;
                }
                // NFs added live: known from now on (their options reload, they can be removed).
                for nf in added {
                    if let Some(p) = &nf.common.reload {
                        self.ports.insert(nf.common.name.clone(), p.clone());
                    }
                    self.union.nfs.push(nf);
                }
                self.union.registry = app.registry.clone();
                let cell = Arc::new(AtomicU64::new(match from {
                    From::Packet(n) => n,
                    From::NextPacket => u64::MAX,
                }));
                for (name, spec) in specs {
                    if let Some(port) = self.ports.get(&name) {
                        port.push(Generation { number: self.generation, from_seq: cell.clone(), spec });
                    }
                }
                match from {
                    From::Packet(n) => retire.iter().for_each(|c| c.store(n, Ordering::Release)),
                    From::NextPacket => {
                        // The guests are in their boxes before RX can stamp their packet.
                        if let Some(post) = guests {
                            post(cell.clone());
                        }
                        // One request: removals, additions and new options share a packet.
                        self.boundary.request_all(retire.into_iter().chain([cell.clone()]));
                    }
                }
                self.current = app;
                let from_packet = match from {
                    From::Packet(n) => Some(n),
                    From::NextPacket => None,
                };
                let entry = Reconfiguration {
                    generation: self.generation,
                    trigger: trigger.into(),
                    file: file.into(),
                    requested_at_s,
                    from_packet,
                    accepted: true,
                    changes,
                    errors: Vec::new(),
                };
                (entry, Some(cell))
            }
        };
        self.log.push((entry.clone(), cell));
        entry
    }

    /// The packet a live reload of generation `generation` was stamped with, if it was.
    pub fn stamped(&self, generation: u32) -> Option<u64> {
        self.log
            .iter()
            .find(|(r, _)| r.generation == generation && r.accepted)
            .and_then(|(_, c)| c.as_ref())
            .map(|c| c.load(Ordering::Acquire))
            .filter(|s| *s != u64::MAX)
    }

    /// The log, with the packet numbers RX stamped.
    pub fn log(&self) -> Vec<Reconfiguration> {
        self.log
            .iter()
            .map(|(r, c)| {
                let mut r = r.clone();
                if let Some(c) = c {
                    r.from_packet = Some(c.load(Ordering::Acquire)).filter(|s| *s != u64::MAX);
                }
                r
            })
            .collect()
    }

    /// What changes from the app in force to `new`: the app to keep as current, the new
    /// options of each changed NF, the change lines and, for an offline relink, the union
    /// graph to run; or every problem.
    fn plan(&mut self, mut new: App, from: From) -> Result<Planned, Vec<String>> {
        let old = &self.current;
        let mut errs = Vec::new();
        let relink = "changing a running NF's subscriptions, filter, parallel groups or the µStacks is not supported yet: rule and option reloads, adding NFs and removing NFs are (docs/reconfiguration.md); restart the run for this change";
        let names = |a: &App| a.nfs.iter().map(|n| format!("{} ({})", n.common.name, n.kind)).collect::<Vec<_>>();
        let relinked = names(old) != names(&new);
        let offline = match from {
            From::Packet(n) => Some(n),
            From::NextPacket => None,
        };
        // Live, NFs can be removed and added: the NFs kept keep their order and kinds.
        let mut retire = Vec::new();
        let mut added = Vec::new();
        if relinked && offline.is_none() {
            errs.extend(self.live_relink_problems(old, &new));
            for o in old.nfs.iter().filter(|o| new.nfs.iter().all(|n| n.common.name != o.common.name)) {
                let gate = self
                    .union
                    .nfs
                    .iter()
                    .find(|u| u.common.name == o.common.name)
                    .and_then(|u| u.common.active.clone());
                match gate {
                    Some((_, cell)) => retire.push(cell),
                    None => errs.push(format!(
                        "nf `{}` cannot be removed while this run goes on (it was not started removable)",
                        o.common.name
                    )),
                }
            }
            added = new
                .nfs
                .iter()
                .filter(|n| old.nfs.iter().all(|o| o.common.name != n.common.name))
                .map(|n| n.common.name.clone())
                .collect();
        }
        if format!("{:?}", old.stacks) != format!("{:?}", new.stacks) {
            errs.push(format!("the µStacks ([stack.*]) changed: {relink}"));
        }
        if old.parallel != new.parallel {
            errs.push(format!("`parallel` changed: {relink}"));
        }
        if format!("{:?}", old.proxy_nfs) != format!("{:?}", new.proxy_nfs) {
            errs.push(
                "the NFs inside [stack.proxy] (e.g. `cache`) changed: they are built into the proxy at start; restart the run for this change"
                    .into(),
            );
        }
        if format!("{:?}", old.runtime) != format!("{:?}", new.runtime) {
            errs.push(
                "[runtime] changed: the pool, the rings and the idle policy are set at start; restart the run for this change".into(),
            );
        }
        if old.port != new.port {
            errs.push("[port] changed: the receive rings are sized at start; restart the run for this change".into());
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let mut union = None;
        if let (true, Some(n)) = (relinked, offline) {
            let (u, cells) = self.relink(old, &mut new, n)?;
            union = Some(u);
            retire = cells;
        }
        let mut specs = Vec::new();
        let mut changes = Vec::new();
        for n in &mut new.nfs {
            let name = n.common.name.clone();
            let Some(o) = old.nfs.iter().find(|o| o.common.name == name) else {
                changes.push(format!("nf `{name}` ({}) added: it sees each flow from the flow's next event", n.kind));
                continue;
            };
            let mut nc = n.common.clone();
            nc.reload = o.common.reload.clone();
            nc.active = o.common.active.clone();
            if format!("{:?}", o.common) != format!("{nc:?}") {
                errs.push(format!("nf `{name}`: its subscriptions, filter, `from`, `side`, `direction` or `on_failure` changed: {relink}"));
                continue;
            }
            n.common = nc;
            // The running NF keeps its output file and its passive setting.
            if let Some(out) = o.config.output() {
                n.config.set_output(out.to_path_buf());
            }
            if self.passive {
                n.config.set_passive();
            }
            if format!("{:?}", o.config) == format!("{:?}", n.config) {
                continue;
            }
            if self.external.contains(&name) {
                errs.push(format!("nf `{name}` runs in its own process (--nf-process): its options cannot be reloaded (yet); restart the run"));
                continue;
            }
            match (&o.config, &n.config) {
                (NfConfig::Kind(a), NfConfig::Kind(b)) => match a.reload_changes(b.as_ref(), &o.common) {
                    Ok(lines) => {
                        changes.extend(lines.into_iter().map(|l| format!("nf `{name}`: {l}")));
                        specs.push((name.clone(), b.clone()));
                    }
                    Err(e) => errs.extend(e),
                },
                _ => errs.push(format!("nf `{name}`: an NF built by code cannot be reloaded")),
            }
        }
        for o in old.nfs.iter().filter(|o| !new.nfs.iter().any(|n| n.common.name == o.common.name)) {
            changes.push(format!(
                "nf `{}` ({}) removed: it finishes and its per-flow state is dropped",
                o.common.name, o.kind
            ));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        // Last (an `Ok` here is committed): the added NFs, built, linked and placed.
        let mut guests = None;
        let mut added_defs = Vec::new();
        if !added.is_empty() {
            for nf in new.nfs.iter_mut().filter(|n| added.contains(&n.common.name)) {
                self.prepare_added(nf, 0);
                added_defs.push(nf.clone());
            }
            let host = self.live_host.as_mut().ok_or_else(|| {
                vec!["NFs cannot be added to this run while it goes on (it has no control socket)".to_string()]
            })?;
            guests = Some(host.prepare(&new, &added)?);
        }
        Ok(Planned { app: new, specs, changes, union, retire, added: added_defs, guests })
    }

    /// What stops the live relink from the running app `old` to `new`: the NFs kept must be
    /// in the same order with the same kinds, and an added NF may not reuse the name of one
    /// removed earlier.
    fn live_relink_problems(&self, old: &App, new: &App) -> Vec<String> {
        let mut errs = Vec::new();
        let kept: Vec<_> = new.nfs.iter().filter(|n| old.nfs.iter().any(|o| o.common.name == n.common.name)).collect();
        let mut rest = old.nfs.iter();
        for n in &kept {
            match rest.by_ref().find(|o| o.common.name == n.common.name) {
                Some(o) if o.kind != n.kind => errs.push(format!(
                    "nf `{}`: replaced by an NF of kind `{}`: give the new NF another name (the old one is removed, the new one added)",
                    n.common.name, n.kind
                )),
                Some(_) => {}
                None => errs.push(format!(
                    "nf `{}`: the NFs kept are in another order: reordering running NFs is not supported",
                    n.common.name
                )),
            }
        }
        for n in new.nfs.iter().filter(|n| old.nfs.iter().all(|o| o.common.name != n.common.name)) {
            if self.union.nfs.iter().any(|u| u.common.name == n.common.name) {
                errs.push(format!(
                    "nf `{}`: an NF of that name was removed earlier in this run: give the new NF another name",
                    n.common.name
                ));
            }
        }
        errs
    }

    /// An NF a relink adds (offline at packet `from`; live: 0, its guest stage knows its
    /// packet): its relative output under `--output-dir`, the run's passive setting, a reload
    /// port and a removal cell.
    fn prepare_added(&self, nf: &mut crate::app::NfEntry, from: u64) {
        if let (Some(out), Some(dir)) = (nf.config.output().map(std::path::Path::to_path_buf), &self.output_dir) {
            if out.is_relative() {
                nf.config.set_output(dir.join(out));
            }
        }
        if self.passive {
            nf.config.set_passive();
        }
        nf.common.reload = Some(ReloadPort::new());
        nf.common.active = Some((from, Arc::new(AtomicU64::new(u64::MAX))));
    }

    /// An offline relink to `new` at packet `n`: the union of every graph so far with `new`'s
    /// NFs, each NF active for its packets; `new`'s added NFs get their reload ports and
    /// ranges here. Refused: replacing an NF under its name, reordering, reusing a removed
    /// NF's name, relinks out of packet order, event types the two files number differently.
    #[allow(clippy::type_complexity)]
    fn relink(&self, old: &App, new: &mut App, n: u64) -> Result<(App, Vec<Arc<AtomicU64>>), Vec<String>> {
        let mut errs = Vec::new();
        let mut union = self.union.clone();
        if n <= self.last_relink {
            errs.push(format!(
                "a relink at packet {n} after one at packet {}: relinks must come in packet order",
                self.last_relink
            ));
        }
        // Event types: the union keeps the old numbering; the new file's must agree with it.
        for (t, name) in new.registry.iter() {
            match union.registry.resolve(name) {
                Ok(u) if u == t => {}
                Ok(_) => errs.push(format!("event type `{name}` is numbered differently in the new file (its NFs register their types in another order): keep the NFs that publish types in the same order, adding new ones after them")),
                Err(_) => match union.registry.register(name) {
                    Ok(u) if u == t => {}
                    _ => errs.push(format!("event type `{name}` would be numbered differently in the union of the two graphs: add the NFs that publish new types after the others")),
                },
            }
        }
        let mut last: Option<usize> = None;
        let mut insert_at = 0;
        for nf in &mut new.nfs {
            let name = nf.common.name.clone();
            match union.nfs.iter().position(|u| u.common.name == name) {
                Some(i) if old.nfs.iter().any(|o| o.common.name == name) => {
                    if union.nfs[i].kind != nf.kind {
                        errs.push(format!("nf `{name}`: replaced by an NF of kind `{}`: give the new NF another name (the old one is removed, the new one added)", nf.kind));
                    }
                    if last.is_some_and(|l| i < l) {
                        errs.push(format!(
                            "nf `{name}`: the NFs kept are in another order: reordering is not supported"
                        ));
                    }
                    last = Some(i);
                    insert_at = i + 1;
                }
                Some(_) if old.nfs.iter().all(|o| o.common.name != name) => {
                    errs.push(format!(
                        "nf `{name}`: an NF of that name was removed earlier in this run: give the new NF another name"
                    ));
                }
                _ => {
                    if old.nfs.iter().any(|o| o.common.name == name) {
                        continue;
                    }
                    self.prepare_added(nf, n);
                    union.nfs.insert(insert_at, nf.clone());
                    insert_at += 1;
                    if let Some(l) = last.as_mut() {
                        *l += 1;
                    }
                }
            }
        }
        let mut retire = Vec::new();
        for u in &mut union.nfs {
            let name = &u.common.name;
            let was_running = old.nfs.iter().any(|o| &o.common.name == name);
            if was_running && !new.nfs.iter().any(|nn| &nn.common.name == name) {
                let (_, cell) = u.common.active.get_or_insert_with(|| (0, Arc::new(AtomicU64::new(u64::MAX)))).clone();
                retire.push(cell);
            }
        }
        if errs.is_empty() {
            Ok((union, retire))
        } else {
            Err(errs)
        }
    }
}

/// What [`Controller::plan`] found.
struct Planned {
    /// The app in force after the reload.
    app: App,
    /// The new options of each NF whose options changed.
    specs: Vec<(String, Box<dyn nfs::NfSpec>)>,
    /// What changed.
    changes: Vec<String>,
    /// An offline relink: the union graph to run.
    union: Option<App>,
    /// The `until` cells of the NFs removed: set to the reload's packet.
    retire: Vec<Arc<AtomicU64>>,
    /// NFs added live, as they will run.
    added: Vec<crate::app::NfEntry>,
    /// NFs added live: handed to their host stages once the reload is accepted.
    guests: Option<PostGuests>,
}

/// Loads an app file for a reload of `controller`'s run: checked as at start (every
/// problem, one per line), then numbered as the running graph (its event types keep their
/// ids, so that a relink's union graph means one thing by each).
pub fn load(path: &std::path::Path, controller: &Controller) -> Result<App, Vec<String>> {
    App::load(path).map_err(|e| e.0)?;
    App::load_with_registry(path, controller.union().registry.clone()).map_err(|e| e.0)
}

/// A scheduled offline reload (`--reload-at N:FILE`).
#[derive(Clone, Debug)]
pub struct ScheduledReload {
    /// The first packet (from 1) the new file applies to.
    pub at: u64,
    /// The file.
    pub file: std::path::PathBuf,
}

impl std::str::FromStr for ScheduledReload {
    type Err = String;
    fn from_str(s: &str) -> Result<ScheduledReload, String> {
        let (n, f) = s.split_once(':').ok_or_else(|| format!("`{s}`: expected N:FILE (packet number, app file)"))?;
        let at: u64 = n.trim().parse().map_err(|_| format!("`{s}`: `{n}` is not a packet number"))?;
        if at == 0 {
            return Err(format!("`{s}`: packets are numbered from 1"));
        }
        if f.is_empty() {
            return Err(format!("`{s}`: no app file after `:`"));
        }
        Ok(ScheduledReload { at, file: f.into() })
    }
}

//! Reconfiguration while a run goes on: the control socket's requests and SIGHUP, served
//! from the run's supervising loop ([`Ctl::poll`], every 10 ms), and the reloads scheduled
//! with `--reload-at` (docs/reconfiguration.md). The checks and the generations are
//! [`crate::reconfig`]'s; the socket is [`crate::control`]'s.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::control::{self, Server};
use crate::live_stats::LiveSources;
use crate::reconfig::{self, Controller, Reconfiguration};

use super::{Mode, RunError, RunOptions};

/// How long a live reload's answer waits for RX to stamp its packet number.
const STAMP_WAIT: Duration = Duration::from_millis(500);

/// A run's reconfiguration front: the controller, the control socket, the SIGHUP flag.
pub(super) struct Ctl {
    pub controller: Controller,
    server: Option<Server>,
    signal: Option<Arc<AtomicBool>>,
    app_file: Option<PathBuf>,
    prefix: String,
    mode: Mode,
    started: Instant,
}

impl Ctl {
    /// Schedules the `--reload-at` reloads (a bad one fails the run before it starts, with
    /// every problem). The control socket is opened by [`Ctl::serve`].
    pub fn new(mut controller: Controller, opts: &RunOptions, prefix: &str) -> Result<Ctl, RunError> {
        let mut errs = Vec::new();
        for r in &opts.reloads {
            let file = r.file.display().to_string();
            let app = reconfig::load(&r.file, &controller);
            let e = controller.reload(app, &file, "--reload-at", reconfig::From::Packet(r.at));
            errs.extend(e.errors.iter().map(|x| format!("--reload-at {}:{file}: {x}", r.at)));
        }
        if !errs.is_empty() {
            return Err(RunError::Config(errs));
        }
        Ok(Ctl {
            controller,
            server: None,
            signal: opts.reload_signal.clone(),
            app_file: opts.app_file.clone(),
            prefix: prefix.to_string(),
            mode: opts.mode,
            started: Instant::now(),
        })
    }

    /// Opens the control socket when the options ask for it: after the region was created
    /// (which removes a dead run's files of the prefix).
    pub fn serve(&mut self, opts: &RunOptions) -> Result<(), RunError> {
        if opts.control {
            self.server = Some(Server::bind(&self.prefix).map_err(RunError::Setup)?);
        }
        Ok(())
    }

    /// Serves SIGHUP and the control socket's waiting requests.
    pub fn poll(&mut self, live: &LiveSources) {
        if self.signal.as_ref().is_some_and(|s| s.swap(false, Ordering::SeqCst)) {
            let r = self.reload("SIGHUP");
            let what = if r.accepted {
                format!("generation {} accepted ({} change(s))", r.generation, r.changes.len())
            } else {
                format!("refused, nothing changed:\n  {}", r.errors.join("\n  "))
            };
            eprintln!("mbox: SIGHUP: reload of {}: {what}", r.file);
        }
        let Some(mut server) = self.server.take() else { return };
        server.poll(&mut |req| self.answer(req, live));
        self.server = Some(server);
    }

    fn reload(&mut self, trigger: &str) -> Reconfiguration {
        let (app, file) = match &self.app_file {
            Some(p) => (reconfig::load(p, &self.controller), p.display().to_string()),
            None => (Err(vec!["the run's app was not loaded from a file: nothing to re-read".into()]), String::new()),
        };
        self.controller.reload(app, &file, trigger, reconfig::From::NextPacket)
    }

    fn answer(&mut self, req: &str, live: &LiveSources) -> serde_json::Value {
        match req {
            "status" => {
                let s = live.snapshot();
                json!({
                    "ok": true,
                    "prefix": self.prefix,
                    "pid": std::process::id(),
                    "app": self.controller.current().source,
                    "mode": self.mode.to_string(),
                    "uptime_s": self.started.elapsed().as_secs_f64(),
                    "generation": self.controller.generation(),
                    "packets_in": s.packets_in,
                    "packets_out": s.packets_out,
                    "packets_dropped": s.dropped(),
                    "reconfigurations": self.controller.log(),
                })
            }
            "stats" => {
                let s = live.snapshot();
                let rings: Vec<_> = s
                    .rings
                    .iter()
                    .map(|r| json!({ "link": r.link, "items": r.items, "capacity": r.capacity }))
                    .collect();
                json!({
                    "ok": true,
                    "elapsed_s": s.elapsed.as_secs_f64(),
                    "packets_in": s.packets_in,
                    "bytes_in": s.bytes_in,
                    "packets_out": s.packets_out,
                    "bytes_out": s.bytes_out,
                    "packets_dropped": s.dropped(),
                    "drops": s.drops,
                    "kernel_drops": s.kernel_drops,
                    "pool_in_use": s.pool_in_use,
                    "pool_buffers": s.pool_buffers,
                    "rings": rings,
                    "generation": self.controller.generation(),
                })
            }
            "reload" => {
                let r = self.reload("ctl");
                let mut from = None;
                if r.accepted {
                    let until = Instant::now() + STAMP_WAIT;
                    while from.is_none() && Instant::now() < until {
                        from = self.controller.stamped(r.generation);
                        if from.is_none() {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                v["ok"] = json!(r.accepted);
                v["from_packet"] = json!(from);
                if !r.accepted {
                    v["error"] = json!(format!("reload refused, nothing changed: {}", r.errors.join("; ")));
                } else if from.is_none() {
                    v["note"] = json!("applies from the next packet read (none read yet)");
                }
                v
            }
            "graph" => match crate::graph::graph(self.controller.current()) {
                Ok(g) => json!({ "ok": true, "text": g.to_text(), "dot": g.to_dot() }),
                Err(e) => control::error(e.join("\n")),
            },
            other => control::error(format!("unknown request `{other}` (requests: status, stats, reload, graph)")),
        }
    }
}

//! # microboxes — the `mbox` command's library
//!
//! Ties the crates together. The folders of `src/` follow the concerns:
//!
//! * [`app`] — the application file: `[runtime]`, the µStacks' `[stack.*]` tables (through
//!   [`stacks::registry`]), the `[[nf]]` chain (through [`nfs::configure`]);
//! * [`engine`] (`src/engine/`) — runs an app over a capture: builds the actors, links them
//!   with the controller, places them on cores, lays the chain's shared rings out once and
//!   wires the stages along them, runs them, and assembles the report; also serves one NF of
//!   a run in its own process (`mbox nf`);
//! * [`report`] — what a run reports: the summary text and the stats JSON;
//! * [`reconfig`] and [`control`] — live reconfiguration: reloads checked against the
//!   running app, and the control socket `mbox ctl` talks to;
//! * [`check`] — `mbox check`: one capture through several execution modes, compared with
//!   mode a;
//! * [`streams`] — `mbox streams`: every TCP connection of a capture, reassembled;
//! * [`trace`] (`src/trace/`) — recorded traces: Chrome JSON export and timeline rendering;
//! * [`repro`] (`src/repro/`) — the paper's results reproduced (Figure 4).
//!
//! The `mbox` binary (src/main.rs) is a thin command line over these. How the pieces fit —
//! actors, the controller, the execution modes — is told in docs/architecture.md.
#![forbid(unsafe_code)]

pub mod app;
pub mod check;
pub mod control;
pub mod engine;
pub mod graph;
pub mod live_stats;
pub mod reconfig;
pub mod report;
pub mod repro;
pub mod streams;
pub mod trace;

pub use app::App;
pub use engine::{run, Mode, RunError, RunOptions};
pub use report::RunReport;

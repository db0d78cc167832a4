//! # microboxes — the `mbox` command's library
//!
//! Ties the crates together: [`app`] loads an application file, [`engine`] builds the
//! actors, links them with the controller, places them on cores and runs them over shared
//! rings, and [`report`] summarizes the run; [`streams`] reassembles every TCP connection of
//! a capture (`mbox streams`). The `mbox` binary (src/main.rs) is a thin
//! command line over these.
#![forbid(unsafe_code)]

pub mod app;
pub mod check;
pub mod engine;
pub mod fig4;
pub mod report;
pub mod streams;
pub mod trace_export;
pub mod trace_render;

pub use app::App;
pub use engine::{run, Mode, RunError, RunOptions};
pub use report::RunReport;

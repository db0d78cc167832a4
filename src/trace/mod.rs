//! Traces recorded by `mbox run --trace`: [`export`] writes them as Chrome Trace Event JSON
//! (and reads any such file back as spans), [`render`] draws spans as a timeline, one row per
//! core (`mbox trace render`).
//!
//! The spans themselves are recorded by the runtime ([`runtime::trace`]) and collected by
//! the engine; nothing here runs during a run.

pub mod export;
pub mod render;

//! runtime — placeholder; module docs are written by each module's author.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod coremap;
pub mod executor;
pub mod pool;
pub mod ports;
pub mod ring;
pub mod shm;
pub mod sys;

//! Reproductions of the paper's results, measured on this implementation: [`fig4`] runs
//! three packets through every execution mode and draws them side by side (`mbox fig4`).

pub mod fig4;

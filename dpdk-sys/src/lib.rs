//! Raw bindings to the system's DPDK (Debian's `libdpdk-dev`, 22.11), for `runtime`'s DPDK
//! port (behind the `dpdk` cargo feature of `runtime` and `microboxes`).
//!
//! * bindgen over the EAL, ethdev, mbuf (and its dynamic fields), mempool, ring, lcore,
//!   errno and vdev-bus headers, allowlisted to what the port uses;
//! * `mbx_*`: a small C shim (`src/shim.c`) over DPDK's static-inline calls
//!   (`rte_eth_rx_burst`, `rte_eth_tx_burst`, `rte_pktmbuf_alloc`/`free`/`mtod`/`append`,
//!   `rte_errno`), which have no symbol to link against.
//!
//! Everything here is `unsafe` C; the safe wrapper is `runtime::ports::dpdk`.
//! Build needs: `apt-get install libdpdk-dev dpdk-dev pkg-config libclang-dev clang`.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]
#![allow(clippy::all)]
#![allow(unsafe_op_in_unsafe_fn)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

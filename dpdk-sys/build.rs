//! Builds the bindings against the system's DPDK, found with pkg-config (`libdpdk`).
//!
//! * The raw `pkg-config --cflags libdpdk` flags (with `-include rte_config.h`) go to both
//!   bindgen and the C compiler, so the headers see the configuration DPDK was built with.
//! * `src/shim.c` turns the static-inline calls the port needs (`rte_eth_rx_burst`,
//!   `rte_eth_tx_burst`, mbuf alloc/free/mtod, `rte_errno`) into real symbols (`mbx_*`).
//! * Packed structs that are also aligned (`rte_arp_*`, `rte_l2tpv2_*`, `rte_ecpri_*`,
//!   `rte_gtp_psc_*`) cannot be expressed in Rust: they are opaque. Layout tests are off
//!   (they are tens of thousands of lines and the layouts come from the headers themselves).
//!
//! Without the packages the build stops with a message that names them.

use std::path::PathBuf;

const PACKAGES: &str = "apt-get install -y --no-install-recommends libdpdk-dev dpdk-dev pkg-config libclang-dev clang";

fn fail(what: &str) -> ! {
    panic!(
        "\n\ndpdk-sys: {what}\n\nThe `dpdk` feature builds against the system's DPDK (22.11) and needs libclang for \
         bindgen. On Debian/Ubuntu, as root:\n\n    {PACKAGES}\n\nThe default build (without `--features dpdk`) \
         needs none of this.\n"
    )
}

fn main() {
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new().atleast_version("21.11").probe("libdpdk") {
        Ok(l) => l,
        Err(e) => fail(&format!("pkg-config cannot find libdpdk (21.11 or newer): {e}")),
    };
    let out = std::process::Command::new("pkg-config").args(["--cflags", "libdpdk"]).output();
    let cflags: Vec<String> = match out {
        Ok(o) if o.status.success() => {
            String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect()
        }
        _ => fail("`pkg-config --cflags libdpdk` failed"),
    };

    let mut cc = cc::Build::new();
    cc.file("src/shim.c").opt_level(2).warnings(false);
    let mut i = 0;
    while i < cflags.len() {
        // `-include FILE` is two words; the cc crate takes raw flags one by one.
        cc.flag(&cflags[i]);
        i += 1;
    }
    cc.compile("mbx_dpdk_shim");

    let mut b = bindgen::Builder::default()
        .header("src/shim.h")
        .clang_args(&cflags)
        .layout_tests(false)
        .derive_default(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .allowlist_function("mbx_.*")
        .allowlist_function("rte_eal_.*")
        .allowlist_function("rte_eth_dev_.*")
        .allowlist_function("rte_eth_rx_queue_setup")
        .allowlist_function("rte_eth_tx_queue_setup")
        .allowlist_function("rte_eth_stats_.*")
        .allowlist_function("rte_eth_promiscuous_enable")
        .allowlist_function("rte_eth_macaddr_get")
        .allowlist_function("rte_eth_link_get_nowait")
        .allowlist_function("rte_eth_find_next_owned_by")
        .allowlist_function("rte_pktmbuf_pool_create.*")
        .allowlist_function("rte_pktmbuf_free_bulk")
        .allowlist_function("rte_mempool_.*")
        .allowlist_function("rte_ring_create")
        .allowlist_function("rte_ring_free")
        .allowlist_function("rte_lcore_count")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_vdev_.*")
        .allowlist_function("rte_mbuf_dyn.*")
        .allowlist_function("rte_extmem_.*")
        .allowlist_function("rte_dev_dma_map")
        .allowlist_type("rte_eth_conf")
        .allowlist_type("rte_eth_stats")
        .allowlist_type("rte_eth_dev_info")
        .allowlist_type("rte_eth_rxconf")
        .allowlist_type("rte_eth_txconf")
        .allowlist_type("rte_pktmbuf_extmem")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_ETHDEV_QUEUE_STAT_CNTRS")
        .allowlist_var("RTE_MBUF_DYNFIELD_TIMESTAMP_NAME")
        .allowlist_var("RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME")
        .allowlist_var("SOCKET_ID_ANY")
        .opaque_type("rte_arp_.*")
        .opaque_type("rte_l2tpv2_.*")
        .opaque_type("rte_ecpri_.*")
        .opaque_type("rte_gtp_psc_.*");
    b = b.parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    let bindings = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || b.generate())) {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => fail(&format!("bindgen failed over the DPDK headers: {e}")),
        Err(_) => fail("bindgen could not run (is libclang installed? libclang-dev)"),
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    if let Err(e) = bindings.write_to_file(out.join("bindings.rs")) {
        fail(&format!("writing the bindings: {e}"));
    }
    // The libraries pkg-config named are linked by `probe`; the PMDs (net_pcap, net_null,
    // net_ring, net_af_packet, ...) are plugins EAL loads at run time from its driver
    // directory, so nothing else is linked here.
    let _ = lib;
}

/* The DPDK headers dpdk-sys binds, and the shim over their static-inline calls.
 * `pkg-config --cflags libdpdk` passes `-include rte_config.h` before this file. */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_bus_vdev.h>

/* Static-inline functions (or macros) of DPDK, as real symbols Rust can call. */
uint16_t mbx_rte_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t mbx_rte_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *mbx_rte_pktmbuf_alloc(struct rte_mempool *mp);
int mbx_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void mbx_rte_pktmbuf_free(struct rte_mbuf *m);
/* The first segment's data, its length, and the packet's length (all segments). */
void *mbx_rte_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t mbx_rte_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t mbx_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t mbx_rte_pktmbuf_nb_segs(const struct rte_mbuf *m);
/* Appends `len` bytes to the packet; NULL when the tailroom is too small. */
char *mbx_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
/* Copies up to `cap` bytes of the whole packet (all segments) into `dst`; returns the bytes
 * copied. */
uint32_t mbx_rte_pktmbuf_copy_out(const struct rte_mbuf *m, void *dst, uint32_t cap);
/* The mbuf's 64-bit dynamic field at `offset` (a timestamp), and whether `flag` is set in
 * its ol_flags. */
uint64_t mbx_rte_mbuf_dynfield_u64(const struct rte_mbuf *m, int offset);
int mbx_rte_mbuf_has_flag(const struct rte_mbuf *m, uint64_t flag);
int mbx_rte_errno(void);
unsigned mbx_rte_lcore_id(void);
/* Constants DPDK defines with function-like macros (RTE_BIT64), which bindgen cannot read. */
uint64_t mbx_rx_offload_timestamp(void);

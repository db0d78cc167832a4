#include "shim.h"
#include <string.h>

uint16_t mbx_rte_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t mbx_rte_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *mbx_rte_pktmbuf_alloc(struct rte_mempool *mp) {
    return rte_pktmbuf_alloc(mp);
}

int mbx_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count) {
    return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void mbx_rte_pktmbuf_free(struct rte_mbuf *m) {
    rte_pktmbuf_free(m);
}

void *mbx_rte_pktmbuf_mtod(struct rte_mbuf *m) {
    return rte_pktmbuf_mtod(m, void *);
}

uint16_t mbx_rte_pktmbuf_data_len(const struct rte_mbuf *m) {
    return rte_pktmbuf_data_len(m);
}

uint32_t mbx_rte_pktmbuf_pkt_len(const struct rte_mbuf *m) {
    return rte_pktmbuf_pkt_len(m);
}

uint16_t mbx_rte_pktmbuf_nb_segs(const struct rte_mbuf *m) {
    return m->nb_segs;
}

char *mbx_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len) {
    return rte_pktmbuf_append(m, len);
}

uint32_t mbx_rte_pktmbuf_copy_out(const struct rte_mbuf *m, void *dst, uint32_t cap) {
    uint32_t done = 0;
    for (const struct rte_mbuf *s = m; s != NULL && done < cap; s = s->next) {
        uint32_t n = s->data_len;
        if (n > cap - done)
            n = cap - done;
        memcpy((char *)dst + done, rte_pktmbuf_mtod(s, const char *), n);
        done += n;
    }
    return done;
}

uint64_t mbx_rte_mbuf_dynfield_u64(const struct rte_mbuf *m, int offset) {
    return *RTE_MBUF_DYNFIELD(m, offset, const uint64_t *);
}

int mbx_rte_mbuf_has_flag(const struct rte_mbuf *m, uint64_t flag) {
    return (m->ol_flags & flag) != 0;
}

int mbx_rte_errno(void) {
    return rte_errno;
}

unsigned mbx_rte_lcore_id(void) {
    return rte_lcore_id();
}

uint64_t mbx_rx_offload_timestamp(void) {
    return RTE_ETH_RX_OFFLOAD_TIMESTAMP;
}

# Sourced by the benches that put `mbox run APP --iface m0,m1` (or a bridge) between a
# client and servers (splicer_vs_haproxy.sh, proxy_app_vs_haproxy.sh, live_vs_bridge.sh):
# the namespaces of tests/tests/live_splicer.rs and tests/tests/live_proxy_app.rs, and
# their cleanup.
#
#   inline_pair TAG NAME [CLIENT]
#                          creates namespaces ${TAG}c (client, c0 CLIENT, by default
#                          10.99.0.1/24), ${TAG}m (mbox: m0, m1) and ${TAG}s (servers: s0,
#                          no address yet), offloads off on all four ends; sets C_NS, M_NS,
#                          S_NS and WORK (a fresh /tmp/NAME.XXXXXX); on exit kills every PID
#                          in PIDS (TERM, then KILL), deletes the namespaces and WORK.
PIDS=()
NAMESPACES=()
inline_pair_cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
inline_pair() { # TAG NAME [CLIENT]
  C_NS="$1c" M_NS="$1m" S_NS="$1s"
  local client=${3:-10.99.0.1/24}
  WORK=$(mktemp -d "/tmp/$2.XXXXXX")
  trap inline_pair_cleanup EXIT
  trap 'exit 130' INT TERM
  local ns pair
  for ns in "$C_NS" "$M_NS" "$S_NS"; do
    ip netns add "$ns"; NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
  done
  ip link add c0 netns "$C_NS" type veth peer name m0 netns "$M_NS"
  ip link add s0 netns "$S_NS" type veth peer name m1 netns "$M_NS"
  for pair in "$C_NS c0" "$M_NS m0" "$M_NS m1" "$S_NS s0"; do
    set -- $pair
    ip -n "$1" link set "$2" up
    ip netns exec "$1" ethtool -K "$2" gro off gso off tso off tx off >/dev/null
  done
  ip -n "$C_NS" addr add "$client" dev c0
}

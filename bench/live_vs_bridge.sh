#!/usr/bin/env bash
# mbox inline vs a Linux bridge, on the same path and the same traffic (issue 12's benchmark).
#
# Three network namespaces, as in the live tests (tests/tests/netns/mod.rs): client `c0`
# (10.99.50.1) ↔ `m0` | middle | `m1` ↔ `s0` (10.99.50.2) server running
# `python3 -m http.server`; offloads off on all four veth ends. The middle namespace is, in
# turn:
#
#   bridge  `ip link add br0 type bridge`, m0 and m1 its ports (the kernel forwards);
#   mbox    `mbox run apps/ids.toml --iface m0,m1` (TCP monitor, DPI, signature matcher).
#
# For each: N downloads of a SIZE_MB file with curl (MB/s, each checked for its full size),
# PINGS pings (RTT) and PINGS small requests (curl's time to first byte). It prints each
# run and the medians, then the throughput ratio mbox/bridge and the latency mbox adds.
#
# Usage (root; from the repository root; builds nothing — run `cargo build --release` first):
#
#   bench/live_vs_bridge.sh                     # 200 MB, N=3, 20 pings / requests
#   SIZE_MB=50 N=5 bench/live_vs_bridge.sh
#   MBOX_ARGS="--ring-timeout-ms 1" bench/live_vs_bridge.sh   # extra flags for mbox run
#
# Bounded: every curl has --max-time, every ping a count and a deadline, mbox a --duration.
# Cleans up on exit (also on Ctrl-C or an error): the processes it started, by PID, then its
# namespaces and its work directory (bench/inline_pair.sh's cleanup, as the other inline
# benches). Traffic stays inside the namespaces it made.
set -euo pipefail

SIZE_MB=${SIZE_MB:-200}
N=${N:-3}
PINGS=${PINGS:-20}
MBOX=${MBOX:-target/release/mbox}
APP=${APP:-apps/ids.toml}
MBOX_ARGS=${MBOX_ARGS:-}
MAX_TIME=${MAX_TIME:-300}   # seconds, per download

die() { echo "live_vs_bridge: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, AF_PACKET)"
for t in ip ethtool curl python3 timeout; do
  command -v "$t" >/dev/null 2>&1 || die "\`$t\` is not installed"
done
[ -x "$MBOX" ] || die "$MBOX not found: run \`cargo build --release\` first (or set MBOX)"
[ -f "$APP" ] || die "$APP not found: run from the repository root (or set APP)"
HAVE_PING=1
command -v ping >/dev/null 2>&1 || HAVE_PING=0

in_ns() { local ns=$1; shift; timeout 60 ip netns exec "$ns" "$@"; }
in_ns_for() { local secs=$1 ns=$2; shift 2; timeout "$secs" ip netns exec "$ns" "$@"; }

median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.stdin.read().split()]; print(f"{statistics.median(v):.{int(sys.argv[1])}f}" if v else "nan")' "$1"; }

# The namespaces, veths (offloads off), WORK, PIDS and the cleanup on exit.
. "$(dirname "$0")/inline_pair.sh"
inline_pair "mbb$$" live_vs_bridge 10.99.50.1/24
C=$C_NS M=$M_NS S=$S_NS
# No IPv6 (router solicitations, MLD) on the measured path.
for ns in "$C" "$M" "$S"; do
  in_ns "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1
  in_ns "$ns" sysctl -q -w net.ipv6.conf.default.disable_ipv6=1
done
in_ns "$S" ip addr add 10.99.50.2/24 dev s0

mkdir -p "$WORK/www" "$WORK/out"
head -c "$((SIZE_MB * 1000000))" /dev/urandom > "$WORK/www/big.bin"
echo fine > "$WORK/www/small.txt"
ip netns exec "$S" python3 -m http.server 8080 --bind 10.99.50.2 --directory "$WORK/www" \
  >"$WORK/server.log" 2>&1 &
PIDS+=($!)

URL=http://10.99.50.2:8080
SIZE=$((SIZE_MB * 1000000))

# Waits (bounded) until a request gets through the middle namespace.
wait_path() {
  in_ns "$C" curl -s --retry 30 --retry-connrefused --retry-delay 1 --connect-timeout 2 \
    --max-time 45 -o /dev/null "$URL/small.txt" || die "$1: no request got through"
}

# Measures the current middle; writes $WORK/$1.{mbps,rtt,ttfb}.
measure() {
  local mode=$1 i out
  wait_path "$mode"
  : >"$WORK/$mode.mbps"; : >"$WORK/$mode.rtt"; : >"$WORK/$mode.ttfb"
  for i in $(seq 1 "$N"); do
    out=$(in_ns_for $((MAX_TIME + 10)) "$C" curl -sS --max-time "$MAX_TIME" -o /dev/null \
      -w '%{size_download} %{speed_download} %{time_total}' "$URL/big.bin") || die "$mode: download $i failed"
    set -- $out
    [ "$1" = "$SIZE" ] || die "$mode: download $i got $1 of $SIZE bytes"
    python3 -c "print(f'{$2/1e6:.1f}')" >>"$WORK/$mode.mbps"
    echo "  $mode: download $i: $SIZE_MB MB in $3 s, $(tail -1 "$WORK/$mode.mbps") MB/s"
  done
  if [ "$HAVE_PING" = 1 ]; then
    in_ns "$C" ping -n -c "$PINGS" -i 0.2 -w $((PINGS + 10)) 10.99.50.2 \
      | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' >"$WORK/$mode.rtt"
  fi
  for i in $(seq 1 "$PINGS"); do
    in_ns "$C" curl -sS --max-time 10 -o /dev/null -w '%{time_starttransfer}\n' "$URL/small.txt" \
      | python3 -c 'import sys; print(f"{float(sys.stdin.read())*1000:.3f}")' >>"$WORK/$mode.ttfb"
  done
  echo "  $mode: throughput median $(median 1 <"$WORK/$mode.mbps") MB/s; ping RTT median" \
    "$(median 3 <"$WORK/$mode.rtt") ms ($(wc -l <"$WORK/$mode.rtt") replies); TTFB median" \
    "$(median 3 <"$WORK/$mode.ttfb") ms ($PINGS requests)"
}

echo "live_vs_bridge: $SIZE_MB MB download x $N, $PINGS pings and $PINGS small requests per middle;" \
  "$(nproc) CPUs; $(uname -r)"

# 1. The Linux bridge.
in_ns "$M" ip link add br0 type bridge forward_delay 0
in_ns "$M" ip link set m0 master br0
in_ns "$M" ip link set m1 master br0
in_ns "$M" ip link set br0 up
measure bridge
in_ns "$M" ip link del br0

# 2. mbox inline (the veths are plain again, only mbox joins them).
# shellcheck disable=SC2086 # MBOX_ARGS is a list of flags
ip netns exec "$M" "$MBOX" run "$APP" --iface m0,m1 --duration $((MAX_TIME * N + 300)) \
  --stats-json "$WORK/mbox-stats.json" --output-dir "$WORK/out" $MBOX_ARGS >"$WORK/mbox.log" 2>&1 &
MBOX_PID=$!
PIDS+=("$MBOX_PID")
measure mbox
kill -INT "$MBOX_PID"
for _ in $(seq 1 200); do kill -0 "$MBOX_PID" 2>/dev/null || break; sleep 0.1; done
wait "$MBOX_PID" 2>/dev/null || true
if [ -f "$WORK/mbox-stats.json" ]; then
  python3 - "$WORK/mbox-stats.json" <<'EOF'
import json, sys
st = json.load(open(sys.argv[1]))
ports = ", ".join(f"{p['iface']} tp_drops {p['tp_drops']}" for p in st.get("ports", []))
print(f"  mbox: {st['packets_in']} packets in, {st['packets_out']} out, {st['packets_dropped']} dropped; kernel: {ports}")
EOF
else
  echo "  mbox: no stats (see its log):"; sed 's/^/    /' "$WORK/mbox.log" | tail -20
fi

python3 - "$WORK" "$HAVE_PING" <<'EOF'
import statistics, sys
w, have_ping = sys.argv[1], sys.argv[2] == "1"
def med(mode, what):
    v = [float(x) for x in open(f"{w}/{mode}.{what}").read().split()]
    return statistics.median(v) if v else float("nan")
ratio = med("mbox", "mbps") / med("bridge", "mbps")
rtt = med("mbox", "rtt") - med("bridge", "rtt") if have_ping else float("nan")
ttfb = med("mbox", "ttfb") - med("bridge", "ttfb")
print(f"result: throughput mbox/bridge {ratio:.2f} (medians {med('mbox', 'mbps'):.1f} / {med('bridge', 'mbps'):.1f} MB/s); "
      f"added latency: ping RTT +{rtt:.3f} ms, TTFB +{ttfb:.3f} ms (medians)")
EOF

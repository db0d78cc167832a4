#!/usr/bin/env bash
# The TCP splicer with its HTTP load balancer vs straight to one backend vs haproxy (TCP
# mode), same run, same client (ab), same backends (issue 15's benchmark; docs/splicer.md).
#
# Namespaces as in tests/tests/live_splicer.rs: client `c0` (10.99.0.1) ↔ `m0` | `mbox run
# apps/http_lb.toml --iface m0,m1` | `m1` ↔ `s0`, which carries the three backends
# 10.99.0.11-13 (`python3 -m http.server 8000` each) and haproxy on 10.99.0.150:80 (mode
# tcp, round robin over the same three). mbox runs for all three cases: frames that are not
# for the splicer's addresses are forwarded unchanged (a bump in the wire), so "direct" and
# "haproxy" cross the same inline mbox, without the splice:
#
#   direct    ab -> 10.99.0.11:8000                 (one backend)
#   splicer   ab -> 10.99.0.100:80 (mbox splices)   (round robin over three)
#   haproxy   ab -> 10.99.0.150:80 (haproxy, tcp)   (round robin over three)
#
# Each case ROUNDS times, interleaved (ab -n N -c C on a small file); prints every run and
# the medians of requests/s, mean and 99th-percentile latency, and the ratios to direct.
#
# Usage (root; from the repository root; run `cargo build --release` first):
#
#   bench/splicer_vs_haproxy.sh                  # N=2000 C=10 ROUNDS=3
#   N=5000 C=20 bench/splicer_vs_haproxy.sh
#
# Bounded: ab has -s (per-request timeout) and an outer timeout, mbox and the servers run
# under timeout. Cleans up on exit: its processes by PID, its namespaces, its directory.
set -euo pipefail

N=${N:-2000}
C=${C:-10}
ROUNDS=${ROUNDS:-3}
MBOX=${MBOX:-target/release/mbox}
APP=${APP:-apps/http_lb.toml}

die() { echo "splicer_vs_haproxy: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, AF_PACKET)"
for t in ip ethtool ab python3 haproxy timeout curl; do
  command -v "$t" >/dev/null 2>&1 || die "\`$t\` is not installed"
done
[ -x "$MBOX" ] || die "$MBOX not found: run \`cargo build --release\` first (or set MBOX)"
[ -f "$APP" ] || die "$APP not found: run from the repository root"

. "$(dirname "$0")/inline_pair.sh"
inline_pair "spb$$" splicer_vs_haproxy
for a in 11 12 13 150; do ip -n "$S_NS" addr add "10.99.0.$a/24" dev s0; done

mkdir -p "$WORK/www"
head -c 1024 /dev/urandom > "$WORK/www/small"
for a in 11 12 13; do
  (cd "$WORK/www" && exec timeout 900 ip netns exec "$S_NS" python3 -m http.server 8000 --bind "10.99.0.$a" \
    >"$WORK/http$a.log" 2>&1) &
  PIDS+=($!)
done
cat > "$WORK/haproxy.cfg" <<CFG
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
listen vip
  bind 10.99.0.150:80
  balance roundrobin
  server b11 10.99.0.11:8000
  server b12 10.99.0.12:8000
  server b13 10.99.0.13:8000
CFG
timeout 900 ip netns exec "$S_NS" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
timeout 900 ip netns exec "$M_NS" "$MBOX" run "$APP" --iface m0,m1 >"$WORK/mbox.log" 2>&1 &
PIDS+=($!)

for url in http://10.99.0.11:8000/small http://10.99.0.100/small http://10.99.0.150/small; do
  timeout 60 ip netns exec "$C_NS" curl -sS --retry 20 --retry-connrefused --retry-delay 1 \
    --connect-timeout 2 --max-time 40 -o /dev/null "$url" 2>/dev/null || die "no answer from $url (see $WORK)"
done

declare -A RPS MEAN P99
one() { # name url
  local out
  out=$(timeout 600 ip netns exec "$C_NS" ab -q -n "$N" -c "$C" -s 10 "$2" 2>&1) || die "ab $2 failed: $out"
  local failed rps mean p99
  failed=$(awk '/^Failed requests:/ {print $3}' <<<"$out")
  rps=$(awk '/^Requests per second:/ {print $4}' <<<"$out")
  mean=$(awk '/^Time per request:/ && /\(mean\)/ {print $4; exit}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  [ "$failed" = 0 ] || die "$1: $failed failed requests"
  printf '  %-8s %9s req/s  mean %7s ms  p99 %5s ms\n' "$1" "$rps" "$mean" "$p99"
  RPS[$1]+="$rps "; MEAN[$1]+="$mean "; P99[$1]+="$p99 "
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "ab -n $N -c $C, $ROUNDS rounds, 1 KiB file; mbox: $APP"
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  one direct http://10.99.0.11:8000/small
  one splicer http://10.99.0.100/small
  one haproxy http://10.99.0.150/small
done
echo
echo "| path | requests/s (median) | mean latency (median) | p99 latency (median) | requests/s vs direct |"
echo "| --- | --- | --- | --- | --- |"
d=$(median "${RPS[direct]}")
for k in direct splicer haproxy; do
  r=$(median "${RPS[$k]}")
  printf '| %s | %s | %s ms | %s ms | %.2fx |\n' "$k" "$r" "$(median "${MEAN[$k]}")" "$(median "${P99[$k]}")" \
    "$(awk -v a="$r" -v b="$d" 'BEGIN {print a / b}')"
done

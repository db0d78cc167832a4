#!/usr/bin/env bash
# The split proxy µStack vs haproxy (TCP mode), and the cache NF's hit path vs nginx serving
# the same object, same run, same client (ab), same origin (docs/proxy.md).
#
# Namespaces as in tests/tests/live_proxy.rs: client `c` (10.98.0.1) ↔ `p` ↔ server `s`
# (10.98.1.2, `python3 -m http.server 80`). In `p`: TCP to port 80 from the client is routed
# into tun0, where nfs/examples/proxy_tun (the split proxy, pass or cache) answers; haproxy
# (mode tcp) listens on 10.98.0.254:8080 towards the origin; nginx (if installed) serves the
# same files on 10.98.1.2:8081 in `s`.
#
#   direct    ab -> 10.98.1.2:80 with the proxy off (routed by the kernel)
#   proxy     ab -> 10.98.1.2:80 through proxy_tun pass
#   haproxy   ab -> 10.98.0.254:8080
#   cache     ab -> 10.98.1.2:80 through proxy_tun cache (all hits after the first)
#   nginx     ab -> 10.98.1.2:8081
#
# Small object (SIZE bytes) for requests/s; one BIG-byte download (curl) for throughput.
# Usage (root; repository root; `cargo build --release -p nfs --example proxy_tun` first):
#   bench/proxy_vs_haproxy.sh            # N=2000 C=10 SIZE=1024 BIG=50000000
# BUF=BYTES sets proxy_tun's socket buffers (default 256 KiB). The last line gives the
# ratios of the same run: split proxy / haproxy, cache hit path / nginx.
set -euo pipefail
N=${N:-2000}; C=${C:-10}; SIZE=${SIZE:-1024}; BIG=${BIG:-50000000}
BIN=${BIN:-target/release/examples/proxy_tun}
die() { echo "proxy_vs_haproxy: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TUN)"
for t in ip ab python3 haproxy timeout curl; do command -v "$t" >/dev/null 2>&1 || die "\`$t\` is not installed"; done
[ -x "$BIN" ] || die "$BIN not found: cargo build --release -p nfs --example proxy_tun"
TAG="pxb$$"; CN="${TAG}c" PN="${TAG}p" SN="${TAG}s"
WORK=$(mktemp -d /tmp/proxy_vs_haproxy.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.3
  for n in "$CN" "$PN" "$SN"; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
for n in "$CN" "$PN" "$SN"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add "${TAG}a" netns "$CN" type veth peer name "${TAG}b" netns "$PN"
ip link add "${TAG}d" netns "$SN" type veth peer name "${TAG}e" netns "$PN"
ip -n "$CN" addr add 10.98.0.1/24 dev "${TAG}a"; ip -n "$CN" link set "${TAG}a" up
ip -n "$PN" addr add 10.98.0.254/24 dev "${TAG}b"; ip -n "$PN" link set "${TAG}b" up
ip -n "$PN" addr add 10.98.1.254/24 dev "${TAG}e"; ip -n "$PN" link set "${TAG}e" up
ip -n "$SN" addr add 10.98.1.2/24 dev "${TAG}d"; ip -n "$SN" link set "${TAG}d" up
ip -n "$CN" route add default via 10.98.0.254
ip -n "$SN" route add default via 10.98.1.254
ip netns exec "$PN" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
ip netns exec "$PN" ip tuntap add dev tun0 mode tun
ip -n "$PN" link set tun0 up
ip netns exec "$PN" sysctl -qw net.ipv4.conf.tun0.rp_filter=0
ip -n "$PN" route add 10.98.2.0/24 dev tun0
ip -n "$PN" route add default dev tun0 table 100
steer() { ip -n "$PN" rule "$1" iif "${TAG}b" ipproto tcp dport 80 lookup 100; }
mkdir -p "$WORK/www"; head -c "$SIZE" /dev/urandom > "$WORK/www/small"; head -c "$BIG" /dev/urandom > "$WORK/www/big"
(cd "$WORK/www" && exec timeout 600 ip netns exec "$SN" python3 -m http.server 80 --bind 10.98.1.2 >/dev/null 2>&1) & PIDS+=($!)
cat > "$WORK/haproxy.cfg" <<CFG
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
listen px
  bind 10.98.0.254:8080
  server origin 10.98.1.2:80
CFG
timeout 600 ip netns exec "$PN" haproxy -f "$WORK/haproxy.cfg" >/dev/null 2>&1 & PIDS+=($!)
NGINX=0
if command -v nginx >/dev/null 2>&1; then
  cat > "$WORK/nginx.conf" <<CFG
user root; daemon off; worker_processes 1; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events {}
http { access_log off; server { listen 10.98.1.2:8081; root $WORK/www; } }
CFG
  timeout 600 ip netns exec "$SN" nginx -c "$WORK/nginx.conf" & PIDS+=($!)
  NGINX=1
else
  echo "nginx: SKIPPED (not installed)"
fi
sleep 1
# Requests/s of ab (with "(N failed)" appended when ab counted failures: then the rate is no
# measure of a working path).
rps() {
  local out r f
  out=$(timeout 300 ip netns exec "$CN" ab -q -s 10 -n "$N" -c "$C" "$1" 2>"$WORK/ab.err" || true)
  r=$(awk '/Requests per second/ {print $4}' <<<"$out"); f=$(awk '/^Failed requests/ {print $3}' <<<"$out")
  if [ -n "$f" ] && [ "$f" != 0 ]; then echo "${r:-none}(${f}failed)"; else echo "${r:-none}"; fi
}
mbps() { timeout 300 ip netns exec "$CN" curl -s -o /dev/null -w '%{speed_download}' "$1" | awk '{printf "%.1f", $1*8/1e6}'; }
proxy() { timeout 600 ip netns exec "$PN" "$BIN" tun0 10.98.2.1 80 590 "$1" ${BUF:-} >"$WORK/proxy.$1" 2>&1 & PROXY=$!; PIDS+=($PROXY); steer add; sleep 1; }
unproxy() { cat "$WORK/ab.err" >&2; steer del; kill -TERM "$PROXY" 2>/dev/null || true; sleep 0.3; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0 && a !~ /failed/) printf "%.2fx", a/b; else printf "-" }'; }
row() { printf '%-8s %12s %14s\n' "$1" "$2" "$3"; }
row path requests/s "Mbit/s (${BIG} B)"
D_R=$(rps http://10.98.1.2/small); D_M=$(mbps http://10.98.1.2/big); row direct "$D_R" "$D_M"
proxy pass
P_R=$(rps http://10.98.1.2/small); P_M=$(mbps http://10.98.1.2/big); row proxy "$P_R" "$P_M"
unproxy
H_R=$(rps http://10.98.0.254:8080/small); H_M=$(mbps http://10.98.0.254:8080/big); row haproxy "$H_R" "$H_M"
proxy cache
timeout 30 ip netns exec "$CN" curl -s -o /dev/null http://10.98.1.2/small || true
C_R=$(rps http://10.98.1.2/small); row cache "$C_R" "-"
unproxy
N_R=-
if [ "$NGINX" = 1 ]; then
  N_R=$(rps http://10.98.1.2:8081/small); row nginx "$N_R" "$(mbps http://10.98.1.2:8081/big)"
fi
echo "proxy/haproxy: requests/s $(ratio "$P_R" "$H_R"), Mbit/s $(ratio "$P_M" "$H_M"); cache/nginx: requests/s $(ratio "$C_R" "$N_R")"

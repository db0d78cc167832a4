#!/usr/bin/env bash
# The split proxy and End Point µStacks as `mbox run` runs them (apps/proxy.toml,
# apps/cache.toml) vs haproxy (TCP mode) and nginx, same run, same client (ab, curl), same
# origin (issue 18's benchmark on the app path; bench/proxy_vs_haproxy.sh measures the
# library on a TUN device instead). docs/proxy.md.
#
# Namespaces as in tests/tests/live_proxy_app.rs: client `c0` (10.99.0.1) ↔ `m0` | `mbox run
# APP --iface m0,m1` | `m1` ↔ `s0`, which carries the origin 10.99.0.11:8000 (`python3 -m
# http.server`), haproxy on 10.99.0.150:80 (mode tcp, towards the origin) and, when nginx is
# installed, nginx on 10.99.0.12:8081 serving the same files. mbox runs in every case: frames
# not for the proxy's addresses cross it unchanged (a bump in the wire), so "direct",
# "haproxy" and "nginx" cross the same inline mbox without being terminated:
#
#   direct    -> 10.99.0.11:8000            (the origin)
#   proxy     -> 10.99.0.100:80             (apps/proxy.toml: terminated, a server leg each)
#   haproxy   -> 10.99.0.150:80             (haproxy, tcp)
#   cache     -> 10.99.0.100:80             (apps/cache.toml, End Point: hits from memory)
#   nginx     -> 10.99.0.12:8081            (the same file)
#
# ab -n N -c C on a SIZE-byte file (requests/s, failures shown), curl of a BIG-byte file
# (Mbit/s). The last line gives the ratios of the same run: proxy / haproxy, cache / nginx.
#
# Usage (root; from the repository root; `cargo build --release -p microboxes` first):
#
#   bench/proxy_app_vs_haproxy.sh               # N=2000 C=10 SIZE=1024 BIG=20000000
#
# Bounded: ab has -s and an outer timeout, curl --max-time, mbox and the servers run under
# timeout. Cleans up on exit: its processes by PID, its namespaces, its directory.
set -euo pipefail

N=${N:-2000}; C=${C:-10}; SIZE=${SIZE:-1024}; BIG=${BIG:-20000000}
MBOX=${MBOX:-target/release/mbox}

die() { echo "proxy_app_vs_haproxy: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, AF_PACKET)"
for t in ip ethtool ab python3 haproxy timeout curl; do
  command -v "$t" >/dev/null 2>&1 || die "\`$t\` is not installed"
done
[ -x "$MBOX" ] || die "$MBOX not found: run \`cargo build --release -p microboxes\` first (or set MBOX)"
[ -f apps/proxy.toml ] && [ -f apps/cache.toml ] || die "apps/proxy.toml, apps/cache.toml not found: run from the repository root"

. "$(dirname "$0")/inline_pair.sh"
inline_pair "pab$$" proxy_app_vs_haproxy
for a in 11 12 150; do ip -n "$S_NS" addr add "10.99.0.$a/24" dev s0; done

mkdir -p "$WORK/www"
head -c "$SIZE" /dev/urandom > "$WORK/www/small"
head -c "$BIG" /dev/urandom > "$WORK/www/big"
(cd "$WORK/www" && exec timeout 1200 ip netns exec "$S_NS" python3 -m http.server 8000 --bind 10.99.0.11 \
  >"$WORK/http.log" 2>&1) &
PIDS+=($!)
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
  server origin 10.99.0.11:8000
CFG
timeout 1200 ip netns exec "$S_NS" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
NGINX=0
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  cat > "$WORK/nginx.conf" <<CFG
user root; daemon off; worker_processes 1; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events {}
http { access_log off; server { listen 10.99.0.12:8081; root $WORK/www; } }
CFG
  timeout 1200 ip netns exec "$S_NS" "$(command -v nginx || echo /usr/sbin/nginx)" -c "$WORK/nginx.conf" &
  PIDS+=($!)
  NGINX=1
else
  echo "nginx: SKIPPED (not installed; the cache/nginx ratio is not measured)"
fi

MBOX_PID=
start_mbox() { # app
  timeout 1200 ip netns exec "$M_NS" "$MBOX" run "$1" --iface m0,m1 >"$WORK/mbox.$(basename "$1").log" 2>&1 &
  MBOX_PID=$!
  PIDS+=($MBOX_PID)
  for url in http://10.99.0.11:8000/small http://10.99.0.100/small; do
    timeout 60 ip netns exec "$C_NS" curl -sS --retry 20 --retry-connrefused --retry-delay 1 \
      --connect-timeout 2 --max-time 40 -o /dev/null "$url" 2>/dev/null \
      || die "no answer from $url through $1 (mbox log: $(tail -3 "$WORK/mbox.$(basename "$1").log"))"
  done
}
stop_mbox() {
  kill -TERM "$MBOX_PID" 2>/dev/null || true
  wait "$MBOX_PID" 2>/dev/null || true
}

# Requests/s of ab ("RATE(N failed)" when ab counted failures: then no measure of a working path).
rps() {
  local out r f
  out=$(timeout 300 ip netns exec "$C_NS" ab -q -s 10 -n "$N" -c "$C" "$1" 2>"$WORK/ab.err" || true)
  r=$(awk '/^Requests per second:/ {print $4}' <<<"$out"); f=$(awk '/^Failed requests:/ {print $3}' <<<"$out")
  if [ -n "$f" ] && [ "$f" != 0 ]; then echo "${r:-none}(${f}failed)"; else echo "${r:-none}"; fi
}
mbps() {
  timeout 300 ip netns exec "$C_NS" curl -s --max-time 240 -o "$WORK/got" -w '%{speed_download}' "$1" \
    | awk '{printf "%.1f", $1*8/1e6}'
  cmp -s "$WORK/got" "$WORK/www/big" || echo "(body differs)"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0 && a !~ /failed|differs/) printf "%.2fx", a/b; else printf "-" }'; }
row() { printf '| %-8s | %14s | %16s |\n' "$1" "$2" "$3"; }

echo "ab -n $N -c $C on $SIZE bytes; curl of $BIG bytes; mbox: $MBOX"
echo "| path | requests/s | Mbit/s |"
echo "| --- | --- | --- |"
start_mbox apps/proxy.toml
D_R=$(rps http://10.99.0.11:8000/small); D_M=$(mbps http://10.99.0.11:8000/big); row direct "$D_R" "$D_M"
P_R=$(rps http://10.99.0.100/small); P_M=$(mbps http://10.99.0.100/big); row proxy "$P_R" "$P_M"
H_R=$(rps http://10.99.0.150/small); H_M=$(mbps http://10.99.0.150/big); row haproxy "$H_R" "$H_M"
stop_mbox
start_mbox apps/cache.toml
C_R=$(rps http://10.99.0.100/small); row cache "$C_R" "-"
N_R=-
if [ "$NGINX" = 1 ]; then
  N_R=$(rps http://10.99.0.12:8081/small); row nginx "$N_R" "$(mbps http://10.99.0.12:8081/big)"
fi
stop_mbox
echo
echo "proxy/haproxy: requests/s $(ratio "$P_R" "$H_R"), Mbit/s $(ratio "$P_M" "$H_M"); cache/nginx: requests/s $(ratio "$C_R" "$N_R")"

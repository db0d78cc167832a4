#!/bin/bash
# Record TCP capture fixtures between three private network namespaces and
# store tshark's reassembly of each as PCAP-minus-.pcap + .expected.json.
#
#   sudo scripts/captures/make-captures.sh tests/fixtures/captures
#
# Topology (names carry this script's PID, all removed by the EXIT trap):
#
#   mbxc-cli-PID            mbxc-mid-PID                 mbxc-srv-PID
#   c0 10.77.0.1/24 <-veth-> r0 [impair.py] r1 <-veth-> s0 10.77.0.2/24
#   curl, tcpdump -i c0      (no IP; L2 forwarder)        http server :8000
#
# Traffic only flows between these namespaces. Every process started here is
# bounded by `timeout`, its PID kept and killed by PID on exit.
# See README.md next to this script.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then echo "must run as root" >&2; exit 1; fi
OUTDIR=${1:?usage: $0 OUTDIR}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

need=()
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v ethtool >/dev/null || need+=(ethtool)
command -v tshark  >/dev/null || need+=(tshark)
command -v curl    >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null
fi

SUF=$$
CLI=mbxc-cli-$SUF
MID=mbxc-mid-$SUF
SRV=mbxc-srv-$SUF
WORK=$(mktemp -d /tmp/mbxc.XXXXXX)
PIDS=()
SERVER_PID=

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.2
    done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for ns in "$CLI" "$MID" "$SRV"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

log() { echo "[make-captures] $*" >&2; }

# Kill one process we started (by PID) and reap it.
stop_pid() {
    local p=$1 sig=${2:-TERM} q keep=()
    kill -"$sig" "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    for q in "${PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
    PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- topology
for ns in "$CLI" "$MID" "$SRV"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # No IPv6: keeps router solicitations / MLD out of the captures.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1
done
ip -n "$MID" link add r0 type veth peer name c0 netns "$CLI"
ip -n "$MID" link add r1 type veth peer name s0 netns "$SRV"
ip -n "$CLI" addr add 10.77.0.1/24 dev c0
ip -n "$SRV" addr add 10.77.0.2/24 dev s0
for pair in "$CLI c0" "$MID r0" "$MID r1" "$SRV s0"; do
    set -- $pair
    ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off rx off \
        >/dev/null 2>&1 || true
    ip netns exec "$1" ethtool -k "$2" | grep -q '^tx-checksumming: off' \
        || { log "could not turn tx checksum offload off on $1/$2"; exit 1; }
    ip -n "$1" link set "$2" up
done
ip -n "$MID" link set r0 promisc on
ip -n "$MID" link set r1 promisc on

# ---------------------------------------------------------------- content
# Served files: deterministic pseudo-random bytes, block i of file NAME is
# sha256(b"mbxc:" + NAME + b":" + str(i)), truncated to the size.
WWW=$WORK/www
mkdir -p "$WWW"
"$PY" - "$WWW" <<'EOF'
import hashlib, os, sys
d = sys.argv[1]
sizes = {"f0": 0, "f1": 1, "f1000": 1000, "f64k": 65536, "f1m": 1 << 20,
         "f3m": 3 << 20, "post4k": 4500, "post256k": 256 << 10}
for name, size in sizes.items():
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"mbxc:{name}:{i}".encode()).digest()
        i += 1
    with open(os.path.join(d, name), "wb") as f:
        f.write(out[:size])
EOF
POSTBODY=$WWW/post4k
BIGPOST=$WWW/post256k

# http.server (HTTP/1.1 so that keep-alive works) plus a do_POST that reads
# the body and answers with its sha256 hex, so POSTs keep the connection open.
cat > "$WORK/server.py" <<'EOF'
import functools, hashlib, http.server, sys

class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        out = hashlib.sha256(body).hexdigest().encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

http.server.ThreadingHTTPServer(
    ("10.77.0.2", 8000), functools.partial(Handler, directory=sys.argv[1])
).serve_forever()
EOF
ip netns exec "$SRV" timeout 1800 "$PY" "$WORK/server.py" "$WWW" \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")

URL=http://10.77.0.2:8000
# curl in the client namespace; bodies (all URLs of a call) go to /dev/null.
curlc() { ip netns exec "$CLI" timeout 40 curl -s --max-time 30 "$@" >/dev/null; }

# ---------------------------------------------------------------- helpers
IMPAIR_PID=
TCPDUMP_PID=

start_impair() {  # seed loss reorder dup
    rm -f "$WORK/impair.ready"
    ip netns exec "$MID" timeout 600 "$PY" "$HERE/impair.py" --a r0 --b r1 \
        --seed "$1" --loss "$2" --reorder "$3" --dup "$4" --max-seconds 300 \
        --ready-file "$WORK/impair.ready" 2>>"$WORK/impair.log" &
    IMPAIR_PID=$!
    PIDS+=("$IMPAIR_PID")
    for _ in $(seq 1 50); do [ -s "$WORK/impair.ready" ] && break; sleep 0.1; done
    [ -s "$WORK/impair.ready" ] || { log "impair.py did not start"; exit 1; }
    # Wait until the server answers through the forwarder (bounded).
    for _ in $(seq 1 50); do
        if ip netns exec "$CLI" timeout 3 curl -s -o /dev/null --max-time 2 "$URL/f0"; then
            # Let the probe connection's FIN/ACKs (and any retransmission of
            # them) finish before a capture starts.
            sleep 1.5
            return 0
        fi
        sleep 0.2
    done
    log "server not reachable through the forwarder"
    exit 1
}

stop_impair() {
    stop_pid "$IMPAIR_PID"
    tail -n 1 "$WORK/impair.log" >&2 || true
}

start_capture() {  # file
    rm -f "$WORK/tcpdump.log"
    ip netns exec "$CLI" timeout 600 tcpdump -i c0 -s 0 -U -Z root -w "$1" \
        2>"$WORK/tcpdump.log" &
    TCPDUMP_PID=$!
    PIDS+=("$TCPDUMP_PID")
    for _ in $(seq 1 100); do
        grep -q "listening on" "$WORK/tcpdump.log" 2>/dev/null && break
        sleep 0.1
    done
    grep -q "listening on" "$WORK/tcpdump.log" || { log "tcpdump did not start"; exit 1; }
    sleep 0.3
}

stop_capture() {
    sleep "${1:-1}"   # let the last FIN/ACKs (and their retransmissions) pass
    stop_pid "$TCPDUMP_PID" INT
    grep -E "captured|dropped" "$WORK/tcpdump.log" | tr '\n' ' ' >&2 || true
    echo >&2
}

# finish NAME: move the pcap into OUTDIR and record tshark's view of it.
finish() {
    cp "$WORK/$1.pcap" "$OUTDIR/$1.pcap"
    chmod 644 "$OUTDIR/$1.pcap"
    "$PY" "$HERE/tshark-expect.py" "$OUTDIR/$1.pcap" --served "$WWW"
}

# ---------------------------------------------------------------- scenarios
scenario_clean_oneshot() {
    log "clean_oneshot"
    start_impair 1 0 0 0
    start_capture "$WORK/clean_oneshot.pcap"
    for f in f0 f1 f1000 f64k; do curlc "$URL/$f"; done
    stop_capture 1
    stop_impair
    finish clean_oneshot
}

scenario_clean_keepalive() {
    log "clean_keepalive"
    start_impair 2 0 0 0
    start_capture "$WORK/clean_keepalive.pcap"
    # One connection: four GETs, a POST (via --next), then two more GETs.
    curlc "$URL/f0" "$URL/f1" "$URL/f1000" "$URL/f64k" \
        --next -s --max-time 30 -H 'Expect:' --data-binary "@$POSTBODY" "$URL/upload" \
        --next -s --max-time 30 "$URL/f1000" "$URL/f1"
    stop_capture 1
    stop_impair
    finish clean_keepalive
}

scenario_loss_reorder_dup() {
    log "loss_reorder_dup"
    start_impair 20260 0.02 0.03 0.02
    start_capture "$WORK/loss_reorder_dup.pcap"
    curlc "$URL/f1m"
    curlc "$URL/f64k"
    curlc "$URL/f64k" "$URL/f1000" \
        --next -s --max-time 30 -H 'Expect:' --data-binary "@$POSTBODY" "$URL/upload" \
        --next -s --max-time 30 "$URL/f64k"
    # A 256 KiB upload so that client->server data is lost/reordered too.
    curlc -H 'Expect:' --data-binary "@$BIGPOST" "$URL/upload"
    stop_capture 3
    stop_impair
    finish loss_reorder_dup
}

scenario_heavy_loss() {
    log "heavy_loss"
    local f
    for f in f3m f1m; do
        start_impair 80805 0.08 0.05 0.05
        start_capture "$WORK/heavy_loss.pcap"
        if curlc "$URL/$f"; then
            stop_capture 3
            stop_impair
            log "heavy_loss: $f downloaded"
            finish heavy_loss
            return 0
        fi
        log "heavy_loss: curl of $f failed within its time bound"
        stop_capture 0
        stop_impair
    done
    log "heavy_loss: SKIPPED"
}

SCENARIOS=${SCENARIOS:-"clean_oneshot clean_keepalive loss_reorder_dup heavy_loss"}
for s in $SCENARIOS; do "scenario_$s"; done

stop_pid "$SERVER_PID"
ls -l "$OUTDIR" >&2
du -ch "$OUTDIR"/*.pcap | tail -n 1 >&2

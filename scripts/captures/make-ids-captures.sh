#!/bin/bash
# Record the IDS / DPI fixtures (ids_http_attacks.pcap, ids_protocols.pcap) between
# three private network namespaces, and write NAME.expected.json next to each.
#
#   sudo scripts/captures/make-ids-captures.sh tests/fixtures/captures
#
# Topology as make-captures.sh (copied, not sourced: that script runs on load),
# names mbxi-{cli,mid,srv}-PID, all removed by the EXIT trap:
#
#   mbxi-cli-PID            mbxi-mid-PID                 mbxi-srv-PID
#   c0 10.77.0.1/24 <-veth-> r0 [impair.py] r1 <-veth-> s0 10.77.0.2/24
#   curl, openssl, python    (no IP; L2 forwarder)        http.server :8000, openssl
#                                                         s_server :4433, ssh/smtp/dns stubs
#
# Both routes carry `advmss 200`, so each side sends at most 188 payload bytes per segment
# (200 minus 12 bytes of TCP timestamps): requests are split over several segments.
# ids_http_attacks is captured on the SERVER's veth (s0): the attacks travel client->server,
# and only there are the forwarder's reordering/duplication/loss of client segments visible.
# Traffic only flows between these namespaces. Every process is bounded by `timeout`,
# its PID kept and killed by PID on exit. See README.md next to this script.
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
command -v curl    >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null
fi

SUF=$$
CLI=mbxi-cli-$SUF
MID=mbxi-mid-$SUF
SRV=mbxi-srv-$SUF
WORK=$(mktemp -d /tmp/mbxi.XXXXXX)
PIDS=()

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

log() { echo "[make-ids-captures] $*" >&2; }

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
# Small segments both ways: each side advertises MSS 200.
ip -n "$CLI" route replace 10.77.0.0/24 dev c0 src 10.77.0.1 advmss 200
ip -n "$SRV" route replace 10.77.0.0/24 dev s0 src 10.77.0.2 advmss 200

# ---------------------------------------------------------------- servers
WWW=$WORK/www
mkdir -p "$WWW"
echo "hello from mbxi" > "$WWW/index.html"
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
# SSH banner (2222), SMTP (2525) and a DNS responder (udp 5353), each a few lines.
cat > "$WORK/stubs.py" <<'EOF'
import socket, socketserver, struct, threading

class Ssh(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        self.rfile.readline(256)

class Smtp(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"220 mail.example.test ESMTP\r\n")
        while True:
            line = self.rfile.readline(1024)
            if not line:
                return
            if line.upper().startswith(b"EHLO"):
                self.wfile.write(b"250-mail.example.test\r\n250 8BITMIME\r\n")
            elif line.upper().startswith(b"QUIT"):
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")

class Dns(socketserver.BaseRequestHandler):
    def handle(self):
        q, sock = self.request
        if len(q) < 12:
            return
        # Answer: same id, QR|RD|RA, the question, one A record 10.77.0.2.
        ans = q[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00" + q[12:]
        ans += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton("10.77.0.2")
        sock.sendto(ans, self.client_address)

class T(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

for cls, srv in ((Ssh, T(("10.77.0.2", 2222), Ssh)), (Smtp, T(("10.77.0.2", 2525), Smtp)),
                 (Dns, socketserver.UDPServer(("10.77.0.2", 5353), Dns))):
    threading.Thread(target=srv.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
EOF
cat > "$WORK/clients.py" <<'EOF'
import random, socket, struct, sys
what = sys.argv[1]
if what == "ssh":
    s = socket.create_connection(("10.77.0.2", 2222), timeout=5)
    print(s.recv(256))
    s.sendall(b"SSH-2.0-test\r\n")
    s.shutdown(socket.SHUT_WR)
    s.recv(256)
    s.close()
elif what == "smtp":
    s = socket.create_connection(("10.77.0.2", 2525), timeout=5)
    f = s.makefile("rb")
    print(f.readline())
    s.sendall(b"EHLO client.example.test\r\n")
    print(f.readline(), f.readline())
    s.sendall(b"QUIT\r\n")
    print(f.readline())
    s.close()
elif what == "dns":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    qname = b"".join(bytes([len(p)]) + p for p in b"example.test".split(b".")) + b"\x00"
    s.sendto(struct.pack(">HHHHHH", 0x4d42, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01",
             ("10.77.0.2", 5353))
    print(s.recvfrom(512))
EOF

ip netns exec "$SRV" timeout 900 "$PY" "$WORK/server.py" "$WWW" >"$WORK/server.log" 2>&1 &
PIDS+=("$!"); HTTP_PID=$!
ip netns exec "$SRV" timeout 900 "$PY" "$WORK/stubs.py" >"$WORK/stubs.log" 2>&1 &
PIDS+=("$!"); STUBS_PID=$!
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=example.test \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1

URL=http://10.77.0.2:8000
curlc() { ip netns exec "$CLI" timeout 40 curl -s --path-as-is --max-time 30 "$@" >/dev/null || true; }

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
    for _ in $(seq 1 50); do
        if ip netns exec "$CLI" timeout 3 curl -s -o /dev/null --max-time 2 "$URL/"; then
            sleep 1.5
            return 0
        fi
        sleep 0.2
    done
    log "server not reachable through the forwarder"
    exit 1
}
stop_impair() { stop_pid "$IMPAIR_PID"; tail -n 1 "$WORK/impair.log" >&2 || true; }

start_capture() {  # namespace interface file
    rm -f "$WORK/tcpdump.log"
    ip netns exec "$1" timeout 600 tcpdump -i "$2" -s 0 -U -Z root -w "$3" \
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
    sleep "${1:-1}"
    stop_pid "$TCPDUMP_PID" INT
    grep -E "captured|dropped" "$WORK/tcpdump.log" | tr '\n' ' ' >&2 || true
    echo >&2
}

# ---------------------------------------------------------------- ids_http_attacks
# Every curl is one connection, except the keep-alive one (two attack requests, one flow).
# Padding moves the attack string across the 188-byte segment boundary at various offsets.
pad() { printf 'A%.0s' $(seq 1 "$1"); }
scenario_http_attacks() {
    log "ids_http_attacks"
    start_impair "${IDS_SEED:-11}" 0.02 0.10 0.03
    start_capture "$SRV" s0 "$WORK/ids_http_attacks.pcap"
    local n
    # "GET /index.html?pad=" is 20 bytes: with pad 155..164 "/etc/passwd" starts at
    # 178..187 and straddles the 188-byte boundary; same idea for "UNION%20SELECT".
    # /index.html exists (200, keep-alive); a 404 would close the connection.
    for n in 155 157 159 161 163 164; do curlc "$URL/index.html?pad=$(pad $n)&f=/etc/passwd"; done
    curlc "$URL/index.html?f=/etc/passwd"
    for n in 152 154 156 158 160; do curlc "$URL/index.html?pad=$(pad $n)&q=1%20UNION%20SELECT%20name%20FROM%20users"; done
    # keep-alive: two attack requests on one connection -> one alert per rule.
    curlc "$URL/index.html?f=/etc/passwd" "$URL/index.html?pad=$(pad 150)&f=/etc/passwd"
    # POST bodies: ~600 bytes, the attack in the middle.
    # The POST headers are 155 bytes: with 205..209 B's "UNION SELECT" starts at 368..372
    # and straddles the 376-byte boundary.
    for n in 205 209; do
        "$PY" -c "import sys; sys.stdout.write('x=' + 'B'*$n + '&id=1 UNION SELECT password FROM users--&' + 'C'*400)" > "$WORK/post_attack"
        curlc -H 'Expect:' --data-binary "@$WORK/post_attack" "$URL/login"
    done
    "$PY" -c "import sys; sys.stdout.write('x=' + 'B'*207 + '&id=1 UNION  SELEC password FROM users--&' + 'C'*400)" > "$WORK/post_near"
    # near misses
    curlc "$URL/index.html?pad=$(pad 160)&f=/etc/passw"
    curlc "$URL/index.html?f=/ETC/PASSWD&g=/etc/passwx"
    curlc "$URL/index.html?pad=$(pad 156)&q=1%20UNION%20%20SELEC%20name"
    curlc -H 'Expect:' --data-binary "@$WORK/post_near" "$URL/login"
    stop_capture 3
    stop_impair
    cp "$WORK/ids_http_attacks.pcap" "$OUTDIR/"
}

# ---------------------------------------------------------------- ids_protocols
scenario_protocols() {
    log "ids_protocols"
    start_impair 1 0 0 0
    ip netns exec "$SRV" timeout 60 openssl s_server -accept 4433 -naccept 1 \
        -cert "$WORK/cert.pem" -key "$WORK/key.pem" -quiet >"$WORK/s_server.log" 2>&1 &
    local SSL_PID=$!
    PIDS+=("$SSL_PID")
    sleep 1
    start_capture "$CLI" c0 "$WORK/ids_protocols.pcap"
    echo | ip netns exec "$CLI" timeout 10 openssl s_client -connect 10.77.0.2:4433 \
        -servername example.test >"$WORK/s_client.log" 2>&1 || true
    sleep 0.5
    ip netns exec "$CLI" timeout 10 "$PY" "$WORK/clients.py" ssh >&2 || true
    sleep 0.5
    ip netns exec "$CLI" timeout 10 "$PY" "$WORK/clients.py" smtp >&2 || true
    sleep 0.5
    ip netns exec "$CLI" timeout 10 "$PY" "$WORK/clients.py" dns >&2 || true
    sleep 0.5
    curlc -H 'Host: www.example.test' "$URL/index.html"
    stop_capture 2
    stop_pid "$SSL_PID"
    stop_impair
    cp "$WORK/ids_protocols.pcap" "$OUTDIR/"
}

ids_expect() {  # OUTDIR: writes ids.rules and both NAME.expected.json
    cat > "$1/ids.rules" <<'EOF'
# Rules for tests/fixtures/captures/ids_http_attacks.pcap (written by make-ids-captures.sh,
# whose python oracle mirrors them in RULES: keep both in sync).
alert tcp any any -> any 8000 (msg:"passwd file in request"; content:"/etc/passwd"; flow:to_server; sid:1001; rev:1; classtype:attempted-recon;)
alert tcp any any -> any 8000 (msg:"URL-encoded UNION SELECT"; content:"UNION%20SELECT"; nocase; flow:to_server; sid:1002; rev:1; classtype:web-application-attack;)
alert tcp any any -> any any (msg:"union ... select chain"; content:"union"; nocase; content:"select"; nocase; distance:0; within:32; flow:to_server; sid:1003; rev:1;)
alert tcp any any -> any any (msg:"UNION SELECT with a space (POST body)"; content:"UNION SELECT"; nocase; flow:to_server; sid:1004; rev:1;)
EOF
    "$PY" - "$1" <<'EOF'
import json, re, struct, sys, os
out = sys.argv[1]
RULES = {  # sid -> predicate on the client -> server bytes
    1001: lambda b: b"/etc/passwd" in b,
    1002: lambda b: b"union%20select" in b.lower(),
    1003: lambda b: re.search(rb"union.{0,26}select", b, re.I | re.S) is not None,
    1004: lambda b: b"union select" in b.lower(),
}
def frames(path):
    d = open(path, "rb").read()
    assert d[:4] == b"\xd4\xc3\xb2\xa1", "little-endian usec pcap expected"
    off, i = 24, 0
    while off < len(d):
        _, _, incl, _ = struct.unpack("<IIII", d[off:off + 16])
        yield i, d[off + 16:off + 16 + incl]
        off += 16 + incl; i += 1
def parse(f):
    if f[12:14] != b"\x08\x00": return None
    ip = f[14:]; ihl = (ip[0] & 15) * 4; tot = struct.unpack(">H", ip[2:4])[0]
    src, dst, proto = ip[12:16], ip[16:20], ip[9]
    l4 = ip[ihl:tot]
    sp, dp = struct.unpack(">HH", l4[:4])
    if proto == 6:
        seq = struct.unpack(">I", l4[4:8])[0]; doff = (l4[12] >> 4) * 4; fl = l4[13]
        return ("TCP", src, sp, dst, dp, seq, fl, l4[doff:])
    if proto == 17:
        return ("UDP", src, sp, dst, dp, 0, 0, l4[8:])
    return None
def flows(path):
    fl = {}
    for i, f in frames(path):
        p = parse(f)
        if not p: continue
        proto, src, sp, dst, dp, seq, flags, pay = p
        key = (proto, min((src, sp), (dst, dp)), max((src, sp), (dst, dp)))
        if key not in fl:
            # initiator: the SYN sender (TCP), the first sender (UDP)
            cli, srv = ((src, sp), (dst, dp)) if proto == "UDP" or (flags & 0x12) == 0x02 else ((dst, dp), (src, sp))
            fl[key] = {"proto": proto, "cli": cli, "srv": srv, "first": i, "c2s": [], "s2c": [], "isn": {}}
        st = fl[key]
        d = "c2s" if (src, sp) == st["cli"] else "s2c"
        if proto == "TCP" and flags & 0x02: st["isn"][d] = seq + 1
        if pay: st[d].append((i, seq, pay))
    return list(fl.values())
def ip(a): return ".".join(map(str, a))
def reassemble(segs, isn):
    buf = {}
    for _, seq, pay in segs:
        for k, b in enumerate(pay): buf.setdefault((seq - isn + k) & 0xffffffff, b)
    n = 0
    while n in buf: n += 1
    assert len(buf) == n, "hole in the reassembled stream"
    return bytes(buf[k] for k in range(n))

# ---- ids_http_attacks
res = []
have = lambda n: os.path.exists(os.path.join(out, n))
for st in (flows(os.path.join(out, "ids_http_attacks.pcap")) if have("ids_http_attacks.pcap") else []):
    if st["proto"] != "TCP" or not st["c2s"]: continue
    segs, isn = st["c2s"], st["isn"]["c2s"]
    stream = reassemble(segs, isn)
    arrival = b"".join(p for _, _, p in segs)
    # out of order: a data frame starting below the highest end seen before it (and not a
    # pure retransmission); retransmitted: all its bytes were seen before.
    hi, seen, ooo, rtx = 0, set(), 0, 0
    for _, seq, pay in segs:
        s0 = (seq - isn) & 0xffffffff
        rng = set(range(s0, s0 + len(pay)))
        if rng <= seen: rtx += 1
        elif s0 < hi: ooo += 1
        seen |= rng; hi = max(hi, s0 + len(pay))
    stream_sids = sorted(s for s, r in RULES.items() if r(stream))
    res.append({
        "client_port": st["cli"][1],
        "first_frame": st["first"],
        "request_lines": [l.decode()[:60] + ("..." if len(l) > 60 else "")
                          for l in stream.split(b"\r\n") if re.match(rb"(GET|POST) ", l)],
        "c2s_data_frames": len(segs),
        "c2s_bytes": len(stream),
        "c2s_out_of_order_frames": ooo,
        "c2s_retransmitted_frames": rtx,
        "alerts_stream": stream_sids,
        "alerts_packets": sorted(s for s, r in RULES.items() if r(arrival)),
        # sids whose match lies in no single frame: the pattern is split over segments
        "split": sorted(s for s in stream_sids if not any(RULES[s](p) for _, _, p in segs)),
    })
if res: json.dump({"capture": "ids_http_attacks.pcap", "rules": "ids.rules",
           "note": "alerts_stream: the rules on the reassembled client->server bytes; "
                   "alerts_packets: on the client payloads concatenated in arrival order "
                   "(retransmissions included). Oracle: make-ids-captures.sh (python).",
           "flows": res}, open(os.path.join(out, "ids_http_attacks.expected.json"), "w"), indent=1)

# ---- ids_protocols: what was sent, per flow (service by server port)
APP = {2222: ("ssh", None), 2525: ("smtp", "mail.example.test"), 4433: ("tls", "example.test"),
       5353: ("dns", "example.test"), 8000: ("http", "www.example.test")}
res = []
for st in (flows(os.path.join(out, "ids_protocols.pcap")) if have("ids_protocols.pcap") else []):
    if not (st["c2s"] or st["s2c"]): continue
    app, host = APP.get(st["srv"][1], ("unknown", None))
    res.append({"proto": st["proto"], "src_ip": ip(st["cli"][0]), "src_port": st["cli"][1],
                "dest_ip": ip(st["srv"][0]), "dest_port": st["srv"][1], "app_proto": app, "host": host})
if res: json.dump({"capture": "ids_protocols.pcap",
           "note": "per flow with payload: the service on dest_port and the host sent "
                   "(SNI, SMTP banner, DNS qname, HTTP Host): what DPI must report",
           "flows": res}, open(os.path.join(out, "ids_protocols.expected.json"), "w"), indent=1)
for f in (json.load(open(os.path.join(out, "ids_http_attacks.expected.json")))["flows"] if have("ids_http_attacks.pcap") else []):
    print(f["client_port"], f["c2s_data_frames"], f["c2s_out_of_order_frames"], f["c2s_retransmitted_frames"],
          f["alerts_stream"], f["alerts_packets"], f["split"], f["request_lines"][0][:40], file=sys.stderr)
print(json.dumps(res), file=sys.stderr)
EOF
}
SCENARIOS=${SCENARIOS:-"http_attacks protocols"}
for s in $SCENARIOS; do "scenario_$s"; done
stop_pid "$HTTP_PID"
stop_pid "$STUBS_PID"
chmod 644 "$OUTDIR"/ids_*.pcap
ids_expect "$OUTDIR"
ls -l "$OUTDIR"/ids_* >&2

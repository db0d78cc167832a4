#!/usr/bin/env bash
# The DPDK port's packet rate (issue 16's benchmark), on virtual devices, no hugepages, no NIC.
#
# 1. rx -> l23 -> tx between net_null0 and net_null1 (inline, an app with no NF: the L2/3
#    µStack alone), --count N frames, vs `dpdk-testpmd` io forwarding between the same two
#    devices in the same run (one forwarding lcore; median of its per-second Rx-pps after a
#    warm-up second, both ports added): packets/s of each and the ratio mbox/testpmd.
# 2. The IDS app (apps/ids.toml: TCP monitor, DPI, signature matching) over one generated
#    capture, read by net_pcap (`--dpdk ... --ports 0`, passive) vs read as a file (`-i`):
#    packets/s of each (the run report's packets_per_s) and that both give the same alerts.
#    The DPDK run's time includes the EAL's start (it touches its -m memory) and the ports'
#    set-up: measured apart with --count 1, and the rate is also shown without it.
#
# Usage (root not needed; from the repository root; builds nothing — first
# `cargo build --release --features dpdk`, docs/dpdk.md):
#
#   bench/dpdk_vs_testpmd.sh                      # N=5000000 frames, FLOWS=8000 flows
#   N=1000000 FLOWS=1000 bench/dpdk_vs_testpmd.sh
#
# Bounded: every process runs under `timeout`. Cleans its work directory on exit.
set -euo pipefail

N=${N:-5000000}
FLOWS=${FLOWS:-8000}
SECS=${SECS:-8}          # testpmd's run, seconds
MBOX=${MBOX:-target/release/mbox}
EAL="-l 0 --no-huge -m 256 --no-pci --no-shconf --log-level=warning"

die() { echo "dpdk_vs_testpmd: $*" >&2; exit 1; }
[ -x "$MBOX" ] || die "$MBOX not found: run \`cargo build --release --features dpdk\` first (or set MBOX)"
command -v dpdk-testpmd >/dev/null 2>&1 || die "dpdk-testpmd not found: apt-get install dpdk-dev"
command -v python3 >/dev/null 2>&1 || die "python3 is needed to read the reports"
MBOX=$(realpath "$MBOX")
APPS=$(realpath apps)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

echo "== 1. net_null0 <-> net_null1: mbox rx -> l23 -> tx vs dpdk-testpmd io forwarding"
: > l23.toml
timeout 600 "$MBOX" run l23.toml --dpdk "$EAL --vdev=net_null0 --vdev=net_null1" --ports 0,1 \
  --count "$N" --stats-json null.json -q
mbox_pps=$(field null.json packets_per_s)
python3 - null.json <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
p = s["dpdk_ports"]
print(f"mbox:     {s['packets_in']} frames in, {s['packets_out']} out in {s['elapsed_s']:.2f} s: "
      f"{s['packets_per_s']:.0f} packets/s; devices in {sum(x['ipackets'] for x in p)}, "
      f"out {sum(x['opackets'] for x in p)}, missed {sum(x['imissed'] + x['rx_nombuf'] for x in p)}")
EOF
timeout -s INT "$SECS" dpdk-testpmd -l 0,1 --no-huge -m 512 --no-pci --no-shconf --log-level=warning \
  --vdev=net_null0 --vdev=net_null1 -- --forward-mode=io --nb-cores=1 --stats-period=1 --no-flush-rx \
  --total-num-mbufs=16384 > testpmd.log 2>&1 || true
tp_pps=$(python3 - testpmd.log <<'EOF'
import re, statistics, sys
v = [int(x) for x in re.findall(r"Rx-pps:\s+(\d+)", open(sys.argv[1]).read())]
# Two ports per period; skip the first period (start-up), add the ports, take the median.
periods = [v[i] + v[i + 1] for i in range(2, len(v) - 1, 2)]
if not periods:
    sys.exit("testpmd printed no statistics; see testpmd.log")
print(int(statistics.median(periods)))
EOF
)
echo "testpmd:  ${tp_pps} packets/s (io forwarding, 1 forwarding lcore, median of $(( SECS - 2 ))-ish 1 s periods)"
python3 -c "import sys; print(f'ratio mbox/testpmd: {float(sys.argv[1]) / float(sys.argv[2]):.3f}')" "$mbox_pps" "$tp_pps"

echo "== 2. apps/ids.toml: net_pcap input vs pcap input"
"$MBOX" gen --flows "$FLOWS" --seed 3 --attacks 8 -o in.pcap | tail -1
frames=$(python3 - in.pcap <<'EOF'
import struct, sys
b = open(sys.argv[1], "rb").read()
e = "<" if b[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
off, n = 24, 0
while off + 16 <= len(b):
    off += 16 + struct.unpack(e + "I", b[off + 8:off + 12])[0]
    n += 1
print(n)
EOF
)
mkdir -p pcap dpdk
(cd pcap && timeout 600 "$MBOX" run "$APPS/ids.toml" -i ../in.pcap --stats-json s.json -q)
(cd dpdk && timeout 600 "$MBOX" run "$APPS/ids.toml" --dpdk "$EAL --vdev=net_pcap0,rx_pcap=$WORK/in.pcap" \
  --ports 0 --count "$frames" --stats-json s.json -q)
mkdir -p one
(cd one && timeout 600 "$MBOX" run "$APPS/ids.toml" --dpdk "$EAL --vdev=net_pcap0,rx_pcap=$WORK/in.pcap" \
  --ports 0 --count 1 --stats-json s.json -q)
cmp -s pcap/alerts.jsonl dpdk/alerts.jsonl && same=yes || same=NO
pcap_pps=$(field pcap/s.json packets_per_s)
dpdk_pps=$(field dpdk/s.json packets_per_s)
printf 'pcap input:     %s frames, %.0f packets/s\n' "$(field pcap/s.json packets_in)" "$pcap_pps"
printf 'net_pcap input: %s frames, %.0f packets/s\n' "$(field dpdk/s.json packets_in)" "$dpdk_pps"
python3 - pcap/s.json dpdk/s.json one/s.json <<'EOF'
import json, sys
p, d, one = (json.load(open(f)) for f in sys.argv[1:])
setup = one["elapsed_s"]
net = d["packets_in"] / max(d["elapsed_s"] - setup, 1e-9)
print(f"ratio dpdk/pcap: {d['packets_per_s'] / p['packets_per_s']:.3f}")
print(f"DPDK start-up (EAL, pool, ports; a --count 1 run): {setup:.2f} s; net_pcap input without it: "
      f"{net:.0f} packets/s, ratio dpdk/pcap {net / p['packets_per_s']:.3f}")
EOF
echo "same alerts: $same ($(wc -l < pcap/alerts.jsonl) lines)"

#!/usr/bin/env bash
# The DPDK port's two receive modes, in the same run: `--dpdk-rx zero-copy` (the devices
# receive straight into the shared packet pool's lent buffers) vs `--dpdk-rx copy` (each
# frame copied from its mbuf into the pool), on virtual devices, no hugepages, no NIC.
#
# 1. rx -> l23 -> tx between net_null0 and net_null1 (inline, no NF), --count N frames of
#    SIZE bytes; net_null with copy=1 writes every frame's bytes into its mbuf, as a NIC's
#    DMA would. For each frame size in SIZES: ROUNDS runs of each mode, alternated; the
#    median and the best packets/s (the run report's packets_per_s) of each, and the ratios
#    zero-copy/copy of both (on a shared machine the best run is the least disturbed one).
# 2. The IDS app (apps/ids.toml) over one generated capture read by net_pcap (passive):
#    ROUNDS runs of each mode, alternated; the same figures; both modes give the same alerts.
#
# Usage (from the repository root; builds nothing — first
# `cargo build --release --features dpdk`, docs/dpdk.md):
#
#   bench/dpdk_zero_copy.sh                       # N=2000000, SIZES="64 1500", ROUNDS=5
#   N=500000 SIZES=1500 ROUNDS=5 bench/dpdk_zero_copy.sh
#
# Bounded: every process runs under `timeout`. Cleans its work directory on exit.
set -euo pipefail

N=${N:-2000000}
SIZES=${SIZES:-"64 1500"}
ROUNDS=${ROUNDS:-5}
FLOWS=${FLOWS:-4000}
MBOX=${MBOX:-target/release/mbox}
EAL="-l 0 --no-huge -m 256 --no-pci --no-shconf --log-level=warning"

die() { echo "dpdk_zero_copy: $*" >&2; exit 1; }
[ -x "$MBOX" ] || die "$MBOX not found: run \`cargo build --release --features dpdk\` first (or set MBOX)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed to read the reports"
MBOX=$(realpath "$MBOX")
APPS=$(realpath apps)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
# report NAME ZC... -- CP...: medians, bests and ratios of two series.
report() {
  python3 - "$@" <<'PY'
import statistics, sys
a = sys.argv[1:]
k = a.index("--")
zc, cp = [float(x) for x in a[:k]], [float(x) for x in a[k + 1:]]
for name, v in (("zero-copy", zc), ("copy", cp)):
    print(f"{name + ':':10} median {statistics.median(v):.0f}, best {max(v):.0f} packets/s "
          f"(runs: {' '.join(f'{x:.0f}' for x in v)})")
print(f"ratio zero-copy/copy: median {statistics.median(zc) / statistics.median(cp):.3f}, "
      f"best {max(zc) / max(cp):.3f}")
PY
}

: > l23.toml
for size in $SIZES; do
  echo "== 1. net_null0 <-> net_null1 (copy=1, ${size}-byte frames): rx -> l23 -> tx, $N frames, $ROUNDS rounds"
  zc=(); cp=()
  for r in $(seq "$ROUNDS"); do
    for mode in zero-copy copy; do
      timeout 600 "$MBOX" run l23.toml \
        --dpdk "$EAL --vdev=net_null0,size=$size,copy=1 --vdev=net_null1,size=$size,copy=1" --ports 0,1 \
        --count "$N" --dpdk-rx "$mode" --stats-json "$mode.json" -q
      [ "$(field "$mode.json" packets_out)" = "$N" ] || die "$mode: not every frame went out"
      pps=$(field "$mode.json" packets_per_s)
      if [ "$mode" = zero-copy ]; then zc+=("$pps"); else cp+=("$pps"); fi
    done
  done
  report "${zc[@]}" -- "${cp[@]}"
done

echo "== 2. apps/ids.toml, net_pcap input (passive), $ROUNDS rounds"
"$MBOX" gen --flows "$FLOWS" --seed 3 --attacks 8 -o in.pcap | tail -1
frames=$(python3 - in.pcap <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
e = "<" if b[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
off, n = 24, 0
while off + 16 <= len(b):
    off += 16 + struct.unpack(e + "I", b[off + 8:off + 12])[0]
    n += 1
print(n)
PY
)
zc=(); cp=()
for r in $(seq "$ROUNDS"); do
  for mode in zero-copy copy; do
    rm -rf "$mode" && mkdir -p "$mode"
    (cd "$mode" && timeout 600 "$MBOX" run "$APPS/ids.toml" --dpdk "$EAL --vdev=net_pcap0,rx_pcap=$WORK/in.pcap" \
      --ports 0 --count "$frames" --dpdk-rx "$mode" --stats-json s.json -q)
    pps=$(field "$mode/s.json" packets_per_s)
    if [ "$mode" = zero-copy ]; then zc+=("$pps"); else cp+=("$pps"); fi
  done
done
cmp -s zero-copy/alerts.jsonl copy/alerts.jsonl && same=yes || same=NO
report "${zc[@]}" -- "${cp[@]}"
echo "same alerts: $same ($(wc -l < copy/alerts.jsonl) lines, $frames frames)"

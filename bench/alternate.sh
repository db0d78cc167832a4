#!/usr/bin/env bash
# Runs several `mbox run` command lines in turn, ROUNDS times (the order rotated each round),
# and prints the median packets/s of each (as `mbox run` reports it) with every run's value:
# neighbouring runs on a shared machine differ by up to 2x, alternation spreads that noise
# over all of them.
#
#   bench/alternate.sh ROUNDS LABEL1 'COMMAND1' LABEL2 'COMMAND2' ...
#   bench/alternate.sh 10 tx0 'mbox run apps/ids.toml --input in.pcap' \
#                         tx1 'mbox run apps/ids.toml --input in.pcap --core-map tx1.toml'
set -euo pipefail
[ $# -ge 3 ] && [ $(( ($# - 1) % 2 )) -eq 0 ] || { echo "usage: $0 ROUNDS LABEL 'COMMAND' [LABEL 'COMMAND' ...]" >&2; exit 2; }
rounds=$1; shift
labels=(); cmds=()
while [ $# -gt 0 ]; do labels+=("$1"); cmds+=("$2"); shift 2; done
k=${#labels[@]}
out=$(mktemp /tmp/mbox-alternate.XXXXXX)
trap 'rm -f "$out"' EXIT
for r in $(seq "$rounds"); do
  for j in $(seq 0 $((k - 1))); do
    i=$(( (j + r) % k ))
    p=$(bash -c "${cmds[$i]}" 2>&1 | grep -o '[0-9]* packets/s' | head -1 | cut -d' ' -f1 || true)
    [ -n "$p" ] || { echo "${labels[$i]}: no packets/s in the output of: ${cmds[$i]}" >&2; exit 1; }
    echo "${labels[$i]} $p" >>"$out"
  done
done
python3 - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, pps = line.split()
    runs[label].append(int(pps))
for label, v in runs.items():
    print(f"{label:14} median {statistics.median(v):>10.0f} packets/s   runs {sorted(v)}")
PY

#!/usr/bin/env bash
# Two builds of `mbox` on the same runs, alternated, compared by CPU time (user + system of
# the whole `mbox run`, region setup included) — steadier than wall time on a shared machine.
#
#   bench/ab_builds.sh OLD_MBOX NEW_MBOX [REPS]
#
# Runs, on generated captures (`mbox gen`, written to a temporary directory):
#   tcp      [stack.tcp] alone, and with one stream_hash NF (3000 flows, seed 5: the `tcp`
#            bench's input);
#   chain    [stack.tcp] + 1, 3 and 5 stream_hash NFs in modes a, c and d (3000 flows,
#            seed 18, responses of 0-8000 bytes: the `chain` bench's input).
# Prints, per run, the median CPU seconds of each build and NEW's speed relative to OLD
# (OLD cpu / NEW cpu: above 1 is faster). REPS (default 5) alternations per run.
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); reps=${3:-5}
dir=$(mktemp -d /tmp/mbox-ab.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$new" gen --flows 3000 --seed 5 --udp-fraction 0 -o "$dir/tcp.pcap" >/dev/null
"$new" gen --flows 3000 --seed 18 --udp-fraction 0 --response-size 0-8000 -o "$dir/chain.pcap" >/dev/null

app() { # app FILE NFS
  printf '[stack.tcp]\n' >"$1"
  for i in $(seq "$2"); do
    printf '\n[[nf]]\nname = "h%d"\nkind = "stream_hash"\noutput = "%s/h%d.jsonl"\n' "$i" "$dir" "$i" >>"$1"
  done
}

measure() { # measure LABEL APP INPUT MODE
  local label=$1 app=$2 input=$3 mode=$4 times="$dir/times"
  : >"$times"
  for _ in $(seq "$reps"); do
    for b in old new; do
      rm -f "$dir"/h*.jsonl
      local bin=$old; [ "$b" = new ] && bin=$new
      /usr/bin/time -f "$b %U %S" -a -o "$times" "$bin" run "$app" --input "$input" --mode "$mode" -q >/dev/null
    done
  done
  python3 - "$times" "$label" <<'PY'
import statistics, sys
cpu = {"old": [], "new": []}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 3 and p[0] in cpu:
        cpu[p[0]].append(float(p[1]) + float(p[2]))
o, n = statistics.median(cpu["old"]), statistics.median(cpu["new"])
print(f"{sys.argv[2]:<34} old {o:6.3f} s  new {n:6.3f} s  new speed {o / n:5.2f}x")
PY
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $reps alternations per run; CPU seconds, medians"
app "$dir/tcp0.toml" 0
app "$dir/tcp1.toml" 1
measure "tcp: monitor alone" "$dir/tcp0.toml" "$dir/tcp.pcap" c
measure "tcp: monitor + stream_hash" "$dir/tcp1.toml" "$dir/tcp.pcap" c
for n in 1 3 5; do
  app "$dir/chain$n.toml" "$n"
  for m in a c d; do
    measure "chain: $n NFs, mode $m" "$dir/chain$n.toml" "$dir/chain.pcap" "$m"
  done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

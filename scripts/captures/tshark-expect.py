#!/usr/bin/env python3
"""Record tshark's TCP reassembly of a capture as a JSON fixture.

    tshark-expect.py CAPTURE.pcap [--served DIR] [--out FILE]

For every TCP stream index N in the capture this runs
`tshark -r CAPTURE -q -z follow,tcp,raw,N`, concatenates each direction's
chunks in output order (node 0 = the stream's first packet's source = client,
node 1 = server; node-1 lines are tab-indented) and writes
CAPTURE-without-.pcap + ".expected.json":

    {"capture": "x.pcap", "tshark": "TShark (Wireshark) 4.0.17 ...",
     "streams": [{"stream": 0, "client": "10.77.0.1:45678", "server": "10.77.0.2:8000",
                  "client_bytes": 123, "server_bytes": 4567,
                  "client_sha256": "<hex>", "server_sha256": "<hex>"}]}

With --served DIR it also checks, as a sanity test of the capture and of
tshark's output, that each stream is a sequence of complete HTTP/1.x
exchanges: every GET /NAME response body equals the file DIR/NAME, and every
POST response body is the sha256 hex of the POST body (what make-captures.sh's
server answers). It exits non-zero if a check fails.

Where a byte range of a direction is never seen in the capture, tshark 4.0
inserts the ASCII text "[N bytes missing in capture file]" into the followed
data in its place; this script warns when that text appears (and fails with
--served).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys


GAP_MARK = b" bytes missing in capture file]"


def tshark(*args):
    return subprocess.run(["tshark", *args], check=True, capture_output=True,
                          text=True, timeout=600).stdout


def stream_ids(pcap):
    out = tshark("-r", pcap, "-T", "fields", "-e", "tcp.stream")
    return sorted({int(x) for x in out.split() if x.strip()})


def follow(pcap, n):
    """Return (node0, node1, bytes0, bytes1) for TCP stream n."""
    out = tshark("-r", pcap, "-q", "-z", f"follow,tcp,raw,{n}")
    node = {}
    data = {0: bytearray(), 1: bytearray()}
    in_body = False
    for line in out.splitlines():
        if line.startswith("====="):
            if in_body:
                break
            continue
        if line.startswith("Follow:") or line.startswith("Filter:"):
            continue
        if line.startswith("Node 0:") or line.startswith("Node 1:"):
            node[int(line[5])] = line.split(":", 1)[1].strip()
            in_body = True
            continue
        if not in_body or not line.strip():
            continue
        who = 1 if line.startswith("\t") else 0
        data[who] += bytes.fromhex(line.strip())
    if set(node) != {0, 1}:
        raise RuntimeError(f"stream {n}: unexpected follow output:\n{out[:2000]}")
    return node[0], node[1], bytes(data[0]), bytes(data[1])


def parse_messages(buf, is_request):
    """Split an HTTP/1.x byte stream into (start_line, headers, body) tuples.

    Returns (messages, leftover_bytes). Only Content-Length framing is handled
    (which is all that python's http.server and curl use here)."""
    msgs = []
    pos = 0
    while pos < len(buf):
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        head = buf[pos:end].decode("latin-1").split("\r\n")
        headers = {}
        for h in head[1:]:
            k, _, v = h.partition(":")
            headers[k.strip().lower()] = v.strip()
        start = head[0]
        blen = int(headers.get("content-length", "0"))
        if not is_request and start.split(" ")[1:2] and start.split(" ")[1].startswith("1"):
            blen = 0  # 1xx interim response
        body_start = end + 4
        if body_start + blen > len(buf):
            break
        msgs.append((start, headers, buf[body_start:body_start + blen]))
        pos = body_start + blen
    return msgs, buf[pos:]


def check_http(n, cbytes, sbytes, served):
    """Return a list of problems (empty = good) and a one-line summary."""
    problems = []
    reqs, rest_c = parse_messages(cbytes, True)
    resps, rest_s = parse_messages(sbytes, False)
    resps = [r for r in resps if not r[0].split(" ")[1].startswith("1")]
    if rest_c:
        problems.append(f"{len(rest_c)} unparsed client bytes")
    if rest_s:
        problems.append(f"{len(rest_s)} unparsed server bytes")
    if len(reqs) != len(resps):
        problems.append(f"{len(reqs)} requests but {len(resps)} responses")
    done = []
    for (rline, _rh, rbody), (sline, _sh, sbody) in zip(reqs, resps):
        method, target = rline.split(" ")[:2]
        if method == "GET":
            path = os.path.join(served, target.lstrip("/"))
            with open(path, "rb") as f:
                want = f.read()
            ok = sbody == want
            done.append(f"GET {target} {len(sbody)}B {'ok' if ok else 'MISMATCH'}")
            if not ok:
                problems.append(f"GET {target}: body {len(sbody)} B differs from file "
                                f"({len(want)} B); status {sline!r}")
        elif method == "POST":
            want = hashlib.sha256(rbody).hexdigest().encode() + b"\n"
            ok = sbody == want
            done.append(f"POST {target} {len(rbody)}B {'ok' if ok else 'MISMATCH'}")
            if not ok:
                problems.append(f"POST {target}: response {sbody[:80]!r} != sha256 of body")
        else:
            problems.append(f"unexpected method {method}")
    return problems, f"stream {n}: " + ", ".join(done)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pcap")
    ap.add_argument("--served", help="directory of the served files: check HTTP bodies")
    ap.add_argument("--out", help="output file (default: PCAP minus .pcap + .expected.json)")
    args = ap.parse_args()

    pcap = args.pcap
    base = pcap[:-5] if pcap.endswith(".pcap") else pcap
    out = args.out or base + ".expected.json"
    version = tshark("--version").splitlines()[0].strip()

    streams = []
    problems = []
    for n in stream_ids(pcap):
        c, s, cb, sb = follow(pcap, n)
        streams.append({
            "stream": n, "client": c, "server": s,
            "client_bytes": len(cb), "server_bytes": len(sb),
            "client_sha256": hashlib.sha256(cb).hexdigest(),
            "server_sha256": hashlib.sha256(sb).hexdigest(),
        })
        for who, b in (("client", cb), ("server", sb)):
            if GAP_MARK in b:
                # tshark writes "[N bytes missing in capture file]" into the
                # followed data where a gap is never filled in the capture.
                msg = (f"stream {n}: {who} data contains tshark's gap marker "
                       f"'[... bytes missing in capture file]' x{b.count(GAP_MARK)}")
                print(f"WARNING {os.path.basename(pcap)}: {msg}", file=sys.stderr)
                if args.served:
                    problems.append(msg)
        if args.served:
            p, summary = check_http(n, cb, sb, args.served)
            print(f"  {os.path.basename(pcap)} {summary}", file=sys.stderr)
            problems += [f"stream {n}: {x}" for x in p]

    doc = {"capture": os.path.basename(pcap), "tshark": version, "streams": streams}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"{out}: {len(streams)} streams", file=sys.stderr)
    if problems:
        for p in problems:
            print(f"CHECK FAILED {os.path.basename(pcap)}: {p}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

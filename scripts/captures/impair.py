#!/usr/bin/env python3
"""User-space L2 forwarder with seeded impairment, for capture fixtures.

Runs in a middle network namespace between two veth interfaces (e.g. `r0`
facing the client and `r1` facing the server). Every frame received on one
interface is sent out of the other, except that, under a seeded random
generator, IPv4/TCP frames are

  * dropped            with probability --loss,
  * duplicated         with probability --dup  (sent twice, back to back),
  * held back (reorder) with probability --reorder: the frame is kept and sent
    right after the next frame going the same way (or after --hold-ms if no
    further frame comes).

Non-TCP frames (ARP, ...) are always forwarded unchanged, so neighbour
resolution never stalls. The decisions depend only on --seed and on the order
in which frames arrive, so a run is reproducible "in spirit" (TCP timing still
varies between runs).

The forwarder runs until killed (SIGTERM/SIGINT) or until --max-seconds have
passed, and prints a one-line summary of what it did to stderr on exit.

Offloads must be off on every veth involved (`ethtool -K IF tx off tso off gso
off gro off rx off`), otherwise forwarded TCP carries partial checksums (or
super-frames larger than the MTU) and is dropped by the receiver.
"""

import argparse
import os
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23  # linux/if_packet.h, Linux >= 4.20
PACKET_OUTGOING = 4          # sll_pkttype of frames this host sent
ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
IPPROTO_TCP = 6


def open_iface(name):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass  # old kernel: we also filter on sll_pkttype below
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind((name, 0))
    s.setblocking(False)
    return s


def is_tcp(frame):
    """True for an Ethernet frame carrying IPv4/TCP (optionally one VLAN tag)."""
    if len(frame) < 14:
        return False
    off = 12
    etype = int.from_bytes(frame[off:off + 2], "big")
    if etype == ETH_P_8021Q and len(frame) >= 18:
        off += 4
        etype = int.from_bytes(frame[off:off + 2], "big")
    ip = off + 2
    return etype == ETH_P_IP and len(frame) > ip + 9 and frame[ip + 9] == IPPROTO_TCP


class Direction:
    def __init__(self, name, out_sock):
        self.name = name
        self.out = out_sock
        self.held = None          # frame held back for reordering
        self.held_since = 0.0
        self.stats = dict(rx=0, tx=0, drop=0, dup=0, reorder=0, err=0)

    def send(self, frame):
        try:
            self.out.send(frame)
            self.stats["tx"] += 1
        except (BlockingIOError, OSError):
            # Full queue or oversize frame: counts as an (unplanned) loss.
            self.stats["err"] += 1

    def flush_held(self):
        if self.held is not None:
            frame, self.held = self.held, None
            self.send(frame)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", default="r0", help="first interface (client side)")
    ap.add_argument("--b", default="r1", help="second interface (server side)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--reorder", type=float, default=0.0)
    ap.add_argument("--dup", type=float, default=0.0)
    ap.add_argument("--hold-ms", type=float, default=20.0,
                    help="longest time a reordered frame is held back")
    ap.add_argument("--max-seconds", type=float, default=300.0,
                    help="exit after this long whatever happens")
    ap.add_argument("--ready-file", help="touch this file once both sockets are bound")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    sa, sb = open_iface(args.a), open_iface(args.b)
    dirs = {sa.fileno(): (sa, Direction(f"{args.a}->{args.b}", sb)),
            sb.fileno(): (sb, Direction(f"{args.b}->{args.a}", sa))}

    stop = False

    def on_signal(_sig, _frm):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(f"{os.getpid()}\n")

    deadline = time.monotonic() + args.max_seconds
    hold_s = args.hold_ms / 1000.0
    poller = select.poll()
    for fd in dirs:
        poller.register(fd, select.POLLIN)

    while not stop:
        now = time.monotonic()
        if now >= deadline:
            break
        # Release frames that have been held back too long.
        for _s, d in dirs.values():
            if d.held is not None and now - d.held_since >= hold_s:
                d.flush_held()
        timeout_ms = 200
        if any(d.held is not None for _s, d in dirs.values()):
            timeout_ms = max(1, int(hold_s * 1000 / 2))
        try:
            events = poller.poll(timeout_ms)
        except InterruptedError:
            continue
        for fd, _ev in events:
            sock, d = dirs[fd]
            for _ in range(64):  # bounded drain per wake-up
                try:
                    frame, addr = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue  # a frame we sent ourselves
                d.stats["rx"] += 1
                if not is_tcp(frame):
                    d.send(frame)
                    continue
                r_loss, r_dup, r_reo = rng.random(), rng.random(), rng.random()
                if r_loss < args.loss:
                    d.stats["drop"] += 1
                    continue
                copies = 2 if r_dup < args.dup else 1
                if copies == 2:
                    d.stats["dup"] += 1
                if r_reo < args.reorder and d.held is None:
                    d.stats["reorder"] += 1
                    d.held = frame
                    d.held_since = time.monotonic()
                    if copies == 2:
                        d.send(frame)  # the duplicate goes now, the original later
                    continue
                for _c in range(copies):
                    d.send(frame)
                d.flush_held()  # a held frame goes after the next one

    for _s, d in dirs.values():
        d.flush_held()
    summary = "; ".join(f"{d.name}: " + " ".join(f"{k}={v}" for k, v in d.stats.items())
                        for _s, d in dirs.values())
    print(f"impair.py seed={args.seed} loss={args.loss} reorder={args.reorder} "
          f"dup={args.dup}: {summary}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

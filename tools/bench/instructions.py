#!/usr/bin/env python3
"""Instructions per operation of Patro's server and client, counted by Valgrind's callgrind.

Latency on a shared 2-CPU VM moves by a few per cent between runs; the instructions a call costs
do not. This starts patro-bench's own roles (a broker, a server with 4 lanes, one client calling
direct, as `patro-bench --cases chain` does, or through the broker with --route broker) with one
side under callgrind, counts only while the client runs its COUNT operations (after its warm-up),
and prints the instructions per operation of that side (user space: libpatro, libzmq, libc; the
kernel is not counted). Each mode is one client process, started fresh.

    tools/bench/instructions.py --bench build-dev/tools/patro-bench \\
        --modes get,get3b,call3b,chainb --count 2000

With --b, a second build's patro-bench runs the same, and B's count over A's is printed beside.
Modes are patro-bench's client modes (tools/patro_bench.cpp, role_patro_client): get, call,
get3b, call3b, chainb, chain, seq3. Needs valgrind (Debian's `valgrind` package).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import roles


def spawn(cmd, cpu):
    return subprocess.Popen(["taskset", "-c", str(cpu), *cmd], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def count(bench, mode, ops, side, work, route="direct"):
    """Instructions per operation of side ('server' or 'client') for one mode, and the dump."""
    out = os.path.join(work, f"callgrind.{side}.{mode}")
    grind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    data = tempfile.mkdtemp(dir=work)
    procs = []
    try:
        broker = spawn([bench, "--role", "patro-broker"], 1)
        procs.append(broker)
        _, back = broker.stdout.readline().split()
        server = spawn((grind if side == "server" else []) +
                       [bench, "--role", "patro-server", back, data, "4"], 1)
        procs.append(server)
        if server.stdout.readline().strip() != "ready":
            sys.exit("the server did not start")
        client = spawn((grind if side == "client" else []) +
                       [bench, "--role", "patro-client", os.path.join(data, "patro.conf"),
                        route, mode, "1", str(ops), "600000"], 0)
        procs.append(client)
        if client.stdout.readline().strip() != "ready":
            sys.exit(f"the client ({mode}) did not start")
        target = str((server if side == "server" else client).pid)
        subprocess.run(["callgrind_control", "-i", "on", target], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client.stdin.write("c")
        client.stdin.flush()
        done = client.stdout.readline().split()
        subprocess.run(["callgrind_control", "-d", target], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["callgrind_control", "-i", "off", target], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not done or int(done[0]) != ops:
            sys.exit(f"the client ({mode}) ran {done[:1]} operations, not {ops}")
        dumps = [f for f in os.listdir(work) if f.startswith(f"callgrind.{side}.{mode}.")]
        if len(dumps) != 1:
            sys.exit(f"expected one callgrind dump of {side} ({mode}), found {dumps}")
        text = subprocess.run(["callgrind_annotate", os.path.join(work, dumps[0])], check=True,
                              capture_output=True, text=True).stdout
        total = re.search(r"^\s*([0-9,]+)\s.*PROGRAM TOTALS", text, re.M)
        if not total:
            sys.exit(f"no totals in the callgrind dump of {side} ({mode})")
        return int(total.group(1).replace(",", "")) / ops, os.path.join(work, dumps[0])
    finally:
        roles.stop(reversed(procs), timeout=60)  # under callgrind, a process ends slowly
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", required=True, help="patro-bench (A)")
    ap.add_argument("--b", help="a second build's patro-bench (B), counted the same")
    ap.add_argument("--modes", default="get,get3b,call3b,chainb")
    ap.add_argument("--count", type=int, default=2000, help="operations counted per mode")
    ap.add_argument("--sides", default="server,client")
    ap.add_argument("--route", default="direct", choices=["direct", "broker"],
                    help="how the client calls (broker: through the bench's broker)")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep each callgrind dump in DIR (for callgrind_annotate), named "
                    "SIDE.MODE.BUILD")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not in PATH (apt-get install valgrind util-linux)")
    builds = [("A", args.bench)] + ([("B", args.b)] if args.b else [])
    work = tempfile.mkdtemp(prefix="patro-instructions-")
    try:
        print("side    mode      " + "  ".join(f"{name:>9}" for name, _ in builds) +
              ("      B/A" if args.b else ""))
        for side in args.sides.split(","):
            for mode in args.modes.split(","):
                per = []
                for name, bench in builds:
                    n, dump = count(bench, mode, args.count, side, work, args.route)
                    per.append(n)
                    if args.keep:
                        os.makedirs(args.keep, exist_ok=True)
                        shutil.move(dump, os.path.join(args.keep, f"{side}.{mode}.{name}"))
                    for f in os.listdir(work):
                        if f.startswith("callgrind."):
                            os.unlink(os.path.join(work, f))
                print(f"{side:7} {mode:8}  " + "  ".join(f"{p:9,.0f}" for p in per) +
                      (f"  {per[1] / per[0]:7.3f}" if args.b else ""), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

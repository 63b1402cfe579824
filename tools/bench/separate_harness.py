#!/usr/bin/python3
"""A separate harness for the N-client row (docs/BENCHMARKS.md, "A fair multi-client row").

Drives patro-bench's own roles without its orchestrator: an Ice server (THREADS in its server
thread pool) and a Patro broker and server (THREADS lanes), alone, on the servers' CPU; N Ice
clients and N Patro clients (route=direct, sync get) on the clients' CPU; phases of PHASE_MS
alternating Ice and Patro, each process timing its own loop (the bench's old way). Prints each
side's median rate (the sum of the processes' calls over the longest of their times) and Patro
over Ice. Nothing else runs beside them, so its figures can be set against patro-bench's row
from the same minutes.

Usage: separate_harness.py PATRO_BENCH [--threads 4] [--clients 4] [--phase-ms 3000]
       [--phases 3] [--pin cross|none]
"""
import argparse
import shutil
import statistics
import subprocess
import tempfile

import roles


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--phase-ms", type=int, default=3000)
    ap.add_argument("--phases", type=int, default=3)
    ap.add_argument("--pin", choices=["cross", "none"], default="cross")
    a = ap.parse_args()
    if a.threads < 1 or a.clients < 1 or a.phases < 1 or a.phase_ms < 100:
        ap.error("--threads, --clients and --phases at least 1, --phase-ms at least 100")

    procs = []

    def start(args, cpu):
        pin = ["taskset", "-c", cpu] if a.pin == "cross" else []
        p = subprocess.Popen(pin + [a.bench] + args, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(p)
        return p

    def first_line(p, what):
        line = p.stdout.readline()
        if not line:
            raise SystemExit(f"separate_harness: {what} did not start")
        return line.strip()

    d = tempfile.mkdtemp(prefix="patro-harness-")
    try:
        ice_server = start(["--role", "ice-server", str(a.threads)], "1")
        proxy = first_line(ice_server, "the Ice server (is patro-bench built with Ice?)")
        broker = start(["--role", "patro-broker"], "1")
        back = first_line(broker, "the Patro broker").split()[1]
        server = start(["--role", "patro-server", back, d, str(a.threads)], "1")
        if first_line(server, "the Patro server") != "ready":
            raise SystemExit("separate_harness: the Patro server did not start")
        loop = ["1", str(1 << 40), str(a.phase_ms)]
        ice = [start(["--role", "ice-client", proxy, "seq"] + loop, "0")
               for _ in range(a.clients)]
        patro = [start(["--role", "patro-client", d + "/patro.conf", "direct", "get"] + loop, "0")
                 for _ in range(a.clients)]
        for c in ice + patro:
            if first_line(c, "a client") != "ready":
                raise SystemExit("separate_harness: a client did not start")

        def phase(group):
            for c in group:
                c.stdin.write("g")
                c.stdin.flush()
            runs = [first_line(c, "a client's phase").split() for c in group]
            return sum(int(r[0]) for r in runs) / max(float(r[1]) for r in runs)

        ice_rates, patro_rates = [], []
        for _ in range(a.phases):
            ice_rates.append(phase(ice))
            patro_rates.append(phase(patro))
        for c in ice + patro:
            c.stdin.write("e")
            c.stdin.flush()
        mi, mp = statistics.median(ice_rates), statistics.median(patro_rates)
        print(f"ice {mi:.0f} calls/s ({' '.join(f'{r:.0f}' for r in ice_rates)}); "
              f"patro direct {mp:.0f} ({' '.join(f'{r:.0f}' for r in patro_rates)}); "
              f"patro/ice {mp / mi:.2f}; threads {a.threads}, clients {a.clients}, "
              f"phases {a.phase_ms} ms, pin {a.pin}")
    finally:
        roles.stop(procs, timeout=10)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Two builds of patro-bench, alternating, in one sitting: before (A) and after (B).

Runs A, B, A, B ... (--rounds of each) with the same bench options and --json, then prints for
each row its ratio in every run (the row over the raw ZeroMQ floor measured in the same run, in
alternating chunks: p50 over p50 for latency rows, rate over rate for rate rows; a shared VM's
drift between runs cancels in it), the median of each build, B's median over A's, and A's own
spread (its largest run over its smallest: the A/A noise a B/A ratio must beat to mean
anything). Rows where lower is better (latency) and higher is better (rates) are marked.

    tools/bench/ab_runs.py --a /path/before/patro-bench --b build-dev/tools/patro-bench \\
        --rounds 3 -- --cases seq,pipe --dma-latency on --pin cross
"""
import argparse
import json
import statistics
import subprocess
import sys


def run(bench, extra):
    out = subprocess.run([bench, "--json", *extra], check=False, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"{bench} exited {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def figures(doc):
    rows = {}
    for c in doc["cases"]:
        if c.get("ratio") is None:
            continue
        rows[c["name"]] = ("p50_us" if c.get("p50_us") is not None else "per_s", c["ratio"])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="patro-bench of the build before")
    ap.add_argument("--b", required=True, help="patro-bench of the build after")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("bench_args", nargs=argparse.REMAINDER,
                    help="after --: the options both runs get")
    args = ap.parse_args()
    extra = [a for a in args.bench_args if a != "--"]
    runs = {"A": [], "B": []}
    machine = None
    for r in range(args.rounds):
        for side, bench in (("A", args.a), ("B", args.b)):
            doc = run(bench, extra)
            machine = machine or doc.get("machine")
            runs[side].append(figures(doc))
            print(f"round {r + 1}: {side} done", file=sys.stderr)
    print(f"machine: {machine}")
    print(f"options: {' '.join(extra)}; {args.rounds} rounds, A and B alternating")
    print(f"{'row':<62} {'kind':<7} {'A median':>10} {'B median':>10} {'B/A':>6} {'A/A':>6}"
          "  runs A | runs B")
    for name in runs["A"][0]:
        kind = runs["A"][0][name][0]
        a = [r[name][1] for r in runs["A"] if name in r]
        b = [r[name][1] for r in runs["B"] if name in r]
        if not a or not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        spread = max(a) / min(a) if min(a) > 0 else float("nan")
        label = "lower" if kind == "p50_us" else "higher"
        fmt = lambda v: f"{v:.3f}"
        print(f"{name[:62]:<62} {label:<7} {fmt(ma):>10} {fmt(mb):>10} {mb / ma:6.3f} "
              f"{spread:6.3f}  {' '.join(fmt(v) for v in a)} | {' '.join(fmt(v) for v in b)}")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""The Python client's speed against its floor, in one run (docs/BENCHMARKS.md, "Python client").

Starts a patro-broker and the Python tests' C++ server (patro-test-py-server, 4 lanes) from a
build directory, then measures, in rounds of short chunks that alternate the two so drift on a
shared machine touches both alike:

  floor:  pyzmq alone, no Patro code on the client: a DEALER sends a get of h["abc"] encoded
          once beforehand ([hdr][object id][request id][body]) through the same broker to the same
          server, and takes the reply frames without decoding them (it skips the broker's
          heartbeats, and checks a sequential reply's request id).
  patro:  the patro package: p.at("abc").get() (sequential), and get_async() futures, through
          the broker as the floor goes (--route broker, the default here; --route auto or direct
          measures the client's direct path against the same brokered floor).

Cases: sequential get (p50, p99 over every round), and a rate with 64 requests in flight. Every
loop is bounded in count and in time. Usage:

    /usr/bin/python3 tools/py_bench.py [--build build] [--rounds 4] [--seq 2000] [--pipe 20000]
                                       [--json] [--route broker|auto|direct]
"""
import argparse
import collections
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for_file(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return True
        time.sleep(0.01)
    return False


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description="Python client benchmark")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2000, help="sequential gets per round")
    ap.add_argument("--pipe", type=int, default=20000, help="gets per round, 64 in flight")
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--max-seconds", type=float, default=20.0, help="bound on each phase")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--route", default="broker", choices=("broker", "auto", "direct"),
                    help="the patro client's route (the floor always goes through the broker)")
    a = ap.parse_args()

    sys.path[:0] = [os.path.join(ROOT, "python"), os.path.join(a.build, "python")]
    sys.dont_write_bytecode = True
    import zmq

    import patro
    from patro import _codec as codec

    tmp = tempfile.mkdtemp(prefix="patro-pybench-")
    procs = []
    name = "pybench-%d" % os.getpid()
    try:
        ends = os.path.join(tmp, "ends")
        procs.append(subprocess.Popen([
            os.path.join(a.build, "broker/patro-broker"), "--front", "tcp://127.0.0.1:*",
            "--back", "tcp://127.0.0.1:*", "--endpoints-file", ends]))
        if not wait_for_file(ends):
            raise SystemExit("patro-broker did not start")
        front, back = open(ends).read().split()
        conf = os.path.join(tmp, "conf")
        procs.append(subprocess.Popen([
            os.path.join(a.build, "tests/python/patro-test-py-server"), conf, "--broker", back,
            "--threads", "4", "--name", name]))
        if not wait_for_file(conf):
            raise SystemExit("the server did not start")

        h = patro.get_proxies(conf, route=a.route)[0]
        p = h.at("abc")
        assert p.get() == 123
        server, obj = h.id

        ctx = zmq.Context(1)
        raw = ctx.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(front)
        body = codec.encode_request(1, 1, server, obj, codec.Op.Get, ("abc",), (), None,
                                    codec.CallContext.Scalar, 30000)
        hdr = codec.header(codec.REQUEST)
        oid = codec.object_id_frame(server, obj)
        rid = [0]

        def raw_send():
            rid[0] += 1
            raw.send_multipart([hdr, oid, codec.u64_frame(rid[0]), body])

        reply_hdr = codec.header(codec.REPLY)

        def raw_recv():
            # The broker heartbeats this socket too (it is a client to it): skip those.
            while True:
                if not raw.poll(10000):
                    raise SystemExit("the floor got no reply in 10 s")
                msg = raw.recv_multipart()
                if msg[0] == reply_hdr:
                    return msg

        raw_send()  # the first round trip connects
        reply = raw_recv()
        assert codec.decode_reply(reply[2], lambda *r: r).results == [123]

        cpu = {"floor": [0.0, 0], "patro": [0.0, 0]}  # client CPU seconds, calls (pipelined)

        def seq(one, n):
            out = []
            stop = time.monotonic() + a.max_seconds
            for _ in range(n):
                t0 = time.perf_counter_ns()
                one()
                out.append((time.perf_counter_ns() - t0) / 1000.0)
                if time.monotonic() > stop:
                    break
            return out

        def raw_one():
            raw_send()
            if raw_recv()[1] != codec.u64_frame(rid[0]):
                raise SystemExit("the floor's reply is not to its request")

        def raw_pipe(n, k):
            stop = time.monotonic() + a.max_seconds
            c0 = time.process_time()
            t0 = time.perf_counter()
            for _ in range(k):
                raw_send()
            done = sent = 0
            sent = k
            while done < sent:
                raw_recv()
                done += 1
                if sent < n and time.monotonic() < stop:
                    raw_send()
                    sent += 1
            elapsed = time.perf_counter() - t0
            cpu["floor"][0] += time.process_time() - c0
            cpu["floor"][1] += done
            return done / elapsed

        def patro_one():
            if p.get() != 123:
                raise SystemExit("a wrong answer")

        def patro_pipe(n, k):
            stop = time.monotonic() + a.max_seconds
            c0 = time.process_time()
            t0 = time.perf_counter()
            q = collections.deque(p.get_async() for _ in range(k))
            done, sent = 0, k
            while q:
                if q.popleft().result(10) != 123:
                    raise SystemExit("a wrong answer")
                done += 1
                if sent < n and time.monotonic() < stop:
                    q.append(p.get_async())
                    sent += 1
            elapsed = time.perf_counter() - t0
            cpu["patro"][0] += time.process_time() - c0
            cpu["patro"][1] += done
            return done / elapsed

        # Warm both.
        seq(raw_one, 200)
        seq(patro_one, 200)
        lat = {"floor": [], "patro": []}
        rate = {"floor": [], "patro": []}
        # Short chunks, alternating, so both see the same load on a shared machine.
        for _ in range(a.rounds):
            for _ in range(max(a.seq // 100, 1)):
                lat["floor"] += seq(raw_one, 100)
                lat["patro"] += seq(patro_one, 100)
            for _ in range(5):
                rate["floor"].append(raw_pipe(a.pipe // 5, a.in_flight))
                rate["patro"].append(patro_pipe(a.pipe // 5, a.in_flight))

        res = {
            "machine": "%s, %d CPUs, Python %s, pyzmq %s, libzmq %s" % (
                platform.machine(), os.cpu_count(), platform.python_version(), zmq.__version__,
                zmq.zmq_version()),
            "rounds": a.rounds,
            "get_p50_us": statistics.median(lat["patro"]),
            "get_p99_us": percentile(lat["patro"], 0.99),
            "floor_p50_us": statistics.median(lat["floor"]),
            "floor_p99_us": percentile(lat["floor"], 0.99),
            "in_flight": a.in_flight,
            "get_per_s": statistics.median(rate["patro"]),
            "floor_per_s": statistics.median(rate["floor"]),
        }
        res["cpu_us_per_call"] = cpu["patro"][0] / max(cpu["patro"][1], 1) * 1e6
        res["floor_cpu_us_per_call"] = cpu["floor"][0] / max(cpu["floor"][1], 1) * 1e6
        res["p50_ratio"] = res["get_p50_us"] / res["floor_p50_us"]
        res["rate_ratio"] = res["get_per_s"] / res["floor_per_s"]
        h.connection.close()
        raw.close(0)
        ctx.term()
    finally:
        for pr in reversed(procs):
            pr.send_signal(signal.SIGTERM)
            try:
                pr.wait(10)
            except subprocess.TimeoutExpired:
                pr.kill()
                pr.wait()
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)

    if a.json:
        print(json.dumps(res))
    print("| case | p50 us | p99 us | per s | floor p50 us | floor p99 us | floor per s | ratio |",
          file=sys.stderr)
    print("|---|--:|--:|--:|--:|--:|--:|--:|", file=sys.stderr)
    print("| Python get, 1 client | %.1f | %.1f |  | %.1f | %.1f |  | %.2f |" % (
        res["get_p50_us"], res["get_p99_us"], res["floor_p50_us"], res["floor_p99_us"],
        res["p50_ratio"]), file=sys.stderr)
    print("| Python get_async, %d in flight |  |  | %.0f |  |  | %.0f | %.2f |" % (
        a.in_flight, res["get_per_s"], res["floor_per_s"], res["rate_ratio"]), file=sys.stderr)
    print("| client CPU us per call, %d in flight | %.1f |  |  | %.1f |  |  | %.2f |" % (
        a.in_flight, res["cpu_us_per_call"], res["floor_cpu_us_per_call"],
        res["cpu_us_per_call"] / res["floor_cpu_us_per_call"]), file=sys.stderr)
    print(res["machine"], file=sys.stderr)


if __name__ == "__main__":
    main()

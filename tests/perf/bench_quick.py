#!/usr/bin/python3
"""Smoke run of patro-bench (the perf suite): every case runs briefly and its numbers come out.

Not timed: it asserts only that each row has its figures, that the Ice rows are numbers where the
Ice peer was built and say "skipped" where not, that patro-worker's rows measure patro-worker, that
the job queue's peers (beanstalkd, Redis) ran where installed and say "skipped" where not, that
their load clients fail with a clear message against a peer that misbehaves, and that bad
options are refused. Usage: bench_quick.py PATRO_BENCH (PATRO_WORKER in the environment).
"""
import json
import shutil
import socket
import subprocess
import sys
import threading

CLIENTS = [1, 8]


def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def fake_peer(answer):
    """A one-connection server on loopback: reads what comes, answers with `answer` (None: closes
    at once), then closes. Returns its port and the thread."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(20)

    def serve():
        with srv:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    if answer is not None:
                        conn.recv(4096)
                        conn.sendall(answer)
                        conn.recv(4096)  # until the client gives up and closes
                except OSError:
                    pass

    t = threading.Thread(target=serve)
    t.start()
    return srv.getsockname()[1], t


def peer_clients_fail_cleanly(bench):
    """The beanstalkd and Redis load clients (internal roles) against a peer that closes, answers
    garbage or sends a line with no end: each exits 1 with a message naming the peer, at once."""
    cases = [("beanstalk-client", ["jobs"], "beanstalkd"),
             ("redis-client", ["s", "1"], "redis")]
    answers = {None: ("connection closed", "Connection reset by peer"),
               b"garbage\r\n": ("garbage",), b"+" + b"x" * 10000: ("longer than",)}
    for role, extra, name in cases:
        for answer, says in answers.items():
            port, t = fake_peer(answer)
            r = subprocess.run([bench, "--role", role, str(port)] + extra + ["100", "1000"],
                               input="ge", capture_output=True, text=True, timeout=20)
            t.join(timeout=20)
            assert r.returncode == 1, (role, answer, r.returncode, r.stderr)
            assert f"patro-bench: {name}: " in r.stderr, (role, answer, r.stderr)
            assert any(w in r.stderr for w in says), (role, answer, r.stderr)


def main():
    bench = sys.argv[1]
    args = [bench, "--quick", "--json", "--pin", "none", "--curve",
            "--clients", ",".join(map(str, CLIENTS))]
    run = subprocess.run(args, capture_output=True, text=True, timeout=150)
    sys.stderr.write(run.stderr)
    assert run.returncode == 0, f"patro-bench exited {run.returncode}"
    out = json.loads(run.stdout)
    rows = {c["name"]: c for c in out["cases"]}
    assert out["clients"] == CLIENTS, out["clients"]
    assert out["route"] == "auto"

    def row(name):
        assert name in rows, f"no row {name!r}; rows: {sorted(rows)}"
        return rows[name]

    # The default route (auto) goes direct; the brokered rows run beside for get.
    for name in ["floor: raw ZeroMQ echo via broker, 1 client", "get, 1 client (direct)",
                 "get, 1 client (brokered)", "set, 1 client (direct)", "call, 1 client (direct)",
                 "lock+unlock pair, 1 client (direct)", "coroutine get, 1 in flight (direct)"]:
        r = row(name)
        assert number(r["p50_us"]) and number(r["p99_us"]) and number(r["ratio"]), r
    rate_rows = [f"async get, {w} in flight ({route})" for w in (1, 8, 64)
                 for route in ("direct", "brokered")]
    # 4 runs beside the list: the job and log rows are scaled by its rates.
    rate_rows += [f"{n} client processes, sync get ({route})" for n in CLIENTS + [4]
                  for route in ("direct", "brokered")]
    for name in rate_rows:
        r = row(name)
        assert number(r["per_s"]) and number(r["floor_per_s"]), r

    if out["ice"] == "built":
        ice = row("ice: twoway get, 1 client")
        assert number(ice["p50_us"]) and number(ice["p99_us"]), ice
        assert number(row("get, 1 client (direct)")["ice_ratio"])
        assert number(row("get, 1 client (brokered)")["ice_ratio"])
        for name in rate_rows:
            assert number(rows[name]["ice_per_s"]) and number(rows[name]["ice_ratio"]), rows[name]
    else:
        assert out["ice"] == "skipped (not built)", out["ice"]
        row("ice: skipped (not built)")
        for r in out["cases"]:
            assert r["ice_p50_us"] is None and r["ice_per_s"] is None, r

    # CURVE against plaintext on the same path, and Ice over TLS beside it where IceSSL is built.
    curve_rows = ["curve: get, 1 client (direct)", "curve: get, 1 client (brokered)",
                  "curve: async get, 64 in flight (direct)",
                  "curve: 4 client processes, sync get (direct)"]
    for name in curve_rows:
        r = row(name)
        assert number(r["per_s"]) and number(r["ratio"]), r
    tls_rows = ["ice-ssl: twoway get, 1 client", "ice-ssl: async get, 64 in flight",
                "ice-ssl: 4 client processes, sync get"]
    if out["ice_ssl"].startswith("TLS_"):
        for name in tls_rows:
            r = row(name)
            assert number(r["per_s"]) and number(r["floor_per_s"]) and number(r["ratio"]), r
        for name in curve_rows:
            assert number(rows[name]["ice_ratio"]), rows[name]
    else:
        assert any(n.startswith("ice-ssl: skipped") for n in rows), sorted(rows)

    assert out["worker"] == "found", "PATRO_WORKER is set by the test's environment"
    for name in ["patro-worker queue, 4 consumers, take+ack per job",
                 "patro-worker queue, 4 consumers, ack_take per job",
                 "patro-worker queue, 4 consumers, take_many(100)+ack_many",
                 "patro-worker queue, 4 consumers, take_flat(100)+ack_many flat",
                 "patro-worker queue, 4 consumers, take+ack per job, --data",
                 "patro-worker queue, 4 consumers, take_many(100)+ack_many, --data",
                 "patro-worker log, 4 clients, oneway write, --log-sync never",
                 "patro-worker log, 4 clients, oneway write, --log-sync always",
                 "FileHandle print_async, 4 clients (direct)"]:
        assert number(row(name)["per_s"]), rows[name]

    # The job queue's peers, started by the bench where Debian's beanstalkd and redis-server are
    # in PATH (tools/install-deps.sh installs them), skipped with a line of their own where not;
    # each comparison row is there when patro-worker and a peer of its kind ran.
    peers = {
        "beanstalkd": ["beanstalkd: 4 consumers, reserve+delete per job",
                       "beanstalkd: 4 consumers, reserve+delete per job, -b DIR -f 0"],
        "redis-server": ["redis: 4 consumers, per job",
                         "redis streams: 4 consumers, XREADGROUP COUNT 100 + XACK of 100",
                         "redis: 4 consumers, per job, appendonly yes, appendfsync always"],
    }
    skipped = {"beanstalkd": "beanstalkd: skipped (not found)",
               "redis-server": "redis: skipped (not found)"}
    for program, names in peers.items():
        found = out["beanstalkd" if program == "beanstalkd" else "redis"]
        assert found == ("found" if shutil.which(program) else "skipped (not found)"), found
        if shutil.which(program):
            assert skipped[program] not in rows, rows[skipped[program]]
            for name in names:
                assert number(row(name)["per_s"]), rows[name]
        else:
            row(skipped[program])
            for name in names:
                assert name not in rows, rows[name]
    compared = {"queue per job, 4 consumers: patro-worker / best peer": ["beanstalkd",
                                                                         "redis-server"],
                "queue per job by ack_take, 4 consumers: patro-worker / best peer":
                    ["beanstalkd", "redis-server"],
                "queue batched by 100, 4 consumers: patro-worker / redis streams":
                    ["redis-server"],
                "queue batched by 100, flat forms, 4 consumers: patro-worker / redis streams":
                    ["redis-server"],
                "queue per job, durable, 4 consumers: patro-worker / best peer":
                    ["beanstalkd", "redis-server"]}
    for name, programs in compared.items():
        if any(shutil.which(p) for p in programs):
            r = row(name)
            assert number(r["per_s"]) and number(r["floor_per_s"]) and number(r["ratio"]), r
        else:
            assert name not in rows, rows[name]

    # The fail-over case: one round of each kind, with a short heartbeat; every call succeeded
    # (patro-bench exits 1 otherwise) and each round has its time.
    run = subprocess.run([bench, "--failover", "1", "--failover-heartbeat-ms", "200", "--json"],
                         capture_output=True, text=True, timeout=60)
    sys.stderr.write(run.stderr)
    assert run.returncode == 0, f"patro-bench --failover exited {run.returncode}"
    fo = json.loads(run.stdout)
    assert fo["heartbeat_ms"] == 200 and len(fo["cases"]) == 2, fo
    for c in fo["cases"]:
        assert len(c["ms"]) == 1 and number(c["max_ms"]), c

    peer_clients_fail_cleanly(bench)

    # Bad options: a clear message and exit status 2, nothing run.
    for bad in (["--clients", "0"], ["--clients", "1,x"], ["--route", "sideways"],
                ["--worker", "/nonexistent/patro-worker"], ["--failover", "0"],
                ["--phase-ms", "10"], ["--phase-ms", "x"]):
        r = subprocess.run([bench] + bad, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (bad, r.returncode, r.stderr)
        assert r.stderr.strip() and r.stdout == "", (bad, r.stdout, r.stderr)
    print(f"bench_quick: {len(rows)} rows; ice {out['ice']}")


if __name__ == "__main__":
    main()

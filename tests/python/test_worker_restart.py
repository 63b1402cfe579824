"""patro-worker from Python across its restarts and its log's rotations: a proxy made before a
restart (kill -9, then SIGTERM) keeps working after it, with the objects named in another order;
a follower gets every line once, whole and in order across three rotations."""
import os
import signal
import threading
import time

import patro
from conftest import program, start_broker, wait_for_file


def _broker(procs, tmp):
    # A 2 s window: a call without a route waits twice that for its server to come back (a killed
    # worker is replaced at once by its restart, which holds the secret in --data).
    return start_broker(procs, tmp, liveness=20)


def _worker(procs, tmp, back, args):
    """patro-worker registered with the broker at back; returns once it wrote its config (every
    lane registered)."""
    cfg = os.path.join(tmp, "worker.conf")
    if os.path.exists(cfg):
        os.remove(cfg)
    p = procs.start([program("worker"), "--broker", back, "--heartbeat-ms", "100",
                     "--config-out", cfg] + args)
    assert wait_for_file(cfg, 30), "patro-worker did not register"
    return p


def test_proxy_survives_worker_restarts(procs, tmp):
    broker, front, back = _broker(procs, tmp)
    data = os.path.join(tmp, "data")
    w = _worker(procs, tmp, back, ["--data", data, "queue", "jobs", "hash", "kv"])
    kv = patro.get_proxy(front, "kv", call_timeout=20)
    q = patro.Queue(patro.get_proxy(front, "jobs", call_timeout=20))
    try:
        with open(os.path.join(data, "server-id")) as f:
            server_id = f.read()
        kv.call("set", "k", "v1")
        q.push("job 1")

        w.kill()
        w.wait(10)
        w = _worker(procs, tmp, back, ["--data", data, "hash", "kv", "queue", "jobs"])
        assert kv.call("get", "k") == "v1"
        assert q.size() == 1

        procs.stop(w)  # SIGTERM: a clean stop
        assert w.returncode == 0
        w = _worker(procs, tmp, back, ["--data", data, "queue", "jobs", "hash", "kv"])
        assert kv.call("get", "k") == "v1"
        job = q.take(timeout=5)
        assert job is not None and job.job == "job 1"
        assert q.ack(job)
        with open(os.path.join(data, "server-id")) as f:
            assert f.read() == server_id
    finally:
        kv.connection.close()
        q.proxy.connection.close()
        procs.stop(w)
        procs.stop(broker)


def test_log_follow_across_three_rotations(procs, tmp):
    broker, front, back = _broker(procs, tmp)
    path = os.path.join(tmp, "events.log")
    w = _worker(procs, tmp, back, ["log", "events", path])
    writer = patro.Log(patro.get_proxy(front, "events", call_timeout=20))
    reader = patro.Log(patro.get_proxy(front, "events", call_timeout=20))
    n = 300
    got = []
    errors = []

    def follow():
        try:
            got.extend(reader.follow(offset=0, idle_timeout=20, poll=0.2, max_lines=n))
        except Exception as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=follow)
    try:
        expected = ["line %d %s" % (i, "x" * (i % 53)) for i in range(n)]
        writer.write(expected[0])
        t.start()
        # Following before the first rotation (the first position is a plain offset).
        deadline = time.monotonic() + 20
        while not got and not errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got[:1] == expected[:1]
        for i in range(1, n):
            if i == 100:
                assert writer.rotate()
            if i == 200:
                os.rename(path, path + ".moved")
            writer.write(expected[i])  # line 200: between the mv and the SIGHUP
            if i == 200:
                w.send_signal(signal.SIGHUP)
            if i == 250:
                assert writer.rotate()
        t.join(30)
        assert not t.is_alive()
        assert not errors
        assert got == expected
    finally:
        if t.is_alive():
            t.join(30)
        writer.proxy.connection.close()
        reader.proxy.connection.close()
        procs.stop(w)
        procs.stop(broker)

"""patro-worker's queue and log from Python, with jobs pushed by the C++ patro CLI."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import patro
from conftest import program


def _queue(cluster):
    return patro.Queue(patro.get_proxy(cluster.front, "jobs", call_timeout=20))


def _cli(cluster, *args):
    out = subprocess.run([program("cli"), "--broker", cluster.front] + list(args),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_queue_take_and_ack(cluster):
    q = _queue(cluster)
    try:
        _cli(cluster, "push", "jobs", "from-cpp-1", "from-cpp-2")
        got = [q.take(timeout=5) for _ in range(2)]
        assert [j.job for j in got] == ["from-cpp-1", "from-cpp-2"]
        assert all(j.delivery >= 1 for j in got)
        assert q.leased() == 2
        assert all(q.ack(j) for j in got)
        assert not q.ack(got[0])  # acknowledged exactly once
        assert q.take(timeout=0.2) is None  # nothing left: None once the timeout passes
        assert q.push({"py": [1, 2]}) > 0
        j = q.take(timeout=5)
        assert j.job == {"py": [1, 2]}
        assert q.nack(j)
        again = q.take(timeout=5)
        assert again.id == j.id and again.delivery > j.delivery
        assert q.ack(again)
    finally:
        q.proxy.connection.close()


def test_queue_redelivery_after_consumer_killed(cluster, procs):
    """A Python consumer takes a job and is killed with SIGKILL before acknowledging it: the
    broker expires its connection, the worker puts the job back, and another consumer gets it."""
    q = _queue(cluster)
    try:
        _cli(cluster, "push", "jobs", "survives-a-kill")
        code = ("import json, sys, time, patro\n"
                "q = patro.Queue(patro.get_proxy(sys.argv[1], 'jobs'))\n"
                "j = q.take(timeout=10)\n"
                "print(json.dumps(list(j)), flush=True)\n"
                "time.sleep(60)\n")
        consumer = procs.start([sys.executable, "-c", code, cluster.front],
                               stdout=subprocess.PIPE, text=True)
        line = consumer.stdout.readline()
        taken = json.loads(line)
        assert taken[1] == "survives-a-kill"
        assert q.take(timeout=0.2) is None  # leased to the consumer
        consumer.kill()
        consumer.wait(5)
        t0 = time.monotonic()
        j = q.take(timeout=10)  # well before the 20 s visibility timeout
        assert j is not None and time.monotonic() - t0 < 8
        assert j.id == taken[0] and j.job == "survives-a-kill" and j.delivery > taken[2]
        assert q.ack(j)
    finally:
        q.proxy.connection.close()



def _start_data_worker(cluster, procs, data, name):
    """A patro-worker on the cluster's broker serving queue "tasks" with --data and
    --max-deliveries 2; returns it once the name resolves."""
    w = procs.start([program("worker"), "--broker", cluster.back, "--name", name,
                     "--heartbeat-ms", "100", "--visibility", "600000", "--max-deliveries", "2",
                     "--data", data, "queue", "tasks"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # Answered by this worker (the name may still name the killed one for a moment).
        probe = None
        try:
            probe = patro.get_proxy(cluster.front, "tasks", call_timeout=2, connect_timeout=2)
            probe.call("stats")
            return w, patro.Queue(patro.get_proxy(cluster.front, "tasks", call_timeout=20))
        except patro.Error:
            time.sleep(0.05)
        finally:
            if probe is not None:
                probe.connection.close()
    pytest.fail("the worker did not register tasks")


def _wait_stat(q, key, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if q.stats()[key] == n:
            return True
        time.sleep(0.01)
    return False


def test_queue_options_and_dead_letters_across_kill(cluster, procs, tmp):
    """Priorities, a delay, a time-to-run, touch, bury, buried, kick and stats from Python;
    --max-deliveries buries; all across a kill -9 with --data (the worker on the same broker)."""
    data = os.path.join(tmp, "data")
    name = cluster._name("dataworker")
    w, q = _start_data_worker(cluster, procs, data, name)
    try:
        assert q.push("low", priority=5) == 1
        assert q.push_many(["high1", "high2"], priority=-1) == [2, 3]
        assert q.push("later", delay=30) == 4  # still delayed after the restart
        assert q.push("short", ttr=0.25, priority=-2) == 5
        for bad in (dict(delay=-1), dict(ttr=-0.5)):
            with pytest.raises(ValueError):
                q.push("x", **bad)
        with pytest.raises(patro.Error):
            q.proxy.call("push", "x", {"priority": "first"})
        s = q.stats()
        assert (s["ready"], s["delayed"], s["pushed"]) == (4, 1, 5)
        short = q.take()
        assert short.job == "short"
        assert q.touch(short)
        first = q.take()
        assert first.job == "high1"
        assert q.bury(first) and not q.bury(first)
        assert q.buried() == [(first.id, "high1")]
        q.proxy.connection.close()
        w.kill()
        w.wait(5)
        w, q = _start_data_worker(cluster, procs, data, name)
        s = q.stats()
        assert (s["buried"], s["delayed"], s["pushed"]) == (1, 1, 5)
        # The short job's lease ends by its 0.25 s time-to-run, not the 600 s visibility.
        assert _wait_stat(q, "leased", 0)
        again = q.take()
        assert again.job == "short"
        assert q.nack(again)  # its second delivery: buried
        assert q.stats()["buried"] == 2
        assert [j.job for j in q.take_many(10)] == ["high2", "low"]
        assert [b[1] for b in q.buried(5)] == ["high1", "short"]
        assert q.kick(5) == 2
        assert [j.job for j in q.take_many(10)] == ["short", "high1"]  # by priority
        first_id = q.push("once", dedup="order-1")
        assert q.push("twice", dedup="order-1") == first_id
        once = q.take_many(10)
        assert [j.job for j in once] == ["once"]
        assert q.ack_many(once) == [True]  # sent flat: [id, delivery, ...]
        assert q.ack_many([(once[0].id, once[0].delivery)]) == [False]  # acknowledged once
    finally:
        q.proxy.connection.close()
        procs.stop(w)


def test_queue_ack_take_across_kill(cluster, procs, tmp):
    """ack_take from Python: one call acknowledges a job and takes the next; with --data each
    answered ack_take's ack survives a kill -9, and the job it answered is still leased."""
    data = os.path.join(tmp, "data")
    name = cluster._name("acktake")
    w, q = _start_data_worker(cluster, procs, data, name)
    try:
        assert q.push_many(["j1", "j2", "j3"]) == [1, 2, 3]
        job = q.take()
        assert job.job == "j1"
        nxt = q.ack_take(job)
        assert nxt.job == "j2" and nxt.delivery > job.delivery
        nxt = q.ack_take(nxt.id, nxt.delivery)
        assert nxt.job == "j3"
        assert not q.ack(job)  # j1 was acknowledged by the first ack_take
        s = q.stats()
        assert (s["acknowledged"], s["leased"], s["ready"]) == (2, 1, 0)
        w.kill()  # (before the connection closes: a closed taker's connection requeues its job)
        w.wait(5)
        q.proxy.connection.close()
        w, q = _start_data_worker(cluster, procs, data, name)
        s = q.stats()
        assert (s["acknowledged"], s["leased"], s["ready"]) == (2, 1, 0)
        assert q.ack_take(nxt) is None  # j3 acknowledged; nothing left to take
        assert q.stats()["acknowledged"] == 3
        # A waiting ack_take gets a job pushed while it waits.
        q.push("j4")
        job = q.take()
        got = []
        t = threading.Thread(target=lambda: got.append(q.ack_take(job, timeout=10)))
        t.start()
        other = _queue_named(cluster, "tasks")  # (q's connection is the thread's meanwhile)
        try:
            assert _wait_stat(other, "acknowledged", 4)
            other.push("j5")
        finally:
            other.proxy.connection.close()
        t.join(15)
        assert got and got[0] is not None and got[0].job == "j5"
        assert q.ack(got[0])
    finally:
        q.proxy.connection.close()
        procs.stop(w)


def _queue_named(cluster, name):
    return patro.Queue(patro.get_proxy(cluster.front, name, call_timeout=20))


def test_log_lines_arrive_whole(cluster):
    """Four Python writers, each on its own connection, write lines of many sizes at once: every
    line lands whole, and each writer's lines in its order."""
    writers, per = 4, 100
    errors = []

    def write(w):
        log = patro.Log(patro.get_proxy(cluster.front, "applog"))
        try:
            for i in range(per):
                assert log.write("w%d line %d %s end" % (w, i, "x" * ((i * 37) % 3000)))
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            log.proxy.connection.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    log = patro.Log(patro.get_proxy(cluster.front, "applog"))
    try:
        assert log.write("embedded\nnewline")  # a line stays one line
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(cluster.log_path) as f:
                lines = f.read().split("\n")
            if "embedded\\nnewline" in lines:
                break
            time.sleep(0.02)
        mine = [ln for ln in lines if ln.startswith("w")]
        assert len(mine) == writers * per
        for w in range(writers):
            seen = [ln for ln in mine if ln.startswith("w%d " % w)]
            assert [int(ln.split()[2]) for ln in seen] == list(range(per))
            for ln in seen:
                i = int(ln.split()[2])
                assert ln == "w%d line %d %s end" % (w, i, "x" * ((i * 37) % 3000))
        lines_read, nxt = log.read(0, 5)
        assert len(lines_read) == 5 and nxt > 0
    finally:
        log.proxy.connection.close()


def test_log_write_fields(cluster):
    """write_fields in a text log: the fields follow the line as key=value pairs (sorted by key),
    quoted where needed; a level that is not a string is refused."""
    log = patro.Log(patro.get_proxy(cluster.front, "applog"))
    try:
        assert log.write_fields("py fields", disk="/dev/sda", note="two words", free=0)
        with pytest.raises(patro.InvalidArgument):
            log.write_fields("bad level", level=3)
        want = 'py fields disk=/dev/sda free=0 note="two words"'
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(cluster.log_path) as f:
                lines = f.read().split("\n")
            if want in lines:
                break
            time.sleep(0.02)
        assert want in lines
        assert not any(ln.startswith("bad level") for ln in lines)
    finally:
        log.proxy.connection.close()


def test_log_follow(cluster):
    log = patro.Log(patro.get_proxy(cluster.front, "applog"))
    try:
        follower = log.follow(offset=None, idle_timeout=5, poll=0.5, max_lines=3)
        got = []

        def collect():
            got.extend(follower)

        t = threading.Thread(target=collect)
        t.start()
        time.sleep(0.3)
        writer = patro.Log(patro.get_proxy(cluster.front, "applog"))
        for i in range(3):
            writer.write("followed %d" % i)
        writer.proxy.connection.close()
        t.join(15)
        assert got == ["followed 0", "followed 1", "followed 2"]
        # With nothing new, follow ends after its idle timeout.
        t0 = time.monotonic()
        assert list(log.follow(offset=None, idle_timeout=0.3, poll=0.1)) == []
        assert time.monotonic() - t0 < 3
    finally:
        log.proxy.connection.close()


def test_log_oneway_lines(cluster):
    """Lines sent oneway (batched, no answer each) land whole and in order; await_oneway says
    that the server took all of them without an error. (The log's write answers through a
    Deferred once its writer thread wrote the line; a oneway batch is acknowledged once its calls
    were taken, so the last lines may reach the file a moment after.)"""
    log = patro.Log(patro.get_proxy(cluster.front, "applog"))
    try:
        n = 2000
        for i in range(n):
            log.send("oneway %d %s" % (i, "y" * (i % 200)))
        assert log.flush(timeout=20) == 0
        deadline = time.monotonic() + 10
        while True:
            with open(cluster.log_path) as f:
                got = [ln for ln in f.read().split("\n") if ln.startswith("oneway ")]
            if len(got) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert [int(ln.split()[1]) for ln in got] == list(range(n))
        assert all(ln == "oneway %d %s" % (i, "y" * (i % 200)) for i, ln in enumerate(got))
    finally:
        log.proxy.connection.close()

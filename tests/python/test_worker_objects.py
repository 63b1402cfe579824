"""patro-worker's hash and counter through patro.Hash and patro.Counter (a dict's protocol and
atomic steps), read back by the C++ patro CLI; the queue's delivery numbers as Job documents."""
import subprocess
import time

import pytest

import patro
from conftest import program, remove_segments


@pytest.fixture(scope="module")
def worker(cluster, procs):
    """A patro-worker of this module's own, serving a hash, a counter and a queue."""
    name = cluster._name("objects")
    p = procs.start([program("worker"), "--broker", cluster.back, "--name", name,
                     "--heartbeat-ms", "100", "hash", "ops-kv", "counter", "ops-hits",
                     "queue", "ops-q"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = patro.connect(cluster.front, connect_timeout=2)
        try:
            if {"ops-kv", "ops-hits", "ops-q"} <= {n["name"] for n in info.broker_info()["names"]}:
                break
        finally:
            info.close()
        assert p.poll() is None, "patro-worker exited with %s" % p.returncode
        time.sleep(0.05)
    else:
        pytest.fail("patro-worker did not register ops-kv, ops-hits and ops-q")
    yield cluster
    procs.stop(p)
    remove_segments([name])


def _cli(cluster, *args):
    out = subprocess.run([program("cli"), "--broker", cluster.front] + list(args),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_hash_mapping_protocol(worker):
    kv = patro.Hash(patro.get_proxy(worker.front, "ops-kv"))
    try:
        assert len(kv) == 0 and list(kv) == [] and "code" not in kv
        with pytest.raises(KeyError):
            kv["code"]
        with pytest.raises(KeyError):
            del kv["code"]
        assert kv.get("code") is None and kv.get("code", 7) == 7
        kv["code"] = 42
        kv["doc"] = {"a": [1, 2.5, "x"], "b": b"\x00\xff"}
        kv["none"] = None  # a key may hold None: that is not a missing key
        assert kv["code"] == 42
        assert kv["doc"] == {"a": [1, 2.5, "x"], "b": b"\x00\xff"}
        assert kv["none"] is None and "none" in kv
        assert "code" in kv and 42 not in kv  # a key is a str
        assert len(kv) == 3
        assert sorted(kv) == ["code", "doc", "none"]
        assert dict(kv.items())["code"] == 42
        # The CLI reads what Python wrote, and Python what the CLI wrote.
        assert _cli(worker, "get", "ops-kv", "code").strip() == "42"
        _cli(worker, "set", "ops-kv", "from-cli", "hello")
        assert kv["from-cli"] == "hello"
        del kv["code"]
        assert "code" not in kv and len(kv) == 3
        with pytest.raises(KeyError):
            kv["code"]
        assert kv.erase("from-cli") == "hello" and kv.erase("from-cli") is None
        assert kv.pop("none") is None and "none" not in kv
        with pytest.raises(patro.TypeMismatch):
            kv[1] = "x"
    finally:
        kv.proxy.connection.close()


def test_counter(worker):
    hits = patro.Counter(patro.get_proxy(worker.front, "ops-hits"))
    try:
        hits.set(0)
        assert hits.add() == 1 and hits.add(5) == 6 and hits.add(-2) == 4
        assert hits.get() == 4 and int(hits) == 4
        assert hits.cas(4, 10) and not hits.cas(4, 11)
        assert hits.get() == 10
        assert _cli(worker, "call", "ops-hits", "get").strip() == "10"
    finally:
        hits.proxy.connection.close()


def test_delivery_numbers_are_one_counter_for_the_queue(worker):
    """Job's docstring: the queue numbers every delivery from one counter, not per job."""
    q = patro.Queue(patro.get_proxy(worker.front, "ops-q"))
    try:
        q.push("first")
        q.push("second")
        a, b = q.take(timeout=5), q.take(timeout=5)
        assert (a.job, b.job) == ("first", "second")
        assert b.delivery > a.delivery  # a count per job would give both 1
        assert q.nack(a)
        again = q.take(timeout=5)
        assert again.id == a.id and again.delivery > b.delivery
        assert not q.ack(a)  # an old delivery settles nothing
        assert q.ack(again) and q.ack(b)
        assert "one counter" in patro.Job.__doc__
    finally:
        q.proxy.connection.close()

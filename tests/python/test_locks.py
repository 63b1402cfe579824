"""Monitor locks from Python, and between a Python and a C++ client."""
import os
import subprocess
import sys
import threading
import time

import patro
from conftest import program


def _second(cluster):
    return patro.get_proxies(cluster.config, call_timeout=20)


def test_lock_states(objs):
    c = objs["counter"]
    assert patro.lock_state(c) == "NULL"
    r = patro.lock(c, timeout=2)
    assert r and r.count == 1 and r.token > 0
    assert patro.lock(c, timeout=2).count == 2  # locks stack
    s = patro.lock_state(c)
    assert s.name == "LOCK" and s.depth == 2
    info = patro.lock_info(c)
    assert info.holder == c.connection.client_id and info.depth == 2
    assert patro.unlock(c, -1).count == 2
    assert patro.lock_state(c).code == 0
    assert not patro.unlock(c)  # not held
    with patro.lock(c, timeout=2) as grant:
        assert grant.ok and patro.lock_state(c).depth == 1
    assert patro.lock_state(c) == "NULL"


def test_other_monitor_waits(cluster, objs):
    c = objs["counter"]
    other = _second(cluster)[4]
    try:
        with patro.synchronize(c, timeout=2):
            t0 = time.monotonic()
            r = patro.lock(other, timeout=0.2)
            assert not r and r.error == patro.SyncError.timeout
            assert time.monotonic() - t0 >= 0.15
            try:
                with patro.synchronize(other, timeout=0):
                    raise AssertionError("ran without the lock")
            except patro.LockNotGranted as e:
                assert e.code == patro.Errc.timeout and e.sync_error == 1001
        assert patro.synchronize(other, lambda: patro.lock_state(other).depth, timeout=2) == 1
        assert patro.lock_state(other) == "NULL"
    finally:
        other.connection.close()


def test_wait_notify(cluster, objs):
    c = objs["counter"]
    other = _second(cluster)[4]
    woke = []

    def waiter():
        with patro.synchronize(other, timeout=5):
            woke.append(bool(patro.wait(other, timeout=5)))

    t = threading.Thread(target=waiter)
    t.start()
    try:
        deadline = time.monotonic() + 5
        while patro.lock_info(c).waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with patro.synchronize(c, timeout=5):
            assert patro.notify(c).count == 1
        t.join(10)
        assert woke == [True]
    finally:
        t.join(10)
        other.connection.close()


def test_mutual_exclusion_with_cpp_client(cluster, objs, procs):
    """1,000 read-modify-write increments from Python and 1,000 from a C++ client, each under the
    object's lock: none is lost."""
    c = objs["counter"]
    n = 1000
    start = c["n"]
    cpp = procs.start([program("test_client"), "sync-incr", cluster.config, "4", "n", str(n)])
    for _ in range(n):
        with patro.synchronize(c, timeout=60):
            c["n"] = c["n"] + 1  # get, then set: safe only under the lock
    assert cpp.wait(120) == 0
    assert c["n"] == start + 2 * n


def test_lock_of_a_killed_python_client_is_released(cluster, objs, procs, tmp):
    """A Python process that holds a lock and dies (SIGKILL) stops heartbeating; the broker
    expires it and the server releases its lock."""
    ready = os.path.join(tmp, "locked")
    code = ("import patro, sys, time\n"
            "c = patro.get_proxies(sys.argv[1])[4]\n"
            "assert patro.lock(c, timeout=5)\n"
            "open(sys.argv[2], 'w').write('1')\n"
            "time.sleep(60)\n")
    holder = procs.start([sys.executable, "-c", code, cluster.config, ready])
    deadline = time.monotonic() + 10
    while not os.path.exists(ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    c = objs["counter"]
    assert not patro.lock(c, timeout=0.3)  # held by the other process
    holder.kill()
    holder.wait(5)
    t0 = time.monotonic()
    assert patro.lock(c, timeout=10)  # granted once the broker declared the holder dead
    assert time.monotonic() - t0 < 5
    patro.unlock(c)


def test_idle_connection_stays_alive(cluster, objs):
    """The heartbeat thread keeps a connection that makes no call alive past the broker's
    window (100 ms x 5), so its lock is kept."""
    c = objs["counter"]
    other = _second(cluster)[4]
    try:
        assert patro.lock(c, timeout=2)
        time.sleep(1.5)
        assert not patro.lock(other, timeout=0.1)
        assert patro.lock_info(other).holder == c.connection.client_id
        patro.unlock(c)
    finally:
        other.connection.close()


def test_closed_connection_releases_its_lock(cluster, objs):
    c = objs["counter"]
    other = _second(cluster)[4]
    assert patro.lock(other, timeout=2)
    other.connection.close()  # says DISCONNECT: the broker tells the server at once
    assert patro.lock(c, timeout=5)
    patro.unlock(c)
    try:
        other.get()
        raise AssertionError("a closed connection answered")
    except patro.Disconnected as e:
        assert e.code == 4


def test_subprocess_python(cluster):
    # The package imports in a fresh interpreter with the environment the tests give children.
    out = subprocess.run([sys.executable, "-c", "import patro; print(patro.Errc.fenced)"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "20", out.stderr


def test_calls_go_on_while_a_thread_waits_for_a_lock(cluster, objs):
    """One thread of a connection waits for a lock another monitor holds; other threads' calls on
    the same connection are answered meanwhile (whoever drives the socket reads every reply)."""
    c = objs["counter"]
    other = _second(cluster)[4]
    try:
        assert patro.lock(other, timeout=2)
        got = []
        t = threading.Thread(target=lambda: got.append(bool(patro.lock(c, timeout=10))))
        t.start()
        time.sleep(0.2)  # the waiter now drives the socket, its lock request parked
        t0 = time.monotonic()
        for _ in range(100):
            assert objs["h"]["abc"] == 123
        assert time.monotonic() - t0 < 5
        assert t.is_alive()  # still waiting
        patro.unlock(other)
        t.join(10)
        assert got == [True]
        patro.unlock(c)
    finally:
        other.connection.close()


def test_an_idle_holder_keeps_its_lock_across_a_broker_restart(procs, tmp):
    """When a server loses its broker, each client attached through it must come back within
    twice the broker's window or be released (it may have died with the broker). An idle Python
    holder comes back: it sees the new broker's instance in its heartbeats and sends LOCATE."""
    from conftest import Cluster, remove_segments
    c = Cluster(procs, tmp, worker=False)
    broker = c.broker
    try:
        holder = patro.get_proxies(c.config)[4]
        assert patro.lock(holder, timeout=5)
        broker.kill()
        broker.wait(5)
        # Not start_broker: it comes back on the killed broker's ports.
        broker = procs.start([program("broker"), "--front", c.front, "--back", c.back,
                              "--heartbeat-ms", "100", "--liveness", "5"])
        time.sleep(3)  # the server is registered again, and its check (1 s later) has run
        other = patro.get_proxies(c.config, call_timeout=20)[4]
        assert not patro.lock(other, timeout=0.5)  # still held
        assert patro.unlock(holder)
        assert patro.lock(other, timeout=5)
        patro.unlock(other)
    finally:
        procs.stop(c.server)
        procs.stop(broker)
        remove_segments(c.names)

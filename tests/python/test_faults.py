"""Calls that survive faults, by the C++ client's rules (README "When something fails"): a request
is kept until its answer comes and sent again with the same request id when the answer may have
been lost; the server's reply cache answers a copy that already ran, so none runs twice.

The broker's faults are these tests' subject, so their clients keep to the broker (route="broker"),
as tests/integration/faults_test.cpp's do: on the direct path, calls do not notice the broker's
restarts at all (test_direct.py covers the direct path's own faults)."""
import os
import threading
import time

import pytest

import patro
from conftest import Cluster, program, remove_segments


def _restart_broker(procs, c, extra=()):
    # Not start_broker: the broker comes back on the ports of the one killed, and the clients
    # must not wait for it to bind.
    return procs.start([program("broker"), "--front", c.front, "--back", c.back,
                        "--heartbeat-ms", "100", "--liveness", "5"] + list(extra))


def test_adds_survive_a_broker_killed_and_restarted(procs, tmp):
    """Two threads add 1 to a served counter, paced, while the broker is SIGKILLed and started
    again on the same ports: every call succeeds and the count is exact (the requests lost with
    the broker are resent; the server's reply cache answers those that had run)."""
    c = Cluster(procs, tmp, worker=False)
    broker = c.broker
    per_thread = 150
    try:
        counter = patro.get_proxies(c.config, call_timeout=20, route="broker")[4]
        n = counter.at("n")
        start = n.get()
        failures = []
        done = [0, 0]

        def adder(i):
            for k in range(per_thread):
                try:
                    n.add(1)
                    done[i] += 1
                except patro.Error as e:
                    failures.append(e)
                    return
                time.sleep(0.004)

        threads = [threading.Thread(target=adder, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while sum(done) < 60 and time.monotonic() < deadline and not failures:
            time.sleep(0.01)
        broker.kill()
        broker.wait(5)
        time.sleep(0.8)  # past the broker's window (100 ms x 5): the client waits, silent broker
        broker = _restart_broker(procs, c)
        for t in threads:
            t.join(40)
        assert not any(t.is_alive() for t in threads)
        assert failures == []
        assert done == [per_thread, per_thread]
        assert n.get() == start + 2 * per_thread  # exactly once
        assert counter.connection.retries > 0
        counter.connection.close()
    finally:
        procs.stop(c.server)
        procs.stop(broker)
        remove_segments(c.names)


def test_calls_made_while_the_broker_is_down(procs, tmp):
    """Many calls (not idempotent) made while the broker is down, then resent to the restarted
    one along with the copies ZeroMQ kept: each runs once."""
    c = Cluster(procs, tmp, worker=False)
    broker = c.broker
    try:
        counter = patro.get_proxies(c.config, call_timeout=20, route="broker")[4]
        n = counter.at("n")
        start = n.get()
        broker.kill()
        broker.wait(5)
        futures = [n._start(patro.connection.Op.Add, (1,)) for _ in range(50)]
        time.sleep(0.2)
        broker = _restart_broker(procs, c)
        for f in futures:
            f.result(30)
        assert n.get() == start + 50
        counter.connection.close()
    finally:
        procs.stop(c.server)
        procs.stop(broker)
        remove_segments(c.names)


def test_a_parked_lock_request_survives_a_broker_restart(procs, tmp):
    """A lock request parked at the server (its holder is another client) when the broker dies
    is resent to the new broker; the server answers the copy once the lock is free: granted, one
    level. With retry=False (a request parked on another object) it fails when the broker goes
    silent."""
    c = Cluster(procs, tmp, worker=False)
    broker = c.broker
    try:
        holders = patro.get_proxies(c.config, call_timeout=20, route="broker")
        holder, other = holders[4], holders[0]
        waiter = patro.get_proxies(c.config, call_timeout=20, route="broker")[4]
        plain = patro.get_proxies(c.config, call_timeout=20, retry=False, route="broker")[0]
        assert patro.lock(holder, timeout=5) and patro.lock(other, timeout=5)
        results = {}

        def take(name, p):
            try:
                results[name] = patro.lock(p, timeout=15)
            except patro.Error as e:
                results[name] = e

        threads = [threading.Thread(target=take, args=("waiter", waiter)),
                   threading.Thread(target=take, args=("plain", plain))]
        for t in threads:
            t.start()
        time.sleep(0.3)  # both parked at the server
        assert results == {}
        broker.kill()
        broker.wait(5)
        time.sleep(0.8)  # past the broker's window
        broker = _restart_broker(procs, c)
        threads[1].join(20)
        assert isinstance(results.get("plain"), patro.BrokerUnreachable), results
        assert patro.unlock(holder)  # resent until the server is registered again
        threads[0].join(20)
        assert not any(t.is_alive() for t in threads)
        assert not isinstance(results["waiter"], Exception) and results["waiter"], results
        assert patro.lock_state(waiter).name == "LOCK"
        assert patro.unlock(waiter)
        assert patro.lock(holder, timeout=5)  # free again: the waiter held one level
        patro.unlock(holder)
        for p in (holder, waiter, plain):
            p.connection.close()  # the holder's close releases the other lock
    finally:
        procs.stop(c.server)
        procs.stop(broker)
        remove_segments(c.names)


def test_a_call_waits_for_its_server_to_register(lone_server):
    """NO_ROUTE: a call made while its server is not registered (it restarts under the same
    server id) is resent with a backoff and succeeds once the server is there, in its deadline.
    With retry=False the same call fails at once with server_unavailable."""
    # A 200 ms x 5 window: a call waits up to twice that (2 s) for a route.
    s = lone_server("noroute", server_id=4242, heartbeat_ms=200, liveness=5)
    s.start_server()
    text = s.config_text()
    s.procs.stop(s.server)  # gone (unregistered); the config's ids stay valid for its restart
    os.remove(s.config)

    plain = patro.get_proxies(text, call_timeout=20, retry=False)[4]
    t0 = time.monotonic()
    with pytest.raises(patro.ServerUnavailable):
        plain.at("n").add(1)
    assert time.monotonic() - t0 < 1.0  # at once: the broker's answer, not a wait
    plain.connection.close()

    counter = patro.get_proxies(text, call_timeout=20)[4]
    fut = counter.at("n")._start(patro.connection.Op.Add, (5,))
    time.sleep(0.2)
    assert not fut.done()  # no route yet: waiting, resent with a backoff
    s.start_server()
    assert fut.result(20) == 5
    assert counter.connection.retries > 0
    assert counter.at("n").get() == 5  # ran once
    counter.connection.close()


def test_no_route_gives_up_after_twice_the_window(cluster, objs):
    """A server that never comes: server_unavailable after twice the broker's window (here
    2 x 100 ms x 5), well before the call's deadline; it did not run."""
    h = objs["h"]
    nowhere = patro.Proxy(h.connection, 0x4243, 0x1)
    before = h.connection.retries
    t0 = time.monotonic()
    with pytest.raises(patro.ServerUnavailable):
        nowhere.add(1)
    assert time.monotonic() - t0 < 10  # not the 20 s deadline
    assert h.connection.retries > before

"""The Python client on the direct path, by the C++ client's rules (from Python: the cases of
tests/integration/direct_test.cpp and worker_restart_test.cpp's direct case): requests go
straight to their server's lane when it can be reached, through the broker otherwise; route
auto/direct/broker, from the options or the config; plaintext and CURVE; a direct connection cut
mid-stream loses no call, runs none twice and keeps the client's order; an endpoint nobody
answers at falls back to the broker (route=direct: a clear ServerUnavailable); a server killed
with -9 mid-calls and restarted runs each call once (or says OutcomeUnknown); SERVER_DOWN fails
what was sent directly; a lock holder that spoke only directly is released when it dies. The
servers count the requests they took each way (broker_info's "direct" and "brokered", from their
heartbeats): that is how a test sees which way calls went."""
import os
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
import zmq

import patro
from patro import _codec as codec
from patro import curve, direct
from conftest import program, remove_segments, start_broker, wait_for_file
from test_codec import reply_body
from test_hostile_replies import welcome

wire = codec.wire


# --- helpers ---

class Worker:
    """A broker and a patro-worker with 2 lanes registered with it, in tmp, both with the default
    heartbeat (1 s; the broker's liveness as given, 3 by default: a 3 s window, which is also the
    clients' for their direct routes); start() (again, after a kill) waits for the worker's
    config."""

    _count = 0

    def __init__(self, procs, tmp, objects, extra=(), liveness=3, broker_extra=()):
        self.procs = procs
        self.tmp = tmp
        self.objects = list(objects)
        self.extra = list(extra)
        Worker._count += 1
        self.name = "pytest-%d-direct-%d" % (os.getpid(), Worker._count)
        self.broker, self.front, self.back = start_broker(procs, tmp, 1000, liveness,
                                                          extra=list(broker_extra))
        self.config = os.path.join(tmp, "worker.conf")
        self.proc = None

    def start(self):
        if os.path.exists(self.config):
            os.remove(self.config)
        self.proc = self.procs.start([program("worker"), "--broker", self.back, "--name",
                                      self.name, "--threads", "2",
                                      "--config-out", self.config] + self.extra + self.objects)
        if not wait_for_file(self.config, 30):
            pytest.fail("patro-worker did not write its config")
        return self

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None:
            self.procs.stop(self.proc)
        self.procs.stop(self.broker)
        remove_segments([self.name])

    def info(self, **keys):
        c = patro.connect(self.front, route="broker", connect_timeout=10, **keys)
        try:
            return c.broker_info()
        finally:
            c.close()

    def counts(self, pred=lambda s: True, **keys):
        """The one server's counters, once pred holds for them (bounded: 10 s; its heartbeats
        bring them each second)."""
        deadline = time.monotonic() + 10
        while True:
            servers = self.info(**keys)["servers"]
            if len(servers) == 1 and pred(servers[0]) or time.monotonic() > deadline:
                assert len(servers) == 1, servers
                return servers[0]
            time.sleep(0.025)


@pytest.fixture
def workers(procs, tmp):
    made = []

    def make(*args, **kw):
        made.append(Worker(procs, tmp, *args, **kw))
        return made[-1]
    yield make
    for w in reversed(made):
        w.stop()


def free_ports(n):
    """n consecutive free loopback ports (bound and released: another process may take them
    first, which the caller sees as a failed bind)."""
    for _ in range(50):
        base = random.randrange(20000, 60000)
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.fail("no free ports")


class TcpForwarder:
    """A TCP port forwarder on loopback (a NAT's port forward) which the test can cut: every
    connection through it closes and its ports refuse new ones, as a firewall or a dead route
    does."""

    def __init__(self, targets):
        self.targets = targets
        self.base = free_ports(len(targets))
        self.listeners = []
        for i in range(len(targets)):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.base + i))
            s.listen(16)
            self.listeners.append(s)
        self.pairs = {}  # socket -> its peer
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            readable, _, _ = select.select(self.listeners + list(self.pairs), [], [], 0.02)
            for s in readable:
                if s in self.listeners:
                    conn, _ = s.accept()
                    out = socket.socket()
                    try:
                        out.connect(("127.0.0.1", self.targets[self.listeners.index(s)]))
                    except OSError:
                        conn.close()
                        out.close()
                        continue
                    self.pairs[conn] = out
                    self.pairs[out] = conn
                    continue
                peer = self.pairs.get(s)
                if peer is None:
                    continue
                try:
                    data = s.recv(65536)
                    if data:
                        peer.sendall(data)
                except OSError:
                    data = b""
                if not data:
                    for x in (s, peer):
                        self.pairs.pop(x, None)
                        x.close()
        for s in list(self.pairs) + self.listeners:
            s.close()
        self.pairs.clear()

    def cut(self):
        self.stopping.set()
        self.thread.join(5)


# --- the routes' rules, under a fake clock (patro.direct, as tests/unit/direct_routes_test.cpp) ---

def test_routes_auto_go_through_the_broker_until_the_route_is_live_and_nothing_brokered_is_out():
    r = direct.DirectRoutes("auto")
    assert r.choose(7, 0.0, 3.0, lambda: False) == (direct.BROKER, True)  # locate first
    assert r.choose(7, 0.1, 3.0, lambda: False) == (direct.BROKER, False)
    assert r.locating(7)
    r.probing(7, 0.2)
    assert r.tend(0.2, 3.0, 1.0) == ([], [7], [])  # the probe goes at once
    assert r.heard(7, 0.3).up
    assert r.choose(7, 0.4, 3.0, lambda: True) == (direct.BROKER, False)  # one still brokered
    assert r.choose(7, 0.5, 3.0, lambda: False) == (direct.DIRECT, False)
    assert r.choose(7, 0.6, 3.0, lambda: True) == (direct.DIRECT, False)  # active stays active
    # Silent past the window: failed, then tried again after a backoff that doubles.
    assert r.tend(3.4, 3.0, 1.0) == ([], [], [(7, "its direct connection went silent")])
    f = r.fail(7, 3.4, 1.0)
    assert f.known and f.was_active and r.find(7).retry_at == 4.4
    assert r.choose(7, 4.0, 3.0, lambda: False) == (direct.BROKER, False)
    assert r.choose(7, 4.4, 3.0, lambda: False) == (direct.BROKER, True)
    r.fail(7, 4.5, 1.0)
    assert r.find(7).retry_at == 6.5
    assert r.forget(7) and r.find(7) is None


def test_routes_direct_hold_until_live_and_refuse_while_dead():
    r = direct.DirectRoutes("direct")
    assert r.choose(9, 0.0, 3.0, lambda: False) == (direct.HOLD, True)
    r.hold(9, "first")
    r.hold(9, "second")
    r.probing(9, 0.1)
    h = r.heard(9, 0.2)
    assert h.up and list(h.ready) == ["first", "second"]
    assert r.choose(9, 0.3, 3.0, lambda: True) == (direct.DIRECT, False)
    r.fail(9, 1.0, 1.0)
    assert r.choose(9, 1.5, 3.0, lambda: False) == (direct.REFUSE, False)
    # Once the backoff ends it locates again and holds; a dead route with held requests asks
    # again by itself, and fail() hands them back.
    assert r.choose(9, 2.0, 3.0, lambda: False) == (direct.HOLD, True)
    r.hold(9, "third")
    assert not r.forget(9)  # requests wait for it
    f = r.fail(9, 2.1, 1.0)
    assert list(f.held) == ["third"]
    r.hold(9, "fourth")
    assert r.tend(4.2, 3.0, 1.0) == ([9], [], [])
    assert direct.DirectRoutes.pick_endpoint(["a", "b", "c"], 4) == "b"
    assert direct.DirectRoutes.pick_endpoint(["a", "", "c"], 4) == "c"
    assert direct.DirectRoutes.pick_endpoint(["", ""], 1) == ""
    with pytest.raises(ValueError):
        direct.DirectRoutes("sideways")


def test_a_probe_that_finds_no_connection_connects_again_after_100_ms_then_200_400():
    """A CURVE handshake the server refused (the broker's vouch had not reached it yet) is not
    tried again by libzmq: the route makes the connection anew, as libpatro's does."""
    r = direct.DirectRoutes("direct")
    r.choose(9, 0.0, 3.0, lambda: False)
    assert not r.reconnect_due(9, 1.0)  # locating: no socket yet
    r.probing(9, 0.0)
    assert not r.reconnect_due(9, 0.099)
    assert r.reconnect_due(9, 0.1)
    assert not r.reconnect_due(9, 0.299)
    assert r.reconnect_due(9, 0.301)  # (0.1 + 0.2 in floating point is a hair past 0.3)
    assert r.reconnect_due(9, 0.71)
    assert r.heard(9, 0.72).up
    assert not r.reconnect_due(9, 10.0)  # live: never
    assert not r.reconnect_due(10, 0.0)  # unknown


# --- the routes ---

def test_route_direct_every_call_goes_direct(workers):
    w = workers(["counter", "n"]).start()
    routed = w.info()["routed"]
    n = patro.get_proxy(w.front, "n", route="direct", call_timeout=30)
    try:
        assert n.connection.route == "direct"
        for _ in range(200):
            n.call("add", 1)
        assert n.call("get") == 200
        assert n.connection.direct_replies == 201
    finally:
        n.connection.close()
    c = w.counts(lambda s: s["direct"] >= 201)
    assert (c["direct"], c["brokered"]) == (201, 0)
    assert w.info()["routed"] == routed  # the broker forwarded none


def test_route_auto_goes_direct_and_route_broker_stays_brokered(workers):
    w = workers(["counter", "n"]).start()
    n = patro.get_proxy(w.front, "n", call_timeout=30)  # auto, the default
    try:
        assert n.connection.route == "auto"
        for _ in range(200):
            n.call("add", 1)
        assert n.call("get") == 200
        assert n.connection.direct_replies > 0
    finally:
        n.connection.close()
    after_auto = w.counts(lambda s: s["direct"] + s["brokered"] >= 201)
    assert after_auto["direct"] + after_auto["brokered"] == 201
    assert after_auto["direct"] > 0
    routed = w.info()["routed"]
    n = patro.get_proxy(w.front, "n", route="broker", call_timeout=30)
    try:
        for _ in range(200):
            n.call("add", 1)
        assert n.call("get") == 400
        assert n.connection.direct_replies == 0
    finally:
        n.connection.close()
    c = w.counts(lambda s: s["brokered"] >= after_auto["brokered"] + 201)
    assert c["brokered"] == after_auto["brokered"] + 201
    assert c["direct"] == after_auto["direct"]
    assert w.info()["routed"] == routed + 201


def test_async_calls_and_oneway_batches_go_direct(workers):
    w = workers(["counter", "n"]).start()
    n = patro.get_proxy(w.front, "n", route="direct", call_timeout=30)
    try:
        futures = [n.call_async("add", 1) for _ in range(64)]
        assert sorted(f.result() for f in futures) == list(range(1, 65))
        for _ in range(100):
            n.send("add", 1)
        assert patro.await_oneway(n) == 0
        assert n.call("get") == 164
    finally:
        n.connection.close()
    c = w.counts(lambda s: s["direct"] >= 66)
    assert c["brokered"] == 0 and c["direct"] >= 66


def test_a_configs_route_applies_unless_the_options_name_one(workers):
    w = workers(["counter", "n"]).start()
    cfg = patro.Config.from_file(w.config)
    assert cfg.route == ""
    cfg.route = "broker"
    assert patro.Config.parse(cfg.to_string()).route == "broker"
    ps = patro.get_proxies(cfg, call_timeout=30)
    try:
        assert ps[0].connection.route == "broker"
        for _ in range(10):
            ps[0].call("add", 1)
    finally:
        ps[0].connection.close()
    c = w.counts(lambda s: s["brokered"] >= 10)
    assert (c["direct"], c["brokered"]) == (0, 10)
    # The options' route wins over the config's.
    ps = patro.get_proxies(cfg.to_string(), route="direct", call_timeout=30)
    try:
        assert ps[0].connection.route == "direct"
        ps[0].call("add", 1)
    finally:
        ps[0].connection.close()
    assert w.counts(lambda s: s["direct"] >= 1)["direct"] == 1
    # Bad routes are clear errors.
    with pytest.raises(patro.BadConfig) as e:
        patro.Config.parse(cfg.to_string().replace('"broker"}', '"sideways"}'))
    assert "auto, direct, broker" in str(e.value)
    with pytest.raises(patro.InvalidArgument):
        patro.ClientOptions(route="sideways")
    with pytest.raises(patro.InvalidArgument):
        patro.get_proxy(w.front, "n", route="nowhere")


# --- CURVE ---

def keygen(tmp, name):
    path = os.path.join(tmp, name + ".key")
    subprocess.run([program("cli"), "keygen", path], check=True, stdout=subprocess.DEVNULL,
                   timeout=20)
    return path, curve.read_key_file(path)


@pytest.mark.skipif(not curve.available(), reason="libzmq without CURVE")
@pytest.mark.parametrize("route", ["direct", "auto"])
def test_curve_direct_path(workers, tmp, route):
    keys = {n: keygen(tmp, n) for n in ("broker", "alice", "server")}
    with open(os.path.join(tmp, "clients"), "w") as f:
        f.write(keys["alice"][1].public_key + "\n")
    with open(os.path.join(tmp, "servers"), "w") as f:
        f.write(keys["server"][1].public_key + "\n")
    w = workers(["counter", "n", "hash", "kv"],
                extra=["--broker-key", keys["broker"][0] + ".pub",
                       "--curve-key", keys["server"][0]],
                broker_extra=["--curve-key", keys["broker"][0],
                              "--allow-clients", os.path.join(tmp, "clients"),
                              "--allow-servers", os.path.join(tmp, "servers")]).start()
    alice = dict(broker_key=keys["broker"][1].public_key, curve_key=keys["alice"][0])
    n = patro.get_proxy(w.front, "n", route=route, call_timeout=30, connect_timeout=10, **alice)
    kv = patro.proxy_for(n.connection, "kv")
    try:
        for i in range(100):
            n.call("add", 1)
        kv.call("set", "k", "v" * 1000)
        assert kv.call("get", "k") == "v" * 1000
        assert n.call("get") == 100
        assert n.connection.direct_replies > 0
        if route == "direct":
            assert n.connection.direct_replies == 103
    finally:
        n.connection.close()
    c = w.counts(lambda s: s["direct"] + s["brokered"] >= 103, **alice)
    assert c["direct"] + c["brokered"] == 103 and c["direct"] > 0
    if route == "direct":
        assert c["brokered"] == 0


# --- fail-over to the broker ---

def test_the_direct_connection_cut_mid_stream_loses_nothing_and_runs_nothing_twice(workers):
    """Paced adds and log lines, several lines in flight at once; the direct connection is cut
    once a good part went directly: every add lands once, every line once and in order, the rest
    through the broker."""
    bound = free_ports(2)
    forwarder = TcpForwarder([bound, bound + 1])
    try:
        w = workers(["counter", "n"],
                    extra=["--direct", "tcp://127.0.0.1:%d" % bound,
                           "--direct-advertise", "tcp://127.0.0.1:%d" % forwarder.base])
        log_path = os.path.join(w.tmp, "lines.log")
        w.objects += ["log", "lines", log_path]
        w.start()
        n = patro.get_proxy(w.front, "n", call_timeout=60)
        lines = patro.proxy_for(n.connection, "lines")
        calls = 400
        done = [0]
        failures = []

        def work():
            try:
                pending = []
                for i in range(calls):
                    n.call("add", 1)
                    pending.append(lines.call_async("write", "line %d" % i))
                    if len(pending) >= 8:
                        for f in pending:
                            f.result()
                        pending = []
                    done[0] = i + 1
                    time.sleep(0.001)
                for f in pending:
                    f.result()
            except Exception as e:  # noqa: BLE001 - reported by the test
                failures.append(e)

        t = threading.Thread(target=work)
        t.start()
        direct_seen = False
        deadline = time.monotonic() + 10
        while not direct_seen and done[0] < calls and time.monotonic() < deadline:
            # The client's count: the server's comes with its heartbeats, each second.
            direct_seen = n.connection.direct_replies >= 50
            if not direct_seen:
                time.sleep(0.005)
        assert direct_seen
        forwarder.cut()
        at_cut = done[0]
        assert at_cut < calls
        t.join(120)
        assert not t.is_alive()
        assert not failures, failures
        assert n.call("get") == calls
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(log_path) as f:
                got = f.read().split("\n")[:-1]
            if len(got) >= calls:
                break
            time.sleep(0.02)
        assert got == ["line %d" % i for i in range(calls)]
        c = w.counts(lambda s: s["brokered"] > 0)
        assert c["direct"] >= 50
        assert c["brokered"] > 0  # the calls after the cut went through the broker
        n.connection.close()
    finally:
        forwarder.cut()


def test_an_endpoint_nobody_answers_at_falls_back_to_the_broker(workers):
    dead = free_ports(2)  # advertised, and nothing listens there
    w = workers(["counter", "n"], extra=["--direct-advertise", "tcp://127.0.0.1:%d" % dead])
    w.start()
    n = patro.get_proxy(w.front, "n", call_timeout=30)  # auto
    try:
        for _ in range(50):
            n.call("add", 1)
        time.sleep(3.2)  # past the broker's window (1 s x 3): the route is given up
        for _ in range(50):
            n.call("add", 1)
        assert n.call("get") == 100
        assert n.connection.direct_replies == 0
    finally:
        n.connection.close()
    c = w.counts(lambda s: s["brokered"] >= 101)
    assert (c["direct"], c["brokered"]) == (0, 101)
    # route=direct: a clear error, well before the call's deadline, and it did not run.
    n = patro.get_proxy(w.front, "n", route="direct", call_timeout=30)
    try:
        t0 = time.monotonic()
        with pytest.raises(patro.ServerUnavailable) as e:
            n.call("add", 1)
        assert time.monotonic() - t0 < 10
        assert "route=direct" in str(e.value)
        with pytest.raises(patro.ServerUnavailable):  # dead until its backoff ends: at once
            n.call("get")
    finally:
        n.connection.close()
    assert patro.get_proxy(w.front, "n", route="broker").call("get") == 100


# --- a server that dies ---

def test_kill_9_mid_calls_and_a_restart_every_call_runs_once(workers):
    """patro-worker with --data (its counter on disk, acknowledged once written; its id and
    secret kept there, so a restart replaces the killed process at once), killed with -9 while a
    thread adds one by one on the direct path: every call ends answered, or OutcomeUnknown for
    the one in flight at the kill; none is lost. Then, as worker_restart_test's direct case: a
    call made after the kill is never sent to the dead process; it waits for the restart and runs
    there once."""
    # A 60 s window (1 s x 60): the broker still holds the dead process when calls are made.
    w = workers(["counter", "n"], liveness=60)
    data = os.path.join(w.tmp, "data")
    w.extra = ["--data", data]
    w.start()
    n = patro.get_proxy(w.front, "n", call_timeout=30)
    try:
        total = 0
        for _ in range(200):
            n.call("add", 1)
            total += 1
            if w.counts()["direct"] > 0:
                break
            time.sleep(0.02)
        assert w.counts()["direct"] > 0

        answered, unknown, other = [0], [0], []
        stop = threading.Event()

        def adds():
            while not stop.is_set():
                try:
                    n.call("add", 1)
                    answered[0] += 1
                except patro.OutcomeUnknown:
                    unknown[0] += 1
                except Exception as e:  # noqa: BLE001 - reported by the test
                    other.append(e)
                    return

        t = threading.Thread(target=adds)
        t.start()
        deadline = time.monotonic() + 10
        while answered[0] < 50 and time.monotonic() < deadline:
            time.sleep(0.005)
        w.kill()
        at_kill = answered[0]
        time.sleep(0.2)
        w.start()
        deadline = time.monotonic() + 20
        while answered[0] < at_kill + 50 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.01)
        stop.set()
        t.join(60)
        assert not t.is_alive() and not other, other
        assert answered[0] >= at_kill + 50
        value = n.call("get")
        # Each answered add ran once; the one in flight at the kill (sequential calls: at most
        # one) may have run at the dead process: OutcomeUnknown says so, and it did not run again
        # on the restart.
        assert total + answered[0] <= value <= total + answered[0] + unknown[0]
        assert unknown[0] <= 1
        total = value
        # The restarted process takes the calls directly again.
        assert w.counts(lambda s: s["direct"] > 0)["direct"] > 0

        w.kill()
        time.sleep(0.2)  # the client's socket has seen its connection close
        after = {}

        def one():
            try:
                after["value"] = n.call("add", 1)
            except Exception as e:  # noqa: BLE001 - reported by the test
                after["error"] = e

        t = threading.Thread(target=one)
        t.start()
        time.sleep(0.3)
        w.start()
        t.join(40)
        assert after == {"value": total + 1}  # not outcome_unknown: it ran once, on the restart
        assert n.call("get") == total + 1
    finally:
        n.connection.close()


def test_a_client_that_spoke_only_directly_is_killed_holding_a_lock_and_it_is_released(workers):
    """Its LOCATE told the broker that it talks to the server: when it dies the broker says so
    (CLIENT_GONE), as for a brokered client."""
    w = workers(["hash", "kv"]).start()
    holder = w.procs.start([sys.executable, "-c", (
        "import sys, time, patro\n"
        "p = patro.get_proxy(sys.argv[1], 'kv', route='direct', call_timeout=20)\n"
        "assert patro.lock(p, timeout=10)\n"
        "print(p.connection.direct_replies, flush=True)\n"
        "time.sleep(60)\n"), w.front], stdout=subprocess.PIPE, text=True)
    assert int(holder.stdout.readline()) > 0
    c = w.counts(lambda s: s["direct"] > 0)
    assert c["direct"] > 0 and c["brokered"] == 0  # the holder never used the broker's route
    p = patro.get_proxy(w.front, "kv", route="broker", call_timeout=30)
    try:
        granted = {}
        t = threading.Thread(target=lambda: granted.setdefault("r", patro.lock(p, timeout=20)))
        t.start()
        t.join(0.3)
        assert t.is_alive()  # held
        holder.kill()
        t.join(20)
        assert not t.is_alive() and granted["r"]
        assert patro.unlock(p)
    finally:
        p.connection.close()
        w.procs.stop(holder)


class FakeCluster:
    """A broker and one server lane, both pyzmq ROUTERs speaking the wire: the broker answers
    HELLO, LOCATE (the lane's endpoint) and REQUEST (an empty reply), the lane answers HEARTBEAT
    and keeps the requests it gets unanswered; the test makes the broker send SERVER_DOWN."""

    SERVER = 0x5E

    def __init__(self, locate_reply=None, no_route_once=False):
        self.forged_locate_reply = locate_reply
        # Each request resent through the broker (with an attempt frame) is answered NO_ROUTE
        # once, then as any other.
        self.no_route_once = no_route_once
        self.no_routed = set()
        self.lane_dropped = threading.Event()
        self.ctx = zmq.Context()
        self.broker = self.ctx.socket(zmq.ROUTER)
        self.broker.linger = 0
        self.endpoint = "tcp://127.0.0.1:%d" % self.broker.bind_to_random_port("tcp://127.0.0.1")
        self.lane = self.ctx.socket(zmq.ROUTER)
        self.lane.linger = 0
        self.lane_endpoint = "tcp://127.0.0.1:%d" % self.lane.bind_to_random_port(
            "tcp://127.0.0.1")
        self.client = None
        self.locates = 0
        self.brokered = []  # (request id, attempt frame or None)
        self.direct = []  # request ids
        self.outbox = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _locate_reply(self):
        def build(b):
            v = codec._encode_vector(b, [b.CreateString(self.lane_endpoint)])
            wire.LocateReplyStart(b)
            wire.LocateReplyAddServer(b, self.SERVER)
            wire.LocateReplyAddEndpoints(b, v)
            return wire.LocateReplyEnd(b)
        return codec.encode_control(wire.ControlBody.LocateReply, build)

    def _run(self):
        poller = zmq.Poller()
        poller.register(self.broker, zmq.POLLIN)
        poller.register(self.lane, zmq.POLLIN)
        while not self.stopping.is_set():
            with self.lock:
                out, self.outbox = self.outbox, []
            for frames in out:
                self.broker.send_multipart([self.client] + frames)
            events = dict(poller.poll(10))
            if self.broker in events:
                msg = self.broker.recv_multipart()
                cmd = codec.parse_header(msg[1]) if len(msg) > 1 else None
                self.client = msg[0]
                if cmd == codec.HELLO:
                    self.broker.send_multipart([msg[0], codec.header(codec.WELCOME), msg[2],
                                                welcome()])
                elif cmd == codec.LOCATE:
                    self.locates += 1
                    self.broker.send_multipart([msg[0], codec.header(codec.LOCATE_REPLY),
                                                msg[2], self.forged_locate_reply
                                                or self._locate_reply()])
                elif cmd == codec.REQUEST:
                    rid = codec.parse_u64(msg[3])
                    self.brokered.append((rid, codec.parse_u64(msg[5]) if len(msg) > 5 else None))
                    if self.no_route_once and len(msg) > 5 and rid not in self.no_routed:
                        self.no_routed.add(rid)
                        self.broker.send_multipart([msg[0], codec.header(codec.NO_ROUTE), msg[3],
                                                    reply_body(error=(3, "server_unavailable: "
                                                                      "no route", "", 0))])
                        continue
                    self.broker.send_multipart([msg[0], codec.header(codec.REPLY), msg[3],
                                                reply_body(["from the broker"])])
            if self.lane_dropped.is_set() and not self.lane.closed:
                poller.unregister(self.lane)
                self.lane.close()  # its peers see their connections close
                continue
            if not self.lane.closed and self.lane in events:
                msg = self.lane.recv_multipart()
                cmd = codec.parse_header(msg[1]) if len(msg) > 1 else None
                if cmd == codec.HEARTBEAT:
                    self.lane.send_multipart([msg[0], codec.header(codec.HEARTBEAT)])
                elif cmd == codec.REQUEST:
                    self.direct.append(codec.parse_u64(msg[3]))

    def server_down(self, ids=()):
        with self.lock:
            self.outbox.append([codec.header(codec.SERVER_DOWN), codec.u64_frame(self.SERVER),
                                b"".join(struct.pack(">Q", i) for i in ids)])

    def close(self):
        self.stopping.set()
        self.thread.join(5)
        self.broker.close()
        self.lane.close()
        self.ctx.term()


def test_server_down_fails_what_was_sent_directly(procs):
    """SERVER_DOWN names the requests the broker routed to the process that went; those sent to
    it directly went there too: a call that is not idempotent fails with OutcomeUnknown at once,
    an idempotent one goes again through the broker; the route is forgotten, and the next call
    locates the server again."""
    fake = FakeCluster()
    conn = patro.connect(fake.endpoint, route="direct", call_timeout=20, connect_timeout=5)
    try:
        p = patro.Proxy(conn, FakeCluster.SERVER, 1)
        call = p.call_async("m", 1)  # held until the route is live, then sent directly
        get = p.get_async()
        deadline = time.monotonic() + 10
        while len(fake.direct) < 2 and time.monotonic() < deadline:
            call.wait(0.05)
        assert len(fake.direct) == 2 and fake.brokered == [] and fake.locates == 1
        t0 = time.monotonic()
        fake.server_down([])  # names none of them: they did not pass the broker
        with pytest.raises(patro.OutcomeUnknown):
            call.result()
        assert get.result() == "from the broker"  # resent through the broker, attempt 2
        assert time.monotonic() - t0 < 10
        assert [a for _, a in fake.brokered] == [2]
        # Forgotten: the next call asks the broker where the server is again.
        p.call_async("m", 2)
        deadline = time.monotonic() + 10
        while len(fake.direct) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fake.locates == 2 and len(fake.direct) == 3
    finally:
        conn.close()
        fake.close()


@pytest.mark.parametrize("forged", [b"\x00\x00\x00\x00PTCT" + bytes(range(40)),
                                    b"\x08\x00\x00\x00PTCT\xff\xff\xff\x7f", reply_body([1])],
                         ids=["garbage", "offset out of range", "a reply"])
def test_a_forged_locate_reply_leaves_the_calls_to_the_broker(procs, forged):
    """A LOCATE_REPLY that cannot be read is no direct endpoint: route auto goes on through the
    broker; route=direct fails the call with a clear ServerUnavailable, in bounded time."""
    fake = FakeCluster(forged)
    try:
        for route in ("auto", "direct"):
            conn = patro.connect(fake.endpoint, route=route, call_timeout=10, connect_timeout=5)
            try:
                p = patro.Proxy(conn, FakeCluster.SERVER, 1)
                t0 = time.monotonic()
                if route == "auto":
                    assert [p.get() for _ in range(3)] == ["from the broker"] * 3
                else:
                    with pytest.raises(patro.ServerUnavailable) as e:
                        p.get()
                    assert "no direct endpoint" in str(e.value)
                assert time.monotonic() - t0 < 5
            finally:
                conn.close()
        assert fake.direct == []
    finally:
        fake.close()


def test_a_request_lost_with_its_direct_connection_then_no_route_is_outcome_unknown(procs):
    """route auto: the direct connection closes with calls in flight on it; they go again through
    the broker, which has no route for them (the lanes of a process that died have no connection):
    the one that is not idempotent fails with OutcomeUnknown at once (it may have run, and sent on
    to a restarted process it could run twice); the idempotent one is sent again and answered."""
    fake = FakeCluster(no_route_once=True)
    conn = patro.connect(fake.endpoint, call_timeout=20, connect_timeout=5)
    try:
        p = patro.Proxy(conn, FakeCluster.SERVER, 1)
        assert p.get() == "from the broker"  # and a LOCATE: the route comes up meanwhile
        deadline = time.monotonic() + 10
        call = None
        while not fake.direct and time.monotonic() < deadline:
            call = p.call_async("m", 1)  # through the broker until the route is active
            if not fake.direct and call.wait(1):
                call = None
            time.sleep(0.02)
        assert len(fake.direct) == 1 and call is not None
        get = p.get_async()
        while len(fake.direct) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(fake.direct) == 2
        t0 = time.monotonic()
        fake.lane_dropped.set()
        with pytest.raises(patro.OutcomeUnknown) as e:
            call.result()
        assert "no route" in str(e.value)
        assert get.result() == "from the broker"
        assert time.monotonic() - t0 < 10
        attempts = {}
        for rid, attempt in fake.brokered:
            attempts.setdefault(rid, []).append(attempt)
        assert attempts[fake.direct[0]] == [2]  # once through the broker: NO_ROUTE ended it
        assert attempts[fake.direct[1]] == [2, 3]
    finally:
        conn.close()
        fake.close()

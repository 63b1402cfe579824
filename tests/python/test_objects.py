"""Proxies to a C++ server's hash, array, object and callables (tests/support/py_server.cpp)."""
import gc
import threading
import time

import pytest

import patro


def test_hash_example(cluster, objs):
    # README's example, from Python.
    p = objs["h"]
    assert p["abc"] == 123
    d = p["def"]  # a container inside the hash comes back as a proxy to it
    assert isinstance(d, patro.Proxy)
    assert d[0] == 456
    assert d[1]["ghi"] == "jkl"
    assert p.at("def", 1, "ghi").get() == "jkl"  # one round trip
    p["def"][2] = "pqr"
    assert d[2] == "pqr"
    assert d[-1] == "pqr"
    del p["def"][1]["ghi"]
    assert not p.at("def", 1, "ghi").exists()
    assert p.at("def", 1, "ghi").get() is None
    assert len(p) == 2
    assert sorted(p) == ["abc", "def"]
    assert "abc" in p and "zzz" not in p
    assert list(d)[0] == 456 and len(d) == 3
    assert p.ref() == "HASH" and d.reftype() == "ARRAY"
    # The C++ server's own config text, and a name at the broker, reach the same object.
    with open(cluster.config) as f:
        again = patro.get_proxies(f.read())[0]
    assert again["abc"] == 123
    by_name = patro.get_proxy(cluster.front, "h")
    assert by_name.at("def", 2).get() == "pqr"
    again.connection.close()
    by_name.connection.close()
    p["def"][1]["ghi"] = "jkl"
    p["def"][2] = "mno"


def test_values_round_trip(objs):
    p = objs["h"]
    v = {"none": None, "t": True, "f": False, "i": -(1 << 63), "j": (1 << 63) - 1, "x": 1.5,
         "s": "grüß dich", "b": b"\x00\xffbytes", "l": [1, "two", [3.0, None]],
         "d": {"k": {"deep": [True]}}, "empty": [], "e2": {}}
    for k, value in v.items():
        p.at("vals", k).set(value)
    for k, value in v.items():
        got = p.at("vals", k).get()
        if isinstance(value, (list, dict)):
            got = _copy(got)
        assert got == value, k
        assert type(got) is type(value), k
    assert sorted(p["vals"].keys()) == sorted(v)
    del p["vals"]


def _copy(x):
    """A served container's contents as plain Python values."""
    if isinstance(x, patro.Proxy):
        if x.reftype() == "HASH":
            return {k: _copy(x[k]) for k in x.keys()}
        return [_copy(e) for e in x.values()]
    return x


def test_array_operations(objs):
    p = objs["h"]
    p["arr"] = []
    a = p["arr"]
    assert a.push(1, 2, 3) == 3
    assert a.unshift(0) == 4
    assert a.pop() == 3
    assert a.shift() == 0
    assert a.values() == [1, 2]
    assert a.splice(0, 1, "x", "y") == [1]
    assert list(a) == ["x", "y", 2]
    a.resize(5)
    assert len(a) == 5 and a[4] is None
    assert a.at(2).add(40) == 42
    a.clear()
    assert len(a) == 0 and a.pop() is None
    # A proxy sent as an argument is the reference it names, not a copy.
    p["alias"] = p["def"]
    assert p["alias"][0] == 456
    p["alias"][0] = 457
    assert p.at("def", 0).get() == 457
    p.at("def", 0).set(456)
    del p["alias"]
    del p["arr"]


def test_method_list_context(objs):
    foofie = objs["foofie"]
    assert foofie.ref() == "Foofie"
    before = foofie.call_list("blerp")  # (5, 6, 7, $$self)
    assert before[:3] == [5, 6, 7]
    assert foofie.call("blerp") == before[3] + 1  # ++$$self in scalar context
    assert foofie.call_list("blerp") == [5, 6, 7, before[3] + 1]
    assert foofie.can("blerp") and not foofie.can("nope")
    assert foofie.isa("Foofie") and not foofie.isa("Barfie")
    assert foofie.isa("Fooish") and foofie.isa("Thingish")  # its bases, two levels
    assert not objs["h"].isa("HASH") and not objs["sq"].isa("Foofie")


def test_served_callable(objs):
    x = patro.Box(5)
    assert objs["sq"](x) == 19
    assert x.value == 25  # the callable changed its argument; the change came back
    assert objs["add42"](1) == 43
    assert objs["add42"].call_callable_list(8) == [50]


def test_async_in_flight(objs):
    p = objs["h"]
    futures = [p.at("abc").get_async() for _ in range(64)]
    assert [f.result(10) for f in futures] == [123] * 64
    assert objs["add42"].call_async(None, 1).result(10) == 43


def test_threads_share_a_connection(objs):
    p = objs["h"]
    bad = []

    def reader():
        for _ in range(200):
            if p["abc"] != 123:
                bad.append(1)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert not bad


def test_config_and_names(cluster):
    cfg = patro.Config.from_file(cluster.config)
    assert cfg.brokers == [cluster.front] and len(cfg.objects) == 8
    assert patro.Config.parse(cfg.to_string()).objects == cfg.objects
    ps = patro.get_proxies(cfg)
    conn = ps[0].connection
    same_monitor = patro.proxy_for(conn, "counter")  # a name, on the same connection
    assert same_monitor == ps[4] and same_monitor.connection is conn
    info = conn.broker_info()
    assert {"h", "foofie", "sq", "counter"} <= {n["name"] for n in info["names"]}
    try:
        iter(ps[0].at("abc"))
        raise AssertionError("iterated over an integer")
    except patro.TypeMismatch:
        pass
    conn.close()


def _freed(conn, server, obj, limit=10.0):
    """Whether the server forgets the object (unknown_object) within limit, asked by id."""
    unheld = patro.Proxy(conn, server, obj)  # made by hand: no hold, asking does not keep it
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            unheld.ref()
        except patro.Error as e:
            if e.name == "unknown_object":
                return True
            raise
        time.sleep(0.05)
    return False


def test_a_dropped_reference_is_released_and_freed(objs):
    # The server (--lease-ms 300) frees what no client holds once the lease is out.
    m = objs["money"]
    conn = m.connection
    before = conn.released
    kept = m.operator("+", 1)  # a new Money: a reference, held by this proxy
    dropped = m.operator("+", 2)
    child = dropped.fenced(0)  # proxies made from a proxy share its hold
    sid, oid = dropped.id
    del dropped
    gc.collect()
    time.sleep(0.8)  # past the lease: the child still holds it
    assert child.call("cents") == m.call("cents") + 2
    del child
    gc.collect()
    assert _freed(conn, sid, oid)
    assert conn.released > before
    assert kept.call("cents") == m.call("cents") + 1  # still held: never freed
    assert not _freed(conn, *kept.id, limit=0.5)


def test_a_future_read_twice_holds_its_reference_once(objs):
    # The server counted the reference once: two readings share one hold, so dropping one
    # copy frees nothing while the other lives (libpatro's lifetime_test does the same).
    h = objs["h"]
    conn = h.connection
    f = h.at("def").get_async()
    first, second = f.result(), f.result()
    sid, oid = second.id
    del first
    gc.collect()
    time.sleep(0.8)  # past the lease, and past a release had one gone
    assert second.at(0).get() == 456
    del second, f
    gc.collect()
    assert _freed(conn, sid, oid)


def test_a_future_never_read_lets_its_reference_go(objs):
    h = objs["h"]
    conn = h.connection
    known = h.at("def").get_async()
    sid, oid = known.result().id  # one read, to learn the object's id
    answered = h.at("def").get_async()
    answered.wait()
    gone = h.at("def").get_async()
    del known, answered, gone  # the last one dropped before its answer came
    gc.collect()
    # Freed only once all three references are let go of (asking drives the socket, so the
    # last answer comes too).
    assert _freed(conn, sid, oid)


def test_an_answer_after_its_timeout_lets_its_reference_go(cluster):
    # The server runs the call all the same, and counts the hash it returns for us: the answer
    # that comes late is dropped, and its reference released.
    ps = patro.get_proxies(cluster.config, call_timeout=20)
    conn = ps[0].connection
    try:
        slow = patro.proxy_for(conn, "slow_hash")
        try:
            slow(300, timeout=0.05)
            raise AssertionError("no timeout")
        except patro.Timeout:
            pass
        deadline = time.monotonic() + 10
        while conn.released == 0 and time.monotonic() < deadline:
            assert ps[0].at("abc").get() == 123  # reads what comes meanwhile
            time.sleep(0.05)
        assert conn.released == 1
    finally:
        conn.close()


def test_operators_and_conversions(objs):
    m = objs["money"]
    start = m.call("cents")
    assert m.convert('""').startswith("$") and m.convert("bool") is True
    assert m.operator("==", start) and not m.operator("!=", start)
    bigger = m.operator("+", 5)  # a new Money, served: it comes back as a proxy
    assert isinstance(bigger, patro.Proxy) and bigger.call("cents") == start + 5
    assert m.operator("-", 1000, swapped=True) == 1000 - start
    assert m.operator("-=", 1) is None and m.call("cents") == start - 1
    m.operator("-=", -1)
    assert m.call("cents") == start


def test_served_file_handle(cluster, objs):
    fh = objs["fh"]
    assert fh.ref() == "GLOB"
    assert fh.readline() == "first line\n"
    assert fh.print("second ", 2, "\n") and fh.printf("%s %d\n", "third", 3)
    assert fh.seek(0) and fh.tell() == 0
    assert fh.readlines() == ["first line\n", "second 2\n", "third 3\n"]
    assert fh.eof() and fh.readline() is None
    fh.file("flush")
    with open(cluster.file_path) as f:
        assert f.read() == "first line\nsecond 2\nthird 3\n"


def test_oneway_calls(objs):
    foofie = objs["foofie"]
    v = foofie.call_list("blerp")[3]
    for _ in range(5):
        foofie.send("blerp")  # no answer; batched
    # A later request goes after the open batch: the five calls ran before it.
    assert foofie.call_list("blerp")[3] == v + 5
    assert patro.await_oneway(foofie) == 0
    foofie.send("no_such_method")
    foofie.send("blerp", "an argument too many")
    assert patro.await_oneway(foofie, timeout=10) == 2  # failures are counted, not raised
    assert "no_such_method" in foofie.connection.first_oneway_error
    try:
        foofie.send("blerp", object())
        raise AssertionError("sent what cannot travel")
    except patro.TypeMismatch:
        pass
    assert patro.await_oneway(foofie) == 0  # the refused call left the batch whole

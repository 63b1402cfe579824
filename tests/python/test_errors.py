"""Every error case gives its own exception class, with the code and name of C++ patro::Errc."""
import os
import time

import pytest

import patro
from conftest import Cluster, remove_segments


def check(e, cls, code, name):
    assert type(e.value) is cls, repr(e.value)
    assert isinstance(e.value, patro.Error)
    assert e.value.code == code and e.value.name == name
    assert str(e.value).startswith(name + ": ")


def test_codes_match_cpp():
    # libpatro/include/patro/error.hpp
    assert [(c.name, int(c)) for c in patro.Errc][:6] == [
        ("ok", 0), ("timeout", 1), ("broker_unreachable", 2), ("server_unavailable", 3),
        ("disconnected", 4), ("outcome_unknown", 5)]
    assert patro.Errc.fenced == 20 and patro.TypeMismatch.code == 9
    assert patro.Timeout("x").kind == "disconnected" and patro.TypeMismatch("x").kind == "failed"


def test_unknown_object(objs):
    h = objs["h"]
    server, _ = h.id
    ghost = patro.Proxy(h.connection, server, 0x1234)
    with pytest.raises(patro.Error) as e:
        ghost.get()
    check(e, patro.UnknownObject, 7, "unknown_object")
    nowhere = patro.Proxy(h.connection, 0x42, 0x1234)
    with pytest.raises(patro.Error) as e:
        nowhere.get()
    check(e, patro.ServerUnavailable, 3, "server_unavailable")


def test_unknown_method(objs):
    with pytest.raises(patro.Error) as e:
        objs["foofie"].call("no_such_method")
    check(e, patro.UnknownMethod, 8, "unknown_method")
    assert "no_such_method" in str(e.value)


def test_wrong_type(objs):
    with pytest.raises(patro.Error) as e:
        objs["add42"]("not a number")
    check(e, patro.TypeMismatch, 9, "type_mismatch")
    with pytest.raises(patro.Error) as e:
        objs["h"].at("abc", "x").get()  # indexing into an integer
    check(e, patro.TypeMismatch, 9, "type_mismatch")
    with pytest.raises(patro.Error) as e:
        objs["h"].push(1)  # pushing onto a hash
    check(e, patro.TypeMismatch, 9, "type_mismatch")
    # Values Patro cannot carry are refused before anything is sent.
    with pytest.raises(patro.Error) as e:
        objs["h"]["bad"] = {1: "int key"}
    check(e, patro.TypeMismatch, 9, "type_mismatch")
    with pytest.raises(patro.Error) as e:
        objs["h"]["bad"] = object()
    check(e, patro.TypeMismatch, 9, "type_mismatch")
    with pytest.raises(patro.Error) as e:
        objs["h"][1.5]
    check(e, patro.TypeMismatch, 9, "type_mismatch")


def test_malformed_arguments(objs):
    with pytest.raises(patro.Error) as e:
        objs["add42"]()  # no argument
    check(e, patro.InvalidArgument, 11, "invalid_argument")
    with pytest.raises(patro.Error) as e:
        objs["add42"](1, 2)  # one too many
    check(e, patro.InvalidArgument, 11, "invalid_argument")
    with pytest.raises(patro.Error) as e:
        objs["add42"](1 << 64)  # no 64-bit integer
    check(e, patro.InvalidArgument, 11, "invalid_argument")


def test_malformed_message(objs):
    h = objs["h"]
    with pytest.raises(patro.Error) as e:
        h.connection.raw_request(*h.id, b"\x10\x00\x00\x00PTRQ" + b"\xff" * 40)
    check(e, patro.BadMessage, 12, "bad_message")


def test_remote_exception(objs):
    with pytest.raises(patro.Error) as e:
        objs["money"].call("withdraw", 1 << 40)
    check(e, patro.RemoteException, 15, "remote_exception")
    assert "Overdrawn" in e.value.remote_type and "overdrawn" in e.value.message
    assert patro.RemoteError is patro.RemoteException


def test_not_callable(objs):
    with pytest.raises(patro.Error) as e:
        objs["h"].at("abc")()
    check(e, patro.NotCallable, 14, "not_callable")


def test_missing_broker():
    t0 = time.monotonic()
    with pytest.raises(patro.Error) as e:
        patro.get_proxies('{"brokers":["tcp://127.0.0.1:9"],"objects":[]}', connect_timeout=0.5)
    check(e, patro.BrokerUnreachable, 2, "broker_unreachable")
    assert time.monotonic() - t0 < 3


def test_timeout(cluster, objs):
    # A take from an empty queue waits 5 s on the server (parked: no thread waits there); the
    # call's own deadline is 0.3 s.
    idle = patro.get_proxy(cluster.front, "idle")
    t0 = time.monotonic()
    with pytest.raises(patro.Error) as e:
        idle.call("take", 5000, timeout=0.3)
    check(e, patro.Timeout, 1, "timeout")
    assert 0.25 < time.monotonic() - t0 < 1.5
    assert idle.call("size") == 0  # the connection goes on after a timeout
    idle.connection.close()


def test_not_found_and_bad_config(cluster, tmp):
    with pytest.raises(patro.Error) as e:
        patro.get_proxy(cluster.front, "no-such-name")
    check(e, patro.NotFound, 19, "not_found")
    for bad in ("{not json", '{"brokers": []}', '{"version": 2, "brokers": ["tcp://x:1"]}',
                '{"brokers": ["tcp://127.0.0.1:1"], "objects": [{"id": "12"}]}',
                os.path.join(tmp, "missing.conf")):
        with pytest.raises(patro.Error) as e:
            patro.get_proxies(bad)
        check(e, patro.BadConfig, 6, "bad_config")


def test_oversized_value(objs):
    big = "x" * (17 << 20)  # over the default 16 MiB limit: refused before it is sent
    with pytest.raises(patro.Error) as e:
        objs["h"]["big"] = big
    check(e, patro.MessageTooLarge, 13, "message_too_large")
    assert objs["h"]["abc"] == 123


def test_oversized_at_the_broker(procs, tmp):
    """A broker with a smaller limit than the client's refuses the request itself."""
    c = Cluster(procs, tmp, max_message_size=64 << 10, worker=False)
    try:
        h = patro.get_proxies(c.config)[0]
        with pytest.raises(patro.Error) as e:
            h["big"] = "y" * (100 << 10)
        check(e, patro.MessageTooLarge, 13, "message_too_large")
        assert h["abc"] == 123
        h.connection.close()
    finally:
        procs.stop(c.server)
        procs.stop(c.broker)
        remove_segments(c.names)


def test_server_that_dies(procs, tmp):
    """A call in flight when its server dies gets a definite answer: outcome_unknown for one that
    is not idempotent (the broker's SERVER_DOWN); later calls get server_unavailable."""
    c = Cluster(procs, tmp, server=False, worker=True)
    try:
        q = patro.get_proxy(c.front, "idle", call_timeout=20)
        fut = q.call_async("take", 15000)  # parked on the worker: no answer until a job comes
        time.sleep(0.3)
        c.worker.kill()
        c.worker.wait(5)
        t0 = time.monotonic()
        with pytest.raises(patro.Error) as e:
            fut.result(10)
        check(e, patro.OutcomeUnknown, 5, "outcome_unknown")
        assert time.monotonic() - t0 < 5  # the broker's window (100 ms x 5), not the deadline
        with pytest.raises(patro.Error) as e:
            q.call("size")
        check(e, patro.ServerUnavailable, 3, "server_unavailable")
        q.connection.close()
    finally:
        procs.stop(c.worker)
        procs.stop(c.broker)
        remove_segments(c.names)

"""The Python client's view of the wire's constants is libpatro's: error codes, commands and the
operations' flags (schemas/wire.json, generated for both), and the client acts on them as C++
does: an idempotent call whose server died is sent again, another reports outcome_unknown."""
import json
import os
import signal
import subprocess

import pytest

import patro
from patro import _codec as codec
from patro.connection import Op
from conftest import program, stop_process


def _cpp_view():
    out = subprocess.run([program("wire_dump")], capture_output=True, check=True, timeout=30)
    return json.loads(out.stdout)


def test_python_view_of_the_wire_equals_cpp():
    cpp = _cpp_view()
    python_errors = [[int(c), c.name, patro.error_kind(c)] for c in patro.Errc]
    assert python_errors == cpp["errors"]
    for c in patro.Errc:  # a class per code, by its CamelCase name
        if c != patro.Errc.ok:
            cls = getattr(patro, "".join(p.capitalize() for p in c.name.split("_")))
            assert cls.code == c and issubclass(cls, patro.Error)

    python_commands = sorted([v, name] for name, v in codec.COMMANDS.items())
    assert python_commands == cpp["commands"]
    accepted = [v for v in range(256) if codec.parse_header(codec._HEADERS.get(v) or
                                                             bytes((0x50, 0x54, 1, v))) == v]
    assert accepted == [v for v, _ in cpp["commands"]]

    python_ops = sorted([int(i.op), i.name, i.handler, i.idempotent, i.mutating, i.oneway]
                        for i in codec.OPS.values())
    assert python_ops == cpp["ops"]
    assert sorted(codec.IDEMPOTENT) == [op for op, _, _, idem, _, _ in cpp["ops"] if idem]
    # Every operation of request.fbs has a row.
    fbs_ops = {v for k, v in vars(Op).items() if not k.startswith("_")}
    assert fbs_ops == set(codec.OPS)


def test_the_idempotent_drift_is_fixed():
    # The set the Python client once kept by hand lacked these four, which C++ retries.
    for op in (Op.LockState, Op.LockInfo, Op.Slice, Op.Copy):
        assert op in codec.IDEMPOTENT
    assert Op.Add not in codec.IDEMPOTENT and Op.Lock not in codec.IDEMPOTENT
    # The commands the hand-kept list lacked.
    assert (codec.SERVER_ALIVE, codec.LOCATE_REPLY, codec.CLIENT_AT) == (16, 18, 19)


def test_error_classes():
    assert issubclass(patro.Timeout, TimeoutError) and issubclass(patro.Timeout, patro.Error)
    try:
        raise patro.errors.make_error(patro.Errc.timeout, "no answer")
    except TimeoutError as e:
        assert str(e) == "timeout: no answer" and e.code == 1 and e.kind == "disconnected"
    e = patro.errors.make_error(23, "eventfd: Too many open files")
    assert type(e) is patro.OsFailure and e.name == "os_failure" and e.kind == "failed"
    assert patro.Errc.internal == 18 and patro.Internal.code == 18  # old names still work
    e = patro.errors.make_error(24, "cancelled by its caller")
    assert type(e) is patro.Cancelled and e.name == "cancelled" and codec.CANCEL == 20
    assert type(patro.errors.make_error(999, "x")) is patro.Internal


def test_lock_state_is_retried_when_its_server_dies(lone_server):
    """A lock_state and an add in flight to a server that is then killed: when the broker reports
    the server gone, the add (not idempotent) fails with outcome_unknown, and lock_state (idempotent,
    as in C++) is sent again and answered by the server restarted under the same id."""
    # The broker declares a server dead after 200 ms x 20; a call waits up to twice that for it.
    s = lone_server("retried", server_id=4343, heartbeat_ms=200, liveness=20)
    server = s.start_server()
    counter = patro.get_proxies(s.config_text(), call_timeout=30)[4]
    conn = counter.connection
    try:
        assert patro.lock_state(counter) == "NULL"

        stop_process(server.pid)  # it takes no more requests; the broker routes to it
        add = counter.at("n")._start(Op.Add, (5,))
        state = counter._start(Op.LockState, ())
        conn.lookup(s.names[0])  # the broker answers it after it forwarded both (one socket)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        os.remove(s.config)
        with pytest.raises(patro.OutcomeUnknown):
            add.result(20)  # the broker said its server went away
        assert not state.done()  # lock_state waits to be sent again
        s.start_server()
        assert state.result(30) == 0  # LockState NULL, answered by the restarted server
        assert conn.retries > 0
    finally:
        conn.close()

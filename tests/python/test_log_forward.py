"""Log forwarding into Python's logging: a connection that asks for the server's lines at trace,
of its "server" component, gets the server's wire trace of its own requests in logger
"patro.remote", tagged with the server's host and pid; one that does not ask gets none."""
import logging
import time

import pytest

import patro


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=1)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_forwarded_lines_reach_python_logging(cluster):
    got = _Collect()
    logger = logging.getLogger("patro.remote")
    logger.addHandler(got)
    old = logger.level
    logger.setLevel(1)
    try:
        off = patro.get_proxies(cluster.config)[0]
        on = patro.get_proxies(cluster.config, forward_logs="trace",
                               forward_log_selections="server")[0]
        assert off["abc"] == 123
        deadline = time.monotonic() + 20
        while not any(r.levelno == 5 for r in got.records) and time.monotonic() < deadline:
            assert on["abc"] == 123  # drives the connection, which reads the lines
            time.sleep(0.05)
        assert got.records, "no forwarded line arrived"
        for r in got.records:
            assert r.patro_who == "server"
            assert r.patro_pid > 0 and r.patro_host
            assert r.getMessage().startswith("[%s:%d server] " % (r.patro_host, r.patro_pid))
            # Every level up to trace comes (the server's debug lines too), each mapped.
            assert r.levelno in (5, logging.DEBUG, 15, logging.INFO, logging.WARNING,
                                 logging.ERROR, logging.CRITICAL), r.levelno
        assert any(r.levelno == 5 for r in got.records), "no trace line (the wire trace) came"
        on.connection.close()
        # The connection that did not ask got nothing: every record is from the one that did
        # (its requests' trace lines name its client id).
        n = len(got.records)
        for _ in range(3):
            assert off["abc"] == 123
        time.sleep(0.3)
        assert len(got.records) == n
        off.connection.close()
    finally:
        logger.removeHandler(got)
        logger.setLevel(old)


def test_forward_logs_refuses_a_bad_level(cluster):
    with pytest.raises(patro.errors.InvalidArgument):
        patro.get_proxies(cluster.config, forward_logs="loud")

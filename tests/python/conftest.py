"""Fixtures: a real patro-broker, the C++ test server (tests/support/py_server.cpp) and a
patro-worker, each its own process on free ports. Every process is killed, every /dev/shm segment
of the servers' names and every temporary file removed when the tests end, passed or failed.

Run by meson (tests/python/run.py), or by hand from a build:
    PATRO_BUILD=build /usr/bin/python3 -m pytest -p no:cacheprovider tests/python
"""
import ctypes
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PATRO_BUILD", os.path.join(ROOT, "build"))
for _p in (os.path.join(ROOT, "python"), os.path.join(BUILD, "python")):
    if _p not in sys.path:
        sys.path.append(_p)
# Child Python processes (a consumer the tests kill, say) import the same package.
os.environ["PYTHONPATH"] = ":".join(
    [p for p in sys.path if os.path.isdir(os.path.join(p, "patro"))]
    + [os.environ.get("PYTHONPATH", "")]).rstrip(":")
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"

import patro  # noqa: E402

PROGRAMS = {
    "broker": ("PATRO_BROKER", "broker/patro-broker"),
    "worker": ("PATRO_WORKER", "worker/patro-worker"),
    "cli": ("PATRO_CLI", "tools/patro"),
    "test_client": ("PATRO_TEST_CLIENT", "tests/patro-test-client"),
    "py_server": ("PATRO_TEST_PY_SERVER", "tests/python/patro-test-py-server"),
    "wire_dump": ("PATRO_TEST_WIRE_DUMP", "tests/python/patro-test-wire-dump"),
}


def program(name):
    env, rel = PROGRAMS[name]
    path = os.environ.get(env) or os.path.join(BUILD, rel)
    if not os.access(path, os.X_OK):
        pytest.fail("%s is not built (%s)" % (name, path))
    return path


def _die_with_parent():
    # PR_SET_PDEATHSIG: a child of a test process that dies (kill -9) goes with it.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:
        pass


class Processes:
    """Child processes, all stopped by stop_all(): SIGTERM, then SIGKILL after a grace."""

    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, preexec_fn=_die_with_parent, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, grace=5.0):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()
        return p.returncode

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)
        self.procs.clear()


def wait_for_file(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.path.getsize(path) > 0:
                return True
        except OSError:
            pass
        time.sleep(0.01)
    return False


def stop_process(pid, timeout=10.0):
    """SIGSTOPs pid and returns once every thread of it is stopped. The kill returns as soon as the
    signal is queued; a thread busy on another CPU stops a little later, and on a loaded machine
    could still take a message that was sent after the kill."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                pass  # a thread that just ended
        if states and all(s in ("T", "t") for s in states):
            return
        time.sleep(0.001)
    raise AssertionError("process %d did not stop within %.0f s" % (pid, timeout))


def start_broker(procs, tmp, heartbeat_ms=100, liveness=5, extra=()):
    """A patro-broker on free loopback ports, as tests/support's BrokerProcess starts one: its
    endpoints read from the file it writes once bound. Returns (process, front, back)."""
    ends = os.path.join(tmp, "broker-endpoints")
    if os.path.exists(ends):
        os.remove(ends)
    broker = procs.start([program("broker"), "--front", "tcp://127.0.0.1:*",
                          "--back", "tcp://127.0.0.1:*",
                          "--heartbeat-ms", str(heartbeat_ms), "--liveness", str(liveness),
                          "--endpoints-file", ends] + list(extra))
    if not wait_for_file(ends):
        pytest.fail("patro-broker did not write its endpoints")
    with open(ends) as f:
        front, back = f.read().split()
    return broker, front, back


class Cluster:
    """A broker, a py_server and a patro-worker, in tmp."""

    def __init__(self, procs, tmp, max_message_size=None, server=True, worker=True):
        self.procs = procs
        self.tmp = tmp
        self.names = []
        extra = ["--max-message-size", str(max_message_size)] if max_message_size else []
        self.broker, self.front, self.back = start_broker(procs, tmp, extra=extra)
        if server:
            self.config = os.path.join(tmp, "py-server.conf")
            name = self._name("py")
            self.file_path = os.path.join(tmp, "served.txt")
            with open(self.file_path, "w") as f:
                f.write("first line\n")
            self.server = procs.start([program("py_server"), self.config, "--broker", self.back,
                                       "--heartbeat-ms", "100", "--threads", "4", "--name", name,
                                       "--file", self.file_path, "--lease-ms", "300"])
            if not wait_for_file(self.config):
                pytest.fail("the py server did not write its config")
        if worker:
            self.log_path = os.path.join(tmp, "app.log")
            name = self._name("worker")
            self.worker = procs.start([program("worker"), "--broker", self.back, "--name", name,
                                       "--heartbeat-ms", "100", "--visibility", "20000",
                                       "queue", "jobs", "queue", "idle",
                                       "log", "applog", self.log_path])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                info = patro.connect(self.front, connect_timeout=2)
                try:
                    if {"jobs", "applog"} <= {n["name"] for n in info.broker_info()["names"]}:
                        break
                finally:
                    info.close()
                time.sleep(0.05)
            else:
                pytest.fail("patro-worker did not register its objects")

    _count = 0

    def _name(self, what):
        Cluster._count += 1
        n = "pytest-%d-%s-%d" % (os.getpid(), what, Cluster._count)
        self.names.append(n)
        return n


class LoneServer:
    """A broker with its own heartbeat and liveness, and a py_server serving one name under a
    fixed server id, in tmp: stopped or killed, the server starts again with the same ids and
    the same config path (start_server). stop() ends both and removes the name's segments."""

    def __init__(self, procs, tmp, tag, server_id, heartbeat_ms, liveness):
        self.procs = procs
        self.names = ["pytest-%d-%s" % (os.getpid(), tag)]
        self.server_id = server_id
        self.server = None
        self.config = os.path.join(tmp, tag + ".conf")
        self.broker, self.front, self.back = start_broker(procs, tmp, heartbeat_ms, liveness)

    def start_server(self):
        self.server = self.procs.start([program("py_server"), self.config, "--broker", self.back,
                                        "--heartbeat-ms", "100", "--threads", "2",
                                        "--name", self.names[0],
                                        "--server-id", str(self.server_id)])
        return self.server

    def config_text(self):
        """The server's config once it has written it."""
        if not wait_for_file(self.config):
            pytest.fail("the py server did not write its config")
        with open(self.config) as f:
            return f.read()

    def stop(self):
        if self.server is not None:
            self.procs.stop(self.server)
        self.procs.stop(self.broker)
        remove_segments(self.names)


def remove_segments(names):
    for n in names:
        for path in glob.glob("/dev/shm/*patro-%s-*" % n):
            try:
                os.remove(path)
            except OSError:
                pass


def _remove_stale_segments():
    """Segments of an earlier run that was killed before it could clean up (its pid is gone)."""
    for path in glob.glob("/dev/shm/*patro-pytest-*"):
        m = re.search(r"patro-pytest-(\d+)-", path)
        if m and not os.path.exists("/proc/%s" % m.group(1)):
            try:
                os.remove(path)
            except OSError:
                pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


@pytest.fixture(scope="session")
def procs():
    # meson stops a test that runs past its timeout with SIGTERM: turn it into an interrupt, so
    # the fixtures below still stop their processes and remove their segments.
    signal.signal(signal.SIGTERM, _interrupt)
    _remove_stale_segments()
    p = Processes()
    yield p
    p.stop_all()


@pytest.fixture(scope="session")
def tmpdir_session():
    d = tempfile.mkdtemp(prefix="patro-pytest-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(procs, tmpdir_session):
    c = Cluster(procs, tmpdir_session)
    yield c
    procs.stop_all()
    remove_segments(c.names)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="patro-pytest-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def lone_server(procs, tmp):
    """Makes LoneServers (tag, server_id, heartbeat_ms, liveness) in tmp; stops them after the
    test, passed or failed."""
    made = []

    def make(tag, server_id, heartbeat_ms, liveness):
        made.append(LoneServer(procs, tmp, tag, server_id, heartbeat_ms, liveness))
        return made[-1]

    yield make
    for s in reversed(made):
        s.stop()


@pytest.fixture
def objs(cluster):
    """The py server's objects on one connection, by name."""
    ps = patro.get_proxies(cluster.config, call_timeout=20)
    names = ["h", "foofie", "sq", "add42", "counter", "money", "fh"]
    yield dict(zip(names, ps))
    ps[0].connection.close()

"""A client connection to a Patro broker: one ZeroMQ DEALER socket, many requests in flight,
replies matched by request id; the same rules as the C++ client (libpatro/src/client/connection.cpp).
The direct path (README "The direct path"): a DEALER per server whose lane answered, which the
thread that drives the broker socket drives too; patro.direct decides where each request goes.

There is no I/O thread: the thread that waits for a reply drives the socket itself while it holds
the I/O lock (leader/follower); others queue their frames in an outbox and wake the holder. A small
heartbeat thread keeps the connection alive while nobody calls (a broker expires a client that is
silent for its heartbeat interval times its liveness, releasing its locks and leases), and notices
a broker that went silent. Any thread may use a Connection.
"""
import atexit
import collections
import errno
import itertools
import logging
import os
import secrets
import struct
import threading
import time
import weakref

import flatbuffers
import zmq

from . import _codec as codec
from . import curve
from . import direct
from . import _wire_constants, errors

Op = codec.Op
CallContext = codec.CallContext


# Object::Remote's seven levels by verbosity, as LOG_SUBSCRIBE and LOG_LINE carry them
# (docs/WIRE.md "Log forwarding"), and the Python logging level each is written at.
LOG_VERBOSITY = {name: v for v, name in enumerate(_wire_constants.LOG_LEVELS)}
_PY_LEVELS = [logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, 15,
              logging.DEBUG, 5]
_REMOTE_LOG = logging.getLogger("patro.remote")


def _log_remote(msg):
    """A LOG_LINE ([hdr][host][pid][level][who][time][text][dropped]) into logger patro.remote:
    the message tagged "[host:pid who] text", and the record's fields as extra attributes
    (patro_host, patro_pid, patro_who, patro_time, patro_dropped)."""
    try:
        pid = codec.parse_u64(msg[2])
        verbosity = codec.parse_u64(msg[3])
        dropped = codec.parse_u64(msg[7])
        host = bytes(msg[1]).decode("utf-8", "replace")
        who = bytes(msg[4]).decode("utf-8", "replace")
        stamp = bytes(msg[5]).decode("utf-8", "replace")
        text = bytes(msg[6]).decode("utf-8", "replace")
    except Exception:
        return
    if None in (pid, verbosity, dropped) or verbosity > 6:
        return
    line = "[%s:%d %s] %s" % (host, pid, who, text)
    if dropped:
        line += " (%d lines dropped before this one)" % dropped
    _REMOTE_LOG.log(_PY_LEVELS[verbosity], "%s", line,
                    extra={"patro_host": host, "patro_pid": pid, "patro_who": who,
                           "patro_time": stamp, "patro_dropped": dropped})


class ClientOptions:
    """Every limit and default of a client connection (C++ patro::ClientOptions); times in
    seconds."""

    def __init__(self, call_timeout=30.0, connect_timeout=5.0, max_lock_wait=24 * 3600.0,
                 heartbeat_interval=1.0, liveness=3, max_message_size=16 << 20,
                 max_in_flight=10000, oneway_window=8192, oneway_batch=256,
                 oneway_batch_bytes=64 << 10, oneway_delay=0.001, retry=True,
                 retry_backoff=0.02, broker_key="", client_public_key="",
                 client_secret_key="", curve_key="", route="auto", forward_logs=None,
                 forward_log_selections=""):
        # Which way requests go (C++ ClientOptions::route; README "The direct path"): "auto",
        # straight to their server when it can be reached (it advertised a direct endpoint and
        # answers there), through the broker otherwise and whenever the direct connection fails;
        # "direct", straight to the server only (a call to a server that cannot be reached
        # directly fails with ServerUnavailable); "broker", through the broker only. A config's
        # route applies when this is "auto".
        self.route = _check_route(route)
        self.call_timeout = float(call_timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_lock_wait = float(max_lock_wait)
        self.heartbeat_interval = float(heartbeat_interval)
        self.liveness = int(liveness)
        self.max_message_size = int(max_message_size)
        self.max_in_flight = int(max_in_flight)
        # Oneway calls (Proxy.send): at most oneway_window sent and not yet acknowledged; at
        # most oneway_batch calls or oneway_batch_bytes in one batch; a partly filled batch goes
        # after oneway_delay, or before any other request of the connection.
        self.oneway_window = int(oneway_window)
        self.oneway_batch = int(oneway_batch)
        self.oneway_batch_bytes = int(oneway_batch_bytes)
        self.oneway_delay = float(oneway_delay)
        # Resend a request whose answer may have been lost (the broker restarted or was silent
        # and is heard again, no server was registered for it yet, or its server went away and
        # it is idempotent) until its deadline, with the same request id: the server's reply
        # cache answers a copy that already ran. Off: such a request fails at once.
        self.retry = bool(retry)
        # The first wait before resending a request the broker had no route for; it doubles up
        # to the heartbeat interval.
        self.retry_backoff = float(retry_backoff)
        # CURVE towards the broker (see patro.curve): the broker's public key (Z85, or a file
        # holding it; empty: the config's, or $PATRO_BROKER_KEY), this client's pair (Z85), or
        # a key file holding it (empty: the config's, $PATRO_CURVE_KEY, or a fresh pair).
        self.broker_key = str(broker_key)
        self.client_public_key = str(client_public_key)
        self.client_secret_key = str(client_secret_key)
        self.curve_key = str(curve_key)
        # Log forwarding (C++ ClientOptions::forward_logs): a level name ("info", "debug"...):
        # every server this connection sends a request to sends it its log lines at or above it,
        # of the components forward_log_selections selects (PATRO_LOG_SELECTIONS's syntax), and
        # they go to Python's logging, logger "patro.remote". None: none are sent.
        if forward_logs is not None and str(forward_logs).lower() not in LOG_VERBOSITY:
            raise errors.InvalidArgument("forward_logs: %r is not a level (%s)"
                                         % (forward_logs, ", ".join(LOG_VERBOSITY)))
        self.forward_logs = None if forward_logs is None else str(forward_logs).lower()
        self.forward_log_selections = str(forward_log_selections)

    def replace(self, **changes):
        o = ClientOptions.__new__(ClientOptions)
        o.__dict__.update(self.__dict__)
        for k, v in changes.items():
            if k not in o.__dict__:
                raise TypeError("unknown client option %r" % k)
            if k == "forward_logs":
                o.forward_logs = ClientOptions(forward_logs=v).forward_logs  # checked
                continue
            setattr(o, k, "" if v is None and isinstance(o.__dict__[k], str)
                    else type(o.__dict__[k])(v))
        _check_route(o.route)
        return o


def _check_route(route):
    try:
        return direct.check_route(route)
    except ValueError as e:
        raise errors.InvalidArgument(str(e)) from None


def random_id():
    """A random non-zero 64-bit id (client ids; C++ random_id)."""
    while True:
        v = secrets.randbits(64)
        if v:
            return v


_SCALARS = frozenset([type(None), bool, int, float, str, bytes])
_DIRECT_HWM = 100000  # a direct socket's high-water marks, as the broker socket's, at least
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)


def _send(sock, frames):
    """Sends a multipart message (as send_multipart, without its per-frame flag arithmetic).
    Never blocks: ZeroMQ takes or refuses a message whole at its first frame, so a full queue
    raises zmq.Again with nothing sent (the call then times out at its deadline)."""
    send = sock.send
    send(frames[0], _SNDMORE | _NOBLOCK)
    for f in frames[1:-1]:
        send(f, _SNDMORE)
    send(frames[-1], 0, copy=len(frames[-1]) < 65536)


_GIVEN_UP = (errors.Errc.timeout, errors.Errc.cancelled)  # a slot's errors after which its
# answer may still come


class _Slot:
    __slots__ = ("request_id", "server", "op", "deadline", "done", "error", "body", "oneway",
                 "frames", "control", "attempts", "maybe_ran", "retry_at", "no_route_since",
                 "backoff", "callbacks", "sent", "sent_direct", "lost_direct", "holds",
                 "releases")

    def __init__(self, request_id, server, op, deadline, frames=None, control=False):
        self.request_id = request_id
        self.server = server
        self.op = op
        self.deadline = deadline
        self.done = False
        self.error = None
        self.body = None  # the answer; while unanswered, the broker's no-route answer, if any
        self.oneway = 0  # a batch of oneway calls: the answer is their acknowledgement
        # Resending (ClientOptions.retry): the request as sent (None: never resent); a control
        # request goes again as it was, a request with an [attempt] frame.
        self.frames = frames
        self.control = control
        self.attempts = 1
        self.maybe_ran = False  # a copy was lost on its way: it may have run
        self.retry_at = None  # a resend waits for this
        self.no_route_since = None
        self.backoff = 0.0
        self.callbacks = None  # Connection.on_done's, run once answered
        self.sent = False  # it left (not queued, nor held for its direct route)
        self.sent_direct = False  # it left by the direct path (its last copy did)
        self.lost_direct = False  # a copy went directly and its connection died with it
        # The references its reply brings, each counted once by the server: held once, at its
        # first reading, for every reading (Connection.results); let go of as the slot goes if
        # it was never read (a Future dropped unread). releases: its connection, weakly, for a
        # request whose reply may bring references.
        self.holds = None
        self.releases = None

    def idempotent(self):
        return not self.oneway and self.op in codec.IDEMPOTENT

    def __del__(self):
        if self.holds is not None or self.releases is None or not self.done or self.error:
            return
        conn = self.releases()
        if conn is None or conn._closed or not self.body:
            return
        try:
            codec.decode_reply(self.body, conn._let_go)
        except Exception:  # a reply that cannot be read: held until we disconnect
            pass


_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                     | zmq.EVENT_DISCONNECTED)


def _handshake(monitor, timeout, secure):
    """Waits up to timeout seconds for the socket's handshake; None when it succeeded or nothing
    was heard (a broker that is not there: the hello then times out), else why it failed (the
    texts of C++ HandshakeWatch)."""
    deadline = time.monotonic() + timeout
    resets = 0  # handshakes a plaintext client saw broken off
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not monitor.poll(int(left * 1000) + 1):
            return None
        try:
            frames = monitor.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            continue
        if not frames or len(frames[0]) < 6:
            continue
        event, value = struct.unpack("=HI", frames[0][:6])
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return None
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return ("the broker refused this key (status %d): it is not on the broker's allow "
                    "list for this port" % value)
        if event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            # NO_DETAIL carries an errno: once, a broker that died meanwhile (ZeroMQ reconnects,
            # so a plaintext client waits on); twice in a row, a CURVE broker that resets a
            # plaintext greeting before its own is read. PROTOCOL carries a ZMTP error.
            if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and not secure:
                resets += 1
                if resets < 2:
                    continue
                return ("the broker broke off the handshake twice in a row (%s): it most likely "
                        "requires CURVE: give its public key (broker_key, PATRO_BROKER_KEY, or a "
                        "config that carries it) and a key pair it allows "
                        "(client_public_key/client_secret_key, curve_key or PATRO_CURVE_KEY); or "
                        "it is full (its --max-connections)" % os.strerror(value))
            mismatch = value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
            if mismatch and secure:
                return "the broker does not use CURVE, but a broker key was given"
            if not secure and not mismatch:
                return "the handshake with the broker failed (ZMTP error 0x%x)" % value
            if not secure:
                return ("the broker requires CURVE: give its public key (broker_key, "
                        "PATRO_BROKER_KEY, or a config that carries it) and a key pair it allows "
                        "(client_public_key/client_secret_key, curve_key or PATRO_CURVE_KEY) "
                        "(handshake error 0x%x)" % value)
            return "the CURVE handshake failed (error 0x%x): is the broker key right?" % value
        if event == zmq.EVENT_DISCONNECTED and secure:
            return ("the broker closed the connection during the CURVE handshake: is the broker "
                    "key right?")


def endpoint_problem(endpoint):
    """Why endpoint cannot be a broker's client endpoint, or None. What this catches is a usage
    error, raised at once (InvalidArgument) rather than after the connect timeout: no transport
    ("nonsense"), a tcp endpoint without a host and a port from 1 to 65535, an inproc endpoint
    (only sockets of this process's own context answer there). ZeroMQ's connect refuses the
    rest of what cannot work (an unknown transport, an ipc path too long) at once too."""
    if not isinstance(endpoint, str):
        return "an endpoint is a str, not %s" % type(endpoint).__name__
    transport, sep, address = endpoint.partition("://")
    if not sep or not transport:
        return "it names no transport"
    if transport == "inproc":
        return "inproc:// reaches sockets of this process's own ZeroMQ context, never a broker"
    if transport == "tcp":
        host, colon, port = address.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            return "a tcp endpoint is tcp://HOST:PORT, with a port from 1 to 65535"
        if host == "*":
            return "tcp://*:PORT is for binding; a client names the broker's host"
    return None


def _bad_endpoint(endpoint, why):
    return errors.InvalidArgument("'%s' is not a broker endpoint: %s (one looks like "
                                  "tcp://HOST:PORT or ipc:///PATH)" % (endpoint, why))


# zmq_connect's errors that no retry or wait can cure.
_USAGE_ERRNOS = (errno.EINVAL, errno.EPROTONOSUPPORT, errno.ENAMETOOLONG,
                 getattr(zmq, "ENOCOMPATPROTO", -1))

_live = weakref.WeakSet()


@atexit.register
def _close_all():
    for c in list(_live):
        c.close()


class Connection:
    """One connection (one monitor, for locks). Made by patro.get_proxies / patro.get_proxy."""

    def __init__(self, brokers, options=None):
        if isinstance(brokers, str):
            brokers = [brokers]
        self.brokers = [b for b in brokers if b]
        if not self.brokers:
            raise errors.BadConfig("no broker address to connect to")
        for b in self.brokers:
            why = endpoint_problem(b)
            if why is not None:
                raise _bad_endpoint(b, why)
        self.options = options or ClientOptions()
        o = self.options
        self.route = _check_route(o.route)
        # CURVE (C++ resolve_curve): ("", None) for plaintext; raises before anything is opened.
        self._curve_broker_key, self._curve_keys = curve.resolve(
            o.broker_key, curve.KeyPair(o.client_public_key, o.client_secret_key), o.curve_key)
        self.client_id = random_id()
        self.endpoint = None
        self._next_rid = itertools.count(1)
        self._ctx = zmq.Context(1)
        self._sock = None
        self._io = threading.Lock()  # the socket, _last_heard, _next_hb
        self._mu = threading.Lock()  # slots, outbox, generation
        self._cv = threading.Condition(self._mu)
        self._slots = {}
        # The servers this connection sent requests to, and the broker's instance (its
        # heartbeats name it): when it restarts, each server hears through it that we are still
        # here (LOCATE), or it releases our locks and leases as a client that died with it.
        self._servers = set()
        self._log_subscribed = set()  # servers sent a LOG_SUBSCRIBE
        self._broker_instance = 0
        self._templates = {}  # requests encoded once (codec.RequestTemplate), at most 1024
        self._outbox = collections.deque()
        self._generation = 0
        self._closed = False
        self._broker_silent = False  # past its window: resend everything when heard again
        self._next_retry = float("inf")  # the earliest resend waiting for its backoff
        self.retries = 0  # requests sent again
        self._hb_interval = self.options.heartbeat_interval
        self._window = self.options.heartbeat_interval * self.options.liveness
        self._last_heard = time.monotonic()
        self._next_hb = self._last_heard + self._hb_interval
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = None
        self._stop = threading.Event()
        self._kick = threading.Event()  # wakes the heartbeat thread (a batch opened, closing)
        self._hb_thread = None
        # Answers awaited by callbacks (asyncio: Future.__await__): the driver thread reads the
        # socket for them while any wait, as the C++ heartbeat thread does for then-callbacks.
        self._awaited = 0
        self._driver = None
        self._driver_kick = threading.Event()
        # The open batch of oneway calls (guarded by _out_mu, taken before _mu).
        self._out_mu = threading.Lock()
        self._batch = None
        self._batch_calls = []
        self._batch_target = None
        self._batch_opened = 0.0
        self._oneway_unacked = 0
        self._oneway_failed = 0
        self._oneway_first_error = ""
        # References whose last proxy went (their _Hold was collected), to release at their
        # servers on the heartbeat thread's next turn (libpatro's ReleaseQueue).
        self._released = collections.deque()
        self.released = 0  # Release calls sent so far
        self._refs_mu = threading.Lock()  # a reading of a reply's references (results)
        # Requests given up on (timed out, cancelled) whose answer may bring references, oldest
        # first: a late answer lets go of them (_answer).
        self._given_up = collections.OrderedDict()
        self._weak_self = weakref.ref(self)  # what a request's slot releases through
        # The direct path (patro.direct; guarded by _io): each server's route, and the socket to
        # the lane of each server whose route is probing or live.
        self._routes = direct.DirectRoutes(self.route) if self.route != "broker" else None
        self._direct_socks = {}
        self.direct_replies = 0  # answers that came straight from their server
        _live.add(self)

    # --- life ---

    def connect(self):
        """Says hello to the first broker that answers; raises BrokerUnreachable, or
        NotAuthorized when a broker refused the CURVE handshake (a key not on its allow list, a
        wrong broker key, no key for a broker that requires one), or InvalidArgument at once
        for an endpoint that cannot be one (see endpoint_problem)."""
        problems = []
        refused = False
        secure = self._curve_keys is not None
        n = len(self.brokers)
        # With several brokers each gets its share of the time, so a dead first one leaves time
        # for the others.
        ct = self.options.connect_timeout
        budget = ct if n == 1 else max(ct / n, min(ct, 0.5))
        usage = None  # an endpoint that zmq_connect refused as malformed
        for endpoint in self.brokers:
            deadline = time.monotonic() + budget
            with self._io:
                if self._sock is not None:
                    self._sock.close(0)
                    self._sock = None
                s = self._ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.SNDHWM, 100000)
                s.setsockopt(zmq.RCVHWM, 100000)
                # A routing id of its own, as libpatro's sockets have: the ids a ROUTER makes up
                # repeat in every broker process, so a reply sent across a broker restart could
                # reach another client (docs/WIRE.md, "Routing ids").
                s.setsockopt(zmq.ROUTING_ID, b"p" + secrets.token_bytes(8))
                s.setsockopt(zmq.MAXMSGSIZE, min(self.options.max_message_size * 2 + 65536,
                                                 (1 << 31) - 1))
                if secure:
                    s.curve_serverkey = self._curve_broker_key.encode("ascii")
                    s.curve_publickey = self._curve_keys.public_key.encode("ascii")
                    s.curve_secretkey = self._curve_keys.secret_key.encode("ascii")
                # The handshake first: a refused key or a mismatched mechanism is a clear error
                # at once, and nothing of ours reaches the broker.
                monitor = s.get_monitor_socket(_HANDSHAKE_EVENTS)
                try:
                    try:
                        s.connect(endpoint)
                    except zmq.ZMQError as e:
                        if e.errno in _USAGE_ERRNOS:
                            usage = _bad_endpoint(endpoint, e.strerror)
                        raise
                    failure = _handshake(monitor, budget, secure)
                except zmq.ZMQError as e:
                    failure, e_text = None, "%s: %s" % (endpoint, e)
                else:
                    e_text = None
                finally:
                    s.disable_monitor()
                    monitor.close(0)
                if e_text is not None or failure is not None:
                    s.close(0)
                    if usage is not None:
                        break
                    if e_text is not None:
                        problems.append(e_text)
                    else:
                        refused = True
                        problems.append("%s: %s%s" % (
                            endpoint, failure,
                            " (client key %s)" % self._curve_keys.public_key[:8] if secure
                            else ""))
                    continue
                self._sock = s
                self._poller = zmq.Poller()
                self._poller.register(s, zmq.POLLIN)
                self._poller.register(self._wake_r, zmq.POLLIN)
                self._last_heard = time.monotonic()
                self._next_hb = self._last_heard + self._hb_interval
            rid = next(self._next_rid)
            slot = self._new_slot(rid, 0, None, deadline)
            self._submit([codec.header(codec.HELLO), codec.u64_frame(rid),
                          codec.hello_body(self.client_id)])
            self._await(slot)
            if slot.error is not None:
                problems.append("%s: no answer within %g s" % (endpoint, budget))
                continue
            try:
                t, w = codec.decode_control(slot.body)
                if t != codec.wire.ControlBody.Welcome:
                    problems.append("%s: the answer to hello was not a welcome" % endpoint)
                    continue
                # Every field read here: a damaged WELCOME is this broker's problem, not a crash.
                theirs = w.HeartbeatMs() / 1000.0
                liveness, max_size, instance = w.Liveness(), w.MaxMessageSize(), w.Instance()
            except errors.Error as e:
                problems.append("%s: %s" % (endpoint, e))
                continue
            self.endpoint = endpoint
            if 0 < theirs < self._hb_interval:
                self._hb_interval = theirs
            if theirs > 0 and liveness > 0:
                self._window = theirs * liveness
            self.broker_max_message_size = max_size
            with self._io:
                if instance:
                    self._broker_instance = instance
                self._next_hb = min(self._next_hb, time.monotonic() + self._hb_interval)
            if self._hb_thread is None:
                self._hb_thread = threading.Thread(target=_heartbeat_main,
                                                   args=(weakref.ref(self), self._stop),
                                                   name="patro-heartbeat", daemon=True)
                self._hb_thread.start()
            return self
        self.close()
        if usage is not None:
            raise usage
        if refused:
            raise errors.NotAuthorized("no broker accepts this client: " + "; ".join(problems))
        raise errors.BrokerUnreachable("no broker answers: " + "; ".join(problems))

    def close(self):
        """Says goodbye to the broker (it releases this monitor's locks and leases at once) and
        closes the socket. Calls after this raise Disconnected."""
        try:
            self._seal()  # oneway calls still in the open batch go before the goodbye
        except errors.Error:
            pass
        with self._mu:
            if self._closed:
                return
            self._closed = True
            for slot in list(self._slots.values()):
                self._complete(slot, errors.Disconnected("the connection was closed"))
            self._cv.notify_all()
        self._stop.set()
        self._kick.set()
        try:
            os.write(self._wake_w, b"x")  # a thread polling the socket lets go of it now
        except OSError:
            pass
        self._driver_kick.set()
        for thread in (self._hb_thread, self._driver):
            if thread is not None and thread is not threading.current_thread():
                thread.join(5)
        with self._io:
            if self._routes is not None:
                self._routes.clear()
            for sock in self._direct_socks.values():
                sock.close(0)
            self._direct_socks.clear()
            if self._sock is not None:
                try:
                    self._sock.send_multipart([codec.header(codec.DISCONNECT)], zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
                self._sock.close(100)
                self._sock = None
            self._ctx.term()
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        _live.discard(self)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self):
        return self._closed

    # --- requests ---

    def _new_slot(self, rid, server, op, deadline, frames=None, control=False):
        """Registers a slot; frames: the request as it goes out, kept to resend it."""
        slot = _Slot(rid, server, op, deadline, frames if self.options.retry else None, control)
        with self._mu:
            if self._closed:
                raise errors.Disconnected("the connection is closed")
            self._slots[rid] = slot
        return slot

    def start(self, server, obj, op, path=(), args=(), name=None, context=CallContext.Scalar,
              timeout=None, fence=0, pipeline_of=0):
        """Sends one operation and returns its slot at once (see wait / results). pipeline_of:
        the request id (of this connection) whose result it runs on, in place of obj (sent as
        0; docs/WIRE.md "Pipelined calls")."""
        timeout = self.options.call_timeout if timeout is None else max(0.0, float(timeout))
        deadline = time.monotonic() + timeout
        if not self._slots:
            self._read_queued()
        if len(self._slots) >= self.options.max_in_flight:
            if not self._drive(lambda: len(self._slots) < self.options.max_in_flight, deadline):
                raise errors.Timeout("no room for another request in flight by the call's deadline "
                                     "(%d in flight)" % self.options.max_in_flight)
        rid = next(self._next_rid)
        # Arguments of plain scalar types are part of the template's key (with their types, as
        # 1, 1.0 and True are equal in Python): lock calls, take(5000)... are built once.
        scalar_args = all(type(a) in _SCALARS for a in args)
        if pipeline_of:
            obj = 0  # a server too old to pipeline answers unknown_object
            body = codec.encode_request(rid, self.client_id, server, obj, op, path, args, name,
                                        context, timeout * 1000, fence, pipeline_of)
        elif not scalar_args:
            body = codec.encode_request(rid, self.client_id, server, obj, op, path, args, name,
                                        context, timeout * 1000, fence)
        else:
            key = (server, obj, op, path, name, context, fence,
                   tuple((type(a), a) for a in args))
            template = self._templates.get(key)
            if template is None:
                if len(self._templates) >= 1024:
                    self._templates.clear()
                template = codec.RequestTemplate(codec.encode_request(
                    1, self.client_id, server, obj, op, path, args, name, context, 1, fence))
                self._templates[key] = template
            body = template.make(rid, timeout * 1000)
        if len(body) > self.options.max_message_size:
            raise errors.MessageTooLarge("the request of %d bytes is over the limit of %d"
                                         % (len(body), self.options.max_message_size))
        frames = [codec.header(codec.REQUEST), codec.object_id_frame(server, obj),
                  codec.u64_frame(rid), body]
        slot = self._new_slot(rid, server, op, deadline, frames)
        slot.releases = self._weak_self
        self._servers.add(server)
        if self.options.forward_logs is not None and server not in self._log_subscribed:
            # Before the server's first request (docs/WIRE.md "Log forwarding").
            self._log_subscribed.add(server)
            self._submit([codec.header(codec.LOG_SUBSCRIBE), codec.u64_frame(server),
                          codec.u64_frame(self.client_id),
                          codec.u64_frame(LOG_VERBOSITY[self.options.forward_logs]),
                          self.options.forward_log_selections.encode("utf-8")])
        self._submit(frames, slot)
        return slot

    def results(self, slot, make_ref):
        """The decoded Reply of an answered slot; raises the call's error. make_ref(server, obj,
        type_name, reftype, hold) makes each reference: its hold is made at the slot's first
        reading and shared by every later one (the server counted the reference once)."""
        if slot.error is not None:
            raise slot.error
        with self._refs_mu:
            if slot.holds is None:
                slot.holds = []
            holds = slot.holds
            n = 0

            def held(server, obj, type_name, reftype):
                nonlocal n
                if n == len(holds):
                    holds.append(self.hold(server, obj))
                n += 1
                return make_ref(server, obj, type_name, reftype, holds[n - 1])

            reply = codec.decode_reply(slot.body, held)
        if reply.error is not None:
            raise reply.error
        return reply

    def call(self, server, obj, op, path=(), args=(), name=None, context=CallContext.Scalar,
             timeout=None, fence=0, make_ref=None):
        slot = self.start(server, obj, op, path, args, name, context, timeout, fence)
        self._await(slot)
        return self.results(slot, make_ref or self._plain_ref)

    def raw_request(self, server, obj, body, timeout=None):
        """Sends a request with the body as given (for tests of the server's checks); returns the
        reply body's decoded Reply."""
        timeout = self.options.call_timeout if timeout is None else timeout
        rid = next(self._next_rid)
        frames = [codec.header(codec.REQUEST), codec.object_id_frame(server, obj),
                  codec.u64_frame(rid), body]
        slot = self._new_slot(rid, server, None, time.monotonic() + timeout, frames)
        self._submit(frames, slot)
        self._await(slot)
        return self.results(slot, self._plain_ref)

    def _let_go(self, server, obj, type_name, reftype):
        """make_ref for an answer nobody reads: each reference it brings is released."""
        self._released.append((server, obj))

    def _plain_ref(self, server, obj, type_name, reftype, hold=None):
        return (server, obj, type_name, reftype)

    def control(self, command, body):
        """Sends a control request to the broker; returns (union type, table) of its answer."""
        rid = next(self._next_rid)
        frames = [codec.header(command), codec.u64_frame(rid), body]
        slot = self._new_slot(rid, 0, None, time.monotonic() + self.options.call_timeout, frames,
                              True)
        self._submit(frames, slot)
        self._await(slot)
        if slot.error is not None:
            raise slot.error
        return codec.decode_control(slot.body)

    def lookup(self, name):
        """The broker's binding of a name (a dict), or None."""
        t, lr = self.control(codec.LOOKUP, codec.lookup_body(name))
        if t != codec.wire.ControlBody.LookupReply:
            raise errors.BadMessage("the answer to a lookup was not a lookup reply")
        refusal = lr.Refusal()
        if refusal:  # this client's key may not reach the name (rights per key)
            raise errors.make_error(errors.Errc.not_authorized,
                                    refusal.decode("utf-8", "replace"))
        if not lr.Found() or lr.Binding() is None:
            return None
        return codec.decode_binding(lr.Binding())

    def broker_info(self):
        t, r = self.control(codec.BROKER_INFO, codec.broker_info_body())
        if t != codec.wire.ControlBody.BrokerInfoReply:
            raise errors.BadMessage("the answer to broker_info was not a broker info reply")
        return {
            "names": [codec.decode_binding(r.Names(i)) for i in range(r.NamesLength())],
            "servers": [{"server_id": r.Servers(i).ServerId(), "lanes": r.Servers(i).Lanes(),
                         "clients": r.Servers(i).Clients(),
                         "dedup_hits": r.Servers(i).DedupHits(),
                         "expired": r.Servers(i).Expired(), "direct": r.Servers(i).Direct(),
                         "brokered": r.Servers(i).Brokered()}
                        for i in range(r.ServersLength())],
            "routed": r.Routed(), "replies": r.Replies(), "dropped": r.Dropped(),
            "rejected": r.Rejected(), "clients": r.Clients(), "servers_now": r.ServersNow(),
            "retried": r.Retried(), "dedup_hits": r.DedupHits(), "expired": r.Expired(),
        }

    # --- waiting ---

    def wait(self, slot, timeout=None):
        """Waits for the slot's answer up to timeout seconds (None: its own deadline); whether it
        was answered."""
        if timeout is None:
            self._await(slot)
            return True
        return self._drive(lambda: slot.done, min(slot.deadline, time.monotonic() + timeout))

    def _await(self, slot):
        if not self._drive(lambda: slot.done, slot.deadline):
            with self._mu:
                if not slot.done:
                    self._time_out(slot)

    def _drive(self, done, until):
        while True:
            with self._mu:
                if done():
                    return True
                if self._closed:
                    return done()
                gen = self._generation
                in_flight = len(self._slots)
            now = time.monotonic()
            if now >= until:
                return False
            if self._io.acquire(blocking=False):
                try:
                    self._pump(done, until, in_flight > 1)
                finally:
                    self._release_io()
                continue
            with self._mu:
                if not done() and self._generation == gen:
                    self._cv.wait(min(until - now, 0.05))

    def _read_queued(self):
        """Reads what the broker sent while nothing was in flight, before a new request goes out
        (C++ Connection::read_queued): a SERVER_DOWN still queued must not fail a request sent
        after its server came back under the same id. Skipped while another thread holds the
        socket (it reads)."""
        if self._closed or not self._io.acquire(blocking=False):
            return
        try:
            sock = self._sock
            if sock is not None and sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self._pump(lambda: False, time.monotonic(), True)
        except zmq.ZMQError:
            pass  # the request's own sending and waiting meet it and report it
        finally:
            self._release_io()

    def _release_io(self):
        self._io.release()
        # What was queued while we held the socket goes now, unless someone else took it.
        while self._outbox and self._io.acquire(blocking=False):
            try:
                self._flush()
            finally:
                self._io.release()
        with self._mu:
            self._generation += 1
            self._cv.notify_all()

    def _submit(self, frames, slot=None):
        if self._batch_calls:
            self._seal()  # requests go in the order they were made: the open batch first
        self._submit_raw(frames, slot)

    def _submit_raw(self, frames, slot=None):
        if self._closed:
            raise errors.Disconnected("the connection is closed")
        if not self._outbox and self._io.acquire(blocking=False):
            # Nothing queued before it: send now, in order.
            try:
                if self._sock is None:
                    raise errors.Disconnected("the connection is closed")
                self._send_out(frames, slot)
            finally:
                self._io.release()
            while self._outbox and self._io.acquire(blocking=False):
                try:
                    self._flush()
                finally:
                    self._io.release()
            return
        with self._mu:
            self._outbox.append((frames, slot))
        if self._io.acquire(blocking=False):
            try:
                self._flush()
            finally:
                self._io.release()
        else:
            try:
                os.write(self._wake_w, b"x")  # the holder of the socket sends it
            except (BlockingIOError, OSError):
                pass

    def _flush(self):
        while True:
            with self._mu:
                if not self._outbox:
                    return
                frames, slot = self._outbox.popleft()
            self._send_out(frames, slot)

    # --- the direct path (C++ Connection::send_out, on_locate_reply, tend_routes, route_failed) ---

    def _send_out(self, frames, slot):
        """Sends a request (slot: its slot, None for a message of the connection's own) by the way
        its server's route says now: through the broker, directly, held until the route is live
        (route "direct"), or refused. Requires _io."""
        sock = self._sock
        if sock is None:
            return
        if slot is not None:
            if slot.done:
                return  # it timed out while it waited to go
            server = slot.server
            if self._routes is not None and server and not slot.control:
                r = self._routes.routes.get(server)
                if r is not None and r.active:  # what choose() says of an active route, sooner
                    way = direct.DIRECT
                else:
                    way, locate = self._routes.choose(server, time.monotonic(), self._window,
                                                      lambda: self._brokered_in_flight(server))
                    if locate:
                        self._locate(server)
                if way == direct.HOLD:
                    self._routes.hold(server, (frames, slot))
                    return
                if way == direct.REFUSE:
                    self._fail_slots([slot], "server %016x cannot be reached directly "
                                             "(route=direct)" % server)
                    return
                if way == direct.DIRECT:
                    if self._send_direct(self._direct_socks[server], frames):
                        slot.sent = slot.sent_direct = True
                        return
                    # The direct connection is closed: the request never left, so it goes as the
                    # route now says (through the broker, or held until the server is located
                    # again), after those in flight on the closed connection.
                    self._route_failed(server, "its direct connection is closed")
                    self._send_out(frames, slot)
                    return
            slot.sent = True
            slot.sent_direct = False
        try:
            _send(sock, frames)
        except zmq.ZMQError:
            pass  # the request times out at its deadline

    def _brokered_in_flight(self, server):
        with self._mu:
            for s in self._slots.values():
                if s.server == server and not s.done and s.sent and not s.sent_direct:
                    return True
        return False

    def _send_direct(self, sock, frames):
        """Whether the request left. With ZMQ_IMMEDIATE a socket queues nothing while it has no
        connection; its queue holds twice max_in_flight (at least), so it is never full, and a
        refusal means that the connection is closed (C++ waits for room where its queue can
        fill)."""
        try:
            _send(sock, frames)
            return True
        except zmq.ZMQError:
            return False

    def _locate(self, server):
        """Asks the broker where server takes requests directly (it also tells the broker, and
        through it the server, that we talk to that server). Requires _io."""
        try:
            self._sock.send_multipart([codec.header(codec.LOCATE), codec.u64_frame(server),
                                       codec.locate_body(server)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # a locating route asks again after the broker's window

    def _on_locate_reply(self, msg):
        """[server id][Control(LocateReply)]: opens a socket to one of the server's lanes, which
        the route then probes. Requires _io."""
        routes = self._routes
        server = codec.parse_u64(msg[1]) if routes is not None and len(msg) == 3 else None
        if server is None or not routes.locating(server):
            return
        try:
            _, endpoints, server_key = codec.decode_locate_reply(msg[2])
        except errors.Error:
            endpoints, server_key = [], ""
        endpoint = direct.DirectRoutes.pick_endpoint(endpoints, self.client_id)
        id_text = "server %016x" % server
        if not endpoint:
            return self._route_failed(server, id_text + " has no direct endpoint")
        secure = self._curve_keys is not None
        # Under CURVE the broker vouched for our key to the server and hands us the server's.
        if secure and not curve.is_curve_key(server_key):
            return self._route_failed(server, id_text + ": the broker gave no key for its direct "
                                      "path (a broker older than the direct path under CURVE)")
        s = self._ctx.socket(zmq.DEALER)
        try:
            s.setsockopt(zmq.LINGER, 0)
            hwm = min(max(_DIRECT_HWM, 2 * self.options.max_in_flight + 64), (1 << 31) - 1)
            s.setsockopt(zmq.SNDHWM, hwm)
            s.setsockopt(zmq.RCVHWM, hwm)
            s.setsockopt(zmq.ROUTING_ID, b"p" + secrets.token_bytes(8))
            s.setsockopt(zmq.MAXMSGSIZE, min(self.options.max_message_size * 2 + 65536,
                                             (1 << 31) - 1))
            if secure:
                s.curve_serverkey = server_key.encode("ascii")  # the peer's key: the server's
                s.curve_publickey = self._curve_keys.public_key.encode("ascii")
                s.curve_secretkey = self._curve_keys.secret_key.encode("ascii")
            # Nothing is queued for a connection not made, or one that closed: a request sent to
            # a process that died is refused at once (and goes another way) instead of waiting in
            # the socket, where it could only fail later as outcome_unknown.
            s.setsockopt(zmq.IMMEDIATE, 1)
            s.connect(endpoint)
        except (zmq.ZMQError, UnicodeError) as e:
            s.close(0)
            return self._route_failed(server, "cannot connect to %s: %s" % (endpoint, e))
        self._direct_socks[server] = s
        self._poller.register(s, zmq.POLLIN)
        routes.probing(server, time.monotonic())

    def _dispatch_direct(self, server, msg):
        """A message from server's direct socket: a reply ([hdr][request id][body]) or the
        answer to a heartbeat ([hdr]). Requires _io."""
        heard = self._routes.heard(server, time.monotonic())
        if not heard.known:
            return
        if heard.up:
            # route "direct": nothing went through the broker; the held requests go now, in order.
            for frames, slot in heard.ready:
                self._send_out(frames, slot)
        if len(msg) == 3 and codec.parse_header(msg[0]) == codec.REPLY:
            self._answer(msg, True)

    def _tend_routes(self, now):
        """The routes' timers: LOCATEs asked again, heartbeats on the direct sockets, silent
        routes failed. When to come back. Requires _io."""
        routes = self._routes
        if now < routes.next_check():
            return routes.next_check()
        locate, beat, failed = routes.tend(now, self._window, self._hb_interval)
        for server in locate:
            self._locate(server)
        for server in beat:
            sock = self._direct_socks.get(server)
            if sock is None:
                continue
            try:
                sock.send_multipart([codec.header(codec.HEARTBEAT),
                                     codec.u64_frame(self.client_id)], zmq.NOBLOCK)
                sent = True
            except zmq.ZMQError:
                sent = False
            # Not connected: a probe (the connection is still being made) goes again soon; a live
            # route's connection closed (its queue is never full: _send_direct).
            if not sent and routes.beat_unsent(server, now):
                failed.append((server, "its direct connection is closed"))
            elif not sent and routes.reconnect_due(server, now):
                self._reconnect_direct(sock)
        for server, why in failed:
            self._route_failed(server, why)
        return routes.next_check()

    @staticmethod
    def _reconnect_direct(sock):
        """A probing route's socket with no connection yet: disconnect and connect again (see
        direct.DirectRoutes.reconnect_due). Requires _io."""
        try:
            endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
            if endpoint:
                sock.disconnect(endpoint)
                sock.connect(endpoint)
        except zmq.ZMQError:
            pass

    def _close_direct(self, server):
        sock = self._direct_socks.pop(server, None)
        if sock is not None:
            try:
                self._poller.unregister(sock)
            except KeyError:
                pass
            sock.close(0)

    def _route_failed(self, server, why):
        """server's direct route failed: its socket closes, and the requests in flight on it go
        again through the broker, in their order, before anything later (the server's reply
        cache answers those that ran); route "direct": they fail, and so do those held for it.
        Requires _io."""
        failure = self._routes.fail(server, time.monotonic(), self._hb_interval)
        if not failure.known:
            return
        self._close_direct(server)
        with self._mu:
            lost = [s for s in self._slots.values()
                    if s.server == server and not s.done and s.sent and s.sent_direct]
            for slot in lost:
                slot.maybe_ran = True
                slot.lost_direct = True
                slot.retry_at = None
        lost.sort(key=lambda s: s.request_id)
        text = "server %016x: %s" % (server, why)
        if self.route == "direct":
            self._fail_slots([slot for _, slot in failure.held if slot is not None],
                             text + " (route=direct)")
            self._fail_slots(lost, text + " (route=direct); the call may or may not have run")
            return
        self._send_again([slot for slot in lost if slot.frames is not None])
        self._fail_slots([slot for slot in lost if slot.frames is None],
                         text + "; the call may or may not have run (retries are off)")

    def _fail_slots(self, slots, why):
        """Fails the slots: outcome_unknown where a copy may have run and the operation is not
        idempotent, server_unavailable otherwise."""
        if not slots:
            return
        with self._mu:
            for slot in slots:
                if slot.done:
                    continue
                slot.body = None
                if slot.maybe_ran and not slot.idempotent():
                    self._complete(slot, errors.OutcomeUnknown(why))
                else:
                    self._complete(slot, errors.ServerUnavailable(why))
            self._cv.notify_all()

    def _pump(self, done, until, read_first):
        """Socket work by the holder of the I/O lock until done() or until."""
        sock = self._sock
        if sock is None:
            return
        readable = read_first
        # The direct sockets to read: all of them on a first pass that reads, then those the poll
        # saw readable.
        direct_ready = list(self._direct_socks) if read_first else ()
        if direct_ready:
            # Answers come by the direct sockets now: the broker's is read on this first pass
            # only if it holds something (a receive that finds nothing raises, which costs more
            # than asking), or to find out whether it went silent.
            readable = (bool(sock.getsockopt(zmq.EVENTS) & zmq.POLLIN)
                        or time.monotonic() - self._last_heard > self._window)
        while True:
            self._flush()
            now = time.monotonic()
            if now >= self._next_hb:
                try:
                    sock.send_multipart([codec.header(codec.HEARTBEAT),
                                         codec.u64_frame(self.client_id)], zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
                self._next_hb = now + self._hb_interval
            got = False
            while readable:
                try:
                    msg = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                got = True
                self._last_heard = now
                instance = self._broker_instance
                self._dispatch(msg)
                if self._broker_silent:
                    # Heard again after its window: what we sent meanwhile, or what it held, may
                    # be lost (a broken connection loses what was in it). A restart was handled
                    # by _dispatch.
                    self._broker_silent = False
                    if instance == self._broker_instance:
                        self._resend_all("the broker is heard again")
                with self._mu:
                    if done():
                        return
            for server in direct_ready:
                for _ in range(256):
                    # Looked up each time: a message may change the routes.
                    dsock = self._direct_socks.get(server)
                    if dsock is None:
                        break
                    try:
                        msg = dsock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._dispatch_direct(server, msg)
                    with self._mu:
                        if done():
                            return
            if readable and not got and now - self._last_heard > self._window:
                text = ("the broker at %s has been silent for more than %d ms"
                        % (self.endpoint, self._window * 1000))
                if not self.options.retry:
                    self._fail_pending(errors.BrokerUnreachable(text), None)
                else:
                    # Requests wait for it until their deadlines, and are resent when it is back.
                    self._broker_silent = True
                self._last_heard = now  # each call after this gets its own full window
            route_check = float("inf")
            if self._routes is not None and len(self._routes):
                route_check = self._tend_routes(now)
            self._resend_due(now)
            with self._mu:
                if done():
                    return
            now = time.monotonic()
            if now >= until:
                return
            limit = min(until, self._next_hb, self._next_retry, route_check)
            wait_ms = max(0, int((limit - now) * 1000) + 1)
            events = dict(self._poller.poll(wait_ms))
            if self._wake_r in events:
                try:
                    os.read(self._wake_r, 4096)
                except (BlockingIOError, OSError):
                    pass
                self._flush()
                return  # someone else wants the socket: let them have a turn
            direct_ready = [server for server, dsock in self._direct_socks.items()
                            if dsock in events] if self._direct_socks else ()
            # Readable, or the poll timed out (a read says if the broker is silent).
            readable = sock in events or not direct_ready

    def _dispatch(self, msg):
        cmd = codec.parse_header(msg[0]) if msg else None
        if cmd == codec.NO_ROUTE:
            # No server registered for it now: it surely did not run; resend after a backoff.
            if len(msg) != 3:
                return
            rid = codec.parse_u64(msg[1])
            # outcome_unknown: it ran (its reply was held back at the broker, for a client that
            # did not read); a resend gets its answer from the server's reply cache.
            try:
                error = codec.decode_reply(msg[2], None).error
            except errors.Error:
                error = None
            ran = error is not None and error.code == errors.Errc.outcome_unknown
            with self._mu:
                slot = self._slots.get(rid)
                if slot is None or slot.done:
                    return
                if ran:
                    slot.maybe_ran = True
                if slot.lost_direct and not slot.idempotent():
                    # Its direct connection closed with a copy in flight, and the broker has no
                    # route to its server: its process is most likely gone (its lanes have no
                    # connection), perhaps after running it. Sent on, it would reach a process
                    # that replaces that one, whose reply cache does not know it: it could run
                    # twice.
                    slot.body = None
                    self._complete(slot, errors.OutcomeUnknown(
                        "server %016x: its direct connection closed and the broker has no route "
                        "to it; the call may or may not have run" % slot.server))
                elif not self.options.retry:
                    slot.body = msg[2]
                    self._complete(slot, None)
                else:
                    # Kept in case it may not wait: its answer is then this error.
                    if not slot.maybe_ran:
                        slot.body = msg[2]
                    self._retry_later(slot, time.monotonic())
                self._cv.notify_all()
        elif cmd in (codec.REPLY, codec.WELCOME, codec.LOOKUP_REPLY, codec.BROKER_INFO_REPLY):
            if len(msg) == 3:
                self._answer(msg, False)
        elif cmd == codec.LOCATE_REPLY:
            self._on_locate_reply(msg)
        elif cmd == codec.SERVER_DOWN:
            # [server id]([request ids]): the broker names the requests the process that went
            # had (those sent since may be a restarted one's); one that names none fails them all.
            server = codec.parse_u64(msg[1]) if len(msg) in (2, 3) else None
            only = None
            if len(msg) == 3:
                if len(msg[2]) % 8 != 0:
                    return
                only = set(struct.unpack(">%dQ" % (len(msg[2]) // 8), msg[2]))
            if server is not None:
                self._log_subscribed.discard(server)  # a restarted one is asked again
                # Those sent to it directly went to the process that went, whatever the list.
                self._fail_pending(errors.ServerUnavailable(
                    "server %016x went away while the call was in flight" % server), server, only)
                # Its direct endpoints went with it: located again on the next request.
                if self._routes is not None and self._routes.forget(server):
                    self._close_direct(server)
                self._servers.discard(server)
        elif cmd == codec.LOG_LINE and len(msg) == 8:
            if self.options.forward_logs is not None:
                _log_remote(msg)
        elif cmd == codec.DISCONNECT:
            # The broker does not know us (it restarted): say hello again.
            try:
                self._sock.send_multipart([codec.header(codec.HELLO),
                                           codec.u64_frame(next(self._next_rid)),
                                           codec.hello_body(self.client_id)], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        elif cmd == codec.HEARTBEAT and len(msg) == 2:
            # [instance]: a new one is a restarted broker, which must learn our servers again.
            instance = codec.parse_u64(msg[1])
            if instance and instance != self._broker_instance:
                restarted = self._broker_instance != 0
                self._broker_instance = instance
                if restarted and self.options.retry:
                    self._resend_all("the broker restarted")
                if restarted:
                    # A new broker learns again which servers we talk to, and each server that we
                    # are still here (CLIENT_AT): it releases the locks of clients that do not
                    # come back.
                    servers = set(self._servers)
                    if self._routes is not None:
                        servers.update(self._routes.not_dead())
                    for server in servers:
                        try:
                            self._sock.send_multipart(
                                [codec.header(codec.LOCATE), codec.u64_frame(server),
                                 codec.locate_body(server)], zmq.NOBLOCK)
                        except zmq.ZMQError:
                            pass
        # Other heartbeats: being heard is all they say.

    def _answer(self, msg, direct_path):
        """[hdr][request id][body]: the answer of a request, through the broker or directly."""
        rid = codec.parse_u64(msg[1])
        with self._mu:
            slot = self._slots.get(rid)
            # Late: its caller gave up. What it brings was counted for us: let go of it, once
            # (a second copy of the answer, from the reply cache, brings nothing new).
            late = slot is None and self._given_up.pop(rid, None) is not None
            if slot is not None:
                slot.body = msg[2]
                if direct_path and not slot.control:
                    self.direct_replies += 1
                self._complete(slot, None)
                self._cv.notify_all()
        if late:  # read with no lock held
            try:
                codec.decode_reply(msg[2], self._let_go)
            except errors.Error:
                pass

    def _complete(self, slot, error):
        """Marks a slot answered (requires _mu)."""
        slot.done = True
        slot.error = error
        self._slots.pop(slot.request_id, None)
        if slot.releases is not None and getattr(error, "code", None) in _GIVEN_UP:
            # Given up on: its answer may still come (_answer). The newest 1,024 are kept.
            self._given_up[slot.request_id] = True
            if len(self._given_up) > 1024:
                self._given_up.popitem(last=False)
        if slot.oneway:
            self._settle_batch(slot)
        if slot.callbacks:
            callbacks, slot.callbacks = slot.callbacks, None
            self._awaited -= 1
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    pass

    def cancel(self, slot):
        """Cancels the slot's request if it is not answered yet (whether it was not), as the C++
        Connection::cancel: it is answered Cancelled at once, never resent, its reply dropped
        if one comes, and a CANCEL follows the request to the broker, which routes it to the
        server's lane behind it, so that a server that has not started it never runs it
        (docs/WIRE.md "Cancelling"). A control request or a oneway batch is only answered."""
        with self._mu:
            if slot.done:
                return False
            self._complete(slot, errors.make_error(
                errors.Errc.cancelled,
                "request %d was cancelled by its caller (a server that had not started it never "
                "runs it)" % slot.request_id))
            self._cv.notify_all()
        if not slot.control and not slot.oneway and slot.server:
            try:
                self._submit_raw([codec.header(codec.CANCEL), codec.object_id_frame(slot.server, 0),
                                  codec.u64_frame(slot.request_id),
                                  codec.u64_frame(self.client_id)])
            except errors.Disconnected:
                pass  # nothing runs on a closed connection's behalf
        return True

    def on_done(self, slot, callback):
        """Calls callback() once the slot is answered, in the thread that answers it and with the
        connection's lock held: it must be quick and must not use the connection (asyncio's
        loop.call_soon_threadsafe is). Meanwhile a driver thread reads the socket for it, so
        the answer comes with nobody waiting. False (callback not kept): it is answered already."""
        with self._mu:
            if slot.done:
                return False
            if slot.callbacks is None:
                slot.callbacks = []
                self._awaited += 1
            slot.callbacks.append(callback)
            if self._driver is None and not self._closed:
                self._driver = threading.Thread(target=_driver_main,
                                                args=(weakref.ref(self), self._stop,
                                                      self._driver_kick),
                                                name="patro-await", daemon=True)
                self._driver.start()
        self._driver_kick.set()
        return True

    # --- oneway calls ---

    def hold(self, server, obj):
        """The claim of a reference a reply brought on its server's object: every proxy made
        from the reference shares it, and when the last goes the server is told (a oneway
        Release on the heartbeat thread's next turn), as libpatro's clients do."""
        return _Hold(self, server, obj)

    def _send_releases(self):
        """Sends the releases queued since the last turn, counted per object, in the oneway
        batches (without waiting for the window: a release is small, and the heartbeat thread
        must not block)."""
        counts = {}
        while True:
            try:
                key = self._released.popleft()
            except IndexError:
                break
            counts[key] = counts.get(key, 0) + 1
        for (server, obj), n in counts.items():
            try:
                self._append_oneway(server, obj, Op.Release, (), (n,), None, 0)
                self.released += 1
            except errors.Error:
                return  # closed: the server drops what a gone client held

    def send_oneway(self, server, obj, op, path=(), args=(), name=None, fence=0):
        """Queues a call that wants no answer in the open batch. Waits, driving the socket,
        while oneway_window calls are unacknowledged; Timeout if the window does not open within
        call_timeout. A failure on the server is counted, not raised (see flush_oneway)."""
        for a in args:
            codec.check_value(a)
        window = max(self.options.oneway_window, self.options.oneway_batch)
        if self._oneway_unacked + len(self._batch_calls) >= window:
            self._seal()
            if not self._drive(lambda: self._oneway_unacked < window,
                               time.monotonic() + self.options.call_timeout):
                raise errors.Timeout("the server acknowledged none of %d oneway calls in flight "
                                     "by the call's deadline" % window)
        self._append_oneway(server, obj, op, path, args, name, fence)

    def _append_oneway(self, server, obj, op, path, args, name, fence):
        opened = False
        with self._out_mu:
            if self._closed:
                raise errors.Disconnected("the connection is closed")
            if self._batch_calls and self._batch_target[0] != server:
                self._seal_locked()  # a batch goes to one server
            if not self._batch_calls:
                self._batch = flatbuffers.Builder(4096)
                self._batch_target = (server, obj)
                self._batch_opened = time.monotonic()
                opened = True
            self._batch_calls.append(codec.build_request(
                self._batch, next(self._next_rid), self.client_id, server, obj, op, path, args,
                name, CallContext.Void, self.options.call_timeout * 1000, fence))
            if (len(self._batch_calls) >= self.options.oneway_batch
                    or self._batch.Offset() >= self.options.oneway_batch_bytes):
                self._seal_locked()
                opened = False
        if opened:
            self._kick.set()  # the heartbeat thread sends it after oneway_delay

    def flush_oneway(self, timeout=None):
        """Sends the open batch and waits until every oneway call is acknowledged; returns how
        many failed on the server since the last flush (first_oneway_error says the first)."""
        timeout = self.options.call_timeout if timeout is None else timeout
        self._seal()
        if not self._drive(lambda: self._oneway_unacked == 0, time.monotonic() + timeout):
            raise errors.Timeout("oneway calls still unacknowledged after %g s" % timeout)
        with self._mu:
            failed, self._oneway_failed = self._oneway_failed, 0
            return failed

    @property
    def first_oneway_error(self):
        return self._oneway_first_error

    def _seal(self):
        with self._out_mu:
            self._seal_locked()

    def _seal_locked(self):
        """Sends the open batch (requires _out_mu)."""
        if not self._batch_calls:
            return
        n = len(self._batch_calls)
        body = codec.finish_batch(self._batch, self._batch_calls)
        server, obj = self._batch_target
        self._batch = None
        self._batch_calls = []
        rid = next(self._next_rid)
        frames = [codec.header(codec.REQUEST), codec.object_id_frame(server, obj),
                  codec.u64_frame(rid), body]
        slot = _Slot(rid, server, None, time.monotonic() + self.options.call_timeout,
                     frames if self.options.retry else None)
        slot.oneway = n
        with self._mu:
            if self._closed:
                return
            self._slots[rid] = slot
            self._oneway_unacked += n
        self._submit_raw(frames, slot)

    def _settle_batch(self, slot):
        """A batch's acknowledgement came, or its error (requires _mu)."""
        self._oneway_unacked -= min(self._oneway_unacked, slot.oneway)
        failed, first = 0, ""
        if slot.error is not None:
            failed, first = slot.oneway, str(slot.error)
        else:
            try:
                r = codec.decode_reply(slot.body, self._plain_ref)
                if r.error is not None:
                    failed, first = slot.oneway, str(r.error)
                elif len(r.results) >= 3:
                    failed, first = max(int(r.results[1]), 0), str(r.results[2])
            except errors.Error as e:
                failed, first = slot.oneway, str(e)
        if failed:
            if not self._oneway_first_error:
                self._oneway_first_error = first
            self._oneway_failed += failed
        slot.body = None

    def _fail_pending(self, error, server, only=None):
        """Fails the requests in flight (to server, if not None); only, if not None: just the
        request ids in it (SERVER_DOWN's list)."""
        with self._mu:
            now = time.monotonic()
            for slot in list(self._slots.values()):
                if slot.done or (server is not None and slot.server != server):
                    continue
                # Sent directly, it went to the process that went, whatever the list says; so did
                # a copy lost with its direct connection and resent through the broker, which
                # has no route for it (the lanes of a process that died have no connection) until
                # a restart replaces that process: sent there, it would run a second time.
                if (only is not None and slot.request_id not in only and not slot.sent_direct
                        and not slot.lost_direct):
                    continue
                unavailable = isinstance(error, errors.ServerUnavailable)
                if unavailable and slot.idempotent() and slot.frames is not None:
                    # Its server went away: an idempotent request may go to it again once it is
                    # back (a server that keeps its id across a restart, or only re-registered).
                    slot.maybe_ran = True
                    self._retry_later(slot, now)
                    continue
                e = error
                if unavailable and not slot.idempotent():
                    e = errors.OutcomeUnknown(error.message + "; the call may or may not have run")
                self._complete(slot, e)
            self._cv.notify_all()

    def _time_out(self, slot):
        """A request whose deadline passed: its error; the broker's no-route answer where no
        copy can have run (server_unavailable). Requires _mu."""
        if slot.body is not None and not slot.maybe_ran:
            self._complete(slot, None)
            return
        slot.body = None
        self._complete(slot, errors.Timeout(
            "no answer to request %d by its deadline" % slot.request_id))

    def _expire(self, now):
        with self._mu:
            late = [s for s in self._slots.values() if not s.done and s.deadline <= now]
            for slot in late:
                self._time_out(slot)
            if late:
                self._cv.notify_all()

    # --- resending (C++ Connection::retry_later, resend_all, resend_due) ---

    def _retry_later(self, slot, now):
        """A request the broker had no route for (slot.body: its answer), or whose server went
        away: schedules a resend after a backoff, or completes it if it may not wait. Requires
        _mu."""
        grace = 2 * self._window  # no route within twice the broker's window: not coming back
        if slot.no_route_since is None:
            slot.no_route_since = now
        wait = slot.backoff or self.options.retry_backoff
        if (slot.frames is None or now + wait >= slot.deadline
                or now - slot.no_route_since > grace):
            error = None
            if slot.maybe_ran and not slot.idempotent():
                slot.body = None
                error = errors.OutcomeUnknown("its server went away and did not come back; the "
                                              "call may or may not have run")
            elif slot.body is None or slot.maybe_ran:
                slot.body = None
                error = errors.ServerUnavailable("no server took the request (its server is not "
                                                 "registered)")
            self._complete(slot, error)  # else the broker's answer: server_unavailable
            return
        slot.retry_at = now + wait
        slot.backoff = min(wait * 2, self._hb_interval)
        if slot.retry_at < self._next_retry:
            self._next_retry = slot.retry_at

    def _resend_all(self, why):
        """The broker restarted or came back: every request in flight may have been lost; sends
        them all again, in the order they were made. Requires _io."""
        with self._mu:
            # Those sent directly did not pass the broker: its fault lost none of them; nor those
            # not sent yet (queued, or held for their direct route).
            lost = [s for s in self._slots.values()
                    if not s.done and s.frames is not None and s.sent and not s.sent_direct]
            for slot in lost:
                slot.maybe_ran = True
                slot.retry_at = None
        if lost:
            lost.sort(key=lambda s: s.request_id)
            self._resend(lost)

    def _resend_due(self, now):
        """Resends the requests whose backoff ran out. Requires _io."""
        if now < self._next_retry:
            return
        due = []
        with self._mu:
            nxt = float("inf")
            for slot in self._slots.values():
                if slot.done or slot.retry_at is None:
                    continue
                if slot.retry_at <= now:
                    slot.retry_at = None
                    due.append(slot)
                elif slot.retry_at < nxt:
                    nxt = slot.retry_at
            self._next_retry = nxt
        if due:
            due.sort(key=lambda s: s.request_id)
            self._resend(due)

    def _resend(self, slots):
        """Sends the slots again with the same request ids, after what was queued before them.
        Requires _io."""
        self._flush()
        self._send_again(slots)

    def _send_again(self, slots):
        """Sends the slots again through the broker, with the same request ids and their next
        attempt numbers. Requires _io."""
        sock = self._sock
        for slot in slots:
            with self._mu:
                if slot.done:
                    continue
                slot.attempts += 1
                attempt = slot.attempts
                slot.sent = True
                slot.sent_direct = False
            frames = slot.frames if slot.control else slot.frames + [codec.u64_frame(attempt)]
            self.retries += 1
            if sock is None:
                continue
            try:
                _send(sock, frames)
            except zmq.ZMQError:
                pass  # the request is resent again, or times out at its deadline

    def heartbeat_step(self):
        """One pass by the heartbeat thread: send a oneway batch that waited its delay, heartbeat
        if due, read what came, expire slots. Returns seconds until the open batch is due, or
        None."""
        due = None
        if self._released:
            self._send_releases()
        if self._batch_calls:
            left = self._batch_opened + self.options.oneway_delay - time.monotonic()
            if left <= 0:
                self._seal()
            else:
                due = left
        if self._closed or not self._io.acquire(blocking=False):
            return due
        try:
            now = time.monotonic()
            self._pump(lambda: False, now, True)
            # Calls whose waiter is not waiting (futures nobody asks) time out here.
            self._expire(now)
        finally:
            self._release_io()
        return due


class _Hold:
    """One reference's claim on its server's object (see Connection.hold). Refers to its
    connection weakly: a proxy alive after its connection closed releases nothing."""

    __slots__ = ("_conn", "_id")

    def __init__(self, conn, server, obj):
        self._conn = weakref.ref(conn)
        self._id = (server, obj)

    def __del__(self):
        conn = self._conn()
        if conn is not None and not conn._closed:
            conn._released.append(self._id)  # deque.append: safe from any thread, no lock


def _driver_main(ref, stop, kick):
    """Reads the socket while answers are awaited by callbacks (Connection.on_done), in turns of
    at most 50 ms, so a caller that wants the socket gets it between them; expires their slots at
    their deadlines. Holds its connection only weakly while idle."""
    while not stop.is_set():
        conn = ref()
        if conn is None:
            return
        kick.clear()
        with conn._mu:
            busy = conn._awaited > 0 and not conn._closed
        if busy:
            try:
                conn._drive(lambda: conn._awaited == 0 or conn._closed,
                            time.monotonic() + 0.05)
                conn._expire(time.monotonic())
            except Exception:
                pass
        del conn
        if not busy:
            kick.wait(0.5)


def _heartbeat_main(ref, stop):
    while not stop.is_set():
        conn = ref()
        if conn is None:
            return
        wait = conn._hb_interval / 2
        kick = conn._kick
        kick.clear()
        try:
            due = conn.heartbeat_step()
            if due is not None:
                wait = min(wait, due)
        except Exception:
            pass
        del conn
        kick.wait(wait)

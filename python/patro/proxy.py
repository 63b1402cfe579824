"""Proxies to served objects, and how to get them: from a config a server wrote, or from a name in
the broker's registry."""
import asyncio
import json
import os
import re
import time

from . import _codec as codec
from . import curve
from . import errors
from .connection import CallContext, ClientOptions, Connection, Op, _Slot

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")


class Config:
    """What a client needs to reach served objects: broker endpoints and object references. The
    text is one JSON object, as C++ ``patro::Config::to_string()`` / ``to_file()`` write it.
    With CURVE it carries the broker's public key (``broker_key``), and where the operator asked
    for one a client key pair (``client_key``, a patro.curve.KeyPair; the file is then a
    secret). ``route`` ("auto", "direct", "broker"; "" for none) says how its clients send
    requests (the direct path), unless a client's own options say otherwise."""

    def __init__(self, brokers, objects, broker_key="", client_key=None, route=""):
        self.brokers = list(brokers)
        self.objects = list(objects)  # dicts: server, object, type_name, reftype
        self.broker_key = broker_key
        self.client_key = client_key or curve.KeyPair()
        self.route = route

    @classmethod
    def parse(cls, text):
        text = text.strip()
        if not text.startswith("{"):
            raise errors.BadConfig("config text must be one JSON object, as Config::to_string() "
                                   "writes it")
        try:
            c = json.loads(text)
        except ValueError as e:
            raise errors.BadConfig("config does not parse: %s" % e) from None
        if not isinstance(c, dict):
            raise errors.BadConfig("config text must be one JSON object")
        version = c.get("version", 1)
        if version != 1:
            raise errors.BadConfig("config version %r is not supported (this is version 1)"
                                   % (version,))
        brokers = c.get("brokers") or []
        if not isinstance(brokers, list) or not all(isinstance(b, str) for b in brokers):
            raise errors.BadConfig("config brokers must be a list of strings")
        brokers = [b for b in brokers if b]
        if not brokers:
            raise errors.BadConfig("config names no broker address")
        objects = []
        for o in c.get("objects") or []:
            if not isinstance(o, dict) or not isinstance(o.get("id"), str):
                raise errors.BadConfig("config object without an id")
            if not _HEX32.match(o["id"]):
                raise errors.BadConfig("an object id is 32 hex digits, got '%s'" % o["id"][:40])
            objects.append({"server": int(o["id"][:16], 16), "object": int(o["id"][16:], 16),
                            "type_name": str(o.get("type_name", "")),
                            "reftype": str(o.get("reftype", ""))})
        broker_key = c.get("broker_key") or ""
        if broker_key and not curve.is_curve_key(broker_key):
            raise errors.BadConfig("config broker_key is not a Z85 CURVE key")
        client_key = curve.KeyPair(c.get("client_public_key") or "",
                                   c.get("client_secret_key") or "")
        if not client_key.empty() and not (curve.is_curve_key(client_key.public_key)
                                           and curve.is_curve_key(client_key.secret_key)):
            raise errors.BadConfig("config client key pair is not two Z85 CURVE keys")
        route = c.get("route") or ""
        if route not in ("", "auto", "direct", "broker"):
            raise errors.BadConfig("config route '%s' is not one of auto, direct, broker"
                                   % str(route)[:40])
        return cls(brokers, objects, broker_key, client_key, route)

    @classmethod
    def from_file(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                return cls.parse(f.read())
        except OSError as e:
            raise errors.BadConfig("cannot read config file '%s': %s"
                                   % (path, e.strerror)) from None

    def to_string(self):
        c = {"brokers": self.brokers, "objects": [
            {"id": "%016x%016x" % (o["server"], o["object"]), "type_name": o["type_name"],
             "reftype": o["reftype"]} for o in self.objects]}
        if self.broker_key:
            c["broker_key"] = self.broker_key
        if not self.client_key.empty():
            c["client_public_key"] = self.client_key.public_key
            c["client_secret_key"] = self.client_key.secret_key
        if self.route:
            c["route"] = self.route
        return json.dumps(c, separators=(",", ":"))

    def options(self, options):
        """options with this config's CURVE keys where they name none, and its route where they
        say "auto" (C++ get_proxies)."""
        changes = {}
        if options.route == "auto" and self.route:
            changes["route"] = self.route
        if not options.broker_key and self.broker_key:
            changes["broker_key"] = self.broker_key
        if (not options.client_secret_key and not options.curve_key
                and not self.client_key.empty()):
            changes["client_public_key"] = self.client_key.public_key
            changes["client_secret_key"] = self.client_key.secret_key
        return options.replace(**changes) if changes else options


def _key(k):
    if isinstance(k, bool) or not isinstance(k, (str, int)):
        raise errors.TypeMismatch("a key is a str (hash) or an int (array index), not %s"
                                  % type(k).__name__)
    if isinstance(k, int) and not codec.INT64_MIN <= k <= codec.INT64_MAX:
        raise errors.InvalidArgument("index %d is outside Patro's 64-bit range" % k)
    return k


def _first(results):
    return results[0] if results else None


class Proxy:
    """A served object, or an element below one (a path). Reads and writes go to the server.

    ``p[k]`` reads the element (a container comes back as a proxy to it), ``p[k] = v`` writes it,
    ``del p[k]`` erases it; ``len(p)``, ``iter(p)`` (a hash's keys, an array's items), ``k in p``.
    ``p.at(k1, k2, ...)`` is a proxy to the element at that path: one round trip however deep.
    """

    __slots__ = ("_conn", "_server", "_object", "_path", "_type_name", "_reftype", "_fence",
                 "_hold", "__weakref__")

    def __init__(self, conn, server, obj, path=(), type_name="", reftype="", fence=0, hold=None):
        self._conn = conn
        # The claim of the reference this proxy came from (None: from a config or a name, never
        # released); proxies made from this one share it.
        self._hold = hold
        self._server = server
        self._object = obj
        self._path = tuple(path)
        self._type_name = type_name
        self._reftype = reftype
        self._fence = fence

    # --- identity ---

    @property
    def connection(self):
        return self._conn

    @property
    def id(self):
        """(server id, object id)."""
        return (self._server, self._object)

    @property
    def path(self):
        return self._path

    def _patro_ref(self):
        return self._server, self._object, self._path

    def __eq__(self, other):
        return (isinstance(other, Proxy) and other._conn is self._conn
                and other.id == self.id and other._path == self._path)

    def __hash__(self):
        return hash((id(self._conn), self._server, self._object, self._path))

    def __repr__(self):
        path = "".join("[%d]" % e if isinstance(e, int) else "{%s}" % e for e in self._path)
        kind = self._reftype or "?" if not self._path else "element"
        return "<patro.Proxy %s %016x%016x%s>" % (kind, self._server, self._object, path)

    def _make_ref(self, server, obj, type_name, reftype, hold):
        return Proxy(self._conn, server, obj, (), type_name, reftype, hold=hold)

    def _run(self, op, args=(), name=None, context=CallContext.Scalar, timeout=None, path=None):
        return self._conn.call(self._server, self._object, op,
                               self._path if path is None else path, args, name, context, timeout,
                               self._fence, self._make_ref)

    def at(self, *keys):
        """A proxy to the element at self's path plus keys (str: hash key, int: array index)."""
        return Proxy(self._conn, self._server, self._object, self._path + tuple(map(_key, keys)),
                     fence=self._fence, hold=self._hold)

    def fenced(self, token):
        """A proxy whose mutating calls carry a fencing token (refused once a newer lock grant
        exists)."""
        return Proxy(self._conn, self._server, self._object, self._path, self._type_name,
                     self._reftype, token, self._hold)

    # --- containers ---

    def get(self, timeout=None):
        """The element's value (a scalar's value; a container's own reference)."""
        return _first(self._run(Op.Get, timeout=timeout).results)

    def set(self, value, timeout=None):
        self._run(Op.Set, (value,), timeout=timeout)

    def erase(self):
        """Deletes the element; returns its old value (None if there was none)."""
        return _first(self._run(Op.Erase).results)

    def exists(self):
        return bool(_first(self._run(Op.Exists).results))

    def size(self):
        return _first(self._run(Op.Size).results)

    def keys(self):
        return self._run(Op.Keys, context=CallContext.List).results

    def values(self):
        return self._run(Op.Values, context=CallContext.List).results

    def items(self):
        return list(zip(self.keys(), self.values()))

    def push(self, *items):
        """Appends items to an array; returns its new size."""
        return _first(self._run(Op.Push, items).results)

    def unshift(self, *items):
        return _first(self._run(Op.Unshift, items).results)

    def pop(self):
        return _first(self._run(Op.Pop).results)

    def shift(self):
        return _first(self._run(Op.Shift).results)

    def splice(self, offset, length=None, *replacement):
        """Perl's splice: removes length items at offset (None: to the end), inserts the
        replacement; returns the removed items."""
        args = (offset,) if length is None and not replacement else (offset, length) + replacement
        return self._run(Op.Splice, args, context=CallContext.List).results

    def clear(self):
        self._run(Op.Clear)

    def resize(self, size):
        self._run(Op.Resize, (size,))

    def add(self, delta):
        """Atomically adds delta to a number; returns the new value."""
        return _first(self._run(Op.Add, (delta,)).results)

    def ref(self):
        """Perl's ref: HASH, ARRAY, SCALAR, CODE, GLOB or a class name."""
        r = self._run(Op.Describe).results
        return r[0] if r else ""

    def reftype(self):
        """Perl's reftype: the basic type."""
        r = self._run(Op.Describe).results
        return r[1] if len(r) > 1 else ""

    def __getitem__(self, key):
        return self.at(key).get()

    def __setitem__(self, key, value):
        self.at(key).set(value)

    def __delitem__(self, key):
        self.at(key).erase()

    def __len__(self):
        return self.size()

    def _basic_type(self):
        if self._path:
            return self.reftype()
        if not self._reftype:
            self._reftype = self.reftype()
        return self._reftype

    def __iter__(self):
        t = self._basic_type()
        if t == "HASH":
            return iter(self.keys())
        if t == "ARRAY":
            return iter(self.values())
        raise errors.TypeMismatch("cannot iterate over a %s (only a HASH or an ARRAY)" % (t or
                                                                                         "scalar"))

    def __contains__(self, item):
        t = self._basic_type()
        if t == "HASH":
            return self.at(item).exists()
        return item in self.values()

    def __bool__(self):
        return True

    # --- served objects and callables ---

    def call(self, method, *args, timeout=None):
        """Calls a method of a served object in scalar context; returns its result."""
        return self._call(method, args, False, timeout)

    def call_list(self, method, *args, timeout=None):
        """Calls a method in list context (Perl's wantarray); returns a list."""
        return self._call(method, args, True, timeout)

    def __call__(self, *args, timeout=None):
        """Calls a served callable (a patro::Code) in scalar context."""
        return self._call(None, args, False, timeout)

    def call_callable_list(self, *args, timeout=None):
        return self._call(None, args, True, timeout)

    def _call(self, method, args, list_context, timeout):
        reply = self._run(Op.Call, args, method,
                          CallContext.List if list_context else CallContext.Scalar, timeout)
        for index, value in reply.changed.items():
            if index < len(args) and isinstance(args[index], codec.Box):
                args[index].value = value
        return reply.results if list_context else _first(reply.results)

    def operator(self, op, *operand, swapped=False):
        """A served object's operator, by Perl's overload name: p.operator("+", 5),
        p.operator("+=", 5), p.operator("neg"). An assignment operator answers None when the
        object changed in place (or a proxy to the new object it made)."""
        args = (operand[0], bool(swapped)) if operand else ()
        return _first(self._run(Op.Operator, args, op).results)

    def convert(self, kind):
        """A served object's conversion: '""' (string), "0+" (number) or "bool"."""
        return _first(self._run(Op.Convert, (), kind).results)

    # --- served file handles (patro::FileHandle) ---

    def file(self, op, *args, list_context=False):
        """A file handle operation by its Perl name (print, printf, write, readline, read, getc,
        eof, seek, tell, truncate, flush, binmode, stat...)."""
        r = self._run(Op.File, args, op, CallContext.List if list_context else CallContext.Scalar)
        return r.results if list_context else _first(r.results)

    def print(self, *items):
        return bool(self.file("print", *items))

    def printf(self, fmt, *args):
        return bool(self.file("printf", fmt, *args))

    def readline(self):
        """The next line with its newline, or None at the end."""
        return self.file("readline")

    def readlines(self):
        return self.file("readline", list_context=True)

    def read(self, n):
        return self.file("read", int(n))

    def eof(self):
        return bool(self.file("eof"))

    def seek(self, position, whence=0):
        return bool(self.file("seek", int(position), int(whence)))

    def tell(self):
        return self.file("tell")

    def can(self, method):
        return bool(_first(self._run(Op.Can, name=method).results))

    def isa(self, class_name):
        """Perl's isa: whether this names a served object of the patro::Class registered as
        class_name (false for containers, code, handles and plain values). A server older than
        the Isa operation raises unsupported."""
        return bool(_first(self._run(Op.Isa, name=class_name).results))

    # --- oneway calls ---

    def send(self, method, *args):
        """Calls a method without waiting for, or getting, an answer: the call goes in a batch
        with the connection's other oneway calls (see patro.await_oneway), before any later
        request of the connection."""
        self._conn.send_oneway(self._server, self._object, Op.Call, self._path, args, method,
                               self._fence)

    # --- asynchronous calls ---

    def get_async(self):
        """Starts a get; returns a Future."""
        return self._start(Op.Get, ())

    def call_async(self, method, *args):
        return self._start(Op.Call, args, method)

    def _start(self, op, args, name=None, context=CallContext.Scalar):
        slot = self._conn.start(self._server, self._object, op, self._path, args, name, context,
                                None, self._fence)
        return Future(self, slot, context == CallContext.List)


class Future:
    """The answer to an asynchronous call, once it comes. Awaitable in asyncio: ``await fut``
    in a coroutine gives result() without blocking the event loop (a thread of the connection
    reads the socket meanwhile and hands the answer to the loop with call_soon_threadsafe); the
    call's deadline still bounds it (Timeout)."""

    __slots__ = ("_proxy", "_slot", "_list")

    def __init__(self, proxy, slot, list_context):
        self._proxy = proxy
        self._slot = slot
        self._list = list_context

    def done(self):
        return self._slot.done

    def wait(self, timeout=None):
        """Waits up to timeout seconds (None: the call's deadline); whether it was answered."""
        return self._proxy._conn.wait(self._slot, timeout)

    def result(self, timeout=None):
        """The call's result; raises its error, or Timeout."""
        if not self._proxy._conn.wait(self._slot, timeout):
            raise errors.Timeout("no answer within %s s" % timeout)
        r = self._proxy._conn.results(self._slot, self._proxy._make_ref).results
        return r if self._list else _first(r)

    def cancel(self):
        """Cancels the call if its answer is not here yet, and says whether it did (C++
        Future::cancel): result() then raises Cancelled, an await wakes with it, and a server
        that has not started the call never runs it. A call answered already is left alone."""
        return self._proxy._conn.cancel(self._slot)

    # --- Calls on the result before it is here (promise pipelining; C++ Future::async_call):
    # each is sent at once, and the server runs it on this call's result when that exists, in
    # the order they were made. The result must be a reference to an object of the same server;
    # anything else fails them with TypeMismatch, and an error of this call reaches them all
    # (and the calls made on theirs). Once the answer is here, they are plain calls on it. ---

    def call(self, method, *args):
        """A method of the result, in scalar context: a Future, sent at once."""
        return self._pipeline(Op.Call, args, method)

    def call_list(self, method, *args):
        """A method of the result, in list context."""
        return self._pipeline(Op.Call, args, method, CallContext.List)

    def get_async(self):
        """The result's value (a served scalar's value, a container's reference)."""
        return self._pipeline(Op.Get, ())

    def _pipeline(self, op, args, name=None, context=CallContext.Scalar):
        conn = self._proxy._conn
        list_context = context == CallContext.List
        made_on = ("request #%d, which this call was made on the result of, "
                   % self._slot.request_id)
        if not self._slot.done:
            slot = conn.start(self._slot.server, 0, op, (), args, name, context, None, 0,
                              pipeline_of=self._slot.request_id)
            return Future(self._proxy, slot, list_context)
        # Answered: a plain call on the result, or the error the server would give.
        try:
            r = conn.results(self._slot, self._proxy._make_ref).results
        except errors.Error as e:
            message = e.message
            if "which this call was made on the result of" not in message:
                message = made_on + "failed: " + message
            return self._failed(e.code, message, e.remote_type, e.error_number, list_context)
        first = _first(r)
        if not isinstance(first, Proxy):
            return self._failed(errors.Errc.type_mismatch,
                                made_on + "returned %r, not a reference to an object: a call "
                                "cannot run on its result" % (first,), "", 0, list_context)
        return first._start(op, args, name, context)

    def _failed(self, code, message, remote_type, error_number, list_context):
        slot = _Slot(0, self._slot.server, Op.Call, time.monotonic())
        slot.done = True
        slot.error = errors.make_error(code, message, remote_type, error_number)
        return Future(self._proxy, slot, list_context)

    def __await__(self):
        if not self._slot.done:
            loop = asyncio.get_running_loop()
            answered = loop.create_future()

            def settle():
                if not answered.done():
                    answered.set_result(None)

            def on_done():  # the thread that answered the slot, under the connection's lock
                try:
                    loop.call_soon_threadsafe(settle)
                except RuntimeError:
                    pass  # the loop was closed meanwhile

            if self._proxy._conn.on_done(self._slot, on_done):
                yield from answered.__await__()
        return self.result(0)


def _options(options, overrides):
    options = options or ClientOptions()
    return options.replace(**overrides) if overrides else options


def get_proxies(config, options=None, **overrides):
    """Proxies to the objects of a config: a Config, config text, or the name of a file holding
    it. One connection (one monitor) serves them all. Options: a ClientOptions, or its fields as
    keyword arguments (call_timeout=5, ...)."""
    if isinstance(config, (str, os.PathLike)) and not isinstance(config, Config):
        text = os.fspath(config)
        if text.lstrip().startswith("{"):
            config = Config.parse(text)
        elif os.path.exists(text):
            config = Config.from_file(text)
        else:
            raise errors.BadConfig("'%s' is neither config text nor a readable file" % text[:80])
    elif not isinstance(config, Config):
        raise errors.BadConfig("a config is a Config, config text or a file name")
    conn = Connection(config.brokers, config.options(_options(options, overrides))).connect()
    return [Proxy(conn, o["server"], o["object"], (), o["type_name"], o["reftype"])
            for o in config.objects]


def get_proxy(broker, name, options=None, **overrides):
    """A proxy to the object registered as name at the broker (its client endpoint). CURVE:
    the options broker_key, client_public_key/client_secret_key or curve_key, or
    $PATRO_BROKER_KEY and $PATRO_CURVE_KEY."""
    conn = Connection([broker], _options(options, overrides)).connect()
    try:
        b = conn.lookup(name)
    except Exception:
        conn.close()
        raise
    if b is None:
        conn.close()
        raise errors.NotFound("no object is registered as '%s' at the broker %s" % (name, broker))
    return Proxy(conn, b["server"], b["object"], (), b["type_name"], b["reftype"])


def connect(broker, options=None, **overrides):
    """A bare connection to a broker (for proxy_for, lookups and broker_info)."""
    return Connection([broker], _options(options, overrides)).connect()


def proxy_for(conn, name):
    """A proxy to a registered name on an existing connection (so it shares its monitor)."""
    b = conn.lookup(name)
    if b is None:
        raise errors.NotFound("no object is registered as '%s' at the broker %s"
                              % (name, conn.endpoint))
    return Proxy(conn, b["server"], b["object"], (), b["type_name"], b["reftype"])


def ref(p):
    return p.ref()


def reftype(p):
    return p.reftype()


def await_oneway(p, timeout=None):
    """Sends p's connection's open batch of oneway calls and waits until the server acknowledged
    every one; returns how many failed there since the last time (0: all ran)."""
    return p.connection.flush_oneway(timeout)

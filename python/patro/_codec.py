"""The Patro wire, version 1, in Python: frames, and the FlatBuffers bodies of schemas/*.fbs
through the classes flatc generates at build time (see docs/WIRE.md).

FlatBuffers' Python runtime has no Verifier: every body read here is checked for its file
identifier, tables, vtables and vector lengths are checked against the buffer, what its values
decode to is bounded as libpatro bounds it (_Budget), and any failure to read one becomes
Error(bad_message) rather than an exception of the runtime's own.
"""
import collections
import struct

import flatbuffers

from . import errors
from ._schema import constants, wire

VERSION = 1

# Commands, the fourth byte of the header frame (HELLO = 1, ...; schemas/wire.json): one module
# constant each, by its wire name.
COMMANDS = {wire_name: value for wire_name, value, _, _ in constants.COMMANDS}
globals().update(COMMANDS)
_FIRST_COMMAND = min(COMMANDS.values())
_LAST_COMMAND = max(COMMANDS.values())

_HEADERS = {c: bytes((ord("P"), ord("T"), VERSION, c)) for c in COMMANDS.values()}

REQUEST_ID = b"PTRQ"
REPLY_ID = b"PTRP"
CONTROL_ID = b"PTCT"
BATCH_ID = b"PTRB"
STORED_ID = b"PTSV"

Op = wire.Op
Kind = wire.Kind
CallContext = wire.CallContext

# The operations' classification, libpatro's op table (schemas/wire.json's "ops"), by wire.Op.
OpInfo = collections.namedtuple("OpInfo", "op name handler idempotent mutating oneway")
OPS = {getattr(Op, op): OpInfo(getattr(Op, op), name, handler, idem, mut, ow)
       for op, name, handler, idem, mut, ow in constants.OPS}
# Operations that may be retried blindly (libpatro's idempotent()).
IDEMPOTENT = frozenset(op for op, info in OPS.items() if info.idempotent)

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
UINT32_MAX = (1 << 32) - 1

_U64 = struct.Struct(">Q")


def header(command):
    return _HEADERS[command]


def parse_header(frame):
    """The command of a Patro v1 header frame, or None."""
    if len(frame) != 4 or frame[0] != 0x50 or frame[1] != 0x54 or frame[2] != VERSION:
        return None
    c = frame[3]
    return c if _FIRST_COMMAND <= c <= _LAST_COMMAND else None


def u64_frame(v):
    return _U64.pack(v)


def parse_u64(frame):
    return _U64.unpack(frame)[0] if len(frame) == 8 else None


def object_id_frame(server, obj):
    return _U64.pack(server) + _U64.pack(obj)


def has_identifier(buf, ident):
    return len(buf) >= 8 and bytes(buf[4:8]) == ident


class Box:
    """An argument a served method or callable may change (Perl's aliased @_; C++ std::ref):
    pass Box(x) and read box.value after the call."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value

    def __repr__(self):
        return "Box(%r)" % (self.value,)


# --- Values ---

def _bad_type(v):
    return errors.TypeMismatch("cannot send a %s to a Patro server (None, bool, int, float, str, "
                               "bytes, list, tuple, dict with str keys, or a proxy)"
                               % type(v).__name__)


def check_value(v, depth=0):
    """Raises what encode_value would for v, building nothing (a oneway call is checked before it
    enters the shared builder of its batch, so a refused value never leaves half a table)."""
    if depth > 100:
        raise errors.InvalidArgument("a value nested more than 100 levels deep")
    if isinstance(v, Box):
        v = v.value
    if v is None or isinstance(v, (bool, float, str, bytes, bytearray, memoryview)):
        return
    if isinstance(v, int):
        if not INT64_MIN <= v <= INT64_MAX:
            raise errors.InvalidArgument("the integer %d is outside Patro's 64-bit range" % v)
    elif isinstance(v, (list, tuple)):
        for e in v:
            check_value(e, depth + 1)
    elif isinstance(v, dict):
        for k, e in v.items():
            if not isinstance(k, str):
                raise errors.TypeMismatch("a hash key must be a str, not %s" % type(k).__name__)
            check_value(e, depth + 1)
    elif not hasattr(v, "_patro_ref"):
        raise _bad_type(v)


def encode_value(b, v, depth=0):
    """Builds a wire Value for a Python value into builder b; returns its offset."""
    if depth > 100:
        raise errors.InvalidArgument("a value nested more than 100 levels deep")
    if isinstance(v, Box):
        v = v.value
    s = items = keys = ref = None
    t = type(v)
    if v is None:
        kind = Kind.Null
    elif t is bool:
        kind = Kind.Bool
    elif t is int or (isinstance(v, int) and not isinstance(v, bool)):
        if not INT64_MIN <= v <= INT64_MAX:
            raise errors.InvalidArgument("the integer %d is outside Patro's 64-bit range" % v)
        kind = Kind.Int
    elif t is float or isinstance(v, float):
        kind = Kind.Double
    elif t is str or isinstance(v, str):
        kind = Kind.String
        s = b.CreateString(v)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        kind = Kind.Bytes
        s = b.CreateByteVector(bytes(v))
    elif isinstance(v, (list, tuple)):
        kind = Kind.Array
        items = _encode_vector(b, [encode_value(b, e, depth + 1) for e in v])
    elif isinstance(v, dict):
        kind = Kind.Hash
        ks, vs = [], []
        for k, e in v.items():
            if not isinstance(k, str):
                raise errors.TypeMismatch("a hash key must be a str, not %s" % type(k).__name__)
            ks.append(b.CreateString(k))
            vs.append(encode_value(b, e, depth + 1))
        keys = _encode_vector(b, ks)
        items = _encode_vector(b, vs)
    elif hasattr(v, "_patro_ref"):
        kind = Kind.Ref
        ref = encode_ref(b, *v._patro_ref())
    else:
        raise _bad_type(v)
    wire.ValueStart(b)
    wire.ValueAddKind(b, kind)
    if kind == Kind.Bool:
        wire.ValueAddB(b, v)
    elif kind == Kind.Int:
        wire.ValueAddI(b, v)
    elif kind == Kind.Double:
        wire.ValueAddD(b, v)
    elif kind == Kind.String:
        wire.ValueAddS(b, s)
    elif kind == Kind.Bytes:
        wire.ValueAddBytes(b, s)
    if items is not None:
        wire.ValueAddItems(b, items)
    if keys is not None:
        wire.ValueAddKeys(b, keys)
    if ref is not None:
        wire.ValueAddRef(b, ref)
    return wire.ValueEnd(b)


def _encode_vector(b, offsets):
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def encode_path(b, path):
    elems = []
    for e in path:
        if isinstance(e, str):
            k = b.CreateString(e)
            wire.PathElemStart(b)
            wire.PathElemAddKey(b, k)
        else:
            wire.PathElemStart(b)
            wire.PathElemAddIndex(b, e)
            wire.PathElemAddIsIndex(b, True)
        elems.append(wire.PathElemEnd(b))
    return _encode_vector(b, elems)


def encode_ref(b, server, obj, path):
    p = encode_path(b, path) if path else None
    wire.RefStart(b)
    wire.RefAddServer(b, server)
    wire.RefAddObject(b, obj)
    if p is not None:
        wire.RefAddPath(b, p)
    return wire.RefEnd(b)


def build_request(b, request_id, client_id, server, obj, op, path=(), args=(), name=None,
                  context=CallContext.Scalar, timeout_ms=0, fence=0, pipeline_of=0):
    """Builds a Request table into builder b (unfinished); returns its offset. pipeline_of: the
    request id whose result the call runs on (docs/WIRE.md "Pipelined calls"), or 0."""
    p = encode_path(b, path) if path else None
    a = _encode_vector(b, [encode_value(b, v) for v in args]) if args else None
    n = b.CreateString(name) if name else None
    wire.RequestStart(b)
    wire.RequestAddRequestId(b, request_id)
    wire.RequestAddClientId(b, client_id)
    wire.RequestAddTimeoutMs(b, max(0, min(int(timeout_ms), UINT32_MAX)))
    wire.RequestAddServer(b, server)
    wire.RequestAddObject(b, obj)
    wire.RequestAddOp(b, op)
    if p is not None:
        wire.RequestAddPath(b, p)
    if a is not None:
        wire.RequestAddArgs(b, a)
    if n is not None:
        wire.RequestAddName(b, n)
    wire.RequestAddContext(b, context)
    if fence:
        wire.RequestAddFenceToken(b, fence)
    if pipeline_of:
        wire.RequestAddPipelineOf(b, pipeline_of)
    return wire.RequestEnd(b)


def encode_request(request_id, client_id, server, obj, op, path=(), args=(), name=None,
                   context=CallContext.Scalar, timeout_ms=0, fence=0, pipeline_of=0):
    """A finished Request body (bytes)."""
    b = flatbuffers.Builder(128)
    b.Finish(build_request(b, request_id, client_id, server, obj, op, path, args, name, context,
                           timeout_ms, fence, pipeline_of), file_identifier=REQUEST_ID)
    return bytes(b.Output())


def finish_batch(b, calls):
    """A finished Batch body of the Request tables built into b."""
    vec = _encode_vector(b, calls)
    wire.BatchStart(b)
    wire.BatchAddRequests(b, vec)
    b.Finish(wire.BatchEnd(b), file_identifier=BATCH_ID)
    return bytes(b.Output())


_LE64 = struct.Struct("<Q")
_LE32 = struct.Struct("<I")
_LE16 = struct.Struct("<H")
_LEI32 = struct.Struct("<i")


class RequestTemplate:
    """A Request encoded once (by encode_request) whose request id and timeout are rewritten in
    place for each use: a call repeated with the same scalar arguments (get, size, pop, lock,
    take(5000)...) costs no FlatBuffers building after the first."""

    __slots__ = ("body", "rid_at", "timeout_at")

    def __init__(self, body):
        pos = _LE32.unpack_from(body, 0)[0]
        vtable = pos - _LEI32.unpack_from(body, pos)[0]
        vtable_size = _LE16.unpack_from(body, vtable)[0]

        def field(i):  # where field i of the Request table is, from its vtable
            o = 4 + 2 * i
            at = _LE16.unpack_from(body, vtable + o)[0] if o < vtable_size else 0
            if at == 0:
                raise ValueError("the template lacks field %d" % i)
            return pos + at

        self.rid_at = field(0)  # request_id: ulong
        self.timeout_at = field(2)  # timeout_ms: uint
        self.body = body

    def make(self, request_id, timeout_ms):
        b = bytearray(self.body)
        _LE64.pack_into(b, self.rid_at, request_id)
        _LE32.pack_into(b, self.timeout_at, max(0, min(int(timeout_ms), UINT32_MAX)))
        return bytes(b)


def encode_control(kind, build):
    """A finished Control body whose union member build(b) makes (returns its offset)."""
    b = flatbuffers.Builder(128)
    body = build(b)
    wire.ControlStart(b)
    wire.ControlAddBodyType(b, kind)
    wire.ControlAddBody(b, body)
    b.Finish(wire.ControlEnd(b), file_identifier=CONTROL_ID)
    return bytes(b.Output())


def hello_body(client_id):
    def build(b):
        wire.HelloStart(b)
        wire.HelloAddClientId(b, client_id)
        return wire.HelloEnd(b)
    return encode_control(wire.ControlBody.Hello, build)


def locate_body(server):
    def build(b):
        wire.LocateStart(b)
        wire.LocateAddServer(b, server)
        return wire.LocateEnd(b)
    return encode_control(wire.ControlBody.Locate, build)


def lookup_body(name):
    def build(b):
        n = b.CreateString(name)
        wire.LookupStart(b)
        wire.LookupAddName(b, n)
        return wire.LookupEnd(b)
    return encode_control(wire.ControlBody.Lookup, build)


def broker_info_body():
    def build(b):
        wire.BrokerInfoRequestStart(b)
        return wire.BrokerInfoRequestEnd(b)
    return encode_control(wire.ControlBody.BrokerInfoRequest, build)


# --- Reading ---

def _check_vector(tab, field_offset, elem_size):
    """The length of a vector field, checked against the buffer."""
    o = tab.Offset(field_offset)
    if o == 0:
        return 0, 0
    n = tab.VectorLen(o)
    start = tab.Vector(o)
    if start + n * elem_size > len(tab.Bytes):
        raise errors.BadMessage("a vector runs past the end of the message")
    return n, o


def _str(x):
    return x.decode("utf-8", "replace") if isinstance(x, (bytes, bytearray)) else (x or "")


class _Budget:
    """What one body may decode to, as libpatro bounds it: no more values (nodes) than the body
    has 4-byte words (+64), and no more string and bytes payload than the body has bytes, counting
    a part the body shares (one sub-table reached from many places) each time it is reached. An
    honest sender writes every value and string once, so only a forged body reaches the bounds,
    which would otherwise let a kilobyte expand without end."""

    __slots__ = ("nodes", "bytes")

    def __init__(self, body_size):
        self.nodes = body_size // 4 + 64
        self.bytes = body_size

    def node(self):
        self.nodes -= 1
        if self.nodes < 0:
            raise errors.BadMessage("a value with more parts than its message can hold (a shared "
                                    "part reached too often)")

    def payload(self, n):
        self.bytes -= n
        if self.bytes < 0:
            raise errors.BadMessage("a value with more bytes than its message can hold (a shared "
                                    "part reached too often)")


def decode_value_generated(v, make_ref, depth=0, budget=None):
    """A Python value for a wire Value; make_ref(server, object, type_name, reftype) makes a
    proxy for a reference. budget: a _Budget for the whole body (else one for v's buffer)."""
    if v is None:
        return None
    if depth > 200:
        raise errors.BadMessage("a value nested more than 200 levels deep")
    if budget is None:
        budget = _Budget(len(v._tab.Bytes))
    budget.node()
    kind = v.Kind()
    if kind == Kind.Null:
        return None
    if kind == Kind.Bool:
        return v.B()
    if kind == Kind.Int:
        return v.I()
    if kind == Kind.Double:
        return v.D()
    if kind == Kind.String:
        s = v.S()
        budget.payload(len(s or b""))
        return _str(s)
    if kind == Kind.Bytes:
        n, o = _check_vector(v._tab, 14, 1)
        budget.payload(n)
        if n == 0:
            return b""
        start = v._tab.Vector(o)
        return bytes(v._tab.Bytes[start:start + n])
    if kind == Kind.Array:
        n, _ = _check_vector(v._tab, 16, 4)
        return [decode_value_generated(v.Items(i), make_ref, depth + 1, budget) for i in range(n)]
    if kind == Kind.Hash:
        n, _ = _check_vector(v._tab, 18, 4)
        m, _ = _check_vector(v._tab, 16, 4)
        if n != m:
            raise errors.BadMessage("a hash value has %d keys but %d values" % (n, m))
        out = {}
        for i in range(n):
            k = v.Keys(i)
            budget.payload(len(k or b""))
            out[_str(k)] = decode_value_generated(v.Items(i), make_ref, depth + 1, budget)
        return out
    if kind == Kind.Ref:
        r = v.Ref()
        if r is None:
            raise errors.BadMessage("a reference value without a ref")
        return make_ref(r.Server(), r.Object(), _str(r.TypeName()), _str(r.Reftype()))
    raise errors.BadMessage("unknown value kind %d" % kind)


class Reply:
    """A decoded Reply body: ok, results, changed (index -> value), or the error."""

    __slots__ = ("request_id", "ok", "results", "changed", "error")

    def __eq__(self, other):
        return (isinstance(other, Reply) and self.request_id == other.request_id
                and self.ok == other.ok and self.results == other.results
                and self.changed == other.changed and repr(self.error) == repr(other.error))


def decode_reply_generated(body, make_ref):
    try:
        if not has_identifier(body, REPLY_ID):
            raise errors.BadMessage("a reply without the PTRP identifier")
        _check_root(body)
        r = wire.Reply.GetRootAs(body, 0)
        budget = _Budget(len(body))
        out = Reply()
        out.request_id = r.RequestId()
        out.ok = r.Status() == wire.Status.Ok
        out.results = []
        out.changed = {}
        out.error = None
        if not out.ok:
            code = r.ErrorCode()
            text = _str(r.ErrorText())
            try:
                prefix = errors.Errc(code).name + ": "
            except ValueError:
                prefix = None
            if prefix and text.startswith(prefix):
                text = text[len(prefix):]
            out.error = errors.make_error(code, text, _str(r.ErrorType()), r.ErrorNumber())
            return out
        n, _ = _check_vector(r._tab, 8, 4)
        out.results = [decode_value_generated(r.Results(i), make_ref, 0, budget)
                       for i in range(n)]
        n, _ = _check_vector(r._tab, 16, 4)
        for i in range(n):
            c = r.ChangedArgs(i)
            out.changed[c.Index()] = decode_value_generated(c.Value(), make_ref, 0, budget)
        return out
    except errors.Error:
        raise
    except Exception as e:  # the runtime read past the buffer, or bad UTF-8, or deep recursion
        raise errors.BadMessage("a reply that cannot be read: %s" % e) from None


def decode_control(body):
    """(union type, table) of a Control body."""
    try:
        if not has_identifier(body, CONTROL_ID):
            raise errors.BadMessage("a control message without the PTCT identifier")
        _check_root(body)
        c = wire.Control.GetRootAs(body, 0)
        t = c.BodyType()
        table = c.Body()
        if table is None:
            raise errors.BadMessage("a control message without a body")
        cls = {wire.ControlBody.Welcome: wire.Welcome,
               wire.ControlBody.LookupReply: wire.LookupReply,
               wire.ControlBody.BrokerInfoReply: wire.BrokerInfoReply,
               wire.ControlBody.LocateReply: wire.LocateReply}.get(t)
        if cls is None:
            raise errors.BadMessage("an unexpected control message (type %d)" % t)
        obj = cls()
        obj.Init(table.Bytes, table.Pos)
        _fields(body, table.Pos)
        return t, _Checked(obj)
    except errors.Error:
        raise
    except Exception as e:
        raise errors.BadMessage("a control message that cannot be read: %s" % e) from None


class _Checked:
    """A table of a control message whose fields are read when asked for (the generated classes
    read lazily): a field that cannot be read (an offset out of the message) raises
    Error(bad_message), never the runtime's struct.error or IndexError; a table it leads to is
    checked the same way."""

    __slots__ = ("_t",)

    def __init__(self, table):
        self._t = table

    def __getattr__(self, name):
        f = getattr(self._t, name)
        if not callable(f):
            return f

        def read(*args):
            try:
                r = f(*args)
                if hasattr(r, "_tab"):
                    _fields(r._tab.Bytes, r._tab.Pos)
                    return _Checked(r)
                if isinstance(r, (bytes, bytearray)):
                    r.decode("utf-8")
                return r
            except errors.Error:
                raise
            except Exception as e:
                raise errors.BadMessage("a control message that cannot be read (%s): %s"
                                        % (name, e)) from None
        return read


def decode_locate_reply(body):
    """(server id, endpoints, server key) of a LOCATE_REPLY's body: the server's lanes' direct
    endpoints in lane order ("" for a lane without one; none: no direct path) and, under CURVE,
    the server's public key (Z85; "" in plaintext)."""
    t, lr = decode_control(body)
    if t != wire.ControlBody.LocateReply:
        raise errors.BadMessage("the answer to a locate was not a locate reply")
    n = lr.EndpointsLength()
    if n * 4 > len(body):
        raise errors.BadMessage("a locate reply's endpoints run past the end of the message")
    endpoints = [_str(lr.Endpoints(i)) for i in range(n)]
    return lr.Server(), endpoints, _str(lr.ServerKey())


def decode_binding(nb):
    return {"name": _str(nb.Name()), "server": nb.Server(), "object": nb.Object(),
            "type_name": _str(nb.TypeName()), "reftype": _str(nb.Reftype())}


# --- The reader the client uses: replies read in place with struct ---
#
# The FlatBuffers Python runtime spends some 1.5 us per field access; a reply is read on every
# call, so the client reads Reply and Value tables directly. The field slots below are those of
# schemas/reply.fbs and value.fbs (4 + 2 x the field's position); decode_reply_generated, which
# reads through the generated classes, is the reference the tests compare this reader with.

_R_I32 = struct.Struct("<i").unpack_from
_R_U32 = struct.Struct("<I").unpack_from
_R_U16 = struct.Struct("<H").unpack_from
_R_U8 = struct.Struct("<B").unpack_from
_R_I64 = struct.Struct("<q").unpack_from
_R_U64 = struct.Struct("<Q").unpack_from
_R_F64 = struct.Struct("<d").unpack_from


class _Bad(Exception):
    pass


def _fields(buf, pos):
    """The field offsets of the table at pos: a function slot -> absolute position, or 0. The
    table and its vtable are checked as FlatBuffers' verifier does: inside the message, aligned,
    the vtable at least 4 bytes and its fields inside the table."""
    if pos < 8 or pos + 4 > len(buf) or pos % 4:
        raise _Bad("a table outside the message")
    vt = pos - _R_I32(buf, pos)[0]
    if vt < 0 or vt + 4 > len(buf) or vt % 2:
        raise _Bad("a vtable outside the message")
    size, table_size = _R_U16(buf, vt)[0], _R_U16(buf, vt + 2)[0]
    if size < 4 or size % 2 or vt + size > len(buf) or table_size < 4 or \
            pos + table_size > len(buf):
        raise _Bad("a vtable runs past the message")

    def at(slot):
        if slot >= size:
            return 0
        o = _R_U16(buf, vt + slot)[0]
        if o >= table_size:
            raise _Bad("a field outside its table")
        return pos + o if o else 0
    return at


def _check_root(body):
    """The root table of a body is where a table can be: after the root offset and identifier."""
    if len(body) < 12:
        raise errors.BadMessage("a message too short to hold a table")
    _fields(body, _R_U32(body, 0)[0])


def _ref(buf, at):
    """Follows a uoffset stored at at."""
    target = at + _R_U32(buf, at)[0]
    if target >= len(buf):
        raise _Bad("an offset past the message")
    return target


def _vector(buf, at, elem_size):
    """(first element's position, length) of the vector a field at at refers to."""
    if not at:
        return 0, 0
    start = _ref(buf, at)
    n = _R_U32(buf, start)[0]
    if start + 4 + n * elem_size > len(buf):
        raise _Bad("a vector runs past the message")
    return start + 4, n


def _string(buf, at):
    if not at:
        return ""
    first, n = _vector(buf, at, 1)
    return bytes(buf[first:first + n]).decode("utf-8", "replace")


def _value(buf, pos, make_ref, depth, budget):
    if depth > 200:
        raise _Bad("a value nested more than 200 levels deep")
    budget.node()
    f = _fields(buf, pos)
    at = f(4)
    kind = _R_U8(buf, at)[0] if at else Kind.Null
    if kind == Kind.Int:
        at = f(8)
        return _R_I64(buf, at)[0] if at else 0
    if kind == Kind.String:
        first, n = _vector(buf, f(12), 1)
        budget.payload(n)
        return bytes(buf[first:first + n]).decode("utf-8", "replace")
    if kind == Kind.Null:
        return None
    if kind == Kind.Bool:
        at = f(6)
        return bool(_R_U8(buf, at)[0]) if at else False
    if kind == Kind.Double:
        at = f(10)
        return _R_F64(buf, at)[0] if at else 0.0
    if kind == Kind.Bytes:
        first, n = _vector(buf, f(14), 1)
        budget.payload(n)
        return bytes(buf[first:first + n])
    if kind == Kind.Array:
        first, n = _vector(buf, f(16), 4)
        return [_value(buf, _ref(buf, first + 4 * i), make_ref, depth + 1, budget)
                for i in range(n)]
    if kind == Kind.Hash:
        kfirst, nk = _vector(buf, f(18), 4)
        vfirst, nv = _vector(buf, f(16), 4)
        if nk != nv:
            raise errors.BadMessage("a hash value has %d keys but %d values" % (nk, nv))
        out = {}
        for i in range(nk):
            k = _ref(buf, kfirst + 4 * i)
            klen = _R_U32(buf, k)[0]
            if k + 4 + klen > len(buf):
                raise _Bad("a key runs past the message")
            budget.payload(klen)
            key = bytes(buf[k + 4:k + 4 + klen]).decode("utf-8", "replace")
            out[key] = _value(buf, _ref(buf, vfirst + 4 * i), make_ref, depth + 1, budget)
        return out
    if kind == Kind.Ref:
        at = f(20)
        if not at:
            raise errors.BadMessage("a reference value without a ref")
        r = _fields(buf, _ref(buf, at))
        server = _R_U64(buf, r(4))[0] if r(4) else 0
        obj = _R_U64(buf, r(6))[0] if r(6) else 0
        return make_ref(server, obj, _string(buf, r(8)), _string(buf, r(10)))
    raise errors.BadMessage("unknown value kind %d" % kind)


def decode_reply(body, make_ref):
    """A Reply body, read in place (see above); Error(bad_message) if it cannot be read."""
    try:
        if len(body) < 8 or body[4:8] != REPLY_ID:
            raise errors.BadMessage("a reply without the PTRP identifier")
        buf = body
        if len(buf) < 12:
            raise _Bad("a message too short to hold a table")
        f = _fields(buf, _R_U32(buf, 0)[0])
        budget = _Budget(len(buf))
        out = Reply()
        at = f(4)
        out.request_id = _R_U64(buf, at)[0] if at else 0
        at = f(6)
        out.ok = (_R_U8(buf, at)[0] if at else 0) == wire.Status.Ok
        out.results = []
        out.changed = {}
        out.error = None
        if not out.ok:
            at = f(10)
            code = _R_I32(buf, at)[0] if at else 0
            text = _string(buf, f(12))
            try:
                prefix = errors.Errc(code).name + ": "
            except ValueError:
                prefix = None
            if prefix and text.startswith(prefix):
                text = text[len(prefix):]
            at = f(18)
            out.error = errors.make_error(code, text, _string(buf, f(14)),
                                          _R_I32(buf, at)[0] if at else 0)
            return out
        first, n = _vector(buf, f(8), 4)
        out.results = [_value(buf, _ref(buf, first + 4 * i), make_ref, 0, budget)
                       for i in range(n)]
        first, n = _vector(buf, f(16), 4)
        for i in range(n):
            c = _fields(buf, _ref(buf, first + 4 * i))
            index = _R_U32(buf, c(4))[0] if c(4) else 0
            out.changed[index] = (_value(buf, _ref(buf, c(6)), make_ref, 0, budget)
                                  if c(6) else None)
        return out
    except errors.Error:
        raise
    except Exception as e:  # struct.error, bad UTF-8 handled above, recursion...
        raise errors.BadMessage("a reply that cannot be read: %s" % e) from None

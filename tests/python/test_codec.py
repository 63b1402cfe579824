"""The client's reply reader against the reference reader through flatc's generated classes, and
against damaged replies (no server needed)."""
import random

import flatbuffers
import pytest

import patro
from patro import _codec as codec

wire = codec.wire


def reply_body(results=(), error=None, changed=None):
    b = flatbuffers.Builder(256)
    if error is None:
        vs = [codec.encode_value(b, v) for v in results]
        vec = codec._encode_vector(b, vs)
        cs = None
        if changed:
            offs = []
            for index, v in changed.items():
                val = codec.encode_value(b, v)
                wire.ChangedArgStart(b)
                wire.ChangedArgAddIndex(b, index)
                wire.ChangedArgAddValue(b, val)
                offs.append(wire.ChangedArgEnd(b))
            cs = codec._encode_vector(b, offs)
        wire.ReplyStart(b)
        wire.ReplyAddRequestId(b, 77)
        wire.ReplyAddResults(b, vec)
        if cs is not None:
            wire.ReplyAddChangedArgs(b, cs)
    else:
        code, text, typ, errno = error
        t = b.CreateString(text)
        ty = b.CreateString(typ)
        wire.ReplyStart(b)
        wire.ReplyAddRequestId(b, 78)
        wire.ReplyAddStatus(b, wire.Status.Error)
        wire.ReplyAddErrorCode(b, code)
        wire.ReplyAddErrorText(b, t)
        wire.ReplyAddErrorType(b, ty)
        wire.ReplyAddErrorNumber(b, errno)
    b.Finish(wire.ReplyEnd(b), file_identifier=codec.REPLY_ID)
    return bytes(b.Output())


class FakeRef:
    def __init__(self, server, obj, path=()):
        self.server, self.obj, self.path = server, obj, path

    def _patro_ref(self):
        return self.server, self.obj, self.path


VALUES = [None, True, False, 0, -1, (1 << 63) - 1, -(1 << 63), 2.5, float("inf"), "", "ünïcode",
          b"", b"\x00\x01\xff", [], {}, [1, [2, [3, None]], {"a": b"x"}], {"k": {"l": [True]}},
          FakeRef(5, 6), [FakeRef((1 << 64) - 1, 1)]]


def make_ref(server, obj, type_name, reftype):
    return ("ref", server, obj, type_name, reftype)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_reader_matches_generated_classes(value):
    body = reply_body([value, 42], changed={0: value, 3: "c"})
    fast = codec.decode_reply(body, make_ref)
    ref = codec.decode_reply_generated(body, make_ref)
    assert fast == ref
    assert fast.request_id == 77 and fast.ok and fast.results[1] == 42 and fast.changed[3] == "c"


def test_error_replies():
    body = reply_body(error=(15, "remote_exception: boom", "std::runtime_error", 28))
    for decode in (codec.decode_reply, codec.decode_reply_generated):
        r = decode(body, make_ref)
        assert not r.ok and isinstance(r.error, patro.RemoteException)
        assert r.error.message == "boom" and r.error.remote_type == "std::runtime_error"
        assert r.error.error_number == 28
    unknown = codec.decode_reply(reply_body(error=(999, "x", "", 0)), make_ref)
    assert isinstance(unknown.error, patro.Internal)


def test_damaged_replies_are_bad_messages():
    rng = random.Random(16)
    good = reply_body([{"a": [1, "two", b"3"], "b": FakeRef(1, 2)}, "tail"], changed={1: [5]})
    outcomes = set()
    for i in range(3000):
        body = bytearray(good)
        if i % 3 == 0:
            body = body[:rng.randrange(len(body))]
        else:
            for _ in range(rng.randrange(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        try:
            codec.decode_reply(bytes(body), make_ref)
            outcomes.add("read")
        except patro.BadMessage:
            outcomes.add("bad")
    assert "bad" in outcomes


def test_request_template():
    args = (None, True, 5, 2.5, "s", b"b")
    t = codec.RequestTemplate(codec.encode_request(1, 9, 3, 4, codec.Op.Call, ("k", 2), args,
                                                   "m", codec.CallContext.List, 1, 7))
    for rid, timeout in ((2, 0), (1 << 63, 30000), ((1 << 64) - 1, (1 << 32) - 1)):
        r = wire.Request.GetRootAs(t.make(rid, timeout), 0)
        assert (r.RequestId(), r.TimeoutMs(), r.ClientId(), r.Server(), r.Object()) == (
            rid, timeout, 9, 3, 4)
        assert r.Op() == codec.Op.Call and r.Name() == b"m" and r.FenceToken() == 7
        assert r.Context() == codec.CallContext.List and r.ArgsLength() == len(args)
        assert [r.Path(i).Key() or r.Path(i).Index() for i in range(r.PathLength())] == [b"k", 2]
        got = [codec.decode_value_generated(r.Args(i), make_ref) for i in range(len(args))]
        assert got == list(args)


def _shared_levels(levels, leaf="x" * 30):
    """A reply whose value reuses one sub-table at each level: [[t, t], [t, t]]... 2**levels
    leaves in a message of about 30 bytes per level (issue: a 1.2 KB reply hung the client)."""
    b = flatbuffers.Builder(1024)
    top = codec.encode_value(b, leaf)
    for _ in range(levels):
        items = codec._encode_vector(b, [top, top])
        wire.ValueStart(b)
        wire.ValueAddKind(b, codec.Kind.Array)
        wire.ValueAddItems(b, items)
        top = wire.ValueEnd(b)
    vec = codec._encode_vector(b, [top])
    wire.ReplyStart(b)
    wire.ReplyAddRequestId(b, 9)
    wire.ReplyAddResults(b, vec)
    b.Finish(wire.ReplyEnd(b), file_identifier=codec.REPLY_ID)
    return bytes(b.Output())


def test_a_shared_sub_table_counts_each_time_it_is_reached():
    body = _shared_levels(40)
    assert len(body) < 2000
    for decode in (codec.decode_reply, codec.decode_reply_generated):
        with pytest.raises(patro.BadMessage, match="shared part"):
            decode(body, make_ref)
    # A few levels stay within what the message may hold: read as the tree they mean.
    small = codec.decode_reply(_shared_levels(2, "y"), make_ref)
    assert small.results == [[["y", "y"], ["y", "y"]]]
    # Strings reached again count their bytes again: 4 levels of a 1,000-byte string is 16 KB.
    with pytest.raises(patro.BadMessage, match="more bytes"):
        codec.decode_reply(_shared_levels(4, "z" * 1000), make_ref)


def test_honest_large_replies_are_within_the_bounds():
    # The smallest values on the wire (None: 8 bytes each) and payload-heavy ones both fit.
    many = [None] * 20000 + [{"k%d" % i: i for i in range(2000)}, b"\xff" * 100000, "s" * 5000]
    body = reply_body(many, changed={1: [None] * 5000})
    for decode in (codec.decode_reply, codec.decode_reply_generated):
        r = decode(body, make_ref)
        assert r.results == many and r.changed == {1: [None] * 5000}


def test_garbage_after_an_identifier_is_not_a_success():
    for garbage in (b"", b"\x00" * 8, b"\xff" * 20, bytes(range(40))):
        body = b"\x00\x00\x00\x00PTRP" + garbage
        for decode in (codec.decode_reply, codec.decode_reply_generated):
            with pytest.raises(patro.BadMessage):
                decode(body, make_ref)


def _lookup_reply(name="n"):
    b = flatbuffers.Builder(256)
    n = b.CreateString(name)
    t = b.CreateString("Counter")
    wire.NameBindingStart(b)
    wire.NameBindingAddName(b, n)
    wire.NameBindingAddServer(b, 5)
    wire.NameBindingAddObject(b, 6)
    wire.NameBindingAddTypeName(b, t)
    binding = wire.NameBindingEnd(b)
    wire.LookupReplyStart(b)
    wire.LookupReplyAddFound(b, True)
    wire.LookupReplyAddBinding(b, binding)
    lr = wire.LookupReplyEnd(b)
    wire.ControlStart(b)
    wire.ControlAddBodyType(b, wire.ControlBody.LookupReply)
    wire.ControlAddBody(b, lr)
    b.Finish(wire.ControlEnd(b), file_identifier=codec.CONTROL_ID)
    return bytes(b.Output())


def test_control_messages_with_bad_offsets_are_bad_messages():
    good = _lookup_reply()
    t, lr = codec.decode_control(good)
    assert t == wire.ControlBody.LookupReply and lr.Found()
    assert codec.decode_binding(lr.Binding())["object"] == 6
    # Every 4-byte word of the message set to an offset far outside it, in turn: each read gives
    # bad_message or a value, never struct.error or IndexError.
    outcomes = set()
    for at in range(0, len(good) - 3):
        for word in (0x7FFFFFF0, 0xFFFFFFF0, len(good) - 2):
            body = bytearray(good)
            body[at:at + 4] = word.to_bytes(4, "little")
            try:
                t, lr = codec.decode_control(bytes(body))
                if t == wire.ControlBody.LookupReply and lr.Found() and lr.Binding() is not None:
                    codec.decode_binding(lr.Binding())
                outcomes.add("read")
            except patro.BadMessage:
                outcomes.add("bad")
    assert "bad" in outcomes
    with pytest.raises(patro.BadMessage):
        codec.decode_control(b"\x00\x00\x00\x00PTCT" + b"\x01" * 16)

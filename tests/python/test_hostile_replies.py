"""The Python client against a broker that answers with forged bodies (a pyzmq ROUTER speaking the
wire): each forged answer is a clean bad_message, in bounded time and memory, never a raw
struct.error, a hang, or a success."""
import threading
import time

import flatbuffers
import pytest
import zmq

import patro
from patro import _codec as codec
from patro.connection import Op
from test_codec import _lookup_reply, _shared_levels

wire = codec.wire


def welcome(corrupt_at=None):
    b = flatbuffers.Builder(128)
    wire.WelcomeStart(b)
    wire.WelcomeAddHeartbeatMs(b, 1000)
    wire.WelcomeAddLiveness(b, 3)
    wire.WelcomeAddMaxMessageSize(b, 16 << 20)
    wire.WelcomeAddInstance(b, 7)
    w = wire.WelcomeEnd(b)
    wire.ControlStart(b)
    wire.ControlAddBodyType(b, wire.ControlBody.Welcome)
    wire.ControlAddBody(b, w)
    b.Finish(wire.ControlEnd(b), file_identifier=codec.CONTROL_ID)
    body = bytearray(b.Output())
    if corrupt_at is not None:
        # The Control table's offset to its body: far past the message.
        body[corrupt_at:corrupt_at + 4] = (0x7FFFFF00).to_bytes(4, "little")
    return bytes(body)


def _body_offset_field(body):
    """Where the Control table keeps its uoffset to the union's table."""
    pos = int.from_bytes(body[0:4], "little")
    vt = pos - int.from_bytes(body[pos:pos + 4], "little", signed=True)
    o = int.from_bytes(body[vt + 4 + 2 * 1:vt + 4 + 2 * 1 + 2], "little")  # field 1: body
    return pos + o


class FakeBroker:
    """A ROUTER on loopback that answers HELLO with welcome_body, LOOKUP with lookup_body and
    every REQUEST with reply_body, until stopped."""

    def __init__(self, welcome_body, lookup_body=None, reply_body=None):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = "tcp://127.0.0.1:%d" % port
        self.bodies = {codec.HELLO: (codec.WELCOME, welcome_body),
                       codec.LOOKUP: (codec.LOOKUP_REPLY, lookup_body),
                       codec.REQUEST: (codec.REPLY, reply_body)}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stop.is_set():
            if not poller.poll(50):
                continue
            msg = self.sock.recv_multipart()
            cmd = codec.parse_header(msg[1]) if len(msg) > 1 else None
            answer = self.bodies.get(cmd)
            if answer is None or answer[1] is None:
                continue
            rid = msg[3] if cmd == codec.REQUEST else msg[2]
            self.sock.send_multipart([msg[0], codec.header(answer[0]), rid, answer[1]])

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def fake():
    made = []

    def make(*args):
        made.append(FakeBroker(*args))
        return made[-1]
    yield make
    for f in made:
        f.close()


def test_a_welcome_with_an_offset_out_of_range(fake):
    good = welcome()
    broker = fake(welcome(corrupt_at=_body_offset_field(good)))
    with pytest.raises(patro.BrokerUnreachable) as e:
        patro.connect(broker.endpoint, connect_timeout=2)
    assert "bad_message" in str(e.value)


def test_a_lookup_reply_with_an_offset_out_of_range(fake):
    good = _lookup_reply("x")
    bad = bytearray(good)
    bad[_body_offset_field(good):_body_offset_field(good) + 4] = (0x7FFFFF00).to_bytes(4, "little")
    broker = fake(welcome(), bytes(bad))
    conn = patro.connect(broker.endpoint, connect_timeout=2, call_timeout=2)
    try:
        with pytest.raises(patro.BadMessage):
            conn.lookup("x")
    finally:
        conn.close()


@pytest.mark.parametrize("reply", [b"\x00\x00\x00\x00PTRP" + bytes(range(40)),
                                   b"\x00\x00\x00\x00PTRP", _shared_levels(40)],
                         ids=["garbage", "identifier only", "shared 40 levels"])
def test_forged_replies_are_bad_messages(fake, reply):
    broker = fake(welcome(), None, reply)
    conn = patro.connect(broker.endpoint, connect_timeout=2, call_timeout=5)
    try:
        p = patro.Proxy(conn, 1, 2)
        t0 = time.monotonic()
        with pytest.raises(patro.BadMessage):
            p._run(Op.Get, (), timeout=5)
        assert time.monotonic() - t0 < 5  # refused, not read for ever
    finally:
        conn.close()

"""CURVE keys: ZeroMQ's encryption and authentication between a client and the broker, as C++
``patro/curve.hpp`` reads and writes them. Keys are Z85 text (40 characters); key files are the
certificates ``patro keygen FILE`` writes (``public-key = "..."``, ``secret-key = "..."``).

A client's keys come from, in this order (C++ ``resolve_curve``): its options (``broker_key``,
``client_public_key``/``client_secret_key``, ``curve_key`` a key file), the config
(``broker_key``, and a client pair where the operator put one there), ``$PATRO_BROKER_KEY`` (Z85 or
a file holding one) and the file ``$PATRO_CURVE_KEY`` names; with a broker key and no pair, a fresh
pair per connection (accepted only by a broker without a client allow list).
"""
import os
import re

import zmq

from . import errors

_Z85 = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_KEYED = re.compile(r'^\s*(public-key|secret-key)\s*=\s*"([^"]*)"\s*$')


class KeyPair:
    """A CURVE key pair, Z85 text (C++ ``patro::CurveKeyPair``)."""

    __slots__ = ("public_key", "secret_key")

    def __init__(self, public_key="", secret_key=""):
        self.public_key = public_key
        self.secret_key = secret_key

    def empty(self):
        return not self.secret_key

    def __repr__(self):
        return "<patro.curve.KeyPair %s>" % (self.public_key[:8] or "empty")


def available():
    """Whether this libzmq was built with CURVE."""
    return bool(zmq.has("curve"))


def is_curve_key(text):
    """Whether text is a Z85 CURVE key (40 characters of ZeroMQ's Z85 alphabet)."""
    return isinstance(text, str) and _Z85.match(text) is not None


def keypair():
    """A fresh key pair; Unsupported where libzmq has no CURVE."""
    if not available():
        raise errors.Unsupported("this libzmq has no CURVE (built without libsodium)")
    public, secret = zmq.curve_keypair()
    return KeyPair(public.decode("ascii"), secret.decode("ascii"))


def _slurp(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise errors.InvalidArgument("cannot read %s '%s': %s" % (what, path, e.strerror)) from None


def _keyed(text):
    out = {}
    for line in text.splitlines():
        m = _KEYED.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def read_key_file(path):
    """The pair in a file ``patro keygen`` (or CZMQ's zcert) wrote; InvalidArgument saying what
    is wrong."""
    k = _keyed(_slurp(path, "key file"))
    pair = KeyPair(k.get("public-key", ""), k.get("secret-key", ""))
    if not is_curve_key(pair.public_key) or not is_curve_key(pair.secret_key):
        raise errors.InvalidArgument("key file '%s' holds no key pair (public-key and secret-key "
                                     "lines; patro keygen writes one)" % path)
    return pair


def read_public_key(z85_or_file):
    """A public key given as Z85 text, or as a file that holds one (a key file or its .pub)."""
    # A path may look like a key (40 characters of Z85): a file that exists wins.
    if is_curve_key(z85_or_file) and not os.path.exists(z85_or_file):
        return z85_or_file
    text = _slurp(z85_or_file, "public key file")
    for line in text.splitlines():
        m = _KEYED.match(line)
        if m and m.group(1) == "public-key" and is_curve_key(m.group(2)):
            return m.group(2)
        if is_curve_key(line.strip()):
            return line.strip()
    raise errors.InvalidArgument("'%s' is neither a Z85 public key (40 characters) nor a file "
                                 "holding one" % z85_or_file)


def key_from_environment():
    """The pair in the file $PATRO_CURVE_KEY names; an empty pair when it is unset."""
    path = os.environ.get("PATRO_CURVE_KEY", "")
    return read_key_file(path) if path else KeyPair()


def resolve(broker_key="", keys=None, key_file=""):
    """The CURVE settings of a connection: (broker key, KeyPair), or ("", None) for plaintext.
    broker_key: Z85 or a file; empty: $PATRO_BROKER_KEY. keys: a KeyPair; key_file: a key file;
    neither: $PATRO_CURVE_KEY, or else a fresh pair."""
    if not broker_key:
        env = os.environ.get("PATRO_BROKER_KEY", "")
        if env:
            broker_key = read_public_key(env)
    if not broker_key:
        return "", None
    if not is_curve_key(broker_key):
        broker_key = read_public_key(broker_key) if os.path.exists(broker_key) else broker_key
    if not is_curve_key(broker_key):
        raise errors.InvalidArgument("the broker key '%s' is not a Z85 CURVE public key "
                                     "(40 characters)" % broker_key)
    if keys is None or keys.empty():
        keys = read_key_file(key_file) if key_file else key_from_environment()
    if keys.empty():
        keys = keypair()
    if not is_curve_key(keys.public_key) or not is_curve_key(keys.secret_key):
        raise errors.InvalidArgument("the client key pair is not two Z85 CURVE keys")
    if not available():
        raise errors.Unsupported("this libzmq has no CURVE (built without libsodium)")
    return broker_key, keys

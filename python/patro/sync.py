"""Advisory monitor locks on served objects, with Perl Patro's semantics (C++ patro/sync.hpp). A
monitor is one connection: every proxy from one get_proxies call shares it. Timeouts are in
seconds; None blocks until granted, bounded by ClientOptions.max_lock_wait (a call that can hang
forever is a bug); zero or negative tries once."""
import collections

from . import errors
from .connection import Op
from .errors import LockNotGranted

_U64 = (1 << 64) - 1

LockInfo = collections.namedtuple("LockInfo", "holder depth waiters waiting token")
LockInfo.__doc__ = ("An object's lock as anyone sees it: the holding monitor's client id (0: "
                    "free), its depth, requests waiting to acquire it, monitors in WAIT, and the "
                    "newest fencing token granted.")


class SyncResult:
    """The result of a lock operation. True where Perl Patro returns true, including its "0 but
    true". count: levels held or released, monitors notified; error: a SyncError code; token: the
    fencing token of a grant.

    As a context manager (``with patro.lock(p, timeout=2):``) it raises LockNotGranted on entry
    if the lock was not granted, and releases the level it took on exit."""

    __slots__ = ("ok", "count", "error", "token", "_proxy")

    def __init__(self, ok, count, error, token, proxy=None):
        self.ok = bool(ok)
        self.count = count
        self.error = error
        self.token = token
        self._proxy = proxy

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return "SyncResult(ok=%r, count=%r, error=%r, token=%r)" % (self.ok, self.count,
                                                                   self.error, self.token)

    def __enter__(self):
        if not self.ok:
            raise LockNotGranted(self)
        return self

    def __exit__(self, *exc):
        if self.ok and self._proxy is not None:
            unlock(self._proxy, 1)
        return False


class LockState:
    """A monitor's state on an object: code NULL=0 WAIT=1 NOTIFY=2 STOLEN=3 LOCK=4+depth-1."""

    __slots__ = ("code",)
    _NAMES = {0: "NULL", 1: "WAIT", 2: "NOTIFY", 3: "STOLEN"}

    def __init__(self, code):
        self.code = code

    @property
    def name(self):
        return self._NAMES.get(self.code, "LOCK" if self.code >= 4 else "UNKNOWN")

    @property
    def depth(self):
        return self.code - 3 if self.code >= 4 else 0

    def __eq__(self, other):
        if isinstance(other, LockState):
            return other.code == self.code
        if isinstance(other, str):
            return other == self.name
        return other == self.code

    def __hash__(self):
        return hash(self.code)

    def __repr__(self):
        return "LockState(%s, depth=%d)" % (self.name, self.depth)


def _ms(seconds):
    return None if seconds is None else int(round(seconds * 1000))


def _run(p, op, args, deadline=None):
    return p._run(op, args, timeout=deadline).results


def _outcome(r, p=None):
    if len(r) != 4:
        raise errors.BadMessage("a lock reply needs 4 results")
    return SyncResult(r[0], r[1], r[2], r[3] & _U64, p)


def _deadline(p, timeout):
    o = p.connection.options
    budget = o.max_lock_wait if timeout is None else max(timeout, 0.0)
    return min(budget, o.max_lock_wait) + o.call_timeout


def lock(p, timeout=None, steal=False):
    """Acquires p's lock, stacking if this monitor holds it already; a SyncResult."""
    o = p.connection.options
    r = _run(p, Op.Lock, (_ms(timeout), bool(steal), _ms(o.max_lock_wait)), _deadline(p, timeout))
    return _outcome(r, p)


def unlock(p, count=1):
    """Releases up to count levels (negative: all); a SyncResult whose count says how many."""
    return _outcome(_run(p, Op.Unlock, (int(count),)))


def wait(p, timeout=None):
    """Releases every level, sleeps until notified, reacquires to the same depth. A wait that
    times out leaves the monitor without the lock."""
    o = p.connection.options
    return _outcome(_run(p, Op.Wait, (_ms(timeout), _ms(o.max_lock_wait)), _deadline(p, timeout)))


def notify(p, count=1):
    """Moves up to count waiters (negative: all) to NOTIFY; does not release the lock."""
    return _outcome(_run(p, Op.Notify, (int(count),)))


def lock_state(p):
    r = _run(p, Op.LockState, ())
    if len(r) != 1:
        raise errors.BadMessage("a lock_state reply needs 1 result")
    return LockState(r[0])


def lock_info(p):
    r = _run(p, Op.LockInfo, ())
    if len(r) != 5:
        raise errors.BadMessage("a lock_info reply needs 5 results")
    # The server sends ids and tokens as int64: read them back as the unsigned numbers they are.
    return LockInfo(r[0] & _U64, r[1], r[2], r[3], r[4] & _U64)


def synchronize(p, block=None, timeout=None, steal=False):
    """Holds p's lock for a block: ``with patro.synchronize(p, timeout=5): ...`` locks on entry
    (raising LockNotGranted if it is not granted, so the block never runs without the lock) and
    unlocks the level it took on every way out. ``patro.synchronize(p, fn)`` runs fn() that way
    and returns its result."""
    s = Synchronized(p, timeout, steal)
    if block is None:
        return s
    with s:
        return block()


class Synchronized:
    """The context manager synchronize() returns."""

    def __init__(self, p, timeout=None, steal=False):
        self._p = p
        self._timeout = timeout
        self._steal = steal
        self.result = None

    def __enter__(self):
        self.result = lock(self._p, self._timeout, self._steal)
        if not self.result:
            raise LockNotGranted(self.result)
        return self.result

    def __exit__(self, *exc):
        try:
            unlock(self._p, 1)
        except errors.Error:
            if exc[0] is None:
                raise
        return False

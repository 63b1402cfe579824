"""Patro's errors as Python exceptions, with the codes and names of C++ ``patro::Errc``.

Every error that came from the network, a server or the caller's input is a :class:`patro.Error`
(or a subclass, one per code). ``e.code`` is the numeric code that travels on the wire, ``e.name``
its name (``"type_mismatch"``), ``e.kind`` how a caller may react (``"failed"``, ``"overloaded"``,
``"disconnected"``, ``"unimplemented"``), as in C++ ``patro::error_kind``.
"""
import enum


class Errc(enum.IntEnum):
    """The codes of C++ ``patro::Errc`` (libpatro/include/patro/error.hpp). Never renumbered."""

    ok = 0
    timeout = 1
    broker_unreachable = 2
    server_unavailable = 3
    disconnected = 4
    outcome_unknown = 5
    bad_config = 6
    unknown_object = 7
    unknown_method = 8
    type_mismatch = 9
    index_out_of_range = 10
    invalid_argument = 11
    bad_message = 12
    message_too_large = 13
    not_callable = 14
    remote_exception = 15
    unsupported = 16
    overloaded = 17
    internal = 18
    not_found = 19
    fenced = 20
    not_authorized = 21
    name_taken = 22
    # The outcomes of lock operations (SyncResult.error; SyncError names the same numbers).
    lock_timeout = 1001
    not_held = 1002
    steal_refused = 1003
    stolen = 1004
    too_many_waiters = 1005
    deep_recursion = 1111


_KINDS = {
    Errc.timeout: "disconnected",
    Errc.broker_unreachable: "disconnected",
    Errc.server_unavailable: "disconnected",
    Errc.disconnected: "disconnected",
    Errc.outcome_unknown: "disconnected",
    Errc.overloaded: "overloaded",
    Errc.too_many_waiters: "overloaded",
    Errc.unsupported: "unimplemented",
    Errc.unknown_method: "unimplemented",
}


def error_kind(code):
    """How a caller may react to a code: failed, overloaded, disconnected or unimplemented."""
    try:
        return _KINDS.get(Errc(code), "failed")
    except ValueError:
        return "failed"


class Error(Exception):
    """An error with a code. str(e) is "name: message", as C++ ``patro::Error::what()``.

    ``remote_type`` is the C++ type of an exception that served code threw
    (``"std::runtime_error"``) and ``error_number`` the errno a failed server-side operation set,
    or 0 (C++ RemoteError).
    """

    code = Errc.internal

    def __init__(self, message, code=None, remote_type="", error_number=0):
        if code is not None:
            self.code = code
        try:
            self.name = Errc(self.code).name
        except ValueError:
            self.name = "unknown_error"
        self.message = message
        self.remote_type = remote_type
        self.error_number = error_number
        super().__init__("%s: %s" % (self.name, message))

    @property
    def kind(self):
        return error_kind(self.code)


def _class_name(name):
    return "".join(part.capitalize() for part in name.split("_"))


_BY_CODE = {}
for _c in Errc:
    if _c == Errc.ok:
        continue
    _cls = type(_class_name(_c.name), (Error,),
                {"code": _c, "__doc__": "Errc.%s (%d)" % (_c.name, _c)})
    globals()[_cls.__name__] = _cls
    _BY_CODE[int(_c)] = _cls
del _c, _cls

#: C++ RemoteError: what served code threw.
RemoteError = globals()["RemoteException"]


def make_error(code, message, remote_type="", error_number=0):
    """The exception for a code: its own class, or Internal for a code this client does not know
    (as the C++ client does)."""
    cls = _BY_CODE.get(int(code))
    if cls is None:
        return _BY_CODE[int(Errc.internal)]("%s (unknown error code %d)" % (message, code), None,
                                            remote_type, error_number)
    return cls(message, None, remote_type, error_number)


class SyncError(enum.IntEnum):
    """Codes in SyncResult.error (C++ ``patro::SyncError``)."""

    none = 0
    timeout = 1001
    not_held = 1002
    steal_refused = 1003
    stolen = 1004
    too_many_waiters = 1005
    deep_recursion = 1111


class LockNotGranted(Error):
    """A lock that ``with patro.lock(...)`` or ``patro.synchronize`` needed was not granted.

    ``code`` is Errc.timeout when it timed out, otherwise Errc.overloaded (too many waiters) or
    Errc.invalid_argument (steal refused, too deep); ``sync_error`` is the SyncError code and
    ``result`` the SyncResult.
    """

    def __init__(self, result):
        self.result = result
        self.sync_error = result.error
        try:
            what = SyncError(result.error).name
        except ValueError:
            what = "error %d" % result.error
        code = {SyncError.timeout: Errc.timeout,
                SyncError.too_many_waiters: Errc.overloaded}.get(result.error,
                                                                 Errc.invalid_argument)
        super().__init__("the lock was not granted (%s)" % what, code)


__all__ = (["Errc", "Error", "error_kind", "make_error", "SyncError", "LockNotGranted",
            "RemoteError"] + [cls.__name__ for cls in _BY_CODE.values()])

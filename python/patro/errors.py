"""Patro's errors as Python exceptions, with the codes and names of C++ ``patro::Errc``.

Every error that came from the network, a server or the caller's input is a :class:`patro.Error`
(or a subclass, one per code). ``e.code`` is the numeric code that travels on the wire, ``e.name``
its name (``"type_mismatch"``), ``e.kind`` how a caller may react (``"failed"``, ``"overloaded"``,
``"disconnected"``, ``"unimplemented"``), as in C++ ``patro::error_kind``.
"""
import builtins
import enum

from ._schema import constants

#: The codes of C++ ``patro::Errc`` (libpatro/include/patro/error.hpp), from schemas/wire.json.
#: Never renumbered.
Errc = enum.IntEnum("Errc", [(name, code) for name, code, _, _, _ in constants.ERRORS],
                    module=__name__)

_KINDS = {Errc(code): kind for _, code, kind, _, _ in constants.ERRORS}


def error_kind(code):
    """How a caller may react to a code: failed, overloaded, disconnected or unimplemented."""
    try:
        return _KINDS[Errc(code)]
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
for _name, _code, _, _text, _bases in constants.ERRORS:
    if _code == 0:
        continue
    # One class per code; a code may also be one of Python's own exceptions (wire.json's
    # python_bases: Timeout is a TimeoutError), so ``except TimeoutError`` catches it.
    _cls = type(_class_name(_name), (Error,) + tuple(getattr(builtins, b) for b in _bases),
                {"code": Errc(_code), "__doc__": "Errc.%s (%d): %s." % (_name, _code, _text),
                 "__module__": __name__})
    globals()[_cls.__name__] = _cls
    _BY_CODE[_code] = _cls
del _name, _code, _text, _bases, _cls

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

"""Patro from Python: proxies to objects served by C++ programs through a Patro broker.

    import patro
    h = patro.get_proxies("patro.conf")[0]       # or config text, or patro.get_proxy(broker, name)
    h["abc"]                  # 123
    h["def"][2] = "pqr"       # a nested container comes back as a proxy to it
    del h["def"][1]["ghi"]
    with patro.synchronize(h, timeout=5):
        h["n"] = h["n"] + 1

Built on pyzmq and the classes flatc generates from schemas/*.fbs; the wire is docs/WIRE.md.
"""
import pkgutil as _pkgutil

# In a build tree the generated schema modules are in BUILD/python/patro (see _schema.py).
__path__ = _pkgutil.extend_path(__path__, __name__)

from ._codec import Box  # noqa: E402
from .connection import ClientOptions, Connection  # noqa: E402
from . import curve, errors  # noqa: E402
from .errors import *  # noqa: E402,F401,F403
from .proxy import (Config, Future, Proxy, await_oneway, connect, get_proxies,  # noqa: E402
                    get_proxy, proxy_for, ref, reftype)
from .sync import (LockInfo, LockState, SyncResult, Synchronized, lock, lock_info,  # noqa: E402
                   lock_state, notify, synchronize, unlock, wait)
from .worker import Counter, Hash, Job, Log, Queue  # noqa: E402

__version__ = "0.1.0"
__all__ = (["Box", "ClientOptions", "Connection", "Config", "curve", "Future", "Proxy",
            "await_oneway", "connect",
            "get_proxies", "get_proxy", "proxy_for", "ref", "reftype", "LockInfo", "LockState",
            "SyncResult", "Synchronized", "lock", "lock_info", "lock_state", "notify",
            "synchronize", "unlock", "wait", "Counter", "Hash", "Job", "Log", "Queue"]
           + errors.__all__)

"""The direct path's decisions on their own (no sockets; the clock is passed in): for each server a
connection talks to, the state of its direct route and where its requests go now. The same rules
as libpatro's DirectRoutes (libpatro/src/client/direct_routes.{hpp,cpp}; docs/WIRE.md, "The
direct path"):

A route is locating (a LOCATE asked the broker where the server takes requests directly), then
probing (a socket to one of its lanes is open and a heartbeat goes on it), then live (the server
answered there). Any failure, or silence past the broker's window while probing or live, makes it
dead; a dead route is tried again after a backoff (the heartbeat interval, doubled by each failure
up to MAX_BACKOFF, and forgotten once a route comes up). A locating route whose answer did not come
within the window asks again. A live route becomes active, so that requests go by it, once nothing
sent to its server through the broker is still in flight: a request sent directly must not overtake
one still on its way through the broker.

route "auto": requests go through the broker until the route is active, and again after it failed.
route "direct": they are held until the route is live (then they go, in their order), and refused
while it is dead; a dead route with requests held is tried again when its backoff ends.

The table decides; its holder (Connection) acts: sends the LOCATEs and the heartbeats, opens and
closes the sockets, resends or fails the requests. Not locked itself: the connection uses it only
while it holds its socket lock.
"""
import collections

ROUTES = ("auto", "direct", "broker")
MAX_BACKOFF = 30.0
FIRST_RECONNECT = 0.1  # s: a probe with no connection connects again (reconnect_due)

LOCATING, PROBING, LIVE, DEAD = "locating", "probing", "live", "dead"

# Where a request goes (choose()).
BROKER, DIRECT, HOLD, REFUSE = "broker", "direct", "hold", "refuse"


def check_route(route, what="route"):
    """route if it is one of ROUTES; raises ValueError naming them otherwise."""
    if route not in ROUTES:
        raise ValueError("unknown %s %r: want auto, direct or broker" % (what, route))
    return route


class Entry:
    """One server's direct route."""

    __slots__ = ("state", "active", "since", "last_heard", "next_heartbeat", "retry_at",
                 "backoff", "held", "reconnect_at", "reconnect_after")

    def __init__(self):
        self.state = LOCATING
        self.active = False  # requests to the server go by it now
        self.since = self.last_heard = self.next_heartbeat = self.retry_at = 0.0
        self.backoff = 0.0
        self.held = collections.deque()  # route "direct": waiting for the route
        # Probing with no connection made: when to connect again, and the wait after that.
        self.reconnect_at = self.reconnect_after = 0.0


class Heard:
    """What a message on a direct socket did: known (the server has a route; otherwise drop the
    message), up (it made the route live), ready (route "direct": the held requests, to send now,
    in order)."""

    __slots__ = ("known", "up", "ready")

    def __init__(self):
        self.known = False
        self.up = False
        self.ready = ()


_UNKNOWN = Heard()
_KNOWN = Heard()
_KNOWN.known = True


class Failure:
    """What fail() did: known (the server had a route), was_active (requests went by it), held
    (route "direct": the requests held for it, to fail)."""

    __slots__ = ("known", "was_active", "held")

    def __init__(self):
        self.known = False
        self.was_active = False
        self.held = ()


class DirectRoutes:
    """The routes of one connection, by server id. route: the connection's ("broker" never asks
    the table)."""

    def __init__(self, route):
        self.direct_only = check_route(route) == "direct"
        self.routes = {}
        self._next_check = float("inf")

    def choose(self, server, now, window, brokered):
        """Where a request to server goes at now: (way, locate). way is BROKER, DIRECT, HOLD (see
        hold()) or REFUSE (route "direct", and the route is dead); locate: first send a LOCATE
        for the server (a server not seen before starts locating, and so does a dead route whose
        backoff ended). window: the broker's. brokered(): whether a request to server sent
        through the broker is still in flight (asked only of a live, inactive route)."""
        r = self.routes.get(server)
        locate = False
        if r is None:
            r = self.routes[server] = Entry()
            fresh = True
        else:
            fresh = False
        if fresh or (r.state == DEAD and now >= r.retry_at):
            # Ask the broker where the server takes requests (and tell it we talk to it).
            r.state = LOCATING
            r.since = now
            self._next_check = min(self._next_check, now + window)
            locate = True
        if r.active:
            return DIRECT, locate
        if r.state == LIVE and not brokered():
            r.active = True
            return DIRECT, locate
        if not self.direct_only:
            return BROKER, locate
        # route "direct", and the last try failed: no waiting for the next one.
        return (REFUSE if r.state == DEAD else HOLD), locate

    def hold(self, server, outgoing):
        """Keeps a request until server's route is live (after choose() said HOLD)."""
        self.routes.setdefault(server, Entry()).held.append(outgoing)

    def locating(self, server):
        r = self.routes.get(server)
        return r is not None and r.state == LOCATING

    @staticmethod
    def pick_endpoint(endpoints, client_id):
        """The lane endpoint, of those a LOCATE answered, that this client uses: one per server,
        chosen by client id (its requests there then run in the order it sent them); an empty
        one passes the choice to the next. "" if none."""
        n = len(endpoints)
        for i in range(n):
            e = endpoints[(client_id + i) % n]
            if e:
                return e
        return ""

    def probing(self, server, now):
        """A socket to server's lane was opened at now: the route probes it at once."""
        r = self.routes.get(server)
        if r is None:
            return
        r.state = PROBING
        r.since = r.last_heard = now
        r.next_heartbeat = now
        r.reconnect_after = FIRST_RECONNECT
        r.reconnect_at = now + FIRST_RECONNECT
        self._next_check = now

    def reconnect_due(self, server, now):
        """Whether server's probing route, whose probe still finds no connection, should connect
        again now: a CURVE handshake the server refused (it had not yet heard the broker vouch for
        our key) is not tried again by libzmq, so the connection is made anew FIRST_RECONNECT after
        the probe began, then after twice as long each time (as libpatro's DirectRoutes)."""
        r = self.routes.get(server)
        if r is None or r.state != PROBING or now < r.reconnect_at:
            return False
        r.reconnect_after *= 2
        r.reconnect_at = now + r.reconnect_after
        return True

    def beat_unsent(self, server, now):
        """server's heartbeat could not be sent (its socket has no connection): a probe goes again
        soon, as the connection may still be being made. Whether the route was live."""
        r = self.routes.get(server)
        if r is None:
            return False
        if r.state == LIVE:
            return True
        if r.state != PROBING:
            return False
        r.next_heartbeat = now + 0.002
        self._next_check = min(self._next_check, r.next_heartbeat)
        return False

    def heard(self, server, now):
        """A message came from server's direct socket at now."""
        r = self.routes.get(server)
        if r is None:
            return _UNKNOWN
        r.last_heard = now
        if r.state != PROBING:
            return _KNOWN
        h = Heard()
        h.known = True
        r.state = LIVE
        r.backoff = 0.0
        h.up = True
        if self.direct_only:
            # Nothing went through the broker: the held requests go now, in their order.
            r.active = True
            h.ready, r.held = r.held, collections.deque()
        return h

    def tend(self, now, window, interval):
        """The routes' timers at now: (locate, heartbeat, failed): servers to send a LOCATE for,
        servers to heartbeat on their direct sockets, and (server, why) of routes silent past
        window (fail() each). Dead routes with held requests are tried again after their backoff.
        interval: the heartbeat interval. Nothing before next_check()."""
        locate, heartbeat, failed = [], [], []
        if now < self._next_check:
            return locate, heartbeat, failed
        nxt = float("inf")
        for server, r in self.routes.items():
            if r.state == LOCATING:
                if now - r.since > window:  # the answer was lost (a broker restart): ask again
                    r.since = now
                    locate.append(server)
                nxt = min(nxt, r.since + window)
            elif r.state in (PROBING, LIVE):
                if now - r.last_heard > window:
                    failed.append((server, "no answer on its direct endpoint" if r.state == PROBING
                                   else "its direct connection went silent"))
                    continue
                if now >= r.next_heartbeat:
                    heartbeat.append(server)
                    r.next_heartbeat = now + interval
                nxt = min(nxt, r.next_heartbeat, r.last_heard + window)
            elif self.direct_only and r.held:  # dead, with requests waiting for it
                if now >= r.retry_at:
                    r.state = LOCATING
                    r.since = now
                    locate.append(server)
                    nxt = min(nxt, now + window)
                nxt = min(nxt, r.retry_at)
        self._next_check = nxt
        return locate, heartbeat, failed

    def next_check(self):
        """When tend() has something to do next (inf: nothing)."""
        return self._next_check

    def fail(self, server, now, interval):
        """Server's route failed at now: dead, tried again after its backoff (interval the first
        time, then doubling, at most MAX_BACKOFF). Its socket is to be closed."""
        f = Failure()
        r = self.routes.get(server)
        if r is None:
            return f
        f.known = True
        f.was_active = r.active
        r.active = False
        r.state = DEAD
        r.backoff = interval if r.backoff == 0 else min(r.backoff * 2, MAX_BACKOFF)
        r.retry_at = now + r.backoff
        self._next_check = min(self._next_check, r.retry_at)
        if self.direct_only:
            f.held, r.held = r.held, collections.deque()
        return f

    def forget(self, server):
        """The server went away: its route is forgotten, unless requests are held for it. Whether
        it was (its socket is to be closed)."""
        r = self.routes.get(server)
        if r is None or r.held:
            return False
        del self.routes[server]
        return True

    def not_dead(self):
        """A new broker (a restart): the servers whose route is not dead, to LOCATE again."""
        return [s for s, r in self.routes.items() if r.state != DEAD]

    def find(self, server):
        return self.routes.get(server)

    def __len__(self):
        return len(self.routes)

    def clear(self):
        self.routes.clear()

"""The ready-made objects of patro-worker, from Python: a job queue, a log writer, a hash and a
counter.

    q = patro.Queue(patro.get_proxy("tcp://127.0.0.1:7170", "jobs"))
    q.push("urgent", priority=-1)    # lower first; also delay=SECONDS, ttr=SECONDS
    job = q.take(timeout=5)          # a Job, or None once 5 s pass with nothing to take
    ...; q.ack(job)                  # not acknowledged: delivered again after its time-to-run
                                     # (the visibility timeout), or at once if this connection
                                     # dies; q.touch(job) restarts the time-to-run
    log = patro.Log(patro.get_proxy("tcp://127.0.0.1:7170", "applog"))
    log.write("one whole line")
    for line in log.follow(idle_timeout=10): ...
    kv = patro.Hash(patro.get_proxy("tcp://127.0.0.1:7170", "kv"))
    kv["code"] = 42; kv["code"]; "code" in kv; len(kv); del kv["code"]   # a dict's protocol
    hits = patro.Counter(patro.get_proxy("tcp://127.0.0.1:7170", "hits"))
    hits.add(1)                      # the new value, as one atomic step on the worker
"""
import collections
import collections.abc
import time

from . import errors

Job = collections.namedtuple("Job", "id job delivery")
Job.__doc__ = """A taken job: its id, the job, and its delivery number.

The queue numbers every delivery from one counter of its own (not per job), so a job's first
delivery may be 57 and its next 60; a later delivery of a job has a larger number. ack and nack
name the delivery, so only the one that holds the job's lease settles it."""

# Each blocking call waits at most this long on the server, so the call's own deadline (the
# connection's call_timeout) always outlasts it.
_SLICE = 10.0


def _ms(seconds):
    return max(0, int(round(seconds * 1000)))


def _push_options(priority, delay, ttr):
    for name, seconds in (("delay", delay), ("ttr", ttr)):
        if seconds is not None and not seconds >= 0:
            raise ValueError("%s must be 0 or more seconds, not %r" % (name, seconds))
    options = {}
    if priority is not None:
        options["priority"] = int(priority)
    if delay is not None:
        options["delay_ms"] = _ms(delay)
    if ttr is not None:
        options["ttr_ms"] = _ms(ttr)
    return options or None


class Queue:
    """A patro-worker job queue (push, take, ack...). Wraps a proxy to it."""

    def __init__(self, proxy):
        self.proxy = proxy

    def push(self, job, priority=None, delay=None, ttr=None, dedup=None):
        """Adds a job; returns its id (once it is durable, with the worker's --data).
        priority: lower is taken first (default 0; first pushed first within one); delay:
        seconds before it is ready; ttr: its time-to-run in seconds, each lease's length
        (default the queue's visibility timeout); dedup: a key (str) -- if a job was pushed with
        it in the last 5 minutes, its id is returned and nothing is pushed."""
        options = _push_options(priority, delay, ttr)
        if dedup is not None:
            options = dict(options or {}, dedup=str(dedup))
        if options is None:
            return self.proxy.call("push", job)
        return self.proxy.call("push", job, options)

    def push_many(self, jobs, priority=None, delay=None, ttr=None):
        """Adds jobs, all with the same options (as push's); returns their ids."""
        options = _push_options(priority, delay, ttr)
        if options is None:
            return self.proxy.call("push_many", list(jobs))
        return self.proxy.call("push_many", list(jobs), options)

    def take(self, timeout=0.0):
        """Takes a job, waiting up to timeout seconds; a Job, or None if none came in time."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            left = deadline - time.monotonic()
            wait = min(max(left, 0.0), _SLICE)
            r = self.proxy.call("take", _ms(wait), timeout=wait + self._grace())
            if r is not None:
                return Job(*r)
            if left <= _SLICE:
                return None

    def take_many(self, n, timeout=0.0):
        """Up to n Jobs; waits up to timeout seconds (at most 10 s) for the first."""
        wait = min(max(timeout, 0.0), _SLICE)
        r = self.proxy.call("take_many", int(n), _ms(wait), timeout=wait + self._grace())
        return [Job(*j) for j in (r or [])]

    def ack_many(self, jobs):
        """Acknowledges Jobs (or (id, delivery) pairs) in one call; a list of bools, as ack's."""
        flat = []
        for j in jobs:
            flat += [int(j[0]), int(j[2] if isinstance(j, Job) else j[1])]
        return [bool(ok) for ok in (self.proxy.call("ack_many", flat) or [])]

    def ack(self, job, delivery=None):
        """Acknowledges a Job (or an id and its delivery); True if that delivery held the job's
        lease, so a job is acknowledged exactly once."""
        if delivery is None:
            job, delivery = job.id, job.delivery
        return bool(self.proxy.call("ack", int(job), int(delivery)))

    def ack_take(self, job, delivery=None, timeout=0.0):
        """Acknowledges a Job (or an id and its delivery) and takes the next, in one call: a
        Job, or None if none came within timeout seconds. With the worker's --data the ack is on
        disk once this returns. A refused ack (see ack) does not stop the take and is not
        reported: call ack, then take, where it matters."""
        if delivery is None:
            job, delivery = job.id, job.delivery
        deadline = time.monotonic() + max(timeout, 0.0)
        wait = min(max(timeout, 0.0), _SLICE)
        r = self.proxy.call("ack_take", int(job), int(delivery), _ms(wait),
                            timeout=wait + self._grace())
        if r is not None:
            return Job(*r)
        left = deadline - time.monotonic()
        return self.take(left) if left > 0 and timeout > _SLICE else None

    def nack(self, job, delivery=None):
        """Puts a taken job back at once."""
        if delivery is None:
            job, delivery = job.id, job.delivery
        return bool(self.proxy.call("nack", int(job), int(delivery)))

    def touch(self, job, delivery=None):
        """Restarts a taken job's lease at its full time-to-run; False if that delivery no longer
        holds the lease."""
        if delivery is None:
            job, delivery = job.id, job.delivery
        return bool(self.proxy.call("touch", int(job), int(delivery)))

    def bury(self, job, delivery=None):
        """Sets a taken job aside (a dead letter) until kick(); False as touch."""
        if delivery is None:
            job, delivery = job.id, job.delivery
        return bool(self.proxy.call("bury", int(job), int(delivery)))

    def buried(self, n=10):
        """Up to n (1 to 10000) buried jobs as (id, job), oldest first; they stay buried."""
        return [tuple(b) for b in self.proxy.call("buried", int(n))]

    def kick(self, n=1):
        """Puts up to n (1 to 10000) buried jobs back in the queue; returns how many."""
        return self.proxy.call("kick", int(n))

    def stats(self):
        """A dict: ready, delayed, leased, buried, oldest_ready_ms, pushed, acknowledged."""
        return self.proxy.call("stats")

    def size(self):
        return self.proxy.call("size")

    def leased(self):
        return self.proxy.call("leased")

    def peek(self):
        return self.proxy.call("peek")

    def _grace(self):
        return self.proxy.connection.options.call_timeout


class Log:
    """A patro-worker log writer: lines land whole, in the order received."""

    def __init__(self, proxy):
        self.proxy = proxy

    def write(self, line):
        """Appends one line (a newline inside it is escaped by the writer: a line stays one
        line). True once received (with --log-sync always: once on disk)."""
        return bool(self.proxy.call("write", line))

    def send(self, line):
        """Appends one line without waiting for the writer: a oneway call, batched with the
        connection's others (flush() waits for them)."""
        self.proxy.send("write", line)

    def flush(self, timeout=None):
        """Waits until the writer acknowledged every line sent; returns how many failed."""
        return self.proxy.connection.flush_oneway(timeout)

    def write_many(self, lines):
        return self.proxy.call("write_many", list(lines))

    def write_fields(self, line, **fields):
        """Appends one line with fields (keyword arguments: str, int, float, bool, None, or lists
        and dicts of them). In a worker's --log-format json log they are the line's object's
        "fields", and level="warn" (any string) is its "level" ("info" when not given); in a text
        log they follow the line as key=value pairs. True once received."""
        return bool(self.proxy.call("write_fields", line, dict(fields)))

    def rotate(self):
        return bool(self.proxy.call("rotate"))

    def size(self):
        """Bytes written to the current file."""
        return self.proxy.call("size")

    def read(self, offset=0, max_lines=1000):
        """(lines, next offset) from byte offset in the current file. (The answer also names the
        file's generation; follow() uses it to go on across rotations.)"""
        r = self.proxy.call("read", int(offset), int(max_lines))
        return r["lines"], r["next"]

    def follow(self, offset=0, idle_timeout=None, poll=1.0, max_lines=None):
        """Yields the file's lines from byte offset (None: from its current end), and new ones as
        they are written, as tail -f does, across rotations (rotate, or mv and SIGHUP): the old
        file is finished, then the new one read from its start. Each wait on the server is at
        most poll seconds; the generator ends after idle_timeout seconds with no new line (None:
        never; break out of the loop instead), or after max_lines lines."""
        if offset is None:
            offset = self.size()
        # The position: a byte offset in the current file until the first answer names the
        # file's generation; from then on {"generation", "offset"} (a worker older than
        # generations names none, and its offsets stay plain).
        at = int(offset)
        poll = min(max(poll, 0.01), _SLICE)
        yielded = 0
        last = time.monotonic()
        grace = min(self.proxy.connection.options.call_timeout, 2.0)
        while True:
            wait = poll
            if idle_timeout is not None:
                left = last + idle_timeout - time.monotonic()
                if left <= 0:
                    return
                wait = min(wait, left)
            try:
                r = self.proxy.call("follow", at, _ms(wait), timeout=wait + grace)
            except errors.Timeout:
                # A follow is a read: with no answer, ask again from the same offset. (A worker
                # whose log has no writer may not answer a follow until the next line.)
                continue
            if not isinstance(r, dict) or "lines" not in r:
                raise errors.BadMessage("follow answered %r" % (r,))
            if "generation" in r:
                at = {"generation": r["generation"], "offset": r["next"]}
            else:
                at = r["next"]
            if r["lines"]:
                last = time.monotonic()
            for line in r["lines"]:
                yield line
                yielded += 1
                if max_lines is not None and yielded >= max_lines:
                    return


class Hash(collections.abc.MutableMapping):
    """A patro-worker hash (its served methods get, set, erase, exists, keys, size) with the
    protocol of a dict: ``kv["code"]``, ``kv["code"] = v``, ``"code" in kv``, ``len(kv)``,
    ``del kv["code"]``, ``iter(kv)`` (its keys, in order), and what MutableMapping builds on them
    (get, keys, items, pop, setdefault, update...). Each operation is one call to the worker,
    except where noted; the ones MutableMapping composes (pop, setdefault, update) are several
    calls, not one atomic step. Keys are strings. Wraps a proxy to it."""

    def __init__(self, proxy):
        self.proxy = proxy

    @staticmethod
    def _key(key):
        if not isinstance(key, str):
            raise errors.TypeMismatch("a key of a patro-worker hash is a str, not %s"
                                      % type(key).__name__)
        return key

    def __getitem__(self, key):
        """The value; KeyError if there is none (a None answer is checked with exists, since a
        key may hold None)."""
        v = self.proxy.call("get", self._key(key))
        if v is None and not self.proxy.call("exists", key):
            raise KeyError(key)
        return v

    def __setitem__(self, key, value):
        """Sets the key (once durable, with the worker's --data)."""
        self.proxy.call("set", self._key(key), value)

    def __delitem__(self, key):
        """Erases the key; KeyError if it was not there (checked with exists first)."""
        if not self.proxy.call("exists", self._key(key)):
            raise KeyError(key)
        self.proxy.call("erase", key)

    def erase(self, key):
        """Erases the key in one call; its old value, or None if it had none."""
        return self.proxy.call("erase", self._key(key))

    def __contains__(self, key):
        return isinstance(key, str) and bool(self.proxy.call("exists", key))

    def __len__(self):
        return int(self.proxy.call("size"))

    def __iter__(self):
        return iter(self.proxy.call_list("keys"))

    def __repr__(self):
        return "<patro.Hash %r>" % (self.proxy,)


class Counter:
    """A patro-worker counter (add, get, set, cas): a 64-bit integer that every change updates
    in one step on the worker. ``int(c)`` reads it. Wraps a proxy to it."""

    def __init__(self, proxy):
        self.proxy = proxy

    def add(self, n=1):
        """Adds n (negative subtracts); the new value."""
        return self.proxy.call("add", int(n))

    def get(self):
        return self.proxy.call("get")

    def set(self, value):
        self.proxy.call("set", int(value))

    def cas(self, expected, desired):
        """Sets desired if the counter holds expected; whether it did."""
        return bool(self.proxy.call("cas", int(expected), int(desired)))

    def __int__(self):
        return int(self.get())

    __index__ = __int__

    def __repr__(self):
        return "<patro.Counter %r>" % (self.proxy,)

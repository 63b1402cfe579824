#!/usr/bin/env python3
"""Generates the wire's constants for C++ and Python from schemas/wire.json, at build time.

wire.json keeps, once, what both languages need to speak the wire: the error codes (name, number,
how a caller may react, a line of text), the commands of the header frame and the operations'
classification (handler group, idempotent, mutating, oneway). The operations' numbers stay in
request.fbs (enum Op); a row names its op by that enum's name.

    gen_wire.py --json wire.json [--cpp wire_constants.hpp] [--python _wire_constants.py]

Standard library only: meson runs it as it runs flatc, and setup.py runs it for pip.
"""
import argparse
import json
import os
import re
import sys

KINDS = ("failed", "overloaded", "disconnected", "unimplemented")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
WIRE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
OP = re.compile(r"^[A-Z][A-Za-z0-9]*$")


class Bad(Exception):
    pass


def _unique(rows, key, what):
    seen = set()
    for r in rows:
        if r[key] in seen:
            raise Bad("two %s have the %s %r" % (what, key, r[key]))
        seen.add(r[key])


def load(path):
    """wire.json, checked: a mistake in it stops the build with a message naming it."""
    with open(path, encoding="utf-8") as f:
        w = json.load(f)
    errors, commands, ops, handlers = w["errors"], w["commands"], w["ops"], w["handlers"]
    for e in errors:
        if not NAME.match(e["name"]) or not isinstance(e["code"], int) or e["code"] < 0:
            raise Bad("error row %r: a snake_case name and a code >= 0" % (e,))
        if e["kind"] not in KINDS:
            raise Bad("error %s: kind %r is not one of %s" % (e["name"], e["kind"], KINDS))
        for b in e.get("python_bases", []):
            if b not in ("TimeoutError", "ConnectionError", "OSError", "ValueError", "TypeError",
                         "KeyError", "IndexError", "LookupError", "PermissionError"):
                raise Bad("error %s: python base %r is not a known builtin" % (e["name"], b))
    if not errors or errors[0]["name"] != "ok" or errors[0]["code"] != 0:
        raise Bad("the first error row is ok = 0")
    _unique(errors, "name", "errors")
    _unique(errors, "code", "errors")
    for c in commands:
        if not NAME.match(c["name"]) or not WIRE_NAME.match(c["wire_name"]) or \
                not 1 <= c["value"] <= 255:
            raise Bad("command row %r: a snake_case name, an UPPER wire_name, 1..255" % (c,))
    values = [c["value"] for c in commands]
    if values != list(range(1, len(commands) + 1)):
        raise Bad("commands are numbered 1, 2, ... without gaps, in order (parse_header "
                  "accepts the range)")
    _unique(commands, "name", "commands")
    _unique(commands, "wire_name", "commands")
    for o in ops:
        if not OP.match(o["op"]) or not NAME.match(o["name"]) or o["handler"] not in handlers:
            raise Bad("op row %r: an Op of request.fbs, a snake_case name, a handler of %s"
                      % (o, sorted(handlers)))
        for flag in ("idempotent", "mutating", "oneway"):
            if not isinstance(o[flag], bool):
                raise Bad("op %s: %s is true or false" % (o["op"], flag))
    _unique(ops, "op", "ops")
    _unique(ops, "name", "ops")
    levels = w["log_levels"]
    if not levels or not all(isinstance(l, str) and NAME.match(l) for l in levels) or \
            len(set(levels)) != len(levels):
        raise Bad("log_levels: distinct snake_case names, in order of verbosity")
    return w


def _c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _c_bool(b):
    return "true" if b else "false"


def cpp(w):
    out = ["// Generated at build time from schemas/wire.json by schemas/gen_wire.py; do not edit.",
           "// The wire's constants as X-macro row lists: a user defines X(...) and expands a list,",
           "// so each fact is written once (in wire.json) and each reader takes the columns it needs.",
           "#pragma once", ""]

    def rows(macro, doc, items):
        out.append("// " + doc)
        out.append("#define %s(X) \\" % macro)
        for i, item in enumerate(items):
            out.append("  %s%s" % (item, " \\" if i + 1 < len(items) else ""))
        out.append("")

    rows("PATRO_ERRC_ROWS", "X(name, code, kind, text): patro::Errc, patro::ErrorKind::kind",
         ["X(%s, %d, %s, %s)" % (e["name"], e["code"], e["kind"], _c_string(e["text"]))
          for e in w["errors"]])
    out.append("#define PATRO_ERRC_COUNT %d" % len(w["errors"]))
    out.append("")
    rows("PATRO_COMMAND_ROWS", "X(name, value, wire_name, text): detail::Command, the header's "
         "fourth byte",
         ["X(%s, %d, %s, %s)" % (c["name"], c["value"], _c_string(c["wire_name"]),
                                 _c_string(c["text"])) for c in w["commands"]])
    out.append("#define PATRO_COMMAND_FIRST %s" % w["commands"][0]["name"])
    out.append("#define PATRO_COMMAND_LAST %s" % w["commands"][-1]["name"])
    out.append("")
    rows("PATRO_OP_ROWS", "X(op, name, handler, idempotent, mutating, oneway): detail::OpInfo, "
         "op a wire::Op",
         ["X(%s, %s, %s, %s, %s, %s)" % (o["op"], _c_string(o["name"]), o["handler"],
                                         _c_bool(o["idempotent"]), _c_bool(o["mutating"]),
                                         _c_bool(o["oneway"])) for o in w["ops"]])
    out.append("#define PATRO_OP_COUNT %d" % len(w["ops"]))
    out.append("#define PATRO_OP_LAST %s" % w["ops"][-1]["op"])
    out.append("")
    rows("PATRO_LOG_LEVEL_ROWS", "X(name, verbosity): patro::LogLevel::name, log_verbosity's value",
         ["X(%s, %d)" % (l, v) for v, l in enumerate(w["log_levels"])])
    return "\n".join(out) + "\n"


def python(w):
    def tup(items):
        return "(\n" + "".join("    %r,\n" % (i,) for i in items) + ")\n"

    out = ['"""The wire\'s constants, generated at build time from schemas/wire.json by',
           'schemas/gen_wire.py; do not edit. errors.py and _codec.py build on these rows."""',
           "",
           "#: (name, code, kind, text, python_bases): patro::Errc and its ErrorKind",
           "ERRORS = " + tup((e["name"], e["code"], e["kind"], e["text"],
                              tuple(e.get("python_bases", ()))) for e in w["errors"]),
           "#: (wire_name, value, cpp_name, text): the header frame's fourth byte",
           "COMMANDS = " + tup((c["wire_name"], c["value"], c["name"], c["text"])
                               for c in w["commands"]),
           "#: (op, name, handler, idempotent, mutating, oneway): op names a wire.Op member",
           "OPS = " + tup((o["op"], o["name"], o["handler"], o["idempotent"], o["mutating"],
                           o["oneway"]) for o in w["ops"]),
           "#: the log levels in order of verbosity: a level's index is the number on the wire",
           "LOG_LEVELS = " + tup(w["log_levels"])]
    return "\n".join(out)


def _write(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--cpp")
    ap.add_argument("--python")
    a = ap.parse_args(argv)
    try:
        w = load(a.json)
    except (Bad, KeyError, TypeError, ValueError) as e:
        sys.stderr.write("%s: %s\n" % (a.json, e))
        return 1
    if a.cpp:
        _write(a.cpp, cpp(w))
    if a.python:
        _write(a.python, python(w))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

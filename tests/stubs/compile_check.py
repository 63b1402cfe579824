#!/usr/bin/python3
"""The typed stubs' compile-time check (README "Typed stubs").

    compile_check.py SOURCE_DIR INCLUDE_DIR... -- COMPILER [ARGS...]

Compiles compile_ok.cpp with COMPILER -fsyntax-only -I each INCLUDE_DIR (it must compile: the
command works, the generated header is found), then compile_fail.cpp with the same command: it
must fail, with an error reported at every line marked "expect-error". Exit 0 if so, 1 if not.
"""

import os
import re
import subprocess
import sys


def compile_source(command, path):
    r = subprocess.run(command + [path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=300)
    return r.returncode, r.stdout.decode("utf-8", "replace")


def main(argv):
    sep = argv.index("--")
    source_dir, includes, compiler = argv[1], argv[2:sep], argv[sep + 1:]
    command = compiler + ["-fsyntax-only"] + ["-I" + d for d in includes]
    ok = os.path.join(source_dir, "compile_ok.cpp")
    bad = os.path.join(source_dir, "compile_fail.cpp")

    rc, out = compile_source(command, ok)
    if rc != 0:
        print("FAIL: the control source does not compile (%s):\n%s" % (" ".join(command), out))
        return 1
    print("ok: compile_ok.cpp compiles")

    with open(bad, encoding="utf-8") as f:
        expected = [i + 1 for i, line in enumerate(f) if "// expect-error" in line]
    if not expected:
        print("FAIL: compile_fail.cpp marks no line")
        return 1
    rc, out = compile_source(command, bad)
    if rc == 0:
        print("FAIL: compile_fail.cpp compiled")
        return 1
    # gcc and clang both write "FILE:LINE:COLUMN: error: ..."
    error_lines = {int(m.group(1)) for m in
                   re.finditer(r"compile_fail\.cpp:(\d+):\d+: (?:fatal )?error:", out)}
    missing = [n for n in expected if n not in error_lines]
    if missing:
        print("FAIL: no error reported at line(s) %s of compile_fail.cpp:\n%s" % (missing, out))
        return 1
    print("ok: compile_fail.cpp fails with an error at each of lines %s" % expected)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/python3
"""patro-stubgen on bad interface files: each is refused (exit 1, no header written) with an
error naming the file, line and column; a good one generates a header.

    stubgen_test.py PATRO_STUBGEN
"""

import os
import subprocess
import sys
import tempfile

CASES = [
    # (interface text, the "line:column: error: ..." expected, a word the message must contain)
    ("class C {\n  int32 f();\n}\n", "2:3", "unknown type 'int32'"),
    ("class C {\n  int64 f(void x);\n}\n", "2:11", "cannot be void"),
    ("class C {\n  void f();\n  void f(int64 n);\n}\n", "3:8", "declared twice"),
    ("class C {\n  void f(int64 n, string n);\n}\n", "2:26", "parameter 'n'"),
    ("class C {\n  int64 f(int64 n)\n}\n", "3:1", "expected ';'"),
    ("class C {\n  void delete();\n}\n", "2:8", "C++ keyword"),
    ("class C {\n  void proxy();\n}\n", "2:8", "member of every generated proxy"),
    ("class C {\n  int64[][] f();\n}\n", "2:10", "arrays of arrays"),
    ("class C {\n  void f();\n", "3:1", "end of file"),
    ("// nothing\n", "1:1", "no class"),
    ("class C { void f(); }\nclass C { void g(); }\n", "2:7", "declared twice"),
    ("struct C { }\n", "1:1", "expected 'class' or 'namespace'"),
    ("class C {\n  void f(int64 patro_self);\n}\n", "2:16", "reserved"),
]


def main(argv):
    stubgen = argv[1]
    failures = 0
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "bad.patro"), os.path.join(d, "bad.hpp")
        for text, where, words in CASES:
            with open(src, "w") as f:
                f.write(text)
            r = subprocess.run([stubgen, src, out], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=60)
            err = r.stderr.decode()
            want = "%s:%s: error:" % (src, where)
            if r.returncode != 1 or want not in err or words not in err or os.path.exists(out):
                print("FAIL: %r: exit %d, stderr %r (wanted %r and %r)"
                      % (text, r.returncode, err, want, words))
                failures += 1
            else:
                print("ok: %s" % err.strip())
        with open(src, "w") as f:
            f.write("namespace a::b;\nclass Good {\n  any[] f(bytes b, double d, bool on);\n}\n")
        r = subprocess.run([stubgen, src, out], stderr=subprocess.PIPE, timeout=60)
        header = open(out).read() if os.path.exists(out) else ""
        if r.returncode != 0 or "class GoodProxy" not in header or "register_good" not in header:
            print("FAIL: a good file: exit %d, %s" % (r.returncode, r.stderr.decode()))
            failures += 1
        else:
            print("ok: a good file generates GoodProxy and register_good")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

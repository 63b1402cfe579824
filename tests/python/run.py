#!/usr/bin/python3
"""Runs the Python client's pytest suite (meson test, suite 'python'). Exits 77 (skipped) where
this Python lacks pyzmq, flatbuffers or pytest. PATRO_PYTHONPATH names where the package and its
generated schema modules are (the source's python/ and the build's python/)."""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
for missing in ("zmq", "flatbuffers", "pytest"):
    try:
        __import__(missing)
    except ImportError:
        print("skipped: %s has no %s (apt-get install python3-zmq python3-flatbuffers "
              "python3-pytest)" % (sys.executable, missing))
        sys.exit(77)

import pytest  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
paths = [p for p in os.environ.get("PATRO_PYTHONPATH", "").split(":") if p]
os.environ["PYTHONPATH"] = ":".join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(":")
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
sys.path[:0] = paths
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", here, here] + sys.argv[1:]))

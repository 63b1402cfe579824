#!/usr/bin/env python3
"""Generates the Python classes of Patro's FlatBuffers schemas with flatc, at build time.

flatc --python --gen-onefile writes one module per schema without imports between them, so the
wire schemas (one namespace, patro.wire) are joined into one module, _wire_generated.py, where
they see each other; config.fbs (namespace patro.config) becomes _config_generated.py.

    gen_schemas.py --flatc FLATC --outdir DIR SCHEMA.fbs...
"""
import argparse
import os
import subprocess
import sys
import tempfile

# Schemas first that others include, so a reader of the joined module meets types in order.
ORDER = ["value", "request", "reply", "control", "batch", "stored"]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flatc", default="flatc")
    ap.add_argument("--outdir", required=True)
    ap.add_argument("schemas", nargs="+")
    a = ap.parse_args(argv)
    include = sorted({os.path.dirname(os.path.abspath(s)) for s in a.schemas})
    with tempfile.TemporaryDirectory(prefix="patro-flatc-") as tmp:
        cmd = [a.flatc, "--python", "--gen-onefile", "-o", tmp]
        for d in include:
            cmd += ["-I", d]
        cmd += a.schemas
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write("flatc failed: %s\n%s%s" % (" ".join(cmd), r.stdout, r.stderr))
            return 1
        generated = {}
        for s in a.schemas:
            base = os.path.splitext(os.path.basename(s))[0]
            path = os.path.join(tmp, base + "_generated.py")
            if not os.path.exists(path):
                sys.stderr.write("flatc wrote no %s\n" % path)
                return 1
            with open(path, encoding="utf-8") as f:
                generated[base] = f.read()
    header = "# Generated at build time from schemas/*.fbs by python/gen_schemas.py; do not edit.\n"
    wire = [b for b in ORDER if b in generated] + sorted(
        b for b in generated if b not in ORDER and b != "config")
    outputs = {"_wire_generated.py": [generated[b] for b in wire]}
    if "config" in generated:
        outputs["_config_generated.py"] = [generated["config"]]
    os.makedirs(a.outdir, exist_ok=True)
    for name, parts in outputs.items():
        dest = os.path.join(a.outdir, name)
        tmp_dest = dest + ".tmp"
        with open(tmp_dest, "w", encoding="utf-8") as f:
            f.write(header)
            f.write("\n".join(parts))
        os.replace(tmp_dest, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

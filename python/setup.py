"""pip install ./python (from a Patro source tree): the package, plus the classes flatc generates
from ../schemas/*.fbs and the wire's constants from ../schemas/wire.json (set PATRO_SCHEMAS to another schemas directory, FLATC to another flatc).
Generated code is made here, at build time, and never checked in."""
import glob
import os
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithSchemas(build_py):
    def run(self):
        super().run()
        schemas = os.environ.get("PATRO_SCHEMAS") or os.path.join(HERE, "..", "schemas")
        files = sorted(glob.glob(os.path.join(schemas, "*.fbs")))
        if not files:
            raise SystemExit("patro: no schemas in %s (set PATRO_SCHEMAS)" % schemas)
        subprocess.check_call([sys.executable, os.path.join(HERE, "gen_schemas.py"),
                               "--flatc", os.environ.get("FLATC", "flatc"),
                               "--outdir", os.path.join(self.build_lib, "patro")] + files)
        # The wire's constants: schemas/wire.json, by the generator libpatro's build runs too.
        subprocess.check_call([sys.executable, os.path.join(schemas, "gen_wire.py"),
                               "--json", os.path.join(schemas, "wire.json"), "--python",
                               os.path.join(self.build_lib, "patro", "_wire_constants.py")])


setup(cmdclass={"build_py": BuildWithSchemas})

"""The classes flatc generated from schemas/*.fbs at build time (python/gen_schemas.py), and the
wire's constants generated from schemas/wire.json (schemas/gen_wire.py).

Installed, they sit in this package. In a build tree, meson writes them to BUILD/python/patro,
which the package's __path__ reaches through sys.path (pkgutil.extend_path in __init__).
"""
try:
    from . import _wire_generated as wire
    from . import _config_generated as config
    from . import _wire_constants as constants
except ImportError as e:  # pragma: no cover - a tree that was never built
    raise ImportError(
        "patro: the generated schema modules are missing (%s). Build them: meson builds "
        "BUILD/python/patro/_wire_generated.py and _wire_constants.py (put BUILD/python on "
        "PYTHONPATH), or 'pip install ./python' runs flatc and gen_wire.py itself." % e) from None

__all__ = ["wire", "config", "constants"]

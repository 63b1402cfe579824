"""The classes flatc generated from schemas/*.fbs at build time (python/gen_schemas.py).

Installed, they sit in this package. In a build tree, meson writes them to BUILD/python/patro,
which the package's __path__ reaches through sys.path (pkgutil.extend_path in __init__).
"""
try:
    from . import _wire_generated as wire
    from . import _config_generated as config
except ImportError as e:  # pragma: no cover - a tree that was never built
    raise ImportError(
        "patro: the generated schema modules are missing (%s). Build them: meson builds "
        "BUILD/python/patro/_wire_generated.py (put BUILD/python on PYTHONPATH), or "
        "'pip install ./python' runs flatc itself." % e) from None

__all__ = ["wire", "config"]

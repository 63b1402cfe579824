#!/usr/bin/env python3
"""Checks libpatro's layers from the sources (CI runs it; the build enforces the same graph).

- Every quoted include in libpatro/src/<family>/ resolves to a file of its own family, of a family
  below it (FAMILY_BELOW, the same table as libpatro/meson.build), or of the public headers.
- The graph of includes between families has no cycle.
- Nothing in libpatro includes from broker/, worker/, tools/ or tests/.
- Public headers include only public headers.
Prints what is wrong and exits 1; prints a one-line summary and exits 0 otherwise.
"""
import pathlib
import re
import sys

FAMILY_BELOW = {
    "base": [],
    "wire": ["base"],
    "locks": ["base"],
    "objects": ["wire", "base"],
    "broker": ["wire", "base"],
    "server": ["objects", "locks", "wire", "base"],
    "client": ["wire", "base"],
    "peer": ["server", "client", "objects", "locks", "wire", "base"],
}
GENERATED = re.compile(r"^(\w+_generated\.h|config_schema\.hpp)$")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    lib = root / "libpatro"
    src = lib / "src"
    public = lib / "include"
    problems = []

    owner = {}  # header file name -> family
    for family in FAMILY_BELOW:
        for f in (src / family).glob("*"):
            owner[f.name] = family
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        if d.name not in FAMILY_BELOW:
            problems.append(f"{d.relative_to(root)}: a folder that is no family (add it to FAMILY_BELOW)")
    for f in src.glob("*.?pp"):
        problems.append(f"{f.relative_to(root)}: a source outside every family")

    edges = {family: set() for family in FAMILY_BELOW}
    for family in FAMILY_BELOW:
        for f in sorted((src / family).glob("*.?pp")):
            for inc in INCLUDE.findall(f.read_text()):
                where = f"{f.relative_to(root)}: includes \"{inc}\""
                if re.search(r"(^|/)(broker|worker|tools|tests)/", inc) and not inc.startswith("patro/"):
                    problems.append(f"{where}, outside the library")
                    continue
                if inc.startswith("patro/"):
                    if not (public / inc).exists():
                        problems.append(f"{where}, which is no public header")
                    continue
                if inc == "wire_constants.hpp":
                    continue  # schemas/wire.json's rows: macros only, no includes; base reads it
                if GENERATED.match(inc):
                    if family in ("base",):
                        problems.append(f"{where}: generated schema code belongs to wire and above")
                    continue
                target = owner.get(pathlib.PurePath(inc).name)
                if target is None:
                    problems.append(f"{where}, which is in no family")
                    continue
                if target != family:
                    edges[family].add(target)
                    if target not in FAMILY_BELOW[family]:
                        problems.append(f"{where}: {family} may not include from {target} "
                                        f"(it sees {', '.join(FAMILY_BELOW[family]) or 'nothing'})")

    for f in sorted(public.rglob("*.hpp")):
        for inc in INCLUDE.findall(f.read_text()):
            if not inc.startswith("patro/") or not (public / inc).exists():
                problems.append(f"{f.relative_to(root)}: public header includes \"{inc}\"")

    # A cycle between families, whatever the table allows.
    state = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                problems.append("include cycle between families: " + " -> ".join(path + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for family in FAMILY_BELOW:
        if family not in state:
            visit(family, [family])

    for p in problems:
        print(p)
    if problems:
        return 1
    shown = "; ".join(f"{k} -> {', '.join(sorted(v))}" for k, v in edges.items() if v)
    print(f"layers: ok ({shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

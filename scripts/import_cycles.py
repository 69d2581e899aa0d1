#!/usr/bin/env python3
"""Import cycles between the modules of one crate.

Reads crates/<crate>/src/**/*.rs, builds a graph module -> module from `crate::...`,
`super::...`, `self::...` and child-module paths (in `use` statements and in code), at the granularity of the top-level
modules and, for each module named with --expand, of its children (by default the backend's
store: `store::entry`, `store::strategy`, ...). Test code (`#[cfg(test)]` modules) is left out:
a test may reach anywhere.

Prints every cycle (one per strongly connected component) and exits 1 when any is left after
removing the allowed edges, given as --allow FROM:TO (e.g. `--allow routes:app` for axum's
state pattern, where the router is built from the handlers and the handlers take the state).

    python3 scripts/import_cycles.py guestbook-backend --allow routes:app --allow app:routes
"""

import argparse
import pathlib
import re
import sys

USE = re.compile(r"\buse\s+([^;]+);", re.S)
PATH = re.compile(r"\b(\w+)((?:::\w+)+)")
TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*mod\s+(\w+)\s*;")
TEST_BLOCK = re.compile(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{")


def crate_dir(root: pathlib.Path, name: str) -> pathlib.Path:
    """crates/<dir> whose Cargo.toml names the package `name` (or the dir itself)."""
    for toml in sorted(root.glob("crates/*/Cargo.toml")):
        if re.search(rf'^name\s*=\s*"{re.escape(name)}"', toml.read_text(), re.M):
            return toml.parent
    direct = root / "crates" / name
    if direct.is_dir():
        return direct
    sys.exit(f"no crate named {name!r} under {root / 'crates'}")


def module_path(src: pathlib.Path, file: pathlib.Path) -> list[str]:
    """`store/strategy/lua.rs` -> [store, strategy, lua]; `lib.rs` -> []."""
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts and parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return parts


def expand_use(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (what is needed to name modules)."""
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [tree]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    items, depth, start = [], 0, 0
    for index, char in enumerate(inner):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(inner[start:index])
            start = index + 1
    items.append(inner[start:])
    return [path for item in items if item for path in expand_use(prefix + item)]


def strip(text: str) -> str:
    """The file without comments and without its `#[cfg(test)] mod x { ... }` blocks."""
    match = TEST_BLOCK.search(text)
    if match:
        text = text[: match.start()]
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def node(parts: list[str], expand: set[str]) -> str:
    if not parts:
        return "crate"
    if parts[0] in expand and len(parts) > 1:
        return f"{parts[0]}::{parts[1]}"
    return parts[0]


def graph(src: pathlib.Path, expand: set[str]) -> dict[str, set[str]]:
    files = sorted(src.rglob("*.rs"))
    modules = {tuple(module_path(src, file)) for file in files}
    tests = set()
    for file in files:
        here = module_path(src, file)
        for name in TEST_MOD.findall(file.read_text()):
            tests.add(tuple(here + [name]))
    edges: dict[str, set[str]] = {}
    for file in files:
        here = module_path(src, file)
        if any(tuple(here[: n + 1]) in tests for n in range(len(here))):
            continue
        if file.name == "main.rs" and file.parent == src:
            continue
        text = strip(file.read_text())
        paths = [p for tree in USE.findall(text) for p in expand_use(tree)]
        paths += [m.group(1) + m.group(2) for m in PATH.finditer(USE.sub("", text))]
        source = node(here, expand)
        for path in paths:
            segments = path.split("::")
            if segments[0] == "crate":
                target = segments[1:]
            elif segments[0] == "self" or tuple(here + segments[:1]) in modules:
                # `self::x` and a bare child name (`use entry::Page;` in `store/mod.rs`).
                target = here + [seg for seg in segments if seg != "self"]
            elif segments[0] == "super":
                # `super` is the parent of this file's module (a mod.rs is its own module).
                base = here[:-1]
                segments = segments[1:]
                while segments and segments[0] == "super":
                    base, segments = base[:-1], segments[1:]
                target = base + segments
            else:
                continue
            # Keep the longest prefix that names a module file.
            while target and tuple(target) not in modules:
                target = target[:-1]
            if not target:
                continue
            dest = node(target, expand)
            if dest != source:
                edges.setdefault(source, set()).add(dest)
    return edges


def components(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def cycle_in(group: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One cycle through the component's first module, for the report."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ())):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return group


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("crate", help="package name, e.g. guestbook-backend")
    parser.add_argument("--allow", action="append", default=[], metavar="FROM:TO")
    parser.add_argument("--expand", action="append", default=None, metavar="MODULE")
    parser.add_argument("--root", default=pathlib.Path(__file__).resolve().parent.parent)
    parser.add_argument("--graph", action="store_true", help="print every edge too")
    args = parser.parse_args()
    src = crate_dir(pathlib.Path(args.root), args.crate) / "src"
    expand = set(args.expand if args.expand is not None else ["store"])
    edges = graph(src, expand)
    if args.graph:
        for source in sorted(edges):
            print(f"{source} -> {', '.join(sorted(edges[source]))}")
    for allowed in args.allow:
        source, _, dest = allowed.partition(":")
        edges.get(source, set()).discard(dest)
    cycles = components(edges)
    for group in cycles:
        print("cycle: " + " -> ".join(cycle_in(group, edges)))
        print("  tangled together: " + ", ".join(group))
    if not cycles:
        print(f"{args.crate}: no import cycle" + (" (allowed: " + ", ".join(args.allow) + ")" if args.allow else ""))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())

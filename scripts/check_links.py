#!/usr/bin/env python3
"""Fails when a relative link in README.md or docs/*.md leads nowhere.

    scripts/check_links.py [FILE.md ...]     # default: README.md and docs/*.md

A link's file must exist in the repository, and a `#fragment` must name a heading of the
Markdown file it points at (GitHub's anchors: lower case, punctuation dropped, spaces as
hyphens). Links with a scheme (https:, mailto:) are not followed: this repository must stand on
its own, so a link may also not leave it (`../` above the repository's root).
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def anchors(path):
    """The anchors GitHub gives the headings of a Markdown file."""
    found, counts, fenced = set(), {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        text = line.lstrip("#").strip()
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def links(path):
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        if fenced:
            continue
        for match in LINK.finditer(line):
            yield number, match.group(1)


def broken(path):
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if ROOT not in dest.parents and dest != ROOT:
            yield f"{where}: outside the repository"
        elif not dest.exists():
            yield f"{where}: no such file"
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            yield f"{where}: no heading #{fragment} in {dest.relative_to(ROOT)}"


def main():
    files = [pathlib.Path(a).resolve() for a in sys.argv[1:]] or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    problems = [p for f in files for p in broken(f)]
    for problem in problems:
        print(problem)
    if problems:
        sys.exit(f"check_links: {len(problems)} broken link(s)")
    print(f"check_links: every relative link in {len(files)} files resolves")


if __name__ == "__main__":
    main()

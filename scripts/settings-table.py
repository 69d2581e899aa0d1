#!/usr/bin/env python3
"""The settings tables of docs/configuration.md, generated from the services' `--help`.

    target/debug/guestbook-backend --help | scripts/settings-table.py     # print one table
    scripts/settings-table.py --doc docs/configuration.md \\
        --backend target/debug/guestbook-backend --client target/debug/guestbook-client
    scripts/settings-table.py --check ...                                  # same, but only compare

Each option of clap's long help becomes one row: environment variable, flag, default, meaning.
With --doc, the text between `<!-- BEGIN GENERATED: NAME ... -->` and `<!-- END GENERATED: NAME -->`
is replaced by NAME's table (NAME is `backend` or `client`); everything outside the markers is
hand-written and kept as it is, so the notes around the tables live in the document itself.
--check writes nothing and fails, printing a diff, when the document differs from what the
binaries say (`make docs-check`, run by `make test`).
"""

import argparse
import difflib
import re
import subprocess
import sys

MARKERS = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[a-z]+)[^>]*-->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)


def rows(help_text):
    option = re.compile(r"^\s{2,}(?:-\w, )?--([a-z0-9-]+)(?: <\w+>)?\s*$")
    current = None
    for line in help_text.splitlines():
        match = option.match(line)
        if match:
            if current:
                yield current
            current = {"flag": match.group(1), "env": "", "default": "", "meaning": []}
            continue
        if current is None:
            continue
        text = line.strip()
        if text.startswith("[env: "):
            current["env"] = text[len("[env: "):].rstrip("]").split("=")[0]
        elif text.startswith("[default: "):
            current["default"] = text[len("[default: "):].rstrip("]")
        elif text and not current["meaning"]:
            current["meaning"].append(text)
    if current:
        yield current


def table(help_text):
    """The Markdown table of one program's settings, one line per setting."""
    lines = ["| env | flag | default | meaning |", "|---|---|---|---|"]
    for row in rows(help_text):
        if not row["env"]:  # --help, --version
            continue
        default = f"`{row['default']}`" if row["default"] else "unset"
        meaning = " ".join(row["meaning"]).replace("|", "\\|")
        lines.append(f"| `{row['env']}` | `--{row['flag']}` | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def help_of(binary):
    # An empty environment: clap shows a set variable's value in `[env: NAME=value]`, and the
    # document must not depend on the shell it was generated from.
    return subprocess.run([binary, "--help"], env={}, check=True, capture_output=True, text=True).stdout


def regenerate(document, tables):
    seen = set()

    def replace(match):
        name = match.group("name")
        if name not in tables:
            sys.exit(f"settings-table: unknown generated section {name!r}")
        seen.add(name)
        return match.group(1) + tables[name] + match.group(4)

    text = MARKERS.sub(replace, document)
    missing = set(tables) - seen
    if missing:
        sys.exit(f"settings-table: no generated section for {', '.join(sorted(missing))}")
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", help="the Markdown document whose generated sections to rewrite")
    parser.add_argument("--backend", help="the guestbook-backend binary")
    parser.add_argument("--client", help="the guestbook-client binary")
    parser.add_argument("--check", action="store_true", help="compare only; fail when it differs")
    args = parser.parse_args()
    if not args.doc:
        sys.stdout.write(table(sys.stdin.read()))
        return
    if not (args.backend and args.client):
        parser.error("--doc needs --backend and --client")
    with open(args.doc, encoding="utf-8") as f:
        current = f.read()
    wanted = regenerate(current, {"backend": table(help_of(args.backend)), "client": table(help_of(args.client))})
    if args.check:
        if wanted != current:
            sys.stdout.writelines(
                difflib.unified_diff(current.splitlines(True), wanted.splitlines(True), args.doc, "generated")
            )
            sys.exit(f"{args.doc} differs from the services' --help: run make docs")
        print(f"{args.doc}: settings tables match --help")
        return
    if wanted != current:
        with open(args.doc, "w", encoding="utf-8") as f:
            f.write(wanted)
    print(f"{args.doc}: settings tables written")


if __name__ == "__main__":
    main()

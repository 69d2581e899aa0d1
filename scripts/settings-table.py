#!/usr/bin/env python3
"""Prints the README's settings table from a program's `--help` output.

    target/release/guestbook-backend --help | scripts/settings-table.py

Each option of clap's long help becomes one row: flag, environment variable, default, meaning.
"""

import re
import sys


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


def main():
    print("| env | flag | default | meaning |")
    print("|---|---|---|---|")
    for row in rows(sys.stdin.read()):
        if not row["env"]:  # --help, --version
            continue
        default = f"`{row['default']}`" if row["default"] else "unset"
        meaning = " ".join(row["meaning"]).replace("|", "\\|")
        print(f"| `{row['env']}` | `--{row['flag']}` | {default} | {meaning} |")


if __name__ == "__main__":
    main()

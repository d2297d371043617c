"""Post-update check: run once by Copier after `copier update` has merged, in the real destination.

Reports every conflict marker the merge left, by file and line. Only when there is none, formats and
smoke-tests the project as the post-generation task does; a conflicted file is never formatted (a formatter
would fail on it, or worse, rewrite one side). Like the post-generation task, it exits with 0 unless
COPIER_TRANSFORMERS_MODEL_STRICT=1 asks for the status of the first problem (2 for conflicts).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from post_generate import CONFLICTS, check_project, finish, say

CONFLICT_START = "<<<<<<< "


def conflict_markers(root: Path) -> list[tuple[str, int]]:
    """(file, line) of every conflict start in the files git tracks or sees as new."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root, capture_output=True, text=True
    )
    markers = []
    for name in listed.stdout.splitlines():
        path = root / name
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue  # binary or unreadable: Copier writes conflict markers into text files only
        markers.extend((name, number) for number, line in enumerate(lines, start=1) if line.startswith(CONFLICT_START))
    return markers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formatter", choices=["ruff", "black+isort"], required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--smoke-test", choices=["true", "false"], required=True)
    parser.add_argument("--tiny-config", required=True, type=json.loads)
    args = parser.parse_args(argv)

    markers = conflict_markers(Path.cwd())
    if markers:
        say(f"update: {len(markers)} conflict(s) to resolve; nothing was formatted or smoke-tested:")
        for name, line in markers:
            print(f"  {name}:{line}", flush=True)
        say("resolve each block (keep what you need of both sides), then: python -m pytest tests")
        return finish([(CONFLICTS, f"{len(markers)} conflict(s) to resolve")])

    say("update: no conflicts")
    return finish(check_project(args.formatter, args.package, args.smoke_test == "true", args.tiny_config))


if __name__ == "__main__":
    sys.exit(main())

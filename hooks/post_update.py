"""Post-update check: run once by Copier after `copier update` has merged, in the real destination.

Reports every conflict marker the merge left, by file and line. Only when there is none, formats and
registers (in a Transformers checkout: an update may add heads), formats and smoke-tests the project as the
post-generation task does; a conflicted file is never formatted (a formatter
would fail on it, or worse, rewrite one side). Like the post-generation task, it exits with 0 unless
COPIER_TRANSFORMERS_MODEL_STRICT=1 asks for the status of the first problem (2 for conflicts).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from post_generate import CONFLICTS, Project, check_project, finish, say

CONFLICT_START = "<<<<<<< "


def conflict_markers(root: Path, paths: Sequence[str] = ()) -> list[tuple[str, int]]:
    """(file, line) of every conflict start in the files git tracks or sees as new, under `paths` if any."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *paths],
        cwd=root,
        capture_output=True,
        text=True,
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
    parser.add_argument("--registration", type=json.loads, default={}, help="set in a Transformers checkout")
    args = parser.parse_args(argv)
    project = Project(args.package, args.registration)

    # In a checkout only the model's own files can hold conflicts; the rest of the tree is not the template's
    markers = conflict_markers(Path.cwd(), project.generated_paths)
    if markers:
        say(f"update: {len(markers)} conflict(s) to resolve; nothing was formatted or smoke-tested:")
        for name, line in markers:
            print(f"  {name}:{line}", flush=True)
        say(f"resolve each block (keep what you need of both sides), then: {project.test_command}")
        return finish([(CONFLICTS, f"{len(markers)} conflict(s) to resolve")])

    say("update: no conflicts")
    return finish(check_project(args.formatter, project, args.smoke_test == "true", args.tiny_config))


if __name__ == "__main__":
    sys.exit(main())

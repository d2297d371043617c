"""Post-update check: run once by Copier after `copier update` has merged, in the real destination.

Reports every conflict block the merge left, one line each (file:line). Only when there is none, registers (in a
Transformers checkout: an update may add heads), formats and smoke-tests the project as the post-generation task
does, with two differences: it formats only the Python files the update wrote (the destination was committed
before it), never the user's own modules, and it applies no fix that deletes code (an unused import the user wrote
stays). A conflicted file is never formatted (a formatter would fail on it, or worse, rewrite one side). Like the
post-generation task, it exits with 0 unless COPIER_TRANSFORMERS_MODEL_STRICT=1 asks for the status of the first
problem (2 for conflicts).
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


def git_lines(root: Path, *args: str) -> list[str]:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return result.stdout.splitlines()


def conflict_markers(root: Path, paths: Sequence[str] = ()) -> list[tuple[str, int]]:
    """(file, line) of every conflict block's start in the files git tracks or sees as new, under `paths` if any."""
    # An unmerged file is listed once per index stage (base, ours, theirs): each name counts once
    names = dict.fromkeys(git_lines(root, "ls-files", "--cached", "--others", "--exclude-standard", "--", *paths))
    markers = []
    for name in names:
        path = root / name
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue  # binary or unreadable: Copier writes conflict markers into text files only
        markers.extend((name, number) for number, line in enumerate(lines, start=1) if line.startswith(CONFLICT_START))
    return markers


def updated_python_files(root: Path, paths: Sequence[str] = ()) -> list[str]:
    """The Python files the update changed or added, under `paths` if any: Copier updates a committed destination,
    so these are what it wrote, and files of the user's own that it did not write are not among them."""
    # Relative to `root` and inside it, as ls-files lists them: a model may sit in a folder of a larger repository
    changed = git_lines(root, "diff", "--relative", "--name-only", "HEAD", "--", *paths)
    added = git_lines(root, "ls-files", "--others", "--exclude-standard", "--", *paths)
    return sorted(name for name in {*changed, *added} if name.endswith(".py") and (root / name).is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formatter", choices=["ruff", "black+isort"], required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--smoke-test", choices=["true", "false"], required=True)
    parser.add_argument("--tiny-config", required=True, type=json.loads)
    parser.add_argument("--registration", type=json.loads, default={}, help="set in a Transformers checkout")
    parser.add_argument("--smoke-inputs", type=json.loads, default={}, help="model class -> rank of its input ids")
    args = parser.parse_args(argv)
    project = Project(args.package, args.registration, args.smoke_inputs)

    # In a checkout only the model's own files can hold conflicts; the rest of the tree is not the template's
    markers = conflict_markers(Path.cwd(), project.generated_paths)
    if markers:
        say(f"update: {len(markers)} conflict(s) to resolve; nothing was formatted or smoke-tested:")
        for name, line in markers:
            print(f"  {name}:{line}", flush=True)
        say(f"resolve each block (keep what you need of both sides), then: {project.test_command}")
        return finish([(CONFLICTS, f"{len(markers)} conflict(s) to resolve")])

    updated = updated_python_files(Path.cwd(), project.generated_paths)
    say(f"update: no conflicts; {len(updated)} Python file(s) written by the update")
    smoke = args.smoke_test == "true"
    return finish(check_project(args.formatter, project, smoke, args.tiny_config, updated_files=updated))


if __name__ == "__main__":
    sys.exit(main())

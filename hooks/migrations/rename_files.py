"""`before` migration: `git mv` the files a template version renames, so that the user's edits follow them.

Copier runs it in the destination before it merges the new version, with no answers in its context: the
answers file gives the names the paths use. Idempotent: a file already moved, or deleted by the user, is skipped.

    python rename_files.py --version 0.2.0 --answers-file .copier-answers.yml
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

RENAMES = Path(__file__).with_name("renames.yml")


def renames_of(version: str, answers: dict) -> list[tuple[str, str]]:
    entries = yaml.safe_load(RENAMES.read_text())["renames"] or []
    names = {key: answers[key] for key in ("package_name", "model_type")}
    return [
        (entry["from"].format(**names), entry["to"].format(**names))
        for entry in entries
        if str(entry["version"]) == version
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the template version whose renames to apply")
    parser.add_argument("--answers-file", type=Path, default=Path(".copier-answers.yml"))
    args = parser.parse_args(argv)

    answers = yaml.safe_load(args.answers_file.read_text())
    for old, new in renames_of(args.version, answers):
        if not Path(old).exists() or Path(new).exists():
            continue
        Path(new).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "mv", old, new], check=True)
        print(f"[copier-transformers-model] {args.version}: moved {old} -> {new}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

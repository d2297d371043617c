"""Update every model of a repository from the template, one commit per model, stopping at the first conflict.

    python path/to/copier-transformers-model/hooks/update_models.py [--vcs-ref REF] ANSWERS_FILE [ANSWERS_FILE ...]

Each answers file names one generated model: its destination is the file's folder (or the folder above, for
answers kept in a `.copier/` folder). The repository must be committed and clean; after each model's update the
changes are committed, unless the merge left conflicts: then the script lists them and stops, leaving that
model's update uncommitted for you to resolve (the models before it are committed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml
from post_update import conflict_markers


def destination_of(answers_file: Path) -> Path:
    folder = answers_file.resolve().parent
    return folder.parent if folder.name == ".copier" else folder


def git(repository: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repository, capture_output=True, text=True, check=True).stdout


def update_model(answers_file: Path, vcs_ref: str | None) -> bool:
    """Update one model; True when it merged without conflicts and was committed."""
    destination = destination_of(answers_file)
    repository = Path(git(destination, "rev-parse", "--show-toplevel").strip())
    model_name = yaml.safe_load(answers_file.read_text()).get("model_name", destination.name)
    command = [sys.executable, "-m", "copier", "update", "--trust", "--defaults", "--quiet"]
    command += ["--answers-file", str(answers_file.resolve().relative_to(destination))]
    command += ["--vcs-ref", vcs_ref] if vcs_ref else []
    print(f"== {model_name} ({answers_file})", flush=True)
    if subprocess.run([*command, str(destination)]).returncode != 0:
        print(f"copier update failed for {model_name}; stopping", file=sys.stderr)
        return False
    markers = conflict_markers(repository)
    if markers:
        print(f"{model_name}: resolve these conflicts, commit, then run this again for the remaining models:")
        print("\n".join(f"  {name}:{line}" for name, line in markers))
        return False
    git(repository, "add", "--all")
    if git(repository, "status", "--porcelain").strip():
        version = yaml.safe_load(answers_file.read_text()).get("_commit", "the latest version")
        git(repository, "commit", "--quiet", "-m", f"Update {model_name} to copier-transformers-model {version}")
        print(f"{model_name}: updated and committed", flush=True)
    else:
        print(f"{model_name}: already up to date", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("answers_files", nargs="+", type=Path, help="one answers file per model")
    parser.add_argument("--vcs-ref", help="template version to update to (default: the latest tag)")
    args = parser.parse_args(argv)
    for answers_file in args.answers_files:
        if not update_model(answers_file, args.vcs_ref):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

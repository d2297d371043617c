"""Migration of the files a template version renames, so that the user's edits follow them in a 3-way merge.

Copier merges a file by its path: for a renamed file it has no common ancestor, and every line the template or the
user changed would be a conflict. So this runs twice around the merge, in the destination. It reads the paths'
names from the answers file; an entry that names an answer the file lacks is of the other layout (a checkout's
answers have no package_name).

- `--stage before` (the answers still name the old version): renders the old and the new version into temporary
  folders, merges the user's file with both (`git merge-file`: the old render is the ancestor), and keeps the result
  in the git folder. The old path gets back the old render and leaves the index, so that Copier's merge deletes it
  cleanly; the new path is left to the new render.
- `--stage after`: writes the kept result to the new path (conflict blocks included, which the post-update check
  reports), removes the old path, and stages the move where git tracked the file.

Idempotent: a file already moved, or deleted by the user, is skipped. Where a version cannot be rendered, the file is
moved as it is (`git mv`), and Copier's merge then marks every difference.

    python rename_files.py --stage before --version 0.14.0 --answers-file .copier-answers.yml --template PATH
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import yaml

RENAMES = Path(__file__).with_name("renames.yml")
PREFIX = "[copier-transformers-model]"


def renames_of(version: str, answers: dict) -> list[tuple[str, str]]:
    entries = yaml.safe_load(RENAMES.read_text())["renames"] or []
    names = {key: answers[key] for key in ("package_name", "model_type") if answers.get(key)}
    renames = []
    for entry in entries:
        if str(entry["version"]) != version:
            continue
        try:
            renames.append((entry["from"].format(**names), entry["to"].format(**names)))
        except KeyError:
            continue
    return renames


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=check)


def is_tracked(path: str) -> bool:
    return git("ls-files", "--error-unmatch", path, check=False).returncode == 0


def kept_results(version: str) -> Path:
    """Where the merged files wait between the two stages: inside the git folder, out of every tree."""
    return Path(git("rev-parse", "--git-dir").stdout.strip()) / "copier-transformers-model" / "renames" / version


def render(template: str, ref: str, answers: dict, destination: Path) -> bool:
    """The template at `ref` with the user's answers, without tasks; False when it cannot be rendered."""
    import copier  # Copier's own interpreter runs the migrations

    data = {key: value for key, value in answers.items() if not key.startswith("_")}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            copier.run_copy(
                template, destination, vcs_ref=ref, data=data, defaults=True, unsafe=True, skip_tasks=True, quiet=True
            )
    except Exception as error:  # any failure leaves the plain move
        print(f"{PREFIX} cannot render {template} at {ref} ({error}); renamed files are moved as they are", flush=True)
        return False
    return True


def merge(yours: Path, ancestor: Path, theirs: Path, old_version: str) -> tuple[str, int]:
    """The 3-way merge of the user's file and the new render, and its number of conflict blocks."""
    labels = ["-L", "before updating", "-L", old_version, "-L", "after updating"]
    result = git("merge-file", "-p", *labels, str(yours), str(ancestor), str(theirs), check=False)
    if result.returncode < 0:
        raise RuntimeError(f"git merge-file failed: {result.stderr.strip()}")
    return result.stdout, result.returncode


def before(version: str, answers: dict, template: str) -> None:
    renames = [
        (old, new) for old, new in renames_of(version, answers) if Path(old).exists() and not Path(new).exists()
    ]
    if not renames:
        return
    with tempfile.TemporaryDirectory() as folder:
        old_render, new_render = Path(folder) / "old", Path(folder) / "new"
        rendered = render(template, str(answers["_commit"]), answers, old_render) and render(
            template, "HEAD", answers, new_render
        )
        kept = kept_results(version)
        manifest = []
        for old, new in renames:
            if not (rendered and (old_render / old).is_file() and (new_render / new).is_file()):
                move_as_it_is(version, old, new)
                continue
            merged, conflicts = merge(Path(old), old_render / old, new_render / new, str(answers["_commit"]))
            (kept / new).parent.mkdir(parents=True, exist_ok=True)
            (kept / new).write_text(merged, encoding="utf-8")
            tracked = is_tracked(old)
            if tracked:
                git("rm", "--cached", "--quiet", old)
            shutil.copyfile(old_render / old, old)
            manifest.append({"from": old, "to": new, "tracked": tracked, "conflicts": conflicts})
        if manifest:
            (kept / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def move_as_it_is(version: str, old: str, new: str) -> None:
    Path(new).parent.mkdir(parents=True, exist_ok=True)
    if is_tracked(old):
        git("mv", old, new)
    else:
        Path(old).rename(new)
    print(f"{PREFIX} {version}: moved {old} -> {new}", flush=True)


def after(version: str) -> None:
    kept = kept_results(version)
    if not (kept / "manifest.json").is_file():
        return
    for entry in json.loads((kept / "manifest.json").read_text(encoding="utf-8")):
        new = Path(entry["to"])
        new.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept / entry["to"], new)
        Path(entry["from"]).unlink(missing_ok=True)
        if entry["tracked"]:
            git("add", "--", entry["to"])
        merged = "with your edits" + (f", {entry['conflicts']} conflict(s)" if entry["conflicts"] else "")
        print(f"{PREFIX} {version}: moved {entry['from']} -> {entry['to']} ({merged})", flush=True)
    shutil.rmtree(kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["before", "after"], required=True)
    parser.add_argument("--version", required=True, help="the template version whose renames to apply")
    parser.add_argument("--answers-file", type=Path, default=Path(".copier-answers.yml"))
    parser.add_argument(
        "--template", help="the template's folder (Copier's _copier_conf.src_path), for --stage before"
    )
    args = parser.parse_args(argv)

    if args.stage == "before":
        before(args.version, yaml.safe_load(args.answers_file.read_text()), args.template)
    else:
        after(args.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())

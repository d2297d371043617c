"""Post-generation task: format the generated files, smoke-test the model, make the project a git repository.

Copier runs this with its own interpreter from `_tasks`. Every problem is reported in one line with what to do,
and the last line sums them up. By default the task exits with 0 even then: Copier deletes a new destination when a
task fails, and the generated files must survive a failed check. With COPIER_TRANSFORMERS_MODEL_STRICT=1 it exits
with the status of the first problem (pair it with `copier copy --no-cleanup`, which keeps the files):
    1 smoke test failed, 2 conflicts left by an update, 3 smoke test skipped (no torch or transformers),
    4 formatting failed or no formatter, 5 git failed or missing, 7 the installed Transformers registers the
    model_type itself, 8 the answers record the template as a relative path (`copier update` would not find it).
In a Transformers checkout it first registers the model (register_in_tree.py); a refused registration stops
everything else and always exits with 6, whatever the mode: the files are there, but the checkout does not know them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from register_in_tree import REFUSED, register

HOOKS_DIR = Path(__file__).resolve().parent
STRICT_VARIABLE = "COPIER_TRANSFORMERS_MODEL_STRICT"
# Exit statuses in strict mode (6 is register_in_tree.REFUSED); smoke_test.py exits with SMOKE_FAILED, SMOKE_SKIPPED
# or MODEL_TYPE_TAKEN itself
SMOKE_FAILED, CONFLICTS, SMOKE_SKIPPED, FORMAT_FAILED, GIT_FAILED = 1, 2, 3, 4, 5
MODEL_TYPE_TAKEN, RELATIVE_TEMPLATE = 7, 8

Problem = tuple[int, str]


@dataclass(frozen=True)
class Project:
    """Where the generated files are: a package, or a model folder of a Transformers checkout."""

    module: str  # dotted name of the folder that holds the model's modules
    registration: dict  # what register_in_tree.py inserts; empty for a package
    input_ranks: dict = field(default_factory=dict)  # model class -> rank of its input ids (2 where absent)

    @property
    def in_tree(self) -> bool:
        return bool(self.registration)

    @property
    def source_dir(self) -> Path:
        return Path("src", *self.module.split("."))

    @property
    def tests_dir(self) -> Path:
        return Path("tests", "models", self.registration["model_type"]) if self.in_tree else Path("tests")

    @property
    def test_command(self) -> str:
        # A checkout need not be installed: its src/ goes on the path
        return f"{'PYTHONPATH=src ' if self.in_tree else ''}python -m pytest {self.tests_dir}"

    @property
    def generated_paths(self) -> list[str]:
        """Every path the template writes, where an update can leave conflicts."""
        if not self.in_tree:
            return []
        model_type = self.registration["model_type"]
        return [str(self.source_dir), str(self.tests_dir), f"docs/source/en/model_doc/{model_type}.md", ".copier"]


def say(message: str) -> None:
    print(f"[copier-transformers-model] {message}", flush=True)


def find_tool(name: str, *interpreters: str) -> list[str] | None:
    """The command that runs `name`: on PATH, else as a module of one of the given interpreters."""
    if executable := shutil.which(name):
        return [executable]
    for interpreter in interpreters:
        probe = [
            interpreter,
            "-c",
            f"import importlib.util, sys; sys.exit(importlib.util.find_spec({name!r}) is None)",
        ]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return [interpreter, "-m", name]
    return None


def user_python() -> str | None:
    """The interpreter the user works with: `python` on PATH, not Copier's own."""
    return shutil.which("python") or shutil.which("python3")


def format_files(formatter: str, paths: list[str], interpreters: list[str], *, generated_only: bool = True) -> bool:
    """Format `paths` with the project's formatter. Files that may hold the user's code (generated_only=False, after
    an update) get only fixes that move code, never ones that delete it: sorting imports, not removing them."""
    if formatter == "ruff":
        fixes = ["check", "--fix", "--quiet"] if generated_only else ["check", "--select=I", "--fix", "--quiet"]
        steps = [("ruff", fixes), ("ruff", ["format", "--quiet"])]
    else:
        steps = [("isort", ["--quiet"]), ("black", ["--quiet"])]
    for tool, arguments in steps:
        command = find_tool(tool, *interpreters)
        if command is None:
            say(f"format: {tool} not found; install it (pip install {tool}) and run: {tool} {' '.join(arguments)} .")
            return False
        started = time.perf_counter()
        result = subprocess.run([*command, *arguments, *paths], capture_output=True, text=True)
        if result.returncode != 0:
            say(f"format: {shlex.join([tool, *arguments, *paths])} failed; fix what it reports and run it again:")
            print(f"{result.stdout}{result.stderr}".rstrip(), flush=True)
            return False
        say(f"format: {tool} {arguments[0]} ({time.perf_counter() - started:.2f} s)")
    return True


def smoke_test(python: str | None, project: Project, tiny_config: str) -> int:
    """0 when the model builds, runs and reloads; else SMOKE_FAILED, SMOKE_SKIPPED or MODEL_TYPE_TAKEN."""
    rerun = project.test_command
    if python is None:
        say(f"smoke test skipped: no `python` on PATH. Later, in the project: {rerun}")
        return SMOKE_SKIPPED
    say(f"smoke test: {project.module} with a tiny config")
    command = [
        python,
        str(HOOKS_DIR / "smoke_test.py"),
        "--src=src",
        f"--package={project.module}",
        f"--tiny-config={tiny_config}",
        f"--input-ranks={json.dumps(project.input_ranks)}",
    ]
    result = subprocess.run(command)
    if result.returncode == 0:
        say("smoke test passed")
        return 0
    if result.returncode == MODEL_TYPE_TAKEN:
        say("smoke test passed, but the installed Transformers registers the same model_type (see above)")
        return MODEL_TYPE_TAKEN
    if result.returncode == SMOKE_SKIPPED:
        say(f"smoke test skipped. Install torch and transformers (pip install -e '.[dev]'), then run: {rerun}")
        return SMOKE_SKIPPED
    say(f"smoke test FAILED (traceback above). Every generated file was kept. Rerun the checks with: {rerun}")
    return SMOKE_FAILED


def relative_template_fix(answers_file: Path) -> str | None:
    """What is wrong and the command that fixes it, when the answers record the template by a path relative to the
    folder Copier ran in (`copier copy . ../x`): `copier update` resolves `_src_path` inside the project instead."""
    import yaml  # Copier's own dependency: this runs in Copier's interpreter

    source = str((yaml.safe_load(answers_file.read_text(encoding="utf-8")) or {}).get("_src_path", ""))
    if not source or "://" in source or source.startswith(("git@", "gh:", "gl:")) or Path(source).is_absolute():
        return None
    # The shell's working folder when it started Copier (tasks run in the destination, PWD is inherited)
    started_in = Path(os.environ.get("PWD", "/nonexistent"))
    template = (started_in / source).resolve()
    if not (template / "copier.yml").is_file():
        template = Path("/absolute/path/of/the/template")
    answers = shlex.quote(str(answers_file))
    return (
        f'{answers_file} records the template as "{source}", relative to where Copier ran: `copier update` would '
        f"look for it inside the project. Record its absolute path with: perl -pi -e 's|^_src_path: .*|_src_path: "
        f"{template}|' {answers} && git commit -qm 'Record the template by its absolute path' {answers}"
    )


def make_git_repository() -> bool:
    """`copier update` needs the project in git; a project inside another repository stays as it is."""
    by_hand = "git init && git add --all && git commit -m 'Generate the model'"
    if shutil.which("git") is None:
        say(f"git not found: install it and run `{by_hand}` before `copier update`")
        return False
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True)
    if inside.returncode == 0:
        return True
    has_identity = subprocess.run(["git", "config", "user.email"], capture_output=True).returncode == 0
    steps = [["git", "init", "--quiet"], ["git", "add", "--all"]]
    if has_identity:
        steps.append(["git", "commit", "--quiet", "-m", "Generate the model from copier-transformers-model"])
    for command in steps:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            say(f"git: `{shlex.join(command)}` failed ({result.stderr.strip()}); run `{by_hand}` yourself")
            return False
    if has_identity:
        say("git: initialised the repository with one commit")
    else:
        say("git: initialised the repository; commit the files (git commit -m 'Generate the model') before updating")
    return True


def finish(problems: list[Problem]) -> int:
    """The closing line; the exit status is 0 unless strict mode asks for the first problem's."""
    if not problems:
        say("done")
        return 0
    summary = "; ".join(description for _, description in problems)
    say(f"done with {len(problems)} problem(s): {summary}. Every generated file was kept.")
    strict = os.environ.get(STRICT_VARIABLE, "0") not in ("", "0")
    return problems[0][0] if strict or problems[0][0] == REFUSED else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formatter", choices=["ruff", "black+isort"], required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--smoke-test", choices=["true", "false"], required=True)
    parser.add_argument("--operation", required=True, help="Copier's _copier_operation: copy or update")
    parser.add_argument("--tiny-config", required=True, type=json.loads)
    parser.add_argument("--registration", type=json.loads, default={}, help="set in a Transformers checkout")
    parser.add_argument("--smoke-inputs", type=json.loads, default={}, help="model class -> rank of its input ids")
    parser.add_argument("--answers-file", type=Path, help="Copier's answers file, relative to the destination")
    args = parser.parse_args(argv)
    project = Project(args.package, args.registration, args.smoke_inputs)

    if args.operation != "copy":
        # Copier also runs tasks in the temporary renders it makes while updating; none of them is the project,
        # and the post-update check (post_update.py) reports on the real one.
        return 0

    problems = check_project(args.formatter, project, args.smoke_test == "true", args.tiny_config)
    if args.answers_file and args.answers_file.is_file() and (fix := relative_template_fix(args.answers_file)):
        say(f"template: {fix}")
        problems.append((RELATIVE_TEMPLATE, "the answers record the template by a relative path"))
    if project.in_tree:
        # The checkout is the user's repository: committing is theirs to do, on their branch
        if not any(status == REFUSED for status, _ in problems):
            say("git: commit the model's files on your branch before any `copier update`")
    elif not make_git_repository():
        problems.append((GIT_FAILED, "the project is not under git"))
    return finish(problems)


def check_project(
    formatter: str, project: Project, smoke: bool, tiny_config: dict, updated_files: list[str] | None = None
) -> list[Problem]:
    """Register (in a checkout), format, then smoke-test: the steps after a copy and after a clean update. After an
    update only `updated_files`, the Python files it wrote, are formatted: the user's own modules stay as they are."""
    if project.in_tree and register(project.registration) == REFUSED:
        return [(REFUSED, "the checkout does not register the model")]
    python = user_python()
    interpreters = [sys.executable] + ([python] if python else [])
    if updated_files is None:
        paths = [str(path) for path in (project.source_dir, project.tests_dir) if path.exists()]
    else:
        paths = updated_files
    problems = []
    if paths and not format_files(formatter, paths, interpreters, generated_only=updated_files is None):
        problems.append((FORMAT_FAILED, "the files are not formatted"))
    smoke_status = smoke_test(python, project, json.dumps(tiny_config)) if smoke else 0
    if smoke_status == SMOKE_FAILED:
        problems.append((SMOKE_FAILED, "the smoke test failed"))
    elif smoke_status == SMOKE_SKIPPED:
        problems.append((SMOKE_SKIPPED, "the smoke test could not run"))
    elif smoke_status == MODEL_TYPE_TAKEN:
        problems.append((MODEL_TYPE_TAKEN, "the installed Transformers registers the model_type too"))
    return problems


if __name__ == "__main__":
    sys.exit(main())

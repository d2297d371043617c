"""Post-generation task: format the generated files, smoke-test the model, make the project a git repository.

Copier runs this with its own interpreter from `_tasks`. It never fails the copy: Copier deletes a new
destination when a task fails, and the generated files must survive a failed check. Every problem is
reported with the command that repeats the check.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HOOKS_DIR = Path(__file__).resolve().parent
SMOKE_SKIPPED = 3


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


def format_files(formatter: str, paths: list[str], interpreters: list[str]) -> bool:
    if formatter == "ruff":
        steps = [("ruff", ["check", "--fix", "--quiet"]), ("ruff", ["format", "--quiet"])]
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
            say(f"format: {shlex.join([tool, *arguments, *paths])} reported:\n{result.stdout}{result.stderr}")
            return False
        say(f"format: {tool} {arguments[0]} ({time.perf_counter() - started:.2f} s)")
    return True


def smoke_test(python: str | None, package: str, tiny_config: str) -> bool:
    rerun = "python -m pytest tests"
    if python is None:
        say(f"smoke test skipped: no `python` on PATH. Later, in the project: {rerun}")
        return False
    say(f"smoke test: {package} with a tiny config")
    command = [
        python,
        str(HOOKS_DIR / "smoke_test.py"),
        "--src=src",
        f"--package={package}",
        f"--tiny-config={tiny_config}",
    ]
    result = subprocess.run(command)
    if result.returncode == 0:
        say("smoke test passed")
        return True
    if result.returncode == SMOKE_SKIPPED:
        say(f"smoke test skipped. Install torch and transformers (pip install -e '.[dev]'), then run: {rerun}")
    else:
        say(f"smoke test FAILED (traceback above). Every generated file was kept. Rerun the checks with: {rerun}")
    return False


def make_git_repository() -> None:
    """`copier update` needs the project in git; a project inside another repository stays as it is."""
    if shutil.which("git") is None:
        say("git not found: put the project under git before running `copier update`")
        return
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True)
    if inside.returncode == 0:
        return
    subprocess.run(["git", "init", "--quiet"], check=True)
    subprocess.run(["git", "add", "--all"], check=True)
    has_identity = subprocess.run(["git", "config", "user.email"], capture_output=True).returncode == 0
    if has_identity:
        subprocess.run(
            ["git", "commit", "--quiet", "-m", "Generate the model from copier-transformers-model"], check=True
        )
        say("git: initialised the repository with one commit")
    else:
        say("git: initialised the repository; commit the files (git commit -m 'Generate the model') before updating")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formatter", choices=["ruff", "black+isort"], required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--smoke-test", choices=["true", "false"], required=True)
    parser.add_argument("--operation", required=True, help="Copier's _copier_operation: copy or update")
    parser.add_argument("--tiny-config", required=True, type=json.loads)
    args = parser.parse_args(argv)

    if args.operation != "copy":
        # Copier also runs tasks in the temporary renders it makes while updating; none of them is the project.
        say(f"skipped during `copier {args.operation}`; check the result with: python -m pytest tests")
        return 0

    python = user_python()
    interpreters = [sys.executable] + ([python] if python else [])
    paths = [path for path in (f"src/{args.package}", "tests") if Path(path).exists()]
    format_files(args.formatter, paths, interpreters)
    if args.smoke_test == "true":
        smoke_test(python, args.package, json.dumps(args.tiny_config))
    make_git_repository()
    return 0


if __name__ == "__main__":
    sys.exit(main())

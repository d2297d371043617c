"""Sessions of the template's own checks: lint, render, tests (and refresh_snapshots after a Transformers release)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
REQUIREMENTS = ROOT / "requirements-dev.txt"
CONSTRAINTS = ROOT / "constraints.txt"
# `render` and `tests` need the same packages (torch, transformers, copier): they share one environment.
SHARED_ENV = ROOT / ".nox" / "template-env"
LINT_TOOLS = ["ruff>=0.15", "black>=25", "isort>=6"]

# The oldest Copier that copier.yml's _min_copier_version admits; the `min_copier` session tests it.
MIN_COPIER = "9.18.0"
# The Transformers release QEfficient's main branch pins: a decoder with QEfficient files must run on it too.
QEFFICIENT_TRANSFORMERS = "5.5.4"

nox.options.sessions = ["lint", "tests", "min_copier", "qefficient_pin"]
nox.options.reuse_venv = "yes"


def shared_environment(session: nox.Session) -> tuple[Path, dict[str, str]]:
    """Create or refresh the shared environment; returns its bin directory and the env vars that activate it."""
    bin_dir = SHARED_ENV / ("Scripts" if sys.platform == "win32" else "bin")
    python = bin_dir / ("python.exe" if sys.platform == "win32" else "python")
    stamp = SHARED_ENV / "requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes() + CONSTRAINTS.read_bytes()).hexdigest()
    if not python.exists():
        session.run(sys.executable, "-m", "venv", str(SHARED_ENV), external=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        session.run(str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS), external=True)
        stamp.write_text(wanted)
    # On PATH first, so that the hooks' `python` (the smoke test's interpreter) is this environment's too
    return bin_dir, {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(SHARED_ENV)}


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Run the template's test suite: render matrix, generated projects' own tests, hooks, validators, oracle."""
    bin_dir, env = shared_environment(session)
    session.run(str(bin_dir / "python"), "-m", "pytest", *(session.posargs or ["tests"]), env=env, external=True)


@nox.session(venv_backend="none")
def render(session: nox.Session) -> None:
    """Render every answer set of tests/answers/ (with hooks) into build/renders/<name>."""
    bin_dir, env = shared_environment(session)
    output = ROOT / "build" / "renders"
    shutil.rmtree(output, ignore_errors=True)
    for answers in sorted((ROOT / "tests" / "answers").glob("*.yml")):
        destination = output / answers.stem
        session.log(f"rendering {answers.name} -> {destination}")
        command = [str(bin_dir / "copier"), "copy", "--trust", "--defaults", "--quiet", "--vcs-ref=HEAD"]
        command.append(f"--data-file={answers}")
        session.run(*command, str(ROOT), str(destination), env=env, external=True)


@nox.session
def min_copier(session: nox.Session) -> None:
    """The update, hook and validator tests with the oldest supported Copier (the `tests` session has the newest)."""
    session.install("-r", str(REQUIREMENTS), f"copier=={MIN_COPIER}")
    targets = ["tests/test_update.py", "tests/test_hooks.py", "tests/test_validators.py"]
    targets.append(
        "tests/test_in_tree.py::test_update_with_the_models_answers_file_keeps_edits_and_registers_new_heads"
    )
    session.run("python", "-m", "pytest", *(session.posargs or targets))


@nox.session
def qefficient_pin(session: nox.Session) -> None:
    """The QEfficient tests (generated decoder and its QEff classes) under the Transformers that QEfficient pins."""
    session.install(
        "-c",
        str(CONSTRAINTS),
        f"transformers=={QEFFICIENT_TRANSFORMERS}",
        *["torch", "safetensors", "copier>=9.18,<10", "pytest>=8", "pyyaml>=6", "ruff>=0.15"],
    )
    check = f"import transformers; assert transformers.__version__ == {QEFFICIENT_TRANSFORMERS!r}, transformers.__version__"
    session.run("python", "-c", check)
    session.run("python", "-m", "pytest", *(session.posargs or ["tests/test_qefficient.py"]))


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Benchmarks of copy, update, generated models against their twins and generated test suites: BENCHMARKS.md."""
    bin_dir, env = shared_environment(session)
    command = "nox -s bench" + (f" -- {' '.join(session.posargs)}" if session.posargs else "")
    script = str(ROOT / "benchmarks" / "bench.py")
    session.run(str(bin_dir / "python"), script, f"--command={command}", *session.posargs, env=env, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, black and isort on the template's own Python (the generated code is checked by the tests)."""
    session.install(*LINT_TOOLS)
    targets = ["noxfile.py", "hooks", "tests", "benchmarks"]
    session.run("ruff", "check", *targets)
    session.run("ruff", "format", "--check", *targets)
    session.run("black", "--check", *targets)
    session.run("isort", "--check-only", *targets)


@nox.session(venv_backend="none", default=False)
def refresh_snapshots(session: nox.Session) -> None:
    """Rewrite the snapshots in hooks/data/ (model types, tokenizer classes) from the shared environment's Transformers."""
    bin_dir, env = shared_environment(session)
    session.run(str(bin_dir / "python"), "hooks/update_transformers_snapshots.py", env=env, external=True)

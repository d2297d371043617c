"""Sessions of the template's own checks: lint, render, tests; newest and oldest track Transformers releases.

Default (CI): lint, tests, upstream_checks, min_copier, qefficient_pin at QEfficient's pin, all under constraints.txt's
pins. A maintainer runs `nox -s newest` when upstream releases (newest Transformers, tokenizers, huggingface-hub,
Copier and ruff the ranges admit) and `nox -s oldest` (the lowest Transformers generated projects declare); both
record what they passed with in COMPATIBILITY.md. Then `nox -s refresh_snapshots` after a Transformers release, and
before a release `nox -s fuzz` (the free-text fuzz test with 2,000 examples), `nox -s knob_matrix` (every knob
combination's own suite) and `nox -s every_release` (updates from every release), which CI's 30 minutes leave out.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent
REQUIREMENTS = ROOT / "requirements-dev.txt"
CONSTRAINTS = ROOT / "constraints.txt"
# `render` and `tests` need the same packages (torch, transformers, copier): they share one environment.
SHARED_ENV = ROOT / ".nox" / "template-env"
LINT_TOOLS = ["ruff>=0.15", "black>=25", "isort>=6"]

# The oldest Copier that copier.yml's _min_copier_version admits; the `min_copier` session tests it.
MIN_COPIER = "9.18.0"
# The lowest Transformers of the range generated projects declare (copier.yml's transformers_oldest); the
# `oldest` session tests it, and the newest release is constraints.txt's pin (`tests`) or PyPI's (`newest`).
OLDEST_TRANSFORMERS = "5.25.0"
# A decoder with QEfficient files keeps the Transformers range QEfficient pins (copier.yml's
# transformers_requirement): its lowest release, QEfficient's pin, and its newest.
QEFFICIENT_TRANSFORMERS = ["5.5.4", "5.23.0"]
# A QEfficient decoder of the last release updated to this one, run in its own Transformers range
QEFFICIENT_UPDATE_TEST = "test_a_qefficient_decoder_updates_keeping_the_cache_argument_of_its_transformers_range"
# The tests of the answer set with QEfficient files, which the other sessions' Transformers skip
QEFFICIENT_ANSWER_SET_TESTS = [
    "test_answer_set_renders_clean_and_passes_its_own_tests",
    "test_answer_set_imports_silently",
]
# Installing another Transformers moves the libraries it pins within its own ranges too
TRANSFORMERS_COMPANIONS = ["tokenizers", "huggingface-hub"]
# What `newest` and `oldest` run: the numerical oracles, every answer set's generated suite, the hooks, and the
# drift signals (snapshots of the installed Transformers)
# pytest-xdist: one worker per core, each test file on one worker, so that a module's fixtures are built once
ON_EVERY_CORE = ["--numprocesses=auto", "--dist=loadfile"]
TRACKING_TESTS = [
    "tests/test_decoder_oracles.py",
    "tests/test_encoder_oracles.py",
    "tests/test_bart_oracle.py",
    "tests/test_bert_oracle.py",
    "tests/test_render_matrix.py::test_answer_set_renders_clean_and_passes_its_own_tests",
    "tests/test_render_matrix.py::test_answer_set_imports_silently",
    "tests/test_hooks.py",
]
COMPATIBILITY = ROOT / "COMPATIBILITY.md"

nox.options.reuse_venv = "yes"


def pinned_name(line: str) -> str | None:
    """The package a constraints line pins, or None for comments and blank lines."""
    line = line.split("#")[0].strip()
    return canonicalize_name(Requirement(line).name) if line else None


def pinned_version(name: str) -> str:
    for line in CONSTRAINTS.read_text().splitlines():
        if pinned_name(line) == canonicalize_name(name):
            return str(Requirement(line.split("#")[0]).specifier).removeprefix("==")
    raise LookupError(f"{name} is not pinned in {CONSTRAINTS.name}")


def install_requirements(session: nox.Session, *moved: str, upgrade: bool = False) -> None:
    """requirements-dev.txt under constraints.txt's pins, except the packages in `moved`: a requirement with a
    version (`transformers==5.5.4`) replaces that package's line, a bare name only loses its pin (with
    upgrade=True, the newest release its range admits)."""
    moves = {canonicalize_name(Requirement(spec).name): Requirement(spec) for spec in moved}
    unpinned = set(moves)
    if "transformers" in moves:
        unpinned.update(canonicalize_name(name) for name in TRANSFORMERS_COMPANIONS)
    constraints = [line for line in CONSTRAINTS.read_text().splitlines() if pinned_name(line) not in unpinned]
    requirements = []
    for line in REQUIREMENTS.read_text().splitlines():
        if line.startswith("-c "):
            continue  # replaced by the filtered constraints below
        name = pinned_name(line)
        requirements.append(str(moves[name]) if name in moves and moves[name].specifier else line)
    # Beside the session's environment: session.create_tmp() would point TMPDIR into this repository, and the tests'
    # temporary projects would then sit inside its git work tree
    folder = Path(session.virtualenv.location)
    (folder / "constraints.txt").write_text("\n".join(constraints) + "\n")
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    upgrade_arguments = ["--upgrade", "--upgrade-strategy=eager"] if upgrade else []
    extra = [str(spec) for spec in moves.values()]
    session.install(
        *upgrade_arguments, "-r", str(folder / "requirements.txt"), "-c", str(folder / "constraints.txt"), *extra
    )


VERSIONS_SCRIPT = """
import json, platform
from importlib.metadata import version
names = ["transformers", "tokenizers", "huggingface-hub", "torch", "copier", "ruff"]
print(json.dumps({"python": platform.python_version(), **{name: version(name) for name in names}}))
"""


# `oldest` joins the default sessions whenever its Transformers is not the one `tests` runs with. Of the QEfficient
# range, CI tests QEfficient's pin, the end users are held to; a maintainer runs both ends (`nox -s qefficient_pin`).
nox.options.sessions = [
    "lint",
    "tests",
    "upstream_checks",
    "min_copier",
    f"qefficient_pin(transformers='{QEFFICIENT_TRANSFORMERS[0]}')",
]
if pinned_version("transformers") != OLDEST_TRANSFORMERS:
    nox.options.sessions.append("oldest")


# A release's CHANGELOG heading names the commit its tag goes on: `## 0.3.0 (commit 80cbfff0892f)`
RELEASE_HEADING = re.compile(r"^## (?P<version>\S+)(?: \(commit (?P<commit>[0-9a-f]{7,40})\))?$", re.MULTILINE)


def template_version() -> str:
    """The newest version CHANGELOG.md has a section for."""
    return RELEASE_HEADING.search((ROOT / "CHANGELOG.md").read_text()).group("version")


def releases(changelog: str) -> list[tuple[str, str | None]]:
    """(version, commit) of every CHANGELOG section, newest first; commit is None where the heading names none."""
    return [(match["version"], match["commit"]) for match in RELEASE_HEADING.finditer(changelog)]


def git_output(repository: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repository, capture_output=True, text=True)


def create_release_tags(repository: Path) -> list[str]:
    """Create the PEP 440 tag of every CHANGELOG release that the repository lacks, at the commit its heading
    names; returns the tags created. Tags do not travel with the branch, so every clone makes them with this.
    Refuses (ValueError) a release without a commit, one whose commit is missing (a shallow clone) or not an
    ancestor of the next release, and a tag that already points elsewhere."""
    found = releases((repository / "CHANGELOG.md").read_text())
    full_commits = {}
    for version, commit in found:
        if commit is None:
            raise ValueError(f"CHANGELOG.md: the heading of {version} names no commit: `## {version} (commit ...)`")
        resolved = git_output(repository, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
        if resolved.returncode != 0:
            raise ValueError(
                f"{version}: commit {commit} is not in this clone (a shallow clone? git fetch --unshallow)"
            )
        full_commits[version] = resolved.stdout.strip()
    for (newer, _), (older, _) in zip(found, found[1:], strict=False):
        if Version(newer) <= Version(older):
            raise ValueError(f"CHANGELOG.md lists {newer} above {older}: newest first, each version higher")
        ancestry = git_output(repository, "merge-base", "--is-ancestor", full_commits[older], full_commits[newer])
        if ancestry.returncode != 0:
            raise ValueError(f"the commit of {older} is not an ancestor of the commit of {newer}")
    created = []
    for version, _ in reversed(found):
        existing = git_output(repository, "rev-parse", "--verify", "--quiet", f"refs/tags/{version}^{{commit}}")
        if existing.returncode == 0:
            if existing.stdout.strip() != full_commits[version]:
                raise ValueError(
                    f"tag {version} points at {existing.stdout.strip()}, CHANGELOG.md at {full_commits[version]}"
                )
            continue
        tagging = git_output(repository, "tag", version, full_commits[version])
        if tagging.returncode != 0:
            raise ValueError(f"git tag {version} failed: {tagging.stderr.strip()}")
        created.append(version)
    return created


@nox.session(venv_backend="none", default=False)
def tags(session: nox.Session) -> None:
    """Create the release tags CHANGELOG.md names (idempotent); `copier copy` and `copier update` need them."""
    try:
        created = create_release_tags(ROOT)
    except ValueError as error:
        session.error(str(error))
    versions = [version for version, _ in releases((ROOT / "CHANGELOG.md").read_text())]
    session.log(f"created tags {', '.join(created)}" if created else f"every release is tagged: {', '.join(versions)}")


def record_compatibility(session: nox.Session, name: str) -> None:
    """Write the versions this session passed with into COMPATIBILITY.md, one row per template version and
    session, when it ran its whole set of tests outside CI."""
    output = session.run("python", "-c", VERSIONS_SCRIPT, silent=True)
    versions = json.loads(output.strip().splitlines()[-1])
    session.log(f"passed with {versions}")
    if os.environ.get("CI") or session.posargs:
        return  # CI leaves the file alone, and a part of the tests is no record
    columns = ["python", "transformers", "tokenizers", "huggingface-hub", "torch", "copier", "ruff"]
    row_key = f"| {template_version()} | `{name}` |"
    cells = " | ".join(versions[column] for column in columns)
    row = f"{row_key} {cells} | {datetime.date.today().isoformat()} |"
    lines = COMPATIBILITY.read_text().splitlines()
    rows = [line for line in lines if line.startswith(row_key)]
    if rows:
        lines[lines.index(rows[0])] = row
    else:
        lines.append(row)
    COMPATIBILITY.write_text("\n".join(lines) + "\n")


def development_requirements() -> dict[str, Requirement]:
    """requirements-dev.txt's requirements by canonical name, without its `-c` line."""
    lines = [line for line in REQUIREMENTS.read_text().splitlines() if not line.startswith("-c ")]
    return {pinned_name(line): Requirement(line.split("#")[0]) for line in lines if pinned_name(line)}


def has_the_pinned_requirements() -> bool:
    """Whether the interpreter running nox has every requirement of requirements-dev.txt, at constraints.txt's pin
    where there is one: as after the README's set-up, `python -m pip install -r requirements-dev.txt`."""
    lines = CONSTRAINTS.read_text().splitlines()
    pins = {pinned_name(line): Requirement(line.split("#")[0]) for line in lines if pinned_name(line)}
    for requirement in development_requirements().values():
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        pin = pins.get(canonicalize_name(requirement.name))
        if not requirement.specifier.contains(installed) or (pin and not pin.specifier.contains(installed)):
            return False
    return True


def shared_environment(session: nox.Session) -> tuple[Path, dict[str, str]]:
    """The environment `render` and `tests` run in: nox's own when it has the pinned requirements (CI's, after the
    README's set-up), else a shared one created or refreshed here. Returns its bin directory and the env vars that
    activate it."""
    if has_the_pinned_requirements():
        bin_dir = Path(sys.executable).parent
        return bin_dir, {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": sys.prefix}
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
    # The drift signals belong to `newest`: a new upstream release must not fail unrelated work
    arguments = session.posargs or ["tests", "-m", "not drift", *ON_EVERY_CORE]
    session.run(str(bin_dir / "python"), "-m", "pytest", *arguments, env=env, external=True)


NEWEST_TRACKED = ["transformers", "tokenizers", "huggingface-hub", "copier", "ruff"]


def newest_on_the_index(pip_index_output: str, name: str) -> Version | None:
    """The newest release in the output of `pip index versions NAME`, which opens with `NAME (VERSION)`."""
    match = re.search(rf"^{re.escape(name)} \(([^)]+)\)", pip_index_output, re.MULTILINE | re.IGNORECASE)
    return Version(match.group(1)) if match else None


def why_not_installable(pip_output: str) -> str:
    """pip's own reason, from the output of a failed `pip install --dry-run`: its ERROR lines, without the list of
    every version it saw."""
    errors = [line.removeprefix("ERROR: ") for line in pip_output.splitlines() if line.startswith("ERROR: ")]
    return "; ".join(re.sub(r" \(from versions: [^)]*\)", "", error) for error in errors) or "pip gave no reason"


def warn_about_newer_releases(session: nox.Session, installed: dict[str, str]) -> None:
    """A release on the index newer than what the session installed is one that requirements-dev.txt's range leaves
    out or that cannot be installed here (its own requirements cannot be met): the session then tests the older
    one, and says so rather than passing quietly."""
    ranges = development_requirements()
    for name in NEWEST_TRACKED:
        listing = session.run("python", "-m", "pip", "index", "versions", name, silent=True, success_codes=[0, 1])
        newest = newest_on_the_index(listing or "", name)
        if newest is None:
            session.warn(f"could not read the releases of {name} on the package index")
            continue
        if newest <= Version(installed[name]):
            continue
        if name in ranges and not ranges[name].specifier.contains(newest):
            reason = f"requirements-dev.txt asks for {ranges[name]}"
        else:
            attempt = session.run(
                *["python", "-m", "pip", "install", "--dry-run", f"{name}=={newest}"],
                silent=True,
                success_codes=[0, 1],
            )
            reason = why_not_installable(attempt or "")
        session.warn(
            f"{name} {newest} is the index's newest release, but this session tests {installed[name]}: {reason}"
        )


@nox.session(default=False)
def newest(session: nox.Session) -> None:
    """The tracking tests with the newest Transformers, tokenizers, huggingface-hub, Copier and ruff the ranges admit;
    a newer release that cannot be installed is reported, with pip's reason."""
    install_requirements(session, *NEWEST_TRACKED, upgrade=True)
    installed = session.run("python", "-c", VERSIONS_SCRIPT, silent=True)
    warn_about_newer_releases(session, json.loads(installed.strip().splitlines()[-1]))
    session.run(
        "python", "-m", "pytest", *(session.posargs or [*TRACKING_TESTS, "-m", "drift or not drift", *ON_EVERY_CORE])
    )
    record_compatibility(session, "newest")


@nox.session(default=False)
def oldest(session: nox.Session) -> None:
    """The tracking tests with the lowest Transformers of the range generated projects declare."""
    install_requirements(session, f"transformers=={OLDEST_TRANSFORMERS}")
    session.run("python", "-c", version_check(OLDEST_TRANSFORMERS))
    session.run("python", "-m", "pytest", *(session.posargs or [*TRACKING_TESTS, "-m", "not drift", *ON_EVERY_CORE]))
    record_compatibility(session, "oldest")


def version_check(transformers_version: str) -> str:
    return (
        f"import transformers; assert transformers.__version__ == {transformers_version!r}, transformers.__version__"
    )


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


# Upstream's utils/, docs/ and test helpers, beside this repository (CI has them): see their README
UPSTREAM_SNAPSHOT = ROOT.parent / "shared" / "upstream-transformers"


@nox.session(venv_backend="none")
def upstream_checks(session: nox.Session) -> None:
    """Upstream's repository checks (`make check-repo`'s, mlinter, upstream's ruff) on one model of each family with
    every head, copied into a Transformers checkout: one built from the sdist and upstream's snapshot (CI's), or the
    clone at PATH (`nox -s upstream_checks -- PATH`, the generated tests too). Fails on what names a generated model
    (tests/upstream_checks.py says how the checks are read)."""
    clone_given = any(not argument.startswith("-") for argument in session.posargs)
    if not clone_given and not (UPSTREAM_SNAPSHOT / "utils").is_dir():
        session.skip(
            f"no Transformers clone given (nox -s upstream_checks -- PATH) and no snapshot at {UPSTREAM_SNAPSHOT}"
        )
    bin_dir, env = shared_environment(session)
    script = str(ROOT / "tests" / "upstream_checks.py")
    session.run(str(bin_dir / "python"), script, *session.posargs, env=env, external=True)


@nox.session
def min_copier(session: nox.Session) -> None:
    """The update, hook and validator tests with the oldest supported Copier (the `tests` session has the newest); of
    the hook tests, those where Copier runs the hooks (the others run a hook script themselves)."""
    install_requirements(session, f"copier=={MIN_COPIER}")
    targets = ["tests/test_update.py", "tests/test_hooks.py", "tests/test_validators.py"]
    targets.append(
        "tests/test_in_tree.py::test_update_with_the_models_answers_file_keeps_edits_and_registers_new_heads"
    )
    session.run("python", "-m", "pytest", *(session.posargs or [*targets, "-m", "not hook_script", *ON_EVERY_CORE]))


@nox.session
@nox.parametrize("transformers", QEFFICIENT_TRANSFORMERS)
def qefficient_pin(session: nox.Session, transformers: str) -> None:
    """The QEfficient tests (generated decoder and its QEff classes) at both ends of its Transformers range."""
    install_requirements(session, f"transformers=={transformers}")
    session.run("python", "-c", version_check(transformers))
    targets = ["tests/test_qefficient.py", f"tests/test_releases.py::{QEFFICIENT_UPDATE_TEST}"]
    targets += [f"tests/test_render_matrix.py::{test}[qefficient_decoder]" for test in QEFFICIENT_ANSWER_SET_TESTS]
    session.run("python", "-m", "pytest", *(session.posargs or [*targets, *ON_EVERY_CORE]))
    record_compatibility(session, f"qefficient_pin({transformers})")


@nox.session(venv_backend="none", default=False)
def every_release(session: nox.Session) -> None:
    """The release tests with a project from every release updated to the newest, not only from the first releases,
    the quick start and the release before the newest (the default sessions'), and the rename check between every
    two releases, not only from the newest to HEAD."""
    bin_dir, env = shared_environment(session)
    rename_check = "tests/test_update.py::test_every_rename_between_the_template_tags_has_a_migration"
    arguments = session.posargs or ["tests/test_releases.py", rename_check, *ON_EVERY_CORE]
    session.run(
        str(bin_dir / "python"), "-m", "pytest", *arguments, env={**env, "TEST_EVERY_RELEASE": "1"}, external=True
    )


@nox.session(venv_backend="none", default=False)
def knob_matrix(session: nox.Session) -> None:
    """Every knob combination copied with the hook and tested with its own suite, not only the few that hold every
    knob value (the default sessions')."""
    bin_dir, env = shared_environment(session)
    arguments = session.posargs or ["tests/test_knob_matrix.py", "tests/test_knob_matrix_encoders.py", *ON_EVERY_CORE]
    session.run(str(bin_dir / "python"), "-m", "pytest", *arguments, env={**env, "KNOB_MATRIX": "all"}, external=True)


@nox.session(venv_backend="none", default=False)
def fuzz(session: nox.Session) -> None:
    """The free-text fuzz tests with 2,000 examples instead of the default sessions' 60."""
    bin_dir, env = shared_environment(session)
    arguments = session.posargs or ["tests/test_free_text.py", *ON_EVERY_CORE]
    session.run(
        str(bin_dir / "python"), "-m", "pytest", *arguments, env={**env, "FUZZ_EXAMPLES": "2000"}, external=True
    )


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
    session.install("-c", str(CONSTRAINTS), *LINT_TOOLS)
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

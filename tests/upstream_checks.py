"""Upstream's repository checks on the models the template generates into a Transformers checkout.

    python tests/upstream_checks.py [PATH] [--model-tests | --no-model-tests]     (nox -s upstream_checks -- ...)

One model of each family, with every head, is copied into the checkout with the template's hooks (formatting,
registration, smoke test) and committed. Then upstream's checks run as `make check-repo` runs them (each script's
`CHECKER_CONFIG` arguments in utils/), `check_repo.py` one sub-check at a time (it stops at its first failure),
transformers-mlinter on the model folders, and the ruff release the checkout pins; with --model-tests, the generated
tests with upstream's real testers too.

A checkout rarely passes every check without any new model (a development snapshot, a release older or newer than
its utils/), so the checks are differential: a check that fails with the models runs again on the commit before them.
A finding is a line the run with the models prints and the run without them does not. It fails the run when it names
a generated model, or when the check passed without the models. ruff, mlinter and the tests look at the new files
only: any finding fails.

PATH: a clone of huggingface/transformers with a `main` branch (check_docstrings and check_modular_conversion diff
against it). The models go into a temporary worktree of its HEAD: the clone's own work tree is left as it was. The
generated tests run by default there. Without PATH: a checkout built from the installed release's sdist and the
upstream snapshot beside this repository (../shared/upstream-transformers/: utils/, docs/ and the tests' helpers), as
CI runs it; there the `tests` session already runs the generated tests on the same checkout
(test_in_tree.py::test_generated_tests_pass_with_upstreams_common_testers), so they run only with --model-tests.
"""

from __future__ import annotations

import argparse
import ast
import collections
import concurrent.futures
import dataclasses
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers import git, mlinter_command
from transformers_checkout import MODELS, UPSTREAM_SNAPSHOT, answers_for, build_checkout, copy_into, download_sdist

TEMPLATE = Path(__file__).resolve().parent.parent
# Shared with the in-tree tests' fixture (pytest's cache folder): PyPI is needed once
SDIST_CACHE = TEMPLATE / ".pytest_cache" / "d" / "transformers-sdist"
UPSTREAM_RUFF_CACHE = TEMPLATE / ".nox" / "upstream-ruff"

# utils/checkers.py's names of the checks the issue of record lists (#23), and the two that read what the
# registration hook edits (inits, auto_mappings). Left out: types (upstream's own files), update_metadata (the Hub),
# doctest_list, pipeline_typing and modeling_rules_doc (nothing of a new model's).
CHECKER_NAMES = [
    "copies",
    "docstrings",
    "config_docstrings",
    "config_attributes",
    "modeling_structure",
    "modular_conversion",
    "doc_toc",
    "dummies",
    "add_dates",
    "init_isort",
    "sort_auto_mappings",
    "inits",
    "auto_mappings",
]

# Runs each call of check_repo_quality() on its own, so that one failing sub-check does not hide the others
CHECK_REPO_SCRIPT = """
import ast, json, sys
sys.path.insert(0, "utils")
import check_repo
tree = ast.parse(open("utils/check_repo.py", encoding="utf-8").read())
quality = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "check_repo_quality")
calls = [node.value.func.id for node in quality.body if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
results = {}
for name in calls:
    if name == "print":
        continue
    try:
        getattr(check_repo, name)()
        results[name] = {"returncode": 0, "output": ""}
    except BaseException as error:
        results[name] = {"returncode": 1, "output": f"{type(error).__name__}: {error}"}
print("CHECK_REPO_RESULTS " + json.dumps(results))
"""
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
DURATION = re.compile(r"\b\d+(\.\d+)?\s?(s|ms|seconds)\b")


@dataclasses.dataclass
class Result:
    returncode: int
    output: str

    def lines(self) -> list[str]:
        """The output's lines without colours, timings and blank lines: what two runs can be compared by."""
        text = ANSI_ESCAPE.sub("", self.output)
        return [DURATION.sub("<time>", line.rstrip()) for line in text.splitlines() if line.strip()]


@dataclasses.dataclass
class Check:
    name: str
    command: list[str]
    differential: bool = True  # False: it looks at the new files only, every finding counts

    def run(self, checkout: Path) -> Result:
        result = subprocess.run(self.command, cwd=checkout, env=check_environment(checkout), capture_output=True)
        output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
        return Result(result.returncode, output)


def check_environment(checkout: Path) -> dict[str, str]:
    """The checkout's `transformers` first on the path, as its `pip install -e .` would have it, and no network."""
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    plain = {"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return os.environ | offline | plain | {"PYTHONPATH": str(checkout / "src")}


def checker_configs(checkout: Path) -> dict[str, dict]:
    """The CHECKER_CONFIG of every script in utils/, read as utils/checkers.py reads them (without importing)."""
    configs = {}
    for script in sorted((checkout / "utils").glob("*.py")):
        for node in ast.parse(script.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and [getattr(target, "id", None) for target in node.targets] == [
                "CHECKER_CONFIG"
            ]:
                config = ast.literal_eval(node.value)
                configs[config["name"]] = config | {"script": script.name}
    return configs


def name_pattern(models: dict[str, tuple[str, str, str]]) -> re.Pattern:
    """What names a generated model in a check's output: its class prefix, its model type, its doc and Hub id."""
    names = set()
    for model_name, model_type, _ in models.values():
        names |= {model_name, model_type, model_type.replace("_", "-")}
    return re.compile("|".join(sorted(map(re.escape, names), key=len, reverse=True)))


def lines_only_with(with_models: Result, without_models: Result) -> list[str]:
    """The lines the run with the models prints and the run without them does not, each as often as it is new."""
    baseline = collections.Counter(without_models.lines())
    new = []
    for line in with_models.lines():
        if baseline[line]:
            baseline[line] -= 1
        else:
            new.append(line)
    return new


def new_findings(with_models: Result, without_models: Result | None, names: re.Pattern) -> list[str]:
    """What counts against the models: nothing when the check passes with them; every line when it looks at the
    new files only (no run without them); else the lines it prints only with them, all of them when it passed
    without the models (at least its exit status), and those that name a model when it failed without them too."""
    if with_models.returncode == 0:
        return []
    if without_models is None:
        return with_models.lines() or [f"exit status {with_models.returncode}"]
    new = lines_only_with(with_models, without_models)
    if without_models.returncode == 0:
        return new or [f"exit status {with_models.returncode}, 0 without the models"]
    return [line for line in new if names.search(line)]


def split_check_repo(result: Result) -> dict[str, Result]:
    """check_repo's sub-checks as results of their own, from CHECK_REPO_SCRIPT's output; the whole run when it
    stopped before (an import error)."""
    marker = next((line for line in result.output.splitlines() if line.startswith("CHECK_REPO_RESULTS ")), None)
    if marker is None:
        return {"repo": result}
    found = json.loads(marker.removeprefix("CHECK_REPO_RESULTS "))
    return {f"repo.{name}": Result(**outcome) for name, outcome in found.items()}


def upstream_ruff(checkout: Path) -> Path:
    """The ruff executable of the release the checkout pins (its dependency table, as `make style` uses it),
    installed once into .nox/upstream-ruff/<version>."""
    table = (checkout / "src/transformers/dependency_versions_table.py").read_text(encoding="utf-8")
    requirement = re.search(r'"ruff": "(ruff[^"]*)"', table).group(1)
    target = UPSTREAM_RUFF_CACHE / re.sub(r"[^\w.]+", "_", requirement)
    executable = target / "bin" / "ruff"
    if not executable.exists():
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), requirement]
        subprocess.run(command, check=True)
    return executable


def model_paths() -> list[Path]:
    """The folders of the generated models' code and tests, relative to the checkout."""
    model_types = [model_type for _, model_type, _ in MODELS.values()]
    return [
        Path(folder) / model_type
        for folder in ("src/transformers/models", "tests/models")
        for model_type in model_types
    ]


def checks_for(checkout: Path, model_tests: bool) -> tuple[list[Check], list[str]]:
    """The checks to run, and the notes on those the checkout lacks."""
    configs = checker_configs(checkout)
    checks = [Check("repo", [sys.executable, "-c", CHECK_REPO_SCRIPT])]
    notes = []
    for name in CHECKER_NAMES:
        if name not in configs:
            notes.append(f"{name}: utils/ has no checker of that name here, not run")
            continue
        arguments = configs[name]["check_args"]
        checks.append(Check(name, [sys.executable, f"utils/{configs[name]['script']}", *arguments]))
    paths = [str(path) for path in model_paths()]
    checks.append(Check("mlinter (its bundled rules)", mlinter_command(*paths), differential=False))
    ruff = str(upstream_ruff(checkout))
    checks.append(Check("upstream's ruff check", [ruff, "check", *paths], differential=False))
    checks.append(Check("upstream's ruff format", [ruff, "format", "--check", *paths], differential=False))
    if model_tests:
        for _, model_type, _ in MODELS.values():
            command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"tests/models/{model_type}"]
            checks.append(Check(f"tests/models/{model_type}", command, differential=False))
    return checks, notes


def run_all(checks: list[Check], checkout: Path) -> dict[str, Result]:
    """Every check, two at a time (most import the whole library: one core each)."""
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for check, result in zip(checks, pool.map(lambda check: check.run(checkout), checks), strict=True):
            results |= split_check_repo(result) if check.name == "repo" else {check.name: result}
    return results


def build_snapshot_checkout(destination: Path, snapshot: Path = UPSTREAM_SNAPSHOT) -> Path:
    """The installed release's sdist plus upstream's utils/ and docs/ from the snapshot, committed on `main`."""
    version = importlib.metadata.version("transformers")
    checkout = build_checkout(download_sdist(version, SDIST_CACHE), destination)
    shutil.copytree(snapshot / "utils", checkout / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(checkout / "docs/source/en")
    shutil.copytree(snapshot / "docs/source/en", checkout / "docs/source/en")
    git(checkout, "add", "--all")
    git(checkout, "commit", "--quiet", "-m", "upstream's utils/ and docs/ (snapshot)")
    git(checkout, "branch", "--force", "main")
    return checkout


def render_models(checkout: Path) -> None:
    for family in MODELS:
        print(f"copying the {family} ({', '.join(answers_for(family)['heads'])}) into the checkout", flush=True)
        result = copy_into(TEMPLATE, checkout, answers_for(family), vcs_ref="HEAD")
        if result.returncode != 0:
            raise SystemExit(f"copier copy of the {family} failed:\n{result.stdout}{result.stderr}")
    git(checkout, "add", "--all")
    git(checkout, "commit", "--quiet", "-m", "models generated by copier-transformers-model")


def report(results: dict[str, Result], baselines: dict[str, Result], checks: list[Check]) -> int:
    names = name_pattern(MODELS)
    whole = {check.name for check in checks if not check.differential}
    failures = 0
    for name, result in results.items():
        findings = new_findings(result, None if name in whole else baselines.get(name), names)
        if findings:
            failures += 1
            print(f"FAIL  {name}")
            # The end holds what matters most: a traceback's error, pytest's summary
            if len(findings) > 40:
                print(f"        ... {len(findings) - 40} lines before these")
            print("\n".join(f"        {line}" for line in findings[-40:]))
        elif result.returncode == 0:
            print(f"ok    {name}")
        else:
            # Upstream's own failure on this checkout; what else changed is shown, as it may still be of interest
            unnamed = lines_only_with(result, baselines[name])
            changed = f"{len(unnamed)} new lines, none names a model" if unnamed else "the same way"
            print(f"ok    {name} (fails without the models too, {changed})")
            for line in unnamed[:5]:
                print(f"        {line}")
    return failures


def run(checkout: Path, model_tests: bool) -> int:
    has_main = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "main^{commit}"], cwd=checkout, capture_output=True
    )
    if has_main.returncode != 0:
        raise SystemExit(
            f"{checkout} has no `main` branch: check_docstrings and check_modular_conversion diff against it"
        )
    base = git(checkout, "rev-parse", "HEAD").strip()
    render_models(checkout)
    with_models = git(checkout, "rev-parse", "HEAD").strip()
    checks, notes = checks_for(checkout, model_tests)
    started = time.monotonic()
    results = run_all(checks, checkout)
    failed = {check.name for check in checks if check.differential} & {
        name.split(".")[0] for name, result in results.items() if result.returncode
    }
    failed_checks = [check for check in checks if check.name in failed]
    again = ", ".join(sorted(failed)) or "none"
    print(
        f"ran {len(results)} checks in {time.monotonic() - started:.0f} s; again without the models: {again}",
        flush=True,
    )
    git(checkout, "checkout", "--quiet", "--detach", base)
    baselines = run_all(failed_checks, checkout)
    git(checkout, "checkout", "--quiet", "--detach", with_models)
    failures = report(results, baselines, checks)
    for note in notes:
        print(f"note  {note}")
    print(
        f"{failures} check(s) report the generated models"
        if failures
        else "every check passes for the generated models"
    )
    return 1 if failures else 0


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clone", nargs="?", type=Path, help="a huggingface/transformers clone with a `main` branch")
    tests = parser.add_mutually_exclusive_group()
    tests.add_argument(
        "--model-tests", dest="model_tests", action="store_true", default=None, help="default with a clone"
    )
    tests.add_argument("--no-model-tests", dest="model_tests", action="store_false", help="default without one")
    options = parser.parse_args(arguments)
    model_tests = options.model_tests if options.model_tests is not None else options.clone is not None
    with tempfile.TemporaryDirectory(prefix="upstream-checks-") as folder:
        if options.clone is None:
            if not (UPSTREAM_SNAPSHOT / "utils").is_dir():
                raise SystemExit(f"no clone given, and upstream's snapshot is not at {UPSTREAM_SNAPSHOT}")
            return run(build_snapshot_checkout(Path(folder) / "transformers"), model_tests)
        clone = options.clone.resolve()
        worktree = Path(folder) / "transformers"
        # Interrupted (Ctrl-C, a CI timeout), the worktree is still removed from the clone
        signal.signal(signal.SIGTERM, lambda signal_number, frame: sys.exit(128 + signal_number))
        git(clone, "worktree", "add", "--quiet", "--detach", str(worktree), "HEAD")
        try:
            return run(worktree, model_tests)
        finally:
            git(clone, "worktree", "remove", "--force", str(worktree))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Every answer combination renders to clean, formatted code; each answer set's own tests pass."""

from __future__ import annotations

import ast
import concurrent.futures
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    ANSWER_SETS,
    FAMILY_HEADS,
    FAMILY_KNOBS,
    load_answer_set,
    outside_declared_transformers,
    ruff,
    run_generated_test_suites,
    run_generated_tests,
)

KNOB_COMBINATIONS = [
    {"family": family, **dict(zip(knobs, values, strict=True))}
    for family, knobs in FAMILY_KNOBS.items()
    for values in itertools.product(*knobs.values())
]


def head_subsets(family: str) -> list[list[str]]:
    heads = FAMILY_HEADS[family]
    return [list(subset) for size in range(len(heads) + 1) for subset in itertools.combinations(heads, size)]


CACHE_DIRS = {".git", ".ruff_cache", ".pytest_cache", "__pycache__"}
# Jinja's openings; a closing `}}` is legitimate Python (nested f-string format specs), and `${{` opens an
# expression of a GitHub workflow
JINJA_LEFTOVER = re.compile(r"(?<!\$)\{\{|\{%|\{#")


def combination_id(answers: dict) -> str:
    knobs = FAMILY_KNOBS[answers["family"]]
    return "-".join([answers["family"]] + [f"{knob}={answers[knob]}" for knob in knobs])


def assert_clean_text(project: Path) -> None:
    """No Jinja leftovers, trailing spaces, runs of blank lines or missing final newlines in any non-empty file."""
    for path in sorted(project.rglob("*")):
        if not path.is_file() or CACHE_DIRS.intersection(path.parts):
            continue
        text = path.read_text()
        name = path.relative_to(project)
        assert not JINJA_LEFTOVER.search(text), f"Jinja syntax left in {name}"
        if not text:
            continue  # an empty package marker, as upstream's tests/models/<x>/__init__.py
        assert text.endswith("\n") and not text.endswith("\n\n"), f"{name} must end with exactly one newline"
        for number, line in enumerate(text.splitlines(), start=1):
            assert line == line.rstrip(), f"trailing whitespace in {name}:{number}"
        assert "\n\n\n\n" not in text, f"more than two blank lines in a row in {name}"
        if path.suffix == ".py":
            ast.parse(text, filename=str(name))


def assert_ruff_clean(*paths: Path) -> None:
    check = ruff("check", "--no-cache", *map(str, paths))
    assert check.returncode == 0, check.stdout + check.stderr
    formatting = ruff("format", "--check", "--no-cache", *map(str, paths))
    assert formatting.returncode == 0, formatting.stdout + formatting.stderr


def test_every_family_knob_and_head_combination_renders_clean_code(render):
    """Every family x knob x heads combination: parseable, ruff-clean, formatting-stable."""
    projects = []
    for knobs in KNOB_COMBINATIONS:
        for heads in head_subsets(knobs["family"]):
            answers = {**knobs, "heads": heads, "model_name": "Matrix", "package_name": "matrix"}
            project = render(answers, name="matrix")
            assert_clean_text(project)
            projects.append(project)
    assert len(projects) == sum(2 ** len(FAMILY_HEADS[knobs["family"]]) for knobs in KNOB_COMBINATIONS)
    assert_ruff_clean(*projects)


def assert_suite_passed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


def assert_generated_tests_pass(project: Path) -> None:
    assert_suite_passed(run_generated_tests(project))


NAMES_OF_24_CHARACTERS = {"model_name": "A" + "b" * 23, "model_type": "a" * 24, "package_name": "p" * 24}


@pytest.mark.parametrize("family", list(FAMILY_KNOBS))
def test_names_of_24_characters_render_formatted_without_the_hook(render, family):
    answers = {"family": family, **NAMES_OF_24_CHARACTERS, "heads": FAMILY_HEADS[family]}
    projects = [
        render({**answers, "tokenizer": kind}, name="24-characters") for kind in ("bpe", "wordpiece", "unigram")
    ]
    assert_ruff_clean(*projects)


LONGEST_NAMES = {"model_name": "A" + "b" * 31, "model_type": "a" * 32, "package_name": "p" * 32}


@pytest.mark.parametrize("family", list(FAMILY_KNOBS))
def test_longest_names_come_out_formatted_after_the_hook(render, family):
    """Names up to the validators' limit may overflow lines; the formatter hook folds them."""
    answers = {"family": family, **LONGEST_NAMES, "heads": FAMILY_HEADS[family], "smoke_test": False}
    project = render(answers, name="longest-names", tasks=True)
    assert_clean_text(project)
    assert_ruff_clean(project)
    assert_generated_tests_pass(project)


@pytest.fixture(scope="module")
def answer_set_projects(render) -> dict[str, tuple]:
    """Every answer set rendered, then, where the installed Transformers is in the range the project declares, its
    own test suite and `import <package>` (two at a time): {answer set: (project, suite, import)}, None elsewhere."""
    projects = {}
    for answer_set in ANSWER_SETS:
        answers = load_answer_set(answer_set)
        # The formatter hook is what makes black+isort output black-formatted, so that set runs the tasks.
        projects[answer_set] = render(answers, name=answer_set, tasks=answers.get("formatter") == "black+isort")
    runnable = {name: project for name, project in projects.items() if outside_declared_transformers(project) is None}
    suites = run_generated_test_suites(runnable)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        imports = dict(zip(runnable, pool.map(import_package, runnable.values()), strict=True))
    return {name: (projects[name], suites.get(name), imports.get(name)) for name in ANSWER_SETS}


def import_package(project: Path) -> subprocess.CompletedProcess:
    """`import <package>` in a fresh interpreter, every warning shown."""
    (package_dir,) = (path for path in (project / "src").iterdir() if path.is_dir())
    environment = {**os.environ, "PYTHONPATH": str(project / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-W", "default", "-c", f"import {package_dir.name}"]
    return subprocess.run(command, cwd=project, env=environment, capture_output=True, text=True)


@pytest.mark.parametrize("answer_set", ANSWER_SETS)
def test_answer_set_renders_clean_and_passes_its_own_tests(answer_set_projects, answer_set):
    project, suite, _ = answer_set_projects[answer_set]
    assert_clean_text(project)
    check = ruff("check", "--no-cache", str(project))
    assert check.returncode == 0, check.stdout
    if load_answer_set(answer_set).get("formatter") == "black+isort":
        for tool in ("black", "isort"):
            result = subprocess.run(
                [sys.executable, "-m", tool, "--check", "."], cwd=project, capture_output=True, text=True
            )
            assert result.returncode == 0, f"{tool}: {result.stdout}{result.stderr}"
    else:
        assert_ruff_clean(project)
    if suite is None:
        pytest.skip(outside_declared_transformers(project))
    assert_suite_passed(suite)


@pytest.mark.parametrize("answer_set", ANSWER_SETS)
def test_answer_set_imports_silently(answer_set_projects, answer_set):
    """Importing the package prints nothing: no docstring errors of auto_docstring, no deprecation warnings."""
    project, _, result = answer_set_projects[answer_set]
    if reason := outside_declared_transformers(project):
        pytest.skip(reason)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == "", result.stdout + result.stderr


@pytest.mark.parametrize("family", list(FAMILY_KNOBS))
def test_readme_usage_example_runs(render, family):
    project = render({"family": family}, name="readme-example")
    readme = (project / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.DOTALL).group(1)
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project / "src"), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch.Size([1, 3, 32])"

"""Every answer combination renders to clean, formatted code; each answer set's own tests pass."""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import (
    ANSWER_SETS,
    FAMILY_HEADS,
    FAMILY_KNOBS,
    KNOB_COMBINATIONS,
    REPO_ROOT,
    WITHOUT_THE_REMOTE_CODE_TEST,
    assert_clean_text,
    assert_mlinter_clean,
    assert_ruff_clean,
    assert_suite_passed,
    can_be_answered,
    combination_id,
    covered_values,
    head_subsets_for,
    load_answer_set,
    mlinter,
    outside_declared_transformers,
    ruff,
    run_generated_test_suites,
    run_generated_tests,
)
from warm_python import warm_python_command

# What CONTRIBUTING.md says the cover holds: combinations per family, and renders with their subsets of heads
COVER_SIZES = {"decoder": 17, "encoder": 12, "encoder-decoder": 1}
COVER_RENDERS = 120
# Each combination with each subset of heads it renders with
MATRIX_RENDERS = [
    (knobs, heads)
    for family in FAMILY_KNOBS
    for index, knobs in enumerate(c for c in KNOB_COMBINATIONS if c["family"] == family)
    for heads in head_subsets_for(family, index)
]


@pytest.mark.parametrize("family", list(FAMILY_KNOBS))
def test_the_knob_combinations_cover_every_value_and_every_answerable_pair_of_values(family):
    knobs = FAMILY_KNOBS[family]
    chosen = [{knob: c[knob] for knob in knobs} for c in KNOB_COMBINATIONS if c["family"] == family]
    answerable = [
        combination
        for values in itertools.product(*knobs.values())
        if can_be_answered(combination := dict(zip(knobs, values, strict=True)))
    ]
    missing = set().union(*map(covered_values, answerable)) - set().union(*map(covered_values, chosen))
    assert not missing, f"no {family} combination holds {sorted(missing)}"
    assert all(map(can_be_answered, chosen))
    assert len(chosen) == COVER_SIZES[family]
    assert len(MATRIX_RENDERS) == COVER_RENDERS
    assert f"{COVER_RENDERS} renders" in (REPO_ROOT / "CONTRIBUTING.md").read_text()


@pytest.mark.parametrize("family", list(FAMILY_KNOBS))
def test_the_renders_cover_every_head_present_and_absent_with_every_value_and_every_other_head(family):
    heads = FAMILY_HEADS[family]
    renders = [
        {**{knob: knobs[knob] for knob in FAMILY_KNOBS[family]}, **{f"head {head}": head in chosen for head in heads}}
        for knobs, chosen in MATRIX_RENDERS
        if knobs["family"] == family
    ]
    wanted = {((f"head {head}", state),) for head in heads for state in (False, True)}
    wanted |= {
        tuple(sorted([(f"head {head}", state), (knob, value)]))
        for head in heads
        for state in (False, True)
        for knob, values in FAMILY_KNOBS[family].items()
        for value in values
    }
    wanted |= {
        ((f"head {first}", first_state), (f"head {second}", second_state))
        for first, second in itertools.combinations(sorted(heads), 2)
        for first_state in (False, True)
        for second_state in (False, True)
    }
    missing = wanted - set().union(*map(covered_values, renders))
    assert not missing, f"no {family} render holds {sorted(missing)}"


def test_qkv_bias_is_not_asked_when_every_projection_has_a_bias(render):
    """can_be_answered's rule, as copier.yml's `when` applies it: with linear_bias, a qkv_bias answer is ignored."""
    project = render({"linear_bias": True, "qkv_bias": True, "heads": []}, name="both-biases")
    modeling = (project / "src/brand_new_bert/modeling_brand_new_bert.py").read_text()
    assert "bias=config.attention_bias" in modeling and "bias=True" not in modeling


def test_padding_offset_positions_is_not_asked_with_rotary_positions(render):
    """can_be_answered's rule, as copier.yml's `when` applies it: with rotary positions, the answer is ignored."""
    answers = {"family": "encoder", "position_embedding": "rope", "padding_offset_positions": True, "heads": []}
    project = render(answers, name="offset-rotary")
    modeling = (project / "src/brand_new_bert/modeling_brand_new_bert.py").read_text()
    assert "torch.arange(seq_length, device=device)" in modeling and "padding_idx + 1" not in modeling


def test_embedding_norm_is_not_asked_with_post_norm(render):
    """can_be_answered's rule, as copier.yml's `when` applies it: a post-norm encoder's first layer keeps its norm."""
    answers = {"family": "encoder", "norm_placement": "post", "embedding_norm": True, "heads": []}
    project = render(answers, name="post-norm-embedding-norm")
    modeling = (project / "src/brand_new_bert/modeling_brand_new_bert.py").read_text()
    assert "nn.Identity()" not in modeling and "self.attention_layer_norm = nn.LayerNorm(" in modeling


def test_every_family_knob_and_head_combination_renders_clean_code(render):
    """Every combination of the cover with its subsets of heads: parseable, ruff-clean, formatting-stable, clean of
    transformers-mlinter's findings. A failure names every combination that fails, not just the first."""
    projects, failures = {}, []
    for knobs, heads in MATRIX_RENDERS:
        answers = {**knobs, "heads": heads, "model_name": "Matrix", "package_name": "matrix"}
        name = f"{combination_id(answers)} heads={'+'.join(heads) or 'none'}"
        try:
            projects[name] = render(answers, name="matrix")
            assert_clean_text(projects[name])
        except Exception as error:  # noqa: BLE001 - every combination is reported, whatever it raised
            failures.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    assert len(projects) + len(failures) == len(MATRIX_RENDERS)
    # One run over every project: ruff names each file that fails
    for command in (["check", "--no-cache", "--output-format=concise"], ["format", "--check", "--no-cache"]):
        result = ruff(*command, *map(str, projects.values()))
        if result.returncode != 0:
            failures.append(f"ruff {command[0]}:\n{(result.stdout + result.stderr).strip()}")
    result = mlinter(*(project / folder for project in projects.values() for folder in ("src", "tests")))
    if result.returncode != 0:
        failures.append(f"mlinter:\n{(result.stdout + result.stderr).strip()}")
    assert not failures, f"{len(failures)} combination(s) fail:\n" + "\n".join(failures)


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
    assert_suite_passed(run_generated_tests(project, *WITHOUT_THE_REMOTE_CODE_TEST))


# The remote-code test in one answer set of each family with each of its heads (auto_map lists every head)
REMOTE_CODE_ANSWER_SETS = {"default", "gpt2_like", "bert_equivalent", "encoder_rope_prenorm", "bart_equivalent"}


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
    without_remote_code = {
        name: WITHOUT_THE_REMOTE_CODE_TEST for name in runnable if name not in REMOTE_CODE_ANSWER_SETS
    }
    suites = run_generated_test_suites(runnable, more_args=without_remote_code)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        fresh = [name == "default" for name in runnable]
        imports = dict(zip(runnable, pool.map(import_package, runnable.values(), fresh), strict=True))
    return {name: (projects[name], suites.get(name), imports.get(name)) for name in ANSWER_SETS}


def import_package(project: Path, fresh: bool) -> subprocess.CompletedProcess:
    """`import <package>`, every warning shown: in a fresh interpreter, as a user's first import, or in a warm fork
    that has imported torch and Transformers already, which shows the package's own warnings just as well."""
    (package_dir,) = (path for path in (project / "src").iterdir() if path.is_dir())
    environment = {**os.environ, "PYTHONPATH": str(project / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    python = [sys.executable] if fresh else warm_python_command()
    command = [*python, "-W", "default", "-c", f"import {package_dir.name}"]
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
    assert_mlinter_clean(project)
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
        [*warm_python_command(), "-c", example],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project / "src"), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch.Size([1, 3, 32])"

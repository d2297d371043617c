"""Every knob combination of every family, with every head, copied with the post-generation hook: the smoke test
passes, the output is clean, and each project's own test suite passes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import FAMILY_HEADS, captured_output_of_subprocesses, run_generated_test_suites
from test_render_matrix import (
    KNOB_COMBINATIONS,
    assert_clean_text,
    assert_ruff_clean,
    assert_suite_passed,
    combination_id,
)


def with_value_knobs(index: int, knobs: dict) -> dict:
    """Bias, tied embeddings and the grouped-query ratio vary along the matrix too, where the family asks them."""
    if knobs["family"] == "decoder":
        return {**knobs, "linear_bias": index % 2 == 1, "num_key_value_heads": [8, 32, 1][index % 3]}
    if knobs["family"] == "encoder":
        return {**knobs, "tie_word_embeddings": index % 2 == 0}
    return knobs


KNOB_MATRIX = {combination_id(knobs): with_value_knobs(index, knobs) for index, knobs in enumerate(KNOB_COMBINATIONS)}


@pytest.fixture(scope="module")
def knob_matrix(render) -> dict[str, tuple[Path, str, subprocess.CompletedProcess]]:
    """Every knob combination with every head, copied with the hook (one after another, each hook's output kept),
    then each project's own test suite (two at a time): {combination: (project, hook output, suite result)}."""
    projects, hook_outputs = {}, {}
    for name, knobs in KNOB_MATRIX.items():
        answers = {
            **knobs,
            "heads": FAMILY_HEADS[knobs["family"]],
            "model_name": "KnobMatrix",
            "package_name": "knob_matrix",
        }
        with captured_output_of_subprocesses() as output:
            projects[name] = render(answers, name="knob-matrix", tasks=True)
        hook_outputs[name] = output[0]
    # Loading a saved checkpoint with remote code in a fresh interpreter (10 s a suite) depends on the package's
    # module layout, which no knob changes: the answer sets' suites run it
    suites = run_generated_test_suites(projects, "-k", "not test_saved_checkpoint_loads_with_remote_code")
    return {name: (projects[name], hook_outputs[name], suites[name]) for name in KNOB_MATRIX}


@pytest.mark.parametrize("combination", list(KNOB_MATRIX))
def test_every_knob_combination_with_every_head_smoke_tests_and_passes_its_own_tests(knob_matrix, combination):
    project, hook_output, suite = knob_matrix[combination]
    assert "smoke test passed" in hook_output, hook_output
    for head in FAMILY_HEADS[KNOB_MATRIX[combination]["family"]]:
        assert f"ok      forward KnobMatrixFor{head}" in hook_output
        if head in ("CausalLM", "ConditionalGeneration"):
            assert f"ok      greedy generation of KnobMatrixFor{head}, with and without the cache" in hook_output
    assert_clean_text(project)
    assert_ruff_clean(project)
    assert_suite_passed(suite)

"""Every decoder knob combination, with every head, copied with the post-generation hook: the smoke test passes,
the output is clean, and each project's own test suite passes (test_knob_matrix_encoders.py: the other families)."""

from __future__ import annotations

import pytest

from helpers import build_knob_matrix, check_knob_matrix_case, knob_matrix_cases

CASES = knob_matrix_cases(["decoder"])


@pytest.fixture(scope="module")
def knob_matrix(render):
    return build_knob_matrix(render, CASES)


@pytest.mark.parametrize("combination", list(CASES))
def test_every_knob_combination_with_every_head_smoke_tests_and_passes_its_own_tests(knob_matrix, combination):
    check_knob_matrix_case(CASES[combination], *knob_matrix[combination])

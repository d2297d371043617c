"""Every decoder knob combination, with every head, copied with the post-generation hook: the smoke test passes,
the output is clean, and each project's own test suite passes (test_knob_matrix_encoders.py: the other families)."""

from __future__ import annotations

import pytest

from helpers import FAMILY_KNOBS, KNOB_MATRIX, build_knob_matrix, check_knob_matrix_case, knob_matrix_cases

CASES = knob_matrix_cases(["decoder"])


@pytest.fixture(scope="module")
def knob_matrix(render):
    return build_knob_matrix(render, CASES)


@pytest.mark.parametrize("combination", list(CASES))
def test_every_knob_combination_with_every_head_smoke_tests_and_passes_its_own_tests(knob_matrix, combination):
    check_knob_matrix_case(CASES[combination], *knob_matrix[combination])


@pytest.mark.parametrize("family", list(FAMILY_KNOBS))
def test_the_copied_combinations_hold_every_value_the_familys_matrix_holds(family):
    every_value = {value for knobs in KNOB_MATRIX.values() if knobs["family"] == family for value in knobs.items()}
    copied_values = {value for knobs in knob_matrix_cases([family]).values() for value in knobs.items()}
    assert copied_values == every_value

"""The knob matrix of the encoder and encoder-decoder families (test_knob_matrix.py has the decoder's): a module of
its own, so that two workers build the two halves at once."""

from __future__ import annotations

import pytest

from helpers import build_knob_matrix, check_knob_matrix_case, knob_matrix_cases

CASES = knob_matrix_cases(["encoder", "encoder-decoder"])


@pytest.fixture(scope="module")
def knob_matrix(render):
    return build_knob_matrix(render, CASES)


@pytest.mark.parametrize("combination", list(CASES))
def test_every_knob_combination_with_every_head_smoke_tests_and_passes_its_own_tests(knob_matrix, combination):
    check_knob_matrix_case(CASES[combination], *knob_matrix[combination])

"""The differential reading of upstream's checks (tests/upstream_checks.py, `nox -s upstream_checks`): which lines of
a check's output count against the generated models. The checks themselves run in that session, on a checkout."""

from __future__ import annotations

import json

from upstream_checks import Result, checker_configs, name_pattern, new_findings, split_check_repo

from transformers_checkout import read_removed_attributes_with_their_old_value

NAMES = name_pattern({"decoder": ("PortedDecoder", "ported_decoder", "bpe")})
UPSTREAM_FAILURE = "ValueError: The following configurations don't contain any valid checkpoint:\nMimiDecoderConfig"


def test_a_check_that_passes_with_the_models_reports_nothing():
    assert new_findings(Result(0, "everything fine\n"), Result(1, UPSTREAM_FAILURE), NAMES) == []


def test_a_check_of_the_new_files_only_reports_every_line_or_at_least_its_exit_status():
    assert new_findings(Result(1, "\nTRF018 ported_decoder/modeling.py:10\n\n"), None, NAMES) == [
        "TRF018 ported_decoder/modeling.py:10"
    ]
    assert new_findings(Result(2, ""), None, NAMES) == ["exit status 2"]


def test_what_fails_only_with_the_models_counts_whole_even_when_it_names_none_of_them():
    findings = new_findings(Result(1, "Traceback (most recent call last):\nKeyError: 'x'\n"), Result(0, ""), NAMES)
    assert findings == ["Traceback (most recent call last):", "KeyError: 'x'"]
    assert new_findings(Result(1, ""), Result(0, "fine"), NAMES) == ["exit status 1, 0 without the models"]


def test_upstreams_own_failures_count_only_where_a_new_line_names_a_model():
    with_models = Result(1, f"{UPSTREAM_FAILURE}\nPortedDecoderConfig\nSomeUnrelatedLine\n")
    assert new_findings(with_models, Result(1, UPSTREAM_FAILURE), NAMES) == ["PortedDecoderConfig"]
    # The doc page's name and the Hub id spell the model type with a dash
    with_models = Result(1, f"{UPSTREAM_FAILURE}\ndocs/source/en/model_doc/ported-decoder.md lacks a date\n")
    assert new_findings(with_models, Result(1, UPSTREAM_FAILURE), NAMES) == [
        "docs/source/en/model_doc/ported-decoder.md lacks a date"
    ]


def test_lines_count_as_often_as_they_are_printed_and_timings_and_colours_do_not_make_a_line_new():
    repeated = "\x1b[31mPortedDecoderModel is not documented\x1b[0m"
    with_models = Result(1, f"checked in 12.5s\n{repeated}\n{repeated}\n")
    without_models = Result(1, "checked in 3.1s\nPortedDecoderModel is not documented\n")
    assert new_findings(with_models, without_models, NAMES) == ["PortedDecoderModel is not documented"]


def test_names_are_matched_as_written_and_nothing_else():
    assert NAMES.search("PortedDecoderForCausalLM") and NAMES.search("models/ported_decoder/")
    assert not NAMES.search("LlamaForCausalLM in models/llama/") and not NAMES.search("portedecoder")


def test_check_repo_splits_into_its_sub_checks_and_an_early_crash_stays_whole():
    outcomes = {"check_model_list": {"returncode": 0, "output": ""}, "check_all_models_are_tested": {}}
    outcomes["check_all_models_are_tested"] = {"returncode": 1, "output": "Exception: PortedDecoder has no test"}
    output = f"Repository-wide checks:\nCHECK_REPO_RESULTS {json.dumps(outcomes)}\n"
    assert split_check_repo(Result(1, output)) == {
        "repo.check_model_list": Result(0, ""),
        "repo.check_all_models_are_tested": Result(1, "Exception: PortedDecoder has no test"),
    }
    crash = Result(1, "ModuleNotFoundError: No module named 'git'")
    assert split_check_repo(crash) == {"repo": crash}


def test_the_checkers_are_read_from_the_scripts_as_upstreams_runner_reads_them(tmp_path):
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils/check_dummies.py").write_text(
        'import os\nCHECKER_CONFIG = {"name": "dummies", "check_args": [], "fix_args": ["--fix_and_overwrite"]}\n'
    )
    (tmp_path / "utils/add_dates.py").write_text(
        'CHECKER_CONFIG = {"name": "add_dates", "check_args": ["--check-only"]}\n'
    )
    (tmp_path / "utils/helper.py").write_text("VALUE = 1\n")
    configs = checker_configs(tmp_path)
    assert configs["add_dates"] == {"name": "add_dates", "check_args": ["--check-only"], "script": "add_dates.py"}
    assert set(configs) == {"add_dates", "dummies"}


def test_the_snapshots_testers_read_an_attribute_the_sdist_removed_with_its_old_value(tmp_path):
    (tmp_path / "src" / "transformers").mkdir(parents=True)
    testers = tmp_path / "tests" / "generation"
    testers.mkdir(parents=True)
    tester = testers / "test_utils.py"
    tester.write_text("if model_class._is_stateful:\n    skip()\nmodel_class._is_stateful_too = 1\n")
    modeling_utils = tmp_path / "src" / "transformers" / "modeling_utils.py"

    modeling_utils.write_text("class PreTrainedModel:\n    _is_stateful: bool = False\n")
    read_removed_attributes_with_their_old_value(tmp_path, testers)
    assert tester.read_text().startswith("if model_class._is_stateful:\n")

    modeling_utils.write_text("class PreTrainedModel:\n    pass\n")
    read_removed_attributes_with_their_old_value(tmp_path, testers)
    assert tester.read_text() == (
        'if getattr(model_class, "_is_stateful", False):\n    skip()\nmodel_class._is_stateful_too = 1\n'
    )

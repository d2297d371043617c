"""copier.yml's head_table is the one place that says what a head is: a row and a head file are all a new head needs to
reach the questionnaire, the imports, the generated tests, the registration in a checkout and the smoke test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import copier
import pytest

from helpers import (
    HEAD_TABLE,
    WITHOUT_THE_REMOTE_CODE_TEST,
    assert_suite_passed,
    captured_output_of_subprocesses,
    run_generated_tests,
)

# A head that scores each of several choices: it reads (batch, choices, sequence), as input_rank 3 says, and returns
# an output class that no other chosen head imports.
FAKE_ROW = """    ChoiceScoring:
      title: Choice scoring
      output_classes: {encoder: MultipleChoiceModelOutput}
      auto_class: AutoModelForMultipleChoice
      mapping: MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES
      prediction: logits
      prediction_shape: (BATCH_SIZE, NUM_CHOICES)
      labels: {labels: "random_labels(NUM_CHOICES, (BATCH_SIZE,))"}
      input_rank: 3
      pipeline_tag: multiple-choice
      pipeline_tests: []
"""
FAKE_HEAD = """{% import "template/_includes/blocks/heads.jinja" as head_blocks with context %}
{% import "template/_includes/" ~ family ~ "/inputs.jinja" as inputs with context %}


@auto_docstring
class {{ model_name }}ForChoiceScoring({{ model_name }}PreTrainedModel):
    def __init__(self, config: {{ model_name }}Config):
        super().__init__(config)
        self.model = {{ model_name }}Model({{ inputs.base_model_arguments }})
        self.scorer = nn.Linear(config.hidden_size, 1)

        # Initialize weights and apply final processing
        self.post_init()

{{ head_blocks.forward_signature(
    inputs.head_decorators, inputs.parameters, ["labels: torch.LongTensor | None = None"], "MultipleChoiceModelOutput"
) }}
        num_choices = input_ids.shape[1]
        outputs = self.model(
            input_ids.flatten(0, 1),
            attention_mask=attention_mask.flatten(0, 1) if attention_mask is not None else None,
            **kwargs,
        )
        logits = self.scorer(outputs.last_hidden_state[:, 0]).view(-1, num_choices)

{{ head_blocks.loss_and_output("MultipleChoiceModelOutput", "nn.functional.cross_entropy(logits, labels)") }}
"""
# Files of the test's own, which write down what the hooks receive
HOOK_ARGUMENTS = {
    "registration.json.jinja": "{{ registration | to_json }}\n",
    "smoke_inputs.json.jinja": "{{ smoke_inputs | to_json }}\n",
}
ANSWERS = {"family": "encoder", "heads": ["ChoiceScoring"], "model_name": "Scorer", "package_name": "scorer"}


@pytest.fixture(scope="module")
def template_with_a_new_head(template_dir, tmp_path_factory) -> Path:
    template = tmp_path_factory.mktemp("new-head") / "template"
    shutil.copytree(template_dir, template)
    copier_yml = template / "copier.yml"
    text = copier_yml.read_text()
    table_end = text.index("\nheads:\n")
    copier_yml.write_text(text[:table_end].rstrip("\n") + "\n" + FAKE_ROW + text[table_end:])
    (template / "template" / "_includes" / "heads" / "ChoiceScoring.py.jinja").write_text(FAKE_HEAD)
    for name, text in HOOK_ARGUMENTS.items():
        (template / "template" / name).write_text(text)
    return template


def copy(template: Path, destination: Path, tasks: bool = False, **answers) -> Path:
    copier.run_copy(
        str(template),
        destination,
        data={**ANSWERS, **answers},
        defaults=True,
        unsafe=True,
        skip_tasks=not tasks,
        quiet=True,
    )
    return destination


def test_the_fake_head_is_not_a_real_one():
    assert "ChoiceScoring" not in HEAD_TABLE


def test_the_questionnaire_offers_the_new_head_to_its_family_only(template_with_a_new_head, tmp_path):
    copy(template_with_a_new_head, tmp_path / "encoder")
    with pytest.raises(ValueError, match="ChoiceScoring is offered for the encoder family only"):
        copy(template_with_a_new_head, tmp_path / "decoder", family="decoder")


def test_a_new_row_reaches_the_imports_the_tests_and_the_smoke_test(template_with_a_new_head, tmp_path):
    with captured_output_of_subprocesses() as output:
        project = copy(template_with_a_new_head, tmp_path / "project", tasks=True)
    hook_output = output[0]

    modeling = (project / "src" / "scorer" / "modeling_scorer.py").read_text()
    assert "    MultipleChoiceModelOutput,\n" in modeling
    assert "class ScorerForChoiceScoring(ScorerPreTrainedModel):" in modeling
    assert '"ScorerForChoiceScoring",' in modeling.split("__all__ = [")[1]
    package_init = (project / "src" / "scorer" / "__init__.py").read_text()
    assert "AutoModelForMultipleChoice" in package_init and "ScorerForChoiceScoring" in package_init

    tests = (project / "tests" / "test_modeling_scorer.py").read_text()
    assert 'ScorerForChoiceScoring: (AutoModelForMultipleChoice, "logits"),' in tests
    assert "ScorerForChoiceScoring: (BATCH_SIZE, NUM_CHOICES)," in tests
    assert "NUM_CHOICES = 3" in tests and "if model_class is ScorerForChoiceScoring:" in tests

    # Rank-3 inputs reach the smoke test: with (batch, sequence) ids the head's forward fails
    assert json.loads((project / "smoke_inputs.json").read_text()) == {"ScorerModel": 2, "ScorerForChoiceScoring": 3}
    assert "ok      forward ScorerForChoiceScoring" in hook_output, hook_output
    assert "smoke test passed" in hook_output, hook_output
    assert_suite_passed(run_generated_tests(project, *WITHOUT_THE_REMOTE_CODE_TEST))


def test_a_new_row_reaches_the_registration_in_a_checkout(template_with_a_new_head, tmp_path):
    project = copy(template_with_a_new_head, tmp_path / "checkout", layout="transformers", model_type="scorer")
    registration = json.loads((project / "registration.json").read_text())
    assert registration["model_mappings"] == {
        "ScorerModel": "MODEL_MAPPING_NAMES",
        "ScorerForChoiceScoring": "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES",
    }

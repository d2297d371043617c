"""Each validator rejects its bad answer through the CLI with one clear sentence, before anything is written."""

from __future__ import annotations

import importlib
import subprocess
import sys

import copier
import pytest
import yaml

from helpers import FAMILY_HEADS, FAMILY_KNOBS, HEAD_TABLE, REPO_ROOT

QEFFICIENT_LLAMA_LIKE = (
    "QEfficient onboarding follows its Llama-like models: full attention, no qk_norm, Llama's pre-norm RMSNorm, "
    "unscaled embeddings, scores scaled by head_dim, no soft-capping, one MLP and sequential residuals."
)
BAD_ANSWERS = {
    "model_name-lower-case": ({"model_name": "brandNewBert"}, "model_name must be CamelCase"),
    "model_name-leading-digit": ({"model_name": "2Bert"}, "model_name must be CamelCase"),
    "model_name-non-ascii": ({"model_name": "BrändNewBert"}, "model_name must be CamelCase"),
    "model_name-too-long": ({"model_name": "B" + "a" * 32}, "model_name must be at most 32 characters"),
    "model_type-registered": ({"model_type": "llama"}, 'model_type "llama" is already registered by Transformers'),
    "model_type-camel-case": ({"model_type": "BrandNewBert"}, "model_type must be snake_case"),
    "model_type-dash": ({"model_type": "brand-new-bert"}, "model_type must be snake_case"),
    "model_type-too-long": ({"model_type": "a" * 33}, "model_type must be at most 32 characters"),
    "package_name-dash": ({"package_name": "brand-new-bert"}, "package_name must be a lower-case Python identifier"),
    "package_name-shadows-torch": ({"package_name": "torch"}, 'package_name "torch" would shadow a package'),
    "package_name-too-long": ({"package_name": "p" * 33}, "package_name must be at most 32 characters"),
    "hidden_size-not-divisible": (
        {"hidden_size": 1000, "num_attention_heads": 24},
        "hidden_size (1000) must be divisible by num_attention_heads (24)",
    ),
    "odd-rotary-head-size": (
        {"hidden_size": 96, "num_attention_heads": 32, "num_key_value_heads": 8},
        "must be even for rotary embeddings",
    ),
    "kv-heads-not-dividing": (
        {"num_attention_heads": 32, "num_key_value_heads": 6},
        "num_key_value_heads (6) must divide num_attention_heads (32)",
    ),
    "zero-layers": ({"num_hidden_layers": 0}, "num_hidden_layers must be at least 1"),
    "zero-heads": ({"num_attention_heads": 0}, "num_attention_heads must be at least 1"),
    "zero-kv-heads": ({"num_key_value_heads": 0}, "num_key_value_heads must be at least 1"),
    "negative-vocab": ({"vocab_size": -5}, "vocab_size must be a positive integer"),
    "zero-hidden-size": ({"hidden_size": 0}, "hidden_size must be a positive integer"),
    "zero-intermediate-size": ({"intermediate_size": 0}, "intermediate_size must be a positive integer"),
    "zero-positions": ({"max_position_embeddings": 0}, "max_position_embeddings must be a positive integer"),
    "copyright-year": ({"copyright_year": "20x6"}, "copyright_year must be a four-digit year"),
    "unknown-family": ({"family": "diffusion"}, "family"),
    "unknown-head": ({"heads": ["Pretraining"]}, "heads"),
    "masked-lm-on-a-decoder": ({"heads": ["MaskedLM"]}, "MaskedLM is offered for the encoder family only"),
    "causal-lm-on-an-encoder": (
        {"family": "encoder", "heads": ["CausalLM"]},
        "CausalLM is offered for the decoder family only",
    ),
    "token-classification-on-an-encoder-decoder": (
        {"family": "encoder-decoder", "heads": ["TokenClassification"]},
        "TokenClassification is not offered for the encoder-decoder family",
    ),
    "unknown-layout": ({"layout": "monorepo"}, "layout"),
    "black-isort-in-a-checkout": (
        {"layout": "transformers", "formatter": "black+isort"},
        "A Transformers checkout is formatted with ruff, its own formatter.",
    ),
    "qefficient-on-an-encoder": (
        {"family": "encoder", "qefficient": True},
        "QEfficient onboarding is generated for the decoder family only.",
    ),
    "qefficient-in-a-checkout": (
        {"layout": "transformers", "qefficient": True},
        "QEfficient onboarding is generated for the package layout only.",
    ),
    "qefficient-without-rotary": (
        {"position_embedding": "learned", "qefficient": True},
        "choose position_embedding rope",
    ),
    "qefficient-with-a-sliding-window": ({"attention_window": "sliding", "qefficient": True}, QEFFICIENT_LLAMA_LIKE),
    "qefficient-with-qk-norm": ({"qk_norm": "per_head", "qefficient": True}, QEFFICIENT_LLAMA_LIKE),
    "qefficient-with-gemma-norms": (
        {"normalization": "rms_norm_unit_offset", "qefficient": True},
        QEFFICIENT_LLAMA_LIKE,
    ),
    "qefficient-with-scaled-embeddings": ({"embedding_scale": True, "qefficient": True}, QEFFICIENT_LLAMA_LIKE),
    "qefficient-with-sandwich-norms": ({"norm_placement": "sandwich", "qefficient": True}, QEFFICIENT_LLAMA_LIKE),
    "qefficient-with-projection-qk-norm": ({"qk_norm": "projection", "qefficient": True}, QEFFICIENT_LLAMA_LIKE),
    "qefficient-with-query-pre-attn-scalar": (
        {"attention_scaling": "query_pre_attn_scalar", "qefficient": True},
        QEFFICIENT_LLAMA_LIKE,
    ),
    "qefficient-with-soft-capping": ({"soft_capping": True, "qefficient": True}, QEFFICIENT_LLAMA_LIKE),
    "qefficient-with-experts": ({"mixture_of_experts": "routed", "qefficient": True}, QEFFICIENT_LLAMA_LIKE),
    "qefficient-with-parallel-residual": ({"parallel_residual": True, "qefficient": True}, QEFFICIENT_LLAMA_LIKE),
    "experts-ungated": ({"mixture_of_experts": "routed", "mlp": "gelu"}, "The experts are gated MLPs"),
    "experts-with-biases": (
        {"mixture_of_experts": "routed_and_shared", "linear_bias": True},
        "The experts carry no bias, as Mixtral's and Qwen2-MoE's: answer linear_bias false.",
    ),
    "one-expert": (
        {"mixture_of_experts": "routed", "num_experts": 1},
        "A mixture of experts needs at least 2 experts.",
    ),
    "more-experts-per-token-than-experts": (
        {"mixture_of_experts": "routed", "num_experts": 4, "num_experts_per_tok": 5},
        "num_experts_per_tok (5) must be between 1 and num_experts (4).",
    ),
    "qefficient-without-causal-lm": (
        {"heads": ["SequenceClassification"], "qefficient": True},
        "add the CausalLM head",
    ),
    "unknown-reused-tokenizer": (
        {"tokenizer": "reuse", "reused_tokenizer": "NoSuchTokenizer"},
        'reused_tokenizer "NoSuchTokenizer" is not a tokenizer class of the installed Transformers',
    ),
    "model_name-auto": ({"model_name": "Auto"}, 'model_name "Auto" would give classes the names of Transformers'),
    "model_name-derives-a-registered-type": (
        {"model_name": "Llama"},
        'model_name "Llama" derives the model_type "llama", which Transformers already registers; choose another',
    ),
    "odd-hidden-size-with-rotary": ({"hidden_size": 101}, "hidden_size (101) must be even with rotary embeddings"),
    "model_name-empty": ({"model_name": ""}, "model_name must be CamelCase"),
    "package_name-keyword": ({"package_name": "class"}, 'package_name "class" is a Python keyword, builtin'),
    "package_name-builtin": ({"package_name": "print"}, 'package_name "print" is a Python keyword, builtin'),
    "package_name-stdlib": ({"package_name": "json"}, 'package_name "json" is a Python keyword, builtin'),
    "package_name-leading-digit": ({"package_name": "2bert"}, "package_name must be a lower-case Python identifier"),
    "description-empty": ({"description": " "}, "description must not be empty"),
    "description-two-lines": ({"description": "one\ntwo"}, "description must be one line of printable text"),
    "paper_title-control-character": ({"paper_title": "a\x1bb"}, "paper_title must be one line of printable text"),
    "paper_title-too-long": ({"paper_title": "t" * 301}, "paper_title must be at most 300 characters"),
    "paper_abstract-control-character": (
        {"paper_abstract": "First line.\nSecond\x0cline."},
        "paper_abstract must be printable text: line breaks and tabs are fine",
    ),
    "paper_abstract-too-long": ({"paper_abstract": "word " * 1001}, "paper_abstract must be at most 5000 characters"),
    "reviewer-tab": ({"reviewer": "Ada\tLovelace"}, "reviewer must be one line of printable text"),
    "paper_url-not-http": ({"paper_url": "ftp://example.org/paper"}, "paper_url must be empty or an http(s) URL"),
    "paper_url-space": ({"paper_url": "https://example.org/a paper"}, "paper_url must be empty or an http(s) URL"),
    "original_repo_url-quote": (
        {"original_repo_url": 'https://github.com/org/repo"'},
        "original_repo_url must be empty or an http(s) URL",
    ),
    "start_date-not-iso": ({"start_date": "23/11/2026"}, "start_date must be a date written YYYY-MM-DD"),
    "start_date-month-13": ({"start_date": "2026-13-01"}, "start_date must be a date written YYYY-MM-DD"),
    "hub_repo_id-no-organization": ({"hub_repo_id": "brand-new-bert"}, "hub_repo_id must look like organization/name"),
    "weights_license-unknown": ({"weights_license": "wtfpl"}, "weights_license"),
    "bert-post-norm-on-a-decoder": ({"norm_placement": "post"}, "Post-norm after the residual sum is the encoder's"),
    "sandwich-norms-on-an-encoder": (
        {"family": "encoder", "norm_placement": "sandwich"},
        "Only decoders have sandwich norms",
    ),
    "post-sublayer-norms-on-an-encoder": (
        {"family": "encoder", "norm_placement": "post_sublayer"},
        "Only decoders normalize each sublayer's output",
    ),
    "no-positions-on-an-encoder": (
        {"family": "encoder", "position_embedding": "none"},
        "Only decoders can do without position embeddings",
    ),
}


@pytest.mark.parametrize(("answers", "message"), BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
def test_bad_answer_is_rejected_before_anything_is_written(template_dir, tmp_path, answers, message):
    destination = tmp_path / "destination"
    data_args = []
    for key, value in answers.items():
        # Copier parses --data values as YAML
        rendered_value = yaml.safe_dump(value, default_flow_style=True).strip() if isinstance(value, list) else value
        data_args += ["--data", f"{key}={rendered_value}"]

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "copier",
            "copy",
            "--trust",
            "--defaults",
            *data_args,
            str(template_dir),
            str(destination),
        ],
        capture_output=True,
        text=True,
    )

    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert not destination.exists() or not any(destination.iterdir())


def answers_are_accepted(template_dir, tmp_path, answers: dict) -> bool:
    try:
        copier.run_copy(
            str(template_dir), tmp_path / "pretend", data=answers, defaults=True, pretend=True, quiet=True, unsafe=True
        )
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("family", list(FAMILY_KNOBS))
def test_each_family_accepts_exactly_the_choices_of_the_matrix(template_dir, tmp_path, family):
    """Every choice is either rendered and tested by the matrix, or rejected for the family by a validator."""
    questions = yaml.safe_load((REPO_ROOT / "copier.yml").read_text())
    asked = {**FAMILY_KNOBS[family], "heads": FAMILY_HEADS[family]}
    for question, allowed in asked.items():
        spec = questions[question]
        if spec["type"] == "bool":
            values = [True, False]
        elif question == "heads":
            values = list(HEAD_TABLE)  # its choices are rendered from the table, a choice per row
        else:
            values = [choice["value"] if isinstance(choice, dict) else choice for choice in spec["choices"].values()]
        for value in values:
            answer = [value] if question == "heads" else value
            accepted = answers_are_accepted(template_dir, tmp_path, {"family": family, question: answer})
            assert accepted == (value in allowed), f"{family}: {question}={value!r}"


def test_every_validated_question_has_a_bad_answer_test():
    questions = yaml.safe_load((REPO_ROOT / "copier.yml").read_text())
    validated = {name for name, spec in questions.items() if isinstance(spec, dict) and "validator" in spec}
    tested = {key for answers, _ in BAD_ANSWERS.values() for key in answers}
    assert validated <= tested, f"no bad-answer test for {sorted(validated - tested)}"


def test_a_name_whose_derived_type_is_registered_is_accepted_with_a_model_type_of_its_own(render):
    project = render({"model_name": "Llama", "model_type": "llama_port", "package_name": "llama_port"}, name="llama")
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert (answers["model_name"], answers["model_type"]) == ("Llama", "llama_port")


@pytest.mark.parametrize(
    ("answers", "heads", "key_value_heads"),
    [
        ({}, 32, 8),
        ({"hidden_size": 100}, 25, 5),  # 12 or 32 heads cannot split 100 dimensions
        ({"family": "encoder", "hidden_size": 100}, 10, 10),
        ({"hidden_size": 4098}, 3, 3),  # rotary embeddings need an even head size: 4098 / 3 = 1366
        ({"family": "encoder", "position_embedding": "learned", "hidden_size": 99}, 11, 11),
        ({"hidden_size": 768, "num_attention_heads": 12}, 12, 6),
    ],
)
def test_computed_defaults_follow_the_earlier_answers_and_pass_their_validators(
    template_dir, tmp_path, answers, heads, key_value_heads
):
    """No computed default can fail validation, which would end Copier's questionnaire with a traceback."""
    destination = tmp_path / "project"
    copier.run_copy(str(template_dir), destination, data=answers, defaults=True, skip_tasks=True, quiet=True)
    stored = yaml.safe_load((destination / ".copier-answers.yml").read_text())
    assert stored["num_attention_heads"] == heads
    assert stored.get("num_key_value_heads", heads) == key_value_heads


@pytest.mark.parametrize(
    ("model_name", "model_type"),
    [
        ("BrandNewBert", "brand_new_bert"),
        ("NanoGPT2", "nano_gpt2"),
        ("MyGPTModel", "my_gpt_model"),
        ("ABCNet", "abc_net"),
    ],
)
def test_model_type_default_keeps_acronyms_together(render, model_name, model_type):
    project = render({"model_name": model_name, "package_name": "derived"}, name=model_type)
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["model_type"] == model_type


@pytest.mark.parametrize(
    ("snapshot", "installed"),
    [
        ("registered_model_types.txt", "installed_model_types"),
        ("tokenizer_classes.txt", "installed_tokenizer_classes"),
        ("python_names.txt", "installed_python_names"),
    ],
)
@pytest.mark.drift
def test_snapshots_cover_the_installed_transformers(snapshot, installed):
    sys.path.insert(0, str(REPO_ROOT / "hooks"))
    try:
        snapshots = importlib.import_module("update_transformers_snapshots")
    finally:
        sys.path.remove(str(REPO_ROOT / "hooks"))
    names = set((REPO_ROOT / "hooks" / "data" / snapshot).read_text().split())
    missing = set(getattr(snapshots, installed)()) - names
    assert not missing, f"run `nox -s refresh_snapshots`: {snapshot} misses {sorted(missing)[:10]}"

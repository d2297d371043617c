"""QEfficient onboarding files of a decoder, exercised without QEfficient (not installable here).

The stand-ins of tests/qefficient_stand_ins reproduce what the generated `qefficient/` classes use of QEfficient.
Through them, a batch of prompts of different lengths runs prefill and decode steps over a fixed-length KV cache as
QEfficient runs it, and must give the generated model's own last-token logits and greedy tokens. `nox -s
qefficient_pin` runs this file at both ends of the Transformers range such a decoder declares: 5.5.4, the version
QEfficient pins, and 5.23.0, the last release before 5.24 renamed the cache argument. Under another Transformers
(the `tests` session's) the projects render and pass ruff, and the tests that run them skip.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import assert_clean_text, assert_ruff_clean, outside_declared_transformers, run_generated_tests
from warm_python import warm_python_command

STAND_INS = Path(__file__).parent / "qefficient_stand_ins"
BASE_ANSWERS = {"family": "decoder", "heads": ["CausalLM"], "qefficient": True, "tokenizer": "none"}
VARIANTS = {
    "llama-like": {"model_name": "QeffLlamaLike"},
    "layer-norm-gelu-bias-every-head": {
        "model_name": "QeffLayerNorm",
        "heads": ["CausalLM", "SequenceClassification", "TokenClassification", "QuestionAnswering"],
        "normalization": "layer_norm",
        "mlp": "gelu",
        "linear_bias": True,
        "num_key_value_heads": 32,
    },
    "multi-query": {"model_name": "QeffMultiQuery", "num_key_value_heads": 1},
}
# Grouped-query, multi-head and multi-query attention over the 4 query heads of TINY_CONFIG
KEY_VALUE_HEADS = {"llama-like": 2, "layer-norm-gelu-bias-every-head": 4, "multi-query": 1}
TINY_CONFIG = {
    "vocab_size": 99,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

PARITY = """
import copy, importlib, json, sys

import torch
from QEfficient.customop import CustomRMSNormAIC
from QEfficient.transformers.models.pytorch_transforms import CustomOpsTransform, KVCacheTransform

package_name, model_type, model_name, config_values = sys.argv[1:4] + [json.loads(sys.argv[4])]
package = importlib.import_module(package_name)
modeling = importlib.import_module(f"{package_name}.modeling_{model_type}")
register_qefficient = importlib.import_module(package_name + ".qefficient").register_qefficient
CONTEXT_LENGTH, DECODE_STEPS = 32, 4

torch.manual_seed(0)
config = getattr(package, model_name + "Config")(**config_values)
reference = getattr(package, model_name + "ForCausalLM")(config).eval()
model = copy.deepcopy(reference)
register_qefficient()
for transform in (CustomOpsTransform, KVCacheTransform):
    transform.apply(model)
swapped = {type(module).__name__ for module in model.modules()}
for name in ("Attention", "DecoderLayer", "Model", "ForCausalLM"):
    assert "QEff" + model_name + name in swapped and model_name + name not in swapped, swapped
assert model_name + "RMSNorm" not in swapped
assert ("CustomRMSNormAIC" in swapped) == hasattr(modeling, model_name + "RMSNorm")

# Right-padded prompts of different lengths, padding at position -1, as QEfficient's runtime feeds them
lengths = (5, 8, 3)
prompts = [torch.randint(3, config.vocab_size, (length,)) for length in lengths]
input_ids = torch.full((len(prompts), max(lengths)), config.pad_token_id)
position_ids = torch.full((len(prompts), max(lengths)), -1)
for row, prompt in enumerate(prompts):
    input_ids[row, : len(prompt)] = prompt
    position_ids[row, : len(prompt)] = torch.arange(len(prompt))
cache_shape = (len(prompts), config.num_key_value_heads, CONTEXT_LENGTH, config.head_dim)
past_key_values = tuple(
    (torch.zeros(cache_shape), torch.zeros(cache_shape)) for _ in range(config.num_hidden_layers)
)

sequences = [prompt.tolist() for prompt in prompts]
with torch.no_grad():
    for step in range(DECODE_STEPS + 1):
        outputs = model(input_ids=input_ids, position_ids=position_ids, past_key_values=past_key_values)
        assert outputs.logits.shape == (len(prompts), 1, config.vocab_size), outputs.logits.shape
        assert outputs.logits.dtype == torch.float32
        past_key_values = outputs.past_key_values
        for row, sequence in enumerate(sequences):
            expected = reference(input_ids=torch.tensor([sequence])).logits[0, -1]
            torch.testing.assert_close(outputs.logits[row, 0], expected, rtol=1e-5, atol=1e-5)
        next_tokens = outputs.logits[:, 0].argmax(-1)
        for row, sequence in enumerate(sequences):
            sequence.append(int(next_tokens[row]))
        input_ids = next_tokens[:, None]
        position_ids = position_ids.max(1, keepdim=True).values + 1

    for prompt, sequence in zip(prompts, sequences):
        greedy = reference.generate(
            prompt[None], attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=DECODE_STEPS + 1, min_new_tokens=DECODE_STEPS + 1, do_sample=False,
        )
        assert greedy[0].tolist() == sequence, (greedy[0].tolist(), sequence)
print("parity", json.dumps(sequences))
"""


def run_with_stand_ins(project: Path, *args: str, stand_ins: bool = True) -> subprocess.CompletedProcess:
    path = [str(project / "src")] + ([str(STAND_INS)] if stand_ins else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([*warm_python_command(), *args], cwd=project, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def projects(render) -> dict[str, Path]:
    return {name: render({**BASE_ANSWERS, **answers}, name=f"qefficient-{name}") for name, answers in VARIANTS.items()}


def test_onboarding_files_render_clean(projects):
    for project in projects.values():
        assert_clean_text(project)
        (qefficient,) = (project / "src").glob("*/qefficient")
        assert sorted(path.name for path in qefficient.iterdir()) == sorted(
            ["__init__.py", "ONBOARDING.md", f"modeling_{qefficient.parent.name}.py"]
        )
    assert_ruff_clean(*projects.values())


@pytest.fixture(scope="module")
def runnable_projects(projects) -> dict[str, Path]:
    """The projects, where the installed Transformers is one they declare."""
    if reason := outside_declared_transformers(projects["llama-like"]):
        pytest.skip(reason)
    return projects


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prefill_and_decode_over_a_fixed_cache_match_the_model_and_its_greedy_tokens(runnable_projects, variant):
    project = runnable_projects[variant]
    (package_dir,) = (project / "src").iterdir()
    (modeling,) = package_dir.glob("modeling_*.py")
    model_type = modeling.stem.removeprefix("modeling_")
    config = {**TINY_CONFIG, "num_key_value_heads": KEY_VALUE_HEADS[variant]}
    arguments = [package_dir.name, model_type, VARIANTS[variant]["model_name"], json.dumps(config)]
    result = run_with_stand_ins(project, "-c", PARITY, *arguments)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.startswith("parity ")


def test_register_without_qefficient_says_how_to_install_it(runnable_projects):
    project = runnable_projects["llama-like"]
    (package_dir,) = (project / "src").iterdir()
    script = f"from {package_dir.name}.qefficient import register_qefficient\nregister_qefficient()"
    result = run_with_stand_ins(project, "-c", script, stand_ins=False)
    assert result.returncode != 0
    assert "ImportError: register_qefficient() needs QEfficient (not on PyPI)" in result.stderr
    assert "pip install git+https://github.com/quic/efficient-transformers" in result.stderr


def test_the_generated_decoder_passes_its_own_tests(runnable_projects):
    result = run_generated_tests(runnable_projects["llama-like"])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


def test_the_generated_decoder_imports_silently(runnable_projects):
    project = runnable_projects["layer-norm-gelu-bias-every-head"]
    (package_dir,) = (project / "src").iterdir()
    result = run_with_stand_ins(project, "-W", "default", "-c", f"import {package_dir.name}", stand_ins=False)
    assert result.returncode == 0 and result.stdout == result.stderr == "", result.stdout + result.stderr

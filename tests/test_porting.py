"""Porting research code that is not a Transformers model, as a user does: fill the generated scripts' edit sections,
convert, run the harness. Each port's own code is counted; the families, transforms and harness must do the rest."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import copier
import pytest
import torch
import yaml

from helpers import load_answer_set
from warm_python import warm_python_command

RESEARCH_MODELS = Path(__file__).parent / "research_models"
# The most lines of code a port may need in each generated script (blank lines and comments not counted)
PORT_LINE_BUDGET = 40
EDIT_SECTION = re.compile(r"# ---- Edit here for your original -+\n(?P<section>.*?)\n# -+\n", re.DOTALL)

DECODER_CONFIG = {
    "dim": 48,  # not n_heads * head_dim: head_dim is its own setting
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "head_dim": 16,
    "ffn_dim": 80,
    "vocab": 97,
    "eps": 1e-6,
    "rope_base": 10000.0,
    "rotary_fraction": 0.5,
    "max_len": 64,
    "qkv_bias": True,
    "dropout": 0.0,
}
DECODER_CONVERSION = """
CONFIG_KEY_MAPPING = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "ffn_dim": "intermediate_size",
    "vocab": "vocab_size",
    "eps": "rms_norm_eps",
    "rope_base": "rope_theta",
    "rotary_fraction": "partial_rotary_factor",
    "max_len": "max_position_embeddings",
    "qkv_bias": "attention_bias",
}
IGNORED_CONFIG_KEYS = ["dropout"]
IMPLIED_CONFIG_VALUES = {}


def layer(part):  # the original numbers attention blocks 2i and feed-forward blocks 2i + 1
    return lambda match: f"model.layers.{int(match[1]) // 2}.{part.format(*match.groups()[1:])}"


query = compose(permute_for_rotary("num_attention_heads"), tiled_to_grouped_heads(0))
CHECKPOINT_KEY_RULES = [
    KeyRule(r"tok_embeddings\\.weight", "model.embed_tokens.weight", scale(lambda config: config.hidden_size**0.5)),
    KeyRule(r"layers\\.(\\d*[02468])\\.norm\\.weight", layer("input_layernorm.weight"), add_one),
    KeyRule(r"layers\\.(\\d*[13579])\\.norm\\.weight", layer("post_attention_layernorm.weight"), add_one),
    KeyRule(
        r"layers\\.(\\d+)\\.attn\\.wqkv\\.(weight|bias)",
        lambda match: tuple(layer(f"self_attn.{name}_proj.{{}}")(match) for name in "qkv"),
        split_then(split_qkv(), query, permute_for_rotary("num_key_value_heads"), None),
    ),
    KeyRule(r"layers\\.(\\d+)\\.attn\\.wo\\.weight", layer("self_attn.o_proj.weight"), tiled_to_grouped_heads(1)),
    KeyRule(
        r"layers\\.(\\d+)\\.ffn\\.w13\\.weight",
        lambda match: (layer("mlp.gate_proj.weight")(match), layer("mlp.up_proj.weight")(match)),
        split_gate_up(("up", "gate")),
    ),
    KeyRule(r"layers\\.(\\d+)\\.ffn\\.w2\\.weight", layer("mlp.down_proj.weight")),
    KeyRule(r"norm\\.weight", "model.norm.weight", add_one),
    KeyRule(r"output\\.weight", "lm_head.weight"),
    NewParameter(r"model\\.layers\\.\\d+\\.self_attn\\.o_proj\\.bias", 0.0),
]
"""
DECODER_HARNESS = """
ORIGINAL_CAPTURE_POINTS = {
    # "embeddings" has no module: the original scales the table's output in its forward pass
    "layers.{index}.input_layernorm": lambda index: f"layers.{2 * index}.norm",
    "layers.{index}.self_attn": lambda index: f"layers.{2 * index}.attn",
    "layers.{index}.post_attention_layernorm": lambda index: f"layers.{2 * index + 1}.norm",
    "layers.{index}.mlp": lambda index: f"layers.{2 * index + 1}.ffn",
    "layers.{index}": lambda index: f"layers.{2 * index + 1}",
    "final norm": "norm",
    "logits": "",
}


def run_original(model: nn.Module, inputs: dict[str, torch.Tensor]) -> object:
    return model(inputs["input_ids"], inputs["attention_mask"])


def generate_with_original(model: nn.Module, input_ids: torch.Tensor, new_tokens: int) -> torch.Tensor | None:
    with torch.no_grad():
        for _ in range(new_tokens):
            input_ids = torch.cat([input_ids, model(input_ids)[:, -1:].argmax(-1)], dim=-1)
    return input_ids
"""

ENCODER_CONFIG = {
    "d_model": 64,
    "nhead": 4,
    "num_layers": 2,
    "dim_feedforward": 96,
    "vocab_size": 90,
    "max_len": 48,
    "layer_norm_eps": 1e-12,
    "dropout": 0.1,
    "activation": "gelu",
    "bias": True,
    "embedding_norm": True,
    "head_transform": True,
}
ENCODER_CONVERSION = """
CONFIG_KEY_MAPPING = {
    "d_model": "hidden_size",
    "nhead": "num_attention_heads",
    "num_layers": "num_hidden_layers",
    "dim_feedforward": "intermediate_size",
    "max_len": "max_position_embeddings",
    "activation": "hidden_act",
    "bias": ("attention_bias", "mlp_bias", "layer_norm_bias"),
    "embedding_norm": "embedding_layer_norm",
    "head_transform": "masked_lm_transform",
}
IGNORED_CONFIG_KEYS = ["dropout"]
IMPLIED_CONFIG_VALUES = {}

CHECKPOINT_KEY_RULES = [
    KeyRule(r"embed\\.weight", "model.embeddings.word_embeddings.weight", scale(lambda config: config.hidden_size**0.5)),
    KeyRule(r"pos\\.weight", "model.embeddings.position_embeddings.weight"),
    KeyRule(r"embed_norm\\.(weight|bias)", r"model.embeddings.layer_norm.\\1"),
    KeyRule(
        r"layers\\.(\\d+)\\.self_attn\\.in_proj_(weight|bias)",
        tuple(rf"model.layers.\\1.self_attn.{name}_proj.\\2" for name in "qkv"),
        split_qkv("qkv"),
    ),
    KeyRule(r"layers\\.(\\d+)\\.self_attn\\.out_proj\\.(weight|bias)", r"model.layers.\\1.self_attn.o_proj.\\2"),
    KeyRule(r"layers\\.(\\d+)\\.linear1\\.(weight|bias)", r"model.layers.\\1.mlp.up_proj.\\2"),
    KeyRule(r"layers\\.(\\d+)\\.linear2\\.(weight|bias)", r"model.layers.\\1.mlp.down_proj.\\2"),
    KeyRule(r"layers\\.(\\d+)\\.norm1\\.(weight|bias)", r"model.layers.\\1.attention_layer_norm.\\2"),
    KeyRule(r"layers\\.(\\d+)\\.norm2\\.(weight|bias)", r"model.layers.\\1.mlp_layer_norm.\\2"),
    KeyRule(r"head_transform\\.(weight|bias)", r"lm_head.dense.\\1"),
    KeyRule(r"head_norm\\.(weight|bias)", r"lm_head.layer_norm.\\1"),
    KeyRule(r"head_out\\.(weight|bias)", r"lm_head.decoder.\\1"),
]
"""
ENCODER_HARNESS = """
ORIGINAL_CAPTURE_POINTS = {
    "embeddings": "embed_norm",
    "layers.{index}.self_attn": "layers.{index}.self_attn",
    "layers.{index}.attention_layer_norm": "layers.{index}.norm1",
    "layers.{index}.mlp": "layers.{index}.linear2",
    "layers.{index}.mlp_layer_norm": "layers.{index}.norm2",
    "layers.{index}": "layers.{index}",
    "logits": "",
}


def run_original(model: nn.Module, inputs: dict[str, torch.Tensor]) -> object:
    return model(inputs["input_ids"], inputs["attention_mask"])
"""

ENCODER_ANSWERS = {
    **load_answer_set("bert_equivalent"),
    "model_name": "PortedEncoder",
    "package_name": "ported_encoder",
    "token_type_embeddings": False,
    "pooler": False,
    "heads": ["MaskedLM"],
    "tie_word_embeddings": False,
}
# name -> (answers, research module, its config, the conversion script's edit section, the harness's)
PORTS = {
    "decoder": (
        {**load_answer_set("llama_equivalent"), "model_name": "PortedDecoder", "package_name": "ported_decoder"},
        "research_decoder",
        DECODER_CONFIG,
        DECODER_CONVERSION,
        DECODER_HARNESS,
    ),
    "encoder": (ENCODER_ANSWERS, "research_encoder", ENCODER_CONFIG, ENCODER_CONVERSION, ENCODER_HARNESS),
    # The same port code, for the variant without biases, embedding norm or head transform
    "encoder-without-biases": (
        {**ENCODER_ANSWERS, "model_name": "BarePortedEncoder", "package_name": "bare_ported_encoder"},
        "research_encoder",
        {**ENCODER_CONFIG, "bias": False, "embedding_norm": False, "head_transform": False},
        ENCODER_CONVERSION,
        ENCODER_HARNESS,
    ),
}


def code_lines(code: str) -> int:
    return sum(1 for line in code.splitlines() if line.strip() and not line.strip().startswith("#"))


def fill_edit_section(script: Path, code: str) -> None:
    """Replace a generated script's edit section, as a user editing it for their original does."""
    text = script.read_text()
    assert len(EDIT_SECTION.findall(text)) == 1, script
    script.write_text(EDIT_SECTION.sub(lambda match: match[0].replace(match["section"], code.strip("\n")), text))


def run_module(project: Path, module: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    command = [*warm_python_command(), "-m", module, *map(str, args)]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600)


def convert_port(project: Path, package: str, model_type: str, output: str) -> subprocess.CompletedProcess:
    arguments = ["--checkpoint", "research.pt", "--config", "research_config.json", "--output", output]
    return run_module(project, f"{package}.convert_{model_type}_checkpoint", *arguments)


@pytest.fixture(scope="module")
def ported(tmp_path_factory):
    """port name -> (project, package name, model type), rendered, its scripts filled in, the original saved."""
    template = Path(__file__).parents[1]
    projects = {}
    for name, (answers, research_module, config, conversion, harness) in PORTS.items():
        project = tmp_path_factory.mktemp(f"port-{name}") / "project"
        copier.run_copy(str(template), project, data=answers, defaults=True, unsafe=True, skip_tasks=True, quiet=True)
        rendered = yaml.safe_load((project / ".copier-answers.yml").read_text())
        package, model_type = rendered["package_name"], rendered["model_type"]
        fill_edit_section(project / "src" / package / f"convert_{model_type}_checkpoint.py", conversion)
        fill_edit_section(project / "src" / package / f"compare_{model_type}_with_original.py", harness)
        shutil.copyfile(RESEARCH_MODELS / f"{research_module}.py", project / f"{research_module}.py")
        sys.path.insert(0, str(RESEARCH_MODELS))
        try:
            original = importlib.import_module(research_module).build(config)
        finally:
            sys.path.remove(str(RESEARCH_MODELS))
        torch.save(original.state_dict(), project / "research.pt")
        (project / "research_config.json").write_text(json.dumps(config))
        projects[name] = (project, package, model_type)
    return projects


@pytest.mark.parametrize("port", PORTS)
def test_each_port_needs_fewer_lines_than_the_budget(port):
    _, _, _, conversion, harness = PORTS[port]
    assert code_lines(conversion) <= PORT_LINE_BUDGET, code_lines(conversion)
    assert code_lines(harness) <= PORT_LINE_BUDGET, code_lines(harness)


@pytest.mark.parametrize("port", PORTS)
def test_research_code_ports_to_parity_on_padded_batches_long_inputs_and_generation(ported, port):
    project, package, model_type = ported[port]

    converted = convert_port(project, package, model_type, "converted")
    assert converted.returncode == 0, converted.stdout + converted.stderr
    assert "0 unused" in converted.stdout and "Model keys no original tensor filled" not in converted.stdout

    compared = run_module(
        project,
        f"{package}.compare_{model_type}_with_original",
        *("--original", f"{PORTS[port][1]}:load_model", "--converted", "converted", "--batch-size", "3"),
    )
    report = compared.stdout + compared.stderr
    assert compared.returncode == 0, report
    assert "Batch of 3 x 16 tokens, padding: right" in report
    assert report.count("Parity: every point compared is within 1e-05.") == 2, report
    assert "DIVERGES" not in report
    if port == "encoder-without-biases":
        assert "embeddings - skipped (the original has no embed_norm)" in " ".join(report.split())
    if port == "decoder":
        assert "Generation: greedy tokens with the cache equal those of the original." in report
        assert "new parameters" in converted.stdout and "; 2 new parameters" in converted.stdout


def test_the_decoder_port_matches_on_left_padded_batches_too(ported):
    project, package, model_type = ported["decoder"]
    converted = convert_port(project, package, model_type, "converted-for-left-padding")
    assert converted.returncode == 0, converted.stdout + converted.stderr
    compared = run_module(
        project,
        f"{package}.compare_{model_type}_with_original",
        *("--original", "research_decoder:load_model", "--converted", "converted-for-left-padding"),
        *("--padding", "left", "--long-length", "0", "--new-tokens", "0"),
    )
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "padding: left" in compared.stdout


def import_port(project: Path, package: str, model_type: str):
    sys.path[:0] = [str(project / "src"), str(project)]
    try:
        convert = importlib.import_module(f"{package}.convert_{model_type}_checkpoint")
        compare = importlib.import_module(f"{package}.compare_{model_type}_with_original")
        research = importlib.import_module("research_decoder")
    finally:
        del sys.path[:2]
    return convert, compare, research


@pytest.mark.parametrize(
    "forgotten, diverging_point",
    [
        ("layers\\.(\\d*[13579])\\.norm\\.weight", "layers.0.post_attention_layernorm"),
        ("layers\\.(\\d+)\\.attn\\.wo\\.weight", "layers.0.self_attn"),
        ("layers\\.(\\d*[02468])\\.norm\\.weight", "layers.0.input_layernorm"),
        ("norm\\.weight", "final norm"),
    ],
)
def test_a_port_bug_in_one_sub_module_is_named_by_the_harness(ported, tmp_path, forgotten, diverging_point):
    """A rule whose transform is forgotten (the unit offset of a norm, the head order of the output projection)."""
    project, package, model_type = ported["decoder"]
    convert, compare, research = import_port(project, package, model_type)
    rules = [
        convert.KeyRule(rule.original, rule.converted) if getattr(rule, "original", None) == forgotten else rule
        for rule in convert.CHECKPOINT_KEY_RULES
    ]
    assert rules != convert.CHECKPOINT_KEY_RULES
    values = convert.read_config_values(project / "research_config.json", [])
    convert.convert_checkpoint(project / "research.pt", tmp_path / "buggy", values, rules=rules, model_card=None)

    original = research.ResearchDecoder(DECODER_CONFIG)
    original.load_state_dict(torch.load(project / "research.pt", weights_only=True))
    model_class = importlib.import_module(package).PortedDecoderForCausalLM
    converted = model_class.from_pretrained(tmp_path / "buggy", attn_implementation="eager")
    inputs = compare.make_inputs(DECODER_CONFIG["vocab"], batch_size=2, seq_length=12, seed=0, padding="right")

    results = compare.compare_models(original.eval(), converted.eval(), inputs)

    assert compare.first_divergence(results, atol=1e-5).point == diverging_point, compare.report(results, 1e-5)
    assert f"first diverge at {diverging_point} " in compare.report(results, 1e-5)

"""The generated conversion script: Transformers' and original-layout checkpoints convert to matching logits."""

from __future__ import annotations

import importlib
import json

import pytest
import safetensors.torch
import torch
import yaml
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from conftest import import_rendered_package, load_answer_set


def converter(render, answer_set: str):
    """The rendered package of an answer set and its conversion module."""
    project = render(load_answer_set(answer_set), name=answer_set)
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    package = import_rendered_package(project, answers["package_name"])
    return package, importlib.import_module(f"{answers['package_name']}.convert_{answers['model_type']}_checkpoint")


def input_ids(vocab_size: int, shape: tuple[int, int] = (2, 9)) -> torch.LongTensor:
    return torch.randint(3, vocab_size, shape, generator=torch.Generator().manual_seed(0))


def run_cli(convert_module, *args) -> int:
    return convert_module.main([str(arg) for arg in args])


LLAMA = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}


def test_a_transformers_llama_checkpoint_converts_to_the_same_logits(render, tmp_path):
    package, convert = converter(render, "llama_equivalent")
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(**LLAMA)).eval()
    llama.save_pretrained(tmp_path / "llama")

    status = run_cli(
        convert,
        "--checkpoint",
        tmp_path / "llama",
        "--config",
        tmp_path / "llama" / "config.json",
        "--output",
        tmp_path / "out",
    )

    assert status == 0
    converted = package.OracleLlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = input_ids(LLAMA["vocab_size"])
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, llama(ids).logits, rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"]


def to_meta_layout(llama: LlamaForCausalLM) -> dict[str, torch.Tensor]:
    """Meta's reference checkpoint layout: other names, and rotary dims interleaved in pairs."""
    config = llama.config

    def interleave(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
        rows = weight.shape[0]
        return weight.view(num_heads, 2, rows // num_heads // 2, -1).transpose(1, 2).reshape(weight.shape)

    meta = {"tok_embeddings.weight": llama.model.embed_tokens.weight, "norm.weight": llama.model.norm.weight}
    meta["output.weight"] = llama.lm_head.weight
    for index, layer in enumerate(llama.model.layers):
        prefix = f"layers.{index}."
        meta[prefix + "attention.wq.weight"] = interleave(layer.self_attn.q_proj.weight, config.num_attention_heads)
        meta[prefix + "attention.wk.weight"] = interleave(layer.self_attn.k_proj.weight, config.num_key_value_heads)
        meta[prefix + "attention.wv.weight"] = layer.self_attn.v_proj.weight
        meta[prefix + "attention.wo.weight"] = layer.self_attn.o_proj.weight
        meta[prefix + "feed_forward.w1.weight"] = layer.mlp.gate_proj.weight
        meta[prefix + "feed_forward.w3.weight"] = layer.mlp.up_proj.weight
        meta[prefix + "feed_forward.w2.weight"] = layer.mlp.down_proj.weight
        meta[prefix + "attention_norm.weight"] = layer.input_layernorm.weight
        meta[prefix + "ffn_norm.weight"] = layer.post_attention_layernorm.weight
    return {name: tensor.detach().clone() for name, tensor in meta.items()}


def test_a_meta_layout_checkpoint_with_interleaved_rotary_weights_converts(render, tmp_path):
    package, convert = converter(render, "llama_equivalent")
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(**LLAMA)).eval()
    torch.save(to_meta_layout(llama), tmp_path / "consolidated.00.pth")
    params = {"dim": 64, "n_layers": 2, "n_heads": 8, "n_kv_heads": 2, "vocab_size": 128, "norm_eps": 1e-6}
    (tmp_path / "params.json").write_text(json.dumps(params))

    status = run_cli(
        convert,
        "--checkpoint",
        tmp_path / "consolidated.00.pth",
        "--config",
        tmp_path / "params.json",
        "--set",
        "intermediate_size=96",
        "--set",
        "tie_word_embeddings=false",
        "--output",
        tmp_path / "out",
    )

    assert status == 0
    converted = package.OracleLlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = input_ids(LLAMA["vocab_size"])
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, llama(ids).logits, rtol=0, atol=1e-5)


def test_a_gpt2_checkpoint_with_fused_qkv_and_conv1d_weights_converts(render, tmp_path):
    package, convert = converter(render, "gpt2_like")
    torch.manual_seed(0)
    gpt2_config = GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_inner=256, n_positions=64, vocab_size=100, bos_token_id=1, eos_token_id=2
    )
    gpt2 = GPT2LMHeadModel(gpt2_config).eval()
    # A plain PyTorch state dict, as training code saves it: fused c_attn, Conv1D weights stored (in, out)
    torch.save(gpt2.state_dict(), tmp_path / "gpt2.bin")
    gpt2_config.to_json_file(tmp_path / "config.json")

    status = run_cli(
        convert,
        "--checkpoint",
        tmp_path / "gpt2.bin",
        "--config",
        tmp_path / "config.json",
        "--set",
        "num_key_value_heads=4",
        "--output",
        tmp_path / "out",
    )

    assert status == 0
    converted = package.TinyGptForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = input_ids(gpt2_config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, gpt2(ids).logits, rtol=0, atol=1e-5)


def test_a_transformers_bert_checkpoint_converts_to_the_same_logits(render, tmp_path):
    package, convert = converter(render, "bert_equivalent")
    torch.manual_seed(0)
    bert_config = BertConfig(
        vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96
    )
    bert = BertForMaskedLM(bert_config).eval()
    bert.save_pretrained(tmp_path / "bert")

    status = run_cli(
        convert,
        "--checkpoint",
        tmp_path / "bert",
        "--config",
        tmp_path / "bert" / "config.json",
        "--output",
        tmp_path / "out",
    )

    assert status == 0
    converted = package.OracleBertForMaskedLM.from_pretrained(tmp_path / "out").eval()
    ids = input_ids(bert_config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, bert(ids).logits, rtol=0, atol=1e-5)


def test_a_transformers_bart_checkpoint_converts_to_the_same_logits(render, tmp_path):
    package, convert = converter(render, "bart_equivalent")
    torch.manual_seed(0)
    bart_config = BartConfig(
        vocab_size=120,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=96,
        decoder_ffn_dim=96,
        max_position_embeddings=64,
    )
    bart = BartForConditionalGeneration(bart_config).eval()
    bart.save_pretrained(tmp_path / "bart")

    status = run_cli(
        convert,
        "--checkpoint",
        tmp_path / "bart",
        "--config",
        tmp_path / "bart" / "config.json",
        "--output",
        tmp_path / "out",
    )

    assert status == 0
    converted = package.OracleBartForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    ids = input_ids(bart_config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, bart(ids).logits, rtol=0, atol=1e-5)


def converted_gpt2(render, tmp_path):
    """A GPT-2 (fused QKV, Conv1D weights) and its conversion into the GPT-2-like rendered decoder."""
    package, convert = converter(render, "gpt2_like")
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=64, n_layer=3, n_head=4, n_inner=256, n_positions=64, vocab_size=100, bos_token_id=1, eos_token_id=2
    )
    gpt2 = GPT2LMHeadModel(config).eval()
    gpt2.save_pretrained(tmp_path / "gpt2")
    status = run_cli(
        convert,
        "--checkpoint",
        tmp_path / "gpt2",
        "--config",
        tmp_path / "gpt2" / "config.json",
        "--set",
        "num_key_value_heads=4",
        "--output",
        tmp_path / "converted",
    )
    assert status == 0
    compare = importlib.import_module(f"{package.__name__}.compare_tiny_gpt_with_original")
    converted = package.TinyGptForCausalLM.from_pretrained(tmp_path / "converted", attn_implementation="eager")
    return gpt2, converted, compare


def test_the_harness_passes_a_faithful_conversion_through_its_command_line(render, tmp_path, monkeypatch, capsys):
    _, _, compare = converted_gpt2(render, tmp_path)
    (tmp_path / "original_gpt2.py").write_text(
        "from transformers import GPT2LMHeadModel\n\n\n"
        f"def load_model():\n    return GPT2LMHeadModel.from_pretrained({str(tmp_path / 'gpt2')!r}, attn_implementation='eager')\n"
    )
    monkeypatch.chdir(tmp_path)

    status = compare.main(["--original", "original_gpt2:load_model", "--converted", str(tmp_path / "converted")])

    output = capsys.readouterr().out
    assert status == 0, output
    for point in ("embeddings", "layers.0", "layers.1", "layers.2", "final norm", "logits"):
        assert point in output
    assert "Parity: every point within 1e-05." in output


def test_the_harness_names_the_layer_where_an_injected_bug_starts(render, tmp_path):
    gpt2, converted, compare = converted_gpt2(render, tmp_path)
    with torch.no_grad():
        converted.model.layers[1].mlp.down_proj.bias += 0.05  # the bug
    inputs = compare.make_inputs(converted.config.vocab_size, batch_size=2, seq_length=8, seed=0)

    results = compare.compare_models(gpt2, converted, inputs)

    by_point = {result.point: result.max_abs_diff for result in results}
    assert by_point["embeddings"] <= 1e-5 and by_point["layers.0"] <= 1e-5
    assert compare.first_divergence(results, atol=1e-5).point == "layers.1"
    assert "first diverge at layers.1" in compare.report(results, atol=1e-5)


@pytest.mark.parametrize(
    ("answer_set", "original_class", "original_config"),
    [
        (
            "bert_equivalent",
            BertForMaskedLM,
            BertConfig(
                vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96
            ),
        ),
        (
            "bart_equivalent",
            BartForConditionalGeneration,
            BartConfig(
                vocab_size=120,
                d_model=64,
                encoder_layers=2,
                decoder_layers=3,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=96,
                decoder_ffn_dim=96,
                max_position_embeddings=64,
            ),
        ),
    ],
    ids=["encoder-vs-bert", "encoder-decoder-vs-bart"],
)
def test_the_harness_passes_for_the_other_families_with_their_prefilled_capture_points(
    render, tmp_path, answer_set, original_class, original_config
):
    package, convert = converter(render, answer_set)
    torch.manual_seed(0)
    original = original_class(original_config).eval()
    original.save_pretrained(tmp_path / "original")
    status = run_cli(
        convert,
        "--checkpoint",
        tmp_path / "original",
        "--config",
        tmp_path / "original" / "config.json",
        "--output",
        tmp_path / "converted",
    )
    assert status == 0
    config_class = next(getattr(package, name) for name in package.__all__ if name.endswith("Config"))
    compare = importlib.import_module(f"{package.__name__}.compare_{config_class.model_type}_with_original")
    target_class = next(
        getattr(package, name)
        for name in package.__all__
        if name.endswith(("ForMaskedLM", "ForConditionalGeneration"))
    )
    converted = target_class.from_pretrained(tmp_path / "converted", attn_implementation="eager")
    original.set_attn_implementation("eager")
    inputs = compare.make_inputs(converted.config.vocab_size, batch_size=2, seq_length=8, seed=0)

    results = compare.compare_models(original, converted, inputs)

    assert compare.first_divergence(results, atol=1e-5) is None, compare.report(results, atol=1e-5)
    assert len(results) >= 4


def llama_checkpoint(tmp_path):
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(**LLAMA)).eval()
    llama.save_pretrained(tmp_path / "llama")
    return tmp_path / "llama"


def test_a_shape_mismatch_names_both_keys_and_writes_nothing(render, tmp_path, capsys):
    _, convert = converter(render, "llama_equivalent")
    checkpoint = llama_checkpoint(tmp_path)

    status = run_cli(
        convert,
        "--checkpoint",
        checkpoint,
        "--config",
        checkpoint / "config.json",
        "--set",
        "intermediate_size=80",
        "--output",
        tmp_path / "out",
    )

    error = capsys.readouterr().err
    assert status == 1
    assert (
        "model.layers.0.mlp.up_proj.weight -> model.layers.0.mlp.up_proj.weight: checkpoint (96, 64), model (80, 64)"
        in error
    )
    assert not (tmp_path / "out").exists()


def test_missing_and_unused_keys_are_listed_and_nothing_is_written(render, tmp_path, capsys):
    _, convert = converter(render, "llama_equivalent")
    checkpoint = llama_checkpoint(tmp_path)
    state_dict = safetensors.torch.load_file(checkpoint / "model.safetensors")
    del state_dict["model.layers.1.post_attention_layernorm.weight"]
    state_dict["model.extra_adapter.weight"] = torch.zeros(2)
    state_dict["vision_tower.weight"] = torch.zeros(2)
    safetensors.torch.save_file(state_dict, tmp_path / "edited.safetensors")

    status = run_cli(
        convert,
        "--checkpoint",
        tmp_path / "edited.safetensors",
        "--config",
        checkpoint / "config.json",
        "--output",
        tmp_path / "out",
    )

    captured = capsys.readouterr()
    assert status == 1
    assert "model.extra_adapter.weight" in captured.err  # a key the rules produce but the model lacks
    assert not (tmp_path / "out").exists()

    del state_dict["model.extra_adapter.weight"]
    safetensors.torch.save_file(state_dict, tmp_path / "edited.safetensors")
    status = run_cli(
        convert,
        "--checkpoint",
        tmp_path / "edited.safetensors",
        "--config",
        checkpoint / "config.json",
        "--output",
        tmp_path / "out",
    )
    captured = capsys.readouterr()
    assert status == 1
    assert "  vision_tower.weight" in captured.out
    assert "  model.layers.1.post_attention_layernorm.weight" in captured.out
    assert "--allow-missing" in captured.err
    assert not (tmp_path / "out").exists()

    status = run_cli(
        convert,
        "--checkpoint",
        tmp_path / "edited.safetensors",
        "--config",
        checkpoint / "config.json",
        "--output",
        tmp_path / "out",
        "--allow-missing",
    )
    assert status == 0 and (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("file_name", ["broken.safetensors", "broken.pt"])
def test_a_corrupted_checkpoint_is_reported_and_nothing_is_written(render, tmp_path, capsys, file_name):
    _, convert = converter(render, "llama_equivalent")
    (tmp_path / file_name).write_bytes(b"\x00\x01 not a checkpoint")

    status = run_cli(
        convert, "--checkpoint", tmp_path / file_name, "--set", "hidden_size=64", "--output", tmp_path / "out"
    )

    assert status == 1
    assert f"could not read checkpoint {tmp_path / file_name}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_sharded_checkpoint_converts(render, tmp_path):
    package, convert = converter(render, "llama_equivalent")
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(**LLAMA)).eval()
    llama.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()

    status = run_cli(
        convert,
        "--checkpoint",
        tmp_path / "sharded" / "model.safetensors.index.json",
        "--config",
        tmp_path / "sharded" / "config.json",
        "--output",
        tmp_path / "out",
        "--max-shard-size",
        "200KB",
    )

    assert status == 0
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    converted = package.OracleLlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = input_ids(LLAMA["vocab_size"])
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, llama(ids).logits, rtol=0, atol=1e-5)

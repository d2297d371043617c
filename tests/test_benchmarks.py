"""The helpers of the benchmarks (benchmarks/): the weights-in-fresh-memory copy that model timings use, the shifted
checkpoint of the layout control, and the task's peak tensor memory."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
import transformers
from safetensors.torch import load_file
from transformers.utils import ModelOutput

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# Every tensor a multiple of 8 bytes, so that a shift (a multiple of 8) can match any other such file exactly
TINY_BART = {
    "vocab_size": 100,
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "max_position_embeddings": 64,
}


def load_benchmark_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_tiny_bart(directory: Path) -> Path:
    torch.manual_seed(0)
    transformers.BartForConditionalGeneration(transformers.BartConfig(**TINY_BART)).save_pretrained(directory)
    return directory


def mapped_file_regions(path: Path) -> list[tuple[int, int]]:
    """Address ranges where this process has `path` memory-mapped (Linux)."""
    regions = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and Path(fields[5]) == path:
            start, end = (int(address, 16) for address in fields[0].split("-"))
            regions.append((start, end))
    return regions


def test_fresh_memory_moves_every_weight_out_of_the_checkpoint_and_keeps_ties(tmp_path):
    model_speed = load_benchmark_script("model_speed")
    checkpoint = save_tiny_bart(tmp_path / "bart")
    model = transformers.BartForConditionalGeneration.from_pretrained(checkpoint).eval()
    input_ids = torch.tensor([[0, 5, 6, 7, 2]])
    with torch.no_grad():
        before = model(input_ids).logits

    def in_checkpoint(tensor: torch.Tensor) -> bool:
        regions = mapped_file_regions((checkpoint / "model.safetensors").resolve())
        return any(start <= tensor.data_ptr() < end for start, end in regions)

    # Without this precondition the test would pass for a loader that already copies
    assert any(in_checkpoint(parameter) for parameter in model.parameters()), "the weights were not memory-mapped"
    model_speed.move_to_fresh_memory(model)
    assert not any(in_checkpoint(tensor) for tensor in [*model.parameters(), *model.buffers()])
    assert model.lm_head.weight is model.model.shared.weight
    assert model.lm_head.weight.data_ptr() == model.model.encoder.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, before, rtol=0, atol=0)


def test_shifted_checkpoint_moves_the_tensors_to_the_other_files_page_offset(tmp_path):
    bench = load_benchmark_script("bench")
    original = save_tiny_bart(tmp_path / "bart")
    torch.manual_seed(0)
    llama = transformers.LlamaConfig(
        vocab_size=99, hidden_size=48, intermediate_size=40, num_hidden_layers=1, num_attention_heads=4
    )
    transformers.LlamaForCausalLM(llama).save_pretrained(tmp_path / "llama")
    like = tmp_path / "llama" / "model.safetensors"

    shift = bench.shifted_checkpoint(original, tmp_path / "shifted", like=like)

    shifted = tmp_path / "shifted" / "model.safetensors"
    assert shift > 0 and shift % 8 == 0
    assert bench.largest_tensor_page_offset(shifted) == bench.largest_tensor_page_offset(like)
    assert bench.largest_tensor_page_offset(original / "model.safetensors") != bench.largest_tensor_page_offset(like)
    expected, actual = load_file(original / "model.safetensors"), load_file(shifted)
    assert list(actual) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name
    # Transformers reads the padded header as it is
    _, loading = transformers.BartForConditionalGeneration.from_pretrained(shifted.parent, output_loading_info=True)
    assert not any(loading.values()), loading


class AllocatesSixMebibytes(torch.nn.Module):
    """Holds three 2 MiB tensors at once, then returns a small result."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ModelOutput:
        first = torch.ones(512, 1024)
        second = first * 2
        return ModelOutput(last_hidden_state=(first + second).sum(dim=1, keepdim=True))


def test_task_peak_counts_the_tensors_held_at_once():
    model_speed = load_benchmark_script("model_speed")
    inputs = {"input_ids": torch.ones(1, 4, dtype=torch.long), "attention_mask": torch.ones(1, 4, dtype=torch.long)}

    peaks = [model_speed.task_peak_mib(AllocatesSixMebibytes(), "forward", inputs) for _ in range(3)]

    # first, second and their sum (2 MiB each) are alive together; the small results add less than 0.01 MiB
    assert 6 <= peaks[0] < 6.01, peaks
    assert peaks == [peaks[0]] * 3


def test_a_partial_run_replaces_only_its_section_of_the_report():
    bench = load_benchmark_script("bench")
    report = "# Benchmarks\n\n## Models\n\nold models\n\n## Converting a large checkpoint\n\nold conversion\n"
    section = "## Converting a large checkpoint\n\nnew conversion\n"

    replaced = bench.replace_section(report, bench.CONVERSION_HEADING, section)
    appended = bench.replace_section("# Benchmarks\n\n## Models\n\nold models\n", bench.CONVERSION_HEADING, section)

    assert replaced == "# Benchmarks\n\n## Models\n\nold models\n\n" + section
    assert appended == replaced
    followed = bench.replace_section(report + "\n## Later\n\nkept\n", bench.CONVERSION_HEADING, section)
    assert followed == replaced + "\n## Later\n\nkept\n"


def test_a_run_without_the_conversion_keeps_the_measured_conversion_section():
    bench = load_benchmark_script("bench")
    kept = "## Converting a large checkpoint\n\nProduced by `nox -s bench -- --sections conversion`\n"
    report = "# Benchmarks\n\n## Models\n\nold models\n\n" + kept + "\n## Later\n\nkept\n"

    assert bench.section_of(report, bench.CONVERSION_HEADING) == kept
    assert bench.section_of(report.replace("\n## Later\n\nkept\n", ""), bench.CONVERSION_HEADING) == kept
    assert bench.section_of("# Benchmarks\n\n## Models\n", bench.CONVERSION_HEADING) is None
    new_first_part = "# Benchmarks\n\n## Models\n\nnew models\n"
    assert bench.replace_section(new_first_part, bench.CONVERSION_HEADING, kept) == new_first_part + "\n" + kept


def test_the_conversion_measurement_reports_the_peak_above_the_baseline(tmp_path):
    conversion = load_benchmark_script("conversion")
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    conversion.write_sharded({f"t{index}": torch.ones(1024, 1024) for index in range(3)}, checkpoint, shard_mb=5)
    script = [sys.executable, str(BENCHMARKS / "conversion.py"), "measure", "--task=safetensors"]

    result = subprocess.run(
        [*script, f"--checkpoint={checkpoint}", f"--output={tmp_path / 'copy'}"], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.splitlines()[-1])
    assert len(list(checkpoint.glob("*.safetensors"))) == 3  # 4 MiB tensors, shards of at most 5 MB
    assert measured["largest_input_shard_mib"] == pytest.approx(4, abs=0.01)
    # load_file maps one 4 MiB shard, save_file writes it: the peak is about one shard, not the baseline
    assert 3.5 <= measured["peak_above_baseline_mib"] < 40, measured
    assert sorted(path.name for path in (tmp_path / "copy").iterdir()) == sorted(
        path.name for path in checkpoint.glob("*.safetensors")
    )

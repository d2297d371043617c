"""Peak memory and time of the generated conversion script on a large sharded checkpoint, and of two floors.

    python benchmarks/conversion.py checkpoint --family decoder --output DIR [--shard-mb 256]
    python benchmarks/conversion.py measure --task convert --checkpoint DIR --output DIR --project DIR
    python benchmarks/conversion.py measure --task safetensors --checkpoint DIR --output DIR
    python benchmarks/conversion.py measure --task transformers --checkpoint DIR --output DIR --project DIR

`checkpoint` writes a synthetic original checkpoint of random fp32 weights: for the decoder in Meta's reference
layout (`tok_embeddings`, `layers.N.attention.wq`, interleaved rotary rows), which the generated decoder's rules
convert with a transform per query and key tensor; for the encoder-decoder in BART's layout, with the tied
embeddings saved once. Shards hold at most `--shard-mb` megabytes (10^6 bytes).

`measure` runs one task in this process and prints a JSON line: the resident set size after the imports (the
baseline), the peak resident set size above it while the task runs (Linux: the peak is reset through
/proc/self/clear_refs once the imports are done), and the wall time of the task.
- convert: the generated script's `main`, from the original checkpoint into `--output`.
- safetensors: every shard read with `safetensors.torch.load_file` and written with `save_file`, the floor of
  reading and writing these bytes.
- transformers: `from_pretrained` of the converted output, then `save_pretrained`.
bench.py runs each task in a fresh process, alternating them, and reports medians (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import yaml
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import load_file, save_file

# Shapes of the synthetic checkpoints: 1.2 GB of fp32 weights each (no tensor above 140 MB)
DECODER = {"dim": 2048, "n_layers": 5, "n_heads": 16, "n_kv_heads": 4, "vocab_size": 16000, "norm_eps": 1e-5}
DECODER_INTERMEDIATE_SIZE = 5632
ENCODER_DECODER = {
    "vocab_size": 32000,
    "d_model": 1024,
    "encoder_layers": 8,
    "decoder_layers": 8,
    "encoder_attention_heads": 16,
    "decoder_attention_heads": 16,
    "encoder_ffn_dim": 4096,
    "decoder_ffn_dim": 4096,
    "max_position_embeddings": 1024,
}


def meta_layout_shapes(params: dict, intermediate_size: int) -> dict[str, tuple[int, ...]]:
    hidden, head_dim = params["dim"], params["dim"] // params["n_heads"]
    kv_size = params["n_kv_heads"] * head_dim
    shapes = {"tok_embeddings.weight": (params["vocab_size"], hidden)}
    for index in range(params["n_layers"]):
        prefix = f"layers.{index}."
        shapes |= {
            prefix + "attention.wq.weight": (hidden, hidden),
            prefix + "attention.wk.weight": (kv_size, hidden),
            prefix + "attention.wv.weight": (kv_size, hidden),
            prefix + "attention.wo.weight": (hidden, hidden),
            prefix + "feed_forward.w1.weight": (intermediate_size, hidden),
            prefix + "feed_forward.w3.weight": (intermediate_size, hidden),
            prefix + "feed_forward.w2.weight": (hidden, intermediate_size),
            prefix + "attention_norm.weight": (hidden,),
            prefix + "ffn_norm.weight": (hidden,),
        }
    return shapes | {"norm.weight": (hidden,), "output.weight": (params["vocab_size"], hidden)}


def bart_layout_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    import transformers

    with torch.device("meta"):
        model = transformers.BartForConditionalGeneration(transformers.BartConfig(**config))
    tied = model.get_expanded_tied_weights_keys(all_submodels=True)
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items() if key not in tied}


def write_sharded(tensors: dict[str, torch.Tensor], output: Path, shard_mb: int) -> None:
    split = split_torch_state_dict_into_shards(
        tensors, filename_pattern="model{suffix}.safetensors", max_shard_size=f"{shard_mb}MB"
    )
    for filename, keys in split.filename_to_tensors.items():
        save_file({key: tensors[key] for key in keys}, output / filename, metadata={"format": "pt"})
    index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
    (output / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def write_checkpoint(family: str, output: Path, shard_mb: int) -> dict:
    """Write the synthetic checkpoint and its config; returns the conversion's extra arguments."""
    output.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    if family == "decoder":
        shapes = meta_layout_shapes(DECODER, DECODER_INTERMEDIATE_SIZE)
        (output / "params.json").write_text(json.dumps(DECODER))
        extra = ["--set", f"intermediate_size={DECODER_INTERMEDIATE_SIZE}", "--set", "tie_word_embeddings=false"]
        config = output / "params.json"
    else:
        shapes = bart_layout_shapes(ENCODER_DECODER)
        (output / "config.json").write_text(json.dumps({**ENCODER_DECODER, "model_type": "bart"}))
        extra, config = [], output / "config.json"
    tensors = {key: torch.randn(shape, generator=generator) * 0.02 for key, shape in shapes.items()}
    if "final_logits_bias" in tensors:
        tensors["final_logits_bias"].zero_()  # the generated head has no such bias: the rules check it is zero
    write_sharded(tensors, output, shard_mb)
    return {"config": str(config), "extra": extra}


def resident_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def conversion_module(project: Path):
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    sys.path.insert(0, str(project / "src"))
    package = importlib.import_module(answers["package_name"])
    return package, importlib.import_module(f"{answers['package_name']}.convert_{answers['model_type']}_checkpoint")


def measure(args: argparse.Namespace) -> dict:
    if args.task != "safetensors":
        package, convert = conversion_module(args.project)
    shards = sorted(args.checkpoint.glob("*.safetensors"))
    os.sync()  # the previous task's writes are not flushed during this one
    baseline = resident_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current resident size
    start = time.perf_counter()
    if args.task == "convert":
        status = convert.main(
            ["--checkpoint", str(args.checkpoint), "--config", args.config, "--output", str(args.output), *args.extra]
        )
        if status != 0:
            raise SystemExit(f"the conversion failed with status {status}")
    elif args.task == "safetensors":
        args.output.mkdir()
        for shard in shards:
            save_file(load_file(shard), args.output / shard.name, metadata={"format": "pt"})
    else:
        model_class = getattr(package, json.loads((args.checkpoint / "config.json").read_text())["architectures"][0])
        model_class.from_pretrained(args.checkpoint).save_pretrained(args.output)
    seconds = time.perf_counter() - start
    peak = resident_mib("VmHWM")
    largest_shard = max(shard.stat().st_size for shard in shards) / 2**20
    return {
        "seconds": seconds,
        "baseline_mib": baseline,
        "peak_above_baseline_mib": peak - baseline,
        "largest_input_shard_mib": largest_shard,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("checkpoint")
    make.add_argument("--family", choices=["decoder", "encoder-decoder"], required=True)
    make.add_argument("--output", type=Path, required=True)
    make.add_argument("--shard-mb", type=int, default=256)
    run = commands.add_parser("measure")
    run.add_argument("--task", choices=["convert", "safetensors", "transformers"], required=True)
    run.add_argument("--checkpoint", type=Path, required=True)
    run.add_argument("--output", type=Path, required=True)
    run.add_argument("--project", type=Path)
    run.add_argument("--config")
    run.add_argument("--extra", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    if args.command == "checkpoint":
        print(json.dumps(write_checkpoint(args.family, args.output, args.shard_mb)))
    else:
        print(json.dumps(measure(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

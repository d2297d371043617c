"""One measurement of a generated model against its Transformers twin, in a fresh process; prints JSON.

    python benchmarks/model_speed.py --twin-class LlamaForCausalLM --package PKG --generated-class CLASS \\
        --converted DIR --original DIR --attn sdpa --task forward

Loads both models, alternates them call by call (ABBA order) so that both see the same machine state, and
reports each one's times, then its peak tensor memory during one more run (`task_peak_mib`). With
`--weights fresh` (the default) every weight is first copied into newly allocated memory, see
`move_to_fresh_memory`. The generated model is loaded first, or the twin with `--twin-first`.

`--package` and `--generated-class` name the class loaded from `--converted`; the layout control of bench.py
passes a Transformers class there to time the twin against a copy of itself.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

BATCH_SIZE, SEQUENCE_LENGTH = 4, 512
PROMPT_LENGTH, NEW_TOKENS = 16, 64


def load_models(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    classes = {
        "generated": (getattr(importlib.import_module(args.package), args.generated_class), args.converted),
        "twin": (getattr(transformers, args.twin_class), args.original),
    }
    if args.twin_first:
        classes = dict(reversed(classes.items()))
    models = {}
    for name, (model_class, checkpoint) in classes.items():
        model = model_class.from_pretrained(checkpoint, attn_implementation=args.attn).eval()
        # The encoder is compared base model to base model (BertModel), the others head to head
        models[name] = model.base_model if args.base_model_only else model
    return models


def move_to_fresh_memory(model: torch.nn.Module) -> None:
    """Copy every weight out of the memory-mapped checkpoint into newly allocated memory, in module order.

    `from_pretrained` leaves the weights mapped from the safetensors file, at byte offsets that follow from the tensor
    names and the header's length. On CPU the same model at another offset runs several percent faster or slower
    (the layout control of BENCHMARKS.md). Fresh allocations of the same sizes in the same order give the two models
    the same layout, so that their ratio compares the models rather than their files.
    """
    with torch.no_grad():
        for parameter in model.parameters():  # tied weights are one parameter: they stay tied
            parameter.data = parameter.data.clone()
        for module in model.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = buffer.clone()


def task_inputs(args: argparse.Namespace, vocab_size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (BATCH_SIZE, SEQUENCE_LENGTH) if args.task == "forward" else (1, PROMPT_LENGTH)
    input_ids = torch.randint(4, vocab_size, shape, generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def run_task(model: torch.nn.Module, task: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        if task == "forward":
            outputs = model(**inputs)
            return outputs.logits if hasattr(outputs, "logits") else outputs.last_hidden_state
        # Exactly NEW_TOKENS tokens: min_new_tokens keeps the end-of-sequence token out until then
        return model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)


def measure(args: argparse.Namespace) -> dict:
    models = load_models(args)
    if args.weights == "fresh":
        for model in models.values():
            move_to_fresh_memory(model)
    inputs = task_inputs(args, models["twin"].config.vocab_size)
    outputs = {name: run_task(model, args.task, inputs) for name, model in models.items()}  # warm-up
    if args.task == "forward":
        difference = (outputs["generated"] - outputs["twin"]).abs().max().item()
    else:
        difference = float((outputs["generated"] != outputs["twin"]).sum().item())
    times = {name: [] for name in models}
    for repeat in range(args.repeats):
        # ABBA: neither model always runs right after the other
        order = list(models.items()) if repeat % 2 == 0 else list(models.items())[::-1]
        for name, model in order:
            started = time.perf_counter()
            run_task(model, args.task, inputs)
            times[name].append(time.perf_counter() - started)
    peaks = {name: task_peak_mib(model, args.task, inputs) for name, model in models.items()}
    return {"times": times, "difference": difference, "task_peak_mib": peaks}


def task_peak_mib(model: torch.nn.Module, task: str, inputs: dict[str, torch.Tensor]) -> float:
    """The most tensor memory the task holds at once beyond what existed before it: the running sum of the
    allocations and frees of PyTorch's CPU allocator, as the profiler records them in order.

    Exact and the same on every run, unlike the resident set size, whose allocator noise (about 1 MiB) is as
    large as a whole generation's cache at these sizes."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
        run_task(model, task, inputs)
    # The "[memory]" events carry each allocation (+) and free (-) with its time
    changes = sorted(
        (event.start_ns(), event.nbytes())
        for event in profiler.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--twin-class", required=True, help="the Transformers class measured against")
    parser.add_argument("--base-model-only", action="store_true", help="compare the base models of both")
    parser.add_argument("--package", required=True)
    parser.add_argument("--generated-class", required=True)
    parser.add_argument("--converted", type=Path, required=True)
    parser.add_argument("--original", type=Path, required=True)
    parser.add_argument("--attn", choices=["eager", "sdpa"], required=True)
    parser.add_argument("--task", choices=["forward", "generate"], required=True)
    parser.add_argument(
        "--weights",
        choices=["fresh", "mapped"],
        default="fresh",
        help="time with weights copied into fresh memory, or as mapped from the checkpoint files",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each model")
    parser.add_argument(
        "--twin-first", action="store_true", help="load (and place in memory) the twin first, then the generated model"
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    result = measure(args)
    result["median"] = {name: statistics.median(values) for name, values in result["times"].items()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

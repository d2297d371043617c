"""One measurement of a generated model against its Transformers twin, in a fresh process; prints JSON.

    python benchmarks/model_speed.py time --family decoder --converted DIR --original DIR --attn sdpa --task forward
    python benchmarks/model_speed.py memory --family decoder --converted DIR --original DIR --attn sdpa \\
        --task forward --which generated

`time` loads both models and alternates them call by call (ABBA order), so that both see the same machine state;
with `--weights fresh` (the default) it first copies every weight into newly allocated memory, see
`move_to_fresh_memory`. `memory` loads one model and reports its peak resident memory while running the task (a
process has one peak, hence one model per process; Linux only).

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

# The Transformers class each family is measured against, and the part of it the issue names
TWINS = {
    "decoder": ("LlamaForCausalLM", None),
    "encoder": ("BertForMaskedLM", "bert"),
    "encoder-decoder": ("BartForConditionalGeneration", None),
}
BATCH_SIZE, SEQUENCE_LENGTH = 4, 512
PROMPT_LENGTH, NEW_TOKENS = 16, 64


def load_models(args: argparse.Namespace, which: list[str]) -> dict[str, torch.nn.Module]:
    twin_class, twin_part = TWINS[args.family]
    models = {}
    if "generated" in which:
        package = importlib.import_module(args.package)
        generated_class = getattr(package, args.generated_class)
        model = generated_class.from_pretrained(args.converted, attn_implementation=args.attn).eval()
        # The encoder is compared base model to base model (BertModel), the others head to head
        models["generated"] = model.base_model if twin_part else model
    if "twin" in which:
        model = getattr(transformers, twin_class).from_pretrained(args.original, attn_implementation=args.attn).eval()
        models["twin"] = model.base_model if twin_part else model
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


def measure_time(args: argparse.Namespace) -> dict:
    models = load_models(args, ["generated", "twin"])
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
    return {"times": times, "difference": difference}


def memory_status_kib(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, from Linux's /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(args: argparse.Namespace) -> dict:
    """Peak resident memory of the task above what the loaded model holds: the peak is reset after a warm-up run,
    so that neither loading nor first-call allocations count."""
    model = load_models(args, [args.which])[args.which]
    inputs = task_inputs(args, model.config.vocab_size)
    run_task(model, args.task, inputs)
    task_peaks = []
    for _ in range(args.memory_repeats):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        before = memory_status_kib("VmRSS")
        run_task(model, args.task, inputs)
        task_peaks.append((memory_status_kib("VmHWM") - before) / 1024)
    # The allocator does not free the same way every time: the median of the runs is the task's peak
    return {"task_peak_mib": statistics.median(task_peaks), "task_peaks_mib": task_peaks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measure", choices=["time", "memory"])
    parser.add_argument("--family", choices=list(TWINS), required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--generated-class", required=True)
    parser.add_argument("--converted", type=Path, required=True)
    parser.add_argument("--original", type=Path, required=True)
    parser.add_argument("--attn", choices=["eager", "sdpa"], required=True)
    parser.add_argument("--task", choices=["forward", "generate"], required=True)
    parser.add_argument("--which", choices=["generated", "twin"], default="generated")
    parser.add_argument(
        "--weights",
        choices=["fresh", "mapped"],
        default="fresh",
        help="time with weights copied into fresh memory, or as mapped from the checkpoint files",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each model")
    parser.add_argument("--memory-repeats", type=int, default=5, help="runs whose peak memory is measured")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    result = measure_time(args) if args.measure == "time" else measure_memory(args)
    if args.measure == "time":
        result["median"] = {name: statistics.median(values) for name, values in result["times"].items()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks of the template and of the models it generates; writes BENCHMARKS.md.

    nox -s bench                      # or: python benchmarks/bench.py --output BENCHMARKS.md
    nox -s bench -- --repeats 3       # quicker, noisier

Measured side by side in one run, on the committed template (HEAD):
- `copier copy --trust --defaults` with its hooks (format, smoke test, git) against the floor: a Python process
  that imports torch and transformers and runs one tiny forward pass of LlamaForCausalLM; `copier update` across
  one version against a copy.
- each family's generated model, and the decoder answer sets of Mistral, Qwen3, Gemma, Gemma2, OLMo2 and Mixtral, against
  its Transformers twin with the same config and weights (converted by the generated conversion script): a forward
  pass on 4 x 512 tokens and greedy generation of 64 new tokens, fp32, eager and SDPA attention (eager only where
  the twin soft-caps, as Gemma2, which has no SDPA); time (median of alternated runs, weights in fresh memory and as mapped from the
  checkpoint files) and the task's peak tensor memory.
- the layout control: each twin against itself loaded from a copy of its checkpoint whose tensors sit at the
  generated checkpoint's offsets within a memory page. It shows what the file layout alone does to the time.
- each family's generated test suite.
- the generated conversion script on a synthetic checkpoint of 1.2 GB in shards of at most 256 MB (decoder in
  Meta's layout, encoder-decoder in BART's), each run in a fresh process (benchmarks/conversion.py): peak
  resident memory above the interpreter's after its imports, and wall time, against two floors measured in the
  same run, alternately: safetensors alone reading and writing the same shards, and `from_pretrained` +
  `save_pretrained` of the converted output.

`--sections conversion` runs only the conversion and replaces its section of the existing report;
`--sections workflow models suites` runs the rest (they share the report's first part) and keeps the conversion's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MODEL_SPEED = Path(__file__).with_name("model_speed.py")
CONVERSION = Path(__file__).with_name("conversion.py")
SECTIONS = ["workflow", "models", "suites", "conversion"]
CONVERSION_HEADING = "## Converting a large checkpoint"
# Family -> the answer set whose conversion rules read the synthetic checkpoint's layout
CONVERSION_FAMILIES = {"decoder": "llama_equivalent", "encoder-decoder": "bart_equivalent"}

FLOOR = (
    "import torch, transformers; "
    "model = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=99, hidden_size=32, "
    "intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1)); "
    "model(torch.tensor([[1, 2, 3]]))"
)

# Twin -> (family, answer set, Transformers config and class of the twin, the generated class the conversion fills).
# Windows shorter than the forward's and the generation's tokens, so that they are timed.
TWINS = {
    "decoder": (
        "decoder",
        "llama_equivalent",
        "LlamaConfig(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, "
        "num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False)",
        "LlamaForCausalLM",
        "ForCausalLM",
    ),
    "decoder, Mistral": (
        "decoder",
        "mistral_equivalent",
        "MistralConfig(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, "
        "num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False, "
        "sliding_window=48)",
        "MistralForCausalLM",
        "ForCausalLM",
    ),
    "decoder, Qwen3": (
        "decoder",
        "qwen3_equivalent",
        "Qwen3Config(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, "
        "num_attention_heads=8, num_key_value_heads=2, head_dim=64, max_position_embeddings=1024, "
        "tie_word_embeddings=False, use_sliding_window=True, sliding_window=48, max_window_layers=2)",
        "Qwen3ForCausalLM",
        "ForCausalLM",
    ),
    "decoder, Gemma": (
        "decoder",
        "gemma_equivalent",
        "GemmaConfig(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, "
        "num_attention_heads=8, num_key_value_heads=8, head_dim=64, max_position_embeddings=1024)",
        "GemmaForCausalLM",
        "ForCausalLM",
    ),
    "decoder, Gemma2": (
        "decoder",
        "gemma2_equivalent",
        "Gemma2Config(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, "
        "num_attention_heads=8, num_key_value_heads=4, head_dim=64, query_pre_attn_scalar=64, "
        "max_position_embeddings=1024, sliding_window=48)",
        "Gemma2ForCausalLM",
        "ForCausalLM",
    ),
    "decoder, OLMo2": (
        "decoder",
        "olmo2_equivalent",
        "Olmo2Config(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, "
        "num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=1024, tie_word_embeddings=False)",
        "Olmo2ForCausalLM",
        "ForCausalLM",
    ),
    "decoder, Mixtral": (
        "decoder",
        "mixtral_equivalent",
        "MixtralConfig(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, "
        "num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False, "
        "sliding_window=48, num_local_experts=4, num_experts_per_tok=2)",
        "MixtralForCausalLM",
        "ForCausalLM",
    ),
    "encoder": (
        "encoder",
        "bert_equivalent",
        "BertConfig(vocab_size=8000, hidden_size=512, num_hidden_layers=4, num_attention_heads=8, "
        "intermediate_size=2048, max_position_embeddings=512)",
        "BertForMaskedLM",
        "ForMaskedLM",
    ),
    "encoder-decoder": (
        "encoder-decoder",
        "bart_equivalent",
        "BartConfig(vocab_size=8000, d_model=512, encoder_layers=3, decoder_layers=3, encoder_attention_heads=8, "
        "decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=1024)",
        "BartForConditionalGeneration",
        "ForConditionalGeneration",
    ),
}
TARGETS = {
    "copy": 1.5,
    "update": 1.5,
    "speed": 1.02,
    "memory": 1.02,
    "test_suite_s": 20.0,
    "conversion_memory": 1.5,  # × the largest input shard
    "conversion_time": 1.5,  # × the safetensors floor
}
PAGE_SIZE = 4096
# A fixed mmap threshold makes glibc map every large tensor afresh, page-aligned, rather than where its history of
# frees left room: the weights copied into fresh memory land the same way for both models and in every run
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def timed_run(command: list[str], **kwargs) -> float:
    """Seconds the command took (it must succeed)."""
    started = time.perf_counter()
    run(command, **kwargs)
    return time.perf_counter() - started


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def git_home(directory: Path) -> dict[str, str]:
    """An environment whose git can commit, as the porter's would (the hook commits the generated project)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".gitconfig").write_text("[user]\n\tname = Bench\n\temail = bench@example.com\n")
    return {**os.environ, "HOME": str(directory), "GIT_CONFIG_NOSYSTEM": "1", "HF_HUB_OFFLINE": "1"}


def tagged_template(workdir: Path, env: dict) -> Path:
    """A clone of HEAD tagged 9000.0.0, then a template change tagged 9000.0.1: one version to update across."""
    template = workdir / "template-repo"
    run(["git", "clone", "--quiet", str(ROOT), str(template)], env=env)
    run(["git", "tag", "9000.0.0"], cwd=template, env=env)
    # The modeling files' docstring, which every family's modeling file opens with
    macros = template / "template" / "_includes" / "macros.jinja"
    docstring = '"""PyTorch {{ model_name }} model."""'
    if docstring not in macros.read_text():
        raise RuntimeError(f"{docstring} is not in {macros.name}: the benchmark's template change no longer applies")
    macros.write_text(
        macros.read_text().replace(docstring, '"""PyTorch {{ model_name }} model (one version later)."""')
    )
    run(["git", "commit", "--quiet", "--all", "-m", "a template change"], cwd=template, env=env)
    run(["git", "tag", "9000.0.1"], cwd=template, env=env)
    return template


def bench_copy_and_update(workdir: Path, repeats: int) -> dict:
    env = git_home(workdir / "home")
    template = tagged_template(workdir, env)
    copier = [sys.executable, "-m", "copier"]
    floor, copies, updates = [], [], []
    for index in range(repeats):
        log(f"copy and update, round {index + 1}/{repeats}")
        floor.append(timed_run([sys.executable, "-c", FLOOR], env=env))
        destination = workdir / f"copy-{index}"
        command = [*copier, "copy", "--trust", "--defaults", "--quiet", "--vcs-ref=9000.0.1"]
        copies.append(timed_run([*command, str(template), str(destination)], env=env))
        old = workdir / f"update-{index}"
        run(
            [*copier, "copy", "--trust", "--defaults", "--quiet", "--vcs-ref=9000.0.0", str(template), str(old)],
            env=env,
        )
        update = [*copier, "update", "--trust", "--defaults", "--quiet"]
        updates.append(timed_run(update, cwd=old, env=env))
        assert "one version later" in next(old.glob("src/*/modeling_*.py")).read_text(), "the update did not apply"
    return {"floor": summary(floor), "copy": summary(copies), "update": summary(updates)}


def render(destination: Path, *answers: str) -> Path:
    """Render HEAD without hooks; `answers` are Copier options such as `--data-file=...` or `-d key=value`."""
    command = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "--quiet", "--skip-tasks"]
    run([*command, "--vcs-ref=HEAD", *answers, str(ROOT), str(destination)])
    return destination


def load_answers(answer_set: Path) -> dict:
    return yaml.safe_load(answer_set.read_text())


def slug(name: str) -> str:
    """A folder name for a twin's name ("decoder, Mistral" -> "decoder-mistral")."""
    return name.lower().replace(", ", "-")


def convert_twin(name: str, project: Path, workdir: Path) -> tuple[Path, Path, dict]:
    """Save a random twin, convert it with the generated script; returns both folders and the package names."""
    _, _, config, twin_class, _ = TWINS[name]
    original, converted = workdir / f"{slug(name)}-original", workdir / f"{slug(name)}-converted"
    twin_config = config.split("(")[0]
    save = (
        f"import torch; from transformers import {twin_class}, {twin_config}; torch.manual_seed(0); "
        f"{twin_class}({config}).save_pretrained({str(original)!r})"
    )
    run([sys.executable, "-c", save])
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    package, model_type = answers["package_name"], answers["model_type"]
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "HF_HUB_OFFLINE": "1"}
    convert = [sys.executable, "-m", f"{package}.convert_{model_type}_checkpoint", "--checkpoint", str(original)]
    run([*convert, "--config", str(original / "config.json"), "--output", str(converted)], env=env)
    return original, converted, {"package": package, "model_name": answers["model_name"]}


def safetensors_header(path: Path) -> tuple[int, dict]:
    """The header's length and its tensor entries (safetensors: 8-byte little-endian length, then JSON)."""
    with path.open("rb") as file:
        length = struct.unpack("<Q", file.read(8))[0]
        tensors = json.loads(file.read(length))
    tensors.pop("__metadata__", None)
    return length, tensors


def largest_tensor_page_offset(path: Path) -> int:
    """Where the file's largest tensor starts within a memory page, once the file is memory-mapped."""
    length, tensors = safetensors_header(path)
    start, _ = max((entry["data_offsets"] for entry in tensors.values()), key=lambda offsets: offsets[1] - offsets[0])
    return (8 + length + start) % PAGE_SIZE


def shifted_checkpoint(original: Path, destination: Path, like: Path) -> int:
    """Copy the checkpoint folder `original`, padding its safetensors header with spaces (the format allows them) so
    that its largest tensor starts at the same offset within a page as the largest tensor of the file `like`.

    Returns the shift in bytes; the tensors and their order are unchanged."""
    source = original / "model.safetensors"
    shift = (largest_tensor_page_offset(like) - largest_tensor_page_offset(source)) % PAGE_SIZE
    shift -= shift % 8  # header lengths stay multiples of 8
    shutil.copytree(original, destination)
    length, _ = safetensors_header(source)
    raw = source.read_bytes()
    padded = raw[8 : 8 + length] + b" " * shift
    (destination / "model.safetensors").write_bytes(struct.pack("<Q", len(padded)) + padded + raw[8 + length :])
    return shift


def model_speed(arguments: list[str], env: dict) -> dict:
    """Times of model_speed.py from two processes, one loading the generated model first and one the twin.

    Whichever model is loaded first ran 0.5-1% slower here in repeated runs, so each order counts once. The times
    of both processes are pooled; the difference and the memory peaks, which do not depend on the order, come from
    the first."""
    runs = [
        json.loads(run([sys.executable, str(MODEL_SPEED), *arguments, *twin_first], env=env).stdout)
        for twin_first in ([], ["--twin-first"])
    ]
    times = {name: [value for result in runs for value in result["times"][name]] for name in ("generated", "twin")}
    ratio = statistics.median(times["generated"]) / statistics.median(times["twin"])
    first = runs[0]
    return {"times": times, "ratio": ratio, "difference": first["difference"], "task_peak_mib": first["task_peak_mib"]}


def bench_models(workdir: Path, repeats: int) -> tuple[dict, dict]:
    results, controls = {}, {}
    for twin, (family, answer_set, _, twin_class, head) in TWINS.items():
        answers = ROOT / "tests" / "answers" / f"{answer_set}.yml"
        project = render(workdir / f"{slug(twin)}-project", f"--data-file={answers}")
        original, converted, names = convert_twin(twin, project, workdir)
        env = {**os.environ, "PYTHONPATH": str(project / "src"), "HF_HUB_OFFLINE": "1", **FIXED_MALLOC}
        # The encoder is compared base model to base model (BertModel), the others head to head
        twin_arguments = ["--twin-class", twin_class, *(["--base-model-only"] if family == "encoder" else [])]
        common = [
            *twin_arguments,
            *("--package", names["package"]),
            *("--generated-class", names["model_name"] + head),
            *("--converted", str(converted), "--original", str(original)),
        ]
        tasks = ["forward"] if family == "encoder" else ["forward", "generate"]
        # SDPA cannot soft-cap: such twins (Gemma2) attend eagerly only
        attention_implementations = ["eager"] if load_answers(answers).get("soft_capping") else ["eager", "sdpa"]
        for attn in attention_implementations:
            for task in tasks:
                log(f"{twin} {task} {attn}")
                arguments = [*common, "--attn", attn, "--task", task]
                timed = [*arguments, f"--repeats={repeats}"]
                speed = model_speed([*timed, "--weights=fresh"], env)
                mapped = model_speed([*timed, "--weights=mapped"], env)
                results[f"{twin} {task} {attn}"] = {
                    "generated": summary(speed["times"]["generated"]),
                    "twin": summary(speed["times"]["twin"]),
                    "ratio": speed["ratio"],
                    "mapped_ratio": mapped["ratio"],
                    "difference": speed["difference"],
                    "task_peak_mib": speed["task_peak_mib"],
                }
        # The twin against itself, its tensors moved to where the generated checkpoint has them within a page
        shifted = workdir / f"{slug(twin)}-original-shifted"
        shift = shifted_checkpoint(original, shifted, like=converted / "model.safetensors")
        control = [
            *twin_arguments,
            *("--package", "transformers", "--generated-class", twin_class),
            *("--converted", str(shifted), "--original", str(original), "--attn", attention_implementations[-1]),
        ]
        for task in tasks:
            log(f"{twin} {task} layout control")
            timed = [*control, f"--task={task}", f"--repeats={repeats}"]
            ratios = {
                weights: model_speed([*timed, f"--weights={weights}"], env)["ratio"] for weights in ("mapped", "fresh")
            }
            controls[f"{twin} {task}"] = {"shift": shift, **ratios}
    return results, controls


def bench_test_suites(workdir: Path, repeats: int) -> dict:
    results = {}
    for family in dict.fromkeys(family for family, *_ in TWINS.values()):
        project = render(workdir / f"suite-{family}", f"--data=family={family}")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        log(f"{family} generated test suite")
        results[family] = summary([timed_run(command, cwd=project, env=env) for _ in range(repeats)])
    return results


def measure_conversion(task: str, checkpoint: Path, output: Path, *arguments: str) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, str(CONVERSION), "measure", f"--task={task}", f"--checkpoint={checkpoint}"]
    result = run([*command, f"--output={output}", *arguments], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_conversion(workdir: Path, repeats: int) -> dict:
    results = {}
    for family, answer_set in CONVERSION_FAMILIES.items():
        project = render(
            workdir / f"conversion-{family}", f"--data-file={ROOT / 'tests' / 'answers'}/{answer_set}.yml"
        )
        original = workdir / f"conversion-{family}-original"
        log(f"{family}: writing the synthetic checkpoint")
        made = run([sys.executable, str(CONVERSION), "checkpoint", f"--family={family}", f"--output={original}"])
        options = json.loads(made.stdout.strip().splitlines()[-1])
        convert_options = [f"--project={project}", f"--config={options['config']}", "--extra", *options["extra"]]
        converted, copy = workdir / f"conversion-{family}-converted", workdir / f"conversion-{family}-copy"
        runs = {"convert": [], "safetensors": [], "transformers": []}
        for index in range(repeats):
            log(f"{family} conversion, round {index + 1}/{repeats}")
            runs["convert"].append(measure_conversion("convert", original, converted, *convert_options))
            runs["safetensors"].append(measure_conversion("safetensors", original, copy))
            runs["transformers"].append(measure_conversion("transformers", converted, copy, f"--project={project}"))
        size = sum(path.stat().st_size for path in original.glob("*.safetensors"))
        results[family] = {
            "checkpoint_gb": size / 1e9,
            "shards": len(list(original.glob("*.safetensors"))),
            "largest_shard_mib": runs["convert"][0]["largest_input_shard_mib"],
            **{
                task: {
                    "seconds": summary([measured["seconds"] for measured in task_runs]),
                    "peak_mib": summary([measured["peak_above_baseline_mib"] for measured in task_runs]),
                }
                for task, task_runs in runs.items()
            },
        }
        for folder in (original, converted, copy):
            shutil.rmtree(folder, ignore_errors=True)
    return results


def versions() -> dict:
    import copier
    import torch
    import transformers

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "processor": platform.processor() or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "copier": copier.__version__,
        "threads": torch.get_num_threads(),
        "commit": run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT).stdout.strip(),
    }


def verdict(ratio: float, target: float) -> str:
    return "met" if ratio <= target else "MISSED"


def seconds(result: dict) -> str:
    return f"{result['median']:.3f} s ({result['min']:.3f}–{result['max']:.3f}, {result['runs']} runs)"


def report(command: str, machine: dict, workflow: dict, models: dict, controls: dict, suites: dict) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')} (template commit {machine['commit']}).",
        "",
        f"- Machine: {machine['machine']}; processor: {machine['processor']}; torch threads: {machine['threads']}",
        f"- Python {machine['python']}, torch {machine['torch']}, transformers {machine['transformers']}, "
        f"copier {machine['copier']}",
        "- No GPU on this machine: the columns are CPU, fp32. Medians, with the range of the runs in brackets.",
        "",
        "## Generating and updating a project",
        "",
        "| measurement | time | ratio | target | |",
        "| --- | --- | --- | --- | --- |",
        f"| floor: import torch + transformers, one tiny forward | {seconds(workflow['floor'])} | 1.00 | | |",
    ]
    copy_ratio = workflow["copy"]["median"] / workflow["floor"]["median"]
    update_ratio = workflow["update"]["median"] / workflow["copy"]["median"]
    lines += [
        f"| `copier copy --trust --defaults` (format, smoke test, git) | {seconds(workflow['copy'])} | "
        f"{copy_ratio:.2f} × floor | ≤ {TARGETS['copy']} | {verdict(copy_ratio, TARGETS['copy'])} |",
        f"| `copier update --trust --defaults` across one version | {seconds(workflow['update'])} | "
        f"{update_ratio:.2f} × copy | ≤ {TARGETS['update']} | {verdict(update_ratio, TARGETS['update'])} |",
        "",
        "## Generated models against their Transformers twins",
        "",
        "Same config, same weights (converted by the generated script). Forward: 4 × 512 tokens. Generate: greedy,",
        "16-token prompt, 64 new tokens. The encoder is compared as a base model with `BertModel` (inside",
        "`BertForMaskedLM`). Time: median of alternated runs (ABBA) of both models in one process, pooled over two",
        "processes (one loads the generated model first, the other the twin), with every weight copied into fresh",
        "memory after loading (glibc's mmap threshold fixed, so that both land the same way); the next column gives",
        "the ratio with the weights left mapped from the checkpoint files, which the layout control below explains.",
        "Memory: the most tensor memory the task holds at once beyond the loaded model, from the running sum of",
        "PyTorch's CPU allocations and frees recorded by the profiler (exact: the resident set size has about 1 MiB of",
        "allocator noise, as much as a whole generation's cache here). Max difference: the largest absolute difference",
        "of the forward outputs, or the number of differing generated tokens. The Mistral, Qwen3 and Mixtral twins attend",
        "within windows of 48 tokens (Qwen3 in its upper two layers), shorter than both tasks' sequences.",
        "",
        "| twin, task, attention | generated | twin | time ratio | time ratio, weights mapped from the files"
        " | peak memory generated / twin | memory ratio | max difference | |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, result in models.items():
        speed_ratio = result["ratio"]
        generated_memory, twin_memory = result["task_peak_mib"]["generated"], result["task_peak_mib"]["twin"]
        memory_ratio = generated_memory / twin_memory
        met = speed_ratio <= TARGETS["speed"] and memory_ratio <= TARGETS["memory"]
        lines.append(
            f"| {name} | {seconds(result['generated'])} | {seconds(result['twin'])} | {speed_ratio:.3f} | "
            f"{result['mapped_ratio']:.3f} | {generated_memory:.2f} / {twin_memory:.2f} MiB | {memory_ratio:.3f} | "
            f"{result['difference']:.2g} | {'met' if met else 'MISSED'} |"
        )
    lines += [
        "",
        f"Targets: time ratio ≤ {TARGETS['speed']}, memory ratio ≤ {TARGETS['memory']}.",
        "",
        "### Layout control",
        "",
        "`from_pretrained` leaves the weights memory-mapped from the safetensors file, where each tensor's offset",
        "follows from the tensor names and the header's length. Here each twin runs against itself (SDPA), loaded",
        "from a copy of its own checkpoint whose header is padded with spaces so that the tensors start at the",
        "generated checkpoint's offset within a 4 KiB page: same code, same weights, same order, only the offset",
        "differs. A ratio away from 1 with mapped weights, and 1 with fresh ones, is the file layout alone. With a",
        "shift of 0 bytes (the two files already agree) the row is an A/A check: its distance from 1 is noise.",
        "",
        "| twin, task | shift | time ratio, weights mapped from the files | time ratio, weights in fresh memory |",
        "| --- | --- | --- | --- |",
    ]
    for name, control in controls.items():
        lines.append(f"| {name} | {control['shift']} bytes | {control['mapped']:.3f} | {control['fresh']:.3f} |")
    lines += [
        "",
        "## Generated test suites",
        "",
        "| family (default answers) | `python -m pytest` | target | |",
        "| --- | --- | --- | --- |",
    ]
    for family, result in suites.items():
        target = TARGETS["test_suite_s"]
        lines.append(f"| {family} | {seconds(result)} | ≤ {target:.0f} s | {verdict(result['median'], target)} |")
    return "\n".join(lines) + "\n"


def mib(result: dict) -> str:
    return f"{result['median']:.0f} MiB ({result['min']:.0f}–{result['max']:.0f})"


def conversion_report(command: str, machine: dict, results: dict) -> str:
    lines = [
        CONVERSION_HEADING,
        "",
        f"Measured by `{command}` on {time.strftime('%Y-%m-%d')} (template commit {machine['commit']}).",
        "",
        "The generated conversion script (`main`, in-process) on a synthetic fp32 checkpoint: the decoder's in Meta's",
        "reference layout (its rules permute every query and key weight), the encoder-decoder's in BART's (tied",
        "embeddings saved once). Each task runs in a fresh process, the three alternating, after `os.sync()`. Memory:",
        "the peak resident set size while the task runs, above the resident set size after the imports (VmHWM reset",
        "through /proc/self/clear_refs). Floors: every shard read with `safetensors.torch.load_file` and written",
        "with `save_file`; `from_pretrained` of the converted output, then `save_pretrained`.",
        "",
        "| family, checkpoint | task | peak memory above baseline | × largest input shard | time | × safetensors floor"
        " | |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for family, result in results.items():
        name = f"{family}, {result['checkpoint_gb']:.2f} GB in {result['shards']} shards"
        shard, floor = result["largest_shard_mib"], result["safetensors"]["seconds"]["median"]
        tasks = {
            "convert": "generated conversion script",
            "safetensors": "floor: safetensors read + write",
            "transformers": "floor: from_pretrained + save_pretrained",
        }
        for task, label in tasks.items():
            memory_ratio = result[task]["peak_mib"]["median"] / shard
            time_ratio = result[task]["seconds"]["median"] / floor
            met = ""
            if task == "convert":
                met_memory = memory_ratio <= TARGETS["conversion_memory"]
                met = "met" if met_memory and time_ratio <= TARGETS["conversion_time"] else "MISSED"
            lines.append(
                f"| {name} | {label} | {mib(result[task]['peak_mib'])} | {memory_ratio:.2f} | "
                f"{seconds(result[task]['seconds'])} | {time_ratio:.2f} | {met} |"
            )
    lines += [
        "",
        f"Targets: peak memory ≤ {TARGETS['conversion_memory']} × the largest input shard, time ≤"
        f" {TARGETS['conversion_time']} × the safetensors floor.",
    ]
    return "\n".join(lines) + "\n"


def section_of(report_text: str, heading: str) -> str | None:
    """The section under `heading` (up to the next `## ` heading), or None where the report has none."""
    start = report_text.find(heading + "\n")
    if start == -1:
        return None
    end = report_text.find("\n## ", start + len(heading))
    return report_text[start : end if end != -1 else len(report_text)]


def replace_section(report_text: str, heading: str, section: str) -> str:
    """The report with the section under `heading` (up to the next `## ` heading) replaced, or appended."""
    start = report_text.find(heading + "\n")
    if start == -1:
        return report_text.rstrip("\n") + "\n\n" + section
    end = report_text.find("\n## ", start + len(heading))
    return report_text[:start] + section + (report_text[end:] if end != -1 else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--repeats", type=int, default=11, help="timed runs of each model task")
    parser.add_argument("--workflow-repeats", type=int, default=3, help="copies, updates and test-suite runs")
    parser.add_argument("--command", default="nox -s bench", help="the command recorded in the report")
    parser.add_argument("--conversion-repeats", type=int, default=5, help="runs of each conversion task")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS, help="what to measure")
    args = parser.parse_args(argv)
    first_part = set(SECTIONS) - {"conversion"}
    if set(args.sections) & first_part and not first_part <= set(args.sections):
        parser.error("--sections runs workflow, models and suites together (they share the report's first part)")
    if run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT).stdout.strip():
        log("warning: uncommitted changes are not measured (the template is rendered from HEAD)")

    workdir = Path(tempfile.mkdtemp(prefix="ctm-bench-"))
    try:
        machine = versions()
        existing = args.output.read_text() if args.output.exists() else "# Benchmarks\n"
        text = existing
        if "models" in args.sections:
            workflow = bench_copy_and_update(workdir, args.workflow_repeats)
            models, controls = bench_models(workdir, args.repeats)
            suites = bench_test_suites(workdir, args.workflow_repeats)
            text = report(args.command, machine, workflow, models, controls, suites)
        if "conversion" in args.sections:
            conversion = bench_conversion(workdir, args.conversion_repeats)
            text = replace_section(text, CONVERSION_HEADING, conversion_report(args.command, machine, conversion))
        elif (kept := section_of(existing, CONVERSION_HEADING)) is not None:
            text = replace_section(text, CONVERSION_HEADING, kept)  # with the command that measured it
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.output.write_text(text)
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks of the template and of the models it generates; writes BENCHMARKS.md.

    nox -s bench                      # or: python benchmarks/bench.py --output BENCHMARKS.md
    nox -s bench -- --repeats 3       # quicker, noisier

Measured side by side in one run, on the committed template (HEAD):
- `copier copy --trust --defaults` with its hooks (format, smoke test, git) against the floor: a Python process
  that imports torch and transformers and runs one tiny forward pass of LlamaForCausalLM; `copier update` across
  one version against a copy.
- each family's generated model against its Transformers twin with the same config and weights (converted by the
  generated conversion script): a forward pass on 4 x 512 tokens and greedy generation of 64 new tokens, fp32,
  eager and SDPA attention; time (median of alternated runs) and peak memory of the task.
- each family's generated test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MODEL_SPEED = Path(__file__).with_name("model_speed.py")

FLOOR = (
    "import torch, transformers; "
    "model = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=99, hidden_size=32, "
    "intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1)); "
    "model(torch.tensor([[1, 2, 3]]))"
)

# Family -> (answer set, Transformers config and class of the twin, the generated class the conversion fills)
FAMILIES = {
    "decoder": (
        "llama_equivalent",
        "LlamaConfig(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, "
        "num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False)",
        "LlamaForCausalLM",
        "ForCausalLM",
    ),
    "encoder": (
        "bert_equivalent",
        "BertConfig(vocab_size=8000, hidden_size=512, num_hidden_layers=4, num_attention_heads=8, "
        "intermediate_size=2048, max_position_embeddings=512)",
        "BertForMaskedLM",
        "ForMaskedLM",
    ),
    "encoder-decoder": (
        "bart_equivalent",
        "BartConfig(vocab_size=8000, d_model=512, encoder_layers=3, decoder_layers=3, encoder_attention_heads=8, "
        "decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=1024)",
        "BartForConditionalGeneration",
        "ForConditionalGeneration",
    ),
}
TARGETS = {"copy": 1.5, "update": 1.5, "speed": 1.02, "memory": 1.02, "test_suite_s": 20.0}


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
    modeling = template / "template" / "_includes" / "decoder" / "modeling.py.jinja"
    modeling.write_text(modeling.read_text().replace('model."""', 'model (one version later)."""', 1))
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


def convert_twin(family: str, project: Path, workdir: Path) -> tuple[Path, Path, dict]:
    """Save a random twin, convert it with the generated script; returns both folders and the package names."""
    _, config, twin_class, _ = FAMILIES[family]
    original, converted = workdir / f"{family}-original", workdir / f"{family}-converted"
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


def bench_models(workdir: Path, repeats: int) -> dict:
    results = {}
    for family, (answer_set, _, _, head) in FAMILIES.items():
        answers = ROOT / "tests" / "answers" / f"{answer_set}.yml"
        project = render(workdir / f"{family}-project", f"--data-file={answers}")
        original, converted, names = convert_twin(family, project, workdir)
        env = {**os.environ, "PYTHONPATH": str(project / "src"), "HF_HUB_OFFLINE": "1"}
        common = [
            *("--family", family, "--package", names["package"]),
            *("--generated-class", names["model_name"] + head),
            *("--converted", str(converted), "--original", str(original)),
        ]
        tasks = ["forward"] if family == "encoder" else ["forward", "generate"]
        for attn in ("eager", "sdpa"):
            for task in tasks:
                log(f"{family} {task} {attn}")
                arguments = [*common, "--attn", attn, "--task", task]
                speed = json.loads(
                    run([sys.executable, str(MODEL_SPEED), "time", *arguments, f"--repeats={repeats}"], env=env).stdout
                )
                # A fixed mmap threshold makes glibc give every large tensor back to the system when it is freed,
                # so that the resident peak follows the live tensors rather than the allocator's history
                memory_env = {**env, "MALLOC_MMAP_THRESHOLD_": "131072"}
                memory = {
                    which: json.loads(
                        run(
                            [sys.executable, str(MODEL_SPEED), "memory", *arguments, f"--which={which}"],
                            env=memory_env,
                        ).stdout
                    )
                    for which in ("generated", "twin")
                }
                results[f"{family} {task} {attn}"] = {
                    "generated": summary(speed["times"]["generated"]),
                    "twin": summary(speed["times"]["twin"]),
                    "difference": speed["difference"],
                    "memory": memory,
                }
    return results


def bench_test_suites(workdir: Path, repeats: int) -> dict:
    results = {}
    for family in FAMILIES:
        project = render(workdir / f"suite-{family}", f"--data=family={family}")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        log(f"{family} generated test suite")
        results[family] = summary([timed_run(command, cwd=project, env=env) for _ in range(repeats)])
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


def report(command: str, machine: dict, workflow: dict, models: dict, suites: dict) -> str:
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
        "`BertForMaskedLM`). Memory: the peak resident memory of the task above what the process held before it",
        "(Linux VmHWM, reset after a warm-up run, with glibc's mmap threshold fixed so that freed tensors leave),",
        "median of 5 runs, each model in its own process. Max difference: the largest absolute difference of the",
        "forward outputs, or the number of differing generated tokens.",
        "",
        "| family, task, attention | generated | twin | time ratio | peak memory generated / twin | memory ratio"
        " | max difference | |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, result in models.items():
        speed_ratio = result["generated"]["median"] / result["twin"]["median"]
        generated_memory = result["memory"]["generated"]["task_peak_mib"]
        twin_memory = result["memory"]["twin"]["task_peak_mib"]
        # Below 1 MiB (generation steps on small inputs) the allocator's page granularity dominates: not compared
        memory_ratio = generated_memory / twin_memory if max(generated_memory, twin_memory) >= 1 else 1.0
        met = speed_ratio <= TARGETS["speed"] and memory_ratio <= TARGETS["memory"]
        lines.append(
            f"| {name} | {seconds(result['generated'])} | {seconds(result['twin'])} | {speed_ratio:.3f} | "
            f"{generated_memory:.0f} / {twin_memory:.0f} MiB | {memory_ratio:.3f} | {result['difference']:.2g} | "
            f"{'met' if met else 'MISSED'} |"
        )
    lines += [
        "",
        f"Targets: time ratio ≤ {TARGETS['speed']}, memory ratio ≤ {TARGETS['memory']}.",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--repeats", type=int, default=11, help="timed runs of each model task")
    parser.add_argument("--workflow-repeats", type=int, default=3, help="copies, updates and test-suite runs")
    parser.add_argument("--command", default="nox -s bench", help="the command recorded in the report")
    args = parser.parse_args(argv)
    if run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT).stdout.strip():
        log("warning: uncommitted changes are not measured (the template is rendered from HEAD)")

    workdir = Path(tempfile.mkdtemp(prefix="ctm-bench-"))
    try:
        machine = versions()
        workflow = bench_copy_and_update(workdir, args.workflow_repeats)
        models = bench_models(workdir, args.repeats)
        suites = bench_test_suites(workdir, args.workflow_repeats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.output.write_text(report(args.command, machine, workflow, models, suites))
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

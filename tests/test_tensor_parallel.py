"""Tensor parallelism: a saved generated model loads with tp_plan="auto" on two CPU processes (gloo) and gives the
logits of the single-process model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import import_rendered_package

# Each family with a tensor-parallel plan, with the knobs that change which projections it shards
TP_CASES = {
    "decoder": ({"model_name": "TpLlamaLike"}, "CausalLM"),
    "decoder-gpt2-like": (
        {
            "model_name": "TpGptLike",
            "normalization": "layer_norm",
            "position_embedding": "learned",
            "mlp": "gelu",
            "linear_bias": True,
        },
        "CausalLM",
    ),
    "decoder-qwen3-like": (
        {"model_name": "TpQwenLike", "qk_norm": "per_head", "attention_window": "alternating", "qkv_bias": True},
        "CausalLM",
    ),
    # Gathered q, k and v for the norms over whole projections; sandwich norms and soft-capping
    "decoder-olmo2-like": (
        {"model_name": "TpOlmoLike", "qk_norm": "projection", "norm_placement": "sandwich", "soft_capping": True},
        "CausalLM",
    ),
    # The experts stay whole on every process: only expert parallelism splits them
    "decoder-qwen2-moe-like": (
        {"model_name": "TpMoeLike", "mixture_of_experts": "routed_and_shared", "num_experts": 4},
        "CausalLM",
    ),
    "encoder": ({"model_name": "TpBertLike", "family": "encoder"}, "MaskedLM"),
    "encoder-pre-norm-rope": (
        {"model_name": "TpRopeEncoder", "family": "encoder", "norm_placement": "pre", "position_embedding": "rope"},
        "MaskedLM",
    ),
}
# Small, but every sharded dimension splits evenly over two processes (key/value heads included)
TINY_TP_CONFIG = {
    "vocab_size": 99,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
}

# One torchrun for every case: each process imports and loads every case's model in turn
WORKER = """
import importlib, json, os, sys, traceback
import torch
from torch.distributed.tensor import DTensor
from transformers import DistributedConfig

for case in json.loads(open(sys.argv[1]).read()):
    try:
        package = importlib.import_module(case["package"])
        model = getattr(package, case["model_class"]).from_pretrained(
            case["checkpoint"], distributed_config=DistributedConfig(tp_plan="auto")
        ).eval()
        query = model.get_submodule("model.layers.0.self_attn.q_proj").weight
        inputs = torch.load(os.path.join(case["checkpoint"], "inputs.pt"))
        with torch.no_grad():
            logits = model(**inputs).logits
        result = {"logits": logits, "sharded": isinstance(query, DTensor), "local_rows": query.to_local().shape[0]}
    except Exception:
        result = {"error": traceback.format_exc()}
    if int(os.environ["RANK"]) == 0:
        torch.save(result, case["output"])
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
# Both ranks leave together, then skip the C++ destructors: gloo's threads, torn down at interpreter exit (or by
# destroy_process_group) on a loaded machine, can abort a rank with "terminate called without an active exception"
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


def run_process_group(command: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run torchrun in its own process group, so that a hang kills its workers too."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{output}")
    return subprocess.CompletedProcess(command, process.returncode, output, "")


def saved_case(render, folder: Path, case: str) -> dict:
    """A case's rendered model with random weights, saved with its padded inputs, and its single-process logits."""
    answers, head = TP_CASES[case]
    project = render({**answers, "heads": [head], "tokenizer": "none"}, name=f"tp-{case}")
    package_name = next(path.name for path in (project / "src").iterdir())
    package = import_rendered_package(project, package_name)
    model_class = f"{answers['model_name']}For{head}"
    config_values = dict(TINY_TP_CONFIG)
    if "family" not in answers:
        config_values["num_key_value_heads"] = 2
    if "attention_window" in answers:
        config_values["sliding_window"] = 4  # shorter than the inputs
    if "mixture_of_experts" in answers:
        config_values.update(moe_intermediate_size=16, shared_expert_intermediate_size=32)

    torch.manual_seed(0)
    model = getattr(package, model_class)(getattr(package, f"{answers['model_name']}Config")(**config_values)).eval()
    inputs = {"input_ids": torch.randint(3, 99, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    inputs["attention_mask"][1, -3:] = 0  # a padded row, so that masking is sharded too
    with torch.no_grad():
        expected = model(**inputs).logits
    checkpoint = folder / "checkpoint"
    model.save_pretrained(checkpoint)
    torch.save(inputs, checkpoint / "inputs.pt")
    return {
        "package": package_name,
        "model_class": model_class,
        "checkpoint": str(checkpoint),
        "output": str(folder / "tp.pt"),
        "src": str(project / "src"),
        "expected": expected,
    }


@pytest.fixture(scope="module")
def tensor_parallel_runs(render, tmp_path_factory) -> tuple[dict[str, dict], subprocess.CompletedProcess]:
    """Every case saved, then loaded with tp_plan="auto" by one torchrun of two processes."""
    cases = {case: saved_case(render, tmp_path_factory.mktemp(f"tp-{case}"), case) for case in TP_CASES}
    folder = tmp_path_factory.mktemp("tp-worker")
    (folder / "cases.json").write_text(
        json.dumps([{key: value for key, value in case.items() if key != "expected"} for case in cases.values()])
    )
    (folder / "worker.py").write_text(WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    python_path = os.pathsep.join(case["src"] for case in cases.values())
    result = run_process_group(
        [*command, str(folder / "worker.py"), str(folder / "cases.json")],
        env={**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"},
    )
    return cases, result


@pytest.mark.parametrize("case", list(TP_CASES))
def test_tensor_parallel_logits_equal_the_single_process_logits(tensor_parallel_runs, case):
    cases, torchrun = tensor_parallel_runs
    assert torchrun.returncode == 0, torchrun.stdout
    parallel = torch.load(cases[case]["output"])
    assert "error" not in parallel, parallel.get("error")
    assert parallel["sharded"], "the query projection was not sharded: the tensor-parallel plan did not apply"
    assert parallel["local_rows"] * 2 == TINY_TP_CONFIG["hidden_size"]
    torch.testing.assert_close(parallel["logits"], cases[case]["expected"], rtol=0, atol=1e-5)


def test_every_family_with_a_plan_is_tested():
    plans = {
        path.parent.name
        for path in Path(__file__).parent.parent.glob("template/_includes/*/configuration.py.jinja")
        if "tensor_parallel_plan(" in path.read_text()  # blocks/configuration.jinja writes base_model_tp_plan
    }
    tested = {answers.get("family", "decoder") for answers, _ in TP_CASES.values()}
    assert plans == tested

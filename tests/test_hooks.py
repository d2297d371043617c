"""The post-generation task: formatting, smoke test, git, and its behaviour when something is missing or broken."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import REPO_ROOT, ruff

POST_GENERATE = REPO_ROOT / "hooks" / "post_generate.py"
TINY_CONFIG = '{"vocab_size": 99, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "pad_token_id": 0}'


def copier_cli(
    template_dir: Path, destination: Path, *args: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", *args, str(template_dir), str(destination)],
        capture_output=True,
        text=True,
        env=env,
    )


def home_with_git_identity(home: Path) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text("[user]\n\tname = Porter\n\temail = porter@example.com\n")
    return {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}


def run_post_generate(project: Path, *, python: str = sys.executable, env: dict | None = None, **overrides: str):
    arguments = {"formatter": "ruff", "package": "brand_new_bert", "smoke-test": "true", "operation": "copy"}
    arguments.update({key.replace("_", "-"): value for key, value in overrides.items()})
    command = [python, str(POST_GENERATE), *(f"--{key}={value}" for key, value in arguments.items())]
    return subprocess.run(
        [*command, f"--tiny-config={TINY_CONFIG}"], cwd=project, capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """An interpreter without torch, transformers or any formatter, as on a fresh machine."""
    environment = tmp_path_factory.mktemp("bare-venv")
    venv.create(environment, with_pip=False)
    return environment / "bin"


def test_copy_formats_smoke_tests_and_commits(template_dir, tmp_path):
    destination = tmp_path / "project"
    result = copier_cli(template_dir, destination, env=home_with_git_identity(tmp_path / "home"))
    output = result.stdout + result.stderr

    assert result.returncode == 0, output
    assert "format: ruff check" in output and "format: ruff format" in output
    # One line per smoke step, each with its time
    for step in ("import brand_new_bert", "build BrandNewBertForCausalLM", "forward BrandNewBertForCausalLM"):
        assert re.search(rf"ok +{step} \(\d+\.\d\d s\)", output), output
    assert "save and reload BrandNewBertForCausalLM" in output
    assert "smoke test passed" in output

    log = subprocess.run(["git", "log", "--format=%s"], cwd=destination, capture_output=True, text=True)
    assert log.stdout.splitlines() == ["Generate the model from copier-transformers-model"]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=destination, capture_output=True, text=True)
    assert status.stdout == "", "the hook leaves files outside the first commit"
    assert ruff("check", "--no-cache", str(destination)).returncode == 0
    assert ruff("format", "--check", "--no-cache", str(destination)).returncode == 0


def test_without_git_identity_the_repository_is_initialised_but_not_committed(render, tmp_path):
    project = render({"smoke_test": False}, name="no-identity")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}
    env = {key: value for key, value in env.items() if not key.startswith(("GIT_AUTHOR", "GIT_COMMITTER"))}

    result = run_post_generate(project, env=env, smoke_test="false")

    assert result.returncode == 0, result.stderr
    assert (project / ".git").is_dir()
    assert "commit the files" in result.stdout


def test_smoke_failure_prints_traceback_and_rerun_command_and_keeps_every_file(render):
    project = render({"model_name": "BrokenModel", "package_name": "broken_model"}, name="broken")
    modeling = project / "src" / "broken_model" / "modeling_broken_model.py"
    source = modeling.read_text()
    marker = "        if (input_ids is None) ^ (inputs_embeds is not None):\n"
    assert marker in source
    modeling.write_text(source.replace(marker, '        raise RuntimeError("injected fault")\n' + marker, 1))
    files_before = sorted(path.relative_to(project) for path in project.rglob("*") if path.is_file())

    result = run_post_generate(project, package="broken_model")
    output = result.stdout + result.stderr

    assert result.returncode == 0, "a failed check must not make Copier delete the destination"
    assert "FAILED  forward BrokenModelModel" in output
    assert "Traceback" in output and "RuntimeError: injected fault" in output
    assert "smoke test FAILED" in output and "python -m pytest tests" in output
    files_after = {path.relative_to(project) for path in project.rglob("*") if path.is_file()}
    assert set(files_before) <= files_after


def test_missing_torch_skips_the_smoke_test_with_instructions(render, bare_python):
    project = render({"smoke_test": True}, name="no-torch")
    env = {**os.environ, "PATH": f"{bare_python}{os.pathsep}{os.environ['PATH']}"}

    result = run_post_generate(project, env=env)

    assert result.returncode == 0, result.stderr
    assert "skipped: torch and transformers not installed" in result.stdout
    assert "pip install -e '.[dev]'" in result.stdout and "python -m pytest tests" in result.stdout
    assert "format: ruff format" in result.stdout


def test_missing_formatter_is_reported_and_files_stay_unformatted(render, bare_python):
    project = render({"smoke_test": False}, name="no-ruff")
    modeling = next(project.glob("src/*/modeling_*.py"))
    before = modeling.read_text()
    env = {**os.environ, "PATH": f"{bare_python}{os.pathsep}/usr/bin{os.pathsep}/bin"}

    result = run_post_generate(project, python=str(bare_python / "python"), env=env, smoke_test="false")

    assert result.returncode == 0, result.stderr
    assert "ruff not found" in result.stdout and "pip install ruff" in result.stdout
    assert modeling.read_text() == before


def test_update_renders_are_left_alone(tmp_path):
    result = run_post_generate(tmp_path, operation="update")

    assert result.returncode == 0, result.stderr
    assert "skipped during `copier update`" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_tasks_are_skipped_with_skip_tasks(template_dir, tmp_path):
    destination = tmp_path / "project"
    result = copier_cli(template_dir, destination, "--skip-tasks")

    assert result.returncode == 0, result.stderr
    assert "copier-transformers-model" not in result.stdout + result.stderr
    assert not (destination / ".git").exists()

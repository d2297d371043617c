"""The post-generation task: formatting, smoke test, git, and its behaviour when something is missing or broken."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import pytest
import yaml

from helpers import REPO_ROOT, ruff

POST_GENERATE = REPO_ROOT / "hooks" / "post_generate.py"
POST_UPDATE = REPO_ROOT / "hooks" / "post_update.py"
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


def run_hook(
    script: Path, project: Path, arguments: dict[str, str], *, interpreter: list[str], env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run a hook script in `project` as Copier does: `--name=value` arguments and the tiny config."""
    options = [f"--{key.replace('_', '-')}={value}" for key, value in arguments.items()]
    command = [*interpreter, str(script), *options, f"--tiny-config={TINY_CONFIG}"]
    return subprocess.run(command, cwd=project, capture_output=True, text=True, env=env)


def run_post_generate(
    project: Path, *, interpreter: list[str] | None = None, env: dict | None = None, **overrides: str
) -> subprocess.CompletedProcess:
    arguments = {"formatter": "ruff", "package": "brand_new_bert", "smoke_test": "true", "operation": "copy"}
    return run_hook(
        POST_GENERATE, project, {**arguments, **overrides}, interpreter=interpreter or [sys.executable], env=env
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
    assert "ok      greedy generation of BrandNewBertForCausalLM, with and without the cache" in output
    assert "smoke test passed" in output

    log = subprocess.run(["git", "log", "--format=%s"], cwd=destination, capture_output=True, text=True)
    assert log.stdout.splitlines() == ["Generate the model from copier-transformers-model"]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=destination, capture_output=True, text=True)
    assert status.stdout == "", "the hook leaves files outside the first commit"
    assert ruff("check", "--no-cache", str(destination)).returncode == 0
    assert ruff("format", "--check", "--no-cache", str(destination)).returncode == 0


@pytest.mark.hook_script
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


@pytest.mark.hook_script
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


@pytest.mark.hook_script
def test_a_forward_pass_that_misses_its_cache_fails_the_smoke_test_with_both_token_lists(render):
    project = render({"tokenizer": "none"}, name="cache-missed")
    modeling = project / "src" / "brand_new_bert" / "modeling_brand_new_bert.py"
    source = modeling.read_text()
    # The layers never see the cache, as when a forward names the argument as another release did
    passed_on = "                cache=cache,\n"
    assert source.count(passed_on) == 1
    modeling.write_text(source.replace(passed_on, ""))
    env = {**os.environ, "COPIER_TRANSFORMERS_MODEL_STRICT": "1"}

    result = run_post_generate(project, env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED  greedy generation of BrandNewBertFor" in result.stdout
    assert re.search(r"with cache: +\[\[", result.stdout) and re.search(r"without cache: +\[\[", result.stdout)
    assert "smoke test FAILED" in result.stdout


@pytest.mark.hook_script
def test_a_model_type_the_installed_transformers_registers_is_a_reported_problem(render):
    project = render({"tokenizer": "none"}, name="type-taken")
    # As if a newer Transformers had added the type after the validators' snapshot was taken
    for name in ("configuration_brand_new_bert.py", "__init__.py"):
        module = project / "src" / "brand_new_bert" / name
        assert '"brand_new_bert"' in module.read_text()
        module.write_text(module.read_text().replace('"brand_new_bert"', '"llama"'))
    env = {**os.environ, "COPIER_TRANSFORMERS_MODEL_STRICT": "1"}

    result = run_post_generate(project, env=env)

    assert result.returncode == 7, result.stdout + result.stderr
    sentences = [line for line in result.stdout.splitlines() if "is also registered by transformers" in line]
    assert len(sentences) == 1 and "'llama'" in sentences[0] and "LlamaConfig" in sentences[0], result.stdout
    assert "-d model_type=" in sentences[0]
    assert "the installed Transformers registers the model_type too" in result.stdout


def test_a_template_given_by_a_relative_path_is_reported_with_the_command_that_records_it(template_dir, tmp_path):
    destination = tmp_path / "project"
    # As the README's quick start used to say: `copier copy . ../brand-new-bert` from the template's folder
    env = home_with_git_identity(tmp_path / "home") | {"PWD": str(template_dir)}
    copy = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "-d", "smoke_test=false"]
    result = subprocess.run(
        [*copy, ".", str(destination)],
        cwd=template_dir,
        env=env,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = [line for line in result.stdout.splitlines() if "records the template as" in line]
    assert '.copier-answers.yml records the template as ".", relative to where Copier ran' in report
    (summary,) = [line for line in result.stdout.splitlines() if line.startswith("[copier-transformers-model] done")]
    assert "the answers record the template by a relative path" in summary
    strict_env = env | {"COPIER_TRANSFORMERS_MODEL_STRICT": "1"}
    arguments = {"smoke_test": "false", "answers_file": ".copier-answers.yml"}
    assert run_post_generate(destination, env=strict_env, **arguments).returncode == 8
    fix = report.split("Record its absolute path with: ", 1)[1]
    subprocess.run(fix, shell=True, cwd=destination, env=env, check=True, capture_output=True)
    answers = yaml.safe_load((destination / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == str(template_dir)
    assert (
        subprocess.run(["git", "status", "--porcelain"], cwd=destination, capture_output=True, text=True).stdout == ""
    )

    assert run_post_generate(destination, env=strict_env, **arguments).returncode == 0, "an absolute path is fine"


@pytest.mark.hook_script
def test_missing_torch_skips_the_smoke_test_with_instructions(render, bare_python):
    project = render({"smoke_test": True}, name="no-torch")
    env = {**os.environ, "PATH": f"{bare_python}{os.pathsep}{os.environ['PATH']}"}

    result = run_post_generate(project, env=env)

    assert result.returncode == 0, result.stderr
    assert "skipped: torch and transformers not installed" in result.stdout
    assert "pip install -e '.[dev]'" in result.stdout and "python -m pytest tests" in result.stdout
    assert "format: ruff format" in result.stdout


@pytest.mark.hook_script
def test_missing_formatter_is_reported_and_files_stay_unformatted(render, bare_python):
    project = render({"smoke_test": False}, name="no-ruff")
    modeling = next(project.glob("src/*/modeling_*.py"))
    before = modeling.read_text()
    env = {**os.environ, "PATH": f"{bare_python}{os.pathsep}/usr/bin{os.pathsep}/bin"}

    result = run_post_generate(project, interpreter=[str(bare_python / "python")], env=env, smoke_test="false")

    assert result.returncode == 0, result.stderr
    assert "ruff not found" in result.stdout and "pip install ruff" in result.stdout
    assert modeling.read_text() == before


@pytest.mark.hook_script
def test_update_renders_are_left_alone(tmp_path):
    result = run_post_generate(tmp_path, operation="update")

    assert result.returncode == 0, result.stderr
    # Silent: the post-update check speaks for the update, once
    assert result.stdout == result.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_tasks_are_skipped_with_skip_tasks(template_dir, tmp_path):
    destination = tmp_path / "project"
    result = copier_cli(template_dir, destination, "--skip-tasks")

    assert result.returncode == 0, result.stderr
    assert "copier-transformers-model" not in result.stdout + result.stderr
    assert not (destination / ".git").exists()


def fake_python(directory: Path, blocked_module: str) -> Path:
    """A `python` on PATH that cannot import `blocked_module`, as on a machine without it."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "python"
    script.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c "
        f"\"import runpy, sys; sys.modules['{blocked_module}'] = None; sys.argv = sys.argv[1:]; "
        f'runpy.run_path(sys.argv[0], run_name=\'__main__\')" "$@"\n'
    )
    script.chmod(0o755)
    return directory


@pytest.mark.hook_script
def test_missing_transformers_skips_the_smoke_test_with_instructions(render, tmp_path):
    project = render({}, name="no-transformers")
    bin_dir = fake_python(tmp_path / "bin", "transformers")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    result = run_post_generate(project, env=env)

    assert result.returncode == 0, result.stderr
    assert "skipped: transformers not installed" in result.stdout
    assert "pip install -e '.[dev]'" in result.stdout
    assert "done with 1 problem(s): the smoke test could not run" in result.stdout


def broken_template(template_dir: Path, destination: Path) -> Path:
    """A copy of the template whose decoder raises in its forward pass: answers are valid, the model is not."""
    shutil.copytree(template_dir, destination)
    modeling = destination / "template" / "_includes" / "decoder" / "modeling.py.jinja"
    source = modeling.read_text()
    marker = "        if (input_ids is None) ^ (inputs_embeds is not None):\n"
    assert marker in source
    modeling.write_text(source.replace(marker, '        raise RuntimeError("injected fault")\n' + marker, 1))
    return destination


@pytest.mark.parametrize("strict", [False, True])
def test_a_failing_smoke_test_keeps_every_file_and_strict_mode_fails_the_copy(template_dir, tmp_path, strict):
    template = broken_template(template_dir, tmp_path / "template")
    destination = tmp_path / "project"
    env = home_with_git_identity(tmp_path / "home")
    if strict:
        env["COPIER_TRANSFORMERS_MODEL_STRICT"] = "1"

    result = copier_cli(template, destination, "--no-cleanup", env=env)
    output = result.stdout + result.stderr

    assert (result.returncode != 0) == strict, output
    assert "RuntimeError: injected fault" in output
    assert "done with 1 problem(s): the smoke test failed. Every generated file was kept." in output
    expected = {"pyproject.toml", "README.md", "PORTING_GUIDE.md", "src/brand_new_bert/modeling_brand_new_bert.py"}
    assert expected <= {str(path.relative_to(destination)) for path in destination.rglob("*") if path.is_file()}


def test_files_already_in_the_destination_are_kept_without_overwrite(template_dir, tmp_path):
    destination = tmp_path / "project"
    destination.mkdir()
    (destination / "README.md").write_text("my notes\n")
    (destination / "notes.txt").write_text("mine\n")

    refused = copier_cli(template_dir, destination, "--skip-tasks")
    assert refused.returncode != 0
    assert "--overwrite" in refused.stderr
    assert (destination / "README.md").read_text() == "my notes\n"

    overwritten = copier_cli(template_dir, destination, "--skip-tasks", "--overwrite")
    assert overwritten.returncode == 0, overwritten.stderr
    assert (destination / "README.md").read_text().startswith("# BrandNewBert for Hugging Face Transformers")
    assert (destination / "notes.txt").read_text() == "mine\n"


def unprivileged_interpreter() -> list[str] | None:
    """Root writes read-only files anyway: run as `nobody` then, with an interpreter it may execute."""
    if os.geteuid() != 0:
        return [sys.executable]
    setpriv, system_python = shutil.which("setpriv"), Path("/usr/bin/python3")
    if setpriv is None or not system_python.exists():
        return None
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(system_python)]


@pytest.mark.hook_script
def test_a_read_only_destination_is_reported_and_nothing_is_lost(render):
    project = render({"smoke_test": False}, name="read-only")
    readable_copy = Path(tempfile.mkdtemp())  # outside root's private pytest folder, for `nobody`
    shutil.copytree(project, readable_copy / "project")
    project = readable_copy / "project"
    ruff_dir = Path(shutil.which("ruff")).parent
    interpreter = unprivileged_interpreter()
    if interpreter is None:
        pytest.skip("running as root without setpriv or /usr/bin/python3: read-only files cannot be simulated")
    files = sorted(path for path in project.rglob("*") if path.is_file())
    contents = {path: path.read_bytes() for path in files}
    for path in [*files, *(path for path in project.rglob("*") if path.is_dir()), project]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    readable_copy.chmod(0o755)
    env = {**os.environ, "PATH": f"{ruff_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(readable_copy)}
    try:
        result = run_post_generate(project, interpreter=interpreter, env=env, smoke_test="false")
    finally:
        for path in [project, *project.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    output = result.stdout + result.stderr

    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert "format: ruff check --fix --quiet" in output and "failed; fix what it reports" in output
    assert "git: `git init --quiet` failed" in output
    assert "done with 2 problem(s): the files are not formatted; the project is not under git" in output
    assert {path: path.read_bytes() for path in files} == contents
    shutil.rmtree(readable_copy)


AUDIT_SITECUSTOMIZE = """
import atexit, os, sys

ALLOWED = [os.path.realpath(root) for root in os.environ["AUDIT_ALLOWED_ROOTS"].split(os.pathsep)] + [os.devnull]
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.symlink", "shutil.rmtree"}
violations = []


def allowed(path):
    real = os.path.realpath(os.fsdecode(path))
    return any(real == root or real.startswith(root + os.sep) for root in ALLOWED)


def audit(event, args):
    if event.startswith("socket.") and event in ("socket.connect", "socket.getaddrinfo", "socket.sendto"):
        violations.append(f"{sys.argv[:1]} {event} {args!r}")
        raise OSError("network access is disabled in this test")
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1] or "", args[2] or 0
        if (any(letter in mode for letter in "wax+") or flags & WRITE_FLAGS) and not allowed(args[0]):
            violations.append(f"{sys.argv[:1]} writes {args[0]}")
    elif event in PATH_EVENTS:
        # Paths relative to a directory descriptor (rmtree's inner steps) were checked with that directory
        two_paths = event in ("os.rename", "os.replace", "os.symlink")
        if any(fd is not None for fd in (args[2:] if two_paths else args[-1:])):
            return
        for path in args[:2] if two_paths else args[:1]:
            if not allowed(path):
                violations.append(f"{sys.argv[:1]} {event} {path}")


def report():
    if violations:
        with open(os.environ["AUDIT_LOG"], "a") as log:
            log.write("\\n".join(violations) + "\\n")


sys.addaudithook(audit)
atexit.register(report)
"""


def test_hooks_stay_offline_and_write_only_in_the_destination_and_the_temp_dir(template_dir, tmp_path):
    """Every Python process of the copy (Copier, the task, the smoke test) is audited; git and ruff see a bare HOME."""
    audit_dir, system_tmp, home = tmp_path / "audit", tmp_path / "system-tmp", tmp_path / "home"
    for directory in (audit_dir, system_tmp):
        directory.mkdir()
    (audit_dir / "sitecustomize.py").write_text(AUDIT_SITECUSTOMIZE)
    destination = tmp_path / "project"
    log = system_tmp / "audit.log"
    env = {
        **home_with_git_identity(home),
        "PYTHONPATH": str(audit_dir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "AUDIT_ALLOWED_ROOTS": os.pathsep.join([str(destination), str(system_tmp)]),
        "AUDIT_LOG": str(log),
        "TMPDIR": str(system_tmp),
        "RUFF_CACHE_DIR": str(system_tmp / "ruff-cache"),
    }
    home_before = sorted(path.relative_to(home) for path in home.rglob("*"))

    result = copier_cli(template_dir, destination, env=env)
    output = result.stdout + result.stderr

    assert result.returncode == 0, output
    assert "smoke test passed" in output and "[copier-transformers-model] done" in output
    assert not log.exists(), log.read_text()
    assert sorted(path.relative_to(home) for path in home.rglob("*")) == home_before


@pytest.mark.hook_script
@pytest.mark.parametrize(("strict", "status"), [(False, 0), (True, 2)])
def test_conflicts_left_by_an_update_are_listed_and_strict_mode_fails_on_them(tmp_path, strict, status):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "model.py").write_text(
        "<<<<<<< before updating\nmine\n=======\ntheirs\n>>>>>>> after updating\n"
    )
    subprocess.run(["git", "init", "--quiet"], cwd=project, check=True)
    env = {**os.environ, "COPIER_TRANSFORMERS_MODEL_STRICT": "1" if strict else "0"}
    arguments = {"formatter": "ruff", "package": "model", "smoke_test": "false"}

    result = run_hook(POST_UPDATE, project, arguments, interpreter=[sys.executable], env=env)

    assert result.returncode == status, result.stdout + result.stderr
    assert "src/model.py:1" in result.stdout
    assert "done with 1 problem(s): 1 conflict(s) to resolve" in result.stdout

"""The generated project's GitHub Actions workflow: valid, zizmor-clean, and running what the project documents."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from helpers import REPO_ROOT, assert_clean_text, git, load_answer_set

WORKFLOW = Path(".github/workflows/tests.yml")
WORKFLOW_TEMPLATE = REPO_ROOT / "template" / "{% if not in_tree %}.github{% endif %}" / "workflows" / "tests.yml.jinja"
ANSWER_SETS = ["default", "black_isort", "qefficient_decoder"]
# copier.yml's transformers_oldest and transformers_requirement for each answer set, and the lowest Python that
# transformers_oldest runs on (Transformers 5.21 raised its requires-python to 3.11).
TRANSFORMERS_LEGS = {
    "default": ("5.25.0", ">=5.25,<6", "3.11"),
    "black_isort": ("5.25.0", ">=5.25,<6", "3.11"),
    "qefficient_decoder": ("5.5.4", ">=5.5.4,<5.24", "3.10"),
}
# The newest CPython torch 2.13 (constraints.txt) publishes wheels for: cp310 to cp314.
NEWEST_PYTHON = "3.14"
LINT_COMMANDS = {
    "ruff": ["ruff check .", "ruff format --check ."],
    "black+isort": ["black --check .", "isort --check-only ."],
}
# Every project's lint ends with upstream's structural rules; the command's package where it is named otherwise
MODEL_FILE_LINT = "mlinter src tests"
LINT_TOOLS = {"ruff", "black", "isort", "mlinter"}
LINT_TOOL_PACKAGES = {"mlinter": "transformers-mlinter"}
# What only CI runs: the CPU build of torch, each leg's Transformers release, and the versions it tests.
CI_ONLY_COMMANDS = {
    'pip install torch --index-url "$TORCH_INDEX_URL"',
    'pip install --upgrade "transformers${TRANSFORMERS}"',
    "pip list",
}
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.MULTILINE | re.DOTALL)
GITHUB_EXPRESSION = re.compile(r"\$\{\{ [\w.-]+ \}\}")
COMMIT_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def tool(name: str) -> str:
    """The path of a checking tool, from this interpreter's environment first; it must be installed."""
    search_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    path = shutil.which(name, path=search_path)
    assert path, f"{name} is not installed: python -m pip install -r requirements-dev.txt"
    return path


def load_workflow(project: Path) -> dict:
    workflow = yaml.safe_load((project / WORKFLOW).read_text())
    # YAML 1.1 reads the `on` key as the boolean true
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def run_commands(job: dict) -> list[str]:
    return [step["run"].strip() for step in job["steps"] if "run" in step]


def readme_commands(project: Path) -> list[str]:
    """Every command of the README's shell code blocks, one per line."""
    blocks = SHELL_BLOCK.findall((project / "README.md").read_text())
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def is_lint_command(command: str) -> bool:
    return shlex.split(command)[0] in LINT_TOOLS


@pytest.fixture(scope="module")
def projects(render) -> dict[str, Path]:
    return {name: render(load_answer_set(name), name=name) for name in ANSWER_SETS}


@pytest.mark.parametrize("answer_set", ANSWER_SETS)
def test_workflow_is_clean_text(projects, answer_set, tmp_path):
    project = projects[answer_set]
    assert (project / WORKFLOW).is_file(), f"{WORKFLOW} is not generated in the package layout"
    text = (project / WORKFLOW).read_text()
    # GitHub's own `${{ expression }}` syntax is meant to be there; everything else is checked as any rendered file
    expressions = GITHUB_EXPRESSION.findall(text)
    assert expressions and len(expressions) == text.count("${{"), "a malformed GitHub expression"
    (tmp_path / WORKFLOW.name).write_text(GITHUB_EXPRESSION.sub("EXPRESSION", text))
    assert_clean_text(tmp_path)


@pytest.mark.parametrize("answer_set", ANSWER_SETS)
def test_workflow_validates_against_githubs_schema(projects, answer_set):
    workflow = projects[answer_set] / WORKFLOW
    command = [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("answer_set", ANSWER_SETS)
def test_zizmor_finds_nothing(projects, answer_set):
    """zizmor's default persona ("regular"), offline and without any configuration file to relax it."""
    workflow = projects[answer_set] / WORKFLOW
    command = [tool("zizmor"), "--offline", "--no-config", "--no-progress", "--color=never", str(workflow)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout, result.stdout


@pytest.mark.parametrize("answer_set", ANSWER_SETS)
def test_workflow_security_hygiene(projects, answer_set):
    workflow = load_workflow(projects[answer_set])
    assert set(workflow["on"]) == {"push", "pull_request", "schedule", "workflow_dispatch"}
    assert workflow["on"]["schedule"] and all("cron" in entry for entry in workflow["on"]["schedule"])
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if "uses" in step:
                assert COMMIT_PIN.match(step["uses"]), f"{name}: {step['uses']} is not pinned to a commit"
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"{name}: checkout persists credentials"
            # GitHub expands expressions into the script before the shell reads it: values go through env vars
            assert "${{" not in step.get("run", ""), f"{name}: an expression inside a run script"


@pytest.mark.parametrize("answer_set", ANSWER_SETS)
def test_test_job_runs_the_readme_install_and_test_commands(projects, answer_set):
    project = projects[answer_set]
    documented = readme_commands(project)
    job = load_workflow(project)["jobs"]["tests"]
    commands = run_commands(job)
    for command in ["pip install -e '.[dev]'", "python -m pytest"]:
        assert command in documented, f"the README no longer documents {command!r}"
        assert command in commands, f"the test job does not run {command!r}"
    assert commands[-1] == "python -m pytest"
    undocumented = [command for command in commands if command not in documented and command not in CI_ONLY_COMMANDS]
    assert not undocumented, f"the test job runs commands the README does not document: {undocumented}"
    # The CPU build of torch comes first, so that installing the project does not pull PyPI's CUDA build
    assert commands.index('pip install torch --index-url "$TORCH_INDEX_URL"') < commands.index(
        "pip install -e '.[dev]'"
    )
    assert commands.index("pip install -e '.[dev]'") < commands.index(
        'pip install --upgrade "transformers${TRANSFORMERS}"'
    )


@pytest.mark.parametrize("answer_set", ANSWER_SETS)
def test_lint_job_runs_the_formatters_checks_with_the_dev_extras_tools(projects, answer_set):
    project = projects[answer_set]
    formatter = load_answer_set(answer_set).get("formatter", "ruff")
    expected = [*LINT_COMMANDS[formatter], *(["ruff check ."] if formatter == "black+isort" else []), MODEL_FILE_LINT]
    commands = run_commands(load_workflow(project)["jobs"]["lint"])
    assert list(filter(is_lint_command, commands)) == expected
    assert "pip install -e '.[dev]'" in commands
    dev_extra = tomllib.loads((project / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    dev_tools = {re.match(r"[A-Za-z0-9._-]+", requirement).group() for requirement in dev_extra}
    tools = {shlex.split(command)[0] for command in expected}
    assert {LINT_TOOL_PACKAGES.get(tool, tool) for tool in tools} <= dev_tools


@pytest.mark.parametrize("answer_set", ANSWER_SETS)
def test_lint_job_runs_the_readme_lint_commands(projects, answer_set):
    project = projects[answer_set]
    documented = list(filter(is_lint_command, readme_commands(project)))
    commands = list(filter(is_lint_command, run_commands(load_workflow(project)["jobs"]["lint"])))
    assert documented, "the generated README documents no lint command"
    assert commands == documented


@pytest.mark.parametrize("answer_set", ANSWER_SETS)
def test_matrix_crosses_the_lowest_and_newest_transformers_with_the_lowest_and_newest_python(projects, answer_set):
    project = projects[answer_set]
    oldest, requirement, oldest_python = TRANSFORMERS_LEGS[answer_set]
    job = load_workflow(project)["jobs"]["tests"]
    assert job["strategy"]["fail-fast"] is False
    matrix = job["strategy"]["matrix"]
    assert matrix["transformers"] == [f"=={oldest}", requirement]
    assert matrix["python-version"] == [oldest_python, NEWEST_PYTHON]
    # The legs are those of the project's own metadata
    metadata = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert f"transformers{requirement}" in metadata["dependencies"]
    assert oldest in SpecifierSet(requirement)
    assert all(version in SpecifierSet(metadata["requires-python"]) for version in matrix["python-version"])
    assert metadata["requires-python"] == f">={oldest_python}"
    leg = next(step for step in job["steps"] if "TRANSFORMERS" in step.get("env", {}))
    assert leg["env"]["TRANSFORMERS"] == "${{ matrix.transformers }}"
    setup_python = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python@"))
    assert setup_python["with"]["python-version"] == "${{ matrix.python-version }}"
    assert load_workflow(project)["env"]["HF_HUB_OFFLINE"] == "1"


def template_update_script(project: Path) -> str:
    steps = load_workflow(project)["jobs"]["template-update"]["steps"]
    return next(step["run"] for step in steps if "copier check-update" in step.get("run", ""))


def run_template_update_check(script_text: str, project: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """The step's script as GitHub runs it in `project`, with this environment's copier and python."""
    script = tmp_path / "check-update.sh"
    script.write_text(script_text)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "RUNNER_TEMP": str(tmp_path)}
    command = ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)


def test_template_update_check_reports_an_unreachable_template_without_failing(projects, tmp_path):
    project = projects["default"]
    answers_file = project / ".copier-answers.yml"
    original = answers_file.read_text()
    moved = {**yaml.safe_load(original), "_src_path": str(tmp_path / "gone"), "_commit": "v0.1.0"}
    answers_file.write_text(yaml.safe_dump(moved))
    try:
        result = run_template_update_check(template_update_script(project), project, tmp_path)
    finally:
        answers_file.write_text(original)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("::notice title=Template update not checked::"), result.stdout


def test_template_update_check_warns_of_a_newer_template_version(projects, tmp_path):
    template = tmp_path / "template"
    template.mkdir()
    (template / "copier.yml").write_text("greeting:\n  type: str\n  default: hello\n")
    (template / "{{ _copier_conf.answers_file }}.jinja").write_text("{{ _copier_answers | to_nice_yaml }}")
    git(template, "init", "--quiet")
    git(template, "add", "--all")
    git(template, "commit", "--quiet", "-m", "first")
    git(template, "tag", "v0.1.0")
    git(template, "commit", "--quiet", "--allow-empty", "-m", "second")
    git(template, "tag", "v0.2.0")
    project = tmp_path / "project"
    project.mkdir()
    (project / ".copier-answers.yml").write_text(yaml.safe_dump({"_commit": "v0.1.0", "_src_path": str(template)}))
    git(project, "init", "--quiet")
    result = run_template_update_check(template_update_script(projects["default"]), project, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("::warning title=Template update available::"), result.stdout + result.stderr
    assert "0.2.0" in result.stdout and "0.1.0" in result.stdout


def test_in_tree_layout_generates_no_workflow(render):
    """A Transformers checkout has its own CI: the folder's name renders empty there, so Copier skips it."""
    assert WORKFLOW_TEMPLATE.is_file()
    project = render({"layout": "transformers"}, name="in_tree_workflow")
    assert (project / "src" / "transformers" / "models").is_dir()
    assert not (project / ".github").exists()

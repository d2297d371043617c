"""The generated documentation: doc page, docstrings, model card, porting guide and demo notebook."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

from warm_python import warm_python_command

DOC_CASES = {
    "decoder": {},
    "encoder": {"family": "encoder"},
    "encoder-decoder": {"family": "encoder-decoder"},
    "decoder-every-head-no-tokenizer": {
        "heads": ["CausalLM", "SequenceClassification", "TokenClassification", "QuestionAnswering"],
        "tokenizer": "none",
    },
    "encoder-base-model-reused-tokenizer": {"family": "encoder", "heads": [], "tokenizer": "reuse"},
    "encoder-decoder-classifier-unigram": {
        "family": "encoder-decoder",
        "heads": ["SequenceClassification"],
        "tokenizer": "unigram",
    },
}
PIPELINE_TAGS = {
    "decoder": "text-generation",
    "encoder": "fill-mask",
    "encoder-decoder": "text2text-generation",
    "decoder-every-head-no-tokenizer": "text-generation",
    "encoder-base-model-reused-tokenizer": "feature-extraction",
    "encoder-decoder-classifier-unigram": "feature-extraction",
}

# What the generated package exposes: every public name, its docstring, and each model's forward parameters
# missing from its forward docstring.
INTROSPECT = """
import inspect, json, sys
import {package} as package
from transformers import PreTrainedModel

report = {{"all": list(package.__all__), "undocumented": [], "models": []}}
for name in package.__all__:
    public = getattr(package, name)
    if not (public.__doc__ or "").strip() or "<fill_docstring>" in public.__doc__:
        report["undocumented"].append(name)
    if issubclass(public, PreTrainedModel) and not name.endswith("PreTrainedModel"):
        report["models"].append(name)
        forward_doc = public.forward.__doc__ or ""
        for parameter in inspect.signature(public.forward).parameters:
            if parameter not in ("self", "kwargs") and f"{{parameter}} (" not in forward_doc:
                report["undocumented"].append(f"{{name}}.forward({{parameter}})")
print(json.dumps(report))
"""


@pytest.fixture(scope="module", params=list(DOC_CASES))
def case(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def project(render, case) -> Path:
    return render(DOC_CASES[case], name=f"docs-{case}")


def run_python(project: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([*warm_python_command(), "-c", code], cwd=project, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def package_report(project) -> dict:
    package = next(path.name for path in (project / "src").iterdir())
    result = run_python(project, INTROSPECT.format(package=package))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def doc_page(project: Path) -> str:
    return next((project / "docs" / "model_doc").glob("*.md")).read_text()


def test_the_doc_page_documents_exactly_the_public_classes(project, package_report):
    autodoc_blocks = re.findall(r"^\[\[autodoc\]\] (\w+)\n((?:    - \w+\n)*)", doc_page(project), flags=re.MULTILINE)
    documented = {name: re.findall(r"- (\w+)", members) for name, members in autodoc_blocks}

    assert sorted(documented) == sorted(package_report["all"])
    for name, members in documented.items():
        assert members == (["forward"] if name in package_report["models"] else []), name


def test_every_public_class_and_forward_has_a_docstring(package_report):
    assert package_report["undocumented"] == []


def test_the_doc_page_usage_example_runs(project):
    examples = re.findall(r"^```python\n(.*?)^```", doc_page(project), flags=re.MULTILINE | re.DOTALL)
    assert len(examples) == 1

    result = run_python(project, examples[0])

    assert result.returncode == 0, result.stderr
    assert re.match(r"torch\.Size\(\[1, \d+, \d+\]\)", result.stdout), result.stdout


def test_the_model_card_metadata_parses(project, case):
    card = next(project.glob("src/*/MODEL_CARD.md")).read_text()
    front_matter = re.match(r"---\n(.*?)\n---\n", card, flags=re.DOTALL)
    assert front_matter, "the model card starts with YAML metadata between --- lines"

    metadata = yaml.safe_load(front_matter.group(1))

    model_type = yaml.safe_load((project / ".copier-answers.yml").read_text())["model_type"]
    assert metadata == {
        "library_name": "transformers",
        "license": "apache-2.0",
        "pipeline_tag": PIPELINE_TAGS[case],
        "tags": [model_type],
    }


def test_the_porting_guide_names_files_that_exist_and_commands_the_package_installs(project):
    guide = (project / "PORTING_GUIDE.md").read_text()
    named_files = set(re.findall(r"`([\w./-]+\.(?:py|md|ipynb|toml))`", guide))
    scripts = tomllib.loads((project / "pyproject.toml").read_text())["project"]["scripts"]

    assert {path for path in named_files if not (project / path).is_file()} == set()
    generated = {str(path.relative_to(project)) for path in project.rglob("*") if path.is_file()}
    must_name = {path for path in generated if re.search(r"(modeling|convert|compare|test_\w+)_.*\.py$", path)}
    assert must_name <= named_files
    for command in re.findall(r"`((?:convert|compare)-[\w-]+) ", guide):
        assert command in scripts


def test_the_demo_notebook_is_valid_and_its_cells_run_in_order(project):
    notebook = nbformat.read(next(project.glob("notebooks/*_demo.ipynb")), as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell.source for cell in notebook.cells if cell.cell_type == "code"]

    result = run_python(project, "\n\n".join(code_cells))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("torch.Size([1, ")


def test_no_demo_notebook_when_not_asked(render):
    project = render({"demo_notebook": False}, name="no-notebook")

    assert not (project / "notebooks").exists()
    assert "notebooks/" not in (project / "PORTING_GUIDE.md").read_text()


def test_the_doc_page_asks_only_for_what_the_answers_did_not_give(render):
    metadata = {
        "paper_title": "Attention Is All You Need",
        "paper_url": "https://arxiv.org/abs/1706.03762",
        "paper_abstract": "The dominant sequence transduction models\nare recurrent.\n\nWe propose the Transformer.\n",
        "original_repo_url": "https://github.com/tensorflow/tensor2tensor",
    }
    complete = render(metadata, name="doc-page-complete")
    without_abstract = render({**metadata, "paper_abstract": ""}, name="doc-page-without-abstract")

    doc_page = next(complete.glob("docs/model_doc/*.md")).read_text()
    assert "TODO" not in doc_page
    assert (
        "\n\n*The dominant sequence transduction models are recurrent.*\n\n*We propose the Transformer.*\n\n"
        in doc_page
    )
    assert "- [ ] Complete the usage tips of `docs/model_doc/" in (complete / "PORTING_GUIDE.md").read_text()

    doc_page = next(without_abstract.glob("docs/model_doc/*.md")).read_text()
    assert re.findall(r"\*\*TODO: (.*)\*\*", doc_page) == ["paste the paper's abstract here."]
    assert (
        ".md` (the paper's abstract),\n  complete its usage tips"
        in (without_abstract / "PORTING_GUIDE.md").read_text()
    )

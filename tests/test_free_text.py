"""Free-text answers cannot break or inject into what is generated: fuzzed through every file they land in."""

from __future__ import annotations

import ast
import json
import os
import re
import string
import tempfile
import tomllib
from pathlib import Path

import copier
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

ONE_LINE_ANSWERS = ["description", "paper_title", "reviewer"]
URL_ANSWERS = ["paper_url", "original_repo_url"]

# Pieces that break naive templates: quotes, escapes, Jinja and Markdown syntax, bidi and zero-width characters
TRICKY = [
    *['"', "'", "\\", '"""', "'''", '\\"', "\\n", "\\x00", "{{", "}}", "{%", "%}", "{#", "#}", "${x}", "{0}"],
    *["`", "*", "_", "[", "](", ")", "<b>", "&amp;", "|", "#", "- ", "1.", "---", ":", "!", "~", "$"],
    *["é", "中文", "😀", "👩\u200d🔬", "\u00a0", "\u202e", "\ufeff", "\u0301", " "],
]
PRINTABLE = st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters="\ufffe\uffff")
one_line_text = (
    st.lists(st.one_of(st.sampled_from(TRICKY), st.text(PRINTABLE, min_size=1, max_size=8)), max_size=12)
    .map("".join)
    .map(str.strip)
)
# A pasted abstract: one-line pieces joined by the line breaks, blank lines and tabs a PDF or an editor leaves
PARAGRAPH_SEPARATORS = ["\n", "\r\n", "\r", "\n\n", " \n \n", "\n\n\n", "\t", "  ", " "]
abstract_text = st.lists(st.one_of(one_line_text, st.sampled_from(PARAGRAPH_SEPARATORS)), max_size=10).map("".join)
URL_CHARACTERS = string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%"
url_text = st.one_of(st.just(""), st.text(URL_CHARACTERS, max_size=40).map(lambda path: f"https://example.org/{path}"))
# 60 examples by default, to keep CI within 30 minutes; `nox -s fuzz` runs 2,000
FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def markdown_unescape(text: str) -> str:
    """CommonMark's reading of backslash escapes."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


def abstract_paragraphs(abstract: str) -> list[str]:
    """The paragraphs the doc page should show: blank lines separate them, other line breaks are spaces."""
    lines = abstract.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    paragraphs = (re.sub(r" *\n *", " ", paragraph).strip() for paragraph in re.split(r" *\n(?: *\n)+ *", lines))
    return [paragraph for paragraph in paragraphs if paragraph]


def commonmark_paragraphs(markdown: str) -> list[list[tuple[str, str]]]:
    """Each paragraph of a Markdown text as CommonMark reads it: (token type, text) for each inline token."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    return [
        [(child.type, child.content) for child in inline.children]
        for opening, inline in zip(tokens, tokens[1:], strict=False)
        if opening.type == "paragraph_open"
    ]


def render_with(template_dir: Path, destination: Path, answers: dict) -> None:
    copier.run_copy(
        str(template_dir), destination, data=answers, defaults=True, unsafe=True, skip_tasks=True, quiet=True
    )


def assert_every_file_loads(project: Path) -> None:
    for path in project.rglob("*.py"):
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    card = next(project.glob("src/*/MODEL_CARD.md")).read_text(encoding="utf-8")
    yaml.safe_load(card.split("---\n")[1])
    for path in project.rglob("*.ipynb"):
        json.loads(path.read_text(encoding="utf-8"))


def assert_answers_read_back(project: Path, answers: dict) -> None:
    """Each answer comes back exactly from each format it was written in."""
    stored = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert {key: stored[key] for key in answers} == answers

    metadata = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert metadata["description"] == answers["description"]
    urls = {"Paper": answers["paper_url"], "Original implementation": answers["original_repo_url"]}
    assert metadata.get("urls", {}) == {label: url for label, url in urls.items() if url}

    convert_script = ast.parse(next(project.glob("src/*/convert_*_checkpoint.py")).read_text(encoding="utf-8"))
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in convert_script.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        if node.targets[0].id in ("ORIGINAL_REPOSITORY_URL", "PAPER_TITLE", "PAPER_URL")
    }
    assert constants == {
        "ORIGINAL_REPOSITORY_URL": answers["original_repo_url"],
        "PAPER_TITLE": answers["paper_title"],
        "PAPER_URL": answers["paper_url"],
    }

    readme_lines = (project / "README.md").read_text(encoding="utf-8").splitlines()
    assert markdown_unescape(readme_lines[2]) == answers["description"]

    guide = (project / "PORTING_GUIDE.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (Description|Reviewer|Paper) \| (.*) \|$", guide, flags=re.MULTILINE))
    assert markdown_unescape(rows["Description"]) == answers["description"]
    if answers["reviewer"]:
        assert markdown_unescape(rows["Reviewer"]) == answers["reviewer"]
    if answers["paper_url"]:
        label, url = re.fullmatch(r"\[(.*)\]\(<(.*)>\)", rows["Paper"]).groups()
        assert (markdown_unescape(label), url) == (
            answers["paper_title"] or answers["paper_url"],
            answers["paper_url"],
        )
    elif answers["paper_title"]:
        assert markdown_unescape(rows["Paper"]) == answers["paper_title"]

    notebook = json.loads(next(project.glob("notebooks/*.ipynb")).read_text(encoding="utf-8"))
    introduction = notebook["cells"][0]["source"].split("\n\n")
    assert markdown_unescape(introduction[1]) == answers["description"]

    # The doc page, read by a CommonMark parser: the description is one plain paragraph, and the abstract follows
    # its introduction as paragraphs that are each one emphasis, or is left to the porter as a TODO
    doc_page = commonmark_paragraphs(next(project.glob("docs/model_doc/*.md")).read_text(encoding="utf-8"))
    assert [("text", answers["description"])] in doc_page
    introduction = doc_page.index([("text", "The abstract from the paper is the following:")])
    expected = abstract_paragraphs(answers["paper_abstract"])
    shown = doc_page[introduction + 1 : introduction + 1 + max(len(expected), 1)]
    if expected:
        assert shown == [[("em_open", ""), ("text", paragraph), ("em_close", "")] for paragraph in expected]
    else:
        assert shown == [
            [
                ("text", ""),
                ("strong_open", ""),
                ("text", "TODO: paste the paper's abstract here."),
                ("strong_close", ""),
                ("text", ""),
            ]
        ]


@FUZZ_SETTINGS
@given(
    description=one_line_text.filter(bool),
    paper_title=one_line_text,
    paper_abstract=abstract_text,
    reviewer=one_line_text,
    paper_url=url_text,
    original_repo_url=url_text,
)
def test_arbitrary_free_text_parses_everywhere_and_reads_back_exactly(
    template_dir, description, paper_title, paper_abstract, reviewer, paper_url, original_repo_url
):
    answers = {
        "description": description,
        "paper_title": paper_title,
        "paper_abstract": paper_abstract,
        "reviewer": reviewer,
        "paper_url": paper_url,
        "original_repo_url": original_repo_url,
    }
    with tempfile.TemporaryDirectory() as temporary:
        project = Path(temporary) / "project"
        render_with(template_dir, project, answers)
        assert_every_file_loads(project)
        assert_answers_read_back(project, answers)


LINE_BREAKS_AND_CONTROLS = ["\n", "\r", "\r\n", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    answer=st.sampled_from(ONE_LINE_ANSWERS),
    text=st.tuples(one_line_text, st.sampled_from(LINE_BREAKS_AND_CONTROLS), one_line_text).map("".join),
)
def test_line_breaks_and_control_characters_are_rejected_before_anything_is_written(template_dir, answer, text):
    with tempfile.TemporaryDirectory() as temporary:
        destination = Path(temporary) / "project"
        with pytest.raises(ValueError, match=f"{answer} must be one line of printable text"):
            render_with(template_dir, destination, {answer: text})
        assert not destination.exists()


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(answer=st.sampled_from(URL_ANSWERS), text=one_line_text.filter(lambda text: not text.startswith("http")))
def test_anything_but_an_http_url_is_rejected_as_a_link(template_dir, answer, text):
    with tempfile.TemporaryDirectory() as temporary:
        destination = Path(temporary) / "project"
        if text == "":
            render_with(template_dir, destination, {answer: text})
            return
        with pytest.raises(ValueError, match=f"{answer} must be empty or an http"):
            render_with(template_dir, destination, {answer: text})
        assert not destination.exists()

"""The `transformers` layout: models generated into a Transformers checkout and registered where upstream lists them.

The checkout is the release's sdist with the few files the tests need (tests/transformers_checkout.py says which and
what upstream checks therefore cannot run). One checkout holds a model of each family, as several ports can share one.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import copier
import pytest
import yaml

from helpers import (
    FAMILY_HEADS,
    KNOB_COMBINATIONS,
    NEW,
    NEW_DOCSTRING,
    OLD,
    REPO_ROOT,
    assert_clean_text,
    git,
    make_tagged_template,
    mlinter,
    noxfile,
    ruff,
)
from transformers_checkout import (
    MODELS,
    TOCTREE,
    UPSTREAM_SNAPSHOT,
    answers_for,
    build_checkout,
    copy_into,
    download_sdist,
    has_upstream_generation_tests,
)

REGISTER = REPO_ROOT / "hooks" / "register_in_tree.py"
REGISTRATION_FILES = [
    "src/transformers/models/auto/auto_mappings.py",
    "src/transformers/models/auto/modeling_auto.py",
    "src/transformers/models/auto/tokenization_auto.py",
    "src/transformers/models/__init__.py",
    "docs/source/en/_toctree.yml",
]


def in_checkout(checkout: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python with the checkout's `transformers` first on the path, as `pip install -e` would."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", script, *args], cwd=checkout, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def transformers_sdist(request) -> Path:
    version = importlib.metadata.version("transformers")
    # pytest's cache folder keeps it: PyPI is needed once, later runs are offline
    try:
        return download_sdist(version, request.config.cache.mkdir("transformers-sdist"))
    except subprocess.CalledProcessError as error:
        pytest.skip(f"the transformers {version} sdist cannot be downloaded from PyPI: {error.stderr.strip()}")


@pytest.fixture(scope="module")
def checkout(template_dir, transformers_sdist, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A checkout with one model of each family copied in; returns it and each copy's output."""
    checkout = build_checkout(transformers_sdist, tmp_path_factory.mktemp("checkout") / "transformers")
    outputs = {}
    for family in MODELS:
        result = copy_into(template_dir, checkout, answers_for(family))
        outputs[family] = result.stdout + result.stderr
        assert result.returncode == 0, outputs[family]
    return checkout, outputs


TOKENIZERS = ["bpe", "wordpiece", "unigram", "reuse", "none"]


def test_every_knob_combination_renders_clean_code_in_the_checkouts_style(render, transformers_sdist):
    """Each knob combination with every head and with none, tokenizers in turn: parseable, clean, ruff-clean and
    formatting-stable under the checkout's own ruff configuration, before any hook runs, and clean of
    transformers-mlinter's findings."""
    with tarfile.open(transformers_sdist) as archive:
        member = next(name for name in archive.getnames() if name.count("/") == 1 and name.endswith("/pyproject.toml"))
        checkout_configuration = archive.extractfile(member).read()
    model_dirs, comparison_scripts = [], []
    for index, knobs in enumerate(KNOB_COMBINATIONS):
        for heads in (FAMILY_HEADS[knobs["family"]], []):
            answers = {**knobs, "layout": "transformers", "heads": heads, "model_name": "TreeMatrix"}
            tokenizer = TOKENIZERS[(index * 2 + len(heads)) % len(TOKENIZERS)]
            destination = render(answers | {"tokenizer": tokenizer}, name="tree-matrix")
            (destination / "pyproject.toml").write_bytes(checkout_configuration)
            assert_clean_text(destination)
            model_dirs += [
                destination / "src/transformers/models/tree_matrix",
                destination / "tests/models/tree_matrix",
            ]
            comparison_scripts.append(destination / ".copier/compare_tree_matrix_with_original.py")
    check = ruff("check", "--no-cache", *map(str, model_dirs + comparison_scripts))
    assert check.returncode == 0, check.stdout
    formatting = ruff("format", "--check", "--no-cache", *map(str, model_dirs + comparison_scripts))
    assert formatting.returncode == 0, formatting.stdout
    linted = mlinter(*model_dirs)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def mapping_keys(text: str, name: str) -> list[str]:
    block = re.search(rf"^{name}\s*=\s*OrderedDict[^\n]*\n(.*?)^    \]", text, re.MULTILINE | re.DOTALL).group(1)
    return re.findall(r'^\s+\("([^"]+)",', block, re.MULTILINE)


def test_copy_registers_formats_and_smoke_tests_each_model(checkout):
    root, outputs = checkout
    for family, output in outputs.items():
        model_name, model_type, _ = MODELS[family]
        assert "registration refused" not in output and "smoke test passed" in output, output
        assert (root / ".copier" / f"{model_type}.yml").is_file()
        answers = yaml.safe_load((root / ".copier" / f"{model_type}.yml").read_text(encoding="utf-8"))
        assert answers["model_type"] == model_type and answers["layout"] == "transformers"
        for path in (
            f"src/transformers/models/{model_type}/modeling_{model_type}.py",
            f"tests/models/{model_type}/__init__.py",
            f"tests/models/{model_type}/test_modeling_{model_type}.py",
            f"docs/source/en/model_doc/{model_type}.md",
        ):
            assert (root / path).is_file(), path
        # Nothing of the package layout lands in the checkout
        for package_file in ("pyproject.toml", "README.md", ".gitignore", "notebooks", "PORTING_GUIDE.md"):
            assert git(root, "status", "--porcelain", "--", package_file) == ""
    model_dirs = [f"src/transformers/models/{model_type}" for _, model_type, _ in MODELS.values()]
    test_dirs = [f"tests/models/{model_type}" for _, model_type, _ in MODELS.values()]
    check = ruff("check", "--no-cache", *model_dirs, *test_dirs, cwd=root)
    assert check.returncode == 0, check.stdout
    assert ruff("format", "--check", "--no-cache", *model_dirs, *test_dirs, cwd=root).returncode == 0


def test_registration_inserts_one_entry_per_place_in_sort_order_and_nothing_else(checkout):
    root, _ = checkout
    auto = root / "src/transformers/models/auto"
    for family in MODELS:
        model_name, model_type, _ = MODELS[family]
        mappings = {"auto_mappings.py": ["CONFIG_MAPPING_NAMES"], "tokenization_auto.py": ["TOKENIZER_MAPPING_NAMES"]}
        mappings["modeling_auto.py"] = ["MODEL_MAPPING_NAMES"] + [
            {"ConditionalGeneration": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"}.get(
                head, "MODEL_FOR_" + re.sub(r"(?<=[a-z])(?=[A-Z])", "_", head).upper() + "_MAPPING_NAMES"
            )
            for head in FAMILY_HEADS[family]
        ]
        for file_name, names in mappings.items():
            text = (auto / file_name).read_text(encoding="utf-8")
            for name in names:
                keys = mapping_keys(text, name)
                assert keys.count(model_type) == 1, (file_name, name)
                position = keys.index(model_type)
                assert keys[position - 1] < model_type < keys[position + 1], (name, keys[position - 1 : position + 2])
        models_init = (root / "src/transformers/models/__init__.py").read_text(encoding="utf-8")
        assert models_init.count(f"    from .{model_type} import *\n") == 1
        toctree = yaml.safe_load((root / "docs/source/en/_toctree.yml").read_text(encoding="utf-8"))
        text_models = next(s for s in toctree[1]["sections"][0]["sections"] if s["title"] == "Text models")["sections"]
        assert {"local": f"model_doc/{model_type}", "title": model_name} in text_models
        titles = [entry["title"].lower() for entry in text_models]
        assert titles == sorted(titles)

    # Only added lines, each naming one of the models
    diff = git(root, "diff", "--unified=0", "--", *REGISTRATION_FILES)
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed and all(line.startswith("+") for line in changed)
    model_types = [model_type for _, model_type, _ in MODELS.values()]
    assert all(any(model_type in line for model_type in model_types) or "title:" in line for line in changed)


def test_registering_again_changes_nothing(checkout):
    root, _ = checkout
    before = {name: (root / name).read_bytes() for name in REGISTRATION_FILES}
    for family in MODELS:
        registration = {
            "model_type": MODELS[family][1],
            "config_class": f"{MODELS[family][0]}Config",
            "title": MODELS[family][0],
            "model_mappings": {f"{MODELS[family][0]}Model": "MODEL_MAPPING_NAMES"},
            "tokenizer_class": "",
        }
        result = subprocess.run(
            [sys.executable, str(REGISTER), f"--registration={json.dumps(registration)}"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0 and "already registered everywhere" in result.stdout, result.stdout
    assert {name: (root / name).read_bytes() for name in REGISTRATION_FILES} == before


# Run with the checkout first on the path: every model through the Auto classes, and its tokenizer mapping
AUTO_CLASSES_SCRIPT = """
import importlib.util, json, pathlib, sys
import transformers
from transformers import AutoConfig
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

models = json.loads(sys.argv[1])
assert transformers.__file__.startswith(sys.argv[2]), transformers.__file__
for model_type, (model_name, classes, tokenizer) in models.items():
    tiny = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_attention_heads=4)
    config = AutoConfig.for_model(model_type, **tiny, **({"num_key_value_heads": 2} if "decoder" in model_type else {}))
    assert type(config).__name__ == model_name + "Config", type(config)
    for class_name, auto_class in classes.items():
        model = getattr(transformers, auto_class).from_config(config)
        assert type(model).__name__ == class_name, (auto_class, type(model))
        assert type(model).__module__ == f"transformers.models.{model_type}.modeling_{model_type}"
    assert TOKENIZER_MAPPING[type(config)] is getattr(transformers, tokenizer), TOKENIZER_MAPPING[type(config)]
    # The comparison script, outside the package, imports the checkout's model
    script = pathlib.Path(sys.argv[2], ".copier", f"compare_{model_type}_with_original.py")
    spec = importlib.util.spec_from_file_location(f"compare_{model_type}", script)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    modules = {value.__module__ for value in vars(compare).values() if isinstance(value, type)}
    assert f"transformers.models.{model_type}.modeling_{model_type}" in modules, (script, modules)
print("ok")
"""


def test_the_checkout_builds_every_model_and_tokenizer_through_the_auto_classes_and_the_comparison_scripts(checkout):
    root, _ = checkout
    models = {}
    for family, (model_name, model_type, tokenizer) in MODELS.items():
        classes = {f"{model_name}Model": "AutoModel"}
        for head in FAMILY_HEADS[family]:
            auto_class = "AutoModelForSeq2SeqLM" if head == "ConditionalGeneration" else f"AutoModelFor{head}"
            classes[f"{model_name}For{head}"] = auto_class
        tokenizer_class = {"reuse": "BartTokenizer"}.get(tokenizer, f"{model_name}Tokenizer")
        models[model_type] = (model_name, classes, tokenizer_class)
    result = in_checkout(root, AUTO_CLASSES_SCRIPT, json.dumps(models), str(root))
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# Builds each classification head of the package layout, saves it and what it predicts for a left-padded batch
SAVE_PACKAGE_HEADS = """
import sys, torch, {package} as package
config = package.{model_name}Config(
    vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, pad_token_id=0, num_labels=3,
)
input_ids = torch.randint(1, 99, (2, 7), generator=torch.Generator().manual_seed(0))
input_ids[0, :2] = 0
inputs = {{"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}}
for head in sys.argv[2:]:
    torch.manual_seed(0)
    model = getattr(package, f"{model_name}For{{head}}")(config).eval()
    model.save_pretrained(f"{{sys.argv[1]}}/{{head}}")
    with torch.no_grad():
        outputs = {{name: value for name, value in model(**inputs).items() if isinstance(value, torch.Tensor)}}
    torch.save({{"inputs": inputs, "outputs": outputs}}, f"{{sys.argv[1]}}/{{head}}/expected.pt")
"""
# Loads those checkpoints into the checkout's classes and predicts again
LOAD_IN_TREE_HEADS = """
import sys, torch, transformers
from transformers import modeling_layers
for head in sys.argv[2:]:
    model_class = getattr(transformers, f"{model_name}For{{head}}")
    assert issubclass(model_class, getattr(modeling_layers, f"GenericFor{{head}}")), model_class.__mro__
    model = model_class.from_pretrained(f"{{sys.argv[1]}}/{{head}}").eval()
    expected = torch.load(f"{{sys.argv[1]}}/{{head}}/expected.pt")
    with torch.no_grad():
        outputs = model(**expected["inputs"])
    assert expected["outputs"], head
    for name, value in expected["outputs"].items():
        torch.testing.assert_close(outputs[name], value, rtol=0, atol=0, msg=f"{{head}}: {{name}}")
print("ok")
"""


def test_the_decoders_generic_heads_in_a_checkout_predict_what_the_packages_written_heads_do(
    checkout, render, tmp_path
):
    """In a checkout the decoder's classification heads are one line on Transformers' GenericFor* classes, as
    Llama's are; the package writes them out. The same checkpoint gives the same predictions in both."""
    root, _ = checkout
    model_name, model_type, _ = MODELS["decoder"]
    generic_heads = ["SequenceClassification", "TokenClassification", "QuestionAnswering"]
    modeling = (root / f"src/transformers/models/{model_type}/modeling_{model_type}.py").read_text(encoding="utf-8")
    for head in generic_heads:
        one_line = f"class {model_name}For{head}(GenericFor{head}, {model_name}PreTrainedModel): ...\n"
        assert one_line in modeling
    package_answers = {key: value for key, value in answers_for("decoder").items() if key != "layout"}
    package = render(package_answers, name="package-heads")
    package_modeling = (package / f"src/{model_type}/modeling_{model_type}.py").read_text(encoding="utf-8")
    assert "GenericFor" not in package_modeling

    env = {**os.environ, "PYTHONPATH": str(package / "src"), "HF_HUB_OFFLINE": "1"}
    script = SAVE_PACKAGE_HEADS.format(package=model_type, model_name=model_name)
    saved = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), *generic_heads], env=env, capture_output=True, text=True
    )
    assert saved.returncode == 0, saved.stderr
    loaded = in_checkout(root, LOAD_IN_TREE_HEADS.format(model_name=model_name), str(tmp_path), *generic_heads)
    assert loaded.returncode == 0 and loaded.stdout.strip().endswith("ok"), loaded.stderr


def test_generated_tests_pass_with_upstreams_common_testers(checkout):
    root, _ = checkout
    env = {**os.environ, "PYTHONPATH": "src", "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    # Warnings stay on: upstream's tests record some (the deprecation of the cache's old argument name)
    pytest_command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "log_cli=false"]

    def run_model_tests(model_type: str) -> subprocess.CompletedProcess:
        command = [*pytest_command, "-v", f"tests/models/{model_type}"]
        # One torch thread each, two models at a time
        return subprocess.run(command, cwd=root, env=env | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True)

    model_types = [model_type for _, model_type, _ in MODELS.values()]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(model_types, pool.map(run_model_tests, model_types), strict=True))
    for model_type, result in results.items():
        assert result.returncode == 0, result.stdout[-5000:]
        common_passed = re.findall(r"ModelTest::test_\w+ PASSED", result.stdout)
        assert len(common_passed) > 80, f"{model_type}: only {len(common_passed)} of upstream's common tests passed"
        assert "ModelTest::test_config PASSED" in result.stdout
        # Upstream's pipeline tests are collected; they skip without the Hub's tiny models, as everywhere offline
        assert "ModelTest::test_pipeline_feature_extraction SKIPPED" in result.stdout
    if has_upstream_generation_tests(root):
        for model_type in ("ported_decoder", "ported_seq2seq"):
            passed = set(re.findall(r"ModelTest::(test_\w+) PASSED", results[model_type].stdout))
            # greedy, sampling, beam search, continuing from a cache, the cache's format; static caches for decoders
            # (upstream's test skips encoder-decoders, BART's included)
            expected = {
                "test_greedy_generate_dict_outputs_use_cache",
                "test_sample_generate",
                "test_beam_search_generate",
                "test_generate_continue_from_past_key_values",
                "test_past_key_values_format",
            } | (
                {"test_generate_with_static_cache", "test_left_padding_compatibility"}
                if model_type == "ported_decoder"
                else set()
            )
            assert expected <= passed, f"{model_type}: {sorted(expected - passed)} did not pass"
            generation_passed = [name for name in passed if "generat" in name]
            assert len(generation_passed) > 15, f"{model_type}: only {len(generation_passed)} generation tests passed"


# Upstream's newer layout of the same sections: each section's title after its entries, sections side by side
TOCTREE_WITH_TITLES_LAST = """\
- sections:
  - isExpanded: false
    sections:
    - local: model_doc/albert
      title: ALBERT
    - local: model_doc/yoso
      title: YOSO
    title: Text models
  - isExpanded: false
    sections:
    - local: model_doc/vit
      title: ViT
    title: Vision models
  title: Models
"""


# Upstream's repository checks (a snapshot beside this repository, ../shared/ in CI; see its README)
UPSTREAM_UTILS = UPSTREAM_SNAPSHOT / "utils"
UPSTREAM_PARSERS_SCRIPT = """
import datetime, json, sys
sys.path.insert(0, sys.argv[1])
import add_dates, check_config_docstrings, check_repo
found = {}
for model_type, config_class in json.loads(sys.argv[2]).items():
    with open(f"docs/source/en/model_doc/{model_type}.md", encoding="utf-8") as doc:
        dates = add_dates._get_dates_pattern_match(doc.read())
    module = __import__(f"transformers.models.{model_type}", fromlist=[config_class])
    found[model_type] = {
        "contributed": dates.group(2) if dates else None,
        "tested": sorted(check_repo.find_tested_models(f"models/{model_type}/test_modeling_{model_type}.py")),
        "checkpoint": check_config_docstrings.get_checkpoint_from_config_class(getattr(module, config_class)),
    }
print(json.dumps(found))
"""


@pytest.mark.skipif(not UPSTREAM_UTILS.is_dir(), reason=f"upstream's utils/ are not at {UPSTREAM_UTILS}")
def test_upstreams_checks_find_the_date_line_the_tested_classes_and_the_checkpoint(checkout):
    """What utils/add_dates.py, check_repo.py and check_config_docstrings.py read, read with their own code: the doc
    page's date line, the literal `all_model_classes` of the common test class, the config's checkpoint."""
    root, _ = checkout
    configs = {model_type: f"{model_name}Config" for model_name, model_type, _ in MODELS.values()}
    result = in_checkout(root, UPSTREAM_PARSERS_SCRIPT, str(UPSTREAM_UTILS), json.dumps(configs))
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    for family, (model_name, model_type, _) in MODELS.items():
        heads = [f"{model_name}{'For' + head}" for head in FAMILY_HEADS[family]]
        assert found[model_type]["tested"] == sorted([f"{model_name}Model", *heads]), family
        assert found[model_type]["checkpoint"] == f"your-org/{model_type.replace('_', '-')}", family
        assert found[model_type]["contributed"] == datetime.date.today().isoformat(), family


def test_the_docs_entry_joins_the_text_models_in_title_order_whichever_way_the_toctree_is_laid_out():
    spec = importlib.util.spec_from_file_location("register_in_tree", REGISTER)
    register_in_tree = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(register_in_tree)
    for toctree, section_path in ((TOCTREE_WITH_TITLES_LAST, (0, 0)), (TOCTREE, (1, 0, 0))):
        lines = toctree.splitlines()
        insertion = register_in_tree.plan_toctree(lines, "ported_model", "PortedModel")
        lines[insertion.index : insertion.index] = insertion.text.split("\n")
        section = yaml.safe_load("\n".join(lines))[section_path[0]]
        for index in section_path[1:]:
            section = section["sections"][index]
        assert section["title"] == "Text models"
        titles = [entry["title"] for entry in section["sections"]]
        assert "PortedModel" in titles and titles == sorted(titles, key=str.lower)
        assert register_in_tree.plan_toctree(lines, "ported_model", "PortedModel") is None


def pull_request_commands(guide: str) -> str:
    """The porting guide's one shell block: the commands that commit the pull request."""
    (block,) = re.findall(r"```bash\n(.*?)```", guide, re.DOTALL)
    return block


def git_add_paths(guide: str) -> tuple[list[str], list[str]]:
    """The paths of the porting guide's `git add` (new files) and `git add --update` (the registration's edits)."""
    lines = pull_request_commands(guide).splitlines()
    commands = [line.strip().split() for line in lines if line.strip().startswith("git add")]
    return (
        [path for command in commands if "--update" not in command for path in command[2:]],
        [path for command in commands if "--update" in command for path in command[3:]],
    )


@pytest.mark.parametrize("family", list(MODELS))
def test_the_porting_guides_git_add_takes_every_file_of_the_pull_request_and_nothing_of_copier(render, family):
    """Every rendered file outside `.copier/` is in the guide's `git add`, each path it adds exists, its
    `--update` covers every file the registration edits, and `.copier/` keeps the answers, the guide, the model card
    and the comparison script."""
    model_type = MODELS[family][1]
    project = render(answers_for(family), name=f"guide-{family}")
    guide = (project / ".copier" / f"{model_type}-porting-guide.md").read_text(encoding="utf-8")
    added, updated = git_add_paths(guide)
    rendered = [path.relative_to(project).as_posix() for path in project.rglob("*") if path.is_file()]
    outside_copier = [path for path in rendered if not path.startswith(".copier/")]

    assert [path for path in outside_copier if not any(path == a or path.startswith(f"{a}/") for a in added)] == []
    assert all((project / path).exists() for path in added), added
    covered = [name for name in REGISTRATION_FILES if any(name == u or name.startswith(f"{u}/") for u in updated)]
    assert covered == REGISTRATION_FILES
    assert sorted(path for path in rendered if path.startswith(".copier/")) == [
        f".copier/compare_{model_type}_with_original.py",
        f".copier/{model_type}-model-card.md",
        f".copier/{model_type}-porting-guide.md",
        f".copier/{model_type}.yml",
    ]


def test_a_destination_that_is_not_a_checkout_is_refused(template_dir, tmp_path):
    destination = tmp_path / "somewhere"
    destination.mkdir()
    (destination / "notes.txt").write_text("mine\n", encoding="utf-8")

    result = copy_into(template_dir, destination, answers_for("decoder", smoke_test=False))

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "registration refused, nothing was changed" in output and "is not a Transformers source checkout" in output
    assert (destination / "notes.txt").read_text(encoding="utf-8") == "mine\n"
    assert "format:" not in output  # it stops before formatting


def registration_files_copy(checkout: Path, destination: Path) -> Path:
    """Just the files the registration reads, in a folder `nobody` can enter."""
    for name in REGISTRATION_FILES:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkout / name, destination / name)
    return destination


REGISTRATION = {
    "model_type": "another_port",
    "config_class": "AnotherPortConfig",
    "title": "AnotherPort",
    "model_mappings": {
        "AnotherPortModel": "MODEL_MAPPING_NAMES",
        "AnotherPortForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    },
    "tokenizer_class": "AnotherPortTokenizer",
}


def run_register(root: Path, interpreter: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*interpreter, str(REGISTER), f"--registration={json.dumps(REGISTRATION)}"],
        cwd=root,
        capture_output=True,
        text=True,
    )


def test_a_model_type_registered_for_another_model_is_refused_before_any_change(checkout, tmp_path):
    root = registration_files_copy(checkout[0], tmp_path)
    auto_mappings = root / REGISTRATION_FILES[0]
    taken = auto_mappings.read_text(encoding="utf-8").replace(
        '        ("bert", "BertConfig"),\n',
        '        ("another_port", "SomeoneElsesConfig"),\n        ("bert", "BertConfig"),\n',
    )
    auto_mappings.write_text(taken, encoding="utf-8")
    before = {name: (root / name).read_bytes() for name in REGISTRATION_FILES}

    result = run_register(root, [sys.executable])

    assert result.returncode == 6
    assert 'model type "another_port" is already in CONFIG_MAPPING_NAMES' in result.stdout
    assert "SomeoneElsesConfig" in result.stdout
    assert {name: (root / name).read_bytes() for name in REGISTRATION_FILES} == before


def test_a_read_only_registration_file_is_refused_before_any_change(checkout):
    if os.geteuid() == 0:
        setpriv, system_python = shutil.which("setpriv"), Path("/usr/bin/python3")
        if setpriv is None or not system_python.exists():
            pytest.skip("running as root without setpriv or /usr/bin/python3: read-only files cannot be simulated")
        interpreter = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(system_python)]
    else:
        interpreter = [sys.executable]
    root = registration_files_copy(checkout[0], Path(tempfile.mkdtemp()))  # outside root's private pytest folder
    try:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)
        (root / "src/transformers/models/auto/modeling_auto.py").chmod(0o444)
        before = {name: (root / name).read_bytes() for name in REGISTRATION_FILES}

        result = run_register(root, interpreter)

        assert result.returncode == 6, result.stdout + result.stderr
        assert "cannot write src/transformers/models/auto/modeling_auto.py" in result.stdout
        assert {name: (root / name).read_bytes() for name in REGISTRATION_FILES} == before
    finally:
        shutil.rmtree(root)


def comment_the_modeling_file(modeling: Path) -> str:
    """A porter's comment above the imports of a generated modeling file; returns it."""
    user_line = "# Ported from the paper's section 3.2; the gate comes first."
    text = modeling.read_text(encoding="utf-8")
    modeling.write_text(text.replace("\n\nimport torch\n", f"\n\n{user_line}\nimport torch\n", 1), encoding="utf-8")
    return user_line


def test_update_with_the_models_answers_file_keeps_edits_and_registers_new_heads(
    template_dir, transformers_sdist, tmp_path
):
    template = make_tagged_template(template_dir, tmp_path / "template")
    checkout = build_checkout(transformers_sdist, tmp_path / "transformers")
    model_type = MODELS["decoder"][1]
    for family in ("decoder", "encoder"):
        answers = answers_for(family, heads=FAMILY_HEADS[family][:1], smoke_test=False)
        result = copy_into(template, checkout, answers, vcs_ref=OLD)
        assert result.returncode == 0, result.stdout + result.stderr
    modeling = checkout / f"src/transformers/models/{model_type}/modeling_{model_type}.py"
    user_line = comment_the_modeling_file(modeling)
    git(checkout, "add", "--all")
    git(checkout, "commit", "--quiet", "-m", "two ported models, one edit")
    encoder_files = {
        path: path.read_bytes() for path in (checkout / "src/transformers/models" / MODELS["encoder"][1]).iterdir()
    }

    copier.run_update(
        checkout,
        answers_file=f".copier/{model_type}.yml",
        vcs_ref=NEW,
        data={"heads": FAMILY_HEADS["decoder"][:2]},
        defaults=True,
        overwrite=True,
        unsafe=True,
        quiet=True,
    )

    text = modeling.read_text(encoding="utf-8")
    assert user_line in text and NEW_DOCSTRING.replace("BrandNewBert", MODELS["decoder"][0]) in text
    assert f"class {MODELS['decoder'][0]}ForSequenceClassification" in text
    classification = mapping_keys(
        (checkout / "src/transformers/models/auto/modeling_auto.py").read_text(encoding="utf-8"),
        "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    )
    assert model_type in classification
    answers = yaml.safe_load((checkout / ".copier" / f"{model_type}.yml").read_text(encoding="utf-8"))
    assert answers["_commit"] == NEW
    other_answers = yaml.safe_load((checkout / ".copier" / f"{MODELS['encoder'][1]}.yml").read_text(encoding="utf-8"))
    assert other_answers["_commit"] == OLD
    assert {path: path.read_bytes() for path in encoder_files} == encoder_files


def test_a_model_of_the_last_release_updates_in_its_checkout_with_the_readmes_command(
    released_template, transformers_sdist, tmp_path
):
    """A decoder generated into a checkout by the last release, edited, then `copier update --trust --defaults -a
    .copier/<model_type>.yml` to the newest: the edits survive, in the comparison script too wherever the release put
    it (0.14.0 moved it and the model card to `.copier/`), the checkout's own files are only added to, and the
    model passes its tests. Then the porting guide's last commands commit a pull request without `.copier/`."""
    newest, last = (version for version, _ in noxfile.releases((REPO_ROOT / "CHANGELOG.md").read_text())[:2])
    checkout = build_checkout(transformers_sdist, tmp_path / "transformers")
    model_type = MODELS["decoder"][1]
    result = copy_into(released_template, checkout, answers_for("decoder"), vcs_ref=last)
    assert result.returncode == 0, result.stdout + result.stderr
    model_dir = checkout / f"src/transformers/models/{model_type}"
    modeling = model_dir / f"modeling_{model_type}.py"
    user_line = comment_the_modeling_file(modeling)
    compare_name = f"compare_{model_type}_with_original.py"
    (compare,) = [path for path in (model_dir / compare_name, checkout / ".copier" / compare_name) if path.exists()]
    capture_point = "# The porter's capture point for the gate"
    compare.write_text(compare.read_text(encoding="utf-8").replace("\n}\n", f"\n    {capture_point}\n}}\n", 1))
    git(checkout, "add", "--all")
    git(checkout, "commit", "--quiet", "-m", "a ported model, edited")
    registrations = {name: (checkout / name).read_text(encoding="utf-8") for name in REGISTRATION_FILES}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    update = subprocess.run(
        [sys.executable, "-m", "copier", "update", "--trust", "--defaults", "-a", f".copier/{model_type}.yml"],
        cwd=checkout,
        capture_output=True,
        text=True,
        env=env,
    )

    output = update.stdout + update.stderr
    assert update.returncode == 0, output
    assert "update: no conflicts" in output and "smoke test passed" in output, output
    text = modeling.read_text(encoding="utf-8")
    assert user_line in text and "cache: Cache | None = None," in text
    assert capture_point in (checkout / ".copier" / compare_name).read_text(encoding="utf-8")
    assert (checkout / ".copier" / f"{model_type}-model-card.md").is_file()
    assert not (model_dir / compare_name).exists() and not (model_dir / "MODEL_CARD.md").exists()
    answers = yaml.safe_load((checkout / ".copier" / f"{model_type}.yml").read_text(encoding="utf-8"))
    assert answers["_commit"] == newest
    for name, before in registrations.items():
        after = (checkout / name).read_text(encoding="utf-8")
        assert set(before.splitlines()) <= set(after.splitlines()), f"the update removed lines of {name}"
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tests/models/{model_type}"],
        cwd=checkout,
        env=env | {"PYTHONPATH": str(checkout / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]

    sdist_commit = git(checkout, "rev-list", "--max-parents=0", "HEAD").strip()
    guide = (checkout / ".copier" / f"{model_type}-porting-guide.md").read_text(encoding="utf-8")
    block = pull_request_commands(guide)
    identity = {"GIT_AUTHOR_NAME": "Porter", "GIT_AUTHOR_EMAIL": "porter@example.com"}
    identity |= {"GIT_COMMITTER_NAME": "Porter", "GIT_COMMITTER_EMAIL": "porter@example.com"}
    commands = subprocess.run(
        ["bash", "-e", "-c", block], cwd=checkout, env={**os.environ, **identity}, capture_output=True, text=True
    )
    assert commands.returncode == 0, commands.stdout + commands.stderr
    in_the_pull_request = git(checkout, "diff", "--name-only", sdist_commit, "HEAD").split()
    assert f"src/transformers/models/{model_type}/modeling_{model_type}.py" in in_the_pull_request
    assert "src/transformers/models/auto/modeling_auto.py" in in_the_pull_request
    assert [path for path in in_the_pull_request if path.startswith(".copier/")] == []
    assert git(checkout, "status", "--porcelain").splitlines() == ["?? .copier/"]

"""CONTRIBUTING.md's recipes, followed to the letter: each test copies the project
(Snakefile, workflow/, rules/, envs/, config.yaml, src/) into a temporary folder, adds a
toy method, a toy ranking or a dataset by writing exactly the files the recipe's table
in CONTRIBUTING.md names (checked against a snapshot of the copy), and dry-runs a tiny
experiment that uses it with the copy's ``src`` first on PYTHONPATH. The dry run must
plan the expected jobs: a step the recipe does not name (a schema enum, a list in a
test, a special case in the config check) makes it fail at parse time.

(The metric recipe's test is tests/test_recipe_metric.py.)"""

import hashlib
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT = ("Snakefile", "workflow", "rules", "envs", "config.yaml", "src")
CELL = "{dataset}/efficientnet_lite0/dmch_60_40/{method}/16/split0"


def recipe_files(title: str, name: str) -> set[str]:
    """The files CONTRIBUTING.md's table under ``## {title}`` names (``<name>`` filled)."""
    text = (REPO / "CONTRIBUTING.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("| file | what |", 1)[1].split("\n\n", 1)[0]
    return {f.replace("<name>", name) for f in re.findall(r"^\| `([^`]+)` \|", table, re.M)}


def snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".snakemake" not in p.parts
    }


def touched(before: dict, after: dict) -> set[str]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


@pytest.fixture
def project(tmp_path):
    """A copy of the project and its file snapshot before the recipe."""
    root = tmp_path / "project"
    for entry in PROJECT:
        src = REPO / entry
        if src.is_dir():
            shutil.copytree(src, root / entry, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            root.mkdir(exist_ok=True)
            shutil.copy2(src, root / entry)
    return root, snapshot(root)


def edit_config(root: Path, change) -> None:
    config = yaml.safe_load((root / "config.yaml").read_text())
    change(config)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def toy_experiment(*methods: str, dataset: str = "demo", **extra) -> dict:
    return {
        "datasets": [dataset],
        "backbones": ["efficientnet_lite0"],
        "protocols": ["dmch_60_40"],
        "seeds": [0],
        "methods": list(methods),
        "bits": [16],
        **extra,
    }


def dry_run(root: Path, planned, *targets, env=None):
    """``snakemake -n`` in the copy, on the copy's library; (output, {rule: count})."""
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", *targets],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=python_env(root, env),
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    return text, planned(text)


def python_env(root: Path, extra=None) -> dict:
    import os

    return os.environ | {"PYTHONPATH": str(root / "src")} | (extra or {})


def check_recipe(root: Path, before: dict, title: str, name: str) -> None:
    """The recipe wrote exactly the files its table names."""
    assert touched(before, snapshot(root)) == recipe_files(title, name)


def test_add_a_method(project, planned):
    root, before = project
    (root / "src/rshash/methods/toyhash.py").write_text(
        textwrap.dedent(
            '''
            """toyhash: signs of a seeded random projection of shifted features (a test toy)."""

            from __future__ import annotations

            from dataclasses import dataclass

            import numpy as np

            from rshash.methods.base import Encoded, HashMethod, sign_bits
            from rshash.params import Params, param


            class ToyHash(HashMethod):
                name = "toyhash"
                state_names = ("W",)

                @dataclass(frozen=True, kw_only=True)
                class Params(Params):
                    shift: float = param(0.0, min=-1.0, max=1.0)

                def _fit(self, X, y):
                    rng = np.random.default_rng(self.seed)
                    self.W = rng.standard_normal((X.shape[1], self.bits)).astype(np.float32)

                def encode(self, X):
                    value = ((np.asarray(X, np.float32) - self.p.shift) @ self.W).astype(np.float32)
                    return Encoded(bits=sign_bits(value), value=value)


            METHOD = ToyHash
            '''
        )
    )

    def change(config):
        config["variants"]["toyhash"] = {"method": "toyhash", "params": {"shift": 0.5}}
        config["experiments"]["toy"] = toy_experiment("toyhash")

    edit_config(root, change)
    check_recipe(root, before, "Add a hashing method", "toyhash")
    out, jobs = dry_run(root, planned, "results/tables/toy.csv")
    assert jobs["train_method"] == 1 and jobs["evaluate_ranking"] == 1, jobs
    cell = CELL.format(dataset="demo", method="toyhash")
    assert f"results/models/{cell}.npz" in out
    assert f"results/metrics/{cell}/hamming.json" in out


# The toy ranking's parameters and distances (before RANKINGS), and its entries in it.
TOY_DECLARATIONS = '''@dataclass(frozen=True, kw_only=True)
class CityBlockParams(Params):
    """The power the city-block distance of ``value`` is raised to."""

    power: float = param(1.0, min=0.5)


def _city_block(query, database, power):
    q, db = np.asarray(query["value"]), database["value"]
    return np.abs(q[:, None, :] - db[None, :, :]).sum(-1) ** power


def _head_only(query, database):
    predicted = np.argmax(query["class_prob"], axis=1)
    return 1.0 - database["class_prob"][:, predicted].T


'''
TOY_ENTRIES = """        Ranking("city_block", ("value",), CityBlockParams, distances=_city_block),
        Ranking("head_only", ("class_prob",), distances=_head_only),
"""


def test_add_a_ranking(project, planned):
    """A ranking is one entry in rankings.py plus config.yaml: the config check, the
    workflow and the class-head rule take it from the registry."""
    root, before = project
    path = root / "src/rshash/rankings.py"
    text = path.read_text()
    start = text.index("RANKINGS: dict[str, Ranking] = {")
    end = text.index("    )\n}\n", start)  # the end of the entries' tuple
    path.write_text(text[:start] + TOY_DECLARATIONS + text[start:end] + TOY_ENTRIES + text[end:])

    def change(config):
        config["ranking_params"]["city_block"] = {"power": 2.0}
        config["experiments"]["toy"] = toy_experiment(
            "lsh", "dmch", rankings={"lsh": ["city_block"], "dmch": ["head_only", "hamming"]}
        )

    edit_config(root, change)
    check_recipe(root, before, "Add a ranking", "city_block")
    out, jobs = dry_run(root, planned, "results/tables/toy.csv")
    assert jobs["train_method"] == 2 and jobs["evaluate_ranking"] == 3, jobs
    for method, ranking in (("lsh", "city_block"), ("dmch", "head_only"), ("dmch", "hamming")):
        cell = CELL.format(dataset="demo", method=method)
        assert f"results/metrics/{cell}/{ranking}.json" in out
    assert """--ranking-params '{"power": 2.0}'""" in out  # the job gets its parameters

    # what the registry declares, the config check applies: the ranking's parameters, and
    # a ranking reading a class head's columns needs a head (dmch_ncat has none)
    config = yaml.safe_load((root / "config.yaml").read_text())
    bad_param = {**config, "ranking_params": {"city_block": {"power": 0.1}}}
    headless = {**config, "experiments": {"toy": {**config["experiments"]["toy"]}}}
    headless["experiments"]["toy"].update(
        methods=["dmch_ncat"], rankings={"dmch_ncat": ["head_only"]}
    )
    assert rejected(root, bad_param, headless) == [
        "config: ranking_params.city_block.power: expected a number >= 0.5, got 0.1",
        "config: experiments.toy: dmch_ncat (use_cat: false) has no class head; "
        "head_only needs one",
    ]


def rejected(root: Path, *configs) -> list[str]:
    """The copy's config check on each of ``configs``: its one-line message, or "valid"."""
    code = (
        "import sys, yaml\n"
        "from rshash import RshashError\n"
        "from rshash.config import validate\n"
        "for config in yaml.safe_load(sys.stdin):\n"
        "    try:\n"
        "        validate(config, 'workflow/schemas/config.schema.yaml')\n"
        "        print('valid')\n"
        "    except RshashError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=yaml.safe_dump(list(configs)),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env=python_env(root),
        check=True,
    )
    return out.stdout.splitlines()


def test_add_a_dataset(project, planned, tmp_path):
    """A folder of class sub-folders is one config.yaml entry (the images are the
    user's, under data_dir: here RSHASH_DATA_DIR)."""
    from PIL import Image

    root, before = project
    data = tmp_path / "data"
    for c, cls in enumerate(["fields", "roads"]):
        (data / "MyData/images" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (16, 16), (40 * c + i, 90, 30)).save(
                data / "MyData/images" / cls / f"{cls}{i}.png"
            )

    def change(config):
        config["datasets"]["mydata"] = {"folder": "MyData/images"}
        config["experiments"]["toy"] = toy_experiment("lsh", dataset="mydata")

    edit_config(root, change)
    check_recipe(root, before, "Add a dataset", "mydata")
    out, jobs = dry_run(root, planned, "results/tables/toy.csv", env={"RSHASH_DATA_DIR": str(data)})
    assert jobs["train_method"] == 1 and jobs["evaluate_ranking"] == 1, jobs
    assert "results/manifests/mydata.parquet" in out
    assert "results/features/mydata/efficientnet_lite0.h5" in out
    cell = CELL.format(dataset="mydata", method="lsh")
    assert f"results/metrics/{cell}/hamming.json" in out

"""envs/*.yaml (the conda environments of the rules, for --sdm conda) parse and pin
the same versions as pyproject.toml. conda itself is not needed: the files are read
as the YAML conda reads."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "envs").glob("*.yaml"))
# Run by the snakemake process that drives the workflow, never inside a rule's env.
DRIVER_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}


def project_pins() -> dict[str, str]:
    """pyproject.toml dependencies: name -> exact version (all are pinned with ==)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        req = Requirement(dep)
        (spec,) = req.specifier
        assert spec.operator == "==", f"pyproject.toml: {dep} is not pinned exactly"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def env_pins(env: dict, path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(conda pins, pip pins) of an environment file: name -> version."""
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                if line.startswith("-e ") or line.startswith("--"):
                    continue
                req = Requirement(line)
                (spec,) = req.specifier or [None]
                assert spec is not None and spec.operator == "==", f"{path}: pip {line} unpinned"
                pip[canonicalize_name(req.name)] = spec.version
        else:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(?:==?\s*([^\s=]+))?", dep)
            assert m, f"{path}: cannot read conda dependency {dep!r}"
            conda[canonicalize_name(m[1])] = m[2]
    return conda, pip


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_parses_and_pins_what_pyproject_pins(path):
    env = yaml.safe_load(path.read_text())
    assert isinstance(env, dict) and env.get("channels") and env.get("dependencies"), path
    conda, pip = env_pins(env, path)
    project = project_pins()
    wanted = {k: v for k, v in project.items() if k not in DRIVER_ONLY}
    assert pip == wanted, f"{path}: pip pins differ from pyproject.toml"
    # a package conda installs must also be pinned as pyproject pins it
    for name, version in conda.items():
        if name in project:
            assert version == project[name], f"{path}: conda {name}={version}"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert conda.get("python") and f"{conda['python']}.0" in SpecifierSet(requires), (
        f"{path}: python {conda.get('python')} outside {requires}"
    )
    assert "-e .." in next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]


def test_envs_exist_and_driver_only_packages_are_real_dependencies():
    assert ENVS, "no envs/*.yaml"
    assert DRIVER_ONLY <= set(project_pins())

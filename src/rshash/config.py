"""Configuration: schema validation with one-line messages, cross-references,
and the expansion of an experiment into its cells.

The workflow calls these at parse time, so a bad config stops before any job.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from rshash import RshashError


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate(config: dict, schema_path: str | Path) -> None:
    """Raise RshashError naming the offending key when ``config`` breaks the schema."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        message = error.message
        if error.validator == "propertyNames":
            message = f"invalid name: {message}"
        elif error.validator == "additionalProperties":
            message = f"unknown key: {message}"
        raise RshashError(f"config: {_where(error.absolute_path)}: {message}")
    check_references(config)


def check_references(config: dict) -> None:
    """Every name an experiment uses must be defined in its section."""
    sections = {"datasets": "datasets", "backbones": "backbones", "protocols": "protocols",
                "methods": "variants"}
    for name, exp in config["experiments"].items():
        for key, section in sections.items():
            for i, value in enumerate(exp[key]):
                if value not in config[section]:
                    raise RshashError(
                        f"config: experiments.{name}.{key}[{i}]: '{value}' is not defined under "
                        f"'{section}' (defined: {', '.join(sorted(config[section]))})")
        for protocol in exp["protocols"]:
            extra = set(exp.get("seeds", [])) - set(config["protocols"][protocol]["seeds"])
            if extra:
                raise RshashError(
                    f"config: experiments.{name}.seeds: {sorted(extra)} not among the seeds of "
                    f"protocol '{protocol}' {config['protocols'][protocol]['seeds']}")


@dataclass(frozen=True)
class Cell:
    """One trained model: dataset x backbone x protocol x variant x bits x split seed."""

    dataset: str
    backbone: str
    protocol: str
    method: str  # the variant name, as in tables
    bits: int
    seed: int

    @property
    def path(self) -> str:
        return (f"{self.dataset}/{self.backbone}/{self.protocol}/{self.method}/{self.bits}/"
                f"split{self.seed}")

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def experiment_cells(config: dict, experiment: str) -> list[Cell]:
    if experiment not in config["experiments"]:
        raise RshashError(f"unknown experiment '{experiment}'; defined: "
                          f"{', '.join(sorted(config['experiments']))}")
    exp = config["experiments"][experiment]
    cells = []
    for dataset, backbone, protocol, method, bits in itertools.product(
            exp["datasets"], exp["backbones"], exp["protocols"], exp["methods"], exp["bits"]):
        seeds = exp.get("seeds") or config["protocols"][protocol]["seeds"]
        cells += [Cell(dataset, backbone, protocol, method, bits, s) for s in seeds]
    return cells


def experiment_rankings(config: dict, experiment: str) -> list[str]:
    return config["experiments"][experiment].get("rankings", ["hamming"])

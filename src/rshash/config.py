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
    """Every name an experiment uses must be defined in its section, every variant's
    method registered, and every ranking supported by the methods it is asked of."""
    from rshash.methods import REGISTRY

    for name, variant in config["variants"].items():
        if variant["method"] not in REGISTRY:
            raise RshashError(f"config: variants.{name}.method: '{variant['method']}' is not a "
                              f"hashing method (known: {', '.join(sorted(REGISTRY))})")
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
        rankings = exp.get("rankings")
        if isinstance(rankings, dict):
            for method in rankings:
                if method not in exp["methods"]:
                    raise RshashError(f"config: experiments.{name}.rankings.{method}: "
                                      f"'{method}' is not among the experiment's methods")
        for method in exp["methods"]:
            info = REGISTRY[config["variants"][method]["method"]]
            where = (f"experiments.{name}.rankings.{method}" if isinstance(rankings, dict)
                     else f"experiments.{name}.rankings")
            for ranking in experiment_rankings(config, name, method):
                if ranking not in info.rankings:
                    raise RshashError(
                        f"config: {where}: method '{method}' does not support ranking "
                        f"'{ranking}' (it supports: {', '.join(info.rankings)})")
        reference = exp.get("reference")
        if reference is not None and reference["method"] not in exp["methods"]:
            raise RshashError(f"config: experiments.{name}.reference.method: "
                              f"'{reference['method']}' is not among the experiment's methods")
        for method in exp.get("method_bits", {}):
            if method not in exp["methods"]:
                raise RshashError(f"config: experiments.{name}.method_bits.{method}: "
                                  f"'{method}' is not among the experiment's methods")
        for i, comp in enumerate(exp.get("comparisons", [])):
            for key in ("method", "reference"):
                if comp[key] not in exp["methods"]:
                    raise RshashError(f"config: experiments.{name}.comparisons[{i}].{key}: "
                                      f"'{comp[key]}' is not among the experiment's methods")
            for key, method in (("ranking", comp["method"]),
                                ("reference_ranking", comp["reference"])):
                if key in comp and comp[key] not in experiment_rankings(config, name, method):
                    raise RshashError(f"config: experiments.{name}.comparisons[{i}].{key}: "
                                      f"'{method}' is not ranked '{comp[key]}' in this "
                                      "experiment")


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
    for dataset, backbone, protocol, method in itertools.product(
            exp["datasets"], exp["backbones"], exp["protocols"], exp["methods"]):
        seeds = exp.get("seeds") or config["protocols"][protocol]["seeds"]
        bit_lengths = ([0] if _info(config, method).real_valued
                       else exp.get("method_bits", {}).get(method, exp["bits"]))
        cells += [Cell(dataset, backbone, protocol, method, bits, s)
                  for bits in bit_lengths for s in seeds]
    return cells


def _info(config: dict, variant: str):
    from rshash.methods import method_info

    return method_info(config["variants"][variant]["method"])


def experiment_rankings(config: dict, experiment: str, method: str) -> list[str]:
    """The rankings a variant is evaluated with in an experiment: the experiment's
    ``rankings`` (a list for every method, or a mapping per method), else the
    method's default (``hamming``; ``euclidean`` for real-valued ``raw``)."""
    rankings = config["experiments"][experiment].get("rankings")
    if isinstance(rankings, dict):
        rankings = rankings.get(method)
    return list(rankings or _info(config, method).default_rankings)

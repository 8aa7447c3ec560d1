"""Configuration: schema validation with one-line messages, cross-references,
and the expansion of an experiment into its cells.

The workflow calls these at parse time, so a bad config stops before any job.
"""

from __future__ import annotations

import functools
import itertools
import json
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


# JSON Schema counts 32.0 as an integer; rshash does not (``bits: [32.0]`` would
# pass the schema and fail inside a training job), so "integer" means a Python int.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing a key given twice in one mapping (the plain loader
    keeps the last value without a word)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the base constructor says so
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {first})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_config_file(path: str | Path) -> dict:
    """The mapping in a YAML (or JSON) config file, read strictly: a key given twice in
    one mapping (at any level), a tab in the indentation or any other syntax error stops
    with one line naming the file, the line and the key or the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RshashError(f"config file {path}: cannot be read ({err})") from None
    try:
        data = json.loads(text)  # Snakemake reads a config file as JSON first
    except ValueError:
        data = None
    else:
        # only for duplicate keys and their lines: valid JSON holds no tab inside a
        # string, and outside one a space reads the same
        text = text.replace("\t", " ")
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
        data = loaded if data is None else data
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        if mark is None:
            raise RshashError(f"config file {path}: not valid YAML ({err.problem})") from None
        problem = err.problem or err.context or "not valid YAML"
        lines = text.splitlines()
        if "\t" in problem or (mark.line < len(lines) and "\t" in lines[mark.line]):
            problem = (
                problem.replace("character '\\t'", "a tab") + " (YAML indents with spaces only)"
            )
        raise RshashError(f"config file {path}, line {mark.line + 1}: {problem}") from None
    except yaml.YAMLError as err:
        raise RshashError(f"config file {path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RshashError(f"config file {path}: expected a mapping of keys at the top level")
    return data


def check_config_files(paths) -> None:
    """:func:`load_config_file` on each of ``paths`` (those that exist), in order."""
    for path in paths:
        if Path(path).is_file():
            load_config_file(path)


@functools.lru_cache(maxsize=4)
def _validator(schema_path: str, mtime_ns: int):
    """The schema's validator, parsed once per schema file version and completed from
    the ranking registry (:func:`with_rankings`)."""
    return _Validator(with_rankings(yaml.safe_load(Path(schema_path).read_text())))


def with_rankings(schema: dict) -> dict:
    """``schema`` with the registered rankings (rshash.rankings.RANKINGS) filled in, the
    one list of them: the names a ``$defs.ranking`` may take and one ``ranking_params``
    entry per ranking (a mapping; its values are checked against the ranking's declared
    parameters by :func:`check_ranking_params`)."""
    from rshash.rankings import RANKINGS

    schema["$defs"]["ranking"]["enum"] = list(RANKINGS)
    schema["properties"]["ranking_params"]["properties"] = {
        name: {"type": "object", "description": f"the parameters of ranking {name}"}
        for name in RANKINGS
    }
    return schema


def validate(config: dict, schema_path: str | Path) -> None:
    """Raise RshashError naming the offending key when ``config`` breaks the schema."""
    schema_path = Path(schema_path)
    validator = _validator(str(schema_path), schema_path.stat().st_mtime_ns)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        message = error.message
        if error.validator == "propertyNames":
            message = f"invalid name: {message}"
        elif error.validator == "additionalProperties":
            message = f"unknown key: {message}"
        elif error.validator == "pattern" and "description" in error.schema:
            # the description says in words what the pattern (a regex) allows
            message = f"{error.instance!r} is not {error.schema['description'].split('. ')[0]}"
        raise RshashError(f"config: {_where(error.absolute_path)}: {message}")
    check_references(config)


EXTRACTION_KEYS = ("batch_size", "num_workers", "device", "precision")


def extraction_settings(config: dict, backbone: str | None = None) -> dict:
    """``batch_size``, ``num_workers`` and ``device`` for extracting ``backbone``'s
    features: what the config states (the backbone's entry; the top-level ``device``),
    else the defaults of :func:`rshash.features.extract`, the one home of each.
    Without a backbone, the device alone."""
    import inspect

    from rshash.features import extract

    defaults = {
        k: p.default
        for k, p in inspect.signature(extract).parameters.items()
        if k in EXTRACTION_KEYS
    }
    device = {"device": config.get("device", defaults["device"])}
    if backbone is None:
        return device
    entry = config["backbones"][backbone]
    return {
        "batch_size": entry.get("batch_size", defaults["batch_size"]),
        "num_workers": entry.get("num_workers", defaults["num_workers"]),
        "precision": entry.get("precision", defaults["precision"]),
        **device,
    }


# The protocol fields evaluation reads (rshash.evaluate.map_cutoffs_of; declared here, as
# the workflow imports this module at parse time and rshash.evaluate compiles kernels).
EVALUATION_KEYS = ("map_cutoffs",)


def protocol_fields(config: dict, protocol: str, keys) -> dict:
    """The fields ``keys`` of protocol ``protocol`` that it states: what a step that reads
    only those depends on (rshash.data.splits.SPLIT_KEYS, EVALUATION_KEYS)."""
    entry = config["protocols"][protocol]
    return {k: entry[k] for k in keys if k in entry}


def variant_params(config: dict, variant: str) -> dict:
    """The parameters of ``variant`` that differ from its method's defaults, as the config
    gives them: what its cells depend on, so stating a default (``itq: {params: {n_iter:
    50}}``) changes nothing and reruns nothing."""
    from rshash.methods import get_method

    entry = config["variants"][variant]
    given = dict(entry.get("params") or {})
    params = get_method(entry["method"]).Params
    values = params.resolve(given, f"config: variants.{variant}.params")
    defaults = params.resolve({}, f"config: variants.{variant}.params")
    return {k: v for k, v in given.items() if getattr(values, k) != getattr(defaults, k)}


def backbone_source(config: dict, backbone: str) -> dict:
    """The keys of a backbone's config entry that define its features (timm, open_clip,
    pretrained, weights, input_size): what a job passes to ``rshash extract --source``
    (a change of one reruns the extraction); {} for a registered name."""
    from rshash.backbones import ENTRY_KEYS

    entry = config["backbones"][backbone]
    return {k: entry[k] for k in ENTRY_KEYS if k in entry}


def check_backbones(config: dict) -> None:
    """Every backbone entry is a registered name or names its source (no torch, no
    timm, no file access: weights are checked when a job needs them)."""
    from rshash.backbones import BACKBONES, SOURCES, resolve

    for name, entry in config["backbones"].items():
        if not any(k in entry for k in SOURCES) and name not in BACKBONES:
            raise RshashError(
                f"config: backbones: '{name}' is not a registered backbone (registered: "
                f"{', '.join(BACKBONES)}); a timm or OpenCLIP model names its source: "
                f"'{name}: {{timm: MODEL}}' or '{name}: {{open_clip: CONFIG, pretrained: TAG}}'"
            )
        try:
            resolve(name, entry)
        except RshashError as exc:
            raise RshashError(f"config: backbones.{name}: {exc}") from None


PART_KEYS = ("protocols", "methods", "bits", "method_bits", "seeds", "rankings")


def experiment_parts(config: dict, experiment: str) -> list[tuple[str, dict]]:
    """(config path, selection) of each part of an experiment: its ``parts``, each
    inheriting the experiment's keys, or the experiment itself."""
    exp = config["experiments"][experiment]
    base = {k: v for k, v in exp.items() if k != "parts"}
    if "parts" not in exp:
        return [(f"experiments.{experiment}", base)]
    parts = []
    for i, part in enumerate(exp["parts"]):
        where = f"experiments.{experiment}.parts[{i}]"
        merged = {**base, **part}
        missing = [k for k in ("protocols", "methods", "bits") if k not in merged]
        if missing:
            raise RshashError(
                f"config: {where}: no {', '.join(missing)} (give them in the "
                "part or in the experiment)"
            )
        parts.append((where, merged))
    return parts


def experiment_methods(config: dict, experiment: str) -> list[str]:
    return list(
        dict.fromkeys(m for _, p in experiment_parts(config, experiment) for m in p["methods"])
    )


def check_references(config: dict) -> None:
    """Every name an experiment uses must be defined in its section, every variant's
    method registered and its parameters valid for it (names, types, ranges: the
    method's declared ``Params``), and every ranking supported by the variants it is
    asked of (a ranking that reads a class head's columns needs a head, which a
    method's parameters can remove)."""
    from rshash.methods import REGISTRY, get_method
    from rshash.metrics import METRICS, is_metric
    from rshash.rankings import RANKINGS

    check_backbones(config)
    check_ranking_params(config)
    check_archives(config)
    for name, protocol in config["protocols"].items():
        for i, metric in enumerate(protocol.get("report_metrics", [])):
            if not is_metric(metric):
                known = ", ".join(m.name for m in METRICS.values() if not m.curve)
                raise RshashError(
                    f"config: protocols.{name}.report_metrics[{i}]: '{metric}' is not a "
                    f"registered metric (known: {known})"
                )
    resolved = {}
    for name, variant in config["variants"].items():
        if variant["method"] not in REGISTRY:
            raise RshashError(
                f"config: variants.{name}.method: '{variant['method']}' is not a "
                f"hashing method (known: {', '.join(sorted(REGISTRY))})"
            )
        method = get_method(variant["method"])
        resolved[name] = (
            method,
            method.Params.resolve(variant.get("params"), f"config: variants.{name}.params"),
        )
    sections = {
        "datasets": "datasets",
        "backbones": "backbones",
        "protocols": "protocols",
        "methods": "variants",
    }
    for name, exp in config["experiments"].items():
        for where, part in experiment_parts(config, name):
            where = where if "parts" in exp else f"experiments.{name}"
            for key, section in sections.items():
                prefix = f"experiments.{name}" if key in ("datasets", "backbones") else where
                for i, value in enumerate(part[key]):
                    if value not in config[section]:
                        raise RshashError(
                            f"config: {prefix}.{key}[{i}]: '{value}' is not defined under "
                            f"'{section}' (defined: {', '.join(sorted(config[section]))})"
                        )
            for protocol in part["protocols"]:
                extra = set(part.get("seeds", [])) - set(config["protocols"][protocol]["seeds"])
                if extra:
                    raise RshashError(
                        f"config: {where}.seeds: {sorted(extra)} not among the seeds of "
                        f"protocol '{protocol}' {config['protocols'][protocol]['seeds']}"
                    )
            rankings = part.get("rankings")
            for key in ("rankings", "method_bits"):
                if isinstance(part.get(key), dict):
                    for method in part[key]:
                        if method not in part["methods"]:
                            raise RshashError(
                                f"config: {where}.{key}.{method}: '{method}' is "
                                "not among the experiment's methods"
                            )
            for method in part["methods"]:
                info, params = resolved[method]
                supported = info.rankings(params)
                at = (
                    f"{where}.rankings.{method}"
                    if isinstance(rankings, dict)
                    else f"{where}.rankings"
                )
                for ranking in _part_rankings(config, part, method):
                    has_head, removed_by = info.head(params)
                    if RANKINGS[ranking].class_head and not has_head and removed_by:
                        raise RshashError(
                            f"config: {where}: {method} ({removed_by}) has no class "
                            f"head; {ranking} needs one"
                        )
                    if ranking not in supported:
                        raise RshashError(
                            f"config: {at}: method '{method}' does not support ranking "
                            f"'{ranking}' (it supports: {', '.join(supported)})"
                        )
        methods = experiment_methods(config, name)
        reference = exp.get("reference")
        if reference is not None and reference["method"] not in methods:
            raise RshashError(
                f"config: experiments.{name}.reference.method: "
                f"'{reference['method']}' is not among the experiment's methods"
            )
        for i, comp in enumerate(exp.get("comparisons", [])):
            for key in ("method", "reference"):
                if comp[key] not in methods:
                    raise RshashError(
                        f"config: experiments.{name}.comparisons[{i}].{key}: "
                        f"'{comp[key]}' is not among the experiment's methods"
                    )
            for key, method in (
                ("ranking", comp["method"]),
                ("reference_ranking", comp["reference"]),
            ):
                if key in comp and comp[key] not in experiment_rankings(config, name, method):
                    raise RshashError(
                        f"config: experiments.{name}.comparisons[{i}].{key}: "
                        f"'{method}' is not ranked '{comp[key]}' in this "
                        "experiment"
                    )


def check_ranking_params(config: dict) -> None:
    """Each ``ranking_params`` entry against its ranking's declared parameters (names,
    types, ranges), one line naming the key."""
    from rshash.rankings import RANKINGS

    for name, given in config.get("ranking_params", {}).items():
        RANKINGS[name].resolve(given, f"config: ranking_params.{name}")


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
        return (
            f"{self.dataset}/{self.backbone}/{self.protocol}/{self.method}/{self.bits}/"
            f"split{self.seed}"
        )

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def experiment_cells(config: dict, experiment: str) -> list[Cell]:
    """Every cell of an experiment (the union of its parts, each cell once)."""
    if experiment not in config["experiments"]:
        raise RshashError(
            f"unknown experiment '{experiment}'; defined: "
            f"{', '.join(sorted(config['experiments']))}"
        )
    cells = []
    for _, part in experiment_parts(config, experiment):
        for dataset, backbone, protocol, method in itertools.product(
            part["datasets"], part["backbones"], part["protocols"], part["methods"]
        ):
            seeds = part.get("seeds") or config["protocols"][protocol]["seeds"]
            bit_lengths = (
                [0]
                if _info(config, method).real_valued
                else part.get("method_bits", {}).get(method, part["bits"])
            )
            cells += [
                Cell(dataset, backbone, protocol, method, bits, s)
                for bits in bit_lengths
                for s in seeds
            ]
    return list(dict.fromkeys(cells))


def _info(config: dict, variant: str):
    from rshash.methods import get_method

    return get_method(config["variants"][variant]["method"])


def _part_rankings(config: dict, part: dict, method: str) -> list[str]:
    rankings = part.get("rankings")
    if isinstance(rankings, dict):
        rankings = rankings.get(method)
    return list(rankings or _info(config, method).default_rankings())


def experiment_rankings(config: dict, experiment: str, method: str) -> list[str]:
    """The rankings a variant is evaluated with in an experiment: the ``rankings`` of
    the (first) part holding it (a list for every method, or a mapping per method),
    else the method's default (``hamming``; ``euclidean`` for real-valued ``raw``)."""
    for _, part in experiment_parts(config, experiment):
        if method in part["methods"]:
            return _part_rankings(config, part, method)
    return list(_info(config, method).default_rankings())


ARCHIVE_HASH = {"method": "itq", "bits": 64, "seed": 0, "params": {}}


def archive_hash(config: dict, name: str) -> dict:
    """An archive's hash settings with their defaults: ``model`` (a trained model file)
    or method, bits, seed, params (the method's, checked), fit_scenes and sample."""
    entry = dict(config["archives"][name].get("hash") or {})
    if "model" in entry:
        extra = sorted(set(entry) - {"model"})
        if extra:
            raise RshashError(
                f"config: archives.{name}.hash: a trained model takes no {', '.join(extra)}"
            )
        return entry
    return {**ARCHIVE_HASH, **entry}


def check_archives(config: dict) -> None:
    """Each archive's backbone is configured and its own hash is an unsupervised method
    on pooled features with valid parameters (its supervised or trained counterpart is
    a model file of the pipeline: ``hash: {model: ...}``)."""
    from rshash.methods import REGISTRY, get_method

    for name, entry in (config.get("archives") or {}).items():
        backbone = entry.get("backbone", "efficientnet_lite0")
        if backbone not in config["backbones"]:
            raise RshashError(f"config: archives.{name}.backbone: '{backbone}' is not in backbones")
        hash_ = archive_hash(config, name)
        if "model" in hash_:
            continue
        where = f"config: archives.{name}.hash"
        if hash_["method"] not in REGISTRY:
            raise RshashError(f"{where}.method: '{hash_['method']}' is not a hashing method")
        method = get_method(hash_["method"])
        if method.supervised or method.inputs != ("features",):
            raise RshashError(
                f"{where}.method: '{hash_['method']}' needs labels or other inputs; an "
                "archive's own hash is unsupervised on pooled features (e.g. itq), or give "
                "a trained model file (hash: {model: results/models/...npz})"
            )
        method.Params.resolve(hash_["params"], f"{where}.params")

"""An OpenCLIP image tower as a frozen backbone: ``{open_clip: CONFIG, pretrained: TAG}``
or ``{open_clip: CONFIG, weights: FILE}``.

CONFIG is an OpenCLIP model config name (``ViT-B-32``, ``RN50``, ...; the JSON
files of open_clip/model_configs) or the path of a model-config JSON file of one's
own (registered with ``open_clip.add_model_config`` before the model is built; its
name, for the tags, is the file's stem, as in OpenCLIP). TAG is one of OpenCLIP's
pretrained tags of CONFIG (``open_clip.list_pretrained_tags_by_model``, e.g.
``laion2b_s34b_b79k``): its weights are read from the Hugging Face hub cache OpenCLIP
itself downloads into (``models--ORG--NAME/snapshots/<revision>/FILE``;
:func:`rshash.backbones.spec.hf_hub_cache` honours HF_HOME and HF_HUB_CACHE), never
downloaded. FILE is the model's full state dict (the CLIP checkpoint, text tower
included, as torch.save or safetensors writes it, e.g. RemoteCLIP-ViT-B-32.pt or a
GeoRSCLIP checkpoint). Needs the optional extra ``pip install 'rshash[open_clip]'``.

Preprocessing is the model's own (open_clip.get_model_preprocess_cfg: size,
interpolation, resize mode, mean/std, with a tag's own as OpenCLIP merges them;
OpenCLIP's eval transform resizes the shortest side to the size and crops the centre).
Features, through the tower's ``forward_intermediates``:

- pooled: the image embedding (``encode_image``, projected, not L2-normalized);
- three stages: blocks at a third, two thirds and the end of the tower (a ViT's
  patch tokens as a grid, the final norm applied; a ResNet's or timm tower's stages);
- the last maps (DAH): the third stage, average-pooled to at most 7 x 7.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import sys
from functools import cache, partial
from pathlib import Path

from rshash import RshashError
from rshash.backbones.spec import (
    BackboneSpec,
    Preprocess,
    hf_repo_folder,
    hf_snapshot_file,
    library_spec,
    not_in_cache,
    weights_file,
)

MAP_GRID = 7
EXTRA = "pip install 'rshash[open_clip]'"
# open_clip.constants.HF_WEIGHTS_NAME: the file of a tag whose hf_hub names a repository
# without a file name ("org/name/")
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"


def _package() -> Path:
    """open_clip's package folder (found, not imported)."""
    found = importlib.util.find_spec("open_clip")
    if found is None or not found.submodule_search_locations:
        raise RshashError(f"OpenCLIP (open_clip_torch) is not installed: {EXTRA}")
    return Path(found.submodule_search_locations[0])


# OpenCLIP's tag table is the `_PRETRAINED` dict of open_clip/pretrained.py, built from
# literals and small helper calls (`_pcfg(hf_hub=..., quick_gelu=True)`). Importing the
# module imports torch (pretrained.py imports safetensors.torch; open_clip/__init__ the
# models): seconds on every dry run. So the file is read and its top-level statements
# run without its imports: the standard library's are kept, the relative ones
# (.constants, .version: plain literals) are read as literals, the third-party ones and
# the try/except ImportError guards around them are left out (the table does not use
# them). This reads the table of the open_clip that is installed, the one that loads
# the weights, rather than a copy generated from one version that would drift from any
# other (a tag added or moved in another release); tests/test_open_clip_tags.py checks
# that it equals open_clip's own get_pretrained_cfg for every (model, tag), and that a
# tag's file is the one OpenCLIP's download resolves it to. A release whose file no
# longer reads this way stops with a one-line message naming `weights:` as the way out.
def _literals(path: Path) -> dict:
    """The NAME = <literal> assignments of a module file."""
    out = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            out.update({t.id: value for t in node.targets})
    return out


def _is_stdlib(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        names = [node.module] if node.level == 0 and node.module else []
    else:
        names = [a.name for a in node.names]
    return bool(names) and all(n.split(".")[0] in sys.stdlib_module_names for n in names)


@cache
def _tag_table(path: str, mtime_ns: int) -> dict[str, dict[str, dict]]:
    try:
        return _read_tag_table(Path(path))
    except Exception as exc:
        raise RshashError(
            f"cannot read OpenCLIP's pretrained tags from {path} ({type(exc).__name__}: "
            f"{exc}); give the checkpoint file as `weights:` instead"
        ) from None


def _read_tag_table(file: Path) -> dict[str, dict[str, dict]]:
    namespace: dict = {"__name__": "rshash_open_clip_pretrained"}
    body = []
    for node in ast.parse(file.read_text(encoding="utf-8"), str(file)).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            values = _literals(file.parent / f"{node.module}.py")  # absent: a NameError
            namespace.update(
                {a.asname or a.name: values[a.name] for a in node.names if a.name in values}
            )
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if _is_stdlib(node):
                body.append(node)
        elif isinstance(node, ast.Try) and any(
            isinstance(n, (ast.Import, ast.ImportFrom)) for n in node.body
        ):
            continue  # an optional import and its fallback
        else:
            body.append(node)
    exec(compile(ast.Module(body, type_ignores=[]), str(file), "exec"), namespace)
    return namespace["_PRETRAINED"]


def pretrained_tags() -> dict[str, dict[str, dict]]:
    """OpenCLIP's pretrained configs, model name -> tag -> config (url, hf_hub,
    preprocessing, quick_gelu), read from the installed open_clip without importing it."""
    file = _package() / "pretrained.py"
    return _tag_table(str(file), file.stat().st_mtime_ns)


def _clean_tag(tag: str) -> str:
    return tag.lower().replace("-", "_")  # open_clip.pretrained._clean_tag


def arch_name(config: str) -> str:
    """The name OpenCLIP registers a config under: a JSON file's stem, else the name."""
    return Path(config).stem if config.endswith(".json") else config


def tag_config(name: str, config: str, tag: str) -> dict:
    """OpenCLIP's pretrained config of ``tag`` for model ``config`` (no torch import);
    RshashError naming the model's tags when it has no such tag."""
    arch = arch_name(config)
    tags = pretrained_tags().get(arch)
    if not tags:
        raise RshashError(
            f"backbone {name!r}: OpenCLIP model {arch!r} has no pretrained tags "
            "(open_clip.list_pretrained() lists the models that have); give its "
            "checkpoint file as `weights:`"
        )
    cfg = tags.get(_clean_tag(tag))
    if cfg is None:
        raise RshashError(
            f"backbone {name!r}: OpenCLIP model {arch!r} has no pretrained tag {tag!r}; "
            f"its tags: {', '.join(tags)} (a checkpoint file is `weights:`)"
        )
    return cfg


def hub_files(cfg: dict) -> tuple[str, tuple[str, ...]]:
    """(repository id, its files OpenCLIP tries, in order) of a tag's ``hf_hub``: the
    file named (``org/name/file``, else open_clip_pytorch_model.bin) after its
    safetensors alternative, as open_clip.pretrained.download_pretrained_from_hf does."""
    repo_id, filename = os.path.split(cfg["hf_hub"])
    filename = filename or HF_WEIGHTS_NAME
    if filename == HF_WEIGHTS_NAME:
        safe = ("open_clip_model.safetensors",)  # open_clip.constants.HF_SAFE_WEIGHTS_NAME
    elif filename.endswith((".bin", ".pth")):
        safe = (filename[:-4] + ".safetensors",)
    else:
        safe = ()
    return repo_id, (*safe, filename)


def fetch_command(config: str, tag: str) -> str:
    """The command that downloads a tag's weights into the cache rshash reads."""
    return (
        'python -c "import open_clip; open_clip.download_pretrained('
        f"open_clip.get_pretrained_cfg('{arch_name(config)}', '{tag}'))\""
    )


def _model_config(config: str) -> dict | None:
    """The model config JSON of a name or file (None when there is none to read)."""
    file = Path(config) if config.endswith(".json") else _package() / f"model_configs/{config}.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _tag_weights(name: str, config: str, tag: str) -> Path:
    """The weights file of a pretrained tag in the Hugging Face cache (no torch import)."""
    arch = arch_name(config)
    cfg = tag_config(name, config, tag)
    model_cfg = _model_config(config) or {}
    if cfg.get("quick_gelu", False) and not model_cfg.get("quick_gelu", False):
        # OpenCLIP only warns, and builds GELU where the weights were trained with QuickGELU
        fix = (
            f'set "quick_gelu": true in {config}'
            if config.endswith(".json")
            else f"use `open_clip: {arch}-quickgelu`"
        )
        raise RshashError(
            f"backbone {name!r}: OpenCLIP tag {tag!r} was trained with QuickGELU, which "
            f"model {arch!r} does not use: {fix}"
        )
    if not cfg.get("hf_hub"):
        # none in open_clip 3.3.0: every tag is on the hub (url tags have an hf_hub too,
        # which OpenCLIP prefers)
        raise RshashError(
            f"backbone {name!r}: OpenCLIP tag {tag!r} of {arch!r} is a URL download "
            f"({cfg.get('url')}), not a Hugging Face hub file; download it once and give "
            "the file as `weights:`"
        )
    repo_id, names = hub_files(cfg)
    folder = hf_repo_folder(repo_id)
    path = hf_snapshot_file(folder, names) if folder.is_dir() else None
    if path is None:
        ref = folder / "refs" / "main"
        revision = ref.read_text().strip() if ref.is_file() else "<revision>"
        expected = f"{folder}/snapshots/{revision}/{names[0]}"
        if len(names) > 1:
            expected += f" (or {' or '.join(names[1:])})"
        what = f"OpenCLIP model {arch!r} tag {tag!r}"
        raise not_in_cache(name, what, expected, fetch_command(config, tag))
    return path


def _locate(name: str, config: str, weights: str | None, tag: str | None) -> Path:
    if importlib.util.find_spec("open_clip") is None:  # finds, does not import
        raise RshashError(
            f"backbone {name!r} needs OpenCLIP (open_clip_torch), which is not installed: {EXTRA}"
        )
    if config.endswith(".json") and not Path(config).is_file():
        raise RshashError(f"backbone {name!r}: OpenCLIP model config {config} does not exist")
    _check_text_tower(name, config)
    if tag is not None:
        return _tag_weights(name, config, tag)
    if weights is None:
        raise RshashError(
            f"backbone {name!r}: an OpenCLIP entry needs `pretrained:`, a tag of the model "
            f"(open_clip.list_pretrained_tags_by_model('{arch_name(config)}')), or "
            "`weights:`, a checkpoint file"
        )
    return weights_file(weights)


def _check_text_tower(name: str, config: str) -> None:
    """A model whose text tower is a Hugging Face transformer (roberta, mt5, nllb, ...)
    reads that transformer's config.json when it is built (the checkpoint has the
    weights): it must be in the Hugging Face cache, since the job runs offline."""
    repo = ((_model_config(config) or {}).get("text_cfg") or {}).get("hf_model_name")
    if not repo:
        return
    folder = hf_repo_folder(repo)
    if folder.is_dir() and hf_snapshot_file(folder, ("config.json",)) is not None:
        return
    raise RshashError(
        f"backbone {name!r}: OpenCLIP model {arch_name(config)!r} builds its text tower "
        f"from the Hugging Face model {repo!r}, whose config.json is not in the cache "
        f"({folder}/snapshots/<revision>/config.json); rshash never downloads: fill it "
        'once, on a machine with internet, with python -c "from huggingface_hub import '
        f"hf_hub_download; hf_hub_download('{repo}', 'config.json')\""
    )


def spec(
    name: str,
    config: str,
    weights: str | None,
    input_size: int | None,
    pretrained: str | None = None,
) -> BackboneSpec:
    """The spec of entry ``name: {open_clip: config, pretrained: tag}`` or ``{open_clip:
    config, weights: file}`` (no torch import)."""
    return library_spec(
        name,
        "open_clip",
        config,
        partial(_locate, name, config, weights, pretrained),
        input_size=input_size or 0,
        map_grid=MAP_GRID,
        opener=partial(_open, name, config, input_size, pretrained),
    )


def model_name(config: str) -> str:
    """The registered name of a config (a JSON file's stem), registering the file."""
    if not config.endswith(".json"):
        return config
    import open_clip

    open_clip.add_model_config(config)
    return Path(config).stem


def _open(name: str, config: str, input_size: int | None, tag: str | None, path: Path):
    # a Hugging Face text tower reads its config from the cache (_check_text_tower), never
    # from the network: set before huggingface_hub and transformers are imported
    os.environ["HF_HUB_OFFLINE"] = "1"
    import open_clip

    arch = model_name(config)
    # a tag's weights load as a file (the one OpenCLIP's download of the tag left in the
    # cache, where _locate found it): open_clip.create_model(arch, pretrained=tag) would
    # go to the network for an absent file. Its preprocessing (mean/std, interpolation,
    # resize mode) is merged as OpenCLIP merges a tag's, from OpenCLIP's own table.
    forced = None
    if tag is not None:
        forced = {k: v for k, v in open_clip.get_pretrained_cfg(arch, tag).items() if k != "size"}
    try:
        clip = open_clip.create_model(
            arch,
            pretrained=str(path),
            force_image_size=input_size,
            force_preprocess_cfg=forced,
            device="cpu",
        )
    except RuntimeError as exc:
        raise RshashError(
            f"backbone {name!r}: weights {path} do not fit OpenCLIP model {arch!r}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    pp = open_clip.get_model_preprocess_cfg(clip)
    size = pp["size"] if isinstance(pp["size"], int) else pp["size"][-1]
    mode = pp.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash"):
        raise RshashError(f"backbone {name!r}: OpenCLIP resize mode {mode!r} is not supported")
    visual = clip.visual
    depth = _depth(visual)
    indices = sorted({max(0, round(depth * k / 3) - 1) for k in (1, 2, 3)})
    options = {"indices": indices, "output_fmt": "NCHW"}
    if "normalize_intermediates" in inspect.signature(visual.forward_intermediates).parameters:
        options["normalize_intermediates"] = True

    from rshash.backbones.staged import StagedFeatures

    class OpenClipFeatures(StagedFeatures):
        """The image embedding; the stages through forward_intermediates."""

        def pooled(self, x):
            return self.net(x)

        def staged(self, x):
            out = self.net.forward_intermediates(x, **options)
            return out["image_features"], out["image_intermediates"]

    done = library_spec(
        name,
        "open_clip",
        config,
        lambda: path,
        input_size=size,
        mean=tuple(float(v) for v in pp["mean"]),
        std=tuple(float(v) for v in pp["std"]),
        feature_dim=int(getattr(visual, "output_dim", 0)),
        preprocess=Preprocess(
            size,
            size,
            pp.get("interpolation", "bicubic"),
            "squash" if mode == "squash" else "center",
        ),
        map_grid=MAP_GRID,
    )
    return done, OpenClipFeatures(visual)


def _depth(visual) -> int:
    """How many blocks (or stages) the tower's forward_intermediates indexes."""
    if hasattr(visual, "transformer"):
        return len(visual.transformer.resblocks)
    if hasattr(visual, "layer4"):  # ModifiedResNet: stem + 4 layers
        return 5
    info = getattr(getattr(visual, "trunk", None), "feature_info", None)
    return len(info) if info else 3

"""The workflow's view of its inputs: a real dataset's manifest follows the content
of its folder (and nothing else), no config string reaches a shell unquoted, the
default target builds the demo, and an absent dataset with a URL is fetched."""

import http.server
import io
import json
import os
import shlex
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

pytestmark = pytest.mark.slow

NOTHING = "Nothing to be done"
# Shell metacharacters: each would run `touch pwned` (or break the command) unquoted.
NASTY = [
    "$(touch pwned)",
    "`touch pwned`",
    "; touch pwned",
    "& touch pwned &",
    "| touch pwned",
    "' ; touch pwned ; '",
    '" ; touch pwned ; "',
    "a b  c",
    "{x}",
    "&touch",
]
# All of them in one value, for the checks that run snakemake (each run costs seconds).
ALL = "a $(touch pwned) `touch pwned`; touch pwned & b | touch pwned 'q' \"d\" {x} \\ end"


def _images(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), np.uint8)).save(
                root / cls / f"{cls}{i:02d}.png"
            )
    return root


@pytest.fixture
def write_config(small_experiment):
    """``write_config(repo, work, datasets, data_dir=None, **changes) -> cfg``: the shipped
    config with ``datasets`` added, experiment ``mine`` (lsh and raw on dataset ``mine``)
    and top-level ``changes``, written to ``work/config.yaml``."""

    def write(repo, work: Path, datasets: dict, data_dir=None, **changes) -> dict:
        cfg = yaml.safe_load((repo / "config.yaml").read_text())
        if data_dir is None:
            cfg.pop("data_dir")  # the default, data/ in the working directory
        else:
            cfg["data_dir"] = str(data_dir)
        cfg["datasets"].update(datasets)
        cfg["experiments"]["mine"] = small_experiment("mine", ["lsh", "raw"])
        for key, value in changes.items():
            cfg[key] = value
        (work / "config.yaml").write_text(yaml.safe_dump(cfg))
        return cfg

    return write


@pytest.fixture
def dry(snakemake, planned):
    """``dry(repo, work, *targets, check=True) -> (CompletedProcess, {rule: count})``."""

    def run(repo, work, *targets, check=True):
        out = snakemake(repo, work, "-n", *targets, check=check)
        return out, planned(out.stdout + out.stderr)

    return run


SPLIT = "results/splits/mine/dmch_60_40/split0.parquet"


def test_the_manifest_follows_the_images_and_nothing_else(
    repo, tmp_path, snakemake, write_config, dry
):
    images = _images(tmp_path / "data" / "Mine", {"beach": 5, "forest": 5})
    write_config(repo, tmp_path, {"mine": {"folder": "Mine"}}, data_dir=tmp_path / "data")
    snakemake(repo, tmp_path, SPLIT)
    out, jobs = dry(repo, tmp_path, SPLIT)
    assert NOTHING in out.stdout + out.stderr, jobs  # touching nothing plans nothing

    # what a file browser, an editor or a user's notes leave: still nothing to do
    (images / ".DS_Store").write_bytes(b"\0")
    (images / "README.md").write_text("my tiles")
    (images / "beach" / "Thumbs.db").write_bytes(b"\0")
    (images / "forest" / "._forest00.png").write_bytes(b"\0")
    (images / "forest" / "gone.png").symlink_to(images / "nowhere.png")
    out, jobs = dry(repo, tmp_path, SPLIT)
    assert NOTHING in out.stdout + out.stderr, jobs

    def changed(change):
        change()
        out, jobs = dry(repo, tmp_path, SPLIT)
        assert jobs == {"build_manifest": 1, "make_split": 1}, out.stdout[-2000:]
        assert "Params have changed" in out.stdout + out.stderr
        snakemake(repo, tmp_path, SPLIT)

    new = images / "forest" / "forest50.png"
    changed(lambda: Image.new("RGB", (24, 24), (9, 9, 9)).save(new))  # an added image
    changed(lambda: (images / "beach" / "beach00.png").unlink())  # a removed one
    changed(lambda: Image.new("RGB", (24, 24), (1, 2, 3)).save(new))  # a replaced one
    changed(lambda: _images(images, {"river": 4}, seed=1))  # a new class folder
    # two images of equal size and mtime, then exchanged with renames (mv): rerun
    pair = [images / "beach" / "pair.bmp", images / "forest" / "pair.bmp"]
    when = (1_600_000_000_000_000_000,) * 2

    def add_pair():
        for p, colour in zip(pair, [(200, 180, 90), (20, 90, 30)]):
            Image.new("RGB", (24, 24), colour).save(p)
            os.utime(p, ns=when)

    def swap_pair():
        tmp = images / "pair.tmp"
        pair[0].rename(tmp)
        pair[1].rename(pair[0])
        tmp.rename(pair[1])
        for p in pair:
            os.utime(p, ns=when)

    changed(add_pair)
    changed(swap_pair)
    out, jobs = dry(repo, tmp_path, SPLIT)
    assert NOTHING in out.stdout + out.stderr, jobs


def _commands(output: str) -> list[list[str]]:
    """The shell commands a dry run with --printshellcmds prints, split as bash would."""
    commands = []
    for line in output.splitlines():
        line = line.removeprefix("Shell command: ")
        if line.startswith("rshash "):
            commands.append(shlex.split(line)[:-3])  # less "> {log} 2>&1"
    return commands


def _arg(commands, verb, flag) -> list[str]:
    return [c[c.index(flag) + 1] for c in commands if c[1] == verb and flag in c]


def test_config_strings_arrive_intact_in_every_command(
    repo, tmp_path, snakemake, write_config, dry, nasty=ALL
):
    """Every config string that ends up in a command: the folder, data_dir, a protocol's
    source and a variant's parameters reach the command as one intact argument. (A
    parameter is checked against its method's declaration, and none takes free text: the
    parameters' JSON, quotes and braces, is what must arrive intact.)"""
    data = tmp_path / f"da ta {nasty}"
    folder = f"My {nasty} tiles"
    _images(data / folder, {"beach": 5, "forest": 5})
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    protocols = dict(cfg["protocols"])
    protocols["dmch_60_40"] = {**protocols["dmch_60_40"], "source": nasty}
    variants = dict(cfg["variants"])
    variants["milan"] = {"method": "milan", "params": {"sampling": "random"}}
    write_config(
        repo,
        tmp_path,
        {"mine": {"folder": folder}},
        data_dir=data,
        protocols=protocols,
        variants=variants,
    )
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    cfg["experiments"]["mine"]["methods"] = ["lsh", "milan"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out, _ = dry(repo, tmp_path, "--printshellcmds", "results/tables/mine.csv")
    commands = _commands(out.stdout)
    assert _arg(commands, "manifest", "--folder") == [str(data / folder)]
    assert _arg(commands, "manifest", "--data-dir") == [str(data)]
    # a protocol's source reaches only the table (which records it), intact; the manifest
    # and split steps get only the fields they read (tests/test_reruns.py)
    tables = _arg(commands, "table", "--protocols")
    assert tables and all(json.loads(p)["dmch_60_40"]["source"] == nasty for p in tables)
    assert "source" not in json.loads(_arg(commands, "manifest", "--protocols")[0])["dmch_60_40"]
    assert {json.loads(p).get("sampling") for p in _arg(commands, "train", "--params")} == {
        None,
        "random",
    }
    assert all("source" not in json.loads(p) for p in _arg(commands, "split", "--protocol"))

    # and for real: the manifest job reads the folder and runs nothing else
    snakemake(repo, tmp_path, "results/manifests/mine.parquet")
    manifest = __import__("pandas").read_parquet(tmp_path / "results/manifests/mine.parquet")
    assert manifest.path.str.startswith(str(data / folder)).all() and len(manifest) == 10
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()


@pytest.mark.parametrize("key", ["url", "dataset", "experiment", "variant", "protocol", "target"])
@pytest.mark.parametrize("nasty", NASTY)
def test_config_strings_that_cannot_be_quoted_away_are_refused(repo, key, nasty):
    """A URL with shell metacharacters, and names that become wildcards (and so file
    names and plot titles), fail the config check (the one the Snakefile runs) with one
    line naming the key. (`&` alone is legal in a URL's query: it arrives intact.)"""
    from rshash import RshashError
    from rshash.config import validate

    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    bad = f"x{nasty}"
    where = {
        "url": "datasets.mine.url",
        "dataset": "datasets",
        "experiment": "experiments",
        "variant": "variants",
        "protocol": "protocols",
        "target": "targets[0]",
    }[key]
    if key == "url":
        cfg["datasets"]["mine"] = {"folder": "Mine", "url": f"http://x/a.zip{nasty}"}
    elif key == "target":
        cfg["targets"] = [bad]
    else:
        section = {
            "dataset": "datasets",
            "experiment": "experiments",
            "variant": "variants",
            "protocol": "protocols",
        }[key]
        cfg[section][bad] = next(iter(cfg[section].values()))
    schema = repo / "workflow/schemas/config.schema.yaml"
    if key == "url" and nasty == "&touch":
        validate(cfg, schema)  # a legal URL: it reaches the fetch command quoted
        return
    with pytest.raises(RshashError) as err:
        validate(cfg, schema)
    assert str(err.value).startswith(f"config: {where}") and "\n" not in str(err.value)


def test_the_issue_injection_runs_nothing(repo, tmp_path, snakemake, write_config):
    _images(tmp_path / "data" / "Mine", {"a": 3, "b": 3})
    write_config(
        repo,
        tmp_path,
        {"mine": {"folder": "Mine", "url": "http://x/a.zip$(touch pwned)"}},
        data_dir=tmp_path / "data",
    )
    out = snakemake(repo, tmp_path, "results/manifests/mine.parquet", check=False)
    assert out.returncode != 0 and not (tmp_path / "pwned").exists()
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if "datasets.mine.url" in ln]
    assert len(lines) == 1 and "config: datasets.mine.url: " in lines[0]


def test_the_default_target_builds_the_demo_and_prints_no_exception(repo, tmp_path, snakemake, dry):
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    assert cfg["targets"] == ["demo"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out, jobs = dry(repo, tmp_path)
    text = out.stdout + out.stderr
    assert "Exception" not in text
    assert jobs["build_table"] == 1 and jobs["build_cost"] == 1 and jobs["generate_demo"] == 1
    assert "results/tables/demo.csv" in text and "results/tables/demo_cost.csv" in text
    assert "results/tables/aid.csv" not in text

    out, jobs = dry(repo, tmp_path, "results/tables/demo_cost.csv")
    assert "Exception" not in out.stdout + out.stderr and "build_table" not in jobs

    cfg["targets"] = ["demo", "nope"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(repo, tmp_path, "-n", check=False)
    assert out.returncode != 0
    assert "targets: unknown experiment(s) nope" in out.stdout + out.stderr


def test_the_ucmd_table_plans_the_download_without_a_data_directory(
    repo, tmp_path, monkeypatch, snakemake, dry
):
    monkeypatch.delenv("RSHASH_DATA_DIR", raising=False)
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out, jobs = dry(repo, tmp_path, "--printshellcmds", "results/tables/ucmd.csv")
    assert jobs["fetch_dataset"] == 1 and jobs["build_manifest"] == 1
    fetch = [c for c in _commands(out.stdout) if c[1] == "fetch"]
    assert len(fetch) == 1 and "--create-data-dir" in fetch[0]
    assert fetch[0][fetch[0].index("--url") + 1] == (
        "https://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip"
    )
    assert fetch[0][fetch[0].index("--checksums") + 1] == "ucmd.sha256"
    assert not (tmp_path / "data").exists()  # a dry run creates nothing

    # a data directory the user named and that is absent is not created: one message
    cfg["data_dir"] = str(tmp_path / "typo")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(repo, tmp_path, "-n", "results/tables/ucmd.csv", check=False)
    assert out.returncode != 0
    assert f"data directory {tmp_path / 'typo'} does not exist" in out.stdout + out.stderr


def _zip(counts) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(3)
    with zipfile.ZipFile(buf, "w") as zf:
        for cls, n in counts.items():
            for i in range(n):
                png = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), np.uint8)).save(png, "PNG")
                zf.writestr(f"Mine/tiles/{cls}/{cls}{i}.png", png.getvalue())
    return buf.getvalue()


class _Serve(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.archive)))
        self.end_headers()
        self.wfile.write(self.server.archive)

    def log_message(self, *args):
        pass


@pytest.fixture
def archive_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Serve)
    srv.paths, srv.archive = [], _zip({"beach": 5, "forest": 5})
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_an_absent_dataset_is_fetched_into_the_default_data_dir_once(
    repo, tmp_path, archive_server, snakemake, write_config, dry
):
    port = archive_server.server_address[1]
    url = f"http://127.0.0.1:{port}/Mine.zip?a=1&b=2"  # `&`: arrives intact, quoted
    write_config(repo, tmp_path, {"mine": {"folder": "Mine/tiles", "url": url}})
    snakemake(repo, tmp_path, "results/manifests/mine.parquet")
    assert archive_server.paths == ["/Mine.zip?a=1&b=2"]
    assert sorted(p.name for p in (tmp_path / "data" / "Mine" / "tiles").iterdir()) == [
        "beach",
        "forest",
    ]
    out, _ = dry(repo, tmp_path, "results/manifests/mine.parquet")
    assert NOTHING in out.stdout + out.stderr  # the listing recorded is the downloaded one


def test_offline_fetch_names_the_url_and_the_folder(repo, tmp_path, snakemake, write_config):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/Mine.zip"
    write_config(repo, tmp_path, {"mine": {"folder": "Mine/tiles", "url": url}})
    out = snakemake(repo, tmp_path, "results/manifests/mine.parquet", check=False)
    assert out.returncode != 0
    log = (tmp_path / "results/logs/fetch_dataset/mine.log").read_text()
    folder = Path("data") / "Mine" / "tiles"
    assert f"could not download {url}" in log and f"so that {folder}/<class>/" in log
    assert len(log.strip().splitlines()) == 1
    assert not (tmp_path / "results/downloads/mine.json").exists()
    assert not os.path.exists(tmp_path / "data" / "Mine")

"""config.yaml is validated before any job runs, with the offending key named."""

import copy
import subprocess
import sys

import pytest
import yaml

from rshash import RshashError
from rshash.config import experiment_cells, experiment_rankings, validate


@pytest.fixture
def config(repo):
    return yaml.safe_load((repo / "config.yaml").read_text())


@pytest.fixture
def schema(repo):
    return repo / "workflow" / "schemas" / "config.schema.yaml"


def test_shipped_config_is_valid(config, schema):
    validate(config, schema)
    cells = experiment_cells(config, "ucmd")

    def bits_of(method):
        return sorted({c.bits for c in cells if c.method == method})

    # 15 hashing methods at 32 and 64 bits, plus 16 and 48 for dhcnn and dah and 96
    # for dmch, and raw once at 0 bits; each on 3 split seeds
    assert len(cells) == (15 * 2 + 2 + 2 + 1 + 1) * 3
    assert bits_of("raw") == [0] and bits_of("lsh") == [32, 64]
    assert bits_of("dhcnn") == bits_of("dah") == [16, 32, 48, 64]
    assert bits_of("dmch") == [32, 64, 96]
    assert len(experiment_cells(config, "demo")) == 3 * 2 * 2 + 2
    assert experiment_rankings(config, "demo", "raw") == ["euclidean"]
    assert experiment_rankings(config, "demo", "lsh") == ["hamming"]
    protocols = {c.protocol for c in experiment_cells(config, "ucmd_protocols")}
    assert protocols == {
        "dmch_60_40",
        "mhcln_60_40",
        "dhcnn_80_20",
        "dhcnn_50_50",
        "dah_80_20",
        "pbffn_50_50",
    }


BAD = [
    (lambda c: c["experiments"]["demo"].update(bits=[12]), r"experiments\.demo\.bits\[0\]"),
    (lambda c: c["experiments"]["demo"].update(bits=[0]), r"experiments\.demo\.bits\[0\]"),
    (lambda c: c["experiments"]["demo"].update(bits=["32"]), r"experiments\.demo\.bits\[0\]"),
    (
        lambda c: c["experiments"]["demo"].update(methods=["nope"]),
        r"experiments\.demo\.methods\[0\]: 'nope' is not defined under 'variants'",
    ),
    (
        lambda c: c["experiments"]["demo"].update(datasets=["nope"]),
        r"experiments\.demo\.datasets\[0\]: 'nope'",
    ),
    (
        lambda c: c["experiments"]["demo"].update(protocols=["nope"]),
        r"experiments\.demo\.protocols\[0\]: 'nope'",
    ),
    (
        lambda c: c["experiments"]["demo"].update(backbones=["alexnet"]),
        r"experiments\.demo\.backbones\[0\]: 'alexnet'",
    ),
    (lambda c: c["backbones"].update(alexnet={}), r"backbones: .*'alexnet'"),
    (lambda c: c["variants"].update(foo={"method": "dmch2"}), r"variants\.foo\.method"),
    (
        lambda c: c["protocols"]["dmch_60_40"].update(train_fraction=1.5),
        r"protocols\.dmch_60_40\.train_fraction",
    ),
    (
        lambda c: c["protocols"]["dmch_60_40"].update(database="all"),
        r"protocols\.dmch_60_40\.database",
    ),
    (lambda c: c["experiments"]["demo"].update(seeds=[7]), r"experiments\.demo\.seeds"),
    (
        lambda c: c["experiments"]["demo"].update(rankings=["cosine"]),
        r"experiments\.demo\.rankings\[0\]",
    ),
    (lambda c: c.update(skip_unreadable="yes"), r"skip_unreadable"),
    (
        lambda c: c["experiments"]["demo"].update(rankings=["hamming"]),
        r"experiments\.demo\.rankings: method 'raw' does not support ranking 'hamming'",
    ),
    (
        lambda c: c["experiments"]["demo"].update(rankings={"lsh": ["category_weighted"]}),
        r"experiments\.demo\.rankings\.lsh: method 'lsh' does not support ranking "
        r"'category_weighted'",
    ),
    (
        lambda c: c["experiments"]["demo"].update(rankings={"dmch": ["hamming"]}),
        r"experiments\.demo\.rankings\.dmch: 'dmch' is not among",
    ),
    (
        lambda c: c["experiments"]["demo"].update(reference={"method": "ksh"}),
        r"experiments\.demo\.reference\.method",
    ),
    (
        lambda c: c["protocols"]["dmch_60_40"].update(val_fraction=0),
        r"protocols\.dmch_60_40\.val_fraction",
    ),
    (
        lambda c: c["protocols"]["dmch_60_40"].pop("map_cutoffs"),
        r"protocols\.dmch_60_40: 'map_cutoffs' is a required property",
    ),
    (
        lambda c: c.update(ranking_params={"coarse_to_fine": {"top_m": 0}}),
        r"ranking_params\.coarse_to_fine\.top_m",
    ),
    (lambda c: c.update(colour="blue"), r"unknown key.*colour"),
    # variant parameters, against the method's declared Params (names, types, ranges)
    (
        lambda c: c["variants"]["lsh"].update(params={"n_iterr": 3}),
        r"^config: variants\.lsh\.params\.n_iterr: unknown parameter \(it takes none\)$",
    ),
    (
        lambda c: c["variants"]["itq"].update(params={"n_iterr": 3}),
        r"^config: variants\.itq\.params\.n_iterr: unknown parameter \(known: n_iter\)$",
    ),
    (
        lambda c: c["variants"]["itq"].update(params={"params": {"n_iter": 3}}),
        r"^config: variants\.itq\.params\.params: unknown parameter",
    ),
    (
        lambda c: c["variants"]["itq"].update(params={"n_iter": "fifty"}),
        r"^config: variants\.itq\.params\.n_iter: expected an integer in \[0, 100000\], "
        r"got 'fifty'$",
    ),
    (
        lambda c: c["variants"]["itq"].update(params={"n_iter": -3}),
        r"^config: variants\.itq\.params\.n_iter: expected an integer in \[0, 100000\], got -3$",
    ),
    (
        lambda c: c["variants"]["itq"].update(params={"n_iter": 50.0}),
        r"variants\.itq\.params\.n_iter: expected an integer",
    ),
    (
        lambda c: c["variants"]["milan"].update(params={"sampling": "hard"}),
        r"variants\.milan\.params\.sampling: expected one of 'class_pair', 'random'",
    ),
    (
        lambda c: c["variants"]["milan"].update(params={"hidden": [512, 0]}),
        r"variants\.milan\.params\.hidden: expected a list of an integer in \[1, 65536\]",
    ),
    (
        lambda c: c["variants"]["dhcnn"].update(params={"eta": 1.5}),
        r"variants\.dhcnn\.params\.eta: expected a number in \[0, 1\], got 1\.5",
    ),
    (
        lambda c: c["variants"]["dah"].update(params={"spatial_kernel": 2}),
        r"variants\.dah\.params\.spatial_kernel: must be odd",
    ),
    (
        lambda c: c["variants"]["dmch"].update(params={"use_cat": "no"}),
        r"variants\.dmch\.params\.use_cat: expected true or false",
    ),
    (
        lambda c: c["experiments"]["demo"].update(bits=[1099511627776]),
        r"experiments\.demo\.bits\[0\]: 1099511627776 is greater than the maximum of 4096",
    ),
    # a class head that the variant's parameters remove
    (
        lambda c: c["experiments"]["demo"].update(
            methods=["dmch_ncat"], rankings=["category_weighted"]
        ),
        r"^config: experiments\.demo: dmch_ncat \(use_cat: false\) has no class head; "
        r"category_weighted needs one$",
    ),
    (
        lambda c: c["experiments"]["demo"].update(
            methods=["dhcnn_eta1"], rankings=["category_weighted"]
        ),
        r"^config: experiments\.demo: dhcnn_eta1 \(eta: 1\) has no class head",
    ),
]

# Counts a run could never finish, each refused with one line naming the key.
HUGE = [
    (
        lambda c: c["variants"]["itq"].update(params={"n_iter": 1_000_000_000_000}),
        r"^config: variants\.itq\.params\.n_iter: expected an integer in \[0, 100000\], "
        r"got 1000000000000$",
    ),
    (
        lambda c: c["variants"]["milan"].update(params={"max_epochs": 10**9}),
        r"^config: variants\.milan\.params\.max_epochs: expected an integer in \[0, 100000\]",
    ),
    (
        lambda c: c["variants"]["dpsh"].update(params={"batch_size": 10**7}),
        r"^config: variants\.dpsh\.params\.batch_size: expected an integer in \[2, 65536\]",
    ),
    (
        lambda c: c["variants"]["ksh"].update(params={"n_anchors": 10**9}),
        r"^config: variants\.ksh\.params\.n_anchors: expected an integer in \[1, 1000000\]",
    ),
    (
        lambda c: c["variants"]["dmch"].update(params={"images_per_class": 10**9}),
        r"^config: variants\.dmch\.params\.images_per_class: expected an integer in \[2, 1000000\]",
    ),
    (
        lambda c: c["protocols"]["dmch_60_40"].update(seeds=[0, 2**40]),
        r"^config: protocols\.dmch_60_40\.seeds\[1\]: 1099511627776 is greater than the maximum",
    ),
    (
        lambda c: c["backbones"]["efficientnet_lite0"].update(batch_size=10**9),
        r"^config: backbones\.efficientnet_lite0\.batch_size: 1000000000 is greater than",
    ),
    (
        lambda c: c["backbones"]["efficientnet_lite0"].update(num_workers=10**6),
        r"^config: backbones\.efficientnet_lite0\.num_workers: 1000000 is greater than",
    ),
    (
        lambda c: c["protocols"]["dmch_60_40"].update(map_cutoffs=["all", 10**12]),
        r"^config: protocols\.dmch_60_40\.map_cutoffs\[1\]",
    ),
    (
        lambda c: c.update(ranking_params={"coarse_to_fine": {"top_m": 10**12}}),
        r"^config: ranking_params\.coarse_to_fine\.top_m: expected an integer in "
        r"\[1, 1000000\], got 1000000000000",
    ),
    (
        lambda c: c["datasets"]["demo"]["synthetic"].update(per_class=10**9),
        r"^config: datasets\.demo\.synthetic\.per_class: 1000000000 is greater than",
    ),
]


# every count has a maximum, named in one line (checked with BAD, below)


def test_every_integer_method_parameter_is_bounded():
    """No method declares a count without a maximum (COUNT_MAX when none is declared)."""
    from rshash.methods import get_method, method_names
    from rshash.params import _is_count

    for name in method_names():
        params = get_method(name).Params
        for key in params.names():
            if _is_count(params._hints()[key]):
                assert "max" in params._meta(key), (name, key)


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,line,key",
    [
        ("targets: [demo]\ndevice: cpu\ntargets: [x]\n", 3, "'targets' (first on line 1)"),
        (
            "variants:\n  itq:\n    method: itq\n    params: {n_iter: 5}\n"
            "    params: {n_iter: 7}\n",
            5,
            "'params' (first on line 4)",
        ),
        ("protocols:\n  p: {seeds: [0], seeds: [1]}\n", 2, "'seeds' (first on line 2)"),
        ('{\n\t"a": {"b": 1,\n\t"b": 2}\n}\n', 3, "'b' (first on line 2)"),  # JSON, tabs
    ],
)
def test_a_duplicate_key_at_any_level_is_refused_naming_file_line_and_key(
    tmp_path, text, line, key
):
    from rshash.config import load_config_file

    path = _write(tmp_path / "c.yaml", text)
    with pytest.raises(RshashError) as err:
        load_config_file(path)
    assert str(err.value) == f"config file {path}, line {line}: duplicate key {key}"


def test_a_syntax_error_or_a_tab_names_the_file_of_several_and_the_line(tmp_path):
    from rshash.config import check_config_files

    good = _write(tmp_path / "good.yaml", "targets: [demo]\n")
    tab = _write(tmp_path / "tab.yaml", "device: cpu\nvariants:\n\titq: {method: itq}\n")
    with pytest.raises(RshashError, match=r"^config file \S*tab\.yaml, line 3: .*tab") as err:
        check_config_files([good, tab])
    assert "\n" not in str(err.value)
    broken = _write(tmp_path / "broken.yaml", "device: cpu\ntargets: [demo\nseeds: 1\n")
    with pytest.raises(RshashError, match=r"^config file \S*broken\.yaml, line 3: "):
        check_config_files([good, broken, tab])


def test_snakemake_refuses_a_duplicate_key_in_any_config_file(config, tmp_path, snakemake, repo):
    """The workflow reads config.yaml and every --configfile strictly (Snakemake's reader
    keeps the last value); a tab in config.yaml names it and the line."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    extra = _write(tmp_path / "extra.yaml", "device: cpu\nskip_unreadable: true\ndevice: cuda\n")
    out = snakemake(repo, tmp_path, "-n", "--configfile", extra, check=False, cores=None)
    text = out.stdout + out.stderr
    assert f"config file {extra}, line 3: duplicate key 'device' (first on line 1)" in text
    assert out.returncode != 0 and "Job stats" not in text and "Traceback" not in text

    (tmp_path / "config.yaml").write_text("targets: [demo]\nvariants:\n\titq: {}\n")
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-s", repo / "Snakefile", "-d", tmp_path],
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "config file config.yaml, line 3: found a tab" in text


@pytest.mark.parametrize("mutate,pattern", BAD + HUGE)
def test_bad_config_is_rejected_naming_the_key(config, schema, mutate, pattern):
    bad = copy.deepcopy(config)
    mutate(bad)
    with pytest.raises(RshashError, match=pattern):
        validate(bad, schema)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (
            lambda c: c["experiments"]["demo"].update(bits=[12]),
            "experiments.demo.bits[0]: 12 is not a multiple of 8",
        ),
        # a variant's parameters are checked at parse time: nothing is extracted first
        (
            lambda c: c["variants"]["itq"].update(params={"n_iter": "fifty"}),
            "config: variants.itq.params.n_iter: expected an integer in [0, 100000], got 'fifty'",
        ),
        (
            lambda c: c["variants"]["itq"].update(params={"n_iterr": 5}),
            "config: variants.itq.params.n_iterr: unknown parameter (known: n_iter)",
        ),
    ],
)
def test_snakemake_stops_on_bad_config_before_any_job(
    config, tmp_path, snakemake, repo, mutate, message
):
    """The workflow reports the message once and plans nothing."""
    mutate(config)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = snakemake(repo, tmp_path, "-n", "results/tables/demo.csv", check=False, cores=None)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert message in text
    assert "Job stats" not in text and "Traceback" not in text


def test_missing_data_directory_is_one_clear_message(repo, tmp_path, snakemake):
    out = snakemake(
        repo,
        tmp_path,
        "results/tables/ucmd.csv",
        "-n",
        check=False,
        configfile=repo / "config.yaml",
        cores=None,
        env={"RSHASH_DATA_DIR": str(tmp_path / "nowhere")},
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"dataset 'ucmd': data directory {tmp_path / 'nowhere'} does not exist" in text
    assert "RSHASH_DATA_DIR" in text and "Job stats" not in text


def test_parts_pair_each_method_with_its_own_protocol(config, schema):
    validate(config, schema)
    cells = experiment_cells(config, "ucmd_papers")
    by_method = {}
    for c in cells:
        by_method.setdefault(c.method, set()).add((c.protocol, c.bits))
    assert by_method["milan"] == {("mhcln_60_40", b) for b in (16, 24, 32)}
    assert by_method["pbffn"] == {("pbffn_50_50", b) for b in (32, 64, 128, 256)}
    assert {c.seed for c in cells if c.method == "dhcnn"} == set(range(10))
    assert experiment_rankings(config, "ucmd_papers", "dah") == ["category_weighted", "hamming"]
    bad = copy.deepcopy(config)
    bad["experiments"]["ucmd_papers"]["parts"][1]["methods"] = ["nope"]
    with pytest.raises(RshashError, match=r"experiments\.ucmd_papers\.parts\[1\]\.methods\[0\]"):
        validate(bad, schema)
    bad = copy.deepcopy(config)
    bad["experiments"]["ucmd_papers"]["parts"][0]["colour"] = "red"
    with pytest.raises(RshashError, match=r"ucmd_papers.*colour"):
        validate(bad, schema)


def test_extraction_settings_have_one_default_each(config):
    """batch_size, num_workers, precision and device: what config states, else extract's
    defaults."""
    import inspect

    from rshash.config import extraction_settings
    from rshash.features import extract

    bare = copy.deepcopy(config)
    bare["backbones"]["efficientnet_lite0"] = {}
    bare.pop("device", None)
    defaults = inspect.signature(extract).parameters
    assert extraction_settings(bare, "efficientnet_lite0") == {
        k: defaults[k].default for k in ("batch_size", "num_workers", "precision", "device")
    }
    assert (
        extraction_settings(config, "vgg16")["batch_size"]
        == config["backbones"]["vgg16"]["batch_size"]
    )
    assert extraction_settings({**config, "device": "cpu"})["device"] == "cpu"


def test_check_config_names_the_file_and_line_of_a_syntax_error(tmp_path, capsys):
    """What Snakemake cannot say for a --configfile (it reads it first, naming no file)."""
    from rshash.cli import main

    good, bad = tmp_path / "good.yaml", tmp_path / "extra.yaml"
    good.write_text("device: cpu\n")
    bad.write_text("device: cpu\nbackbones:\n\tlite: {}\n")
    assert main(["check-config", str(good)]) == 0
    assert main(["check-config", str(good), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"config file {bad}, line 3" in err, err

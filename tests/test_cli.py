"""The command line's verbs: each declared in the registry beside its function, each
answering --help, the Snakemake rules' verbs among them, and the old ``rshash index``
flag forms answered with their new form in one line."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rshash.cli
from rshash.cli import GROUPS, VERBS, main, parser

ROOT = Path(__file__).resolve().parents[1]


def _modules():
    return [sys.modules[f"rshash.cli.{g}"] for g in GROUPS]


def test_every_command_function_is_a_registered_verb():
    registered = {v.func for v in VERBS.values()}
    for module in _modules():
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("cmd_") and func.__module__ == module.__name__:
                assert func in registered, f"{module.__name__}.{name} is not a registered verb"
    # and every registered verb's function lives in a group module, beside its arguments
    for v in VERBS.values():  # (a group with subcommands only has no function)
        assert v.func is None or v.func.__module__ in {m.__name__ for m in _modules()}, v.name
        assert v.func is not None or any(w.path[:-1] == v.path for w in VERBS.values()), v.name


def test_the_parser_has_exactly_the_registered_verbs():
    top = parser()
    (sub,) = [a for a in top._actions if a.dest == "verb"]
    assert set(sub.choices) == {v.path[0] for v in VERBS.values()}
    index = sub.choices["index"]
    (isub,) = [a for a in index._actions if a.dest == "verb_index"]
    assert list(isub.choices) == ["build", "append", "remove"]


@pytest.mark.parametrize("name", list(VERBS))
def test_every_verb_answers_help(name, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*name.split(), "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: rshash {name}")
    for a in VERBS[name].args:  # every declared (visible) flag is in the help
        for one in getattr(a, "args", (a,)):
            if one.options.get("help") is not rshash.cli.argparse.SUPPRESS:
                flag = one.flags[0]
                assert (flag if flag.startswith("-") else one.options.get("metavar", flag)) in out


def test_the_rules_call_registered_verbs():
    called = set()
    for rule in (ROOT / "rules").glob("*.smk"):
        called |= set(re.findall(r'"rshash ([a-z-]+) ', rule.read_text()))
    assert called and called <= set(VERBS), called - set(VERBS)


def test_python_dash_m_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "rshash.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "index" in out.stdout and "plot-retrieval" in out.stdout


@pytest.mark.parametrize(
    "argv, new",
    [
        (
            ["--model", "m.npz", "--images", "imgs", "--out", "o.idx"],
            "use `rshash index build --out o.idx --images imgs --model m.npz`",
        ),
        (
            ["--codes", "c.parquet", "--out", "o.idx"],
            "`rshash index build --out o.idx --codes c.parquet`",
        ),
        (["--images", "imgs"], "`rshash index build --out PATH --images imgs --model MODEL`"),
        (
            ["--append", "new", "--index", "i.idx"],
            "use `rshash index append --index i.idx --images new`",
        ),
        (
            ["--append", "new", "--index", "i.idx", "--model", "m.npz", "--threads", "2"],
            "`rshash index append --index i.idx --images new --model m.npz --threads 2`",
        ),
        (
            ["--remove", "a/x", "b y", "--index", "i.idx"],
            "`rshash index remove --index i.idx a/x 'b y'`",
        ),
        ([], "give a subcommand: build, append or remove"),
    ],
)
def test_the_old_index_forms_name_the_new_one(argv, new, capsys, tmp_path):
    assert main(["index", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("rshash index: error: ") and new in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "argv, message",
    [
        (["build", "--out", "o"], "one of the arguments --images --codes is required"),
        (["build", "--out", "o", "--images", "d", "--codes", "c"], "not allowed with argument"),
        (["append", "--images", "d"], "the following arguments are required: --index"),
        (["remove", "--index", "i"], "the following arguments are required: ID"),
    ],
)
def test_index_subcommands_check_their_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["index", *argv])
    assert exit.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out", "o", "--images", "d"], "rshash index build: error: --images needs --model"),
        (["--out", "o", "--codes", "c", "--backbone", "b"], "--backbone goes with --images"),
    ],
)
def test_index_build_names_a_missing_or_extra_flag(argv, message, capsys, tmp_path):
    assert main(["index", "build", *argv]) == 2
    assert message in capsys.readouterr().err

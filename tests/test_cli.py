"""The command line's verbs: each declared in the registry beside its function, each
answering --help, the Snakemake rules' verbs among them."""

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
    for v in VERBS.values():
        assert v.func.__module__ in {m.__name__ for m in _modules()}, v.name


def test_the_parser_has_exactly_the_registered_verbs():
    top = parser()
    (sub,) = [a for a in top._actions if a.dest == "verb"]
    assert set(sub.choices) == {v.path[0] for v in VERBS.values()}


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

"""Command line: the verbs the workflow rules call, one library call each.

Every verb prints a one-line error naming the file or setting and exits 2
on a user error (RshashError), without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from rshash import RshashError
from rshash.cli.registry import VERBS, build_parser

# the modules of verbs, each registering its verbs on import, in the order --help lists them
GROUPS = ("pipeline", "figures", "archive", "scenes")
for _group in GROUPS:
    importlib.import_module(f"rshash.cli.{_group}")


def parser() -> argparse.ArgumentParser:
    """The parser of every verb in the registry (``rshash.cli.registry.VERBS``), each
    declared beside its function in one of the :data:`GROUPS` modules."""
    return build_parser("rshash", __doc__)


_TERMINATED: list[int] = []


def _exit_on_sigterm(signum, _frame):
    """SIGTERM (a cluster's kill, Snakemake's cancel) unwinds like Ctrl-C, so the
    library's ``finally`` blocks remove their temporary files. Python drops an exception
    raised while a weakref callback or finaliser runs ("Exception ignored in ..."), so
    the signal is also remembered: a command that then runs to its end still exits
    128 + signum (its outputs are complete and sealed, but it was told to stop)."""
    _TERMINATED.append(signum)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main else None
    try:
        args.func(args)
    except RshashError as err:
        print(f"rshash {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    if _TERMINATED:
        print(f"rshash {args.command}: terminated (signal {_TERMINATED[0]})", file=sys.stderr)
        return 128 + _TERMINATED[0]
    return 0


__all__ = ["GROUPS", "VERBS", "main", "parser"]

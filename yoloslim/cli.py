"""``yoloslim <command>``: the one entry point behind the CLI and the top-level scripts.

Each command is a module in :mod:`yoloslim.commands` with ``NAME``, ``HELP``, ``ORDER``,
``configure(parser)`` and ``run(args) -> int``; new commands are found automatically.
A :class:`~yoloslim.errors.UserError` becomes one line on stderr and exit code 2.
``args._typed`` holds the options the user actually typed (a resumed run keeps every other setting),
and every command that reads checkpoints gets ``--trust-checkpoint``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from types import ModuleType

import yoloslim
from yoloslim.errors import UserError

NO_CHECKPOINTS = {"synth", "demo"}  # commands that read no checkpoint a user passes


def add_trust_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load checkpoints even if they name code outside yoloslim's allowlist (only for files you "
                        "trust: a .pt is a pickle and can run any code when loaded)")


def typed_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations ``argv`` sets explicitly — also to a value equal to the default."""
    defaults = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in defaults:
            action.default = argparse.SUPPRESS
        explicit, _ = parser.parse_known_args(argv)
    finally:
        for action, default in defaults:
            action.default = default
    return set(vars(explicit))


def command_modules() -> list[ModuleType]:
    import yoloslim.commands as pkg

    mods = [importlib.import_module(f"{pkg.__name__}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)]
    return sorted((m for m in mods if hasattr(m, "NAME")), key=lambda m: (m.ORDER, m.NAME))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yoloslim",
        description="Make trained YOLO detectors smaller and faster: "
        "train -> sparse -> prune -> finetune/distill -> val -> export. Offline; CPU or CUDA.",
    )
    parser.add_argument("--version", action="version", version=f"yoloslim {yoloslim.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    parser.set_defaults(_commands={})
    for mod in command_modules():
        if only and mod.NAME != only:
            continue
        cmd = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.__doc__,
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.configure(cmd)
        if mod.NAME not in NO_CHECKPOINTS:
            add_trust_arg(cmd)
        cmd.set_defaults(_run=mod.run)
        parser.get_default("_commands")[mod.NAME] = cmd
    return parser


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    """Run a command; ``command`` fixes it (used by the top-level scripts)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if command:
        argv = [command, *argv]
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from yoloslim.engine.safe_load import TRUST_ENV

    args._typed = typed_options(args._commands[args.command], argv[1:])
    trust_before = os.environ.get(TRUST_ENV)
    if getattr(args, "trust_checkpoint", False):
        os.environ[TRUST_ENV] = "1"  # an environment variable, so that DDP workers trust the file too
    try:
        from yoloslim.offline import disable_telemetry

        disable_telemetry()
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"yoloslim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"yoloslim {args.command}: interrupted — finished outputs are kept, partial ones were not written",
              file=sys.stderr)
        return 130
    finally:
        if trust_before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = trust_before


def script_main(command: str) -> None:
    """Entry for ``python <command>.py``: same parser, same code as ``yoloslim <command>``."""
    sys.exit(main(command=command))

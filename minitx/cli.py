"""The `minitx` command line. Each subcommand's work lives in its own module; this file only wires arguments.

    minitx check                      run a small model for real and check the talk's claims against the counts
    minitx train / generate           train a byte-level model on text that ships with Python; sample from it
    minitx params|memory|flops|kv     the calculator, for presets or a Hugging Face config.json
    minitx hw | roofline | cost       hardware, the roofline model, and when self-hosting pays

Bad input (unknown presets, unreadable files, nonsense numbers) ends with a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, function, one-line help)
COMMANDS = {
    "check": ("minitx.check", "main", "check the talk's claims: formulas vs counts from real execution"),
    "train": ("minitx.commands.train", "main", "train a small byte-level model on Python's own source"),
    "generate": ("minitx.commands.generate", "main", "sample text from a checkpoint saved by `minitx train`"),
    "params": ("minitx.commands.calc", "params", "parameter count and breakdown of a model"),
    "memory": ("minitx.commands.calc", "memory", "memory for inference or training"),
    "flops": ("minitx.commands.calc", "flops", "FLOPs by component for train, prefill or decode"),
    "kv": ("minitx.commands.calc", "kv", "KV-cache size per token and in total"),
    "hw": ("minitx.commands.serving", "hw", "hardware presets, or measure this machine"),
    "roofline": ("minitx.commands.serving", "roofline", "roofline model of prefill and decode on given hardware"),
    "cost": ("minitx.commands.serving", "cost", "self-hosting cost vs an API"),
}


class CommandError(Exception):
    """Raised by subcommands for a clean one-line failure."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minitx", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, func, help_text) in COMMANDS.items():
        try:
            mod = _load(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue  # a command whose module is not written yet is simply absent
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments = getattr(mod, "add_arguments_" + func, None)
        if add_arguments is not None:
            add_arguments(p)
        p.set_defaults(_handler=(module, func))
    return parser


def _load(module: str):
    return importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_handler", None):
        parser.print_help()
        return 0
    module, func = args._handler
    try:
        result = getattr(_load(module), func)(args)
    except (CommandError, ValueError, TypeError, OSError) as e:
        print(f"minitx {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minitx {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The `minitx` command line. Each subcommand's work lives in its own module; this file only wires arguments.

    minitx check                      run a small model for real and check the talk's claims against the counts
    minitx train / generate           train a byte-level model on text that ships with Python; sample from it
    minitx params|memory|flops|kv     the calculator, for presets or a Hugging Face config.json
    minitx count                      the same FLOPs and bytes, counted by a shape-only run of the model
    minitx hw | roofline | cost       hardware, the roofline model, and when self-hosting pays
    minitx serve                      a file of requests through the batching engine, on a real model
    minitx grade | exercises          the workshop: exercises graded against counts from execution
    minitx simulate                   a serving workload on real GPUs, simulated (scheduler + step costs)

memory, flops, kv, count, roofline and cost take the precision flags: --dtype (shorthand), --weight-dtype
(int8/int4 weight-only quantization), --kv-dtype, and --attention fused|unfused (minitx.cli.common).

Bad input (unknown presets, unreadable files, nonsense numbers) ends with a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .common import CommandError

# subcommand -> (module, function, one-line help)
COMMANDS = {
    "check": ("minitx.cli.check", "main", "check the talk's claims: formulas vs counts from real execution"),
    "train": ("minitx.cli.train", "main", "train a small byte-level model on Python's own source"),
    "generate": ("minitx.cli.generate", "main", "sample text from a checkpoint saved by `minitx train`"),
    "params": ("minitx.cli.calc", "params", "parameter count and breakdown of a model"),
    "memory": ("minitx.cli.calc", "memory", "memory for inference or training"),
    "flops": ("minitx.cli.calc", "flops", "FLOPs by component for train, prefill or decode"),
    "kv": ("minitx.cli.calc", "kv", "KV-cache size per token and in total"),
    "count": ("minitx.cli.count", "count", "FLOPs and bytes counted by a shape-only run of the model (the "
              "numbers `flops` predicts, from execution by shape)"),
    "hw": ("minitx.cli.serving", "hw", "hardware presets, or measure this machine"),
    "roofline": ("minitx.cli.serving", "roofline", "roofline model of prefill and decode on given hardware"),
    "cost": ("minitx.cli.serving", "cost", "self-hosting cost vs an API"),
    "serve": ("minitx.cli.serve", "serve", "serve a file of requests with the batching engine on a real model"),
    "simulate": ("minitx.cli.simulate", "simulate", "serve a workload on real GPUs, simulated: the engine's scheduler, "
                 "each step's time from its exact op costs (--tp for several chips)"),
    "grade": ("minitx.cli.grade", "grade", "grade a student's exercise file (or a class folder) against counts "
              "from execution"),
    "exercises": ("minitx.cli.grade", "exercises", "copy the workshop's exercise files into a folder"),
}

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit status 2), like every other minitx error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of the command named in `argv` (all commands when argv is None).

    Only the chosen command's module is imported: the calculator then never loads Numba or the kernels."""
    chosen = None if argv is None else next((a for a in argv if a in COMMANDS), None)
    parser = _Parser(prog="minitx", description="minitx: the arithmetic of transformer training and serving, "
                     "checked against counts from real execution.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, func, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if argv is None or name == chosen:
            add_arguments = getattr(_load(module), "add_arguments_" + func, None)
            if add_arguments is not None:
                add_arguments(p)
        p.set_defaults(_handler=(module, func))
    return parser


def _load(module: str):
    return importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
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

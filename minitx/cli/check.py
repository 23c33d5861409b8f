"""`minitx check`: the talk's claims, formula vs count from real execution, one row each (minitx.teaching.check).

    minitx check [--json] [--quiet]     exit 0 when every claim holds, 1 when one fails
"""
from __future__ import annotations

import argparse
import sys
import time

from ..core.config import Config
from ..teaching.check import DTYPE, BATCH, DECODE_AT, MODELS, PROMPT, SEQ, format_table, header, run_checks
from .common import print_json


def add_arguments_main(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the claims as JSON instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")


def main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    say = None if getattr(args, "quiet", False) else (
        lambda message: print(f"minitx check: {message}", file=sys.stderr, flush=True))
    claims = run_checks(progress=say)
    seconds = time.perf_counter() - start
    failed = [c for c in claims if not c.ok]
    if getattr(args, "json", False):
        print_json({"models": list(MODELS), "configs": {m: Config.preset(m).to_dict() for m in MODELS},
                    "dtype": DTYPE, "batch": BATCH, "seq": SEQ, "prompt": PROMPT, "decode_at": list(DECODE_AT),
                    "seconds": round(seconds, 3), "passed": not failed, "claims": [c.to_dict() for c in claims]})
    else:
        exact = [c for c in claims if c.kind == "exact"]
        approx = [c for c in claims if c.kind != "exact" and c.counts]
        shown = len(claims) - len(exact) - len(approx)
        print(format_table(claims, header()))
        print()
        print(f"{sum(c.ok for c in exact)}/{len(exact)} exact claims match; {sum(c.ok for c in approx)}/"
              f"{len(approx)} approximations and bounds hold"
              + (f"; {shown} illustration{'s' if shown != 1 else ''} (formula only, not counted)" if shown else "")
              + f" ({seconds:.1f} s)")
        if failed:
            print("FAILED: " + "; ".join(f"{c.model}: {c.claim.strip()}" for c in failed))
    return 1 if failed else 0

"""`minitx serve`: run a file of requests through the serving engine (minitx.serving.engine) on a real model.

    minitx serve tiny-llama --requests reqs.jsonl                      a preset, random weights from --seed
    minitx serve --checkpoint runs/minitx.ckpt --requests reqs.jsonl   a model saved by `minitx train` (or
                                                                       minitx.save_model: 16-bit, quantized)
    minitx serve small-llama --requests reqs.jsonl --policy static --kv-layout contiguous --hw h100-sxm --json

The requests file is JSON Lines, one request per line (blank lines are skipped; a request's id is its line
number, from 0):

    {"prompt": [5, 3, 9], "max_new_tokens": 20}
    {"prompt": "def fib(n):", "max_new_tokens": 40, "arrival_step": 3, "stop": [10], "temperature": 0.8,
     "top_k": 20, "seed": 7}

`prompt` is a list of token ids, or text for a byte-level model (a vocabulary of the 256 bytes: a `minitx train`
checkpoint, or the small presets); `max_new_tokens` is required; `arrival_step` (default 0), `stop` (an id or
ids), `temperature` (default 0: greedy), `top_k`, `top_p` and `seed` are optional. A request without a seed
samples from a stream seeded by --seed and its id. The same flags and file give byte-identical --json output.
"""
from __future__ import annotations

import argparse
import json
import os

from ..io.text_file import read_text_file
from ..units import TIME_UNITS, pick_unit, scaled
from .common import CommandError, load_model, print_json, whole_number

MAX_FILE_BYTES = 16 << 20              # 16 MiB of JSON Lines: far more requests than a CPU serves in a session
REQUIRED = ("prompt", "max_new_tokens")
OPTIONAL = ("arrival_step", "stop", "temperature", "top_k", "top_p", "seed")
BYTE_VOCAB = 256


def add_arguments_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="a preset (random weights from --seed), or leave out and give --checkpoint")
    p.add_argument("--checkpoint", metavar="PATH", default=None,
                   help="a model saved by `minitx train` (or minitx.save_model)")
    p.add_argument("--requests", metavar="FILE", required=True,
                   help="JSON Lines: one request per line, {\"prompt\": ids or text, \"max_new_tokens\": N, ...}")
    p.add_argument("--seed", default="0", metavar="S",
                   help="seeds a preset's random weights and the sampling of requests without a seed (default 0)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="the model's dtype: its activations, KV cache and float weights (a --checkpoint in 16 bits is "
                        "widened exactly; a quantized one keeps its int8/int4 matrices)")
    p.add_argument("--attention", default="fused", choices=["fused", "unfused"],
                   help="fused: one kernel reading keys through the KV store (what servers run; default); "
                        "unfused: scores, softmax and mix as separate ops")
    p.add_argument("--policy", default="continuous", choices=["continuous", "static"],
                   help="continuous: requests join and leave at every step (default); static: batch by batch")
    p.add_argument("--kv-layout", default="paged", choices=["paged", "contiguous"],
                   help="paged: blocks taken as sequences grow (default); contiguous: prompt + max_new_tokens "
                        "reserved per request")
    p.add_argument("--block-size", default="16", metavar="N", help="token positions per KV block (default 16)")
    p.add_argument("--kv-blocks", default=None, metavar="N",
                   help="KV blocks in the pool (default: room for --max-batch of the longest request)")
    p.add_argument("--max-batch", default="16", metavar="N", help="sequences per step at most (default 16)")
    p.add_argument("--chunked-prefill", default=None, metavar="N",
                   help="per-step token budget shared by prefill chunks and decode tokens (at least --max-batch); "
                        "default: each prompt prefilled whole")
    p.add_argument("--hw", default=None, metavar="PRESET",
                   help="a hardware preset (minitx hw): each step's counted costs on its roofline, so the "
                        "timeline is also given in modelled seconds (--dtype float32: the chips list no fp64 peak)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


# ---- the requests file -------------------------------------------------------------------------------------------

def read_text(path: str, flag: str = "--requests") -> str:
    """The file's text, if it is a regular file of at most MAX_FILE_BYTES of UTF-8 (a FIFO, a device or /dev/zero
    is refused before reading, so nothing blocks or reads forever: minitx.io.text_file)."""
    return read_text_file(path, MAX_FILE_BYTES, f"{flag} {path}")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_requests(text: str, path: str, byte_level: bool) -> list[tuple[int, dict]]:
    """[(line number from 0, request fields)] from JSON Lines; any problem names the line."""
    out = []
    for number, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            item = json.loads(line, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"{where}: not a JSON object ({str(e)[:80]})") from None
        if not isinstance(item, dict):
            raise ValueError(f"{where}: a request is a JSON object, got {type(item).__name__}")
        unknown = sorted(set(item) - set(REQUIRED) - set(OPTIONAL))
        missing = [k for k in REQUIRED if k not in item]
        if unknown or missing:
            problem = f"unknown key(s) {unknown}" if unknown else f"missing {missing}"
            raise ValueError(f"{where}: {problem}; a request has {', '.join(REQUIRED)} and optionally "
                             f"{', '.join(OPTIONAL)}")
        prompt = item["prompt"]
        if isinstance(prompt, str):
            if not byte_level:
                raise ValueError(f"{where}: a text prompt needs a byte-level model (a vocabulary of the "
                                 f"{BYTE_VOCAB} bytes); give token ids")
            item["prompt"] = list(prompt.encode("utf-8"))
        elif not (isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)):
            raise ValueError(f"{where}: prompt must be a list of integer token ids (or text for a byte-level "
                             "model)")
        out.append((number, item))
    if not out:
        raise ValueError(f"{path}: no requests (one JSON object per line)")
    return out


# ---- the command ---------------------------------------------------------------------------------------------

def _model(args, seed: int):
    """(model, name, byte_level): a checkpoint's model in --dtype, or a preset with random weights from --seed."""
    from ..core.model import Transformer
    if (args.model is None) == (args.checkpoint is None):
        raise CommandError("give a MODEL (a preset) or --checkpoint PATH, not both and not neither")
    if args.checkpoint is not None:
        from ..io.checkpoint import load_model as load_checkpoint
        try:
            loaded = load_checkpoint(args.checkpoint)
        except IsADirectoryError:
            raise ValueError(f"--checkpoint {args.checkpoint}: a directory; give the checkpoint file") from None
        trained, meta = loaded[0], loaded[-1]
        # --dtype sets the activations, the KV cache and the float weights; a quantized checkpoint's int8/int4
        # matrices stay as they were saved (the same integers and scales), beside them
        p = trained.precision
        model = Transformer(trained.cfg, dtype=args.dtype, weight_dtype=p.weights if trained.quantized else None,
                            group_size=p.group_size, attention=args.attention, init=False)
        model.flat[:] = trained.flat       # float32/16-bit -> float64 or float32 exactly; float64 -> float32 rounds
        for name, qw in model.quantized.items():
            qw.values[...] = trained.quantized[name].values
            qw.scales[...] = trained.quantized[name].scales
        byte_level = meta.get("tokenizer") == "bytes" and model.cfg.vocab_size <= BYTE_VOCAB
        return model, os.path.basename(args.checkpoint), byte_level
    cfg = load_model(args.model)
    model = Transformer(cfg, seed=seed, dtype=args.dtype, attention=args.attention)
    return model, cfg.name, cfg.vocab_size == BYTE_VOCAB


def serve(args: argparse.Namespace) -> int:
    from ..serving.engine import Engine

    seed = whole_number(args.seed, "--seed", 0)
    numbers = {flag: None if text is None else whole_number(text, flag) for flag, text in (
        ("--block-size", args.block_size), ("--kv-blocks", args.kv_blocks), ("--max-batch", args.max_batch),
        ("--chunked-prefill", args.chunked_prefill))}
    text = read_text(args.requests)                    # before the model: a bad file fails fast
    model, name, byte_level = _model(args, seed)
    requests = parse_requests(text, args.requests, byte_level)
    try:
        engine = Engine(model, args.policy, args.kv_layout, block_size=numbers["--block-size"],
                        num_blocks=numbers["--kv-blocks"], max_batch=numbers["--max-batch"],
                        chunked_prefill=numbers["--chunked-prefill"], hardware=args.hw, seed=seed)
    except ValueError as e:
        raise ValueError(str(e).replace("chunked_prefill", "--chunked-prefill").replace("max_batch", "--max-batch")
                         ) from None
    lines = []
    for number, item in requests:
        try:
            engine.submit(item["prompt"], item["max_new_tokens"], temperature=item.get("temperature", 0.0),
                          top_k=item.get("top_k"), top_p=item.get("top_p"), seed=item.get("seed"),
                          stop=item.get("stop"), arrival_step=item.get("arrival_step", 0))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{args.requests} line {number}: {e}") from None
        lines.append(number)
    result = engine.run()
    for r, number in zip(result.requests, lines):
        r.id = number                                   # a request is known by its line number
    if args.json:
        print_json({"command": "serve", "model": name, "dtype": args.dtype, "attention": args.attention,
                    "settings": {"policy": args.policy, "kv_layout": args.kv_layout,
                                 "block_size": numbers["--block-size"], "kv_blocks": result.summary["kv_blocks"],
                                 "max_batch": numbers["--max-batch"], "chunked_prefill": numbers["--chunked-prefill"],
                                 "hw": None if engine.hardware is None else engine.hardware.name, "seed": seed},
                    **result.to_dict()})
        return 0
    print(_text(result, name, engine, byte_level))
    return 0


def _text(result, name: str, engine, byte_level: bool) -> str:
    s = result.summary
    seconds = engine.hardware is not None
    # modelled times in one unit for the whole table, picked from the longest TTFT
    unit, scale = pick_unit(max(r.ttft_s for r in result.requests), TIME_UNITS) if seconds else ("", 1.0)
    head = (f"{'id':>5} {'prompt':>6} {'new':>5} {'arrive':>6} {'first':>6} {'finish':>6} {'TTFT':>5} {'TPOT':>6}"
            + (f" {'TTFT ' + unit:>9} {'TPOT ' + unit:>9}" if seconds else "") + "  tokens")
    out = [f"minitx serve {name}: {engine.policy} batching, {engine.kv_layout} KV (blocks of {engine.block_size}, "
           f"{s['kv_blocks']} in the pool), max batch {engine.max_batch}"
           + (f", chunked prefill {engine.chunked_prefill}" if engine.chunked_prefill else "")
           + (f"; seconds modelled on {engine.hardware.name}" if seconds else ""),
           "(times in steps: a token sampled in step s exists at s + 1)", head, "-" * len(head)]
    for r in result.requests:
        tpot = "-" if r.tpot_steps is None else f"{r.tpot_steps:.2f}"
        row = (f"{r.id:>5} {r.prompt_len:>6} {len(r.tokens):>5} {r.arrival_step:>6} {r.first_token_step:>6} "
               f"{r.finish_step:>6} {r.ttft_steps:>5} {tpot:>6}")
        if seconds:
            row += f" {r.ttft_s / scale:>9.3f} " + ("        -" if r.tpot_s is None else f"{r.tpot_s / scale:>9.3f}")
        shown = repr(bytes(r.tokens).decode("utf-8", "replace")[:60]) if byte_level else \
            " ".join(map(str, r.tokens))[:60]
        out.append(row + "  " + shown)
    out += ["", f"{s['requests']} requests, {s['output_tokens']} tokens in {s['duration_steps']} steps "
                f"({s['steps']} model calls): {s['throughput_tok_step']:.3f} tokens/step",
            f"TTFT p50 {s['ttft_p50_steps']:.1f} / p99 {s['ttft_p99_steps']:.1f} steps; TPOT p50 "
            + ("-" if s['tpot_p50_steps'] is None else f"{s['tpot_p50_steps']:.2f}") + " / p99 "
            + ("-" if s['tpot_p99_steps'] is None else f"{s['tpot_p99_steps']:.2f}") + " steps"]
    if seconds:
        out.append(f"modelled: {scaled(s['duration_s'], TIME_UNITS)} in all, {s['throughput_tok_s']:,.0f} tokens/s; "
                   f"TTFT p50 {scaled(s['ttft_p50_s'], TIME_UNITS)}, p99 {scaled(s['ttft_p99_s'], TIME_UNITS)}")
    out.append(f"KV: {s['kv_waste']:.1%} of reserved bytes held no token (mean over steps); "
               f"{s['preemptions']} preemptions; largest batch {s['max_batch_seen']}")
    return "\n".join(out)


__all__ = ["serve", "add_arguments_serve", "parse_requests", "read_text"]

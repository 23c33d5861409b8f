"""The calculator: `minitx params | memory | flops | kv` for a preset or a Hugging Face config.json.

    minitx params MODEL [--non-embedding] [--json]
    minitx memory MODEL --dtype bf16 --batch 1 --seq 4096 [--train [--recipe mixed|hf|checkpoint|fp32]] [--json]
    minitx flops  MODEL --batch 1 --seq 4096 --phase train|prefill|decode [--json]
    minitx kv     MODEL --dtype bf16 --batch 1 --seq 4096 [--json]

memory, flops and kv also take the precision flags (minitx.cli.common): --dtype (the shorthand), --weight-dtype
(the activations' format, or int8/int4 weight-only quantization), --kv-dtype, and --attention fused|unfused
(default fused for inference, what servers run: no score matrix; training is always unfused). So "Llama-2-70B
with int4 weights and a bf16 cache" is `minitx memory llama-2-70b --weight-dtype int4 --kv-dtype bf16`.

MODEL is a preset name (gpt2, llama-2-7b, gemma-2b, ...: `minitx params --help` lists them) or the path of a
Hugging Face config.json (or of the folder holding one) of model_type gpt2, llama, mistral or gemma.

Every number comes from the closed forms in `minitx.formulas`: nothing is allocated or run, so a 70B model
answers as fast as a small one. They are the same formulas `minitx check` compares with counts from real
execution, and `minitx count` with a shape-only run of the model: `flops_data` turns either Ledger into the
same JSON. Conventions: 2 FLOPs per multiply-add; unfused attention's scores and mix over the full T × T
rectangle (the softmax over the causal half), fused attention over each query's visible keys, a tile at a
time; each op reads its inputs and writes its outputs once (training keeps the attention probabilities).
Units: GB = 1e9 bytes, GiB = 2**30 bytes (7.4% more); TFLOP = 1e12 FLOPs.
"""
from __future__ import annotations

import argparse

from .. import dtypes
from ..accounting import formulas as F
from ..accounting.ledger import CATEGORIES, Ledger
from ..core.config import PRESETS, Config
from ..units import human_bytes, human_count, human_flops
from .common import (DTYPES, add_model_argument, add_precision_arguments, attention_of, load_model, precision_data,
                     precision_of, print_json, require_training_precision, whole_number)

RECIPES = F.TRAINING_RECIPES


# ---- shared helpers ------------------------------------------------------------------------------------------

def _batch_seq(args, cfg: Config, seq_flag: str = "--seq") -> tuple[int, int]:
    B = whole_number(args.batch, "--batch")
    T = whole_number(args.seq, seq_flag)
    if T > cfg.n_ctx:
        raise ValueError(f"{seq_flag} {T} exceeds {cfg.name}'s context of n_ctx={cfg.n_ctx} tokens")
    return B, T


def _add_common(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_shape(p: argparse.ArgumentParser, seq_help: str) -> None:
    p.add_argument("--batch", default="1", metavar="B", help="sequences in the batch (default: 1)")
    p.add_argument("--seq", default=None, metavar="T", help=seq_help + " (default: the model's n_ctx)")


def _seq_default(args, cfg: Config) -> None:
    if args.seq is None:
        args.seq = str(cfg.n_ctx)


def describe(cfg: Config) -> str:
    """One line: the shape of the model."""
    attn = ("multi-head" if cfg.n_kv_heads == cfg.n_heads else
            "multi-query" if cfg.n_kv_heads == 1 else f"grouped-query, {cfg.n_kv_heads} kv heads")
    return (f"{cfg.name}: L={cfg.n_layers} layers, d_model={cfg.d_model}, {cfg.n_heads} heads × {cfg.head_dim} "
            f"({attn}), d_ff={cfg.d_ff} ({cfg.mlp} MLP), V={cfg.vocab_size:,}, n_ctx={cfg.n_ctx:,}, "
            f"{'tied' if cfg.tie_embeddings else 'untied'} LM head")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


UNITS = "units: GB = 1e9 bytes, GiB = 2^30 bytes; M = 1e6, B = 1e9"


# ---- params --------------------------------------------------------------------------------------------------

def add_arguments_params(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--non-embedding", action="store_true",
                   help="lead with the non-embedding count: the total without the token table, the position "
                        "table and an untied LM head (Kaplan's N leaves out embedding and unembedding; the number "
                        "a model like 'Gemma 2B' is named by)")


def params_data(cfg: Config) -> dict:
    parts = F.param_breakdown(cfg)
    C = cfg.d_model
    wpe = cfg.n_ctx * C if cfg.position == "learned" else 0
    return {
        "model": cfg.name, "config": cfg.to_dict(), "total": parts["total"],
        "non_embedding": F.non_embedding_params(cfg),
        "breakdown": {k: v for k, v in parts.items() if k != "total"},
        "embedding_tables": {"wte": cfg.vocab_size * C, "wpe": wpe},
        "vocab_tables": parts["embedding"] + parts["lm_head"],
        "matmul_params": F.matmul_params(cfg),
        "approx_12Ld2": F.approx_params_12Ld2(cfg), "approx_12Ld2_plus_Vd": F.approx_params_12Ld2(cfg, True),
    }


def _left_out(cfg: Config, data: dict) -> str:
    """What the non-embedding count subtracts from the total, in words ("total − wte − untied lm_head")."""
    wte, wpe = data["embedding_tables"]["wte"], data["embedding_tables"]["wpe"]
    head = data["breakdown"]["lm_head"]
    gone = data["total"] - data["non_embedding"]
    for terms in ((("wte", wte), ("wpe", wpe), ("untied lm_head", head)), (("wte", wte), ("wpe", wpe))):
        if sum(v for _, v in terms) == gone:
            return "total" + "".join(f" − {name}" for name, v in terms if v)
    return f"total − {gone:,}"


def params(args) -> int:
    cfg = load_model(args.model)
    data = params_data(cfg)
    data["headline"] = "non_embedding" if args.non_embedding else "total"
    if args.json:
        print_json(data)
        return 0
    total, non_emb, vocab = data["total"], data["non_embedding"], data["vocab_tables"]
    wte, wpe = data["embedding_tables"]["wte"], data["embedding_tables"]["wpe"]
    print(describe(cfg))
    notes = {
        "embedding": f"wte V·d = {wte:,}" + (f" + wpe n_ctx·d = {wpe:,}" if wpe else "") + (
            " (also the LM head: tied)" if cfg.tie_embeddings else ""),
        "attention": f"q, k, v, o projections: {cfg.n_heads} q heads, {_plural(cfg.n_kv_heads, 'kv head')} × "
                     f"{cfg.head_dim}",
        "mlp": f"{'3 matrices (gated)' if cfg.mlp == 'gated' else '2 matrices'} of d × {cfg.d_ff}",
        "norm": f"{cfg.norm} scales" + (" and shifts" if cfg.norm == "layernorm" else "") + ", 2 per layer + final",
        "lm_head": "tied to wte: no extra parameters" if cfg.tie_embeddings else "untied: its own V × d matrix",
    }
    if args.non_embedding:
        print(f"non-embedding parameters: {non_emb:,} ({human_count(non_emb)}) = {_left_out(cfg, data)}")
    print(f"  {'':<24}{'parameters':>16}  {'% of total':>10}")
    for name, value in data["breakdown"].items():
        print(f"  {name:<24}{value:>16,}  {100 * value / total:9.1f}%   {notes[name]}")
    tables = ("wte (tied: also the LM head)" if cfg.tie_embeddings else "wte + untied lm_head") + (
        " + the position table wpe" if wpe else "")
    lines = [("total", total, f"{human_count(total)}: every stored parameter, each once"),
             ("non-embedding", non_emb, f"{human_count(non_emb)}: {_left_out(cfg, data)} (Kaplan's N leaves "
                                        "out embedding and unembedding)"),
             ("vocabulary tables", vocab, f"{human_count(vocab)}: {tables}")]
    if args.non_embedding:
        lines[0], lines[1] = lines[1], lines[0]
    for label, value, note in lines:
        print(f"  {label:<24}{value:>16,}  {100 * value / total:9.1f}%   {note}")
    approx = data["approx_12Ld2"]
    caveat = "" if (cfg.mlp == "standard" and cfg.n_kv_heads == cfg.n_heads and cfg.q_dim == cfg.d_model) else \
        "; it assumes multi-head attention with NH·HS = d and an ungated 4·d MLP"
    print(f"  {'12·L·d² rule of thumb':<24}{approx:>16,}  {'':>10}   {human_count(approx)}: "
          f"{100 * (approx / non_emb - 1):+.1f}% vs non-embedding{caveat}")
    print(UNITS)
    return 0


# ---- memory --------------------------------------------------------------------------------------------------

def add_arguments_memory(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    add_precision_arguments(p, attention="phase")
    _add_shape(p, "tokens per sequence (prompt + generated for inference)")
    p.add_argument("--train", action="store_true",
                   help="training memory: weights, gradients, optimizer state and saved activations")
    p.add_argument("--recipe", default="mixed", choices=list(RECIPES),
                   help="with --train, the precision recipe: mixed 16 B/param (default), hf 18, checkpoint 12, "
                        "fp32 16 (all fp32)")


def _largest_activation(cfg: Config, pr: dtypes.Precision, B: int, T: int, attention: str) -> dict:
    """The prefill's largest single activation, and a full forward's (all T rows of logits), under `attention`.

    A server's prefill computes the logits of the last row only (B·V), not all T rows (B·T·V): the largest
    activation is the largest of the per-layer ones and B·V. Fused attention keeps no (B, NH, T, T) scores."""
    full = F.activation_sizes(cfg, B, T, pr, attention=attention)
    sizes = dict(full, logits=B * cfg.vocab_size * dtypes.itemsize(pr.activations))
    largest = max(sizes, key=sizes.get)
    full_largest = max(full, key=full.get)
    return {"name": largest, "bytes": sizes[largest],
            "full_forward": {"name": full_largest, "bytes": full[full_largest]}}


def memory_data(cfg: Config, pr: dtypes.Precision, B: int, T: int, train: bool, recipe: str,
                attention: str = "fused", dtype: str | None = None) -> dict:
    """What `minitx memory` prints. `dtype`: the --dtype flag's format (default: the activations')."""
    P = F.num_params(cfg)
    head = {"model": cfg.name, "mode": "training" if train else "inference",
            "dtype": dtype or pr.activations, **precision_data(pr, attention), "batch": B, "seq": T, "params": P}
    if not train:
        mem = F.inference_memory(cfg, B, T, pr, attention=attention)
        act = _largest_activation(cfg, pr, B, T, attention)
        parts = {"weights": mem["weights"], "kv_cache": mem["kv_cache"], "activations": act["bytes"]}
        unfused = act if attention == "unfused" else _largest_activation(cfg, pr, B, T, "unfused")
        unfused_total = parts["weights"] + parts["kv_cache"] + unfused["bytes"]
        return {**head, "parts": parts, "largest_activation": act["name"],
                "full_forward_largest_activation": act["full_forward"], "total": sum(parts.values()),
                # the same deployment with unfused attention (score matrices written out): what changes
                "unfused_attention": {"largest_activation": unfused["name"], "activations": unfused["bytes"],
                                      "full_forward_largest_activation": unfused["full_forward"],
                                      "total": unfused_total}}
    require_training_precision(pr)
    r = RECIPES[recipe]
    parts = {"weights": (r.weights + r.master_weights) * P, "gradients": r.gradients * P,
             "optimizer_state": r.optimizer_state * P,
             "activations": F.saved_activation_bytes(cfg, B, T, pr.activations, include_loss=True)}
    return {**head, "recipe": recipe, "recipe_label": r.label, "bytes_per_param": r.bytes_per_param,
            "parts": parts, "total": sum(parts.values())}


ACTIVATION_NAMES = {"residual": "the residual stream, B·T·d", "qkv": "q, k and v, B·T·(NH + 2·KV)·HS",
                    "heads": "the heads, B·T·NH·HS", "scores": "attention scores, B·NH·T²",
                    "mlp_up": "the MLP's up projection, B·T·d_ff (× 2 when gated)",
                    "mlp_act": "the MLP's activation, B·T·d_ff", "logits": "the last row's logits, B·V"}


def _activation_name(name: str) -> str:
    return ACTIVATION_NAMES.get(name, name)


def _weights_note(cfg: Config, pr: dtypes.Precision, P: int) -> str:
    s = dtypes.itemsize(pr.activations)
    if not pr.quantized:
        return f"P × {s} B = {P:,} × {s}"
    matrices = F.matmul_params(cfg) - cfg.vocab_size * cfg.d_model        # the layers' q|k|v, o, up, down
    bits = dtypes.bits(pr.weights)
    return (f"{matrices:,} layer-matrix parameters in {pr.weights} ({bits} bits) + a float16 scale per "
            f"{pr.group_size} inputs; the other {P - matrices:,} (embeddings, norms, head) in "
            f"{dtypes.short(pr.activations)}, {s} B each")


def memory(args) -> int:
    cfg = load_model(args.model)
    _seq_default(args, cfg)
    B, T = _batch_seq(args, cfg)
    pr = precision_of(args)
    attention = attention_of(args, training=args.train)
    data = memory_data(cfg, pr, B, T, args.train, args.recipe, attention, DTYPES[args.dtype])
    if args.json:
        print_json(data)
        return 0
    s = dtypes.itemsize(pr.activations)
    P = data["params"]
    print(describe(cfg))
    parts = data["parts"]
    if data["mode"] == "inference":
        skv = dtypes.itemsize(pr.kv)
        X = F.kv_positions(cfg, T)
        rolling = "" if X == T else f" (a rolling window: {X:,} of the {T:,} positions kept)"
        print(f"inference memory, {pr}, {attention} attention, batch {B}, {T:,} tokens per sequence")
        notes = {"weights": _weights_note(cfg, pr, P),
                 "kv_cache": f"2·L·KV·HS·T·B × {skv} B = "
                             f"2·{cfg.n_layers}·{cfg.n_kv_heads}·{cfg.head_dim}·{X}·{B} × {skv}" + rolling,
                 "activations": f"the prefill's largest single activation "
                                f"({_activation_name(data['largest_activation'])}"
                                f"{', fused attention: no score matrix' if attention == 'fused' else ''}); the "
                                "measured peak of an unfused forward is a few times this (minitx check measures "
                                "2–2.5x)"}
    else:
        bpp = data["bytes_per_param"]
        print(f"training memory, recipe '{args.recipe}' ({bpp} bytes per parameter): {data['recipe_label']}")
        print(f"activations in {args.dtype} ({s} B per value), batch {B}, {T:,} tokens per sequence, unfused "
              "attention")
        r = RECIPES[args.recipe]
        notes = {"weights": f"{r.weights + r.master_weights} B/param"
                            + (" (bf16 + fp32 master copy)" if r.master_weights else ""),
                 "gradients": f"{r.gradients} B/param",
                 "optimizer_state": f"Adam m and v, {r.optimizer_state} B/param: two more copies",
                 "activations": "every activation the backward needs (attention probabilities B·NH·T² included, "
                                "no FlashAttention, no recomputation)"}
    for name, value in parts.items():
        print(f"  {name:<16}{value:>20,} B  {human_bytes(value):>24}   {notes[name]}")
    print(f"  {'total':<16}{data['total']:>20,} B  {human_bytes(data['total']):>24}")
    if data["mode"] == "inference":
        unf = data["unfused_attention"]
        if attention == "fused" and unf["activations"] != parts["activations"]:
            extra = unf["activations"] - parts["activations"]
            print(f"  unfused attention would keep {_activation_name(unf['largest_activation'])} = "
                  f"{unf['activations']:,} B ({human_bytes(unf['activations'])}) as the largest activation: it "
                  f"would add {extra:,} B ({human_bytes(extra)}), total {unf['total']:,} B "
                  f"({human_bytes(unf['total'])})")
        elif attention == "fused":
            print("  unfused attention would keep the same largest activation (its score matrix is smaller here)")
        full = data["full_forward_largest_activation"]
        if full["bytes"] != parts["activations"]:
            what = "the logits of all T rows, B·T·V" if full["name"] == "logits" else _activation_name(full["name"])
            print(f"  (a full forward that returns all T logits, as model.forward does, peaks at a larger activation: "
                  f"{what} = {full['bytes']:,} B, {human_bytes(full['bytes'])})")
    print(UNITS)
    return 0


# ---- flops ---------------------------------------------------------------------------------------------------

COMPONENTS = ("embedding", "attention: q k v o projections", "attention: scores + mix", "attention: softmax",
              "attention: fused kernel", "attention: rope, split, merge", "mlp: matmuls", "mlp: activation",
              "norms", "residual adds", "lm_head", "select last row", "loss", "optimizer")


# the row of the breakdown each op belongs to: by whole name, else by the last part of "layers.{i}.attn.qkv"
_COMPONENT = {"embed": "embedding", "lm_head": "lm_head", "loss": "loss", "adamw": "optimizer",
              "select_last": "select last row", "ln_f": "norms", "ln_1": "norms", "ln_2": "norms",
              "qkv": COMPONENTS[1], "proj": COMPONENTS[1], "scores": COMPONENTS[2], "mix": COMPONENTS[2],
              "softmax": COMPONENTS[3], "fused": COMPONENTS[4], "rope": COMPONENTS[5], "split": COMPONENTS[5],
              "merge": COMPONENTS[5], "up": "mlp: matmuls", "down": "mlp: matmuls", "act": "mlp: activation",
              "residual": "residual adds"}

PHASE_COLUMNS = {"train": ("forward", "backward", "optimizer"), "prefill": ("prefill",), "decode": ("decode",)}


def component(name: str) -> str:
    """The row of the breakdown an op name belongs to."""
    try:
        return _COMPONENT.get(name) or _COMPONENT[name.rsplit(".", 1)[-1]]
    except KeyError:
        raise ValueError(f"op {name!r} belongs to no component") from None


def _group(costs) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in costs:
        row = out.setdefault(component(c.name), {"flops": 0, "macs": 0, "bytes": 0})
        row["flops"] += c.flops
        row["macs"] += c.macs
        row["bytes"] += c.bytes
    return {k: out[k] for k in COMPONENTS if k in out}


def add_arguments_flops(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    _add_shape(p, "tokens per sequence (train, prefill), or the context after the decode step")
    p.add_argument("--phase", default="train", choices=("train", "prefill", "decode"),
                   help="train: one step (forward, backward, AdamW); prefill: the prompt pass; decode: one new "
                        "token per sequence with seq − 1 tokens cached (default: train)")
    add_precision_arguments(p, attention="phase")


def formulas_ledger(cfg: Config, phase: str, B: int, T: int, pr: dtypes.Precision, attention: str) -> Ledger:
    """The closed forms' Ledger of one phase, as `minitx flops` means its flags: train = one step on (B, T);
    prefill = B prompts of T tokens; decode = one step whose context after the step is T (T − 1 cached)."""
    if phase == "train":
        require_training_precision(pr)
        return F.training_step(cfg, B, T, pr)
    if phase == "prefill":
        return F.prefill(cfg, B, T, pr, attention)
    return F.decode_step(cfg, B, T - 1, pr, attention)


def _sums(g: Ledger) -> dict[str, int]:
    return {"flops": g.flops, "macs": g.macs, "bytes_read": g.bytes_read, "bytes_written": g.bytes_written,
            "calls": len(g)}


def flops_data(cfg: Config, ledger: Ledger, phase: str, B: int, T: int, pr: dtypes.Precision,
               attention: str, unfused: Ledger | None = None, source: str = "formulas",
               dtype: str | None = None) -> dict:
    """What `minitx flops --json` and `minitx count --json` print, from a Ledger of one phase: the formulas'
    (flops) or a counter's (count), so the two compare key by key. `unfused`: the same phase's Ledger with
    unfused attention, reported beside a fused one. `dtype`: the --dtype flag's format (default: the
    activations')."""
    P = F.num_params(cfg)
    by_phase = ledger.by("phase")
    columns = {col: _group(by_phase.get(col, Ledger())) for col in PHASE_COLUMNS[phase]}
    tokens = B if phase == "decode" else B * T
    rows: dict[str, dict[str, int]] = {}
    for col, groups in columns.items():
        for comp, v in groups.items():
            rows.setdefault(comp, {})[col] = v["flops"]
    rows = {k: rows[k] for k in COMPONENTS if k in rows}
    total = sum(sum(r.values()) for r in rows.values())
    by_col = {col: sum(v["flops"] for v in groups.values()) for col, groups in columns.items()}
    nbytes = sum(v["bytes"] for groups in columns.values() for v in groups.values())
    data = {"model": cfg.name, "source": source, "phase": phase, "batch": B, "seq": T, "tokens": tokens,
            "params": P, "dtype": dtype or pr.activations, **precision_data(pr, attention),
            "components": rows, "by_phase": by_col, "total": total,
            "bytes": nbytes, "intensity": total / nbytes if nbytes else None,
            "by_op": {k: _sums(g) for k, g in ledger.by("op").items()},
            "by_category": {c: {"bytes_read": ledger.reads.get(c, 0), "bytes_written": ledger.writes.get(c, 0)}
                            for c in CATEGORIES if c in ledger.reads or c in ledger.writes},
            "approx_2P_tokens": F.approx_forward_flops_2P(cfg, tokens),
            "approx_6P_tokens": F.approx_training_flops_6P(cfg, tokens),
            "attention_palm_per_token": F.attention_flops_palm(cfg, T),
            "attention_kaplan_per_token": F.attention_flops_kaplan(cfg, T)}
    if unfused is not None:
        data["unfused_attention"] = {"total": unfused.flops, "bytes": unfused.bytes,
                                     "intensity": unfused.intensity if unfused.bytes else None,
                                     "by_phase": {col: unfused.filter(phase=col).flops
                                                  for col in PHASE_COLUMNS[phase]}}
    return data


def phase_description(phase: str, B: int, T: int) -> str:
    return {"train": f"one training step on {B} × {T:,} tokens (forward, backward, AdamW)",
            "prefill": f"prefill of {_plural(B, 'prompt')} × {_plural(T, 'token')} (k, v into the cache; "
                       "logits of the last row only)",
            "decode": f"one decode step: {_plural(B, 'new token')}, each attending to {_plural(T, 'key')} "
                      f"({T - 1:,} cached)"}[phase]


def print_flops(cfg: Config, data: dict, heading: str) -> None:
    """The FLOPs table of `flops_data`'s dict, and the comparisons below it (flops and count print the same)."""
    phase = data["phase"]
    print(describe(cfg))
    print(heading)
    cols = list(data["by_phase"])
    total = data["total"]
    head = f"  {'component':<31}" + "".join(f"{c:>20}" for c in cols) + f"{'share':>8}"
    print(head)
    for comp, row in data["components"].items():
        share = sum(row.values()) / total if total else 0
        print(f"  {comp:<31}" + "".join(f"{row.get(c, 0):>20,}" for c in cols) + f"{100 * share:7.1f}%")
    print(f"  {'total':<31}" + "".join(f"{data['by_phase'][c]:>20,}" for c in cols) + f"{100.0:7.1f}%")
    tokens, P = data["tokens"], data["params"]
    fwd = data["by_phase"].get("forward", data["by_phase"].get(phase, 0))
    two_p, six_p = data["approx_2P_tokens"], data["approx_6P_tokens"]
    print(f"forward{'' if phase == 'train' else ' (this phase)'}: {fwd:,} = {human_flops(fwd)};  "
          f"2·P·tokens = 2·{P:,}·{tokens:,} = {two_p:,} ({100 * (fwd / two_p - 1):+.1f}%)")
    if phase == "train":
        fb = data["by_phase"]["forward"] + data["by_phase"]["backward"]
        print(f"forward + backward: {fb:,} = {human_flops(fb)};  6·P·tokens = {six_p:,} "
              f"({100 * (fb / six_p - 1):+.1f}%); backward / forward = {data['by_phase']['backward'] / fwd:.3f}")
    print(f"attention's scores + mix per token: 4·L·T·NH·HS = {data['attention_palm_per_token']:,} "
          f"(PaLM, the unfused count; Kaplan's 2·L·T·d_attn is half), vs 2·P = {2 * P:,}")
    if phase != "train":
        print(f"bytes moved ({data['precision']['text']}, {data['attention']} attention, every op reading its "
              f"inputs and writing its outputs once): {data['bytes']:,} B ({human_bytes(data['bytes'])}); "
              f"{data['intensity']:.1f} FLOP per byte")
    unf = data.get("unfused_attention")
    if unf and data["attention"] == "fused" and (unf["total"], unf["bytes"]) != (total, data["bytes"]):
        print(f"unfused attention (scores written out, read back by softmax and mix): {unf['total']:,} FLOPs "
              f"({100 * (unf['total'] / total - 1):+.1f}%), {unf['bytes']:,} B moved "
              f"({100 * (unf['bytes'] / data['bytes'] - 1):+.1f}%); {unf['intensity']:.1f} FLOP per byte")


def flops_arguments(args, cfg: Config) -> tuple[int, int, dtypes.Precision, str]:
    """(B, T, precision, attention) from the flags `minitx flops` and `minitx count` share."""
    _seq_default(args, cfg)
    B, T = _batch_seq(args, cfg)
    pr = precision_of(args)
    training = args.phase == "train"
    attention = attention_of(args, training)
    if training:
        require_training_precision(pr)
    return B, T, pr, attention


def flops(args) -> int:
    cfg = load_model(args.model)
    B, T, pr, attention = flops_arguments(args, cfg)
    ledger = formulas_ledger(cfg, args.phase, B, T, pr, attention)
    unfused = None
    if args.phase != "train":
        unfused = ledger if attention == "unfused" else formulas_ledger(cfg, args.phase, B, T, pr, "unfused")
    data = flops_data(cfg, ledger, args.phase, B, T, pr, attention, unfused, "formulas", DTYPES[args.dtype])
    if args.json:
        print_json(data)
        return 0
    print_flops(cfg, data, f"FLOPs of {phase_description(args.phase, B, T)}; {pr}, {attention} attention; "
                           "2 FLOPs per multiply-add")
    return 0


# ---- kv ------------------------------------------------------------------------------------------------------

def add_arguments_kv(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    add_precision_arguments(p)
    _add_shape(p, "tokens cached per sequence")


def kv_data(cfg: Config, pr: dtypes.Precision, B: int, T: int, attention: str = "fused",
            dtype: str | None = None) -> dict:
    """What `minitx kv` prints: the cache in pr.kv (the weights' format and the attention change nothing here)."""
    per_token = F.kv_bytes_per_token(cfg, pr)
    mha = 2 * cfg.n_layers * cfg.n_heads * cfg.head_dim * dtypes.itemsize(pr.kv)
    return {"model": cfg.name, "dtype": dtype or pr.kv, **precision_data(pr, attention), "batch": B, "seq": T,
            "n_layers": cfg.n_layers, "n_kv_heads": cfg.n_kv_heads, "n_heads": cfg.n_heads, "head_dim": cfg.head_dim,
            "bytes_per_token": per_token, "total": F.kv_cache_bytes(cfg, B, T, pr),
            "mha_bytes_per_token": mha, "mha_overcount": mha / per_token,
            **({"rolling_positions": F.kv_positions(cfg, T, rolling=True),
                "rolling_total": F.kv_cache_bytes(cfg, B, T, pr, rolling=True)} if cfg.sliding_window else {})}


def kv(args) -> int:
    cfg = load_model(args.model)
    _seq_default(args, cfg)
    B, T = _batch_seq(args, cfg)
    pr = precision_of(args)
    d = kv_data(cfg, pr, B, T, attention_of(args, training=False), DTYPES[args.dtype])
    if args.json:
        print_json(d)
        return 0
    s = dtypes.itemsize(pr.kv)
    X = F.kv_positions(cfg, T)
    print(describe(cfg))
    print(f"KV cache, {dtypes.short(pr.kv)} ({s} B per value): K and V, for every layer and every kv head")
    print(f"  per token  2·L·KV·HS·bytes = 2·{cfg.n_layers}·{cfg.n_kv_heads}·{cfg.head_dim}·{s} = "
          f"{d['bytes_per_token']:,} B ({d['bytes_per_token'] / 2**10:,.1f} KiB)")
    held = _plural(T, 'token') if X == T else f"{X:,} positions (a rolling window, of {T:,} tokens)"
    print(f"  total      × {held} × {_plural(B, 'sequence')} = {d['total']:,} B "
          f"({human_bytes(d['total'])})")
    if cfg.sliding_window and d["rolling_positions"] < T:
        W = cfg.sliding_window
        print(f"  rolling    with a sliding window of W = {W:,}, a cache that keeps the last W + chunk − 1 = "
              f"{d['rolling_positions']:,} positions (chunk: the most tokens one call writes, W by default; fused "
              f"attention reads it) holds {d['rolling_total']:,} B ({human_bytes(d['rolling_total'])})")
    if cfg.n_kv_heads != cfg.n_heads:
        print(f"  a calculator that assumes multi-head attention (KV = NH = {cfg.n_heads}) says "
              f"{d['mha_bytes_per_token']:,} B per token: {d['mha_overcount']:.0f}x too much")
    print(UNITS)
    return 0

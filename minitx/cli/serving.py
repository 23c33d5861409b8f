"""`minitx hw`, `minitx roofline`, `minitx cost`: hardware, the roofline model of serving, and what a token costs.

    minitx hw [--dtype bf16] [--json]                 presets: peak, bandwidth, memory, ridge point
    minitx hw --measure [--seconds 2] [--json]        measure this machine (NumPy matmul peak, copy bandwidth)
    minitx roofline MODEL --hw h100 --batch 1,8,64 --prompt 1000 --gen 200 --dtype bf16 [--json] [--plot F.png]
    minitx cost MODEL --hw h100 --gpu-price 2.5 --api-price-in 0.5 --api-price-out 1.5 [--batch 32]
                [--prompt 1000 --gen 200] [--utilization 0.5] [--json]

roofline and cost take the precision flags (minitx.cli.common): --dtype, --weight-dtype, --kv-dtype and
--attention (default fused, what servers run; the unfused figures are printed beside). The matmuls compute in
the activations' format, so its peak is the one used: int8/int4 weights are weight-only quantization (W8A16,
W4A16), dequantized to bf16, and take the bf16 peak, not the chip's int8 one. Weight bytes (for the roofline,
the floors and the memory check) are the quantized ones, scales included.

MODEL is a preset name (`minitx params --help` lists them) or the path of a Hugging Face config.json. Times are
predicted from the formulas' op costs (no model is built), op by op: max(FLOPs / peak, bytes / bandwidth).
Units: GB = 1e9 bytes, GB/s = 1e9 bytes/s, TFLOP/s = 1e12 FLOP/s, ms = 1e-3 s; money in US dollars.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import NamedTuple

from .. import checks, dtypes
from ..accounting import formulas
from ..core.config import Config
from ..serving import cost as cost_model
from ..serving import hardware as hw_mod
from ..serving import latency as srv
from ..units import rate
from .common import (DTYPES, add_model_argument, add_precision_arguments, attention_of, load_model,
                     precision_data, precision_of, print_json, whole_number)

DTYPE_CHOICES = tuple(DTYPES)


class Deployment(NamedTuple):
    """What is served: the number formats and the attention kernel."""
    precision: dtypes.Precision
    attention: str

    @property
    def peak_dtype(self) -> str:
        """The hardware peak that applies: the activations' format, the one the matmuls compute in."""
        return srv.peak_dtype(self.precision)

    def unfused(self) -> "Deployment":
        return Deployment(self.precision, "unfused")


# ---- shared argument parsing ---------------------------------------------------------------------------------

def parse_batches(text: str) -> list[int]:
    """"1,8,64" -> [1, 8, 64]; every batch an integer >= 1."""
    return [whole_number(part.strip(), "--batch (integers separated by commas, e.g. 1,8,64)")
            for part in str(text).split(",")]


def _add_hardware_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hw", default="h100-sxm", metavar="NAME",
                   help="hardware preset (minitx hw lists them), 'cpu' to measure this machine, or a .json/.toml "
                        "file (default: h100-sxm)")
    add_precision_arguments(p, dtype_help=(
        "the shorthand that sets both precisions: fp32/fp16/bf16 for activations, weights and KV cache; int8 = "
        "int8 weights and KV cache with bf16 activations, int4 = int4 weights with a bf16 cache and activations. "
        "The matmuls compute in the activations' format, so its peak is used: int8/int4 (weight-only) take the "
        "bf16 peak (default: bf16)"))
    p.add_argument("--bandwidth", type=float, metavar="GB/s", help="override the memory bandwidth, in GB/s")
    p.add_argument("--peak", type=float, metavar="TFLOP/s",
                   help="override the dense peak of the activations' format (bf16 for --dtype int8/int4), in "
                        "TFLOP/s")
    p.add_argument("--memory", type=float, metavar="GB", help="override the memory size, in GB")


def _deployment(args) -> Deployment:
    return Deployment(precision_of(args), attention_of(args, training=False))


def _hardware(args, dep: Deployment) -> hw_mod.Hardware:
    """The --hw preset, with any --bandwidth/--peak/--memory overrides applied (and checked by Hardware)."""
    base = hw_mod.get(args.hw)
    if args.bandwidth is None and args.peak is None and args.memory is None:
        return base
    for flag, unit in (("bandwidth", "GB/s"), ("peak", "TFLOP/s"), ("memory", "GB")):   # as typed, unconverted
        if getattr(args, flag) is not None:
            checks.positive(f"--{flag} (in {unit})", getattr(args, flag))
    peaks = dict(base.peak_flops)
    if args.peak is not None:
        peaks[dep.peak_dtype] = args.peak * 1e12
    return dataclasses.replace(                     # keeps every other field (the interconnect among them)
        base, name=base.name + " (overridden)", peak_flops=peaks,
        bandwidth=base.bandwidth if args.bandwidth is None else args.bandwidth * 1e9,
        memory=base.memory if args.memory is None else args.memory * 1e9,
        notes="figures overridden on the command line")


def _check_fits(cfg: Config, hw: hw_mod.Hardware, pr: dtypes.Precision, batches: list[int], context: int) -> None:
    if context > cfg.n_ctx:
        raise ValueError(f"prompt + gen = {context} tokens exceeds {cfg.name}'s context n_ctx={cfg.n_ctx}")
    for B in batches:
        need = srv.memory_needed(cfg, pr, B, context)
        if need > hw.memory:
            weights = formulas.param_bytes(cfg, pr)
            most = srv.max_batch(cfg, hw, pr, context)
            hint = (f"the largest batch that fits at {context} tokens per sequence is {most}" if most else
                    "the weights alone do not fit")
            raise ValueError(f"batch {B} does not fit in {hw.name}'s memory: it needs {need / 1e9:.2f} GB "
                             f"(weights {weights / 1e9:.2f} GB + KV cache {(need - weights) / 1e9:.2f} GB at "
                             f"{context} tokens per sequence) > {hw.memory / 1e9:.2f} GB; {hint} (--memory GB "
                             "models several chips' memory; --weight-dtype int8/int4 and --kv-dtype int8 shrink them)")


DEFAULT_PROMPT, DEFAULT_GEN = 1000, 200


def _add_lengths(p: argparse.ArgumentParser, per: str) -> None:
    p.add_argument("--prompt", type=int, default=None,
                   help=f"prompt tokens per {per} (default {DEFAULT_PROMPT}, or 5/6 of a shorter context)")
    p.add_argument("--gen", type=int, default=None,
                   help=f"generated tokens per {per} (default {DEFAULT_GEN}, or what is left of a shorter context)")


def _lengths(args, cfg: Config) -> None:
    """Fill in --prompt and --gen: the defaults, shrunk to fit a model whose context is shorter than 1,200 tokens
    (GPT-2's 1,024: 853 + 171), and check both are >= 1."""
    if args.prompt is None:
        args.prompt = min(DEFAULT_PROMPT, cfg.n_ctx * 5 // 6)
    if args.gen is None:
        args.gen = max(1, min(DEFAULT_GEN, cfg.n_ctx - args.prompt))
    for flag in ("prompt", "gen"):
        checks.integer(f"--{flag}", getattr(args, flag))


def _require_plotting(args) -> None:
    if getattr(args, "plot", None):
        from .. import plots
        plots.require_matplotlib()


def _plot_path(args) -> str | None:
    """--plot's path, checked before any work: matplotlib present, the folder there, no file overwritten unless
    --overwrite."""
    if not args.plot:
        return None
    _require_plotting(args)
    folder = os.path.dirname(os.path.abspath(args.plot))
    if not os.path.isdir(folder):
        raise ValueError(f"--plot {args.plot}: no folder {folder!r}")
    if os.path.exists(args.plot) and not args.overwrite:
        raise ValueError(f"--plot {args.plot} exists; pass --overwrite to replace it")
    return args.plot


# ---- minitx hw -------------------------------------------------------------------------------------------------

def add_arguments_hw(p: argparse.ArgumentParser) -> None:
    p.add_argument("--measure", action="store_true",
                   help="measure this machine (fp32/fp64 matmul FLOP/s through NumPy, copy bandwidth)")
    p.add_argument("--seconds", type=float, default=2.0, help="time budget of --measure, seconds (default 2)")
    p.add_argument("--dtype", default="bf16", help="dtype of the ridge-point column (default bf16)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def hw(args) -> int:
    if args.measure:
        machine = hw_mod.measure(seconds_budget=args.seconds)
        if args.json:
            print_json(machine.to_dict() | {"ridge": {d: machine.ridge(d) for d in machine.peak_flops}})
            return 0
        print(f"this machine ({machine.source.split('CPU: ')[-1]})")
        for dtype, peak in machine.peak_flops.items():
            print(f"  {dtype} matmul peak   {peak / 1e9:10.2f} GFLOP/s   ridge {machine.ridge(dtype):7.2f} FLOP/B")
        print(f"  copy bandwidth   {machine.bandwidth / 1e9:10.2f} GB/s")
        print(f"  memory           {machine.memory / 1e9:10.2f} GB  (GB = 1e9 bytes)")
        print(f"  {machine.notes}")
        return 0
    key = dtypes.short(args.dtype)
    rows = [hw_mod.PRESETS[name] for name in hw_mod.presets()]
    if args.json:
        print_json({"presets": [h.to_dict() | {"ridge": {d: h.ridge(d) for d in h.peak_flops}} for h in rows]})
        return 0
    head = (f"{'name':<16} {key + ' TFLOP/s':>14} {'fp32 TFLOP/s':>13} {'GB/s':>7} {'GB':>5} "
            f"{'ridge ' + key:>11} {'sparse halved':>14}")
    print("Dense peaks (2 FLOPs per multiply-add); ridge = peak / bandwidth in FLOP/byte; GB = 1e9 bytes.")
    print(head)
    print("-" * len(head))
    for h in rows:
        peak = f"{h.peak_flops[key] / 1e12:14.1f}" if key in h.peak_flops else f"{'-':>14}"
        fp32 = f"{h.peak_flops['fp32'] / 1e12:13.1f}" if "fp32" in h.peak_flops else f"{'-':>13}"
        ridge = f"{h.ridge(key):11.1f}" if key in h.peak_flops else f"{'-':>11}"
        print(f"{h.name:<16} {peak} {fp32} {h.bandwidth / 1e9:7.0f} {h.memory / 1e9:5.0f} {ridge} "
              f"{'yes' if h.sparse_halved else 'no':>14}")
    print("'minitx hw --measure' measures this machine; 'cpu' or 'this-machine' works as --hw elsewhere.")
    return 0


# ---- minitx roofline -------------------------------------------------------------------------------------------

def add_arguments_roofline(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    _add_hardware_arguments(p)
    p.add_argument("--batch", default="1,8,64", help="batch sizes, comma-separated (default 1,8,64)")
    _add_lengths(p, "sequence")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--plot", metavar="FILE.png", help="save a roofline chart and the batch sweep (needs matplotlib)")
    p.add_argument("--overwrite", action="store_true", help="let --plot replace an existing file")


def roofline_report(cfg: Config, hw: hw_mod.Hardware, dep: Deployment, batches: list[int], prompt: int,
                    gen: int, dtype: str | None = None) -> dict:
    """Everything `minitx roofline` prints, as plain data (and the Roofline objects for plots). `dtype`: the
    --dtype flag as typed (default: the activations' format)."""
    pr = dep.precision
    points = [srv.serving_point(cfg, hw, dep.precision, b, prompt, gen, dep.attention) for b in batches]
    crit = srv.critical_batch(cfg, hw, pr)
    mid = prompt + max(gen - 2, 0) // 2
    report = {
        "model": cfg.name, "hardware": hw.to_dict(), "dtype": dtype or dep.peak_dtype,
        **precision_data(pr, dep.attention), "peak_dtype": dep.peak_dtype, "prompt": prompt, "gen": gen,
        "params": formulas.num_params(cfg), "weight_bytes": formulas.param_bytes(cfg, pr),
        "kv_bytes_per_token": formulas.kv_bytes_per_token(cfg, pr),
        "ridge": hw.ridge(dep.peak_dtype),
        "decode_floor_b1": {e: srv.decode_floor(cfg, hw, pr, 1, 0, e).to_dict()
                            for e in srv.EMBEDDING_CONVENTIONS},
        "prefill_floor_b1": srv.prefill_floor(cfg, hw, pr, prompt, 1).to_dict(),
        "points": [p.to_dict() for p in points],
        "critical_batch": crit.to_dict(),
        "max_batch": srv.max_batch(cfg, hw, pr, prompt + gen),
        "_rooflines": {f"{ph} B={b}": (srv.prefill_roofline(cfg, hw, pr, b, prompt, dep.attention)
                                       if ph == "prefill" else srv.decode_roofline(cfg, hw, pr, b, mid, dep.attention))
                       for b in batches for ph in ("prefill", "decode")},
        "_points": points,
    }
    if dep.attention == "fused":
        unfused = [srv.serving_point(cfg, hw, dep.precision, b, prompt, gen, "unfused") for b in batches]
        report["unfused_attention"] = {"points": [p.to_dict() for p in unfused]}
        report["_unfused_points"] = unfused
    return report


def roofline(args) -> int:
    cfg = load_model(args.model)
    batches = parse_batches(args.batch)
    _lengths(args, cfg)
    _plot_path(args)
    dep = _deployment(args)
    hw = _hardware(args, dep)
    hw.peak(dep.peak_dtype)                                    # no peak for this dtype: say so before any work
    _check_fits(cfg, hw, dep.precision, batches, args.prompt + args.gen)
    report = roofline_report(cfg, hw, dep, batches, args.prompt, args.gen, args.dtype)
    if args.plot:
        from .. import plots
        plots.serving_figure(report["_rooflines"], report["_points"], args.plot,
                             title=f"{cfg.name} on {hw.name}, {dep.precision}, {dep.attention} attention")
    if args.json:
        data = {k: v for k, v in report.items() if not k.startswith("_")}
        data["ops"] = {k: r.to_dict()["by_op"] for k, r in report["_rooflines"].items()}
        if args.plot:
            data["plot"] = args.plot
        print_json(data)
        return 0
    r = report
    pr = dep.precision
    print(f"{cfg.name}: {r['params']:,} parameters, {r['weight_bytes'] / 1e9:.2f} GB of weights "
          f"({pr}), KV cache {r['kv_bytes_per_token']:,} bytes per token in {dtypes.short(pr.kv)} "
          f"(GB = 1e9 bytes); {dep.attention} attention")
    why = (f" (the matmuls compute in {dep.peak_dtype}: {pr.weights} weights are dequantized)" if pr.quantized
           else "")
    print(f"{hw.name}: {rate(hw.peak(dep.peak_dtype))} dense {dep.peak_dtype}{why}, "
          f"{hw.bandwidth / 1e9:,.1f} GB/s, {hw.memory / 1e9:,.1f} GB; ridge {r['ridge']:.1f} FLOP/byte")
    print()
    read, gather = r["decode_floor_b1"]["read"], r["decode_floor_b1"]["gather"]
    pre = r["prefill_floor_b1"]
    print("Classic whole-step forms, batch 1:")
    print(f"  decode floor = weight bytes / bandwidth  = {read['time'] * 1e3:.3f} ms every parameter read; "
          f"{gather['time'] * 1e3:.3f} ms with the embedding gathered (one row per token)")
    print(f"  prefill      = (2·P·T + causal attention) / peak = {pre['t_compute'] * 1e3:.3f} ms for T={args.prompt} "
          f"at 100% of peak ({pre['flops'] / 1e12:,.3f} TFLOP)")
    print()
    print(f"Op by op (formulas' costs; Σ max(FLOPs/peak, bytes/bandwidth)), prompt {args.prompt}, gen {args.gen}, "
          f"{dep.attention} attention:")
    print(srv.sweep_table(r["_points"]))
    if "_unfused_points" in r:
        print("unfused attention (score matrices written to memory and read back), the same batches:")
        for fused, unf in zip(r["_points"], r["_unfused_points"]):
            if (fused.ttft, fused.tpot) == (unf.ttft, unf.tpot):
                continue
            print(f"  batch {unf.batch:>6,}: TTFT {unf.ttft * 1e3:,.3f} ms "
                  f"({100 * (unf.ttft / fused.ttft - 1):+.1f}%), "
                  f"TPOT {unf.tpot * 1e3:,.3f} ms ({100 * (unf.tpot / fused.tpot - 1):+.1f}%), "
                  f"{unf.tokens_per_s:,.0f} tok/s")
    print()
    crit = r["critical_batch"]
    per = "itemsize" if not pr.quantized else f"{crit['bytes_per_weight']:.3f} B per weight"
    print(f"Critical batch (decode matmuls turn compute-bound): ridge · {per} / 2 = {crit['analytic']:.1f} "
          f"(weights only); {crit['from_ops'] or '> 2**24'} counting the activations each matmul also moves")
    print(f"Largest batch whose KV cache fits next to the weights at {args.prompt + args.gen} tokens: "
          f"{r['max_batch']}")
    first = batches[0]
    for ph in ("prefill", "decode"):
        print()
        print(f"{ph}, batch {first}, by op kind:")
        print(r["_rooflines"][f"{ph} B={first}"].table("op"))
    if args.plot:
        print(f"\nplot saved to {args.plot}")
    return 0


# ---- minitx cost -----------------------------------------------------------------------------------------------

def add_arguments_cost(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    _add_hardware_arguments(p)
    p.add_argument("--gpu-price", type=float, required=True, metavar="USD/h",
                   help="dollars per hour for the hardware serving one copy of the model")
    p.add_argument("--api-price-in", type=float, required=True, metavar="USD/M",
                   help="API price per million input (prompt) tokens")
    p.add_argument("--api-price-out", type=float, required=True, metavar="USD/M",
                   help="API price per million output (completion) tokens")
    p.add_argument("--batch", type=int, default=32, help="sequences decoded together (default 32)")
    _add_lengths(p, "request")
    p.add_argument("--utilization", type=float, default=1.0,
                   help="fraction of the paid hours the GPU is busy, in (0, 1] (default 1)")
    p.add_argument("--step", choices=("ops", "classic"), default="ops",
                   help="step-time model: 'ops' = op-by-op roofline of the formulas (default); 'classic' = "
                        "prefill (2·P·T + causal attention)/peak, decode B·KV/BW + max(W/BW, 2·B·P/peak)")
    p.add_argument("--prefill-tps", type=float, metavar="TOK/S",
                   help="use this prefill throughput (prompt tokens/s over the batch) instead of the roofline's")
    p.add_argument("--decode-tps", type=float, metavar="TOK/S",
                   help="use this decode throughput (tokens/s over the batch) instead of the roofline's")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _throughput(cfg: Config, hw: hw_mod.Hardware, args, dep: Deployment) -> tuple[cost_model.Throughput, dict]:
    """Prefill and decode tokens/s from the chosen step-time model, and the step times used."""
    B, T, G = args.batch, args.prompt, args.gen
    if args.step == "ops":
        point = srv.serving_point(cfg, hw, dep.precision, B, T, G, dep.attention)
        ttft, tpot = point.ttft, point.tpot
    else:
        ttft = srv.prefill_floor(cfg, hw, dep.precision, T, B).time
        # mean over the decode steps: the cache holds T, T+1, ..., T+G-2 tokens (affine: the mean of the ends)
        last = T + max(G - 2, 0)
        first_step = srv.decode_floor(cfg, hw, dep.precision, B, T).time
        tpot = (first_step + srv.decode_floor(cfg, hw, dep.precision, B, last).time) / 2
    thr = cost_model.Throughput.from_step_times(batch=B, decode_step_seconds=tpot, prompt_tokens=T,
                                                prefill_seconds=ttft)
    pre = thr.prefill_tokens_per_s if args.prefill_tps is None else args.prefill_tps
    dec = thr.decode_tokens_per_s if args.decode_tps is None else args.decode_tps
    return cost_model.Throughput(pre, dec), {"ttft": ttft, "tpot": tpot, "step_model": args.step}


def cost(args) -> int:
    cfg = load_model(args.model)
    checks.integer("--batch", args.batch)
    _lengths(args, cfg)
    dep = _deployment(args)
    hw = _hardware(args, dep)
    hw.peak(dep.peak_dtype)
    _check_fits(cfg, hw, dep.precision, [args.batch], args.prompt + args.gen)
    throughput, steps = _throughput(cfg, hw, args, dep)
    workload = cost_model.Workload(prompt_tokens=args.prompt, completion_tokens=args.gen)
    api = cost_model.ApiPrice(input_per_million=args.api_price_in, output_per_million=args.api_price_out)
    result = cost_model.compare(args.gpu_price, throughput, workload, api, utilization=args.utilization)
    unfused = None
    if args.step == "ops" and dep.attention == "fused":
        # the same deployment with unfused attention (the classic step model has no attention kernel to change)
        thr_u, steps_u = _throughput(cfg, hw, args, dep.unfused())
        res_u = cost_model.compare(args.gpu_price, thr_u, workload, api, utilization=args.utilization)
        unfused = {"ttft": steps_u["ttft"], "tpot": steps_u["tpot"], "throughput": thr_u.to_dict(),
                   "self_cost_per_request": res_u.self_cost_per_request,
                   "self_input_per_million": res_u.self_input_per_million,
                   "self_output_per_million": res_u.self_output_per_million,
                   "break_even_utilization": res_u.break_even_utilization, "verdict": res_u.verdict}
    if args.json:
        print_json({"model": cfg.name, "hardware": hw.name, "dtype": args.dtype,
                     **precision_data(dep.precision, dep.attention), "peak_dtype": dep.peak_dtype,
                     "batch": args.batch, "gpu_price_per_hour": args.gpu_price, **steps,
                     "throughput": throughput.to_dict(), "workload": workload.to_dict(), "api_price": api.to_dict(),
                     **result.to_dict(), "summary": result.summary(),
                     **({"unfused_attention": unfused} if unfused else {})})
        return 0
    print(f"{cfg.name} on {hw.name} ({dep.precision}, {dep.attention} attention, {dep.peak_dtype} peak), batch "
          f"{args.batch}, {args.prompt} prompt + {args.gen} completion tokens per request, ${args.gpu_price:.2f}/h at "
          f"{args.utilization:.0%} utilization")
    source = "given" if args.prefill_tps or args.decode_tps else f"roofline, {args.step} step model"
    print(f"  throughput ({source}): prefill {throughput.prefill_tokens_per_s:,.0f} tok/s, "
          f"decode {throughput.decode_tokens_per_s:,.0f} tok/s (whole batch); "
          f"TTFT {steps['ttft'] * 1e3:.2f} ms, TPOT {steps['tpot'] * 1e3:.3f} ms")
    print(f"  self-hosted: ${result.self_input_per_million:.4f} per M input, "
          f"${result.self_output_per_million:.4f} per M output, ${result.self_cost_per_request:.6f} per request "
          f"(${result.self_blended_per_million:.4f} per M tokens blended)")
    print(f"  API:         ${args.api_price_in:.4f} per M input, ${args.api_price_out:.4f} per M output, "
          f"${result.api_cost_per_request:.6f} per request (${result.api_blended_per_million:.4f} per M blended)")
    print(f"  break-even utilization {result.break_even_utilization:.1%}; {result.requests_per_hour:,.0f} "
          f"requests per paid hour")
    if unfused and (unfused["ttft"], unfused["tpot"]) != (steps["ttft"], steps["tpot"]):
        print(f"  unfused attention: TTFT {unfused['ttft'] * 1e3:.2f} ms, TPOT {unfused['tpot'] * 1e3:.3f} ms; "
              f"${unfused['self_output_per_million']:.4f} per M output, ${unfused['self_cost_per_request']:.6f} "
              f"per request, break-even utilization {unfused['break_even_utilization']:.1%}")
    print(f"  {result.summary()}")
    return 0

"""`minitx simulate`: serve a workload with a real model on real GPUs, simulated (minitx.serving.simulator).

    minitx simulate llama-3-8b --hw h100 --dtype bf16 --rate 20 --num-requests 1000 --prompt 512 --gen 16-512
    minitx simulate llama-3-8b --hw h100 --trace requests.jsonl --policy static --kv-layout contiguous --json
    minitx simulate llama-2-70b --hw h100 --tp 4 --rate 5 --plot serving.png

The workload is Poisson arrivals at --rate requests/s, --num-requests of them, prompt and output lengths fixed
(--prompt 512) or uniform on a range (--gen 16-512), drawn from --seed; or a JSON Lines trace (--trace FILE, one
request a line: arrival_s, prompt_len, gen_len, optional max_new_tokens; minitx.serving.workload). The engine's
scheduler and KV block manager serve it; each step's time is the roofline of its exact op costs on --hw, at the
fractions --mfu and --mbu of peak FLOP/s and bandwidth, on --tp chips (Megatron tensor parallelism, with two ring
all-reduces per layer over the chips' link). The same seed gives byte-identical --json.

--plot F.png draws latency against offered load for static and continuous batching (the workload replayed at 1/4
to 4 times its rate: ten more simulations), and the run's KV memory and batch size over time. An existing file is
kept unless --overwrite is given.
"""
from __future__ import annotations

import argparse

from .. import checks
from ..serving import hardware as hw_mod
from ..serving import simulator, workload
from ..serving.scheduler import LAYOUTS, POLICIES
from .common import add_model_argument, load_model, precision_data, print_json, whole_number
from .serving import _add_hardware_arguments, _deployment, _hardware, _plot_path

DEFAULT_REQUESTS, DEFAULT_PROMPT, DEFAULT_GEN = 1000, "512", "128"
MAX_REQUESTS = 1_000_000            # a million requests take minutes; more is a typo
SWEEP_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def add_arguments_simulate(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    _add_hardware_arguments(p)
    load = p.add_argument_group("workload: Poisson arrivals (--rate ...) or a trace (--trace FILE)")
    load.add_argument("--rate", type=float, metavar="R", help="requests per second, Poisson arrivals")
    load.add_argument("--num-requests", metavar="N",
                      help=f"requests in the Poisson workload (default {DEFAULT_REQUESTS})")
    load.add_argument("--prompt", metavar="P", help=f"prompt tokens: a length, or LOW-HIGH for uniform lengths "
                                                    f"(default {DEFAULT_PROMPT})")
    load.add_argument("--gen", metavar="G", help=f"output tokens each request generates: a length, or LOW-HIGH "
                                                 f"(default {DEFAULT_GEN})")
    load.add_argument("--max-new-tokens", metavar="N",
                      help="the cap every Poisson request states (a contiguous KV cache reserves prompt + cap); "
                           "default: the model's context minus the prompt")
    load.add_argument("--trace", metavar="FILE.jsonl", help="a JSON Lines trace: arrival_s, prompt_len, gen_len "
                                                            "(and optional max_new_tokens) per line")
    load.add_argument("--seed", default="0", metavar="S", help="seed of the Poisson workload (default 0)")
    serve = p.add_argument_group("the server")
    serve.add_argument("--policy", default="continuous", choices=POLICIES,
                       help="continuous: requests join and leave every step (Orca); static: a batch runs until "
                            "its longest member ends (default continuous)")
    serve.add_argument("--kv-layout", default="paged", choices=LAYOUTS,
                       help="paged: blocks as a sequence grows (vLLM); contiguous: prompt + cap reserved at "
                            "admission (default paged)")
    serve.add_argument("--block-size", default="16", metavar="N", help="KV block size in tokens (default 16)")
    serve.add_argument("--max-batch", default="256", metavar="N", help="most sequences in a step (default 256)")
    serve.add_argument("--chunked-prefill", default=None, metavar="N",
                       help="per-step token budget shared by prompt chunks and decode tokens (vLLM's "
                            "max_num_batched_tokens; at least --max-batch); default: whole prompts")
    serve.add_argument("--tp", default="1", metavar="N", help="chips the model is split over (tensor "
                                                              "parallelism; default 1)")
    serve.add_argument("--mfu", type=float, default=1.0, metavar="F",
                       help="fraction of the peak FLOP/s the kernels reach, in (0, 1] (default 1)")
    serve.add_argument("--mbu", type=float, default=1.0, metavar="F",
                       help="fraction of the memory bandwidth the kernels reach, in (0, 1] (default 1)")
    serve.add_argument("--memory-fraction", type=float, default=0.9, metavar="F",
                       help="share of each chip's memory for weights and KV cache, the rest left for "
                            "activations (vLLM's gpu_memory_utilization; default 0.9)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--plot", metavar="FILE.png", help="latency vs offered load, KV memory and batch size over time "
                                                      "(needs matplotlib)")
    p.add_argument("--overwrite", action="store_true", help="let --plot replace an existing file")


def parse_lengths(text: str, flag: str) -> int | tuple[int, int]:
    """"512" -> 512; "16-512" -> (16, 512): a length, or a closed range drawn uniformly."""
    text = str(text).strip()
    low, sep, high = text.partition("-")
    if not sep:
        return whole_number(text, flag)
    lo = whole_number(low, f"{flag} (the low end of LOW-HIGH)")
    hi = whole_number(high, f"{flag} (the high end of LOW-HIGH)")
    if hi < lo:
        raise ValueError(f"{flag} {text}: the high end is below the low end")
    return lo, hi


def _jobs(args, n_ctx: int) -> tuple[list[workload.Job], dict]:
    """The workload the flags describe, and its description for the report."""
    poisson_flags = {"--rate": args.rate, "--num-requests": args.num_requests, "--prompt": args.prompt,
                     "--gen": args.gen, "--max-new-tokens": args.max_new_tokens}
    if args.trace is not None:
        given = [flag for flag, value in poisson_flags.items() if value is not None]
        if given:
            raise ValueError(f"--trace gives the whole workload; drop {', '.join(given)}")
        jobs = workload.read_trace(args.trace, n_ctx)
        return jobs, {"trace": args.trace, "requests": len(jobs),
                      "offered_rate": simulator.offered_rate(jobs)}
    if args.rate is None:
        raise ValueError("give the workload: --rate R (with --num-requests, --prompt, --gen) or --trace FILE")
    rate = checks.positive("--rate", args.rate)
    count = whole_number(args.num_requests or DEFAULT_REQUESTS, "--num-requests")
    if count > MAX_REQUESTS:
        raise ValueError(f"--num-requests must be at most {MAX_REQUESTS:,}, got {count:,}")
    prompt = parse_lengths(args.prompt or DEFAULT_PROMPT, "--prompt")
    gen = parse_lengths(args.gen or DEFAULT_GEN, "--gen")
    cap = None if args.max_new_tokens is None else whole_number(args.max_new_tokens, "--max-new-tokens")
    seed = whole_number(args.seed, "--seed", 0)
    try:
        jobs = workload.poisson(rate, count, prompt, gen, n_ctx, seed, cap)
    except ValueError as e:
        raise ValueError(f"{e} (--prompt, --gen, --max-new-tokens)") from None
    return jobs, {"rate": rate, "requests": count, "prompt": prompt, "gen": gen, "max_new_tokens": cap,
                  "seed": seed}


def simulate(args) -> int:
    cfg = load_model(args.model)
    dep = _deployment(args)
    hw = _hardware(args, dep)                                  # overrides keep the preset's link
    hw.peak(dep.peak_dtype)                                    # no peak for this dtype: say so before any work
    plot = _plot_path(args)
    jobs, load = _jobs(args, cfg.n_ctx)
    options = dict(dtype=dep.precision, attention=dep.attention, kv_layout=args.kv_layout,
                   block_size=whole_number(args.block_size, "--block-size"),
                   max_batch=whole_number(args.max_batch, "--max-batch"),
                   chunked_prefill=None if args.chunked_prefill is None else
                   whole_number(args.chunked_prefill, "--chunked-prefill"),
                   tp=whole_number(args.tp, "--tp"), mfu=checks.number("--mfu", args.mfu, 0.0, 1.0, low_open=True),
                   mbu=checks.number("--mbu", args.mbu, 0.0, 1.0, low_open=True),
                   memory_fraction=checks.number("--memory-fraction", args.memory_fraction, 0.0, 1.0,
                                                 low_open=True))
    result = simulator.simulate(cfg, hw, jobs, policy=args.policy, **options)
    sweep = None
    if plot:
        sweep = simulator.load_sweep(cfg, hw, jobs, SWEEP_FACTORS, **options)
        from .. import plots
        plots.simulation_figure(result, sweep, plot, title=f"{cfg.name} on {options['tp']} × {hw.name}, "
                                f"{dep.precision}, {args.policy} batching, {args.kv_layout} KV cache")
    if args.json:
        data = {"model": cfg.name, "hardware": hw.to_dict(), **precision_data(dep.precision, dep.attention),
                "workload": load, **result.to_dict()}
        if sweep is not None:
            data["load_sweep"] = [point.to_dict() for point in sweep]
            data["plot"] = plot
        print_json(data)
        return 0
    _print_report(cfg.name, hw, dep, load, result, plot)
    return 0


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.1f} ms"


def _print_report(model: str, hw: hw_mod.Hardware, dep, load: dict, result: simulator.SimulationResult,
                  plot: str | None) -> None:
    s, mem, st = result.summary, result.memory, result.settings
    chips = f"{st['tp']} × {hw.name}" if st["tp"] > 1 else hw.name
    print(f"{model} on {chips}, {dep.precision}, {dep.attention} attention, at {st['mfu']:.0%} of peak FLOP/s and "
          f"{st['mbu']:.0%} of bandwidth")
    what = (f"trace {load['trace']}: {load['requests']:,} requests" if "trace" in load else
            f"{load['requests']:,} requests, Poisson at {load['rate']:g}/s, prompt {_lengths(load['prompt'])}, "
            f"output {_lengths(load['gen'])} tokens (seed {load['seed']})")
    print(f"  workload   {what}")
    print(f"  server     {st['policy']} batching, {st['kv_layout']} KV cache, blocks of {st['block_size']}, at most "
          f"{st['max_batch']} sequences a step" + (f", {st['chunked_prefill']:,}-token steps (chunked prefill)"
                                                   if st["chunked_prefill"] else ""))
    print(f"  memory     per chip: {mem.weights / 1e9:,.2f} GB of weights, {mem.kv_bytes / 1e9:,.2f} GB of KV cache "
          f"({mem.num_blocks:,} blocks, {mem.kv_tokens:,} tokens) in {mem.usable / 1e9:,.2f} GB usable of "
          f"{mem.memory / 1e9:,.2f} GB (GB = 1e9 bytes)")
    if mem.num_blocks < mem.fit_blocks:
        print(f"             ({mem.fit_blocks:,} blocks fit; the pool is cut to the {mem.num_blocks:,} that this run's "
              f"largest batch of its longest requests could ever hold)")
    print(f"  throughput {s.throughput_tok_s:,.0f} output tokens/s over {s.duration_s:,.2f} s simulated "
          f"({s.output_tokens:,} tokens, {s.steps:,} steps, mean batch {s.mean_batch:,.1f}, "
          f"largest {s.max_batch_seen:,})")
    print(f"  TTFT       p50 {_ms(s.ttft_p50_s)}, p99 {_ms(s.ttft_p99_s)}")
    print(f"  TPOT       p50 {_ms(s.tpot_p50_s)}, p99 {_ms(s.tpot_p99_s)}")
    print(f"  latency    p50 {s.latency_p50_s:,.2f} s, p99 {s.latency_p99_s:,.2f} s; "
          f"{_ms(s.normalized_latency_s)} per output token on average")
    print(f"  KV cache   {s.kv_waste:.1%} of the reserved positions held no token (time-averaged); "
          f"{s.preemptions:,} preemptions")
    if plot:
        print(f"plot saved to {plot}")


def _lengths(value) -> str:
    return f"{value[0]}-{value[1]}" if isinstance(value, tuple) else str(value)

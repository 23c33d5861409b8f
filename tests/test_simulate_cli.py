"""`minitx simulate`: the command line of the serving simulator, its JSON, its plots, and hostile input.

Every drawn command line must end with exit status 0 or 2 (one line on stderr); every drawn trace file likewise.
The same seed must print byte-identical JSON.
"""
from __future__ import annotations

import json
import math
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minitx.cli import main

SUMMARY_KEYS = {"throughput_tok_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "kv_waste",
                "preemptions", "max_batch_seen"}
SMALL = ["simulate", "llama-3-8b", "--hw", "h100", "--dtype", "bf16", "--rate", "20", "--num-requests", "40",
         "--prompt", "128-512", "--gen", "16-64"]


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:            # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_json_has_the_summary_and_the_same_seed_gives_the_same_bytes(capsys):
    code, first, err = run(capsys, SMALL + ["--seed", "3", "--json"])
    assert code == 0, err
    data = json.loads(first)
    assert data["schema_version"] == 1
    assert SUMMARY_KEYS <= set(data["summary"])
    assert data["summary"]["output_tokens"] > 0 and data["workload"]["seed"] == 3
    assert data["memory"]["num_blocks"] > 0 and data["settings"]["policy"] == "continuous"
    assert run(capsys, SMALL + ["--seed", "3", "--json"])[1] == first
    assert run(capsys, SMALL + ["--seed", "4", "--json"])[1] != first


def test_text_report(capsys):
    code, out, err = run(capsys, SMALL + ["--policy", "static", "--kv-layout", "contiguous", "--chunked-prefill",
                                          "512", "--mfu", "0.5", "--mbu", "0.8"])
    assert code == 0, err
    assert "static batching, contiguous KV cache" in out and "512-token steps" in out
    assert "at 50% of peak FLOP/s and 80% of bandwidth" in out
    assert "TTFT" in out and "TPOT" in out and "kv" not in err.lower()


def test_a_trace(capsys, tmp_path):
    trace = tmp_path / "requests.jsonl"
    trace.write_text("\n".join(json.dumps({"arrival_s": 0.1 * i, "prompt_len": 100 + i, "gen_len": 10 + i,
                                           "max_new_tokens": 200}) for i in range(12)) + "\n")
    code, out, err = run(capsys, ["simulate", "gpt2", "--hw", "a100", "--trace", str(trace), "--json"])
    assert code == 0, err
    data = json.loads(out)
    assert data["workload"]["requests"] == 12
    assert data["summary"]["output_tokens"] == sum(10 + i for i in range(12))


def test_tensor_parallel_70b(capsys):
    base = ["simulate", "llama-2-70b", "--hw", "h100", "--rate", "2", "--num-requests", "10", "--prompt", "256",
            "--gen", "16"]
    code, _, err = run(capsys, base)
    # 68,976,648,192 parameters × 2 bytes (bf16) = 137.95 GB (derived in tests/test_parallel.py), over 80 GB
    assert code == 2 and "137.95 GB of weights" in err and "80.00 GB" in err and "--tp 2" in err
    code, out, err = run(capsys, base + ["--tp", "2", "--json"])
    assert code == 0, err
    assert json.loads(out)["memory"]["tp"] == 2


@pytest.mark.parametrize("extra, message", [
    (["--trace", "x.jsonl"], "--trace gives the whole workload; drop --rate"),
    (["--gen", "64-16"], "high end is below the low end"),
    (["--gen", "0"], "--gen must be at least 1"),
    (["--prompt", "8190"], "max_new_tokens=2 is below gen_len=64"),
    (["--max-new-tokens", "8000"], "passes the model's context"),
    (["--tp", "3"], "tp=3 does not split"),
    (["--mfu", "0"], "--mfu must be in (0, 1]"),
    (["--mbu", "nan"], "--mbu must be"),
    (["--chunked-prefill", "8"], "chunked_prefill=8 must be at least max_batch=256"),
    (["--num-requests", "2000000"], "at most 1,000,000"),
    (["--block-size", "0"], "--block-size must be at least 1"),
    (["--memory-fraction", "1.5"], "--memory-fraction"),
    (["--hw", "tpu-v5e", "--tp", "2"], "tpu-v5e has none"),
    (["--hw", "t4"], "t4 has no peak FLOP/s for 'bf16'"),
    (["--rate", "-3"], "--rate must be"),
])
def test_bad_flags_exit_2_with_one_line(capsys, extra, message):
    code, _, err = run(capsys, SMALL + extra)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_no_workload_and_bad_traces(capsys, tmp_path):
    code, _, err = run(capsys, ["simulate", "gpt2"])
    assert code == 2 and "--rate R" in err and "--trace FILE" in err
    code, _, err = run(capsys, ["simulate", "gpt2", "--trace", str(tmp_path / "missing.jsonl")])
    assert code == 2 and "no such file" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"arrival_s": 0, "prompt_len": 10, "gen_len": 3}\n{"arrival_s": 0, "prompt_len": 10}\n')
    code, _, err = run(capsys, ["simulate", "gpt2", "--trace", str(bad)])
    assert code == 2 and "line 2 is missing gen_len" in err


def test_plot_is_written_once_and_never_overwritten_unasked(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "sim.png"
    argv = ["simulate", "tiny-llama", "--hw", "h100", "--dtype", "fp32", "--rate", "100", "--num-requests", "20",
            "--prompt", "4-12", "--gen", "2-8", "--plot", str(path)]
    code, out, err = run(capsys, argv + ["--json"])
    assert code == 0, err
    data = json.loads(out)
    assert path.stat().st_size > 0 and data["plot"] == str(path)
    assert sorted({p["policy"] for p in data["load_sweep"]}) == ["continuous", "static"]
    before = path.read_bytes()
    code, _, err = run(capsys, argv)
    assert code == 2 and "exists; pass --overwrite" in err and path.read_bytes() == before
    assert run(capsys, argv + ["--overwrite"])[0] == 0
    code, _, err = run(capsys, argv[:-1] + [str(tmp_path / "no" / "such" / "dir.png")])
    assert code == 2 and "no folder" in err


# ==============================================================================================================
# Hostile input, drawn

WORDS = ["--hw", "h100", "l4", "a100", "tpu-v5e", "cpu-less", "--dtype", "bf16", "fp32", "int8", "int4", "--rate",
         "--num-requests", "--prompt", "--gen", "--max-new-tokens", "--seed", "--policy", "static", "continuous",
         "--kv-layout", "paged", "contiguous", "ring", "--block-size", "--max-batch", "--chunked-prefill", "--tp",
         "--mfu", "--mbu", "--memory-fraction", "--attention", "fused", "unfused", "--json", "--trace",
         "0", "1", "2", "3", "8", "16", "40", "-1", "0.5", "1.5", "nan", "inf", "1e400", "4-12", "12-4", "2-", "-",
         "x", "9" * 30, "1_0", "--weight-dtype", "--kv-dtype", "--peak", "--bandwidth", "--memory"]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["tiny-llama", "small-gpt2", "gpt2", "llama-3-8b", "nope"]),
       st.lists(st.sampled_from(WORDS), max_size=10))
def test_drawn_command_lines(capsys, model, words):
    argv = ["simulate", model, "--num-requests", "8"] + words      # a later --num-requests may override it
    if "--num-requests" in words:
        i = words.index("--num-requests")
        if i + 1 < len(words) and words[i + 1].isdigit() and int(words[i + 1]) > 40:
            return                                                    # huge workloads are slow, not hostile
    code, out, err = run(capsys, argv)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
    elif "--json" in argv:
        json.loads(out)


ugly = st.sampled_from([0, -1, 1, 3, 7, 64, 2 ** 31, 2 ** 70, 10 ** 400, 0.5, -0.0, 1e308, math.inf, math.nan, True,
                        None, "3", [], {}])
lines = st.one_of(
    st.fixed_dictionaries({"arrival_s": ugly, "prompt_len": ugly, "gen_len": ugly},
                          optional={"max_new_tokens": ugly, "extra": ugly}),
    st.lists(ugly, max_size=3), ugly, st.text(max_size=20))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(lines, min_size=0, max_size=5), st.booleans())
def test_drawn_trace_files(capsys, rows, raw_text):
    text = "\n".join(row if raw_text and isinstance(row, str) else
                     json.dumps(row, allow_nan=True, default=str) for row in rows)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write(text)
    try:
        code, out, err = run(capsys, ["simulate", "tiny-llama", "--hw", "h100", "--dtype", "fp32", "--trace",
                                      f.name, "--json"])
    finally:
        os.unlink(f.name)
    assert code in (0, 2), (text, code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (text, err)
    else:
        assert SUMMARY_KEYS <= set(json.loads(out)["summary"])

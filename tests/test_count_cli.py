"""`minitx count`: the FLOPs and bytes a shape-only run of the model records equal, key for key, what `minitx
flops` derives from the closed forms (the "three sources agree" check at the command line: the formulas, these
counts by shape, and the counts of real execution that `minitx check` and tests/test_counting.py compare with
the formulas). Bad flags are one-line errors with exit status 2."""
from __future__ import annotations

import json

import pytest

from minitx import cli
from minitx.accounting import formulas as F
from minitx.core.config import Config
from minitx.dtypes import precision


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as e:     # argparse's own usage errors
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def run_json(argv: list[str], capsys) -> dict:
    rc, out, err = run(argv + ["--json"], capsys)
    assert rc == 0, err
    return json.loads(out)


PRESETS = ["gpt2", "llama-3-8b", "gemma-2b", "mistral-7b", "llama-2-70b"]
PRECISIONS = {"bf16": ["--dtype", "bf16"], "int4-weights": ["--weight-dtype", "int4", "--kv-dtype", "bf16"],
              "fp32": ["--dtype", "fp32"]}
B, T = 2, 33


def _cases():
    for preset in PRESETS:
        for phase in ("train", "prefill", "decode"):
            for prec in PRECISIONS:
                for attention in ("unfused", "fused"):
                    if phase == "train" and (prec == "int4-weights" or attention == "fused"):
                        continue             # training runs one float format, unfused: refused (tested below)
                    yield pytest.param(preset, phase, prec, attention, id=f"{preset}-{phase}-{prec}-{attention}")


@pytest.mark.parametrize("preset, phase, prec, attention", list(_cases()))
def test_count_equals_flops_key_for_key(preset, phase, prec, attention, capsys):
    argv = [preset, "--phase", phase, "--batch", str(B), "--seq", str(T), "--attention", attention,
            *PRECISIONS[prec]]
    counted = run_json(["count", *argv], capsys)
    predicted = run_json(["flops", *argv], capsys)
    assert counted.pop("source").startswith("counted: a shape-only run")
    assert predicted.pop("source") == "formulas"
    for key in ("components", "by_phase", "total", "bytes", "intensity", "by_op", "by_category"):
        assert counted[key] == predicted[key], key
    assert counted == predicted                       # every other key too: the same schema, the same numbers
    assert ("unfused_attention" in counted) == (phase != "train")


@pytest.mark.parametrize("attention", ["unfused", "fused"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_count_past_a_sliding_window(phase, attention, capsys):
    """Mistral 7B v0.1 attends to the last 4,096 keys: at 4,100 tokens the window cuts in (fused attention
    visits only those keys; unfused reads the whole rectangle and masks)."""
    argv = ["mistral-7b", "--phase", phase, "--batch", "1", "--seq", "4100", "--attention", attention]
    counted, predicted = run_json(["count", *argv], capsys), run_json(["flops", *argv], capsys)
    counted.pop("source"), predicted.pop("source")
    assert counted == predicted


def test_decode_seq_is_the_context_after_the_step(capsys):
    # --seq 4096: the step runs with 4,095 tokens cached and attends to 4,096 keys, as `minitx flops` means it.
    data = run_json(["count", "llama-3-8b", "--phase", "decode", "--batch", "8", "--seq", "4096", "--dtype", "fp32"],
                    capsys)
    step = F.decode_step(Config.preset("llama-3-8b"), 8, 4095, precision("fp32"), attention="fused")
    assert data["total"] == step.flops and data["bytes"] == step.bytes
    assert data["by_phase"] == {"decode": step.flops} and data["tokens"] == 8
    # one new token per sequence, and the cache is read in full: 2·L·KV·HS·4096·8 sequences × 4 B
    assert data["by_category"]["kv_cache"]["bytes_read"] == 2 * 32 * 8 * 128 * 4096 * 8 * 4
    # an empty cache: --seq 1 decodes the first token
    first = run_json(["count", "gpt2", "--phase", "decode", "--seq", "1", "--dtype", "fp32"], capsys)
    assert first["total"] == F.decode_step(Config.preset("gpt2"), 1, 0, "float32", attention="fused").flops


def test_defaults_and_json_schema(capsys):
    train = run_json(["count", "gpt2", "--seq", "16"], capsys)
    assert train["schema_version"] == 1 and train["phase"] == "train" and train["attention"] == "unfused"
    assert train["precision"] == {"activations": "bfloat16", "weights": "bfloat16", "kv": "bfloat16",
                                  "group_size": 128, "text": "bfloat16"}
    assert list(train["by_phase"]) == ["forward", "backward", "optimizer"] and "unfused_attention" not in train
    assert set(train["by_op"]) >= {"matmul", "attention", "softmax", "loss", "optimizer"}
    assert train["by_op"]["optimizer"]["calls"] == 1
    assert set(train["by_category"]) == {"weights", "activations", "gradients", "optimizer_state"}
    # --dtype int8 is the shorthand for int8 weights and KV cache with bf16 activations
    short = run_json(["count", "gpt2", "--phase", "prefill", "--seq", "16", "--dtype", "int8",
                      "--attention", "unfused"], capsys)
    long = run_json(["count", "gpt2", "--phase", "prefill", "--seq", "16", "--weight-dtype", "int8",
                     "--kv-dtype", "int8", "--attention", "unfused"], capsys)
    assert short["precision"] == long["precision"] and short["precision"]["activations"] == "bfloat16"
    assert {k: v for k, v in short.items() if k != "dtype"} == {k: v for k, v in long.items() if k != "dtype"}


def test_prefill_and_decode_default_to_fused_attention(capsys):
    data = run_json(["count", "llama-3-8b", "--phase", "prefill", "--seq", "64"], capsys)
    assert data["attention"] == "fused" and "attention: fused kernel" in data["components"]
    assert "attention: scores + mix" not in data["components"]
    assert data["unfused_attention"]["bytes"] > data["bytes"]        # the scores, written and read back


def test_attention_changes_the_attention_ops_only(capsys):
    argv = ["count", "llama-3-8b", "--phase", "prefill", "--seq", "512", "--batch", "2", "--dtype", "fp32"]
    fused, unfused = run_json(argv + ["--attention", "fused"], capsys), run_json(argv + ["--attention", "unfused"],
                                                                                 capsys)
    changed = {k for k in set(fused["components"]) | set(unfused["components"])
               if fused["components"].get(k) != unfused["components"].get(k)}
    assert changed == {"attention: scores + mix", "attention: softmax", "attention: fused kernel"}
    # and the merge (a layout op, 0 FLOPs): the fused kernel writes its output with the heads already merged
    assert unfused["by_op"]["layout"]["calls"] == fused["by_op"]["layout"]["calls"] + 32
    assert unfused["bytes"] > fused["bytes"]
    assert fused["unfused_attention"] == {"total": unfused["total"], "bytes": unfused["bytes"],
                                          "intensity": unfused["intensity"], "by_phase": unfused["by_phase"]}


def test_text_says_where_the_numbers_come_from(capsys):
    rc, out, err = run(["count", "llama-2-70b", "--phase", "decode", "--batch", "8", "--seq", "4096",
                        "--dtype", "fp32"], capsys)
    assert rc == 0 and err == ""
    assert "shape-only run of the model" in out and "no kernel run" in out
    assert "the closed forms (minitx flops, same flags)" in out and "the same, exactly" in out
    assert "attention: fused kernel" in out and "unfused attention" in out


BAD = {
    "int8 weights in training": (["count", "gpt2", "--dtype", "int8"], "training runs in one float format"),
    "int4 weights in training": (["count", "gpt2", "--weight-dtype", "int4"], "training runs in one float format"),
    "int8 cache in training": (["count", "gpt2", "--kv-dtype", "int8"], "training runs in one float format"),
    "fused training": (["count", "gpt2", "--attention", "fused"], "training runs unfused attention"),
    "bf16 weights, fp32 activations": (["count", "gpt2", "--phase", "prefill", "--dtype", "fp32",
                                        "--weight-dtype", "bf16"], "--weight-dtype bf16 with fp32 activations"),
    "unknown weight dtype": (["count", "gpt2", "--weight-dtype", "fp8"], "invalid choice"),
    "int4 cache": (["count", "gpt2", "--kv-dtype", "int4"], "invalid choice"),
    "unknown attention": (["count", "gpt2", "--attention", "flash"], "invalid choice"),
    "seq beyond n_ctx": (["count", "gpt2", "--seq", "2048"], "n_ctx=1024"),
    "batch 0": (["count", "gpt2", "--batch", "0"], "--batch must be at least 1"),
    "group size": (["count", "tiny-gpt2", "--phase", "prefill", "--weight-dtype", "int4", "--seq", "4"],
                   "group_size=128"),
    "too many tokens": (["count", "gpt2", "--batch", str(2 ** 50)], "more than this machine's"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_flags_are_one_line_and_exit_2(case, capsys):
    argv, message = BAD[case]
    rc, out, err = run(argv, capsys)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message in err, err
    rc, _, err_flops = run(["flops", *argv[1:]], capsys)       # the same flags, the same answer from flops
    if case not in ("group size", "too many tokens"):          # flops allocates nothing, and counts no matrix
        assert rc == 2 and message in err_flops

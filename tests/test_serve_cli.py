"""`minitx serve`: requests files in, the engine's tokens and timelines out, checked against `minitx.generate`
for each prompt alone; the same seed gives byte-identical JSON; bad files and flags end in one line and status 2,
also when hypothesis draws them.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minitx
from minitx import Config, Transformer, generate
from minitx.cli import main
from minitx.io import checkpoint

TINY = Config.preset("tiny-llama")


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:              # argparse's own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path, lines, name="reqs.jsonl") -> str:
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def test_tokens_are_what_generate_gives_each_prompt_alone(tmp_path, capsys):
    path = write(tmp_path, [{"prompt": [1, 2, 3], "max_new_tokens": 5},
                            "",                                               # skipped: ids are line numbers
                            {"prompt": [9, 8, 7, 6, 5, 4], "max_new_tokens": 7, "arrival_step": 2},
                            {"prompt": [10], "max_new_tokens": 4, "temperature": 0.8, "top_k": 9, "seed": 5}])
    code, out, err = run(capsys, "serve", "tiny-llama", "--requests", path, "--seed", "3", "--dtype", "float64",
                         "--block-size", "4", "--kv-blocks", "6", "--max-batch", "2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["schema_version"] == 1 and [r["id"] for r in data["requests"]] == [0, 2, 3]
    model = Transformer(TINY, seed=3, dtype="float64", attention="fused")   # --seed 3 seeds the weights
    assert data["requests"][0]["tokens"] == generate(model, [[1, 2, 3]], 5)[0]
    assert data["requests"][1]["tokens"] == generate(model, [[9, 8, 7, 6, 5, 4]], 7)[0]
    assert data["requests"][2]["tokens"] == generate(model, [[10]], 4, temperature=0.8, top_k=9, seed=5)[0]
    timeline = data["requests"][1]["timeline"]
    assert timeline["arrival_step"] == 2 and timeline["ttft_steps"] == timeline["first_token_step"] - 2
    s = data["summary"]
    assert s["output_tokens"] == 5 + 7 + 4 and s["kv_blocks"] == 6 and 0 <= s["kv_waste"] < 1
    assert len(data["steps"]) == s["steps"]


def test_same_seed_same_bytes_other_seed_other_tokens(tmp_path, capsys):
    path = write(tmp_path, [{"prompt": [1, 2], "max_new_tokens": 6, "temperature": 1.0},
                            {"prompt": [3], "max_new_tokens": 6, "temperature": 1.0, "arrival_step": 1}])
    argv = ["serve", "tiny-llama", "--requests", path, "--json", "--hw", "h100-sxm", "--chunked-prefill", "16"]
    outs = [run(capsys, *argv, "--seed", seed)[1] for seed in ("1", "1", "2")]
    assert outs[0] == outs[1]
    assert json.loads(outs[0])["requests"] != json.loads(outs[2])["requests"]
    assert json.loads(outs[0])["summary"]["ttft_p50_s"] > 0


def test_text_prompts_on_a_byte_level_checkpoint(tmp_path, capsys):
    cfg = Config.preset("tiny-gpt2").replace(vocab_size=256)
    model = Transformer(cfg, seed=7)
    ckpt = str(tmp_path / "m.ckpt")
    checkpoint.save_model(ckpt, model)
    path = write(tmp_path, [{"prompt": "def f(", "max_new_tokens": 6}])
    code, out, err = run(capsys, "serve", "--checkpoint", ckpt, "--requests", path, "--json")
    assert code == 0, err
    tokens = json.loads(out)["requests"][0]["tokens"]
    assert tokens == generate(model, [list(b"def f(")], 6)[0]
    code, out, err = run(capsys, "serve", "--checkpoint", ckpt, "--requests", path)          # the text table
    assert code == 0 and "1 requests, 6 tokens" in out


def test_policies_side_by_side_in_text(tmp_path, capsys):
    path = write(tmp_path, [{"prompt": [1, 2, 3], "max_new_tokens": 8, "arrival_step": i} for i in range(4)])
    summaries = {}
    for policy in ("static", "continuous"):
        code, out, err = run(capsys, "serve", "tiny-gpt2", "--requests", path, "--policy", policy, "--json")
        assert code == 0, err
        summaries[policy] = json.loads(out)["summary"]
    # continuous admits each request at its arrival; static waits for request 0's batch to end first
    assert summaries["continuous"]["throughput_tok_step"] > summaries["static"]["throughput_tok_step"]
    code, out, _ = run(capsys, "serve", "tiny-gpt2", "--requests", path, "--hw", "h100")
    assert code == 0 and "TTFT" in out and "modelled" in out


# ---- bad files and flags: one line, status 2 ------------------------------------------------------------------

def expect_error(capsys, argv, *words):
    code, out, err = run(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
    for w in words:
        assert w in err, (w, err)


def test_bad_requests_name_their_line(tmp_path, capsys):
    cases = [("not json", "line 1: not a JSON object"), ([1, 2], "line 1: a request is a JSON object"),
             ({"prompt": [1]}, "line 1: missing ['max_new_tokens']"),
             ({"prompt": [1], "max_new_tokens": 2, "colour": 1}, "unknown key(s) ['colour']"),
             ({"prompt": "text", "max_new_tokens": 2}, "line 1: a text prompt needs a byte-level model"),
             ({"prompt": [1.5], "max_new_tokens": 2}, "line 1: prompt must be a list of integer token ids"),
             ({"prompt": [1, 99], "max_new_tokens": 2}, "line 1: prompt_ids holds id 99"),
             ({"prompt": [1], "max_new_tokens": 0}, "line 1: max_new_tokens=0"),
             ({"prompt": [1] * 30, "max_new_tokens": 5}, "line 1: the prompt has 30 tokens"),
             ({"prompt": [1], "max_new_tokens": 2, "top_p": 3}, "line 1: top_p"),
             ({"prompt": [1], "max_new_tokens": 2, "arrival_step": -1}, "line 1: arrival_step=-1"),
             ('{"prompt": [1], "max_new_tokens": NaN}', "line 1: not a JSON object")]
    for line, words in cases:
        path = write(tmp_path, [{"prompt": [1], "max_new_tokens": 1}, line])
        expect_error(capsys, ["serve", "tiny-llama", "--requests", path], words)


def test_bad_files_and_flags(tmp_path, capsys):
    good = write(tmp_path, [{"prompt": [1], "max_new_tokens": 1}])
    expect_error(capsys, ["serve", "tiny-llama", "--requests", str(tmp_path / "missing.jsonl")], "No such file")
    expect_error(capsys, ["serve", "tiny-llama", "--requests", str(tmp_path)], "directory")
    expect_error(capsys, ["serve", "tiny-llama", "--requests", "/dev/zero"], "not a regular file")
    expect_error(capsys, ["serve", "tiny-llama", "--requests", write(tmp_path, [""], "empty.jsonl")], "no requests")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe{}")
    expect_error(capsys, ["serve", "tiny-llama", "--requests", str(tmp_path / "bin.jsonl")], "not UTF-8")
    expect_error(capsys, ["serve", "--requests", good], "give a MODEL")
    expect_error(capsys, ["serve", "tiny-llama", "--checkpoint", good, "--requests", good], "not both")
    expect_error(capsys, ["serve", "--checkpoint", good, "--requests", good], good)      # not a checkpoint
    expect_error(capsys, ["serve", "no-such-model", "--requests", good], "unknown model")
    expect_error(capsys, ["serve", "tiny-llama", "--requests", good, "--max-batch", "0"], "--max-batch")
    expect_error(capsys, ["serve", "tiny-llama", "--requests", good, "--chunked-prefill", "2"],
                 "--chunked-prefill=2 must be at least --max-batch=16")
    expect_error(capsys, ["serve", "tiny-llama", "--requests", good, "--kv-blocks", "x"], "--kv-blocks")
    expect_error(capsys, ["serve", "tiny-llama", "--requests", good, "--hw", "h100", "--dtype", "float64"],
                 "no peak FLOP/s for 'float64'")
    expect_error(capsys, ["serve", "tiny-llama", "--requests", good, "--hw", "nope"], "nope")
    big = write(tmp_path, [{"prompt": [1] * 20, "max_new_tokens": 10}], "big.jsonl")
    expect_error(capsys, ["serve", "tiny-llama", "--requests", big, "--block-size", "4", "--kv-blocks", "7"],
                 "line 0", "need 8 KV blocks of 4; the pool has num_blocks=7")


WORDS = ["serve", "tiny-llama", "tiny-gpt2", "--requests", "REQ", "--checkpoint", "--seed", "--dtype", "float32",
         "float64", "--policy", "static", "continuous", "--kv-layout", "paged", "contiguous", "--block-size",
         "--kv-blocks", "--max-batch", "--chunked-prefill", "--hw", "h100", "--json", "--attention", "unfused",
         "0", "1", "3", "-1", "64", "9" * 30, "x", "/dev/null", ""]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WORDS), max_size=9))
def test_drawn_command_lines(capsys, words):
    with tempfile.TemporaryDirectory() as tmp:
        req = os.path.join(tmp, "r.jsonl")
        with open(req, "w") as f:
            f.write('{"prompt": [1, 2], "max_new_tokens": 3}\n{"prompt": [3], "max_new_tokens": 2, '
                    '"arrival_step": 1}\n')
        argv = ["serve"] + [req if w == "REQ" else w for w in words]
        code, out, err = run(capsys, *argv)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
    elif "--json" in argv:
        json.loads(out)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.integers(2 ** 62, 2 ** 70),
                                     st.floats(allow_nan=False), st.text(max_size=6)),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=8)
request_lines = st.one_of(
    st.fixed_dictionaries({"prompt": st.one_of(st.lists(st.integers(-2, 70), max_size=6), json_values),
                           "max_new_tokens": st.one_of(st.integers(-1, 9), json_values)},
                          optional={k: json_values for k in ("arrival_step", "stop", "temperature", "top_k",
                                                             "top_p", "seed", "extra")}).map(json.dumps),
    st.text(max_size=20), json_values.map(json.dumps))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(request_lines, min_size=1, max_size=4), st.sampled_from(["tiny-llama", "small-gpt2"]))
def test_drawn_requests_files(capsys, lines, model):
    with tempfile.TemporaryDirectory() as tmp:
        req = os.path.join(tmp, "r.jsonl")
        with open(req, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write("\n".join(lines))
        code, out, err = run(capsys, "serve", model, "--requests", req, "--json", "--max-batch", "2")
    assert code in (0, 2), (lines, code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (lines, err)
    else:
        data = json.loads(out)
        assert all(0 <= t < 256 for r in data["requests"] for t in r["tokens"])


def test_a_quantized_or_16_bit_checkpoint_is_served_in_its_own_weights(tmp_path, capsys):
    """A checkpoint of an int4 model (minitx.quantize) keeps its integers and scales under the engine (--dtype sets
    the activations: float32, what the quantized model ran in), and a bfloat16 one is widened exactly: the tokens
    are what minitx.generate gives the loaded model itself."""
    cfg = Config.preset("tiny-gpt2").replace(vocab_size=256)
    base = Transformer(cfg, seed=3)
    base.flat[:] = np.random.default_rng(0).normal(0.0, 0.5, base.flat.size)   # logits far from ties
    half = Transformer(cfg, dtype="bfloat16", init=False)
    half.flat[:] = base.flat
    path = write(tmp_path, [{"prompt": [1, 2], "max_new_tokens": 6}])
    for name, model in (("q4", minitx.quantize(base, "int4", group_size=8)), ("b16", half)):
        ckpt = str(tmp_path / f"{name}.ckpt")
        checkpoint.save_model(ckpt, model)
        loaded = checkpoint.load_model(ckpt)[0]
        code, out, err = run(capsys, "serve", "--checkpoint", ckpt, "--requests", path, "--json")
        assert code == 0, err
        widened = loaded if name == "q4" else Transformer(cfg, init=False)
        if name == "b16":
            widened.flat[:] = loaded.flat                  # bfloat16 -> float32: exact
        assert json.loads(out)["requests"][0]["tokens"] == generate(widened, [[1, 2]], 6)[0], name

"""`minitx hw`, `minitx roofline`, `minitx cost`: output checked against hand arithmetic; bad input exits 2."""
import json
import sys

import pytest

from minitx import cli, hardware

H100_BF16, H100_BW = 989.4e12, 3.35e12
LLAMA3_8B_P = 8_030_261_248
EXACT = 1e-12


def run(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as e:          # argparse's own usage errors (an unknown choice)
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


# ---- minitx hw -------------------------------------------------------------------------------------------------

def test_hw_lists_presets_with_ridge_points(capsys):
    code, out, _ = run(capsys, "hw")
    assert code == 0
    assert "GB = 1e9 bytes" in out and "ridge" in out
    h100 = next(line for line in out.splitlines() if line.startswith("h100-sxm"))
    assert "989.4" in h100 and "3350" in h100 and "295.3" in h100
    t4 = next(line for line in out.splitlines() if line.startswith("t4 "))
    assert " - " in t4                                   # no bf16 on a T4: no number made up


def test_hw_json(capsys):
    data = run_json(capsys, "hw")
    assert data["schema_version"] == 1
    by_name = {h["name"]: h for h in data["presets"]}
    assert set(by_name) == set(hardware.presets())
    assert by_name["h100-sxm"]["ridge"]["bf16"] == pytest.approx(989.4e12 / 3.35e12, rel=EXACT)


def test_hw_measure(capsys, monkeypatch):
    real = hardware.measure
    monkeypatch.setattr(hardware, "measure", lambda seconds_budget: real(seconds_budget, sizes=(64, 128),
                                                                          copy_bytes=8e6))
    data = run_json(capsys, "hw", "--measure", "--seconds", "0.1")
    assert data["measured"] and data["bandwidth"] > 0 and data["peak_flops"]["fp32"] > 0
    assert data["ridge"]["fp32"] == pytest.approx(data["peak_flops"]["fp32"] / data["bandwidth"])
    code, out, _ = run(capsys, "hw", "--measure", "--seconds", "0.1")
    assert code == 0 and "GFLOP/s" in out and "GB/s" in out


# ---- minitx roofline -------------------------------------------------------------------------------------------

def test_roofline_reproduces_the_hand_computed_llama3_on_h100_numbers(capsys):
    data = run_json(capsys, "roofline", "llama-3-8b", "--hw", "h100", "--batch", "1,8,64", "--prompt", "1000",
                    "--gen", "200", "--dtype", "bf16")
    floor = data["decode_floor_b1"]
    assert floor["read"]["time"] == pytest.approx(LLAMA3_8B_P * 2 / H100_BW, rel=EXACT)            # 4.79 ms
    assert floor["gather"]["time"] == pytest.approx((LLAMA3_8B_P - 128256 * 4096 + 4096) * 2 / H100_BW,
                                                    rel=EXACT)                                   # 4.48 ms
    prefill = data["prefill_floor_b1"]
    assert prefill["t_compute"] == pytest.approx((2 * LLAMA3_8B_P * 1000 + 4 * 32 * 4096 * 500_500) / H100_BF16,
                                                 rel=EXACT)                                      # 16.5 ms
    assert [p["batch"] for p in data["points"]] == [1, 8, 64]
    assert data["critical_batch"]["analytic"] == pytest.approx(H100_BF16 / H100_BW, rel=EXACT)
    assert data["max_batch"] == (80e9 - LLAMA3_8B_P * 2) // (1200 * 131_072)
    assert set(data["ops"]) == {"prefill B=1", "decode B=1", "prefill B=8", "decode B=8", "prefill B=64",
                                "decode B=64"}


def test_roofline_human_output_has_units(capsys):
    code, out, _ = run(capsys, "roofline", "llama-2-7b", "--hw", "h100", "--batch", "1,4", "--prompt", "500",
                       "--gen", "50")
    assert code == 0
    assert "4.023 ms every parameter read" in out and "3.945 ms with the embedding gathered" in out
    assert "GB = 1e9 bytes" in out and "TTFT" in out and "TPOT" in out and "ridge 295.3" in out


def test_roofline_reads_a_hugging_face_config(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                                "vocab_size": 128256, "max_position_embeddings": 8192,
                                "rope_theta": 500000.0}))
    data = run_json(capsys, "roofline", str(path), "--hw", "h100", "--batch", "1")
    assert data["params"] == LLAMA3_8B_P


def test_roofline_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "roofline.png"
    code, out, err = run(capsys, "roofline", "small-gpt2", "--hw", "l4", "--batch", "1,8", "--prompt", "32",
                         "--gen", "16", "--plot", str(target))
    assert code == 0, err
    assert target.stat().st_size > 1000 and str(target) in out
    # a second run does not replace the picture without --overwrite, and says so before any work
    before = target.read_bytes()
    code, out, err = run(capsys, "roofline", "small-gpt2", "--hw", "l4", "--batch", "1", "--plot", str(target))
    assert code == 2 and "exists; pass --overwrite" in err and target.read_bytes() == before
    code, out, err = run(capsys, "roofline", "small-gpt2", "--hw", "l4", "--batch", "1", "--prompt", "32",
                         "--gen", "16", "--plot", str(target), "--overwrite")
    assert code == 0, err


def test_roofline_plot_without_matplotlib(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = run(capsys, "roofline", "small-gpt2", "--batch", "1", "--prompt", "8", "--gen", "4",
                         "--plot", str(tmp_path / "x.png"))
    assert code == 2 and out == ""
    assert "pip install 'minitx[plot]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


# ---- minitx cost -----------------------------------------------------------------------------------------------

def test_cost_worked_example_with_given_throughput(capsys):
    # The worked example of tests/test_cost.py, through the command line:
    #   $2.50/h at 50% -> 1/720 $ per busy second; prefill 10,000 tok/s, decode 1,000 tok/s;
    #   1,000 prompt + 200 completion tokens; API $0.50 / $1.50 per M.
    data = run_json(capsys, "cost", "llama-3-8b", "--hw", "h100", "--gpu-price", "2.5", "--api-price-in", "0.5",
                    "--api-price-out", "1.5", "--prompt", "1000", "--gen", "200", "--utilization", "0.5",
                    "--prefill-tps", "10000", "--decode-tps", "1000")
    assert data["prefill_seconds_per_request"] == pytest.approx(0.1, rel=EXACT)       # 1,000 / 10,000
    assert data["decode_seconds_per_request"] == pytest.approx(0.2, rel=EXACT)        # 200 / 1,000
    assert data["self_cost_per_request"] == pytest.approx(0.3 / 720, rel=EXACT)       # 0.000416667 $
    assert data["self_input_per_million"] == pytest.approx(100 / 720, rel=EXACT)      # 1e6 tokens = 100 s
    assert data["self_output_per_million"] == pytest.approx(1000 / 720, rel=EXACT)    # 1e6 tokens = 1,000 s
    assert data["api_cost_per_request"] == pytest.approx(0.0008, rel=EXACT)           # 0.0005 + 0.0003
    assert data["requests_per_hour"] == pytest.approx(6000, rel=EXACT)                # 1,800 s / 0.3 s
    assert data["verdict"] == "self-host"


def test_cost_classic_step_model_by_hand(capsys):
    # docs/formulas.md, "Cost": Llama-3-8B, H100, batch 8 at 2,048 tokens of context, $2.50/h -> $0.47 per M
    # output tokens.
    # One decode step (gen=2) at 2,048 cached tokens: 8·2048·131,072/BW + max(W/BW, 2·8·P/peak).
    data = run_json(capsys, "cost", "llama-3-8b", "--hw", "h100", "--gpu-price", "2.5", "--api-price-in", "0.5",
                    "--api-price-out", "1.5", "--batch", "8", "--prompt", "2048", "--gen", "2", "--step", "classic")
    step = 8 * 2048 * 131_072 / H100_BW + max(LLAMA3_8B_P * 2 / H100_BW, 2 * 8 * LLAMA3_8B_P / H100_BF16)
    assert data["tpot"] == pytest.approx(step, rel=EXACT)
    assert data["throughput"]["decode_tokens_per_s"] == pytest.approx(8 / step, rel=EXACT)       # 1,472 tok/s
    assert data["self_output_per_million"] == pytest.approx(2.5 / 3600 / (8 / step) * 1e6, rel=EXACT)
    assert round(data["self_output_per_million"], 2) == 0.47
    # prefill of 8 prompts of 2,048 tokens at 100% of peak: (2·P·T + causal attention)·8 / peak
    prefill = 8 * (2 * LLAMA3_8B_P * 2048 + 4 * 32 * 4096 * 2048 * 2049 // 2) / H100_BF16
    assert data["ttft"] == pytest.approx(prefill, rel=EXACT)


def test_cost_op_by_op_matches_the_library(capsys):
    # minitx.serving.latency predicts unfused attention (the formulas' default): the CLI's unfused figures are
    # the library's, both with --attention unfused and beside the default fused ones.
    from minitx import cost, serving
    from minitx.core.config import Config
    p = serving.serving_point(Config.preset("llama-3-8b"), "h100", "bf16", 32, 1000, 200)
    thr = cost.Throughput.from_step_times(batch=32, decode_step_seconds=p.tpot, prompt_tokens=1000,
                                          prefill_seconds=p.ttft)
    expected = cost.compare(2.5, thr, cost.Workload(1000, 200), cost.ApiPrice(0.5, 1.5), utilization=0.25)
    argv = ("cost", "llama-3-8b", "--hw", "h100", "--gpu-price", "2.5", "--api-price-in", "0.5", "--api-price-out",
            "1.5", "--batch", "32", "--utilization", "0.25")
    data = run_json(capsys, *argv, "--attention", "unfused")
    assert data["attention"] == "unfused" and "unfused_attention" not in data
    assert data["self_cost_per_request"] == pytest.approx(expected.self_cost_per_request, rel=EXACT)
    assert data["break_even_utilization"] == pytest.approx(expected.break_even_utilization, rel=EXACT)
    fused = run_json(capsys, *argv)
    assert fused["attention"] == "fused"
    unf = fused["unfused_attention"]
    assert unf["ttft"] == pytest.approx(p.ttft, rel=EXACT) and unf["tpot"] == pytest.approx(p.tpot, rel=EXACT)
    assert unf["self_cost_per_request"] == pytest.approx(expected.self_cost_per_request, rel=EXACT)
    assert fused["ttft"] < p.ttft and fused["tpot"] < p.tpot     # no score matrix written and read back


def test_cost_human_output(capsys):
    code, out, _ = run(capsys, "cost", "llama-3-8b", "--hw", "h100", "--gpu-price", "2.5", "--api-price-in", "0.5",
                       "--api-price-out", "1.5")
    assert code == 0 and "per M input" in out and "break-even utilization" in out and "$2.50/h" in out



# ---- precision and attention -----------------------------------------------------------------------------------

def test_roofline_unfused_bf16_is_the_library_exactly(capsys):
    """minitx.serving.latency takes one dtype and no attention (unfused): for bf16 and --attention unfused the
    command's figures, built from the formulas with a Precision, are the library's."""
    from minitx import serving
    from minitx.core.config import Config
    cfg = Config.preset("llama-3-8b")
    data = run_json(capsys, "roofline", "llama-3-8b", "--hw", "h100", "--batch", "1,8", "--prompt", "500",
                    "--gen", "50", "--attention", "unfused")
    assert data["attention"] == "unfused" and "unfused_attention" not in data
    for got, want in zip(data["points"], serving.sweep(cfg, "h100", "bf16", (1, 8), 500, 50)):
        for key, value in want.to_dict().items():
            assert got[key] == pytest.approx(value, rel=EXACT) if isinstance(value, float) else got[key] == value
    assert data["critical_batch"] == serving.critical_batch(cfg, "h100", "bf16").to_dict()
    assert data["max_batch"] == serving.max_batch(cfg, "h100", "bf16", 550)
    assert data["decode_floor_b1"]["read"] == serving.decode_floor(cfg, "h100", "bf16", 1, 0, "read").to_dict()
    assert data["decode_floor_b1"]["gather"] == serving.decode_floor(cfg, "h100", "bf16", 1, 0, "gather").to_dict()
    assert data["prefill_floor_b1"] == serving.prefill_floor(cfg, "h100", "bf16", 500, 1).to_dict()
    # the default, fused attention, reports the library's (unfused) points beside its own, faster ones
    fused = run_json(capsys, "roofline", "llama-3-8b", "--hw", "h100", "--batch", "1,8", "--prompt", "500",
                     "--gen", "50")
    assert fused["attention"] == "fused" and fused["unfused_attention"]["points"] == data["points"]
    for f, u in zip(fused["points"], data["points"]):
        assert f["ttft"] < u["ttft"] and f["tpot"] < u["tpot"]
    code, out, _ = run(capsys, "roofline", "llama-3-8b", "--hw", "h100", "--batch", "1,8", "--prompt", "500",
                       "--gen", "50")
    assert code == 0 and "fused attention" in out and "unfused attention (score matrices" in out


def test_weight_only_quantization_takes_the_bf16_peak_and_its_own_bytes(capsys):
    from minitx import formulas
    from minitx.core.config import Config
    from minitx.dtypes import precision
    cfg = Config.preset("llama-3-8b")
    for flags, pr in ((["--dtype", "int8"], precision("int8")), (["--dtype", "int4"], precision("int4")),
                      (["--weight-dtype", "int4", "--kv-dtype", "int8"], precision("bf16", weights="int4", kv="int8"))):
        data = run_json(capsys, "roofline", "llama-3-8b", "--hw", "h100", "--batch", "1", *flags)
        assert data["peak_dtype"] == "bf16" and data["ridge"] == pytest.approx(H100_BF16 / H100_BW, rel=EXACT)
        weights = formulas.param_bytes(cfg, pr)
        assert data["weight_bytes"] == weights and data["kv_bytes_per_token"] == formulas.kv_bytes_per_token(cfg, pr)
        floor = data["decode_floor_b1"]["read"]
        assert floor["weight_bytes"] == weights and floor["time"] == pytest.approx(weights / H100_BW, rel=EXACT)
        assert data["prefill_floor_b1"]["weight_bytes"] == weights
        assert data["max_batch"] == (80e9 - weights) // (1200 * formulas.kv_bytes_per_token(cfg, pr))
        assert data["points"][0]["memory_bytes"] == weights + 1200 * formulas.kv_bytes_per_token(cfg, pr)
        crit = data["critical_batch"]
        assert crit["analytic"] == pytest.approx(H100_BF16 / H100_BW * weights / LLAMA3_8B_P / 2, rel=EXACT)
    # a chip without a bf16 figure has no peak for weight-only int8: it computes in bf16, not int8
    code, _, err = run(capsys, "roofline", "llama-3-8b", "--hw", "t4", "--dtype", "int8")
    assert code == 2 and "no peak FLOP/s for 'bf16'" in err
    # --peak overrides the activations' peak
    data = run_json(capsys, "roofline", "llama-3-8b", "--hw", "h100", "--batch", "1", "--dtype", "int8",
                    "--peak", "500")
    assert data["ridge"] == pytest.approx(500e12 / H100_BW, rel=EXACT)


def test_quantized_weights_fit_where_bf16_does_not(capsys):
    # Llama-3-70B in bf16: 141 GB of weights, more than an 80 GB H100; with int4 weights about 37 GB.
    code, _, err = run(capsys, "roofline", "llama-3-70b", "--batch", "1")
    assert code == 2 and "the weights alone do not fit" in err
    data = run_json(capsys, "roofline", "llama-3-70b", "--batch", "1", "--weight-dtype", "int4")
    assert data["weight_bytes"] < 40e9 and data["points"][0]["fits"]
    cost = run_json(capsys, "cost", "llama-3-70b", "--weight-dtype", "int4", "--gpu-price", "2.5",
                    "--api-price-in", "0.5", "--api-price-out", "1.5", "--batch", "8")
    assert cost["precision"]["weights"] == "int4" and cost["peak_dtype"] == "bf16"
    assert cost["unfused_attention"]["tpot"] > cost["tpot"]
    classic = run_json(capsys, "cost", "llama-3-70b", "--dtype", "int4", "--gpu-price", "2.5", "--api-price-in",
                       "0.5", "--api-price-out", "1.5", "--batch", "8", "--step", "classic", "--prompt", "1000",
                       "--gen", "2")
    from minitx import formulas
    from minitx.core.config import Config
    cfg = Config.preset("llama-3-70b")
    P, W = formulas.num_params(cfg), formulas.param_bytes(cfg, "int4")
    step = 8 * 1000 * formulas.kv_bytes_per_token(cfg, "int4") / H100_BW + max(W / H100_BW, 2 * 8 * P / H100_BF16)
    assert classic["tpot"] == pytest.approx(step, rel=EXACT) and "unfused_attention" not in classic

# ---- bad input: one line on stderr, exit 2 ---------------------------------------------------------------------

COST = ["cost", "llama-3-8b", "--gpu-price", "2.5", "--api-price-in", "0.5", "--api-price-out", "1.5"]


@pytest.mark.parametrize("argv, message", [
    (["roofline", "llama-3-8b", "--hw", "h1000"], "unknown hardware 'h1000'"),
    (["roofline", "no-such-model"], "unknown model"),
    (["roofline", "llama-3-8b", "--bandwidth", "0"], "bandwidth (in GB/s) must be a finite number > 0"),
    (["roofline", "llama-3-8b", "--bandwidth", "-5"], "bandwidth (in GB/s) must be a finite number > 0"),
    (["roofline", "llama-3-8b", "--peak", "-1"], "must be a finite number > 0"),
    (["roofline", "llama-3-8b", "--batch", "0"], "must be at least 1, got 0"),
    (["roofline", "llama-3-8b", "--batch", "1,-8"], "must be at least 1, got -8"),
    (["roofline", "llama-3-8b", "--batch", "1,x"], "--batch (integers separated by commas"),
    (["roofline", "llama-3-8b", "--prompt", "0"], "--prompt=0 must be a positive integer"),
    (["roofline", "llama-3-8b", "--batch", "1,512", "--prompt", "4000", "--gen", "1000"],
     "batch 512 does not fit in h100-sxm's memory"),
    (["roofline", "llama-3-70b", "--batch", "1"], "the weights alone do not fit"),
    (["roofline", "llama-3-8b", "--prompt", "8000", "--gen", "500"], "n_ctx=8192"),
    (["roofline", "llama-3-8b", "--hw", "t4"], "no peak FLOP/s for 'bf16'"),
    (COST + ["--gpu-price", "0"], "gpu_price_per_hour must be a finite number > 0"),
    (COST + ["--gpu-price", "-2"], "gpu_price_per_hour must be a finite number > 0"),
    (COST + ["--api-price-in", "-1"], "input_per_million must be a finite number > 0"),
    (COST + ["--api-price-out", "0"], "output_per_million must be a finite number > 0"),
    (COST + ["--batch", "0"], "--batch=0 must be a positive integer"),
    (COST + ["--batch", "-4"], "--batch=-4 must be a positive integer"),
    (COST + ["--batch", "400", "--prompt", "4000"], "does not fit"),
    (COST + ["--utilization", "1.5"], "utilization must be in (0, 1]"),
    (COST + ["--utilization", "0"], "utilization must be in (0, 1]"),
    (COST + ["--decode-tps", "0"], "decode_tokens_per_s must be a finite number > 0"),
    (COST + ["--hw", "nope"], "unknown hardware"),
    (COST + ["--bandwidth", "0"], "bandwidth (in GB/s) must be a finite number > 0"),
    (COST + ["--dtype", "fp32", "--weight-dtype", "bf16"], "--weight-dtype bf16 with fp32 activations"),
    (["roofline", "llama-3-8b", "--kv-dtype", "int4"], "invalid choice"),
    (["roofline", "llama-3-8b", "--attention", "flash"], "invalid choice"),
    (["roofline", "tiny-gpt2", "--weight-dtype", "int4", "--prompt", "8", "--gen", "4"], "group_size=128"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"minitx {argv[0]}: error:")


@pytest.mark.parametrize("flag, value, unit", [("--peak", "-1", "TFLOP/s"), ("--peak", "nan", "TFLOP/s"),
                                               ("--bandwidth", "-5", "GB/s"), ("--memory", "0", "GB")])
def test_overrides_are_refused_as_the_user_typed_them(capsys, flag, value, unit):
    code, out, err = run(capsys, "roofline", "llama-3-8b", flag, value)
    assert code == 2 and out == ""
    assert f"{flag} (in {unit}) must be a finite number > 0, got {float(value)}" in err
    assert "e+" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", ['{"name": "x"}', "not json", "[1, 2]"])
def test_a_bad_hardware_file_is_named(capsys, tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, _, err = run(capsys, "roofline", "llama-3-8b", "--hw", str(path))
    assert code == 2 and str(path) in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "cost", "llama-3-8b", "--hw", str(tmp_path / "missing.json"), "--gpu-price", "2",
                       "--api-price-in", "1", "--api-price-out", "1")
    assert code == 2 and "missing.json" in err and "no such file" in err


@pytest.mark.parametrize("command", [["roofline", "gpt2"], COST[:1] + ["gpt2"] + COST[2:]])
def test_default_lengths_fit_a_short_context(capsys, command):
    """GPT-2's context is 1,024 tokens: the 1,000 + 200 defaults shrink to 853 + 171 instead of failing."""
    data = run_json(capsys, *command)
    assert data["schema_version"] == 1
    assert (data.get("prompt") or data["workload"]["prompt_tokens"]) == 853

"""`minitx check`: it runs the models for real, every exact claim matches, every approximation is within its
stated tolerance, --json parses, and a failing claim makes the exit status non-zero."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from minitx.cli import check as check_cli
from minitx.teaching import check
from minitx.teaching.check import Claim


@pytest.fixture(scope="module")
def result():
    """One real run of `minitx check --json` in its own process (about 15-30 s on 2 cores, warm)."""
    p = subprocess.run([sys.executable, "-m", "minitx.cli", "check", "--json"], capture_output=True, text=True,
                       timeout=600)
    return p


@pytest.fixture(scope="module")
def claims(result):
    return json.loads(result.stdout)["claims"]


def test_check_exits_0_and_json_parses(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["passed"] is True
    assert data["models"] == list(check.MODELS)
    assert "Traceback" not in result.stderr
    assert "minitx check:" in result.stderr          # progress goes to stderr, never into the JSON


def test_every_exact_claim_matches(claims):
    exact = [c for c in claims if c["kind"] == "exact"]
    assert len(exact) >= 50
    bad = [c for c in exact if not c["ok"] or c["expected"] != c["counted"]]
    assert not bad, bad


def test_every_approximation_is_within_its_tolerance(claims):
    approx = [c for c in claims if c["kind"] == "approx"]
    assert approx
    for c in approx:
        assert c["ok"] and abs(c["error"]) <= c["tolerance"], c
        assert 0 < c["tolerance"] <= 0.10


def test_every_row_names_the_slide_of_the_talk_it_demonstrates(claims):
    """`minitx check --json`: each claim carries a non-empty `slide` (docs/notation.md, "The talk", sums them up)."""
    missing = [(c["section"], c["model"], c["claim"]) for c in claims if not str(c.get("slide") or "").strip()]
    assert claims and not missing, missing[:5]
    for c in claims:                                  # "6", "5, 14": slide numbers of the 18-slide talk
        numbers = [int(n) for n in c["slide"].replace(",", " ").split()]
        assert numbers and all(1 <= n <= 18 for n in numbers), (c["claim"], c["slide"])


def test_both_families_and_every_section_are_checked(claims):
    assert {c["model"] for c in claims} >= {"small-gpt2", "small-llama", "gemma-2b"}
    assert {c["section"] for c in claims} == set(check.SECTIONS)
    for model in ("small-gpt2", "small-llama"):
        mine = [c for c in claims if c["model"] == model]
        assert {c["section"] for c in mine} == set(check.SECTIONS) - {"real models"}
    # the real models are counted by shape, every figure exactly
    real = [c for c in claims if c["section"] == "real models"]
    assert {c["model"] for c in real} == set(check.REAL_MODELS)
    assert all(c["kind"] == "exact" and c["ok"] for c in real)


def _find(claims, model, words):
    hits = [c for c in claims if c["model"] == model and all(w in c["claim"] for w in words)]
    assert hits, f"no claim for {model} with {words}"
    return hits


def test_the_talks_claims_are_all_there(claims):
    for model in check.MODELS:
        assert _find(claims, model, ["parameters allocated"])[0]["kind"] == "exact"
        assert _find(claims, model, ["embeddings"])[0]["unit"] == "%"
        assert _find(claims, model, ["2·P·tokens"])[0]["kind"] == "approx"
        assert any("attention" in c["claim"] for c in _find(claims, model, ["2·P·tokens"]))
        assert _find(claims, model, ["backward matmul MACs = 2 × forward"])[0]["kind"] == "exact"
        assert _find(claims, model, ["3 × inference"])[0]["kind"] == "approx"
        assert _find(claims, model, ["6·P·tokens"])[0]["kind"] == "approx"
        assert _find(claims, model, ["Adam", "2 extra copies"])[0]["kind"] == "exact"
        assert _find(claims, model, ["training keeps every activation"])[0]["source"] == "measured"
        assert _find(claims, model, ["inference peak"])[0]["source"] == "measured"
        assert _find(claims, model, ["cache bytes"])[0]["kind"] == "exact"
        assert _find(claims, model, ["kv_cache bytes written"])[0]["kind"] == "exact"
        assert len(_find(claims, model, ["recompute", "cached"])) == len(check.DECODE_AT)
        assert _find(claims, model, ["prefill matmuls"])[0]["kind"] == "exact"
        assert len(_find(claims, model, ["decode, batch"])) == len(check.DECODE_BATCHES)
        for ph in ("forward", "backward", "optimizer"):
            assert len(_find(claims, model, [f"training {ph}:"])) == 2   # FLOPs and bytes


def test_gemma_rows_compare_the_formula_with_published_figures(claims):
    rows = {c["formula"]: c for c in claims if c["model"] == "gemma-2b" and c["section"] != "real models"}
    assert rows["P − V·C"]["counted"] == rows["P − V·C"]["expected"] == 1_981_884_416
    assert rows["P"]["counted"] == rows["P"]["expected"] == 2_506_172_416
    assert all(c["source"].startswith("published") for c in rows.values())


def test_recompute_grows_like_t_and_decode_intensity_like_b(claims):
    for model in check.MODELS:
        ratios = [c["counted"] for c in _find(claims, model, ["recompute", "cached"])]
        for t, r in zip(check.DECODE_AT, ratios):
            assert t < r < 1.1 * (t + 1)              # O(t²) / O(t) ≈ t
        per_byte = [c["counted"] for c in _find(claims, model, ["decode, batch"])]
        assert per_byte == sorted(per_byte)           # batching raises decode's FLOPs per weight byte
        prefill = _find(claims, model, ["prefill matmuls"])[0]["counted"]
        decode_1 = _find(claims, model, ["decode matmuls", "batch 1"])[0]["counted"]
        assert prefill > 10 * decode_1


# ---- the printing and the exit status, without running the models again --------------------------------------

def _fake_claims(ok: bool) -> list[Claim]:
    return [
        Claim("parameters", "m", "parameters allocated = the closed-form count", 10, 10 if ok else 11),
        Claim("compute", "m", "forward ≈ 2·P·tokens", 100, 104, kind="approx", tolerance=0.1, unit="FLOPs"),
        Claim("memory", "m", "Adam", 800, 800, unit="B", source="allocated"),
    ]


@pytest.mark.parametrize("ok, status", [(True, 0), (False, 1)])
def test_main_prints_a_table_and_fails_on_a_mismatch(monkeypatch, capsys, ok, status):
    monkeypatch.setattr(check_cli, "run_checks", lambda progress=None: _fake_claims(ok))
    assert check_cli.main(argparse.Namespace(json=False, quiet=True)) == status
    out = capsys.readouterr().out
    assert "parameters allocated = the closed-form count" in out
    assert "formula" in out and "counted" in out and "verdict" in out
    assert "+4.00%" in out and "800 B" in out
    assert ("MISMATCH" in out) != ok


def test_main_json_is_the_same_claims(monkeypatch, capsys):
    monkeypatch.setattr(check_cli, "run_checks", lambda progress=None: _fake_claims(False))
    assert check_cli.main(argparse.Namespace(json=True, quiet=True)) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False
    assert [c["ok"] for c in data["claims"]] == [False, True, True]
    assert data["claims"][1]["error"] == pytest.approx(0.04)


def test_claim_verdicts():
    assert Claim("s", "m", "c", 5, 5).verdict == "exact"
    assert not Claim("s", "m", "c", 5, 6).ok
    c = Claim("s", "m", "c", 100, 89, kind="approx", tolerance=0.1)
    assert not c.ok and "OUTSIDE" in c.verdict and c.error == pytest.approx(-0.11)
    assert Claim("s", "m", "c", 100, 91, kind="approx", tolerance=0.1).ok


def test_table_shows_notes_bounds_tallies_and_illustrations(monkeypatch, capsys):
    note = "leaves out attention's scores and mix " * 5                  # long: wrapped, indented
    claims = [
        Claim("parameters", "m", "per part = formula", 4, 4, unit="parts", source="allocated"),
        Claim("exact", "m", "ops matching", 409, 409, unit="ops"),
        Claim("compute", "m", "forward ≈ 2·P·tokens", 100, 104, kind="approx", tolerance=0.1, unit="FLOPs",
              note=note),
        Claim("memory", "m", "inference peak is a few activations: peak ÷ largest ≤ 4", 4.0, 2.5,
              kind="at_most", unit="x", source="measured"),
        Claim("serving", "m", "illustration", 16, 12, kind="illustration", unit="FLOP/B", source="formula only",
              note="formula vs formula"),
    ]
    monkeypatch.setattr(check_cli, "run_checks", lambda progress=None: claims)
    assert check_cli.main(argparse.Namespace(json=False, quiet=True)) == 0    # the illustration never fails
    out = capsys.readouterr().out
    assert "4/4 parts" in out and "409/409 ops" in out
    row = next(line for line in out.splitlines() if "peak ÷ largest" in line)
    assert "≤ 4" in row and "4.000x" not in row and "2.500x" in row
    notes = [line for line in out.splitlines() if line.startswith("      leaves out")]
    assert len(notes) == 1 and all(len(line) <= check.NOTE_WIDTH for line in out.splitlines()
                                   if line.startswith("      "))
    assert "formula vs formula" in out
    tally = out.strip().splitlines()[-1]
    assert "2/2 exact claims match" in tally and "2/2 approximations and bounds hold" in tally
    assert "1 illustration" in tally
    assert next(line for line in out.splitlines() if "illustration" in line and "16" in line).startswith("--")


def test_real_run_rows_read_as_the_review_asked(claims):
    for model in check.MODELS:
        vocab = _find(claims, model, ["vocabulary tables"])[0]
        assert vocab["unit"] == "%" and vocab["kind"] == "exact" and vocab["counted"] == vocab["expected"]
        assert _find(claims, model, ["per part"])[0]["unit"] == "parts"
        assert _find(claims, model, ["ops matching"])[0]["unit"] == "ops"
        bound = _find(claims, model, ["inference peak is a few activations", "≤ 4"])[0]
        assert bound["kind"] == "at_most" and bound["counted"] <= 4
        for c in _find(claims, model, ["recompute", "cached"]):
            assert "≈ t + 1" in c["claim"]
        sixteen = _find(claims, model, ["16-bit", "FLOP per weight byte"])[0]
        assert sixteen["kind"] == "approx" and sixteen["source"] == "counted (bf16)" and sixteen["ok"]
    llama = _find(claims, "small-llama", ["vocabulary tables"])[0]
    assert "untied head" in llama["claim"] and llama["formula"].startswith("2·V·C / P")


# ---- serving many users (slides 12, 15, 16): the engine executed, its steps timed on an H100's roofline ---------

def test_many_users_rows_are_there_for_both_models_with_their_slides(claims):
    for model in check.MODELS:
        rows = [c for c in claims if c["model"] == model and c["section"] == "many users"]
        assert len(rows) == 9, [c["claim"] for c in rows]
        assert all(c["ok"] for c in rows), [c for c in rows if not c["ok"]]
        assert sorted(c["slide"] for c in rows) == ["12"] * 3 + ["15"] * 3 + ["16"] * 3
        # the exact rows compare the engine's counted seconds with the closed forms (or the simulator's), never
        # with another engine run; the others are stated bounds
        assert {c["kind"] for c in rows} == {"exact", "at_most"}
        assert all(c["formula"] for c in rows)


def test_batching_raises_throughput_with_diminishing_returns_and_raises_ttft(claims):
    for model in check.MODELS:
        rise = _find(claims, model, ["static batch of B = 1 → 32", "tok/s"])[0]
        assert rise["kind"] == "exact" and rise["counted"] > 1          # throughput rises with B ...
        falls = _find(claims, model, ["each doubling of B gains less"])[0]
        assert falls["kind"] == "at_most" and falls["expected"] == 1 and falls["counted"] < 1   # ... less and less
        assert falls["note"].count("×") == len(check.SERVE_BATCHES) - 1
        ttft = _find(claims, model, ["TTFT, B = 32 ÷ B = 1"])[0]
        assert ttft["kind"] == "exact" and ttft["counted"] > 1          # TTFT rises with B
        assert "slide 15's text says batching lowers it" in ttft["claim"]


def test_continuous_batching_serves_more_at_lower_latency(claims):
    for model in check.MODELS:
        ratio = _find(claims, model, ["continuous ÷ static batching", "tok/s"])[0]
        assert ratio["kind"] == "exact" and ratio["counted"] > 1 and "simulate" in ratio["formula"]
        for words in (["continuous's TTFT p50 ÷ static's"], ["continuous's latency p50"]):
            row = _find(claims, model, words)[0]
            assert row["kind"] == "at_most" and row["expected"] == 1 and row["counted"] <= 1


def test_kv_waste_rows_match_the_arithmetic_by_hand(claims):
    # 4 requests, prompts of 8, 24 new tokens each; step k (0 = the prefill) leaves each sequence L = 8 + k
    # positions, L = 8 .. 31, 24 steps. Blocks of 16.
    assert (check.KV_PROMPT, check.KV_GEN, check.KV_BLOCK) == (8, 24, 16)
    # paged: L ≤ 16 holds one block (16 − L empty), L = 17 .. 31 two (32 − L empty):
    #   mean waste = (Σ_{L=8}^{16} (16 − L)/16 + Σ_{L=17}^{31} (32 − L)/32) / 24 = (36/16 + 120/32) / 24 = 25%
    paged = 100 * (36 / 16 + 120 / 32) / 24
    # contiguous: prompt + cap = 32 positions reserved from the start: Σ_{L=8}^{31} (32 − L)/32 / 24 = 300/32/24
    contiguous = 100 * (300 / 32) / 24
    for model in check.MODELS:
        assert _find(claims, model, ["paged KV, blocks of 16: kv_waste"])[0]["counted"] == paged == 25.0
        assert _find(claims, model, ["contiguous KV", "kv_waste"])[0]["counted"] == contiguous == 39.0625
        # the worst step: L = 17 has just taken its second block, 32 − 17 = 15 = block_size − 1 positions empty
        empty = _find(claims, model, ["empty reserved positions per sequence"])[0]
        assert empty["kind"] == "at_most" and empty["expected"] == 15 and empty["counted"] == 32 - 17

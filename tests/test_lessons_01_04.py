"""Lessons 01-04 run from top to bottom as notebooks (tests/test_notebooks.py executes each once, in a real
kernel), each in about a minute, and print their key numbers; the numbers are checked again here from the
lesson's own variables, read from the kernel after the last cell."""
from __future__ import annotations

from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parent.parent / "lessons"


@pytest.fixture(scope="module")
def lesson():
    """(printed text, probe values) of a lesson executed once as a notebook in a real kernel (test_notebooks)."""
    from test_notebooks import run_lesson
    return run_lesson


def test_lessons_use_only_the_public_api():
    import minitx
    for name in ("01_parameters.py", "02_memory.py", "03_compute.py", "04_kv_cache.py"):
        text = (LESSONS / name).read_text()
        assert "# %% [markdown]" in text and "\n# %%\n" in text            # jupytext percent cells
        for line in text.splitlines():
            if line.startswith(("import minitx", "from minitx")):
                assert line.startswith("from minitx import ") or line == "import minitx", line
                if line.startswith("from minitx import "):
                    for item in line[len("from minitx import "):].split(","):
                        assert hasattr(minitx, item.strip()), item


def test_lesson_01_parameters(lesson):
    out, g = lesson("01_parameters.py")
    for figure in ("124,439,808", "354,823,168", "774,030,080", "1,557,611,200", "6,738,415,616",
                   "8,030,261,248", "7,241,732,096", "2,506,172,416", "8,537,680,896", "1,981,884,416",
                   "3,030,460,416"):
        assert figure in out
    assert g["gemma_total"] == 2_506_172_416 and g["gemma_non_embedding"] == 1_981_884_416
    assert g["gemma_embedding"] == 524_288_000
    assert g["allocated"] == g["by_hand"]
    assert abs(g["rule_error"]["GPT-2 small"]) < 0.01 and g["rule_error"]["Gemma-2B"] < -0.5
    assert g["per_layer"]["Gemma-2B"] > 2 * g["per_layer"]["GPT-2 small"]
    # the vocabulary tables (embedding + untied head) as shares of the total
    for share in ("3.9%", "13.1%", "3.6%", "20.9%"):
        assert share in out
    assert "four kinds of weights" in (LESSONS / "01_parameters.py").read_text()


def test_lesson_02_memory(lesson):
    _, g = lesson("02_memory.py")
    assert g["adam_copies"] == 2
    assert g["saved"] == g["saved_formula"]
    assert g["largest"] == g["largest_formula"]
    kept = {int(L): v[0] for L, v in g["by_depth"].items()}
    peaks = {int(L): v[1] for L, v in g["by_depth"].items()}
    assert kept[8] > 3.5 * kept[2]                          # training memory grows with depth
    assert abs(peaks[8] / peaks[2] - 1) < 0.02              # inference memory does not
    assert g["weights_by_dtype"]["bfloat16"] == 13_476_831_232
    # int8 by hand: 32 layers of q|k|v (4096·12288), o (4096·4096), gated up (4096·22016), down (11008·4096) =
    # 202,375,168 int8 values and 202,375,168 / 128 float16 scales each; the 2·32000·4096 vocabulary tables and
    # the 65·4096 norm weights in bf16
    layer = 4096 * 12288 + 4096 * 4096 + 4096 * 22016 + 11008 * 4096
    assert layer == 202_375_168
    assert g["weights_by_dtype"]["int8"] == 32 * (layer + layer // 128 * 2) + 2 * (2 * 32000 * 4096 + 65 * 4096)
    recipes = g["recipes"]
    assert recipes["mixed precision, 16 B/param"] == 16 * 6_738_415_616
    assert recipes["Hugging Face, 18 B/param"] == 18 * 6_738_415_616
    assert recipes["talk: W + 2W (bf16)"] == 3 * 13_476_831_232
    assert g["train7"] > 5 * g["infer7"]


def test_lesson_03_compute(lesson):
    _, g = lesson("03_compute.py")
    assert g["matmul"] == g["matmul_by_formula"]
    assert abs(g["bwd_train"] / g["fwd_train"] - 2) < 0.01
    assert abs(g["train_fb"] / (3 * g["fwd"]) - 1) < 0.01
    assert abs(g["train_fb"] / (6 * g["P"] * g["tokens_n"]) - 1) < 0.10
    per_token = g["per_token"]
    assert per_token["PaLM / nanoGPT: 6(P − wpe) + 12·L·H·Q·T"] == 855_166_464
    assert per_token["llm.c: 6P + 6·L·C·T"] == 803_261_952
    assert abs(g["head"] - 0.271) < 0.002                   # the LM head is 27% of GPT-2 small's forward
    assert 0.1 < g["attention_share"]["gpt2"] < 0.2


def test_lesson_04_kv_cache(lesson):
    _, g = lesson("04_kv_cache.py")
    assert g["same_tokens"] is True
    assert g["recompute_flops"] > 10 * g["cached_flops"]
    for t, r in ((int(t), r) for t, r in g["ratios"].items()):
        assert t < r < 1.1 * (t + 1)
    kv16 = g["kv16"]
    assert kv16["llama-2-7b"] == 524_288 and kv16["llama-3-8b"] == 131_072 and kv16["gemma-2b"] == 18_432
    assert g["mha_error"]["llama-3-8b"] == 4 and g["mha_error"]["gemma-2b"] == 8
    assert g["mha_error"]["gemma-7b"] < 1                   # MHA with head_dim = d / heads undercounts Gemma-7B
    assert g["fits"]["llama-3-8b"][0] > 2 * g["fits"]["llama-2-7b"][0]


def test_lessons_cite_public_sources_not_private_notes():
    for path in sorted(LESSONS.glob("*.py")):
        text = path.read_text()
        assert "PEERS.md" not in text and "project notes" not in text, path.name
    text = (LESSONS / "04_kv_cache.py").read_text()
    for link in ("github.com/RahulSChand/gpu_poor", "github.com/jranaraki/vllm-fit/issues/2",
                 "github.com/LMCache/LMCache/issues/688"):
        assert link in text


def test_lesson_03_labels_the_gpt2_shape_estimate():
    text = (LESSONS / "03_compute.py").read_text()
    assert "T/(6d), GPT-2 shape" in text and "exact attention / 2P" in text

"""Tensor parallelism (minitx.serving.parallel): what one chip computes, moves, holds and sends.

Megatron-LM (Shoeybi et al. 2019, §3): q|k|v and the MLP's up projection split by columns, the attention output
and the MLP's down projection by rows, two all-reduces per layer. The expected numbers below are derived by hand
from the model's published shapes, not from minitx.formulas.
"""
from __future__ import annotations

import pytest

from minitx import Config, formulas, hardware
from minitx.serving import parallel
from minitx.serving.step_cost import StepCost

LLAMA2_70B = Config.preset("llama-2-70b")    # C 8192, L 80, NH 64, KV 8, HS 128, F 28672, V 32000, untied
H100 = hardware.get("h100-sxm")
GB = 1e9


def by_name(ledger, layer_op: str) -> tuple[int, int, int]:
    """(FLOPs, weight bytes, kv-cache bytes) of layer 0's op `layer_op` ("attn.qkv") or of a top-level op."""
    name = layer_op if layer_op in ("embed", "ln_f", "lm_head") else f"layers.0.{layer_op}"
    r = ledger[name]
    return r.flops, r.reads.get("weights", 0), r.reads.get("kv_cache", 0) + r.writes.get("kv_cache", 0)


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_a_chip_does_one_tp_th_of_the_split_ops_and_all_of_the_rest(tp):
    blocks = [(1, 300, 0), (3, 1, 700)]             # a prompt chunk beside three decode tokens
    full = formulas.step(LLAMA2_70B, blocks, "bf16", "fused", logits_rows=4)
    chip = formulas.step(parallel.shard(LLAMA2_70B, tp), blocks, "bf16", "fused", logits_rows=4)
    for op in ("attn.qkv", "attn.proj", "mlp.up", "mlp.act", "mlp.down", "attn.fused", "attn.rope"):
        f_full, w_full, kv_full = by_name(full, op)
        f_chip, w_chip, kv_chip = by_name(chip, op)
        assert f_chip * tp == f_full, op             # FLOPs split exactly (heads, MLP width divide by tp)
        assert w_chip * tp == w_full or op == "attn.rope", op    # rope reads the (replicated) cos/sin tables
        assert kv_chip * tp == kv_full, op           # each chip caches and reads only its KV/tp heads
    for op in ("embed", "ln_f", "lm_head", "ln_1", "ln_2", "attn.residual", "mlp.residual"):
        assert by_name(chip, op) == by_name(full, op), op       # replicated: the same on every chip


def test_column_parallel_layers_still_read_their_whole_input():
    # q|k|v on one of 8 chips: reads the whole (N, C) input and 1/8 of the weights, writes 1/8 of the output
    N, C, s = 10, 8192, 2
    qkv_cols = (64 + 2 * 8) * 128 // 8               # (NH + 2·KV)·HS / tp
    chip = formulas.step(parallel.shard(LLAMA2_70B, 8), [(1, N, 0)], "bf16", "fused", logits_rows=1)
    r = chip["layers.0.attn.qkv"]
    assert r.reads == {"activations": N * C * s, "weights": C * qkv_cols * s}
    assert r.writes == {"activations": N * qkv_cols * s}


def test_allreduce_time_by_hand():
    # Llama-2-70B on 8 H100s: a step of 1,000 tokens runs 2 all-reduces per layer × 80 layers, each of a
    # (1000, 8192) bf16 activation; a ring moves 2·(8−1)/8 of it per chip over NVLink at 450 GB/s each way.
    cost = StepCost(LLAMA2_70B, H100, "bf16", tp=8)
    per_chip_bytes = 2 * 7 / 8 * 1000 * 8192 * 2
    assert cost.allreduce_time(1000) == pytest.approx(2 * 80 * per_chip_bytes / 450e9, rel=1e-12)
    assert cost.time([1000], [0], 1) == pytest.approx(cost.compute_time([1000], [0], 1)
                                                      + cost.allreduce_time(1000), rel=1e-12)
    assert StepCost(LLAMA2_70B.replace(n_layers=1), H100, "bf16").allreduce_time(1000) == 0      # tp = 1


def test_more_chips_make_a_decode_step_faster_but_not_for_free():
    # Memory-bound decode: each chip streams 1/tp of the layers' weights, so the step shrinks with tp; the
    # replicated embedding and head and the all-reduces keep it above a pure 1/tp scaling.
    times = {tp: StepCost(LLAMA2_70B, H100, "bf16", tp=tp).time([1] * 32, [1000] * 32, 32) for tp in (2, 4, 8)}
    assert times[2] > times[4] > times[8]
    assert times[8] > times[2] / 4


def test_seventy_b_in_bf16_is_refused_on_one_h100_and_fits_on_two():
    # 68,976,648,192 parameters (Meta's config: 80 layers of C·(NH + 2·KV)·HS + NH·HS·C + 3·C·F + 2·C, two
    # vocabulary tables of V·C, a final norm) at 2 bytes: 137.95 GB, more than an H100's 80 GB.
    C, L, NH, KV, HS, F, V = 8192, 80, 64, 8, 128, 28672, 32000
    params = L * (C * (NH + 2 * KV) * HS + NH * HS * C + 3 * C * F + 2 * C) + 2 * V * C + C
    assert params == 68_976_648_192
    with pytest.raises(ValueError, match=r"needs 137\.95 GB of weights.*h100-sxm has 80\.00 GB.*--tp 2"):
        parallel.chip_memory(LLAMA2_70B, H100, "bf16", tp=1)
    # On two chips each holds half of every layer and the whole vocabulary tables and final norm (replicated).
    per_chip = L * (C * (NH + 2 * KV) * HS // 2 + NH * HS * C // 2 + 3 * C * F // 2 + 2 * C) + 2 * V * C + C
    plan = parallel.chip_memory(LLAMA2_70B, H100, "bf16", tp=2)
    assert plan.weights == per_chip * 2
    kv_per_token = 2 * L * (KV // 2) * HS * 2                    # K and V, its 4 kv heads, every layer, bf16
    assert plan.kv_per_token == kv_per_token
    assert plan.num_blocks == int((80e9 * 0.9 - per_chip * 2) // (16 * kv_per_token))
    assert plan.num_blocks > 0


def test_the_memory_fraction_and_block_size_size_the_pool():
    cfg = Config.preset("llama-3-8b")
    # 8,030,261,248 parameters (Meta's config, as for 70B above: C 4096, L 32, NH 32, KV 8, HS 128, F 14336,
    # V 128256, untied), at 2 bytes each in bf16
    C, L, NH, KV, HS, F, V = 4096, 32, 32, 8, 128, 14336, 128256
    params = L * (C * (NH + 2 * KV) * HS + NH * HS * C + 3 * C * F + 2 * C) + 2 * V * C + C
    assert params == 8_030_261_248
    weights = params * 2
    per_token = 2 * 32 * 8 * 128 * 2                  # 131,072 bytes: K and V, 32 layers, 8 kv heads of 128, bf16
    plan = parallel.chip_memory(cfg, H100, "bf16", tp=1, block_size=32, memory_fraction=0.5)
    assert plan.num_blocks == int((40e9 - weights) // (32 * per_token))
    assert plan.kv_tokens == plan.num_blocks * 32


@pytest.mark.parametrize("tp, message", [(3, "n_heads=64"), (0, "tp"), (True, "tp"), (128, "n_heads=64")])
def test_uneven_splits_are_refused(tp, message):
    with pytest.raises(ValueError, match=message):
        parallel.shard(LLAMA2_70B, tp)


def test_a_chip_without_a_link_refuses_tp_but_a_custom_one_works():
    with pytest.raises(ValueError, match="tp=2 needs a chip-to-chip bandwidth, and tpu-v5e has none"):
        parallel.link_bandwidth(hardware.get("tpu-v5e"), 2)
    assert parallel.link_bandwidth(hardware.get("tpu-v5e"), 1) == 0.0
    linked = hardware.Hardware.from_dict({**hardware.get("tpu-v5e").to_dict(), "interconnect": 45e9})
    assert parallel.link_bandwidth(linked, 4) == 45e9


def test_nothing_fits_says_so():
    with pytest.raises(ValueError, match="no tensor-parallel split of it fits either"):
        parallel.chip_memory(LLAMA2_70B, "l4", "fp32", tp=1)

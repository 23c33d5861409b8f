"""Hardware presets, custom hardware files, and the measurement of this machine.

Published ridge points are rounded by whoever published them; each check allows exactly half a unit of the
last digit they printed (e.g. "≈295" allows ±0.5), so a preset that drifts from its source fails.
"""
import dataclasses
import json

import numpy as np
import pytest

from minitx import hardware
from minitx.measure import machine
from minitx.serving.hardware import GB, TB, TFLOPS, Hardware


# (preset, dtype, published ridge in FLOP/byte, half a unit of its last printed digit, who published it)
PUBLISHED_RIDGES = [
    ("h100-sxm", "bf16", 295, 0.5),     # 989.4e12 / 3.35e12, docs/formulas.md, "Hardware"
    ("a100-80gb", "bf16", 153, 0.5),    # 312e12 / 2039e9
    ("a100-40gb", "bf16", 201, 0.5),    # 312e12 / 1555e9
    ("a100-80gb-pcie", "bf16", 161, 0.5),
    ("h100-pcie", "bf16", 378, 0.5),
    ("h200", "bf16", 206, 0.5),
    ("l4", "bf16", 403, 0.5),
    ("a10", "bf16", 208.3, 0.05),       # Baseten's ops:byte for the A10
    ("t4", "fp16", 203, 0.5),           # with the datasheet's 320 GB/s (Baseten's 300 GB/s gives 217)
    ("rtx-4090", "bf16", 164, 0.5),     # fp32-accumulate figure
    ("tpu-v5e", "bf16", 240, 0.5),      # Scaling Book: 1.97e14 / 8.2e11
]


@pytest.mark.parametrize("name, dtype, published, half_unit", PUBLISHED_RIDGES)
def test_ridge_matches_published_figure(name, dtype, published, half_unit):
    assert abs(hardware.get(name).ridge(dtype) - published) <= half_unit


def test_ridge_is_peak_over_bandwidth():
    h100 = hardware.get("h100-sxm")
    assert h100.peak("bf16") == 989.4e12
    assert h100.bandwidth == 3.35e12
    assert h100.memory == 80e9  # GB = 1e9 bytes, not 2**30
    assert h100.ridge("bf16") == 989.4e12 / 3.35e12


# Datasheet headlines "with sparsity", in TFLOP/s as printed (rounded to the unit, or 0.5 where so printed).
SPARSE_HEADLINES = [("h100-sxm", 1979), ("h100-pcie", 1513), ("h100-nvl", 1671), ("h200", 1979), ("l4", 242)]


@pytest.mark.parametrize("name, headline", SPARSE_HEADLINES)
def test_sparse_headlines_are_halved_and_flagged(name, headline):
    hw = hardware.get(name)
    assert hw.sparse_halved
    assert "sparsity" in hw.notes
    # Dense is half the headline, to within the headline's rounding of half a TFLOP/s.
    assert abs(2 * hw.peak("bf16") / TFLOPS - headline) <= 0.5


@pytest.mark.parametrize("name", ["a100-80gb", "a10", "t4", "rtx-4090", "tpu-v5e"])
def test_presets_whose_sources_give_dense_figures_are_not_flagged(name):
    assert not hardware.get(name).sparse_halved


def test_custom_sparse_headline_is_halved():
    dense = hardware.custom("mine", {"bf16": 1979e12}, 3.35e12, 80e9)
    halved = hardware.custom("mine", {"bf16": 1979e12}, 3.35e12, 80e9, sparse_headline=True)
    assert not dense.sparse_halved and dense.peak("bf16") == 1979e12
    assert halved.sparse_halved and halved.peak("bf16") == 989.5e12


def test_every_preset_names_its_source_and_only_known_dtypes():
    assert hardware.presets() == sorted(hardware.presets())
    for name in hardware.presets():
        hw = hardware.get(name)
        assert hw.name == name and hw.source and not hw.measured
        assert set(hw.peak_flops) <= set(hardware.KNOWN_DTYPES)


def test_no_silent_fallback_to_another_dtype():
    with pytest.raises(ValueError, match=r"t4 has no peak FLOP/s for 'bf16'.*fp16, fp32, int8"):
        hardware.get("t4").peak("bf16")  # Turing has no bf16 units: must not answer with the fp16 peak
    with pytest.raises(ValueError, match="int4"):
        hardware.get("h100-sxm").peak("int4")


def test_dtype_spellings():
    h100 = hardware.get("h100-sxm")
    assert h100.peak("BF16") == h100.peak("bfloat16") == h100.peak("bf16")
    assert h100.peak(np.float32) == h100.peak("float32") == h100.peak("fp32") == 66.9e12


@pytest.mark.parametrize("alias, preset", [
    ("H100", "h100-sxm"), ("h100_sxm", "h100-sxm"), ("NVIDIA H100 SXM5", "h100-sxm"),
    ("A100", "a100-80gb"), ("a100_80gb_pcie", "a100-80gb-pcie"), ("RTX 4090", "rtx-4090"),
    ("GeForce RTX 4090", "rtx-4090"), ("4090", "rtx-4090"), ("TPU v5e", "tpu-v5e"), ("L4", "l4"),
])
def test_names_are_case_insensitive_with_aliases(alias, preset):
    assert hardware.get(alias) is hardware.get(preset)


def test_unknown_name_lists_the_presets_sorted():
    with pytest.raises(ValueError) as error:
        hardware.get("a10g")  # AWS's part differs from the A10: no guess
    assert ", ".join(sorted(hardware.presets())) in str(error.value)


def test_custom_hardware_from_json(tmp_path):
    path = tmp_path / "my-gpu.json"
    path.write_text(json.dumps({"peak_flops": {"bf16": 150e12, "fp32": 40e12},
                                "bandwidth": 1e12, "memory": 24e9, "notes": "lab card"}))
    hw = hardware.get(path)
    assert hw.name == "my-gpu"  # defaults to the file name
    assert hw.source == str(path)
    assert hw.ridge("bf16") == 150.0
    assert hw.notes == "lab card" and not hw.sparse_halved and not hw.measured


def test_custom_hardware_from_toml(tmp_path):
    path = tmp_path / "card.toml"
    path.write_text('name = "lab-card"\n'
                    "bandwidth = 2_000_000_000_000\n"
                    "memory = 48e9\n"
                    "sparse_headline = true\n"
                    "[peak_flops]\n"
                    "BF16 = 600e12\n")
    hw = hardware.get(str(path))
    assert hw.name == "lab-card"
    assert hw.peak("bf16") == 300e12  # the sparse headline, halved
    assert hw.sparse_halved
    assert hw.ridge("bf16") == 150.0


def test_to_dict_round_trips_through_a_file(tmp_path):
    h100 = hardware.get("h100-sxm")
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(h100.to_dict()))
    assert hardware.get(path) == h100


@pytest.mark.parametrize("content, message", [
    ({"peak_flops": {"bf16": 1e12}, "bandwidth": 1e12}, "missing"),
    ({"peak_flops": {"bf16": 1e12}, "bandwidth": 1e12, "memory": 1e9, "bandwith": 2e12}, "bandwith"),
    ({"peak_flops": {"int2": 1e12}, "bandwidth": 1e12, "memory": 1e9}, "unknown dtype 'int2'"),
])
def test_bad_hardware_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        hardware.get(path)


def test_unsupported_file_suffix(tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text("bandwidth: 1")
    with pytest.raises(ValueError, match=r"\.json or \.toml"):
        hardware.load(path)


VALID = dict(name="x", peak_flops={"bf16": 1e14}, bandwidth=1e12, memory=1e10)


@pytest.mark.parametrize("field, value, message", [
    ("bandwidth", 0, "Hardware.bandwidth must be a finite number > 0"),
    ("bandwidth", -1e12, "Hardware.bandwidth"),
    ("bandwidth", float("nan"), "Hardware.bandwidth"),
    ("bandwidth", float("inf"), "Hardware.bandwidth"),
    ("bandwidth", "3e12", "Hardware.bandwidth"),
    ("bandwidth", True, "Hardware.bandwidth"),
    ("memory", 0, "Hardware.memory"),
    ("peak_flops", {}, "Hardware.peak_flops must be a non-empty mapping"),
    ("peak_flops", {"bf16": -1.0}, r"Hardware.peak_flops\['bf16'\] must be a finite number > 0"),
    ("peak_flops", {"bf16": 1e14, "bfloat16": 1e14}, "twice"),
    ("name", "", "Hardware.name"),
    ("sparse_halved", "yes", "Hardware.sparse_halved"),
])
def test_invalid_numbers_are_rejected(field, value, message):
    with pytest.raises(ValueError, match=message):
        Hardware(**(VALID | {field: value}))


def test_hardware_is_read_only():
    h100 = hardware.get("h100-sxm")
    with pytest.raises(dataclasses.FrozenInstanceError):
        h100.bandwidth = 1.0
    with pytest.raises(TypeError):
        h100.peak_flops["bf16"] = 1979e12  # the classic sparse mistake cannot be patched in
    assert hash(h100) == hash(hardware.get("H100"))


def test_measure_returns_positive_numbers():
    # A tiny budget and small arrays keep this fast; it checks the plumbing, not the machine's speed.
    hw = hardware.measure(seconds_budget=0.05, sizes=(32, 64), copy_bytes=4e6)
    assert hw.measured and hw.name == "this-machine"
    assert set(hw.peak_flops) == {"fp32", "fp64"}
    assert all(flops > 0 for flops in hw.peak_flops.values())
    assert hw.bandwidth > 0 and hw.memory > 0
    assert hw.ridge("fp32") > 0
    assert hw.source.startswith("measured on this machine by minitx.hardware.measure()")


@pytest.mark.parametrize("bad", [{"seconds_budget": 0}, {"sizes": ()}, {"sizes": (0, 64)},
                                 {"copy_bytes": -1}])
def test_measure_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        hardware.measure(**bad)


def test_this_machine_is_measured_once_per_process(monkeypatch):
    calls = []

    def quick_measure():
        calls.append(1)
        return hardware.custom("this-machine", {"fp32": 1e11, "fp64": 5e10}, 1e10, 8 * GB).to_dict()

    monkeypatch.setattr(machine, "measure", quick_measure)
    monkeypatch.setattr(machine, "_measured_cache", None)
    first = hardware.get("this-machine")
    assert hardware.get("CPU") == first
    assert len(calls) == 1
    assert first.bandwidth == 10 * GB == 0.01 * TB


# Chip-to-chip links (tensor parallelism): the datasheets print both directions added; presets store one direction.
# (preset, the datasheet's bidirectional figure in GB/s, the link)
LINKS = [("h100-sxm", 900, "NVLink 4"), ("h200", 900, "NVLink 4"), ("a100-80gb", 600, "NVLink 3"),
         ("a100-40gb", 600, "NVLink 3"), ("h100-pcie", 128, "PCIe Gen5"), ("h100-nvl", 128, "PCIe Gen5"),
         ("a100-80gb-pcie", 64, "PCIe Gen4"), ("l4", 64, "PCIe Gen4"), ("a10", 64, "PCIe Gen4"),
         ("rtx-4090", 64, "PCIe Gen4"), ("t4", 32, "PCIe Gen3")]


@pytest.mark.parametrize("name, both_ways, link", LINKS)
def test_interconnect_is_per_direction_half_the_datasheet_figure(name, both_ways, link):
    hw = hardware.get(name)
    assert hw.interconnect == both_ways * GB / 2
    assert link in hw.interconnect_source and "each way" in hw.interconnect_source


def test_a_preset_without_a_link_says_why_and_custom_hardware_can_give_one():
    assert {name for name in hardware.presets() if hardware.get(name).interconnect is None} == {"tpu-v5e"}
    assert "torus" in hardware.get("tpu-v5e").interconnect_source
    mine = Hardware(**(VALID | {"interconnect": 50e9}))
    assert mine.interconnect == 50e9 and Hardware.from_dict(mine.to_dict()) == mine
    with pytest.raises(ValueError, match="Hardware.interconnect"):
        Hardware(**(VALID | {"interconnect": -1.0}))

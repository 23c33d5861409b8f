"""Hardware: peak FLOP/s, memory bandwidth and capacity, from a preset, a file, or measured on this machine.

The roofline model turns counted FLOPs and bytes into time with two numbers per chip:

    T_math  = FLOPs / peak FLOP/s      (the peak for the dtype the matmuls run in)
    T_bytes = bytes / bandwidth
    step time >= max(T_math, T_bytes)

Their ratio, `ridge(dtype) = peak / bandwidth` in FLOP per byte, is the arithmetic intensity at which a chip
stops waiting on memory. A bf16 matmul over a batch of B tokens has intensity ~B, so on an H100 SXM
(989.4e12 / 3.35e12 ~ 295) decoding is memory-bound until roughly 300 sequences share each weight read.

Units and conventions (decimal, as datasheets use them):
    peak_flops   dense FLOP/s per chip, 2 FLOPs per multiply-add, on the matrix (tensor) units; for int8 the
                 figure is integer OP/s, counted the same way.
    bandwidth    bytes/s of DRAM (HBM or GDDR) per chip.
    memory       bytes of DRAM per chip.
    interconnect bytes/s a chip sends to the others over its fastest link (NVLink, else PCIe), PER DIRECTION:
                 it receives as much at the same time. Datasheets add both directions (H100 SXM "NVLink 900 GB/s"
                 is 450 GB/s each way); tensor parallelism (minitx.serving.parallel) divides by this. None where
                 no figure applies: tp > 1 is then refused, not guessed.
    GB = 1e9 bytes, TB/s = 1e12 bytes/s, TFLOP/s = 1e12 FLOP/s. (A GiB is 2**30 bytes, 7% more than a GB.)

Dense, not sparse. Hopper and Ada datasheets headline their tensor figures "with sparsity": they assume 2:4
structured sparsity, which doubles the number. A transformer's matmuls are dense, so they get half. Presets
store the dense figure, and `sparse_halved=True` records that the datasheet headline was the sparse one and
we divided it by 2. Copying the headline instead (H100 "1,979", L4 "242") is a common calculator bug, and
it is how people end up reporting more than 100% MFU.

No silent fallback. `peak("int4")` on a chip with no int4 figure raises and lists the dtypes it has, rather
than quietly answering with the bf16 peak. The same goes for names: an unknown GPU raises and lists the
presets, instead of picking something close.

Names. Presets have lowercase ids (`presets()` lists them). `get()` also accepts any capitalisation, `_` or
spaces instead of `-`, a leading "nvidia-" or "geforce-", and these aliases:
    "h100", "h100-sxm5"                   -> "h100-sxm"   (the SXM part, as most cloud H100s are)
    "a100", "a100-sxm", "a100-80gb-sxm"   -> "a100-80gb"  (SXM, 80 GB; the PCIe card has its own id)
    "a100-40gb-sxm"                       -> "a100-40gb"
    "h200-sxm"                            -> "h200"
    "4090", "rtx4090"                     -> "rtx-4090"
    "v5e", "tpuv5e"                       -> "tpu-v5e"
    "this-machine", "cpu"                 -> measure this machine (once per process)
AWS's A10G is a different part from the A10 and deliberately not an alias.

Sources: each preset names its own in `source`; every figure also appears in docs/formulas.md ("Hardware"),
which records where sources disagree.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .. import checks, dtypes
from ..measure import machine

TFLOPS = 1e12  # FLOP/s
GB = 1e9       # bytes
TB = 1e12      # bytes

# Peaks are keyed by the datasheet names of minitx.dtypes ("bf16", "fp32", ...); any spelling dtypes knows works.
KNOWN_DTYPES = tuple(dtypes.short(d) for d in dtypes.FORMATS)


@dataclass(frozen=True)
class Hardware:
    """One chip: dense peak FLOP/s per dtype, DRAM bandwidth and size, and where the figures come from."""

    name: str
    # dtype -> dense FLOP/s. Read-only after construction; excluded from the hash because a mapping has none.
    peak_flops: Mapping[str, float] = dataclasses.field(hash=False)
    bandwidth: float            # bytes/s
    memory: float               # bytes
    source: str = ""            # URL or document the figures come from
    notes: str = ""             # caveats worth reading before trusting a number
    sparse_halved: bool = False # the datasheet headline assumed 2:4 sparsity; peak_flops holds half of it
    measured: bool = False      # measured on this machine by `measure()`, not read from a datasheet
    interconnect: float | None = None  # bytes/s per direction to the other chips (see the module docstring)
    interconnect_source: str = ""      # where that figure comes from

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Hardware.name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "peak_flops", MappingProxyType(self._checked_peaks(self.peak_flops)))
        object.__setattr__(self, "bandwidth", checks.positive("Hardware.bandwidth", self.bandwidth))
        object.__setattr__(self, "memory", checks.positive("Hardware.memory", self.memory))
        if self.interconnect is not None:
            object.__setattr__(self, "interconnect", checks.positive("Hardware.interconnect", self.interconnect))
        for field in ("source", "notes", "interconnect_source"):
            if not isinstance(getattr(self, field), str):
                raise ValueError(f"Hardware.{field} must be a string, got {getattr(self, field)!r}")
        for field in ("sparse_halved", "measured"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"Hardware.{field} must be True or False, got {getattr(self, field)!r}")

    @staticmethod
    def _checked_peaks(peak_flops: Any) -> dict[str, float]:
        if not isinstance(peak_flops, Mapping) or not peak_flops:
            raise ValueError("Hardware.peak_flops must be a non-empty mapping of dtype -> FLOP/s, "
                             f"got {peak_flops!r}")
        checked: dict[str, float] = {}
        for dtype, flops in peak_flops.items():
            try:
                key = dtypes.short(dtype)
            except ValueError:
                raise ValueError(f"Hardware.peak_flops has unknown dtype {dtype!r}; "
                                 f"known dtypes: {', '.join(KNOWN_DTYPES)}") from None
            if key in checked:
                raise ValueError(f"Hardware.peak_flops gives {key!r} twice (as {dtype!r} and an alias)")
            checked[key] = checks.positive(f"Hardware.peak_flops[{key!r}]", flops)
        return checked

    def peak(self, dtype: Any) -> float:
        """Dense peak FLOP/s for `dtype`. Raises if this chip has no figure for it: no substitution."""
        key = dtypes.short(dtype)
        if key not in self.peak_flops:
            raise ValueError(f"{self.name} has no peak FLOP/s for {dtype!r}; it has figures for "
                             f"{', '.join(sorted(self.peak_flops))}. minitx does not substitute another "
                             "dtype's peak: pick one of these, or give custom hardware the figure.")
        return self.peak_flops[key]

    def ridge(self, dtype: Any) -> float:
        """FLOP per byte at which compute time equals memory time: peak(dtype) / bandwidth."""
        return self.peak(dtype) / self.bandwidth

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready fields. `Hardware.from_dict(hw.to_dict()) == hw`."""
        # Not dataclasses.asdict: it would try to deep-copy the read-only mapping.
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return fields | {"peak_flops": dict(self.peak_flops)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, default_name: str = "custom",
                  default_source: str = "user-supplied") -> "Hardware":
        """Build from the fields of `to_dict()`. Required: peak_flops, bandwidth, memory.

        One extra key is accepted: `sparse_headline = true` says the peak_flops given are datasheet
        figures with 2:4 sparsity; they are halved and `sparse_halved` is set. Unknown keys raise, so that
        a misspelt "bandwith" is not silently ignored.
        """
        allowed = {f.name for f in dataclasses.fields(cls)} | {"sparse_headline"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown hardware field(s) {unknown}; allowed: {sorted(allowed)}")
        missing = [key for key in ("peak_flops", "bandwidth", "memory") if key not in data]
        if missing:
            raise ValueError(f"hardware description is missing {missing}")
        fields = dict(data)
        sparse_headline = fields.pop("sparse_headline", False)
        if not isinstance(sparse_headline, bool):
            raise ValueError(f"sparse_headline must be true or false, got {sparse_headline!r}")
        fields.setdefault("name", default_name)
        fields.setdefault("source", default_source)
        if sparse_headline:
            fields["peak_flops"] = _halve_sparse_headline(fields["peak_flops"])
            fields["sparse_halved"] = True
        return cls(**fields)


def _halve_sparse_headline(peak_flops: Any) -> dict[Any, Any]:
    """Dense FLOP/s from a datasheet's 'with sparsity' figures: 2:4 sparsity skips half the multiplies,
    so the dense rate is half the headline."""
    if not isinstance(peak_flops, Mapping):
        raise ValueError(f"Hardware.peak_flops must be a mapping of dtype -> FLOP/s, got {peak_flops!r}")
    # Leave bad values alone: Hardware's own checks report them with their field name.
    return {dtype: flops / 2 if isinstance(flops, (int, float)) and not isinstance(flops, bool) else flops
            for dtype, flops in peak_flops.items()}


# ---------------------------------------------------------------------------------------------------------
# Presets: dense figures per chip, written as literals (989.4e12 FLOP/s = 989.4 TFLOP/s, 80e9 bytes = 80 GB).
# A dtype is listed only where the source gives it: the T4 has no bf16 units, so it has no bf16 entry.

_H100_URL = "https://www.nvidia.com/en-us/data-center/h100/ (datasheet); NVIDIA H100 whitepaper"
_A100_URL = "https://www.nvidia.com/en-us/data-center/a100/ (A100 datasheet)"
_A100_PEAKS = {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12, "int8": 624e12}
_A100_NOTES = ("Datasheet lists dense and sparse side by side (bf16 312 / 624*); these are the dense ones. "
               "No fp8 units on Ampere.")
_HOPPER_SXM_PEAKS = {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12,
                     "fp8": 1978.9e12, "int8": 1978.9e12}

# Chip-to-chip links, per direction (datasheets print both directions added). Each preset says which it has.
_NVLINK4 = "NVLink 4: 900 GB/s both directions (datasheet), 450 GB/s each way"
_NVLINK3 = "NVLink 3: 600 GB/s both directions (datasheet), 300 GB/s each way"
_PCIE5 = "PCIe Gen5 x16: 128 GB/s both directions (datasheet), 64 GB/s each way"
_PCIE4 = "PCIe Gen4 x16: 64 GB/s both directions (datasheet), 32 GB/s each way"
_PCIE3 = "PCIe Gen3 x16: 32 GB/s both directions (datasheet), 16 GB/s each way"
_BRIDGE = "; its optional NVLink bridge joins pairs only, so a ring over more chips runs at PCIe speed"

_PRESET_LIST = [
    Hardware(
        name="h100-sxm", peak_flops=_HOPPER_SXM_PEAKS, bandwidth=3.35e12, memory=80e9,
        source=_H100_URL, sparse_halved=True,
        notes="Datasheet headline bf16 1,979 TFLOP/s is 'with sparsity'; dense is 989.4 (whitepaper, and the "
              "9.89e14 the Scaling Book uses). HBM3 3.35 TB/s. kipply's 2022 figures (1000 TF, 3 TB/s, "
              "ridge 333) predate the final spec.",
        interconnect=450e9, interconnect_source=_NVLINK4),
    Hardware(
        name="h100-pcie",
        peak_flops={"fp32": 51e12, "tf32": 378e12, "bf16": 756.5e12, "fp16": 756.5e12, "fp8": 1513e12,
                    "int8": 1513e12},
        bandwidth=2.0e12, memory=80e9, source=_H100_URL, sparse_halved=True,
        notes="Datasheet headlines are 'with sparsity'; halved (bf16 1,513 -> 756.5). HBM2e 2.0 TB/s, not "
              "the SXM's 3.35.",
        interconnect=64e9, interconnect_source=_PCIE5 + _BRIDGE),
    Hardware(
        name="h100-nvl",
        peak_flops={"fp32": 60e12, "tf32": 417.5e12, "bf16": 835.5e12, "fp16": 835.5e12, "fp8": 1670.5e12,
                    "int8": 1670.5e12},
        bandwidth=3.9e12, memory=94e9, source=_H100_URL, sparse_halved=True,
        notes="Per GPU of the NVL pair. Datasheet headlines are 'with sparsity'; halved (bf16 1,671 -> 835.5).",
        interconnect=64e9, interconnect_source=_PCIE5 + _BRIDGE),
    Hardware(
        name="h200", peak_flops=_HOPPER_SXM_PEAKS, bandwidth=4.8e12, memory=141e9,
        source="https://www.nvidia.com/en-us/data-center/h200/ (datasheet); Scaling Book GPU chapter",
        sparse_halved=True,
        notes="Same compute as the H100 SXM (datasheet headline 1,979 is 'with sparsity'; halved). More and "
              "faster HBM3e, so a lower ridge (~206).",
        interconnect=450e9, interconnect_source=_NVLINK4),
    Hardware(
        name="a100-40gb", peak_flops=_A100_PEAKS, bandwidth=1555e9, memory=40e9, source=_A100_URL,
        notes=_A100_NOTES + " kipply rounds the bandwidth to 1.5e12 and so gets a ridge of 208, not 201.",
        interconnect=300e9, interconnect_source=_NVLINK3),
    Hardware(
        name="a100-80gb", peak_flops=_A100_PEAKS, bandwidth=2039e9, memory=80e9, source=_A100_URL,
        notes="SXM module. " + _A100_NOTES + " nanoGPT's MFU uses the same 312e12.",
        interconnect=300e9, interconnect_source=_NVLINK3),
    Hardware(
        name="a100-80gb-pcie", peak_flops=_A100_PEAKS, bandwidth=1935e9, memory=80e9,
        source=_A100_URL, notes="PCIe card: same peak as the SXM, slower HBM2e. " + _A100_NOTES,
        interconnect=32e9, interconnect_source=_PCIE4 + _BRIDGE),
    Hardware(
        name="l4",
        peak_flops={"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12, "fp16": 121e12, "fp8": 242.5e12,
                    "int8": 242.5e12},
        bandwidth=300e9, memory=24e9, source="https://www.nvidia.com/en-us/data-center/l4/ (datasheet)",
        sparse_halved=True,
        notes="Datasheet tensor figures are all 'with sparsity' (bf16 242, fp8 485); halved. 72 W card with "
              "GDDR6, so its ridge (~403) is the highest here: almost everything is memory-bound.",
        interconnect=32e9, interconnect_source=_PCIE4),
    Hardware(
        name="a10",
        peak_flops={"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12, "int8": 250e12},
        bandwidth=600e9, memory=24e9,
        source="https://www.nvidia.com/en-us/data-center/products/a10-gpu/ (datasheet); Baseten's guide",
        notes="Datasheet lists dense and sparse (bf16 125 / 250*); dense kept. Baseten's ops:byte is 208.3. "
              "Not the AWS A10G, which has different figures.",
        interconnect=32e9, interconnect_source=_PCIE4),
    Hardware(
        name="t4",
        peak_flops={"fp32": 8.1e12, "fp16": 65e12, "int8": 130e12},
        bandwidth=320e9, memory=16e9,
        source="https://www.nvidia.com/en-us/data-center/tesla-t4/ (datasheet)",
        notes="Turing: fp16 tensor cores (65 TFLOP/s mixed precision), no bf16, no sparsity. The datasheet "
              "says 320 GB/s; Baseten uses 300, which moves the fp16 ridge from 203 to 217.",
        interconnect=16e9, interconnect_source=_PCIE3),
    Hardware(
        name="rtx-4090",
        peak_flops={"fp32": 82.6e12, "tf32": 82.6e12, "bf16": 165.2e12, "fp16": 165.2e12, "int8": 660.6e12},
        bandwidth=1008e9, memory=24e9,
        source="NVIDIA Ada Lovelace GPU architecture whitepaper, Appendix A (GeForce RTX 4090)",
        notes="bf16/fp16 with fp32 accumulate: 165.2 dense (the training and serving case). With fp16 "
              "accumulate the whitepaper gives 330.3, which is not what frameworks run; sparse figures are "
              "twice these. fp8 left out: published dense figures disagree (330 vs 660).",
        interconnect=32e9, interconnect_source=_PCIE4 + " (no NVLink on the 4090)"),
    Hardware(
        name="tpu-v5e", peak_flops={"bf16": 197e12, "int8": 394e12},
        bandwidth=820e9, memory=16e9,
        source="https://jax-ml.github.io/scaling-book/ (roofline chapter); https://cloud.google.com/tpu/docs/v5e",
        notes="A reference point from the Scaling Book: ridge 1.97e14 / 8.2e11 = 240. Google's page gives "
              "819 GB/s HBM2.",
        interconnect_source="none given: the ICI is a 2D torus of links, not one per-chip figure a ring over a "
                            "switch could use; give custom hardware an interconnect to model it"),
]

PRESETS: Mapping[str, Hardware] = MappingProxyType({hw.name: hw for hw in _PRESET_LIST})

MAX_FILE_BYTES = 1 << 20      # a description of one chip is a few hundred bytes

_ALIASES = {
    "h100": "h100-sxm", "h100-sxm5": "h100-sxm",
    "h200-sxm": "h200",
    "a100": "a100-80gb", "a100-sxm": "a100-80gb", "a100-80gb-sxm": "a100-80gb",
    "a100-40gb-sxm": "a100-40gb",
    "4090": "rtx-4090", "rtx4090": "rtx-4090",
    "v5e": "tpu-v5e", "tpuv5e": "tpu-v5e",
}
MEASURE_NAMES = ("this-machine", "cpu")


def presets() -> list[str]:
    """Names of the built-in presets, sorted."""
    return sorted(PRESETS)


def _canonical_name(name: str) -> str:
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    for vendor in ("nvidia-", "geforce-"):
        key = key.removeprefix(vendor)
    return _ALIASES.get(key, key)


def get(name_or_path: "str | os.PathLike[str] | Hardware") -> Hardware:
    """Hardware by preset name or alias, from a .json/.toml file, or measured ('this-machine' / 'cpu').

    A `Hardware` passes through unchanged, so functions can take either a name or an object.
    """
    if isinstance(name_or_path, Hardware):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"hardware must be a preset name, a .json/.toml path or a minitx.hardware.Hardware, got "
                        f"{type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    # Decided by the suffix alone, so a stray file called "h100" in the working directory changes nothing.
    if text.lower().endswith((".json", ".toml")):
        return load(text)
    key = _canonical_name(text)
    if key in MEASURE_NAMES:
        return Hardware(**machine.this_machine())
    if key in PRESETS:
        return PRESETS[key]
    raise ValueError(f"unknown hardware {text!r}. Presets: {', '.join(presets())}. Or "
                     f"{' / '.join(map(repr, MEASURE_NAMES))} to measure this machine, or the path of a "
                     ".json or .toml file describing custom hardware.")


def load(path: "str | os.PathLike[str]") -> Hardware:
    """Custom hardware from a JSON or TOML file with the fields of `Hardware` (see `Hardware.from_dict`).

    TOML example (numbers in FLOP/s, bytes/s and bytes):
        name = "my-gpu"
        bandwidth = 1.0e12
        memory = 24e9
        [peak_flops]
        bf16 = 150e12
    """
    path = Path(path)
    where = f"hardware file {str(path)!r}"
    if path.suffix.lower() not in (".json", ".toml"):
        raise ValueError(f"{where} must end in .json or .toml")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES:,} bytes")
        text = raw.decode("utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"must hold one object/table, got {type(data).__name__}")
        return Hardware.from_dict(data, default_name=path.stem, default_source=str(path))
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file") from None
    except (OSError, ValueError, TypeError, RecursionError) as e:     # JSON, TOML, UTF-8 and field errors
        raise ValueError(f"{where}: {getattr(e, 'strerror', None) or e}") from None


def custom(name: str, peak_flops: Mapping[str, float], bandwidth: float, memory: float, *,
           source: str = "user-supplied", notes: str = "", sparse_headline: bool = False) -> Hardware:
    """Hardware from numbers, e.g. from command-line flags. `sparse_headline=True` halves the peaks given."""
    return Hardware.from_dict({"name": name, "peak_flops": peak_flops, "bandwidth": bandwidth,
                               "memory": memory, "source": source, "notes": notes,
                               "sparse_headline": sparse_headline})


def measure(seconds_budget: float = 2.0, sizes: tuple[int, ...] = (256, 512, 1024, 2048),
            copy_bytes: float = 256e6) -> Hardware:
    """This machine, measured now (see minitx.measure.machine): NumPy's matmul peak and copy bandwidth."""
    return Hardware(**machine.measure(seconds_budget, sizes, copy_bytes))

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

Sources: each preset names its own in `source`; every figure also appears in the project's reference notes
(FORMULAS.md §7), which record where sources disagree.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

TFLOPS = 1e12  # FLOP/s
GB = 1e9       # bytes
TB = 1e12      # bytes

# fp64 is here for measured CPUs; GPU presets quote only what inference and training use.
KNOWN_DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")

# Other spellings of the same dtypes, so `peak(np.float32)` or `peak("bfloat16")` work.
_DTYPE_ALIASES = {"float64": "fp64", "float32": "fp32", "float16": "fp16", "half": "fp16",
                  "bfloat16": "bf16"}


def _dtype_key(dtype: Any) -> str:
    """The name minitx uses for a dtype: 'fp32' for 'FP32', 'float32' or np.float32."""
    if isinstance(dtype, str):
        name = dtype.strip().lower()
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    return _DTYPE_ALIASES.get(name, name)


def _require_positive_number(label: str, value: Any) -> float:
    # bool is an int in Python; True FLOP/s is a mistake, not a number.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{label} must be a finite number > 0, got {value!r}")
    return float(value)


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

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Hardware.name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "peak_flops", MappingProxyType(self._checked_peaks(self.peak_flops)))
        object.__setattr__(self, "bandwidth", _require_positive_number("Hardware.bandwidth", self.bandwidth))
        object.__setattr__(self, "memory", _require_positive_number("Hardware.memory", self.memory))
        for field in ("source", "notes"):
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
            key = _dtype_key(dtype)
            if key not in KNOWN_DTYPES:
                raise ValueError(f"Hardware.peak_flops has unknown dtype {dtype!r}; "
                                 f"known dtypes: {', '.join(KNOWN_DTYPES)}")
            if key in checked:
                raise ValueError(f"Hardware.peak_flops gives {key!r} twice (as {dtype!r} and an alias)")
            checked[key] = _require_positive_number(f"Hardware.peak_flops[{key!r}]", flops)
        return checked

    def peak(self, dtype: Any) -> float:
        """Dense peak FLOP/s for `dtype`. Raises if this chip has no figure for it: no substitution."""
        key = _dtype_key(dtype)
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

_PRESET_LIST = [
    Hardware(
        name="h100-sxm", peak_flops=_HOPPER_SXM_PEAKS, bandwidth=3.35e12, memory=80e9,
        source=_H100_URL, sparse_halved=True,
        notes="Datasheet headline bf16 1,979 TFLOP/s is 'with sparsity'; dense is 989.4 (whitepaper, and the "
              "9.89e14 the Scaling Book uses). HBM3 3.35 TB/s. kipply's 2022 figures (1000 TF, 3 TB/s, "
              "ridge 333) predate the final spec."),
    Hardware(
        name="h100-pcie",
        peak_flops={"fp32": 51e12, "tf32": 378e12, "bf16": 756.5e12, "fp16": 756.5e12, "fp8": 1513e12,
                    "int8": 1513e12},
        bandwidth=2.0e12, memory=80e9, source=_H100_URL, sparse_halved=True,
        notes="Datasheet headlines are 'with sparsity'; halved (bf16 1,513 -> 756.5). HBM2e 2.0 TB/s, not "
              "the SXM's 3.35."),
    Hardware(
        name="h100-nvl",
        peak_flops={"fp32": 60e12, "tf32": 417.5e12, "bf16": 835.5e12, "fp16": 835.5e12, "fp8": 1670.5e12,
                    "int8": 1670.5e12},
        bandwidth=3.9e12, memory=94e9, source=_H100_URL, sparse_halved=True,
        notes="Per GPU of the NVL pair. Datasheet headlines are 'with sparsity'; halved (bf16 1,671 -> 835.5)."),
    Hardware(
        name="h200", peak_flops=_HOPPER_SXM_PEAKS, bandwidth=4.8e12, memory=141e9,
        source="https://www.nvidia.com/en-us/data-center/h200/ (datasheet); Scaling Book GPU chapter",
        sparse_halved=True,
        notes="Same compute as the H100 SXM (datasheet headline 1,979 is 'with sparsity'; halved). More and "
              "faster HBM3e, so a lower ridge (~206)."),
    Hardware(
        name="a100-40gb", peak_flops=_A100_PEAKS, bandwidth=1555e9, memory=40e9, source=_A100_URL,
        notes=_A100_NOTES + " kipply rounds the bandwidth to 1.5e12 and so gets a ridge of 208, not 201."),
    Hardware(
        name="a100-80gb", peak_flops=_A100_PEAKS, bandwidth=2039e9, memory=80e9, source=_A100_URL,
        notes="SXM module. " + _A100_NOTES + " nanoGPT's MFU uses the same 312e12."),
    Hardware(
        name="a100-80gb-pcie", peak_flops=_A100_PEAKS, bandwidth=1935e9, memory=80e9,
        source=_A100_URL, notes="PCIe card: same peak as the SXM, slower HBM2e. " + _A100_NOTES),
    Hardware(
        name="l4",
        peak_flops={"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12, "fp16": 121e12, "fp8": 242.5e12,
                    "int8": 242.5e12},
        bandwidth=300e9, memory=24e9, source="https://www.nvidia.com/en-us/data-center/l4/ (datasheet)",
        sparse_halved=True,
        notes="Datasheet tensor figures are all 'with sparsity' (bf16 242, fp8 485); halved. 72 W card with "
              "GDDR6, so its ridge (~403) is the highest here: almost everything is memory-bound."),
    Hardware(
        name="a10",
        peak_flops={"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12, "int8": 250e12},
        bandwidth=600e9, memory=24e9,
        source="https://www.nvidia.com/en-us/data-center/products/a10-gpu/ (datasheet); Baseten's guide",
        notes="Datasheet lists dense and sparse (bf16 125 / 250*); dense kept. Baseten's ops:byte is 208.3. "
              "Not the AWS A10G, which has different figures."),
    Hardware(
        name="t4",
        peak_flops={"fp32": 8.1e12, "fp16": 65e12, "int8": 130e12},
        bandwidth=320e9, memory=16e9,
        source="https://www.nvidia.com/en-us/data-center/tesla-t4/ (datasheet)",
        notes="Turing: fp16 tensor cores (65 TFLOP/s mixed precision), no bf16, no sparsity. The datasheet "
              "says 320 GB/s; Baseten uses 300, which moves the fp16 ridge from 203 to 217."),
    Hardware(
        name="rtx-4090",
        peak_flops={"fp32": 82.6e12, "tf32": 82.6e12, "bf16": 165.2e12, "fp16": 165.2e12, "int8": 660.6e12},
        bandwidth=1008e9, memory=24e9,
        source="NVIDIA Ada Lovelace GPU architecture whitepaper, Appendix A (GeForce RTX 4090)",
        notes="bf16/fp16 with fp32 accumulate: 165.2 dense (the training and serving case). With fp16 "
              "accumulate the whitepaper gives 330.3, which is not what frameworks run; sparse figures are "
              "twice these. fp8 left out: published dense figures disagree (330 vs 660)."),
    Hardware(
        name="tpu-v5e", peak_flops={"bf16": 197e12, "int8": 394e12},
        bandwidth=820e9, memory=16e9,
        source="https://jax-ml.github.io/scaling-book/ (roofline chapter); https://cloud.google.com/tpu/docs/v5e",
        notes="A reference point from the Scaling Book: ridge 1.97e14 / 8.2e11 = 240. Google's page gives "
              "819 GB/s HBM2."),
]

PRESETS: Mapping[str, Hardware] = MappingProxyType({hw.name: hw for hw in _PRESET_LIST})

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
    text = os.fspath(name_or_path)
    # Decided by the suffix alone, so a stray file called "h100" in the working directory changes nothing.
    if text.lower().endswith((".json", ".toml")):
        return load(text)
    key = _canonical_name(text)
    if key in MEASURE_NAMES:
        return _this_machine()
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
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(path.read_text())
    elif suffix == ".toml":
        with path.open("rb") as file:
            data = tomllib.load(file)
    else:
        raise ValueError(f"hardware file {str(path)!r} must end in .json or .toml")
    if not isinstance(data, dict):
        raise ValueError(f"hardware file {str(path)!r} must hold one object/table, got {type(data).__name__}")
    return Hardware.from_dict(data, default_name=path.stem, default_source=str(path))


def custom(name: str, peak_flops: Mapping[str, float], bandwidth: float, memory: float, *,
           source: str = "user-supplied", notes: str = "", sparse_headline: bool = False) -> Hardware:
    """Hardware from numbers, e.g. from command-line flags. `sparse_headline=True` halves the peaks given."""
    return Hardware.from_dict({"name": name, "peak_flops": peak_flops, "bandwidth": bandwidth,
                               "memory": memory, "source": source, "notes": notes,
                               "sparse_headline": sparse_headline})


# ---------------------------------------------------------------------------------------------------------
# Measuring this machine: what NumPy's BLAS and a plain array copy actually reach.

_MAX_REPEATS = 5             # best of up to this many timed runs per size
_FALLBACK_MEMORY = 8 * GB    # used, and said so in notes, where os.sysconf cannot tell us
_measured_cache: Hardware | None = None


def _best_matmul_flops(dtype: type, sizes: tuple[int, ...], seconds: float) -> tuple[float, int]:
    """Best FLOP/s of n x n @ n x n over `sizes` (2·n³ FLOPs each) and the size that reached it.

    Small matmuls do not saturate the cores, so sizes go up until the next one would overrun the time.
    Keeping the best run (not the mean) estimates the peak, which is what a roofline needs.
    """
    rng = np.random.default_rng(0)
    deadline = time.perf_counter() + seconds
    best_flops, best_n = 0.0, 0
    ordered = sorted(sizes)
    for n, next_n in zip(ordered, ordered[1:] + [None]):
        a = rng.random((n, n), dtype=dtype)
        b = rng.random((n, n), dtype=dtype)
        out = np.empty((n, n), dtype=dtype)
        np.matmul(a, b, out=out)  # warm-up: thread start-up and first touch of `out` are not the matmul
        fastest = math.inf
        for _ in range(_MAX_REPEATS):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            fastest = min(fastest, time.perf_counter() - start)
            if time.perf_counter() > deadline:
                break
        if 2 * n**3 / fastest > best_flops:
            best_flops, best_n = 2 * n**3 / fastest, n
        # Work grows as n³; stop if a warm-up plus one run of the next size would not fit.
        if next_n is None or time.perf_counter() + 2 * fastest * (next_n / n) ** 3 > deadline:
            break
    return best_flops, best_n


def _best_copy_bandwidth(nbytes: int, seconds: float) -> float:
    """Best bytes/s of np.copyto between two large arrays, counting read + write = 2·nbytes per copy.

    The STREAM convention: it ignores the extra read a write-allocate cache does, so it slightly
    understates what the memory bus moves. Arrays must be much larger than the last-level cache,
    or this measures the cache.
    """
    source = np.ones(max(nbytes // 8, 1), dtype=np.float64)
    target = np.empty_like(source)
    np.copyto(target, source)  # warm-up: the first copy also pays for mapping `target`'s pages
    deadline = time.perf_counter() + seconds
    best = 0.0
    for _ in range(_MAX_REPEATS):
        start = time.perf_counter()
        np.copyto(target, source)
        best = max(best, 2 * source.nbytes / (time.perf_counter() - start))
        if time.perf_counter() > deadline:
            break
    return best


def _physical_memory() -> tuple[float, bool]:
    """(bytes of RAM, whether it was read) from os.sysconf, which exists on Linux and macOS."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_MEMORY, False
    if pages <= 0 or page_size <= 0:
        return _FALLBACK_MEMORY, False
    return float(pages * page_size), True


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def measure(seconds_budget: float = 2.0, sizes: tuple[int, ...] = (256, 512, 1024, 2048),
            copy_bytes: float = 256e6) -> Hardware:
    """Measure this machine: peak fp32/fp64 matmul FLOP/s (NumPy's BLAS) and copy bandwidth.

    About `seconds_budget` seconds in all: 40% fp32 matmuls, 30% fp64, 30% copies, plus set-up. The copy
    arrays are `copy_bytes` each (two of them), capped at 1/8 of RAM. Figures are what NumPy reaches with
    all cores, not a datasheet peak: a fair ceiling for minitx's own kernels on this machine.
    """
    seconds = _require_positive_number("seconds_budget", seconds_budget)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes!r}")
    copy_nbytes = _require_positive_number("copy_bytes", copy_bytes)
    memory, memory_known = _physical_memory()
    copy_nbytes = int(min(copy_nbytes, memory / 8))

    fp32, fp32_n = _best_matmul_flops(np.float32, tuple(sizes), 0.4 * seconds)
    fp64, fp64_n = _best_matmul_flops(np.float64, tuple(sizes), 0.3 * seconds)
    bandwidth = _best_copy_bandwidth(copy_nbytes, 0.3 * seconds)

    notes = (f"best of up to {_MAX_REPEATS} runs: fp32 peak at n={fp32_n}, fp64 at n={fp64_n} (of sizes "
             f"{sorted(sizes)}); bandwidth from np.copyto of {copy_nbytes / 1e6:.0f} MB arrays, counting "
             f"read + write; {os.cpu_count()} logical CPUs.")
    if not memory_known:
        notes += f" RAM size unavailable from os.sysconf: {_FALLBACK_MEMORY / GB:.0f} GB assumed."
    return Hardware(
        name="this-machine", peak_flops={"fp32": fp32, "fp64": fp64}, bandwidth=bandwidth, memory=memory,
        source=f"measured on this machine by minitx.hardware.measure(); CPU: {_cpu_model()}",
        notes=notes, measured=True)


def _this_machine() -> Hardware:
    """`measure()` once per process: a measurement takes seconds, and the machine does not change."""
    global _measured_cache
    if _measured_cache is None:
        _measured_cache = measure()
    return _measured_cache

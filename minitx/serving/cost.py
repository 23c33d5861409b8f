"""Self-hosting economics: what a token costs on a GPU you rent by the hour, next to an API's price.

Pure arithmetic on numbers you supply; nothing here runs or sizes a model. Throughput comes from a
measurement, from the roofline, or from a step-time model (`Throughput.from_step_times`).

Units
    money        US dollars. `gpu_price_per_hour` is for everything that serves one copy of the model
                 (for 8 GPUs, pass 8 times the per-GPU price).
    throughput   tokens per second summed over the whole batch: prefill = prompt tokens processed per
                 second, decode = completion tokens generated per second.
    API prices   dollars per million (1e6) tokens, separately for input (prompt) and output (completion).

The one formula (dollars per token = dollars per second / tokens per second):

    $ per million tokens = gpu_price_per_hour / 3600 / tokens_per_s * 1e6 / utilization

`utilization` (0 < u <= 1) is the fraction of the paid hours the GPU spends working at that throughput.
Idle hours are paid for too, so every self-hosted cost divides by u: at 10% utilization a token costs 10x.

How GPU time is split between input and output: by time. A request with P prompt and C completion tokens
keeps the GPU busy for P / prefill_tokens_per_s seconds of prefill and C / decode_tokens_per_s seconds of
decode, and each kind of token pays for its own seconds. This assumes the two phases take turns. Servers
that slip prefill chunks into memory-bound decode steps get some prefill almost free, so this attribution
errs towards overstating the self-hosted cost.

Why prompt-heavy, batched, asynchronous work favours self-hosting:
  * Prompt-heavy. Prefill pushes all of a prompt's tokens through each weight read, so it is compute-bound
    and runs at thousands to tens of thousands of tokens/s. Decode makes one token per sequence per weight
    read, so it is memory-bound and far slower. Per token, self-hosted input is therefore much cheaper
    than output, usually by more than the gap between an API's input and output prices.
  * Batched. A decode step reads the weights once for the whole batch, so decode tokens/s grows almost
    linearly with the batch until the batch reaches the chip's ridge point (peak FLOP/s / bandwidth) or
    the KV cache fills memory. A bigger batch divides the same hourly price among more tokens.
  * Asynchronous. With no user waiting on each token, requests can be queued into large batches and the
    GPU kept busy around the clock. That keeps utilization high, and utilization divides every cost.
An interactive chat at low traffic is the opposite case: small batches, idle hours, output-heavy.

Prices are inputs. `EXAMPLE_PRICES` holds round illustrative numbers for lessons and tests; they are not
market data. The $/token formula and the $2.50/h illustration are in docs/formulas.md ("Cost").
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .. import checks

SECONDS_PER_HOUR = 3600
TOKENS_PER_MILLION = 1e6

# Illustrative, not current market data: round numbers for lessons and tests. Look up real prices before
# deciding anything; both GPU rental and API prices change often and vary a lot by provider.
EXAMPLE_PRICES: dict[str, Any] = {
    "gpu_price_per_hour": {"h100-sxm": 2.50, "a100-80gb": 1.50, "l4": 0.50},  # USD per GPU-hour
    "api_price_per_million": {"input": 0.50, "output": 1.50},                  # USD per 1e6 tokens
}

VERDICTS = ("self-host", "api", "break-even")


def _require_utilization(value: Any) -> float:
    """The fraction of paid hours the GPU is busy: in (0, 1]."""
    return checks.number("utilization", value, 0.0, 1.0, low_open=True)


def cost_per_million_tokens(gpu_price_per_hour: float, tokens_per_s: float, utilization: float = 1.0) -> float:
    """Dollars per million tokens from renting a GPU: price per second / tokens per second, over utilization.

    >>> round(cost_per_million_tokens(2.50, 1000), 5)   # 2.5 / 3.6
    0.69444
    """
    price = checks.positive("gpu_price_per_hour", gpu_price_per_hour)
    rate = checks.positive("tokens_per_s", tokens_per_s)
    busy = _require_utilization(utilization)
    return price / SECONDS_PER_HOUR / rate * TOKENS_PER_MILLION / busy


@dataclass(frozen=True)
class Throughput:
    """Tokens per second over the whole batch, for prefill (prompt) and decode (completion)."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float

    def __post_init__(self) -> None:
        for field in ("prefill_tokens_per_s", "decode_tokens_per_s"):
            object.__setattr__(self, field, checks.positive(f"Throughput.{field}", getattr(self, field)))

    @classmethod
    def from_step_times(cls, *, batch: int, decode_step_seconds: float, prompt_tokens: float,
                        prefill_seconds: float) -> "Throughput":
        """From a step-time model: one decode step makes `batch` tokens in `decode_step_seconds`, and
        prefilling `batch` prompts of `prompt_tokens` each takes `prefill_seconds`.

        Step times can come from the roofline (max(FLOPs/peak, bytes/bandwidth) per step) or a stopwatch.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        step = checks.positive("decode_step_seconds", decode_step_seconds)
        prompt = checks.positive("prompt_tokens", prompt_tokens)
        prefill = checks.positive("prefill_seconds", prefill_seconds)
        return cls(prefill_tokens_per_s=batch * prompt / prefill, decode_tokens_per_s=batch / step)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Workload:
    """Average tokens per request. Averages, so they need not be whole numbers."""

    prompt_tokens: float
    completion_tokens: float

    def __post_init__(self) -> None:
        for field in ("prompt_tokens", "completion_tokens"):
            object.__setattr__(self, field, checks.number(f"Workload.{field}", getattr(self, field), 0.0))
        if self.prompt_tokens + self.completion_tokens == 0:
            raise ValueError("Workload needs prompt_tokens + completion_tokens > 0: a request of no tokens "
                             "has no cost to compare")

    @property
    def total_tokens(self) -> float:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ApiPrice:
    """What an API charges, in dollars per million input (prompt) and output (completion) tokens."""

    input_per_million: float
    output_per_million: float

    def __post_init__(self) -> None:
        for field in ("input_per_million", "output_per_million"):
            object.__setattr__(self, field, checks.positive(f"ApiPrice.{field}", getattr(self, field)))

    def cost_per_request(self, workload: Workload) -> float:
        return (workload.prompt_tokens * self.input_per_million
                + workload.completion_tokens * self.output_per_million) / TOKENS_PER_MILLION

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Comparison:
    """Self-hosting against an API for one workload. Dollars throughout; "per million" = per 1e6 tokens."""

    utilization: float
    prefill_seconds_per_request: float  # busy GPU seconds the prompt takes (its share of a batched prefill)
    decode_seconds_per_request: float   # busy GPU seconds the completion takes (its share of the batch)
    requests_per_hour: float            # requests one GPU serves per paid hour, at this utilization
    self_input_per_million: float       # self-hosted price of a prompt token, by time attribution
    self_output_per_million: float      # self-hosted price of a completion token
    self_cost_per_request: float
    self_blended_per_million: float     # self_cost_per_request over all of the request's tokens
    api_cost_per_request: float
    api_blended_per_million: float
    break_even_utilization: float       # where the two costs are equal; above 1 means never
    verdict: str                        # one of VERDICTS, at `utilization`

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One sentence for a lesson or the command line."""
        costs = (f"${self.self_cost_per_request:.6f} self-hosted vs ${self.api_cost_per_request:.6f} API "
                 f"per request at {self.utilization:.0%} utilization")
        if self.break_even_utilization > 1:
            return f"API is cheaper: {costs}; self-hosting loses even at 100% utilization."
        where = f"break-even at {self.break_even_utilization:.1%} utilization"
        if self.verdict == "break-even":
            return f"Break-even: {costs}."
        winner = "Self-hosting is cheaper" if self.verdict == "self-host" else "API is cheaper"
        return f"{winner}: {costs}; {where}."


def compare(gpu_price_per_hour: float, throughput: Throughput, workload: Workload, api_price: ApiPrice,
            utilization: float = 1.0) -> Comparison:
    """Cost of serving `workload` on a rented GPU vs through an API, and the utilization where they meet.

    Self-hosted cost per request = (prefill seconds + decode seconds) * price per second / utilization.
    Since that is proportional to 1 / utilization and the API's cost is not, they are equal at
        break_even_utilization = (self-hosted cost at 100% utilization) / (API cost).
    """
    price = checks.positive("gpu_price_per_hour", gpu_price_per_hour)
    busy = _require_utilization(utilization)
    for name, value, kind in (("throughput", throughput, Throughput), ("workload", workload, Workload),
                              ("api_price", api_price, ApiPrice)):
        if not isinstance(value, kind):
            raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}")

    price_per_busy_second = price / SECONDS_PER_HOUR / busy
    prefill_seconds = workload.prompt_tokens / throughput.prefill_tokens_per_s
    decode_seconds = workload.completion_tokens / throughput.decode_tokens_per_s
    self_cost = (prefill_seconds + decode_seconds) * price_per_busy_second
    api_cost = api_price.cost_per_request(workload)
    break_even = self_cost * busy / api_cost  # the self-hosted cost at u = 1, over the API's

    if math.isclose(self_cost, api_cost, rel_tol=1e-9):
        verdict = "break-even"
    else:
        verdict = "self-host" if self_cost < api_cost else "api"
    return Comparison(
        utilization=busy,
        prefill_seconds_per_request=prefill_seconds,
        decode_seconds_per_request=decode_seconds,
        requests_per_hour=SECONDS_PER_HOUR * busy / (prefill_seconds + decode_seconds),
        self_input_per_million=cost_per_million_tokens(price, throughput.prefill_tokens_per_s, busy),
        self_output_per_million=cost_per_million_tokens(price, throughput.decode_tokens_per_s, busy),
        self_cost_per_request=self_cost,
        self_blended_per_million=self_cost / workload.total_tokens * TOKENS_PER_MILLION,
        api_cost_per_request=api_cost,
        api_blended_per_million=api_cost / workload.total_tokens * TOKENS_PER_MILLION,
        break_even_utilization=break_even,
        verdict=verdict,
    )

"""Self-hosting economics, checked against hand computations written out as arithmetic.

Floating point does the same divisions in a different order than the code, so "exactly" here means equal
to within a relative 1e-12, far below any rounding a price is quoted with.
"""
import dataclasses
import math

import pytest

from minitx import cost
from minitx.serving.cost import ApiPrice, Comparison, Throughput, Workload

EXACT = 1e-12


def test_cost_per_million_tokens_by_hand():
    # $2.50 per hour = 2.50 / 3600 $ per second. At 1,000 tokens/s a million tokens take 1,000 s,
    # so they cost 1,000 * 2.50 / 3600 = 2.5 / 3.6 = 0.69444... dollars.
    assert cost.cost_per_million_tokens(2.50, 1000) == pytest.approx(2.5 / 3.6, rel=EXACT)
    # At 50% utilization every busy second carries one idle second: twice the price.
    assert cost.cost_per_million_tokens(2.50, 1000, utilization=0.5) == pytest.approx(2 * 2.5 / 3.6, rel=EXACT)
    # At 10% utilization, 10x (docs/formulas.md, "Cost": "At 10% utilization, $/token rises 10x").
    assert cost.cost_per_million_tokens(2.50, 1000, 0.1) == pytest.approx(10 * 2.5 / 3.6, rel=EXACT)


# docs/formulas.md, "Cost": Llama-3-8B on one H100 at an illustrative $2.50/h; tokens/s per batch and $/M tokens
# as printed.
@pytest.mark.parametrize("tokens_per_s, printed", [(205, 3.39), (1472, 0.47), (4349, 0.16), (6450, 0.11),
                                                   (8505, 0.08)])
def test_reference_table_of_cost_by_batch(tokens_per_s, printed):
    assert round(cost.cost_per_million_tokens(2.50, tokens_per_s), 2) == printed


# A worked example, by hand:
#   GPU $2.50/h at 50% utilization   -> 2.50 / 3600 / 0.5 = 1/720 $ per busy second
#   prefill 10,000 tok/s, decode 1,000 tok/s (whole batch)
#   request: 1,000 prompt + 200 completion tokens; API $0.50 / $1.50 per million in / out
GPU_PRICE, UTILIZATION = 2.50, 0.5
THROUGHPUT = Throughput(prefill_tokens_per_s=10_000, decode_tokens_per_s=1_000)
WORKLOAD = Workload(prompt_tokens=1_000, completion_tokens=200)
API = ApiPrice(input_per_million=0.50, output_per_million=1.50)


def test_worked_example_by_hand():
    result = cost.compare(GPU_PRICE, THROUGHPUT, WORKLOAD, API, utilization=UTILIZATION)
    dollars_per_busy_second = 2.50 / 3600 / 0.5                              # = 1/720
    assert result.prefill_seconds_per_request == pytest.approx(1_000 / 10_000, rel=EXACT)  # 0.1 s
    assert result.decode_seconds_per_request == pytest.approx(200 / 1_000, rel=EXACT)      # 0.2 s
    # 0.3 busy seconds per request; one paid hour holds 3600 * 0.5 busy seconds -> 6,000 requests.
    assert result.requests_per_hour == pytest.approx(6_000, rel=EXACT)
    # Input: a million prompt tokens take 100 s -> 100/720 = 0.13889 $; output: 1,000 s -> 1.38889 $.
    assert result.self_input_per_million == pytest.approx(100 / 720, rel=EXACT)
    assert result.self_output_per_million == pytest.approx(1_000 / 720, rel=EXACT)
    # Per request: 0.3 s * 1/720 $/s = 0.3/720 = 0.000416667 $; blended over 1,200 tokens: 0.347222 $/M.
    assert result.self_cost_per_request == pytest.approx(0.3 * dollars_per_busy_second, rel=EXACT)
    assert result.self_blended_per_million == pytest.approx(0.3 / 720 / 1_200 * 1e6, rel=EXACT)
    # API: 1,000 * 0.50e-6 + 200 * 1.50e-6 = 0.0005 + 0.0003 = 0.0008 $; blended 0.0008 / 1,200 * 1e6 = 0.6667 $/M.
    assert result.api_cost_per_request == pytest.approx(0.0008, rel=EXACT)
    assert result.api_blended_per_million == pytest.approx(2 / 3, rel=EXACT)
    # At 100% utilization self-hosting costs 0.3 * 2.50/3600 = 0.000208333 $; it matches the API's 0.0008 $
    # when divided by u = 0.000208333 / 0.0008 = 0.2604167.
    assert result.break_even_utilization == pytest.approx(0.3 * 2.50 / 3600 / 0.0008, rel=EXACT)
    assert result.verdict == "self-host"
    assert "Self-hosting is cheaper" in result.summary()


def test_time_attribution_adds_up_to_the_request_cost():
    result = cost.compare(GPU_PRICE, THROUGHPUT, WORKLOAD, API, utilization=UTILIZATION)
    by_token_kind = (WORKLOAD.prompt_tokens * result.self_input_per_million
                     + WORKLOAD.completion_tokens * result.self_output_per_million) / 1e6
    assert by_token_kind == pytest.approx(result.self_cost_per_request, rel=EXACT)


def test_verdict_turns_at_the_break_even_utilization():
    break_even = cost.compare(GPU_PRICE, THROUGHPUT, WORKLOAD, API).break_even_utilization
    at = cost.compare(GPU_PRICE, THROUGHPUT, WORKLOAD, API, utilization=break_even)
    assert at.verdict == "break-even"
    assert at.self_cost_per_request == pytest.approx(at.api_cost_per_request, rel=EXACT)
    assert cost.compare(GPU_PRICE, THROUGHPUT, WORKLOAD, API, utilization=break_even * 1.01).verdict == "self-host"
    assert cost.compare(GPU_PRICE, THROUGHPUT, WORKLOAD, API, utilization=break_even * 0.99).verdict == "api"


def test_api_wins_even_at_full_utilization():
    # Unbatched decode at 50 tok/s: a million output tokens take 1e6 / 50 = 20,000 s, which at 2.50/3600 $/s
    # cost 13.89 $, far above the API's 1.50 $ per million; break-even would need u > 1.
    slow = Throughput(prefill_tokens_per_s=2_000, decode_tokens_per_s=50)
    result = cost.compare(GPU_PRICE, slow, WORKLOAD, API)
    assert result.verdict == "api"
    assert result.break_even_utilization > 1
    assert "even at 100% utilization" in result.summary()


def test_prompt_heavy_work_breaks_even_at_lower_utilization():
    # Prefill is 10x faster per token than decode, but the API charges input only 3x less than output:
    # moving tokens from the completion to the prompt makes self-hosting relatively cheaper.
    prompt_heavy = cost.compare(GPU_PRICE, THROUGHPUT, Workload(4_000, 100), API)
    output_heavy = cost.compare(GPU_PRICE, THROUGHPUT, Workload(100, 4_000), API)
    assert prompt_heavy.break_even_utilization < output_heavy.break_even_utilization


def test_step_times_give_throughput_and_batching_divides_the_cost():
    # Batch 1: a 5 ms decode step makes 1 token -> 200 tok/s. Batch 64: a 10 ms step makes 64 -> 6,400 tok/s.
    # Prefill of 64 prompts of 500 tokens in 2 s -> 64 * 500 / 2 = 16,000 tok/s.
    single = Throughput.from_step_times(batch=1, decode_step_seconds=0.005, prompt_tokens=500,
                                        prefill_seconds=0.05)
    batched = Throughput.from_step_times(batch=64, decode_step_seconds=0.010, prompt_tokens=500,
                                         prefill_seconds=2.0)
    assert single.decode_tokens_per_s == pytest.approx(200, rel=EXACT)
    assert batched.decode_tokens_per_s == pytest.approx(6_400, rel=EXACT)
    assert batched.prefill_tokens_per_s == pytest.approx(16_000, rel=EXACT)
    # The same hourly price spread over 32x the tokens: 1/32 of the cost per output token.
    ratio = (cost.cost_per_million_tokens(2.50, single.decode_tokens_per_s)
             / cost.cost_per_million_tokens(2.50, batched.decode_tokens_per_s))
    assert ratio == pytest.approx(32, rel=EXACT)


def test_results_are_frozen_and_convert_to_dicts():
    result = cost.compare(GPU_PRICE, THROUGHPUT, WORKLOAD, API, utilization=UTILIZATION)
    fields = result.to_dict()
    assert set(fields) == {field.name for field in dataclasses.fields(Comparison)}
    assert fields["verdict"] in cost.VERDICTS
    assert Throughput(1.0, 2.0).to_dict() == {"prefill_tokens_per_s": 1.0, "decode_tokens_per_s": 2.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.verdict = "api"


def test_example_prices_are_positive_numbers():
    prices = cost.EXAMPLE_PRICES
    assert all(p > 0 for p in prices["gpu_price_per_hour"].values())
    ApiPrice(prices["api_price_per_million"]["input"], prices["api_price_per_million"]["output"])


@pytest.mark.parametrize("value", [0, -2.5, math.nan, math.inf, "2.50", True])
def test_bad_gpu_price(value):
    with pytest.raises(ValueError, match="gpu_price_per_hour must be a finite number > 0"):
        cost.compare(value, THROUGHPUT, WORKLOAD, API)
    with pytest.raises(ValueError, match="gpu_price_per_hour"):
        cost.cost_per_million_tokens(value, 1000)


@pytest.mark.parametrize("value", [0, -0.5, 1.01, math.nan, "1"])
def test_bad_utilization(value):
    with pytest.raises(ValueError, match=r"utilization must be in \(0, 1\]"):
        cost.compare(GPU_PRICE, THROUGHPUT, WORKLOAD, API, utilization=value)


@pytest.mark.parametrize("build, message", [
    (lambda: Throughput(0, 1_000), "Throughput.prefill_tokens_per_s must be a finite number > 0"),
    (lambda: Throughput(10_000, -1), "Throughput.decode_tokens_per_s"),
    (lambda: Workload(-1, 200), "Workload.prompt_tokens must be a finite number >= 0"),
    (lambda: Workload(1_000, -200), "Workload.completion_tokens"),
    (lambda: Workload(0, 0), "prompt_tokens \\+ completion_tokens > 0"),
    (lambda: ApiPrice(0, 1.5), "ApiPrice.input_per_million must be a finite number > 0"),
    (lambda: ApiPrice(0.5, -1.5), "ApiPrice.output_per_million"),
    (lambda: Throughput.from_step_times(batch=0, decode_step_seconds=0.01, prompt_tokens=500,
                                        prefill_seconds=1), "batch must be an integer >= 1"),
    (lambda: Throughput.from_step_times(batch=2.5, decode_step_seconds=0.01, prompt_tokens=500,
                                        prefill_seconds=1), "batch"),
    (lambda: Throughput.from_step_times(batch=8, decode_step_seconds=0, prompt_tokens=500,
                                        prefill_seconds=1), "decode_step_seconds"),
    (lambda: cost.cost_per_million_tokens(2.5, 0), "tokens_per_s"),
    (lambda: cost.compare(GPU_PRICE, (10_000, 1_000), WORKLOAD, API), "throughput must be a Throughput"),
])
def test_bad_inputs_name_the_argument(build, message):
    with pytest.raises(ValueError, match=message):
        build()

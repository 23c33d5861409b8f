"""The measurement helper: median, spread and the noise verdict, on hand-made samples (no clock involved)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitx.measure.timing import NOISY_SPREAD, Timing, noise_warning, timed


def test_median_best_and_spread_of_known_samples():
    t = Timing((5.0, 1.0, 2.0, 3.0, 4.0))
    assert t.median == 3.0 and t.best == 1.0
    # quartiles of 1..5 (linear interpolation): 2 and 4, so the middle half spans 2 of a median of 3
    assert t.spread == pytest.approx(2 / 3)
    assert t.noisy
    assert Timing((2.0,) * 4).spread == 0.0 and not Timing((2.0,) * 4).noisy
    assert t.scaled(2).samples == (2.5, 0.5, 1.0, 1.5, 2.0)
    assert "median of 5" in str(t) and "spread 67%" in str(t)


def test_one_outlier_moves_neither_the_median_nor_the_verdict():
    # a run 100x slower than the others, as a busy core can make one: the median stays, the spread stays small
    quiet = Timing((1.00, 1.01, 0.99, 1.02, 100.0, 1.00, 0.98))
    assert quiet.median == 1.00
    assert quiet.spread < NOISY_SPREAD and noise_warning([quiet]) is None
    loud = Timing((1.0, 2.0, 3.0, 1.0, 2.0, 3.0))
    assert "too noisy" in noise_warning([quiet, loud], "x")


def test_timed_warms_up_then_times_each_call():
    calls = []
    t = timed(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and len(t.samples) == 4 and all(s >= 0 for s in t.samples)
    for bad in (0, -1, 1.5, True):
        with pytest.raises((ValueError, TypeError), match="repeats"):
            timed(lambda: None, repeats=bad)
    with pytest.raises(ValueError, match="at least one sample"):
        Timing(())


hostile = st.one_of(st.none(), st.booleans(), st.integers(-3, 4), st.integers(2 ** 60, 2 ** 70), st.floats(),
                    st.text(max_size=3), st.lists(st.integers(), max_size=2))


@settings(max_examples=40)
@given(st.one_of(st.just(lambda: None), hostile), hostile, hostile)
def test_hostile_arguments_give_clean_errors(fn, repeats, warmup):
    """minitx.timed with anything: a Timing of `repeats` samples, or a ValueError / TypeError that names the
    argument (huge counts are refused by the 2**53 bound of every size, never looped over)."""
    try:
        t = timed(fn, repeats=repeats, warmup=warmup)
    except (ValueError, TypeError) as e:
        assert any(name in str(e) for name in ("fn", "repeats", "warmup")), str(e)
        return
    assert len(t.samples) == repeats

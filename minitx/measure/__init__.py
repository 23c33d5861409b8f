"""Measurements on the machine in front of you, next to what the roofline predicts for it.

    machine.py     this CPU's matmul peak and copy bandwidth
    inference.py   prefill and decode of a small model timed op kind by op kind (`minitx.measured`)
    timing.py      warm-up, repeats, median, spread, and a warning when the machine is too noisy (`minitx.timed`)
"""

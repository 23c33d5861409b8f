"""Teaching: the talk's claims checked against execution (`minitx check`), and the pictures the lessons draw.

    check.py   one row per claim: the formula, the count from execution, the verdict
    plots.py   the roofline with ops placed on it, batch sweeps, predicted vs measured (optional matplotlib)
"""

"""Accounting: what one FLOP and one byte are, the records both sources write, counts taken from execution, the
closed forms from the configuration alone, and memory measured.

    conventions.py   what a FLOP and a byte are, the per-element costs, how records are named: written once
    ledger.py        Record (one op call's cost) and Ledger (records summed, grouped, filtered, tabled)
    counting.py      `with minitx.count() as c:`: a Ledger filled by the ops as they run
    formulas.py      the same Ledgers by algebra on the Config (imports neither counting nor anything that runs)
    memory.py        parameters, gradients, optimizer state, saved activations, inference peak, measured
"""

"""Ferryman benchmarks: scripts that print figures and write JSON (not tests).

Run everything with ``bench/run [--quick]``; each module can also be run on its own
(``python -m bench.scale --quick``). The machine is shared and noisy, so every benchmark
reports ratios taken within one run next to its absolute figures.
"""

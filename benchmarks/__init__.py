"""jrmsprop's benchmark harness (ships with the source checkout, not with the wheel).

Run it as ``python -m jrmsprop bench`` from a checkout, or ``python benchmarks/run.py``.
Modules: :mod:`benchmarks.workloads` (what is optimized), :mod:`benchmarks.modes` (who runs the
step, how), :mod:`benchmarks.measure` (timing, bandwidth, XLA cost, memory),
:mod:`benchmarks.targets` (the PASS/MISS table) and :mod:`benchmarks.harness` (the driver, the
report and the command line). See ``benchmarks/README.md``.
"""

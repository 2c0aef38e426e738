"""The measuring library the suites share: targets (what a call is, per protocol: `targets`),
closed and open loops that record every call (`loops`), what became of each call and their
tally (`calls`), windows repeated until stable (`measure`, `sweep`), the CPU the processes under
test spend (`cpu`) and the provenance every result file records (`meta`). `python -m benchmarks
load` (`suite`) points it at a deployed service."""

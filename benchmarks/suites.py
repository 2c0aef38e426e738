"""The registry: every suite the harness knows, in the order `make bench` runs them."""

from __future__ import annotations

from benchmarks import (
    accuracy,
    classify_vs_generate,
    closed_world,
    contention,
    engine,
    experiments,
    frontier,
    open_intent,
    open_world,
    overload,
    reliability,
    runtime_intents,
    serve,
    tradeoff,
)
from benchmarks.load import suite as load
from benchmarks.peers import suite as peers
from benchmarks.suite import Suite

SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        accuracy.SUITE,
        engine.SUITE,
        serve.SUITE,
        experiments.SUITE,
        classify_vs_generate.SUITE,
        tradeoff.SUITE,
        contention.SUITE,
        overload.SUITE,
        reliability.SUITE,
        open_world.SUITE,
        runtime_intents.SUITE,
        open_intent.SUITE,
        closed_world.SUITE,
        peers.SUITE,
        frontier.SUITE,
        load.SUITE,
    )
}

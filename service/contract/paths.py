"""Where the project lives: the folder its relative defaults (data/, artifacts/, bundles/,
benchmarks/results/) hang from, and the working directory of the processes it starts."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

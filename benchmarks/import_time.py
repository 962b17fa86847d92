"""Import time of slmgraph against LangGraph, in the same run.

Each figure is the median wall time of a fresh interpreter doing the import (the
interpreter's own start-up, ``python -c pass``, subtracted), over several repeats,
alternating the commands so machine load hits them alike. The target is
``import slmgraph`` <= 1.3x ``import langgraph.graph``.

    .venv/bin/python benchmarks/import_time.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (start-up, subtracted)": ["-c", "pass"],
    "import langgraph.graph (baseline)": ["-c", "import langgraph.graph"],
    "import slmgraph": ["-c", "import slmgraph"],
    "from slmgraph import Skill, build_graph": ["-c", "from slmgraph import Skill, build_graph"],
    "slmgraph --help": ["-m", "slmgraph.cli", "--help"],
}


def once(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    repeats = parser.parse_args().repeats
    for args in CASES.values():  # warm the file cache
        once(args)
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(repeats):
        for name, args in CASES.items():
            samples[name].append(once(args))
    start = statistics.median(samples["python -c pass (start-up, subtracted)"])
    base = statistics.median(samples["import langgraph.graph (baseline)"]) - start
    print(f"median of {repeats} fresh interpreters each; start-up {start * 1000:.0f} ms subtracted")
    for name in list(CASES)[1:]:
        ms = statistics.median(samples[name]) - start
        print(f"{name:<42} {ms * 1000:7.1f} ms   {ms / base:5.2f}x langgraph.graph")
    ratio = (statistics.median(samples["import slmgraph"]) - start) / base
    print(f"\nimport slmgraph / import langgraph.graph = {ratio:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()

"""
What an optional feature costs: put throughput of Kaf with and without it.

    python benchmarks/features.py [--features metrics,access-log] [--runs N]
        [--duration S] [--connections C] [--fsync never|always] [--json FILE]

Features (each compared with its baseline):
  metrics      the default (/metrics on) against ``--no-metrics``
  access-log   ``--access-log FILE`` against the default (no access log)

Each round starts a fresh server of each variant in turn (baseline, then
feature, alternating which goes first), warms it up and measures it with
wrk (put 100 B, one log, C connections), as benchmarks/run.py does; the
table gives the median rate of the rounds and the ratio feature /
baseline.  ``r/cpu`` compares the rates per second of server CPU, which
holds better when other programs share the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from typing import Any, Callable, Dict, List, Tuple

import run

#: feature -> (baseline's extra arguments, the feature's), given the work folder.
FEATURES: Dict[str, Callable[[str], Tuple[List[str], List[str]]]] = {
    "metrics": lambda work: (["--no-metrics"], []),
    "access-log": lambda work: ([], ["--access-log", os.path.join(work, "access.log")]),
}


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="a Python with Kaf installed")
    parser.add_argument("--features", default="metrics,access-log")
    parser.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds a wrk run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--fsync", default="never", choices=("never", "always"),
                        help="never (default): the HTTP path's share of a put is largest")
    parser.add_argument("--json", default="kaf-features.json")
    options = parser.parse_args(argv)
    wanted = [f.strip() for f in options.features.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in FEATURES]
    if unknown:
        parser.error("unknown features %s (known: %s)" % (unknown, ", ".join(FEATURES)))
    python = run.Python(options.python)
    work = tempfile.mkdtemp(prefix="kaf-features-")
    settings = run.Settings(argparse.Namespace(
        quick=False, runs=options.runs, duration=options.duration, warmup=options.warmup,
        trials=None, messages=0, profile=None, pin=False, pypy_nursery="32MB"), work)
    bench = run.Bench(settings, [python])
    driver = run.WrkDriver("/put/v", "put.lua", ["100"], options.connections)
    results: List[Dict[str, Any]] = []
    try:
        for feature in wanted:
            base_args, feature_args = FEATURES[feature](work)
            samples: Dict[str, List[Dict[str, float]]] = {"baseline": [], "feature": []}
            for i in range(options.runs):
                order = [("baseline", base_args), ("feature", feature_args)]
                if i % 2:
                    order.reverse()
                for label, extra in order:
                    server = run.Server(settings, python, "kaf", fsync=options.fsync)
                    server.argv += extra
                    with server:
                        server.start()
                        driver.warm(bench, server)
                        samples[label].append(driver.measure(bench, server))
                access_log = os.path.join(work, "access.log")
                if os.path.exists(access_log):
                    os.unlink(access_log)
            result = summarize(feature, base_args, feature_args, samples)
            results.append(result)
            run.say(format_result(result, options))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(options.json, "w") as f:
        json.dump({"python": python.describe(), "fsync": options.fsync,
                   "connections": options.connections, "results": results}, f, indent=1)
    return 0


def summarize(feature: str, base_args: List[str], feature_args: List[str],
              samples: Dict[str, List[Dict[str, float]]]) -> Dict[str, Any]:
    def median(label: str, field: str) -> float:
        return statistics.median(s[field] for s in samples[label])

    base, with_it = median("baseline", "rate"), median("feature", "rate")
    def per_cpu(label: str) -> float:
        return statistics.median(s["rate"] / s["server_cpu"] for s in samples[label])

    base_cpu, feature_cpu = per_cpu("baseline"), per_cpu("feature")
    return {"feature": feature, "baseline_args": base_args, "feature_args": feature_args,
            "baseline": base, "with": with_it, "ratio": with_it / base,
            "ratio_per_cpu": feature_cpu / base_cpu,
            "rates": {k: [round(s["rate"]) for s in v] for k, v in samples.items()},
            "samples": samples}


def format_result(r: Dict[str, Any], options: argparse.Namespace) -> str:
    def args(a: List[str]) -> str:
        return " ".join(a) if a else "(default)"

    return ("%-10s put 100 B c%d fsync %s: %s %.0f/s, %s %.0f/s -> ratio %.3f "
            "(r/cpu %.3f); runs %s vs %s"
            % (r["feature"], options.connections, options.fsync,
               args(r["baseline_args"]), r["baseline"],
               args([a if not a.startswith("/") else "FILE" for a in r["feature_args"]]),
               r["with"], r["ratio"], r["ratio_per_cpu"],
               r["rates"]["baseline"], r["rates"]["feature"]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Re-test the surviving mutants of a finished ``mutation_report.py`` run against the tests as they are now.

    python benchmarks/mutation_report.py --modules memory            # the run (leaves /tmp/sradm-mutation/memory)
    # ... tests written for its survivors ...
    python benchmarks/mutation_recheck.py --modules memory           # which survivors the new tests kill
    python benchmarks/mutation_recheck.py --modules memory --tests tests/test_memory_estimate.py   # faster

A full rerun of a module repeats every mutant; this re-tests only the survivors, in one Python process (mutmut's
trampoline reads ``MUTANT_UNDER_TEST`` at every call, so one process can switch mutants between pytest runs). The
repository's current ``tests/`` replace the run's copy first, and a run with no mutant active must pass, or the
recheck stops. Prints, per module, the run's counts, the survivors killed now and the kill rate with them; ``--json``
adds the names.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_report import MODULES, ROOT, environment, statuses  # noqa: E402

# Runs inside the mutated copy: argv = [tests json, mutants json]; prints one JSON line {mutant: pytest exit code}.
DRIVER = r"""
import json, os, sys
import pytest
tests, mutants = json.loads(sys.argv[1]), json.loads(sys.argv[2])
args = [*tests, "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
os.environ.pop("MUTANT_UNDER_TEST", None)
clean = int(pytest.main(args))
codes = {}
if clean == 0:
    for name in mutants:
        os.environ["MUTANT_UNDER_TEST"] = name
        codes[name] = int(pytest.main(args))
print("RECHECK " + json.dumps({"clean": clean, "codes": codes}), flush=True)
"""


def recheck(module: str, workdir: Path, tests: list[str] | None = None) -> dict:
    """Re-test the run's survivors of ``module`` with ``tests`` (default: the module's list in ``MODULES``). A
    narrower list (the test files written for the survivors) is enough to show which of them are killed now: the
    run already tested every survivor with the module's whole list."""
    copy = workdir / module
    if not (copy / "mutants" / "src").is_dir():
        raise SystemExit(f"{copy} has no mutants: run benchmarks/mutation_report.py --modules {module} first.")
    by_status = statuses(copy)
    survivors = by_status.get("survived", []) + by_status.get("no_tests", [])
    tests_copy = copy / "mutants" / "tests"
    shutil.rmtree(tests_copy)
    shutil.copytree(ROOT / "tests", tests_copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = environment(copy / "mutants")
    env.pop("MUTANT_UNDER_TEST", None)
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(tests or MODULES[module]), json.dumps(survivors)],
        cwd=copy / "mutants", env=env, text=True, capture_output=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RECHECK ")]
    if not lines:
        raise SystemExit(f"{module}: the recheck did not finish:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RECHECK "):])
    if result["clean"] != 0:
        raise SystemExit(f"{module}: the tests fail with no mutant active (exit {result['clean']}); fix them first.")
    killed_now = sorted(name for name, code in result["codes"].items() if code == 1)
    still = sorted(name for name, code in result["codes"].items() if code == 0)
    errors = sorted(name for name, code in result["codes"].items() if code not in (0, 1))  # usage/internal errors
    judged = sum(len(by_status.get(s, [])) for s in ("killed", "survived", "timeout", "no_tests"))
    killed = len(by_status.get("killed", [])) + len(by_status.get("timeout", [])) + len(killed_now)
    return {
        "module": module, "mutants": judged, "killed_by_run": killed - len(killed_now),
        "killed_now": killed_now, "still_surviving": still, "errors": errors,
        "kill_rate": killed / judged if judged else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", required=True, help="comma-separated, from: " + ", ".join(MODULES))
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "sradm-mutation")
    parser.add_argument("--tests", default=None,
                        help="comma-separated test files or node ids to re-test with (default: the module's list)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    tests = [t.strip() for t in args.tests.split(",")] if args.tests else None
    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {', '.join(MODULES)}")
    results = []
    print(f"{'module':<18}{'mutants':>8}{'run kill':>9}{'+ now':>7}{'left':>6}{'kill %':>8}", flush=True)
    for module in modules:
        r = recheck(module, args.workdir, tests)
        results.append(r)
        print(f"{module:<18}{r['mutants']:>8}{r['killed_by_run']:>9}{len(r['killed_now']):>7}"
              f"{len(r['still_surviving']) + len(r['errors']):>6}{100 * (r['kill_rate'] or 0):>8.1f}", flush=True)
        for name in r["still_surviving"] + r["errors"]:
            print(f"  left: {name}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()

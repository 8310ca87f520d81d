"""Re-test survivors that mutmut cannot switch on: mutants of code that runs only as shipped code or in subprocesses.

    python benchmarks/mutation_report.py --modules remote_code        # the run (leaves /tmp/sradm-mutation/...)
    python benchmarks/mutation_patched.py --module remote_code \\
        --tests tests/test_remote_code.py::test_c_trust_remote_code_without_the_package --mutants write_remote_code

mutmut's trampoline activates a mutant only where the function runs under its installed module name. The code a
saved folder ships (``loading/remote_code.py`` inlined into ``pipeline_sradm.py``) runs under diffusers' module
names, so its mutants never switch on, and mutmut's own run cannot follow tests into subprocesses it does not
configure. Here each surviving mutant's diff (``mutmut show``) is written into a fresh copy of the repository, as
plain source, and the tests run in a new interpreter with that copy first on ``PYTHONPATH``: the shipped files
generated from it and every subprocess carry the mutation. Prints one line per mutant (killed / survived) and the
count; ``--json`` writes the names.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_report import MODULE_FILES, MODULES, copy_tree, mutmut, run_pytest, statuses  # noqa: E402


def diff_lines(diff: str) -> tuple[str, list[tuple[str, str]]]:
    """(file, [(tag, line)]) of a one-hunk diff from ``mutmut show``; tag is " " (context), "-" or "+"."""
    file = re.search(r"^--- (\S+)$", diff, re.MULTILINE).group(1)
    body = diff.split("\n@@", 1)[1].split("\n", 1)[1]
    return file, [(line[:1] or " ", line[1:]) for line in body.splitlines()]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def apply_mutant(original: str, lines: list[tuple[str, str]], name: str) -> str:
    """``original`` with the hunk ``lines`` applied. mutmut shows a method dedented to the top level (but the inner
    lines of its strings as they are), so the hunk is found by comparing lines without their indentation, and the
    added lines are indented by the offset of the hunk's first line."""
    source = original.splitlines(keepends=True)
    old = [text for tag, text in lines if tag != "+"]
    matches = [i for i in range(len(source) - len(old) + 1)
               if all(source[i + k].strip() == text.strip() for k, text in enumerate(old))]
    if len(matches) != 1:
        raise SystemExit(f"{name}: its diff's context is found {len(matches)} times in the current source (the "
                         "source changed since the run?); rerun mutation_report.py for this module.")
    at = matches[0]
    offset = " " * (_indent(source[at]) - _indent(old[0]))
    result, k = source[:at], at
    for tag, text in lines:
        if tag == " ":
            result.append(source[k])
            k += 1
        elif tag == "-":
            k += 1
        else:
            result.append(offset + text + "\n")
    mutated = "".join(result + source[k:])
    compile(mutated, name, "exec")  # a hunk applied at the wrong indent would fail here, not count as a kill
    return mutated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", required=True, choices=sorted(MODULES))
    parser.add_argument("--tests", required=True, help="comma-separated test files or node ids")
    parser.add_argument("--mutants", default="", help="only survivors whose name contains one of these "
                                                       "comma-separated strings (default: every survivor)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "sradm-mutation")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    run_copy = args.workdir / args.module
    if not (run_copy / "mutants").is_dir():
        raise SystemExit(f"{run_copy} has no finished run: run benchmarks/mutation_report.py --modules {args.module}.")
    by_status = statuses(run_copy)
    wanted = [w for w in args.mutants.split(",") if w]
    survivors = [n for n in by_status.get("survived", []) + by_status.get("no_tests", [])
                 if not wanted or any(w in n for w in wanted)]
    tests = [t.strip() for t in args.tests.split(",") if t.strip()]
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "tree"
        copy_tree(copy)
        target = copy / "src" / "sradm_diffusers" / MODULE_FILES[args.module]
        original = target.read_text(encoding="utf-8")
        if run_pytest(copy, tests) != 0:
            raise SystemExit("The tests fail with no mutant applied; fix them first.")
        results = {}
        for name in survivors:
            _, lines = diff_lines(mutmut(run_copy, "show", name, capture=True).stdout)
            target.write_text(apply_mutant(original, lines, name), encoding="utf-8")
            start = time.monotonic()
            code = run_pytest(copy, tests)
            results[name] = "killed" if code == 1 else "survived" if code == 0 else f"error (pytest exit {code})"
            print(f"{results[name]:<10}{time.monotonic() - start:6.1f}s  {name}", flush=True)
        target.write_text(original, encoding="utf-8")
    killed = sum(r == "killed" for r in results.values())
    print(f"{args.module}: {killed} of {len(results)} re-tested survivors killed by {', '.join(tests)}")
    if args.json:
        args.json.write_text(json.dumps({"module": args.module, "tests": tests, "results": results}, indent=1),
                             encoding="utf-8")


if __name__ == "__main__":
    main()

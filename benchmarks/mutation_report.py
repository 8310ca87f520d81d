"""Mutation testing of the sampling and feature modules with mutmut 3: kill rate per module.

    pip install -e ".[test,mutation]"
    nice -n 10 python benchmarks/mutation_report.py                 # every module below, about an hour on 2 cores
    python benchmarks/mutation_report.py --modules distributed      # one module
    python benchmarks/mutation_report.py --survivors                # also print the diff of every surviving mutant

Each module runs in a copy of the repository of its own (``--workdir``, default a folder under /tmp), so mutmut
mutates only that module (``only_mutate``) and its stats run covers only the test files listed for it in
``MODULES``; mutmut then runs, for every mutant, only the tests that called the mutated function. Subprocesses
(the command-line tests, ``accelerate launch``) import the mutated copy too: ``PYTHONPATH`` points at it and the
trampoline reads ``MUTANT_UNDER_TEST`` from the inherited environment. Prints one table row per module (killed,
survived, no tests, timeouts, kill rate) and writes the results, survivors' diffs included, as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> the tests that exercise it (files, or single tests of files that mostly test other things). Kept to what
# covers the module: mutmut runs the whole list twice per module (its stats and clean runs) before any mutant.
BITE = "tests/test_features_bite.py::"
MODULES = {
    "image_processing": ["tests/test_image_processing.py", "tests/test_image_conversion.py",
                         "tests/test_bad_inputs.py::test_api_bad_input",
                         BITE + "test_one_non_finite_value_among_finite_ones_is_refused"],
    "memory": ["tests/test_allocator.py", "tests/test_memory_estimate.py",
               "tests/test_bad_inputs.py::test_memory_error_is_a_memory_error_and_a_value_error",
               "tests/test_bad_inputs.py::test_samples_are_batched_to_fit_memory_and_progress_is_shown",
               "tests/test_bad_inputs.py::test_cli_bad_input",
               BITE + "test_tiling_lowers_the_memory_estimate_so_a_refused_image_fits",
               BITE + "test_cli_tile_is_the_fix_for_a_memory_refusal"],
    "prediction": ["tests/test_prediction.py", "tests/test_threshold_clamp.py", "tests/test_lr_consistency.py", "tests/test_few_step.py",
                   BITE + "test_lr_consistency_back_projects_at_every_step"],
    "rrdb_start": ["tests/test_rrdb_start.py", "tests/test_few_step.py", "tests/test_features_edges.py",
                   BITE + "test_cli_default_is_unipc_11_steps_strength_082_and_9_unet_calls"],
    "lr_consistency": ["tests/test_lr_consistency.py", BITE + "test_lr_consistency_back_projects_at_every_step"],
    # The seam measure's control test checks the measure on flat weights, not the tiling code; it costs a mutant that
    # survives the rest 5 s, as long as all of test_offload.py.
    "tiling": ["tests/test_tile_weights.py", "tests/test_tile_geometry.py", "tests/test_tiling.py",
               "tests/test_offload.py",
               "--deselect", "tests/test_tiling.py::test_the_seam_measure_detects_unblended_tiles",
               BITE + "test_tiled_sampling_under_model_offload_runs_every_module_inside_its_hook",
               BITE + "test_tiling_lowers_the_memory_estimate_so_a_refused_image_fits"],
    # The package-hidden load runs the shipped code in a subprocess from another folder, where mutmut's stats run
    # cannot find its configuration (it fails the stats run); the in-process loads cover the same code.
    "remote_code": ["tests/test_remote_code_index.py", "tests/test_remote_code.py", "tests/test_export_pipeline.py",
                    BITE + "test_shipped_code_runs_tiling_lr_consistency_and_strength_like_the_package",
                    "--deselect", "tests/test_remote_code.py::test_c_trust_remote_code_without_the_package"],
    "uncertainty": ["tests/test_uncertainty_maps.py", "tests/test_uncertainty.py", "tests/test_features_edges.py",
                    "tests/test_cli_features.py::test_upscale_uncertainty_writes_samples_mean_and_map",
                    BITE + "test_cli_uncertainty_map_shows_the_samples_spread"],
    "interpolation": ["tests/test_interpolation_memory.py", "tests/test_interpolation.py", "tests/test_features_edges.py",
                      "tests/test_cli_features.py::test_interpolate_gif_and_strip",
                      BITE + "test_interpolation_frames_start_from_the_slerp_of_the_two_noises",
                      BITE + "test_cli_interpolate_writes_the_api_frames"],
    "fusion": ["tests/test_fusion_inputs.py", "tests/test_fusion.py", "tests/test_features_edges.py",
               "tests/test_cli_features.py::test_fuse_writes_the_sr_size_and_checks_the_mask",
               BITE + "test_fusion_feather_profile_on_the_output",
               BITE + "test_fusion_brings_the_reference_to_the_next_steps_noise_level",
               BITE + "test_cli_fuse_writes_the_api_result"],
    "distributed": ["tests/test_distributed.py",
                    BITE + "test_accelerate_launch_splits_the_images_evenly_and_each_process_samples_only_its_share"],
}

ALSO_COPY = ["training", "benchmarks", "README.md", "model_card.md", "docs", "spaces", ".ci"]
# module -> its file below src/sradm_diffusers (docs/architecture.md: the packages)
MODULE_FILES = {
    "image_processing": "image_processing.py", "memory": "sampling/memory.py", "prediction": "sampling/prediction.py",
    "rrdb_start": "sampling/rrdb_start.py", "lr_consistency": "sampling/lr_consistency.py",
    "tiling": "sampling/tiling.py", "remote_code": "loading/remote_code.py", "uncertainty": "extras/uncertainty.py",
    "interpolation": "extras/interpolation.py", "fusion": "extras/fusion.py", "distributed": "commands/distributed.py",
}
STATUSES = ("killed", "survived", "no_tests", "timeout", "suspicious", "skipped", "segfault", "not_checked")


def mutmut_config(module: str, tests: list[str]) -> str:
    """The ``[tool.mutmut]`` table for one module."""
    return "\n".join([
        "",
        "[tool.mutmut]",
        'source_paths = ["src"]',
        f'only_mutate = ["src/sradm_diffusers/{MODULE_FILES[module]}"]',
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        # -p no:cacheprovider: the copies share nothing (mutmut itself adds -x and disables random ordering).
        'pytest_add_cli_args = ["-q", "-p", "no:cacheprovider"]',
        f"also_copy = {json.dumps(ALSO_COPY)}",
        # torch is not fork-safe once its thread pools run: fork every mutant from a server that imported pytest.
        'process_isolation = "forkserver"',
        "use_git_change_detection = false",
        # mutmut 3.8 reports its stats run of these tests as a pytest usage error unless debug is on (then it runs
        # them with -vv and prints every command, in mutmut.log).
        "debug = true",
        "timeout_multiplier = 5.0",
        "timeout_constant = 20.0",
        "",
    ])


def copy_tree(dest: Path) -> None:
    """The whole working tree (tests import training/ and read README.md), without version control, virtual
    environments, caches or mutmut's output, copied to ``dest``."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "mutants", ".venv"))


def prepare(module: str, tests: list[str], workdir: Path) -> Path:
    """A fresh copy of the working tree, its pyproject.toml with the module's mutmut table, in ``workdir/module``."""
    copy = workdir / module
    if copy.exists():
        shutil.rmtree(copy)
    copy_tree(copy)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (copy / "pyproject.toml").write_text(pyproject + mutmut_config(module, tests), encoding="utf-8")
    # mutmut fills these; they must exist when Python starts, or the import system caches "no such folder" for the
    # PYTHONPATH entries and the tests import the installed package instead of the mutated copy.
    for folder in ("src", "tests"):
        (copy / "mutants" / folder).mkdir(parents=True)
    return copy


def environment(tree: Path) -> dict[str, str]:
    """The tests' environment: ``tree``'s src and tests first on the path (for subprocesses too), offline, one
    thread. ``tree`` is a copy's ``mutants`` folder under mutmut, or a plain copy of the repository."""
    path = f"{tree / 'src'}{os.pathsep}{tree / 'tests'}"
    return dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")


def run_pytest(tree: Path, tests: list[str]) -> int:
    """pytest's exit code for ``tests`` (stop at the first failure) in a new interpreter, on ``tree`` unmutated by
    mutmut (no mutant switched on): 0 passed, 1 failed."""
    env = environment(tree)
    env.pop("MUTANT_UNDER_TEST", None)
    command = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider"]
    return subprocess.run(command, cwd=tree, env=env, capture_output=True).returncode


def mutmut(copy: Path, *args: str, capture: bool = False):
    command = [sys.executable, "-m", "mutmut", *args]
    return subprocess.run(command, cwd=copy, env=environment(copy / "mutants"), text=True, capture_output=capture)


def statuses(copy: Path) -> dict[str, list[str]]:
    """Mutant name -> status, from ``mutmut results --all true`` (lines ``name: status``)."""
    out = mutmut(copy, "results", "--all", "true", capture=True).stdout
    by_status: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            by_status.setdefault(status.strip().replace(" ", "_"), []).append(name)
    return by_status


def run_module(module: str, tests: list[str], workdir: Path, max_children: int, with_diffs: bool) -> dict:
    copy = prepare(module, tests, workdir)
    start = time.monotonic()
    with open(copy / "mutmut.log", "w", encoding="utf-8") as log:
        finished = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)], cwd=copy, stdout=log,
            stderr=subprocess.STDOUT, env=environment(copy / "mutants"),
        )
    seconds = time.monotonic() - start
    by_status = statuses(copy)
    counts = {status: len(by_status.get(status, [])) for status in STATUSES}
    judged = counts["killed"] + counts["survived"] + counts["timeout"] + counts["no_tests"]
    result = {
        "module": module, "tests": tests, "seconds": round(seconds), "returncode": finished.returncode,
        "counts": counts, "kill_rate": (counts["killed"] + counts["timeout"]) / judged if judged else None,
        "survivors": by_status.get("survived", []) + by_status.get("no_tests", []),
    }
    if with_diffs:
        result["diffs"] = {name: mutmut(copy, "show", name, capture=True).stdout for name in result["survivors"]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", default=",".join(MODULES), help="comma-separated, from: " + ", ".join(MODULES))
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "sradm-mutation")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested in parallel (default 2 cores)")
    parser.add_argument("--survivors", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {', '.join(MODULES)}")

    results = []
    print(f"{'module':<18}{'mutants':>8}{'killed':>8}{'timeout':>8}{'survived':>9}{'no tests':>9}{'kill %':>8}"
          f"{'time':>8}", flush=True)
    for module in modules:
        result = run_module(module, MODULES[module], args.workdir, args.max_children, args.survivors)
        results.append(result)
        c = result["counts"]
        rate = "n/a" if result["kill_rate"] is None else f"{100 * result['kill_rate']:.1f}"
        total = c["killed"] + c["timeout"] + c["survived"] + c["no_tests"]
        print(f"{module:<18}{total:>8}{c['killed']:>8}{c['timeout']:>8}{c['survived']:>9}{c['no_tests']:>9}"
              f"{rate:>8}{result['seconds']:>7}s", flush=True)
        if args.survivors:
            for name, diff in result.get("diffs", {}).items():
                print(f"--- {name}\n{diff}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()

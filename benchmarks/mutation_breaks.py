"""Hand-made mutants: each behaviour that docs/testing.md lists, broken on purpose, and the tests that must fail.

    python benchmarks/mutation_breaks.py              # every break, about 10 minutes on 2 cores
    python benchmarks/mutation_breaks.py --only slerp,feather

Each break is one text replacement in one source file, applied to a copy of the working tree (``--workdir``), never
to the tree itself; the listed tests then run against the copy and must fail, and the copy is restored before the
next break. ``--control`` also runs, for each break, the tests that guarded the behaviour before (they passed with
the break: the gap this suite closes). Prints one line per break: its name, the tests, and "failed: yes" or "NO".
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_report import copy_tree, run_pytest  # noqa: E402
BITE = "tests/test_features_bite.py::"
PKG = "src/sradm_diffusers/"


@dataclass
class Break:
    name: str
    path: str
    old: str
    new: str
    tests: list[str]
    control: list[str] = field(default_factory=list)


BREAKS = [
    Break("lr-consistency-once", PKG + "pipeline.py",
          "                if consistency is not None:\n                    noise_pred = consistency.correct_model_output(",
          "                if False:\n                    noise_pred = consistency.correct_model_output(",
          [BITE + "test_lr_consistency_back_projects_at_every_step"], ["tests/test_lr_consistency.py"]),
    Break("single-nan", PKG + "image_processing.py",
          "finite = torch.isfinite(values).all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()",
          "finite = torch.isfinite(values).any() if isinstance(values, torch.Tensor) else np.isfinite(values).any()",
          [BITE + "test_one_non_finite_value_among_finite_ones_is_refused"],
          ["tests/test_image_processing.py"]),
    Break("single-nan-check-finite", PKG + "image_processing.py",
          "    if not torch.isfinite(values).all():", "    if not torch.isfinite(values).any():",
          [BITE + "test_one_non_finite_value_among_finite_ones_is_refused"]),
    Break("memory-estimate-ignores-tiling", PKG + "pipeline.py",
          "limit = self.tiling[0] * scale if self.tiling is not None else max(height, width) * scale",
          "limit = max(height, width) * scale",
          [BITE + "test_tiling_lowers_the_memory_estimate_so_a_refused_image_fits",
           BITE + "test_cli_tile_is_the_fix_for_a_memory_refusal"],
          ["tests/test_bad_inputs.py::test_samples_are_batched_to_fit_memory_and_progress_is_shown"]),
    Break("shipped-code-lacks-rrdb_residual", PKG + "loading/inliner.py",
          "            if is_all or (isinstance(node, ast.ImportFrom) and node.module == \"__future__\"):",
          "            if is_all or (isinstance(node, ast.ImportFrom) and node.module == \"__future__\") or (\n"
          "                    isinstance(node, ast.FunctionDef) and node.name == \"rrdb_residual\"):",
          [BITE + "test_shipped_code_runs_tiling_lr_consistency_and_strength_like_the_package"],
          ["tests/test_remote_code.py::test_c_trust_remote_code_without_the_package"]),
    Break("tiled-conditioning-outside-the-hook", PKG + "sampling/tiling.py",
          "self.unet(sample[region], timestep, lr_features=patch, features_origin=origin).sample",
          "self.unet(sample[region], timestep, self.condition(tile)).sample",
          [BITE + "test_tiled_sampling_under_model_offload_runs_every_module_inside_its_hook"],
          ["tests/test_offload.py::test_model_cpu_offload_runs_every_module_inside_its_components_hook"]),
    Break("uncertainty-map-of-one-sample", PKG + "extras/uncertainty.py",
          "    std = samples.std(dim=0, correction=0)\n", "    std = samples[0]\n",
          [BITE + "test_cli_uncertainty_map_shows_the_samples_spread"],
          ["tests/test_cli_features.py::test_upscale_uncertainty_writes_samples_mean_and_map"]),
    Break("interpolate-cli-one-seed", PKG + "commands/interpolate.py",
          "generator_b=torch.Generator().manual_seed(seeds[1])", "generator_b=torch.Generator().manual_seed(seeds[0])",
          [BITE + "test_cli_interpolate_writes_the_api_frames"],
          ["tests/test_cli_features.py::test_interpolate_gif_and_strip"]),
    Break("interpolate-gif-wrong-way-back", PKG + "commands/interpolate.py",
          "loop = images + images[-2:0:-1]", "loop = images + images[1:-1]",
          [BITE + "test_cli_interpolate_writes_the_api_frames"],
          ["tests/test_cli_features.py::test_interpolate_gif_and_strip"]),
    Break("fuse-cli-ignores-feather", PKG + "commands/fuse.py",
          "pipe, image, reference, mask, feather=feather,", "pipe, image, reference, mask, feather=8.0,",
          [BITE + "test_cli_fuse_writes_the_api_result"],
          ["tests/test_cli_features.py::test_fuse_writes_the_sr_size_and_checks_the_mask"]),
    Break("linear-not-slerp", PKG + "extras/interpolation.py",
          "latents = torch.cat([slerp(noise_a, noise_b, k / (num_frames - 1)) for k in range(num_frames)])",
          "latents = torch.cat([noise_a + (noise_b - noise_a) * k / (num_frames - 1) for k in range(num_frames)])",
          [BITE + "test_interpolation_frames_start_from_the_slerp_of_the_two_noises"],
          ["tests/test_interpolation.py"]),
    Break("feather-twice-as-wide", PKG + "extras/fusion.py", "    sigma = feather / 2.0", "    sigma = feather",
          [BITE + "test_fusion_feather_profile_on_the_output"], ["tests/test_fusion.py"]),
    Break("fusion-noise-level-of-this-step", PKG + "extras/fusion.py",
          "timesteps[step + 1 : step + 2]", "timesteps[step : step + 1]",
          [BITE + "test_fusion_brings_the_reference_to_the_next_steps_noise_level"], ["tests/test_fusion.py"]),
    Break("complete-export-discarded", "training/atomic_export.py",
          "    if os.path.isfile(os.path.join(tmp, EXPORT_COMPLETE)):", "    if False:",
          [BITE + "test_a_complete_export_killed_mid_swap_is_finished_by_the_next_run"]),
    Break("every-process-does-everything", PKG + "commands/distributed.py",
          "        if self.state is None:\n            return range(count)\n        with",
          "        if True:\n            return range(count)\n        with",
          [BITE + "test_accelerate_launch_splits_the_images_evenly_and_each_process_samples_only_its_share"],
          ["tests/test_distributed.py::test_upscale_splits_images_between_processes"]),
    Break("main-process-does-everything", PKG + "commands/distributed.py",
          "        if self.state is None:\n            return range(count)\n        with",
          "        if self.state is None or self.state.is_main_process:\n            return range(count)\n"
          "        if True:\n            return range(0)\n        with",
          [BITE + "test_accelerate_launch_splits_the_images_evenly_and_each_process_samples_only_its_share"],
          ["tests/test_distributed.py::test_upscale_splits_images_between_processes"]),
    Break("flat-tile-weights", PKG + "sampling/tiling.py", "    if ramp > 0:\n        edge", "    if False:\n        edge",
          ["tests/test_tiling.py::test_3x3_tiles_match_untiled_without_seams",
           "tests/test_tiling.py::test_tiled_odd_and_small_sizes_match_untiled",
           "tests/test_few_step.py::test_rrdb_start_with_tiling_matches_untiled"]),
    Break("default-12-steps", PKG + "defaults.py", 'scheduler="unipc", steps=11, strength=0.82',
          'scheduler="unipc", steps=12, strength=0.82',
          [BITE + "test_cli_default_is_unipc_11_steps_strength_082_and_9_unet_calls"],
          ["tests/test_few_step.py::test_cli_default_is_the_few_step_setting"]),
    Break("sigint-exit-1", PKG + "commands/cli.py", "        return EXIT_INTERRUPTED", "        return EXIT_FAILED",
          [BITE + "test_sigint_exits_130_and_leaves_no_output"]),
    Break("progress-every-5-s", PKG + "commands/runtime.py",
          "if time.monotonic() - self.last >= self.interval:", "if time.monotonic() - self.last >= self.interval / 2:",
          [BITE + "test_progress_is_at_most_one_line_per_10_seconds"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated break names")
    parser.add_argument("--control", action="store_true", help="also run the tests that guarded it before")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "sradm-breaks")
    args = parser.parse_args()
    chosen = [b for b in BREAKS if not args.only or b.name in args.only.split(",")]
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    copy_tree(args.workdir)
    for item in chosen:
        path = args.workdir / item.path
        original = path.read_text(encoding="utf-8")
        if original.count(item.old) != 1:
            print(f"{item.name:<40} the text to replace occurs {original.count(item.old)} times in {item.path}")
            continue
        path.write_text(original.replace(item.old, item.new), encoding="utf-8")
        try:
            failed = run_pytest(args.workdir, item.tests) != 0
            line = f"{item.name:<40} {', '.join(t.split('::')[-1] for t in item.tests)} -> failed: " + (
                "yes" if failed else "NO")
            if args.control and item.control:
                line += "; before: " + ("failed" if run_pytest(args.workdir, item.control) else "passed")
            print(line, flush=True)
        finally:
            path.write_text(original, encoding="utf-8")


if __name__ == "__main__":
    main()

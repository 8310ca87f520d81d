"""Parameter counts of every preset (U-Net, RRDB encoder incl. its regression head, total), in millions.

    python benchmarks/count_parameters.py
"""

from sradm_diffusers import PRESETS, build_pipeline


def millions(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def main() -> None:
    print(f"{'preset':<10} {'scale':>5} {'U-Net':>8} {'encoder':>8} {'total':>8}")
    for name in PRESETS:
        pipe = build_pipeline(name)
        unet, encoder = millions(pipe.unet), millions(pipe.lr_encoder)
        print(f"{name:<10} {pipe.config.upscale_factor:>4}x {unet:>7.2f}M {encoder:>7.2f}M {unet + encoder:>7.2f}M")


if __name__ == "__main__":
    main()

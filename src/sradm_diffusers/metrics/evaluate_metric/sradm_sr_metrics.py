# Hugging Face `evaluate` metric: the sradm_diffusers super-resolution metrics.
#
# Load it offline from the installed package:
#     >>> import evaluate, sradm_diffusers.metrics.quality
#     >>> metric = evaluate.load(sradm_diffusers.metrics.quality.EVALUATE_MODULE)
#     >>> metric.add_batch(predictions=sr_images, references=hr_images)
#     >>> metric.compute(scale=4)
#
# evaluate parses this file's imports line by line: keep one plain import per line.
import datasets
import evaluate
import numpy as np
import torch
from sradm_diffusers.metrics import quality as sr_metrics

_CITATION = """\
@inproceedings{srdiff,
  title={SRDiff: Single image super-resolution with diffusion probabilistic models},
  author={Li, Haoying and others},
  journal={Neurocomputing},
  year={2022}
}
"""

_DESCRIPTION = """\
Super-resolution quality metrics of sradm_diffusers.metrics, averaged over the images: PSNR and SSIM on RGB as the
SRDiff reference computes them (uint8, no crop, scikit-image's 7x7 SSIM), PSNR and SSIM on the BT.601 Y channel
as BasicSR/NTIRE do (`scale` pixels cropped per border, 11x11 Gaussian SSIM), LR-PSNR (the SR image downscaled
with the project's MATLAB bicubic `imresize` against the LR image) and AlexNet LPIPS when its weights are on this
machine (see sradm_diffusers.metrics.lpips; otherwise null, with one warning saying how to enable it).
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: SR images: PIL images or uint8 numpy arrays (H, W, 3) (grayscale/RGBA PIL images are converted
        to RGB).
    references: HR images of the same sizes as the predictions.
    scale (int, required, passed to `compute`): the SR factor; the Y-protocol border crop and the LR-PSNR
        downscale factor.
    lr (optional, passed to `compute`): the LR inputs, one per example in the order the examples were added
        (PIL, uint8 numpy (h, w, 3) or uint8 torch (3, h, w)). Without it, LR-PSNR compares with the LR made from
        the reference: imresize(reference, 1/scale) rounded to uint8.
Returns:
    dict with the means over images of psnr_rgb, ssim_rgb, psnr_y, ssim_y, lr_psnr (dB for PSNRs; a PSNR is
    inf for identical images, and so is a mean containing one), lpips (null when its weights are unavailable)
    and n_images.
"""


def _to_chw_uint8(image, what):
    """PIL image, numpy (H,W,3)/(H,W) uint8 or torch uint8 (3,H,W) -> torch uint8 (3,H,W)."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise ValueError(f"{what}: a torch image must be uint8 (3,H,W); got {image.dtype} {tuple(image.shape)}.")
        return image
    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"{what}: images must be uint8 (0..255); got dtype {array.dtype}.")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{what}: expected an RGB image (H, W, 3); got shape {array.shape}.")
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SradmSRMetrics(evaluate.Metric):
    """PSNR/SSIM (RGB and Y), LR-PSNR and LPIPS for super-resolution, as sradm_diffusers.metrics computes them."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()}),
        )

    def _lpips(self):
        if not hasattr(self, "_lpips_model"):
            self._lpips_model = sr_metrics.load_lpips()
        return self._lpips_model

    def _compute(self, predictions, references, scale=None, lr=None):
        if scale is None:
            raise ValueError("scale is required: call compute(..., scale=S) with the SR factor (e.g. 4).")
        if lr is not None and len(lr) != len(predictions):
            raise ValueError(
                f"lr has {len(lr)} images but {len(predictions)} examples were given; pass one LR image per example."
            )
        if len(predictions) == 0:
            raise ValueError("No examples: add predictions and references before compute().")
        lpips_model = self._lpips()
        keys = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "lr_psnr", "lpips")
        values = {k: [] for k in keys}
        for i, (pred, ref) in enumerate(zip(predictions, references)):
            sr = _to_chw_uint8(pred, f"predictions[{i}]")
            hr = _to_chw_uint8(ref, f"references[{i}]")
            if sr.shape != hr.shape:
                raise ValueError(
                    f"predictions[{i}] is {tuple(sr.shape[1:])} but references[{i}] is {tuple(hr.shape[1:])}; "
                    "SR and HR images must have the same size."
                )
            low = None if lr is None else _to_chw_uint8(lr[i], f"lr[{i}]")
            per_image = sr_metrics.compute_metrics(sr, hr, scale, lr=low, lpips_model=lpips_model)
            for k in keys:
                if per_image[k] is not None:
                    values[k].append(float(per_image[k]))
        result = {k: (float(np.mean(v)) if v else None) for k, v in values.items()}
        result["n_images"] = len(predictions)
        return result

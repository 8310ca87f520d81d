"""Conversion of user images to the pipeline's tensors and back.

Accepted inputs (one image or a list of them, all of one size):

- ``PIL.Image.Image`` of any common mode. Greyscale (``L``, ``I;16``, ``I``, ``F``) is replicated to three channels
  (16-bit values are scaled by 1/257 to 8 bits, ``I``/``F`` must already be 0..255); palette and CMYK images are
  converted by PIL. **Transparency is composited on white** (``LA``, ``RGBA``, ``PA``, palette with transparency),
  the usual choice of image viewers: super-resolving an alpha channel is out of scope.
- ``numpy.ndarray`` (H, W), (H, W, 1), (H, W, 3) or (H, W, 4): uint8 (0..255) or float (0..1). Four channels are
  RGBA and composited on white like PIL images.
- ``torch.Tensor`` (3, H, W) or (B, 3, H, W), float in [0, 1] (the torchvision / diffusers convention).

Bad input (empty image, NaN/inf, values outside the range, wrong rank or channel count) raises ``ValueError`` or
``TypeError`` naming the problem; nothing is silently clipped or resized.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) float in [0, 1] -> (H, W, 3), alpha blended over a white background."""
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + (1.0 - alpha)


def _pil_to_array(image: PIL.Image.Image) -> np.ndarray:
    """PIL image of any mode -> (H, W, 3) float32 in [0, 1]."""
    if image.width == 0 or image.height == 0:
        raise ValueError(f"Got an empty image of size {image.width}x{image.height}; give an image with pixels.")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode in ("I", "F"):
        grey = np.asarray(image, dtype=np.float32)
        if not np.isfinite(grey).all():
            raise ValueError(
                f"{mode}-mode image contains NaN or infinite pixels; replace them (e.g. numpy.nan_to_num) before "
                "upscaling."
            )
        if grey.min() < 0 or grey.max() > 255:
            raise ValueError(
                f"{mode}-mode image has values in [{grey.min()}, {grey.max()}]; scale it to 0..255 (or save it as "
                "8-bit) before upscaling."
            )
        return np.repeat(grey[..., None] / 255.0, 3, axis=-1)
    if mode == "La":  # premultiplied: Pillow converts it to LA (un-premultiplied) and to nothing else
        image, mode = image.convert("LA"), "LA"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa") or (mode == "P" and "transparency" in image.info)
    array = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    return _composite_on_white(array) if has_alpha else array


def _numpy_to_array(image: np.ndarray) -> np.ndarray:
    """numpy (H,W), (H,W,1|3|4) uint8 or float in [0, 1] -> (H, W, 3) float32 in [0, 1]."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"numpy images must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) in HWC layout; got shape {image.shape}."
        )
    if image.dtype == np.uint8:
        array = image.astype(np.float32) / 255.0
    elif np.issubdtype(image.dtype, np.floating):
        array = image.astype(np.float32)
        _check_values(array, "numpy image")
    else:
        raise TypeError(f"numpy images must be uint8 (0..255) or float (0..1); got dtype {image.dtype}.")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = _composite_on_white(array)
    return array


def _check_values(values: np.ndarray | torch.Tensor, what: str) -> None:
    finite = torch.isfinite(values).all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()
    if not finite:
        raise ValueError(f"The {what} contains NaN or infinite values; clean the input before upscaling.")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"The {what} has values in [{low:.4g}, {high:.4g}] but float images must be in [0, 1]; "
            "divide 0..255 data by 255 (or pass uint8)."
        )


def _tensor_to_batch(image: torch.Tensor) -> torch.Tensor:
    """torch (3,H,W) / (B,3,H,W) float in [0, 1] -> (B, 3, H, W) float32 in [0, 1]."""
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(
            f"torch images must be (3, H, W) or (B, 3, H, W) RGB in [0, 1]; got shape {tuple(image.shape)}."
        )
    if not image.is_floating_point():
        raise TypeError(f"torch images must be float tensors in [0, 1]; got dtype {image.dtype}.")
    if image.shape[-1] == 0 or image.shape[-2] == 0 or image.shape[0] == 0:
        raise ValueError(f"Got an empty image tensor of shape {tuple(image.shape)}; give an image with pixels.")
    _check_values(image, "image tensor")
    return image.float()


def _to_batch(image: ImageInput) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return _tensor_to_batch(image)
    if isinstance(image, PIL.Image.Image):
        array = _pil_to_array(image)
    elif isinstance(image, np.ndarray):
        if image.size == 0:
            raise ValueError(f"Got an empty numpy image of shape {image.shape}; give an image with pixels.")
        array = _numpy_to_array(image)
    else:
        raise TypeError(
            f"Unsupported image type {type(image).__name__}; pass a PIL image, a numpy array (HWC) or a torch "
            "tensor (CHW/BCHW in [0, 1]), or a list of them."
        )
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0)


def preprocess(image: ImageInput | list[ImageInput]) -> torch.Tensor:
    """User image(s) -> LR batch (B, 3, h, w) float32 in [-1, 1]. See the module docstring for accepted inputs."""
    images = image if isinstance(image, (list, tuple)) else [image]
    if len(images) == 0:
        raise ValueError("Got an empty list of images; pass at least one image.")
    batches = [_to_batch(item) for item in images]
    sizes = {tuple(b.shape[-2:]) for b in batches}
    if len(sizes) > 1:
        raise ValueError(
            f"All images of one call must have the same size, got {sorted(sizes)}; call the pipeline once per size."
        )
    return torch.cat(batches) * 2.0 - 1.0


def check_finite(values: torch.Tensor, what: str, fix: str) -> None:
    """Raise ``ValueError`` naming ``what`` and ``fix`` if ``values`` holds NaN or infinite entries."""
    if not torch.isfinite(values).all():
        raise ValueError(f"NaN or infinite values in {what}; {fix}")


def postprocess(images: torch.Tensor, output_type: str = "pil"):
    """SR batch (B, 3, H, W) in [-1, 1] -> list of PIL images, numpy (B, H, W, 3) float in [0, 1], or the tensor
    (B, 3, H, W) in [0, 1] for ``output_type`` "pil", "np", "pt"."""
    images = ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    if output_type == "pt":
        return images
    array = images.permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return array
    return [PIL.Image.fromarray(item) for item in (array * 255.0).round().astype(np.uint8)]


OUTPUT_TYPES = ("pil", "np", "pt")

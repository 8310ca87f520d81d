"""LPIPS (AlexNet, linear layers v0.1) in plain torch, with weights found only on local disk.

The perceptual distance of Zhang et al. (2018) as the ``lpips`` package computes it with ``net="alex"``,
``version="0.1"``: inputs in [-1, 1] -> fixed scaling layer -> the five ReLU outputs of ImageNet AlexNet ->
each feature vector unit-normalised over channels -> squared difference -> learned non-negative 1x1 "lin"
layer -> spatial mean -> sum over the five layers.

Neither ``torchvision`` nor ``lpips`` is imported (the ``lpips`` package pulls ``torchvision``, whose PyPI wheel
breaks ``transformers``/``diffusers`` on CPU-only torch). Parameter names follow the original files, so both
load without conversion:

- torchvision's AlexNet ImageNet weights ``alexnet-owt-7be5be79.pth`` (keys ``features.0.weight`` ...; the
  ``classifier.*`` keys are ignored),
- the ``lpips`` package's linear layers ``weights/v0.1/alex.pth`` (keys ``lin0.model.1.weight`` ...
  ``lin4.model.1.weight``).

Nothing is ever downloaded. :func:`load_lpips` looks, in this order:

AlexNet file: the ``alex_path`` argument, ``$SRADM_LPIPS_ALEX``, ``$SRADM_LPIPS_DIR/alexnet-owt-7be5be79.pth``,
the torch hub cache ``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth`` (``$TORCH_HOME/hub`` or
``~/.cache/torch/hub``; where ``torchvision.models.alexnet(weights=...)`` stores it).

Linear-layer file: the ``lin_path`` argument, ``$SRADM_LPIPS_LIN``, ``$SRADM_LPIPS_DIR/alex.pth``, then the copy
shipped inside an installed ``lpips`` or ``torchmetrics`` package (found without importing them).

Where a file is missing, :func:`load_lpips` returns ``None`` and warns once; callers report LPIPS as null.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch
from torch import nn

ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"
LIN_FILENAME = "alex.pth"
ENV_ALEX = "SRADM_LPIPS_ALEX"
ENV_LIN = "SRADM_LPIPS_LIN"
ENV_DIR = "SRADM_LPIPS_DIR"

# Channels of the five tapped ReLU outputs (relu1 ... relu5) and their indices in ``features``.
LAYER_CHANNELS = (64, 192, 384, 256, 256)
_TAPS = (1, 4, 7, 9, 11)
# LPIPS ScalingLayer constants (per RGB channel), applied to inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# Smallest image side AlexNet's stride-4 conv and two 3x3/2 max-pools accept.
MIN_SIZE = 31

ENABLE_HELP = (
    f"To enable LPIPS, put torchvision's AlexNet weights '{ALEXNET_FILENAME}' and the lpips package's "
    f"'weights/v0.1/{LIN_FILENAME}' in one directory and set {ENV_DIR}=that directory (or point {ENV_ALEX} and "
    f"{ENV_LIN} at the two files; the AlexNet file is also found in the torch hub cache "
    f"<TORCH_HOME or ~/.cache/torch>/hub/checkpoints/). Nothing is downloaded."
)

_warned = False


class AlexNetFeatures(nn.Module):
    """The convolutional part of torchvision's AlexNet, returning the five ReLU outputs LPIPS uses.

    Module names match torchvision (``features.0`` ... ``features.10``) so its state dict loads directly. The last
    max-pool (``features.12``) is left out: LPIPS never uses it and it has no parameters.

    forward(x (B,3,H,W) float, already scaled) -> list of 5 tensors (B,C_k,H_k,W_k), C_k = 64,192,384,256,256.
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                outs.append(x)
        return outs


class _Lin(nn.Module):
    """LPIPS NetLinLayer: (dropout, 1x1 conv to one channel, no bias). Dropout is inference-only here, so an
    Identity keeps index 0 and the file's key ``model.1.weight``."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """AlexNet LPIPS v0.1 distance.

    A fresh instance has random weights; use :func:`load_lpips` or :meth:`from_files` for the real ones.

    forward(x, y): two images of the same shape, (B,3,H,W) or (3,H,W) with H, W >= 31, either float in [-1, 1]
    or uint8 in [0, 255] (mapped to [-1, 1] by ``v / 127.5 - 1``). Returns a float tensor (B,) (0-dim for an
    unbatched input), >= 0 with the published (non-negative) linear weights, exactly 0 for identical images.
    """

    def __init__(self):
        super().__init__()
        self.net = AlexNetFeatures()
        for k, c in enumerate(LAYER_CHANNELS):
            setattr(self, f"lin{k}", _Lin(c))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    # ---------------------------------------------------------------- loading
    def load_alexnet_state_dict(self, state: dict, source: str = "state dict") -> None:
        """Load torchvision AlexNet weights (``features.*`` keys; ``classifier.*`` ignored)."""
        feats = {k: v for k, v in state.items() if k.startswith("features.")}
        expected = set(self.net.state_dict())
        missing = sorted(expected - set(feats))
        if missing:
            raise ValueError(
                f"{source} is not a torchvision AlexNet state dict: missing {missing}. "
                f"Use torchvision's '{ALEXNET_FILENAME}'."
            )
        self._load_checked(self.net, {k: feats[k] for k in expected}, source)

    def load_lin_state_dict(self, state: dict, source: str = "state dict") -> None:
        """Load the lpips package's linear layers (keys ``lin0.model.1.weight`` ... ``lin4.model.1.weight``)."""
        lin_keys = [f"lin{k}.model.1.weight" for k in range(len(LAYER_CHANNELS))]
        missing = [k for k in lin_keys if k not in state]
        if missing:
            raise ValueError(
                f"{source} is not an LPIPS AlexNet linear-layer file: missing {missing}. "
                f"Use the lpips package's 'weights/v0.1/{LIN_FILENAME}'."
            )
        self._load_checked(self, {k: state[k] for k in lin_keys}, source, strict=False)

    @staticmethod
    def _load_checked(module: nn.Module, state: dict, source: str, strict: bool = True) -> None:
        own = module.state_dict()
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(
                    f"{source}: '{k}' has shape {tuple(v.shape)}, expected {tuple(own[k].shape)} "
                    "(wrong file for AlexNet LPIPS?)."
                )
        module.load_state_dict(state, strict=strict)

    @classmethod
    def from_files(cls, alex_path: str | os.PathLike, lin_path: str | os.PathLike) -> "LPIPS":
        """Build an LPIPS module from the two weight files (CPU, eval mode, no gradients)."""
        model = cls()
        model.load_alexnet_state_dict(_torch_load(alex_path), source=str(alex_path))
        model.load_lin_state_dict(_torch_load(lin_path), source=str(lin_path))
        return model

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, unbatched = self._prepare(x, "x")
        y, _ = self._prepare(y, "y")
        if x.shape != y.shape:
            raise ValueError(f"LPIPS inputs must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}.")
        fx = self.net((x - self.shift) / self.scale)
        fy = self.net((y - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for k, (a, b) in enumerate(zip(fx, fy)):
            d = (_unit_normalize(a) - _unit_normalize(b)) ** 2
            total = total + getattr(self, f"lin{k}")(d).mean(dim=(1, 2, 3))
        return total[0] if unbatched else total

    def _prepare(self, img: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"LPIPS input {name} must be a torch.Tensor, got {type(img).__name__}.")
        unbatched = img.ndim == 3
        if unbatched:
            img = img[None]
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"LPIPS input {name} must be (B,3,H,W) or (3,H,W); got shape {tuple(img.shape)}.")
        if min(img.shape[-2:]) < MIN_SIZE:
            raise ValueError(
                f"LPIPS input {name} is {tuple(img.shape[-2:])}; AlexNet needs both sides >= {MIN_SIZE} pixels."
            )
        dtype = self.shift.dtype
        if img.dtype == torch.uint8:
            img = img.to(dtype) / 127.5 - 1.0
        elif img.is_floating_point():
            img = img.to(dtype)
        else:
            raise TypeError(f"LPIPS input {name} must be float in [-1,1] or uint8; got dtype {img.dtype}.")
        return img.to(self.shift.device), unbatched


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each spatial feature vector by its L2 norm over channels (LPIPS ``normalize_tensor``)."""
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


def _torch_load(path: str | os.PathLike) -> dict:
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    return state


# -------------------------------------------------------------------- finding weights on disk
def _existing(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{what} '{path}' is not a file. Fix the path, or unset it to search the default places.")
    return p


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, located without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root, *parts)
        if p.is_file():
            return p
    return None


def _locate(explicit, explicit_name: str, env_var: str, candidates) -> Path | None:
    """An explicit path (argument, then ``$env_var``) must exist; otherwise the first existing candidate, or None."""
    if explicit is not None:
        return _existing(explicit, explicit_name)
    if os.environ.get(env_var):
        return _existing(os.environ[env_var], f"${env_var}")
    return next((Path(c) for c in candidates if c is not None and Path(c).is_file()), None)


def find_lpips_weights(
    alex_path: str | os.PathLike | None = None, lin_path: str | os.PathLike | None = None
) -> tuple[Path | None, Path | None]:
    """Locate the AlexNet and linear-layer files (see the module docstring for the search order).

    Returns ``(alex, lin)``, each a Path or None when not found. A path given explicitly (argument or
    ``$SRADM_LPIPS_ALEX`` / ``$SRADM_LPIPS_LIN``) that is not a file raises ValueError.
    """
    env_dir = Path(os.environ[ENV_DIR]).expanduser() if os.environ.get(ENV_DIR) else None
    alex = _locate(
        alex_path, "alex_path", ENV_ALEX,
        [env_dir / ALEXNET_FILENAME if env_dir else None, Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILENAME],
    )
    lin = _locate(
        lin_path, "lin_path", ENV_LIN,
        [
            env_dir / LIN_FILENAME if env_dir else None,
            _package_file("lpips", "weights", "v0.1", LIN_FILENAME),
            _package_file("torchmetrics", "functional", "image", "lpips_models", LIN_FILENAME),
        ],
    )
    return alex, lin


def load_lpips(
    alex_path: str | os.PathLike | None = None,
    lin_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    warn: bool = True,
) -> LPIPS | None:
    """Load AlexNet LPIPS from local files, or return None when they are not on this machine.

    Args:
        alex_path: torchvision ``alexnet-owt-7be5be79.pth``; default: searched (module docstring).
        lin_path: lpips ``weights/v0.1/alex.pth``; default: searched.
        device: where to put the module (default CPU).
        warn: when a file is missing, emit one RuntimeWarning per process saying how to enable LPIPS.

    Returns:
        An :class:`LPIPS` module in eval mode without gradients, or None (report LPIPS as null).
    """
    global _warned
    alex, lin = find_lpips_weights(alex_path, lin_path)
    if alex is None or lin is None:
        if warn and not _warned:
            _warned = True
            missing = " and ".join(
                name for name, p in ((ALEXNET_FILENAME, alex), (f"lpips v0.1 {LIN_FILENAME}", lin)) if p is None
            )
            warnings.warn(f"LPIPS is reported as null: {missing} not found locally. {ENABLE_HELP}", RuntimeWarning,
                          stacklevel=2)
        return None
    model = LPIPS.from_files(alex, lin)
    if device is not None:
        model = model.to(device)
    return model

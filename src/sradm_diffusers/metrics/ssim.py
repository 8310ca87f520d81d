"""The SSIM engine behind :func:`~sradm_diffusers.metrics.quality.ssim_rgb` and ``ssim_y``: mean SSIM in row strips.

SSIM is computed strip by strip (rows of the image), so that the intermediates of a strip stay in the CPU cache: a
pass over a whole float64 image is memory bound and several times slower. Both 1-D filter passes are matrix
products (BLAS) with banded matrices rather than one multiply-add per tap.

Two windows (shared/reference/srdiff.md, "Evaluation protocol"):

- uniform (``sigma=None``, ``luma=False``): scikit-image's SSIM on the three RGB channels, ``win`` x ``win`` window,
  sample covariance N/(N-1) with N = win**2. The window sums Sx, Sy, Sxy and Sq (of x*x + y*y) are sums of N
  integers below 2 * 255**2, computed exactly (float32 holds every partial sum, < 2**24, exactly). With
  A = C1 N^2 + 2 Sx Sy, B = C1 N^2 + Sx^2 + Sy^2 and K = C1 N^2 + C2 N (N-1), in float64,

      ssim = A (2 N Sxy - A + K) / (B (N Sq - B + K)),

  which is the usual formula in window means and N/(N-1)-scaled (co)variances, multiplied through by N^4.
- Gaussian (``sigma`` given, ``luma=True``): BasicSR's SSIM on the BT.601 Y channel, separable normalised window,
  no covariance correction, float64. With m(.) the window means, A = C1 + 2 mx my and B = C1 + mx^2 + my^2,

      ssim = A (2 m(xy) - A + K) / (B (m(xx + yy) - B + K)),  K = C1 + C2;

  K/2 and K are added to the x*y and x*x + y*y maps before filtering (the window sums to 1).
"""

from __future__ import annotations

import torch

DATA_RANGE = 255.0
K1, K2 = 0.01, 0.03

_STRIP_BYTES = 1 << 20  # target size of a strip of the stacked moment maps (input rows + halo), CPU
_HBLOCK = 16  # block length of the horizontal pass (>= window - 1)
_Y_COEF = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)  # BT.601 Y = 16 + coef . (R, G, B)


def float_dtype(device: torch.device) -> torch.dtype:
    """The dtype metrics are computed in: float64, or float32 on MPS (which has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


def gaussian_1d(size: int, sigma: float, dtype, device) -> torch.Tensor:
    """Normalised 1-D Gaussian as OpenCV's getGaussianKernel(size, sigma)."""
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _band(taps: list[float], n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n + len(taps) - 1, n) matrix ``M[p, i] = taps[p - i]`` (0 elsewhere): ``x @ M`` is the 'valid' correlation of
    each row of ``x`` (length n + len(taps) - 1) with ``taps``."""
    h = len(taps) - 1
    k = torch.arange(n + h)[:, None] - torch.arange(n)[None, :]
    t = torch.tensor(taps, dtype=torch.float64)
    band = torch.where((k >= 0) & (k <= h), t[k.clamp(0, h)], torch.zeros((), dtype=torch.float64))
    return band.to(device=device, dtype=dtype)


def _cpu_float32_matmul_is_ieee() -> bool:
    """Whether CPU float32 matrix products currently run in IEEE float32 (not bfloat16/TF32 internally)."""
    try:
        precision = torch.backends.mkldnn.matmul.fp32_precision  # torch >= 2.9; "none": not set (IEEE)
    except AttributeError:
        precision = None
    try:
        if precision is not None:
            return precision in ("ieee", "none")
        return torch.get_float32_matmul_precision() == "highest"
    except RuntimeError:  # inconsistent legacy/new precision settings: be safe
        return False


def _strip_rows(device: torch.device, out_rows: int, row_bytes: int, halo: int) -> int:
    """Output rows per strip: cache-sized on CPU, larger elsewhere (fewer kernel launches on a GPU)."""
    if device.type != "cpu":
        return min(out_rows, 256)
    rows = _STRIP_BYTES // max(row_bytes, 1) - halo
    return min(max(rows, halo, 1), out_rows)


class _StripSSIM:
    """Buffers and constants of one SSIM computation; :meth:`run` walks the strips.

    The four moment maps (x, y, x*y, x*x + y*y) of every image and channel of a strip lie side by side in one
    ``ring`` buffer of shape (rows + halo, 4, B, C, W), so the vertical pass is one matrix product with a banded
    (out_rows, rows + halo) matrix. The horizontal pass treats that result as one flat signal cut into blocks of
    ``_HBLOCK`` values: output block j = ``block_j @ M[:blk] + block_{j+1}[:win-1] @ M[blk:]`` with M the banded
    (blk + win - 1, blk) matrix, two matrix products for the whole strip; outputs whose window crosses the end of an
    image row are computed but not used. The ``win - 1`` input rows shared by consecutive strips are carried over
    rather than recomputed.
    """

    def __init__(self, x: torch.Tensor, win: int, sigma: float | None, luma: bool):
        b, _, h, w = x.shape
        device = x.device
        self.gauss, self.luma, self.win = sigma is not None, luma, win
        self.fdtype = float_dtype(device)
        # Filtering dtype: the uniform window's integer sums are exact in float32 where float32 matrix products are
        # IEEE float32 (CPU, default settings); TF32/bfloat16 products (GPUs, or CPUs after a user's
        # torch.set_float32_matmul_precision("high"/"medium")) would round them, so there float64, exact as well.
        exact_f32 = device.type == "cpu" and _cpu_float32_matmul_is_ieee()
        wdtype = torch.float32 if not self.gauss and exact_f32 else self.fdtype
        self.c = 1 if luma else x.shape[1]
        self.halo = halo = win - 1
        self.blk = blk = max(_HBLOCK, halo)  # the horizontal pass needs blocks at least as long as the overlap
        self.ho, self.wo, self.w = h - halo, w - halo, w
        self.row = 4 * b * self.c * w  # elements of one image row of all the stacked moment maps
        self.rows = rows = _strip_rows(device, self.ho, self.row * wdtype.itemsize, halo)

        taps = gaussian_1d(win, sigma, torch.float64, torch.device("cpu")).tolist() if self.gauss else [1.0] * win
        self.vert = _band(taps, rows, wdtype, device).T  # (rows, rows + halo)
        hband = _band(taps, blk, wdtype, device)  # (blk + halo, blk)
        self.h_main, self.h_next = hband[:blk], hband[blk:]
        n_blocks = -(-rows * self.row // blk)
        self.ring = torch.empty((rows + halo, 4, b, self.c, w), dtype=wdtype, device=device)
        self.vflat = torch.zeros((n_blocks + 1) * blk, dtype=wdtype, device=device)  # tail stays finite (zeros)
        self.hflat = torch.empty(n_blocks * blk, dtype=wdtype, device=device)
        same = wdtype == self.fdtype
        self.sflat = self.hflat if same else torch.empty(n_blocks * blk, dtype=self.fdtype, device=device)
        if luma:
            self.rgb = torch.empty((rows + halo, b, 3, w), dtype=self.fdtype, device=device)
        self._set_constants(device)

    def _set_constants(self, device: torch.device) -> None:
        """The SSIM constants in the form each window needs (see the module docstring)."""
        def const(v: float) -> torch.Tensor:  # 0-dim tensor in the float dtype
            return torch.tensor(v, dtype=self.fdtype, device=device)

        c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
        if self.gauss:
            self.scale, self.k_a, self.k_sum = 1.0, const(c1), None
            self.k_xy, self.k_q, self.k_16 = const((c1 + c2) / 2), const(c1 + c2), const(16.0)
        else:
            n_win = float(self.win * self.win)
            self.scale, self.k_a = n_win, const(c1 * n_win * n_win)
            self.k_sum = c1 * n_win * n_win + c2 * n_win * (n_win - 1)

    def _load_moments(self, x: torch.Tensor, y: torch.Tensor, src: slice, new0: int, count: int) -> None:
        """Fill ``ring[new0:new0+count]`` with the four moment maps of input rows ``src``."""
        mx, my, mxy, mq = self.ring[new0 : new0 + count].unbind(1)  # (count, b, c, w) each
        if self.luma:
            for img, out in ((x, mx[:, :, 0]), (y, my[:, :, 0])):
                t = self.rgb[:count]
                t.copy_(img[:, :, src].permute(2, 0, 1, 3))
                torch.add(self.k_16, t[:, :, 0], alpha=_Y_COEF[0], out=out)
                out.add_(t[:, :, 1], alpha=_Y_COEF[1])
                out.add_(t[:, :, 2], alpha=_Y_COEF[2])
        else:
            mx.copy_(x[:, :, src].permute(2, 0, 1, 3))
            my.copy_(y[:, :, src].permute(2, 0, 1, 3))
        if self.gauss:
            torch.addcmul(self.k_xy, mx, my, out=mxy)
            torch.addcmul(self.k_q, mx, mx, out=mq)
        else:
            torch.mul(mx, my, out=mxy)
            torch.mul(mx, mx, out=mq)
        mq.addcmul_(my, my)

    def _filter(self, n: int) -> tuple[torch.Tensor, ...]:
        """Window sums (or means) of the strip's n output rows: four (n, B, C, wo) maps in the float dtype."""
        halo, blk, row = self.halo, self.blk, self.row
        length = n * row
        nb = -(-length // blk)
        torch.mm(self.vert[:n, : n + halo], self.ring[: n + halo].view(n + halo, row),
                 out=self.vflat[:length].view(n, row))
        blocks = self.vflat[: (nb + 1) * blk].view(nb + 1, blk)
        hout = self.hflat[: nb * blk].view(nb, blk)
        torch.mm(blocks[:nb], self.h_main, out=hout)
        hout.addmm_(blocks[1:, :halo], self.h_next)
        if self.sflat is not self.hflat:
            self.sflat[:length].copy_(self.hflat[:length])
        return self.sflat[:length].view(n, 4, -1, self.c, self.w)[..., : self.wo].unbind(1)

    def _ssim_sum(self, fx, fy, fxy, fq) -> torch.Tensor:
        """Sum over the strip of the SSIM map, per image (B,).

        fx.. are window sums (uniform window: scale = N, k_sum = K) or window means with the constants already added
        to the xy and q maps (Gaussian: scale = 1, k_sum = None); see the module docstring.
        """
        a = torch.addcmul(self.k_a, fx, fy, value=2)  # A
        bq = torch.addcmul(self.k_a, fx, fx)  # B
        bq.addcmul_(fy, fy)
        num = torch.add(a, fxy, alpha=-2 * self.scale)  # A - 2 N Sxy (- K): minus the second numerator factor
        den = torch.add(bq, fq, alpha=-self.scale)  # B - N Sq (- K): minus the second denominator factor
        if self.k_sum is not None:
            num.sub_(self.k_sum)
            den.sub_(self.k_sum)
        num.mul_(a)
        den.mul_(bq)
        return num.div_(den).sum(dim=(0, 2, 3))

    def run(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        halo, rows = self.halo, self.rows
        acc = torch.zeros(x.shape[0], dtype=self.fdtype, device=x.device)
        start = 0  # first output (and input) image row of the strip
        while start < self.ho:
            n = min(rows, self.ho - start)
            if start == 0:
                new0, count = 0, n + halo
            else:  # the previous strip had `rows` output rows; its last `halo` input rows are this strip's first
                self.ring[:halo].copy_(self.ring[rows : rows + halo])
                new0, count = halo, n
            self._load_moments(x, y, slice(start + new0, start + new0 + count), new0, count)
            acc += self._ssim_sum(*self._filter(n))
            start += n
        return acc / (self.c * self.ho * self.wo)


def ssim_mean(x: torch.Tensor, y: torch.Tensor, win: int, sigma: float | None, luma: bool) -> torch.Tensor:
    """Mean SSIM (B,) over channels and the 'valid' SSIM map, for uint8 (B,3,H,W) images on the 0..255 scale.

    ``sigma=None``: uniform ``win`` x ``win`` window on RGB (scikit-image); ``sigma`` given with ``luma=True``:
    Gaussian window on BT.601 Y (BasicSR). Raises ``ValueError`` if the image is smaller than the window.
    """
    _, _, h, w = x.shape
    if min(h, w) < win:
        raise ValueError(
            f"SSIM with a {win}x{win} window needs images of at least {win}x{win} (after cropping); got {h}x{w}."
        )
    return _StripSSIM(x, win, sigma, luma).run(x, y)

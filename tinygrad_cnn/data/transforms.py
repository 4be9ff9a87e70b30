"""Batch transforms: every transform maps a whole batch (N, C, H, W) to a batch, vectorised.

Randomness is explicit. Random transforms accept ``rng`` (a ``numpy.random.Generator``) at call time;
without one they use their own generator, seeded by ``seed=`` at construction. Random numbers are always
drawn on the host with NumPy (a few per image), and the pixel work runs on the array's own module
(NumPy, or CuPy for GPU-resident batches), so the same code serves both devices and the same seed gives
the same augmentation on either.

Integer (uint8) batches stay integer through the geometric transforms (crop, flip, resize, cutout), so
augmentation can run before ``ToFloat``; photometric transforms and normalisation produce floats.
"""
from __future__ import annotations

import math

import numpy as np

from .._arguments import pair
from ..backend import get_array_module

__all__ = [
    "Transform", "Compose", "ToFloat", "SubtractMeanImage", "SubtractChannelMean", "Normalize",
    "RandomCrop", "CenterCrop", "RandomHorizontalFlip", "RandomResizedCrop", "Resize", "ColorJitter",
    "PCAColorAugmentation", "Cutout", "compute_mean_image", "compute_channel_stats", "compute_pca_basis",
    "compute_zca", "ZCAWhitening", "affine", "affine_matrices", "RandomAffine", "RandomRotation",
    "resize", "crop_at", "hflip", "five_crop", "ten_crop", "flip_tta", "ten_crop_tta",
]


def _check_batch(name, x):
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{name}: expected a batch (N, C, H, W), got shape {getattr(x, 'shape', None)}")


def _float(x, xp):
    return x.astype(np.float32) if not np.issubdtype(x.dtype, np.floating) else x


class Transform:
    """Base class. ``__call__(x, rng=None)``: x (N, C, H, W) -> (N, C', H', W')."""

    random = False

    def __init__(self, seed=None):
        self.rng = np.random.default_rng(seed)

    def _generator(self, rng):
        return rng if rng is not None else self.rng

    def __call__(self, x, rng=None):
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if k != "rng" and not isinstance(v, np.ndarray))
        return f"{type(self).__name__}({fields})"


class Compose(Transform):
    """Apply transforms in order, all drawing from the same generator (so the order is reproducible)."""

    def __init__(self, transforms, seed=None):
        super().__init__(seed)
        self.transforms = list(transforms)

    def __call__(self, x, rng=None):
        rng = self._generator(rng)
        for t in self.transforms:
            x = t(x, rng=rng) if isinstance(t, Transform) else t(x)
        return x


class ToFloat(Transform):
    """x * scale as ``dtype`` (uint8 0..255 -> float32 0..1 by default)."""

    def __init__(self, scale=1.0 / 255.0, dtype=np.float32):
        super().__init__()
        self.scale, self.dtype = scale, np.dtype(dtype)

    def __call__(self, x, rng=None):
        out = x.astype(self.dtype)
        if self.scale != 1:
            out *= self.dtype.type(self.scale)
        return out


class SubtractMeanImage(Transform):
    """x - mean_image, mean_image: (C, H, W) (per-pixel mean of the training set, as in AlexNet)."""

    def __init__(self, mean_image):
        super().__init__()
        self.mean_image = np.asarray(mean_image, dtype=np.float64)
        if self.mean_image.ndim != 3:
            raise ValueError(f"SubtractMeanImage: mean_image must be (C, H, W), got {self.mean_image.shape}")

    def __call__(self, x, rng=None):
        _check_batch("SubtractMeanImage", x)
        if x.shape[1:] != self.mean_image.shape:
            raise ValueError(f"SubtractMeanImage: batch {x.shape} does not match mean_image {self.mean_image.shape}")
        xp = get_array_module(x)
        x = _float(x, xp)
        return x - xp.asarray(self.mean_image, dtype=x.dtype)


class SubtractChannelMean(Transform):
    """x - mean[c] per channel, mean: (C,) (as in VGG)."""

    def __init__(self, mean):
        super().__init__()
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)

    def __call__(self, x, rng=None):
        _check_batch("SubtractChannelMean", x)
        if x.shape[1] != self.mean.size:
            raise ValueError(f"SubtractChannelMean: batch has {x.shape[1]} channels, mean has {self.mean.size}")
        xp = get_array_module(x)
        x = _float(x, xp)
        return x - xp.asarray(self.mean, dtype=x.dtype).reshape(1, -1, 1, 1)


class Normalize(Transform):
    """(x - mean[c]) / std[c] per channel; mean, std: (C,)."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape or np.any(self.std <= 0):
            raise ValueError(f"Normalize: mean {self.mean} and std {self.std} must have equal length, std > 0")

    def __call__(self, x, rng=None):
        _check_batch("Normalize", x)
        if x.shape[1] != self.mean.size:
            raise ValueError(f"Normalize: batch has {x.shape[1]} channels, mean/std have {self.mean.size}")
        xp = get_array_module(x)
        x = _float(x, xp)
        mean = xp.asarray(self.mean, dtype=x.dtype).reshape(1, -1, 1, 1)
        inv_std = xp.asarray(1.0 / self.std, dtype=x.dtype).reshape(1, -1, 1, 1)
        return (x - mean) * inv_std


# ---------------------------------------------------------------- statistics of a training set

def _chunks(data, chunk):
    for start in range(0, data.shape[0], chunk):
        yield np.asarray(data[start:start + chunk], dtype=np.float64)


def compute_mean_image(data, scale=1.0 / 255.0, chunk=4096):
    """Per-pixel mean of ``data`` (N, C, H, W) times ``scale`` -> float64 (C, H, W)."""
    _check_batch("compute_mean_image", data)
    total = np.zeros(data.shape[1:], dtype=np.float64)
    for block in _chunks(data, chunk):
        total += block.sum(axis=0)
    return total * (scale / data.shape[0])


def compute_channel_stats(data, scale=1.0 / 255.0, chunk=4096):
    """Per-channel mean and (population) std of ``data`` (N, C, H, W) times ``scale`` -> two float64 (C,)."""
    _check_batch("compute_channel_stats", data)
    s1 = np.zeros(data.shape[1], dtype=np.float64)
    s2 = np.zeros(data.shape[1], dtype=np.float64)
    for block in _chunks(data, chunk):
        block = block * scale
        s1 += block.sum(axis=(0, 2, 3))
        s2 += np.square(block).sum(axis=(0, 2, 3))
    count = data.shape[0] * data.shape[2] * data.shape[3]
    mean = s1 / count
    return mean, np.sqrt(np.maximum(s2 / count - mean ** 2, 0.0))


def compute_pca_basis(data, scale=1.0 / 255.0, chunk=4096):
    """Eigen-decomposition of the RGB covariance over all pixels of ``data`` (N, 3, H, W) times ``scale``.

    Returns ``(eigenvalues (3,), eigenvectors (3, 3))``, eigenvectors as columns, eigenvalues descending.
    """
    _check_batch("compute_pca_basis", data)
    c = data.shape[1]
    s1 = np.zeros(c)
    s2 = np.zeros((c, c))
    count = 0
    for block in _chunks(data, chunk):
        pixels = (block * scale).transpose(1, 0, 2, 3).reshape(c, -1)
        s1 += pixels.sum(axis=1)
        s2 += pixels @ pixels.T
        count += pixels.shape[1]
    mean = s1 / count
    cov = s2 / count - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    return np.maximum(values[order], 0.0), vectors[:, order]


def compute_zca(data, eps=0.1, scale=1.0 / 255.0, chunk=1024):
    """ZCA whitening of ``data`` (N, C, H, W) times ``scale``, every image one D = C*H*W vector.

    With the covariance ``Sigma = U diag(lambda) U^T`` of the images (eigenvectors as columns):

    * PCA basis / decorrelation: ``U^T (x - mean)`` has a diagonal covariance ``diag(lambda)``;
    * PCA whitening: ``diag(lambda + eps)^(-1/2) U^T (x - mean)``, covariance ~ identity;
    * ZCA whitening: ``W = U diag(lambda + eps)^(-1/2) U^T``, i.e. PCA whitening rotated back.
      Of all whitening matrices it changes the data least (it is the symmetric one), so the
      whitened images still look like images, with edges enhanced.

    ``eps`` keeps the directions of tiny variance (noise) from being blown up: their scale is
    capped at ``1/sqrt(eps)``. Returns ``(mean (D,), W (D, D), eigenvalues (D,) descending,
    eigenvectors (D, D) as columns)``, float64 NumPy arrays.
    """
    _check_batch("compute_zca", data)
    if eps < 0:
        raise ValueError(f"compute_zca: eps must be >= 0, got {eps}")
    n = data.shape[0]
    dim = int(np.prod(data.shape[1:]))
    if n < 2:
        raise ValueError(f"compute_zca: needs at least 2 images, got batch {data.shape}")
    s1 = np.zeros(dim)
    s2 = np.zeros((dim, dim))
    for block in _chunks(data, chunk):
        rows = np.asarray(block, dtype=np.float64).reshape(len(block), dim) * scale
        s1 += rows.sum(axis=0)
        s2 += rows.T @ rows
    mean = s1 / n
    cov = s2 / n - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = np.maximum(values[order], 0.0), vectors[:, order]
    matrix = (vectors / np.sqrt(values + eps)) @ vectors.T
    return mean, matrix, values, vectors


class ZCAWhitening(Transform):
    """x (N, C, H, W) -> ZCA-whitened images ``(x * scale - mean) W`` of the same shape (float32
    for integer images, else the input's float dtype).

    Build with ``from_data(train.data, eps)`` (see :func:`compute_zca`) and apply the same
    transform to the test set. The (D, D) matrix is copied to the batch's device on first use.
    """

    def __init__(self, mean, matrix, scale=1.0 / 255.0):
        super().__init__()
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.matrix = np.asarray(matrix, dtype=np.float64)
        if self.matrix.shape != (self.mean.size, self.mean.size):
            raise ValueError(f"ZCAWhitening: matrix of shape {self.matrix.shape} does not match "
                             f"a mean of {self.mean.size} features")
        self.scale = scale

    @classmethod
    def from_data(cls, data, eps=0.1, scale=1.0 / 255.0):
        mean, matrix, _, _ = compute_zca(data, eps, scale)
        return cls(mean, matrix, scale)

    def __call__(self, x, rng=None):
        _check_batch("ZCAWhitening", x)
        dim = int(np.prod(x.shape[1:]))
        if dim != self.mean.size:
            raise ValueError(f"ZCAWhitening: images of shape {tuple(x.shape[1:])} have {dim} "
                             f"features, the whitening was computed for {self.mean.size}")
        xp = get_array_module(x)
        rows = _float(x, xp).reshape(x.shape[0], dim)
        rows = rows * rows.dtype.type(self.scale)
        mean = xp.asarray(self.mean, dtype=rows.dtype)
        matrix = xp.asarray(self.matrix, dtype=rows.dtype)
        return ((rows - mean) @ matrix).reshape(x.shape)   # W is symmetric: x W = (W x^T)^T


# ---------------------------------------------------------------- geometry

def crop_at(x, top, left, height, width):
    """Crop each image n at (top[n], left[n]) to (height, width): x (N, C, H, W) -> (N, C, height, width).

    NumPy gathers from a strided window view (one index triple per image); other array modules use plain
    fancy indexing.
    """
    xp = get_array_module(x)
    n = x.shape[0]
    top = xp.asarray(top, dtype=np.int64).reshape(n)
    left = xp.asarray(left, dtype=np.int64).reshape(n)
    if xp is np:
        views = np.lib.stride_tricks.sliding_window_view(x, (height, width), axis=(2, 3))  # (N, C, H-h+1, W-w+1, h, w), no copy
        return xp.ascontiguousarray(views[xp.arange(n), :, top, left])
    return _crop_fancy(x, top, left, height, width)


def _crop_fancy(x, top, left, height, width):
    """``crop_at`` by plain fancy indexing (array modules without sliding windows)."""
    xp = get_array_module(x)
    n = x.shape[0]
    top = xp.asarray(top, dtype=np.int64).reshape(n)
    left = xp.asarray(left, dtype=np.int64).reshape(n)
    rows = (top[:, None] + xp.arange(height))[:, None, :, None]
    cols = (left[:, None] + xp.arange(width))[:, None, None, :]
    return x[xp.arange(n)[:, None, None, None], xp.arange(x.shape[1])[None, :, None, None], rows, cols]


class RandomCrop(Transform):
    """Pad by ``padding`` then crop a random (size) window per image (offsets uniform over valid positions).

    x: (N, C, H, W) -> (N, C, size_h, size_w). ``padding_mode``: 'constant' (with ``fill``), 'reflect', 'edge'.
    """

    random = True

    def __init__(self, size, padding=0, fill=0, padding_mode="constant", seed=None):
        super().__init__(seed)
        self.size = pair("RandomCrop", "size", size)
        self.padding = pair("RandomCrop", "padding", padding)
        self.fill, self.padding_mode = fill, padding_mode
        if padding_mode not in ("constant", "reflect", "edge"):
            raise ValueError(f"RandomCrop: padding_mode must be constant/reflect/edge, got {padding_mode!r}")

    def __call__(self, x, rng=None):
        _check_batch("RandomCrop", x)
        rng = self._generator(rng)
        xp = get_array_module(x)
        ph, pw = self.padding
        if ph or pw:
            pad = ((0, 0), (0, 0), (ph, ph), (pw, pw))
            if self.padding_mode == "constant":
                x = xp.pad(x, pad, mode="constant", constant_values=self.fill)
            else:
                x = xp.pad(x, pad, mode=self.padding_mode)
        n, _, h, w = x.shape
        th, tw = self.size
        if th > h or tw > w:
            raise ValueError(f"RandomCrop: size {self.size} larger than padded image {(h, w)}")
        top = rng.integers(0, h - th + 1, size=n)
        left = rng.integers(0, w - tw + 1, size=n)
        return crop_at(x, top, left, th, tw)


class CenterCrop(Transform):
    """Central (size) window: x (N, C, H, W) -> (N, C, size_h, size_w)."""

    def __init__(self, size):
        super().__init__()
        self.size = pair("CenterCrop", "size", size)

    def __call__(self, x, rng=None):
        _check_batch("CenterCrop", x)
        th, tw = self.size
        h, w = x.shape[2:]
        if th > h or tw > w:
            raise ValueError(f"CenterCrop: size {self.size} larger than image {(h, w)}")
        top, left = (h - th) // 2, (w - tw) // 2
        return x[:, :, top:top + th, left:left + tw]


def hflip(x):
    """Mirror left-right: (N, C, H, W) -> (N, C, H, W). Accepts an array or a tinygrad_cnn Tensor."""
    data, wrap = _unwrap(x)
    return wrap(get_array_module(data).ascontiguousarray(data[..., ::-1]))


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right independently with probability ``p``."""

    random = True

    def __init__(self, p=0.5, seed=None):
        super().__init__(seed)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, x, rng=None):
        _check_batch("RandomHorizontalFlip", x)
        xp = get_array_module(x)
        flip = self._generator(rng).random(x.shape[0]) < self.p
        return xp.where(xp.asarray(flip)[:, None, None, None], x[..., ::-1], x)


def _resize_boxes(x, top, left, height, width, size, interpolation):
    """Resample box n of image n ((top, left, height, width), each (N,)) to ``size`` (out_h, out_w).

    Pixel centres are mapped as src = top + (i + 0.5) * height / out_h - 0.5 (half-pixel convention),
    clamped inside the box. Integer inputs are rounded back to their dtype.
    """
    xp = get_array_module(x)
    n, c = x.shape[:2]
    oh, ow = size
    top, left, height, width = (xp.asarray(np.asarray(v, dtype=np.float64).reshape(n))
                                for v in (top, left, height, width))
    ys = top[:, None] + (xp.arange(oh) + 0.5)[None, :] * (height / oh)[:, None] - 0.5
    xs = left[:, None] + (xp.arange(ow) + 0.5)[None, :] * (width / ow)[:, None] - 0.5
    y_max = (top + height - 1)[:, None]
    x_max = (left + width - 1)[:, None]
    ys = xp.minimum(xp.maximum(ys, top[:, None]), y_max)
    xs = xp.minimum(xp.maximum(xs, left[:, None]), x_max)
    ni = xp.arange(n)[:, None, None, None]
    ci = xp.arange(c)[None, :, None, None]
    if interpolation == "nearest":
        yi = xp.minimum(xp.floor(ys + 0.5), y_max).astype(np.int64)[:, None, :, None]
        xi = xp.minimum(xp.floor(xs + 0.5), x_max).astype(np.int64)[:, None, None, :]
        return x[ni, ci, yi, xi]
    if interpolation != "bilinear":
        raise ValueError(f"resize: interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    y0 = xp.floor(ys)
    x0 = xp.floor(xs)
    wy = (ys - y0)[:, None, :, None]
    wx = (xs - x0)[:, None, None, :]
    y1 = xp.minimum(y0 + 1, y_max).astype(np.int64)[:, None, :, None]
    x1 = xp.minimum(x0 + 1, x_max).astype(np.int64)[:, None, None, :]
    y0 = y0.astype(np.int64)[:, None, :, None]
    x0 = x0.astype(np.int64)[:, None, None, :]
    src = _float(x, xp)
    wy, wx = wy.astype(src.dtype), wx.astype(src.dtype)
    top_row = src[ni, ci, y0, x0] * (1 - wx) + src[ni, ci, y0, x1] * wx
    bottom_row = src[ni, ci, y1, x0] * (1 - wx) + src[ni, ci, y1, x1] * wx
    out = top_row * (1 - wy) + bottom_row * wy
    if not np.issubdtype(x.dtype, np.floating):
        info = np.iinfo(x.dtype)
        out = xp.clip(xp.rint(out), info.min, info.max).astype(x.dtype)
    return out


def resize(x, size, interpolation="bilinear"):
    """Resize a batch (N, C, H, W) -> (N, C, out_h, out_w); 'bilinear' or 'nearest', half-pixel centres."""
    _check_batch("resize", x)
    n, _, h, w = x.shape
    zeros = np.zeros(n)
    return _resize_boxes(x, zeros, zeros, np.full(n, h), np.full(n, w), pair("resize", "size", size), interpolation)


class Resize(Transform):
    """Deterministic resize of the whole batch to ``size``."""

    def __init__(self, size, interpolation="bilinear"):
        super().__init__()
        self.size, self.interpolation = pair("Resize", "size", size), interpolation

    def __call__(self, x, rng=None):
        return resize(x, self.size, self.interpolation)


def affine_matrices(angle=0.0, translate=(0.0, 0.0), scale=1.0, shear=(0.0, 0.0), stretch=1.0):
    """Forward 2x3 affine matrices (N, 2, 3) in pixel coordinates (x right, y down), about the
    image centre: ``p_out = M (p_in - c) + c + t``, returned as ``[M | t]``.

    Each argument is a number or an (N,) array: angle in degrees, counter-clockwise as seen on
    the screen; translate (tx, ty) in pixels; scale (isotropic); shear (sx, sy) in degrees;
    stretch multiplies the width and divides the height (aspect change at constant area).
    ``M = R(angle) Shear(sx, sy) diag(scale * stretch, scale / stretch)``.
    """
    angle = np.radians(np.asarray(angle, dtype=np.float64))
    sx, sy = (np.radians(np.asarray(v, dtype=np.float64)) for v in shear)
    scale, stretch = np.asarray(scale, dtype=np.float64), np.asarray(stretch, dtype=np.float64)
    tx, ty = (np.asarray(v, dtype=np.float64) for v in translate)
    n = max(np.size(v) for v in (angle, sx, sy, scale, stretch, tx, ty))
    full = lambda v: np.broadcast_to(v, (n,)).astype(np.float64)  # noqa: E731
    angle, sx, sy, scale, stretch, tx, ty = map(full, (angle, sx, sy, scale, stretch, tx, ty))
    cos, sin = np.cos(angle), np.sin(angle)
    # y points down, so a counter-clockwise turn on screen sends (1, 0) to (cos, -sin).
    rotation = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)
    shearing = np.stack([np.stack([np.ones(n), np.tan(sx)], -1),
                         np.stack([np.tan(sy), np.ones(n)], -1)], -2)
    scaling = np.zeros((n, 2, 2))
    scaling[:, 0, 0], scaling[:, 1, 1] = scale * stretch, scale / stretch
    linear = rotation @ shearing @ scaling
    return np.concatenate([linear, np.stack([tx, ty], -1)[:, :, None]], axis=2)


def affine(x, matrices, fill=0.0):
    """Warp image n of ``x`` (N, C, H, W) by the forward affine map ``matrices[n]`` (N, 2, 3)
    (see :func:`affine_matrices`), bilinear sampling; pixels that come from outside the image
    get ``fill``.

    Every output pixel ``p`` samples the input at ``M^-1 (p - c - t) + c``, with ``c`` the
    image centre ((W - 1)/2, (H - 1)/2); the four neighbours are weighted by the fractional
    parts, and a neighbour outside the image counts as ``fill``. The host computes the
    inverses (N 2x2 matrices), the batch's own array module (NumPy or CuPy) does the pixels.
    Integer images are rounded back to their dtype.
    """
    _check_batch("affine", x)
    xp = get_array_module(x)
    n, c, h, w = x.shape
    matrices = np.asarray(matrices, dtype=np.float64)
    if matrices.shape != (n, 2, 3):
        raise ValueError(f"affine: matrices must have shape ({n}, 2, 3) for a batch of {n}, "
                         f"got {matrices.shape}")
    inverse = np.linalg.inv(matrices[:, :, :2])                          # (N, 2, 2)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    offset = centre - np.einsum("nij,nj->ni", inverse, centre + matrices[:, :, 2])   # (N, 2)
    inverse, offset = xp.asarray(inverse), xp.asarray(offset)
    gy, gx = xp.meshgrid(xp.arange(h, dtype=np.float64), xp.arange(w, dtype=np.float64),
                         indexing="ij")
    # Source coordinates (N, H, W) of every output pixel.
    xs = inverse[:, 0, 0, None, None] * gx + inverse[:, 0, 1, None, None] * gy + offset[:, 0, None, None]
    ys = inverse[:, 1, 0, None, None] * gx + inverse[:, 1, 1, None, None] * gy + offset[:, 1, None, None]
    x0, y0 = xp.floor(xs), xp.floor(ys)
    wx, wy = xs - x0, ys - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    src = _float(x, xp)
    out = xp.zeros((n, c, h, w), dtype=src.dtype)
    images = xp.arange(n)[:, None, None]
    for dy, weight_y in ((0, 1 - wy), (1, wy)):
        for dx, weight_x in ((0, 1 - wx), (1, wx)):
            rows, cols = y0 + dy, x0 + dx
            inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
            values = src[images, :, xp.clip(rows, 0, h - 1), xp.clip(cols, 0, w - 1)]  # (N, H, W, C)
            values = xp.where(inside[..., None], values, xp.asarray(fill, dtype=src.dtype))
            out += (values * (weight_y * weight_x)[..., None].astype(src.dtype)).transpose(0, 3, 1, 2)
    if not np.issubdtype(x.dtype, np.floating):
        info = np.iinfo(x.dtype)
        out = xp.clip(xp.rint(out), info.min, info.max).astype(x.dtype)
    return out


def _symmetric_range(name, value, minimum=None):
    if isinstance(value, (int, float, np.integer, np.floating)):
        if value < 0:
            raise ValueError(f"{name}: a single number must be >= 0, got {value}")
        return (-float(value), float(value))
    low, high = (float(v) for v in value)
    if low > high or (minimum is not None and low < minimum):
        raise ValueError(f"{name}: expected (low, high) with low <= high"
                         + (f" and low >= {minimum}" if minimum is not None else "") + f", got {value}")
    return (low, high)


class RandomAffine(Transform):
    """A random affine warp per image: rotation, translation, scale, stretch and shear, bilinear.

    degrees: d (angle ~ U(-d, d)) or (low, high); translate: (a, b), fractions of the width and
    height (tx ~ U(-a W, a W), ty ~ U(-b H, b H)); scale: (low, high), isotropic factor ~ U;
    stretch: (low, high), width times s and height divided by s, log s ~ U(log low, log high);
    shear: s (x-shear ~ U(-s, s) degrees), (low, high) for x, or (xlow, xhigh, ylow, yhigh);
    fill: value of pixels that come from outside. Parameters as torchvision's ``RandomAffine``
    (plus ``stretch``), applied to a whole batch at once (see :func:`affine`).
    x (N, C, H, W) -> (N, C, H, W), on NumPy or CuPy arrays; the draws are on the host, so a seed
    gives the same warps on either device.
    """

    random = True

    def __init__(self, degrees=0.0, translate=None, scale=None, shear=None, stretch=None, fill=0.0,
                 seed=None):
        super().__init__(seed)
        self.degrees = _symmetric_range("RandomAffine degrees", degrees)
        if translate is not None:
            translate = tuple(float(t) for t in translate)
            if len(translate) != 2 or not all(0 <= t <= 1 for t in translate):
                raise ValueError(f"RandomAffine: translate must be two fractions in [0, 1], got {translate}")
        self.translate = translate
        self.scale = None if scale is None else _symmetric_range("RandomAffine scale", scale, 1e-12)
        self.stretch = None if stretch is None else _symmetric_range("RandomAffine stretch", stretch, 1e-12)
        if shear is None:
            self.shear = None
        elif isinstance(shear, (int, float, np.integer, np.floating)) or len(shear) == 2:
            self.shear = _symmetric_range("RandomAffine shear", shear) + (0.0, 0.0)
        elif len(shear) == 4:
            self.shear = (_symmetric_range("RandomAffine shear", shear[:2])
                          + _symmetric_range("RandomAffine shear", shear[2:]))
        else:
            raise ValueError(f"RandomAffine: shear must be a number, a pair or 4 numbers, got {shear}")
        self.fill = fill

    def sample_matrices(self, n, h, w, rng):
        """The (N, 2, 3) forward matrices of one batch (drawn on the host)."""
        angle = rng.uniform(*self.degrees, n)
        tx = ty = np.zeros(n)
        if self.translate is not None:
            tx = rng.uniform(-self.translate[0] * w, self.translate[0] * w, n)
            ty = rng.uniform(-self.translate[1] * h, self.translate[1] * h, n)
        scale = rng.uniform(*self.scale, n) if self.scale is not None else np.ones(n)
        stretch = (np.exp(rng.uniform(np.log(self.stretch[0]), np.log(self.stretch[1]), n))
                   if self.stretch is not None else np.ones(n))
        sx = sy = np.zeros(n)
        if self.shear is not None:
            sx, sy = rng.uniform(*self.shear[:2], n), rng.uniform(*self.shear[2:], n)
        return affine_matrices(angle, (tx, ty), scale, (sx, sy), stretch)

    def __call__(self, x, rng=None):
        _check_batch(type(self).__name__, x)
        n, _, h, w = x.shape
        return affine(x, self.sample_matrices(n, h, w, self._generator(rng)), self.fill)


class RandomRotation(RandomAffine):
    """Rotate each image by an angle ~ U(-degrees, degrees) (or U(low, high)) about its centre,
    bilinear, ``fill`` outside. x (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, degrees, fill=0.0, seed=None):
        super().__init__(degrees, fill=fill, seed=seed)


class RandomResizedCrop(Transform):
    """Crop a random box (area fraction ~ U(scale), log aspect ratio ~ U(log ratio)) and resize to ``size``.

    Boxes are drawn for all images at once: 10 candidates per image, the first one that fits is used,
    otherwise a central box with the aspect ratio clamped into ``ratio``. x (N, C, H, W) -> (N, C, size_h, size_w).
    """

    random = True

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), interpolation="bilinear",
                 seed=None):
        super().__init__(seed)
        self.size = pair("RandomResizedCrop", "size", size)
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"RandomResizedCrop: need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], "
                             f"got scale={scale}, ratio={ratio}")
        self.scale, self.ratio, self.interpolation = tuple(scale), tuple(ratio), interpolation

    def sample_boxes(self, n, h, w, rng, tries=10):
        """(top, left, height, width), each int64 (n,)."""
        area = rng.uniform(self.scale[0], self.scale[1], (n, tries)) * (h * w)
        aspect = np.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), (n, tries)))
        bw = np.rint(np.sqrt(area * aspect)).astype(np.int64)
        bh = np.rint(np.sqrt(area / aspect)).astype(np.int64)
        fits = (bw > 0) & (bh > 0) & (bw <= w) & (bh <= h)
        pick = np.argmax(fits, axis=1)
        rows = np.arange(n)
        bw, bh = bw[rows, pick], bh[rows, pick]
        found = fits[rows, pick]
        # fallback: whole image, aspect ratio clamped into the allowed range
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            fw, fh = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            fw, fh = int(round(h * self.ratio[1])), h
        else:
            fw, fh = w, h
        bw = np.where(found, bw, fw)
        bh = np.where(found, bh, fh)
        u, v = rng.random(n), rng.random(n)
        top = np.where(found, np.floor(u * (h - bh + 1)).astype(np.int64), (h - bh) // 2)
        left = np.where(found, np.floor(v * (w - bw + 1)).astype(np.int64), (w - bw) // 2)
        return top, left, bh, bw

    def __call__(self, x, rng=None):
        _check_batch("RandomResizedCrop", x)
        n, _, h, w = x.shape
        top, left, bh, bw = self.sample_boxes(n, h, w, self._generator(rng))
        return _resize_boxes(x, top, left, bh, bw, self.size, self.interpolation)


# ---------------------------------------------------------------- photometric

class ColorJitter(Transform):
    """Random brightness and contrast per image.

    brightness b: x * f, f ~ U(max(0, 1-b), 1+b). contrast c: (x - m) * g + m, g ~ U(max(0, 1-c), 1+c),
    m the image's mean grey level (ITU-R 601 luma for 3 channels). Applied before normalisation; results
    are clipped to [0, 1] for float input and [0, 255] (and cast back) for uint8 input unless ``clip=False``.
    """

    random = True

    def __init__(self, brightness=0.0, contrast=0.0, clip=True, seed=None):
        super().__init__(seed)
        if brightness < 0 or contrast < 0:
            raise ValueError(f"ColorJitter: brightness and contrast must be >= 0, got {brightness}, {contrast}")
        self.brightness, self.contrast, self.clip = brightness, contrast, clip

    def __call__(self, x, rng=None):
        _check_batch("ColorJitter", x)
        rng = self._generator(rng)
        xp = get_array_module(x)
        n, c = x.shape[:2]
        out = _float(x, xp)
        b_fac = rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness, n)
        c_fac = rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast, n)
        if self.brightness:
            out = out * xp.asarray(b_fac, dtype=out.dtype)[:, None, None, None]
        if self.contrast:
            if c == 3:
                luma = xp.asarray([0.299, 0.587, 0.114], dtype=out.dtype).reshape(1, 3, 1, 1)
                grey = (out * luma).sum(axis=1, keepdims=True).mean(axis=(2, 3), keepdims=True)
            else:
                grey = out.mean(axis=(1, 2, 3), keepdims=True)
            g = xp.asarray(c_fac, dtype=out.dtype)[:, None, None, None]
            out = (out - grey) * g + grey
        integer = not np.issubdtype(x.dtype, np.floating)
        if integer:  # always clipped: wrapping around in the integer cast would be nonsense
            info = np.iinfo(x.dtype)
            out = xp.clip(out, 0 if self.clip else info.min, 255 if self.clip else info.max)
            return xp.rint(out).astype(x.dtype)
        if self.clip:
            out = xp.clip(out, 0, 1)
        return out


class PCAColorAugmentation(Transform):
    """AlexNet's colour augmentation: add sum_k alpha_k * lambda_k * p_k to every pixel of an image.

    (lambda_k, p_k) are eigenvalues/eigenvectors of the training set's 3x3 RGB covariance (see
    ``compute_pca_basis``; use ``from_data``), alpha_k ~ N(0, std) drawn per image. The basis must be computed
    at the scale of the input (default 1/255, i.e. for float images in [0, 1]). x: (N, 3, H, W) float.
    """

    random = True

    def __init__(self, eigenvalues, eigenvectors, std=0.1, seed=None):
        super().__init__(seed)
        self.eigenvalues = np.asarray(eigenvalues, dtype=np.float64).reshape(3)
        self.eigenvectors = np.asarray(eigenvectors, dtype=np.float64).reshape(3, 3)
        self.std = std

    @classmethod
    def from_data(cls, data, scale=1.0 / 255.0, std=0.1, seed=None):
        """Build from a training set ``data`` (N, 3, H, W)."""
        values, vectors = compute_pca_basis(data, scale)
        return cls(values, vectors, std=std, seed=seed)

    def __call__(self, x, rng=None):
        _check_batch("PCAColorAugmentation", x)
        if x.shape[1] != 3:
            raise ValueError(f"PCAColorAugmentation: needs 3 channels, got batch {x.shape}")
        xp = get_array_module(x)
        alpha = self._generator(rng).normal(0.0, self.std, (x.shape[0], 3))
        shift = (alpha * self.eigenvalues) @ self.eigenvectors.T  # (N, 3): sum_k alpha_k lambda_k p_k
        x = _float(x, xp)
        return x + xp.asarray(shift, dtype=x.dtype)[:, :, None, None]


class Cutout(Transform):
    """Set a (size x size) square to ``fill`` in each image (with probability ``p``).

    The square's centre is uniform over the image and the square is clipped at the borders (DeVries & Taylor).
    """

    random = True

    def __init__(self, size, p=1.0, fill=0, seed=None):
        super().__init__(seed)
        if size < 0 or not 0 <= p <= 1:
            raise ValueError(f"Cutout: need size >= 0 and 0 <= p <= 1, got size={size}, p={p}")
        self.size, self.p, self.fill = int(size), p, fill

    def __call__(self, x, rng=None):
        _check_batch("Cutout", x)
        rng = self._generator(rng)
        xp = get_array_module(x)
        n, _, h, w = x.shape
        cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
        apply = rng.random(n) < self.p
        y0 = xp.asarray(np.where(apply, cy - self.size // 2, 0))[:, None]
        x0 = xp.asarray(np.where(apply, cx - self.size // 2, 0))[:, None]
        size = xp.asarray(np.where(apply, self.size, 0))[:, None]
        rows = xp.arange(h)[None, :]
        cols = xp.arange(w)[None, :]
        in_rows = (rows >= y0) & (rows < y0 + size)  # (N, H)
        in_cols = (cols >= x0) & (cols < x0 + size)  # (N, W)
        mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        return xp.where(mask, xp.asarray(self.fill, dtype=x.dtype), x)


# ---------------------------------------------------------------- test-time augmentation

def _unwrap(x):
    """(raw array, function wrapping an array back into the input's kind)."""
    data = getattr(x, "array", None)
    if data is not None and hasattr(x, "requires_grad"):
        tensor_type, device = type(x), getattr(x, "device", "cpu")
        return data, (lambda a: tensor_type(a, device=device))
    return x, (lambda a: a)


def five_crop(x, size):
    """Four corner crops and the centre crop: (N, C, H, W) -> (5, N, C, size_h, size_w).

    Order: top-left, top-right, bottom-left, bottom-right, centre.
    """
    data, wrap = _unwrap(x)
    _check_batch("five_crop", data)
    th, tw = pair("five_crop", "size", size)
    h, w = data.shape[2:]
    if th > h or tw > w:
        raise ValueError(f"five_crop: size {(th, tw)} larger than image {(h, w)}")
    xp = get_array_module(data)
    ct, cl = (h - th) // 2, (w - tw) // 2
    corners = [(0, 0), (0, w - tw), (h - th, 0), (h - th, w - tw), (ct, cl)]
    return wrap(xp.stack([data[:, :, t:t + th, l:l + tw] for t, l in corners]))


def ten_crop(x, size):
    """``five_crop`` plus the horizontal mirror of each of the five: (N, C, H, W) -> (10, N, C, size_h, size_w)."""
    data, wrap = _unwrap(x)
    crops = _unwrap(five_crop(data, size))[0]
    xp = get_array_module(crops)
    return wrap(xp.concatenate([crops, crops[..., ::-1]]))


def flip_tta(model_fn, x):
    """Average of ``model_fn(x)`` and ``model_fn(hflip(x))``; x (N, C, H, W) array or Tensor."""
    return (model_fn(x) + model_fn(hflip(x))) * 0.5


def ten_crop_tta(model_fn, x, size):
    """Average of ``model_fn`` over the ten crops of ``x`` (see ``ten_crop``); each call sees (N, C, size)."""
    data, wrap = _unwrap(x)
    crops = ten_crop(data, size)
    total = None
    for crop in crops:
        out = model_fn(wrap(get_array_module(crop).ascontiguousarray(crop)))
        total = out if total is None else total + out
    return total * (1.0 / len(crops))

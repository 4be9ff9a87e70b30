import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_cnn.data import transforms as T


def _batch(n=4, c=3, h=8, w=8, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).random((n, c, h, w)).astype(dtype)


def test_to_float_and_normalisations():
    x = np.array([[[[0, 255], [51, 102]]]], dtype=np.uint8)
    out = T.ToFloat()(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [[0, 1], [0.2, 0.4]], rtol=1e-6)
    data = np.random.default_rng(1).integers(0, 256, (50, 3, 4, 5), dtype=np.uint8)
    scaled = data / 255.0
    mean, std = T.compute_channel_stats(data)
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(std, scaled.std(axis=(0, 2, 3)))
    normed = T.Normalize(mean, std)(scaled)
    np.testing.assert_allclose(normed.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(normed.std(axis=(0, 2, 3)), 1, atol=1e-12)
    mean_image = T.compute_mean_image(data, chunk=7)
    np.testing.assert_allclose(mean_image, scaled.mean(axis=0))
    np.testing.assert_allclose(T.SubtractMeanImage(mean_image)(scaled).mean(axis=0), 0, atol=1e-12)
    centred = T.SubtractChannelMean(mean)(scaled)
    np.testing.assert_allclose(centred.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(centred.std(axis=(0, 2, 3)), std)  # only shifted


def test_transform_errors_name_the_transform():
    with pytest.raises(ValueError, match=r"RandomCrop: expected a batch \(N, C, H, W\), got shape \(3, 8, 8\)"):
        T.RandomCrop(4)(np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="Normalize: batch has 1 channels"):
        T.Normalize([0, 0, 0], [1, 1, 1])(np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="std > 0"):
        T.Normalize([0], [0])
    with pytest.raises(ValueError, match="larger than padded image"):
        T.RandomCrop(10, padding=1)(np.zeros((1, 1, 7, 7)))


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 6), padding=st.integers(0, 3), seed=st.integers(0, 2**16),
       mode=st.sampled_from(["constant", "reflect", "edge"]))
def test_random_crop_is_a_window_of_the_padded_image(size, padding, seed, mode):
    x = _batch(n=5, c=2, h=6, w=6, seed=seed)
    out = T.RandomCrop(size, padding=padding, padding_mode=mode, fill=-1.0)(x, rng=np.random.default_rng(seed))
    assert out.shape == (5, 2, size, size)
    padded = np.pad(x, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2), mode=mode,
                    **({"constant_values": -1.0} if mode == "constant" else {}))
    span = 6 + 2 * padding - size + 1
    for i in range(5):
        matches = [(t, l) for t in range(span) for l in range(span)
                   if np.array_equal(padded[i, :, t:t + size, l:l + size], out[i])]
        assert matches, f"image {i} is not a window of the padded input"


def test_random_crop_covers_all_offsets_uniformly_and_shifts_pixels():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4) + 1
    out = T.RandomCrop(4, padding=1)(np.repeat(x, 4500, axis=0), rng=np.random.default_rng(0))
    padded = np.pad(x[0, 0], 1)
    windows = np.stack([padded[t:t + 4, l:l + 4] for t in range(3) for l in range(3)])  # (9, 4, 4)
    which = np.argmax(np.all(out[:, 0, None] == windows[None], axis=(2, 3)), axis=1)
    assert np.all(np.all(out[:, 0] == windows[which], axis=(1, 2)))
    freq = np.bincount(which, minlength=9)
    assert freq.min() > 500 * 0.8 and freq.max() < 500 * 1.2  # uniform over the 9 offsets
    # offset (0, 0): content moves down-right by one pixel, the freed row/column is the fill value
    shifted = out[which == 0][0, 0]
    np.testing.assert_array_equal(shifted[1:, 1:], x[0, 0, :3, :3])
    assert (shifted[0] == 0).all() and (shifted[:, 0] == 0).all()


def test_crop_at_window_path_equals_fancy_indexing():
    x = _batch(n=6, c=3, h=9, w=7, seed=3)
    rng = np.random.default_rng(0)
    top, left = rng.integers(0, 5, 6), rng.integers(0, 3, 6)
    np.testing.assert_array_equal(T.crop_at(x, top, left, 5, 5), T._crop_fancy(x, top, left, 5, 5))
    np.testing.assert_array_equal(T.crop_at(x, top, left, 5, 5)[2], x[2, :, top[2]:top[2] + 5, left[2]:left[2] + 5])


def test_uint8_stays_uint8_through_geometry():
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)
    for t in (T.RandomCrop(6, padding=2), T.RandomHorizontalFlip(), T.RandomResizedCrop(5), T.Cutout(3),
              T.CenterCrop(4), T.ColorJitter(0.3, 0.3)):
        assert t(x).dtype == np.uint8, type(t).__name__


def test_horizontal_flip_probability_and_content():
    x = _batch(n=2000, c=1, h=1, w=5)
    assert np.array_equal(T.RandomHorizontalFlip(0.0)(x), x)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(1.0)(x), x[..., ::-1])
    out = T.RandomHorizontalFlip(0.5, seed=1)(x)
    flipped = np.all(out == x[..., ::-1], axis=(1, 2, 3))
    kept = np.all(out == x, axis=(1, 2, 3))
    assert np.all(flipped | kept)
    assert 2000 * 0.5 - 4 * np.sqrt(500) < flipped.sum() < 2000 * 0.5 + 4 * np.sqrt(500)
    out30 = T.RandomHorizontalFlip(0.3, seed=2)(x)
    assert abs(np.all(out30 == x[..., ::-1], axis=(1, 2, 3)).mean() - 0.3) < 0.05


def test_reproducible_with_seed_and_rng():
    x = _batch(n=16, seed=4)
    aug = lambda seed: T.Compose([T.RandomCrop(6, padding=1), T.RandomHorizontalFlip(), T.Cutout(2)], seed=seed)
    np.testing.assert_array_equal(aug(0)(x), aug(0)(x))
    assert not np.array_equal(aug(0)(x), aug(1)(x))
    np.testing.assert_array_equal(aug(5)(x, rng=np.random.default_rng(9)), aug(6)(x, rng=np.random.default_rng(9)))


def _bilinear_reference(img, top, left, h, w, oh, ow):
    out = np.zeros((img.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            y = min(max(top + (i + 0.5) * h / oh - 0.5, top), top + h - 1)
            x = min(max(left + (j + 0.5) * w / ow - 0.5, left), left + w - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, top + h - 1), min(x0 + 1, left + w - 1)
            dy, dx = y - y0, x - x0
            out[:, i, j] = ((img[:, y0, x0] * (1 - dx) + img[:, y0, x1] * dx) * (1 - dy)
                            + (img[:, y1, x0] * (1 - dx) + img[:, y1, x1] * dx) * dy)
    return out


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), out=st.tuples(st.integers(1, 7), st.integers(1, 7)))
def test_random_resized_crop_matches_scalar_bilinear_reference(seed, out):
    x = _batch(n=3, c=2, h=9, w=7, seed=seed)
    t = T.RandomResizedCrop(out, scale=(0.1, 1.0))
    top, left, bh, bw = t.sample_boxes(3, 9, 7, np.random.default_rng(seed))
    got = t(x, rng=np.random.default_rng(seed))
    assert got.shape == (3, 2) + out
    for i in range(3):
        assert 0 <= top[i] and top[i] + bh[i] <= 9 and 0 <= left[i] and left[i] + bw[i] <= 7
        np.testing.assert_allclose(got[i], _bilinear_reference(x[i], top[i], left[i], bh[i], bw[i], *out),
                                   atol=1e-12)


def test_random_resized_crop_box_statistics_and_identity():
    t = T.RandomResizedCrop(32, scale=(0.25, 0.5), ratio=(0.5, 2.0))
    top, left, bh, bw = t.sample_boxes(5000, 64, 64, np.random.default_rng(0))
    area = bh * bw / 64 ** 2
    assert area.min() > 0.2 and area.max() < 0.56
    assert (bw / bh).min() > 0.45 and (bw / bh).max() < 2.2
    x = _batch(n=2, h=6, w=6)
    np.testing.assert_allclose(T.RandomResizedCrop(6, scale=(1, 1), ratio=(1, 1))(x), x, atol=1e-12)


def test_resize_nearest_and_bilinear():
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(T.resize(x, 4, "nearest")[0, 0],
                                  [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    up = T.resize(x, 4)[0, 0]
    np.testing.assert_allclose(up[0], [0, 0.25, 0.75, 1])
    np.testing.assert_allclose(T.resize(np.full((2, 3, 5, 5), 7.0), (3, 8)), 7.0)
    np.testing.assert_allclose(T.Resize(2)(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_color_jitter_brightness_and_contrast():
    x = _batch(n=50, seed=2) * 0.5 + 0.25
    bright = T.ColorJitter(brightness=0.4, clip=False)(x, rng=np.random.default_rng(0))
    ratio = bright / x
    per_image = ratio.reshape(50, -1)
    np.testing.assert_allclose(per_image, per_image[:, :1].repeat(per_image.shape[1], 1), rtol=1e-12)
    assert per_image.min() >= 0.6 - 1e-12 and per_image.max() <= 1.4 + 1e-12 and per_image.std() > 0.05
    contrast = T.ColorJitter(contrast=0.5, clip=False)(x, rng=np.random.default_rng(1))
    luma = np.array([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    grey_in = (x * luma).sum(1).mean(axis=(1, 2))
    grey_out = (contrast * luma).sum(1).mean(axis=(1, 2))
    np.testing.assert_allclose(grey_out, grey_in, atol=1e-12)  # the mean grey level is the pivot
    dev_ratio = (contrast - grey_in[:, None, None, None]) / (x - grey_in[:, None, None, None])
    assert np.ptp(dev_ratio.reshape(50, -1), axis=1).max() < 1e-8
    clipped = T.ColorJitter(brightness=5.0)(x, rng=np.random.default_rng(3))
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_pca_basis_and_augmentation_move_colours_along_eigenvectors():
    rng = np.random.default_rng(0)
    direction = np.array([1.0, 2.0, 2.0]) / 3
    # pixels vary (mostly) along one colour direction
    t = rng.normal(size=(200, 1, 4, 4))
    data = 0.5 + 0.1 * t * direction[None, :, None, None] + 0.001 * rng.normal(size=(200, 3, 4, 4))
    values, vectors = T.compute_pca_basis(data, scale=1.0)
    assert values[0] > 100 * values[1]
    assert abs(abs(vectors[:, 0] @ direction) - 1) < 1e-3
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=1e-12)
    aug = T.PCAColorAugmentation(values, vectors, std=0.1)
    x = data[:100]
    out = aug(x, rng=np.random.default_rng(1))
    shift = out - x
    assert np.ptp(shift, axis=(2, 3)).max() < 1e-12  # one colour offset per image
    offset = shift[:, :, 0, 0]                           # (N, 3)
    along = offset @ vectors                             # coordinates in the eigenbasis
    alphas = along / values
    assert abs(alphas[:, 0].std() - 0.1) < 0.03
    cos = np.abs(offset @ direction) / np.linalg.norm(offset, axis=1)
    assert cos.min() > 0.99  # dominated by the principal colour direction
    from_data = T.PCAColorAugmentation.from_data((data * 255).clip(0, 255).astype(np.uint8))
    assert abs(abs(from_data.eigenvectors[:, 0] @ direction) - 1) < 1e-2


def test_cutout_zeroes_a_clipped_square():
    x = np.ones((500, 1, 10, 10))
    out = T.Cutout(4)(x, rng=np.random.default_rng(0))
    zeros = (out == 0).sum(axis=(1, 2, 3))
    assert zeros.max() == 16 and zeros.min() >= 4  # clipped at corners to at least 2x2
    for img in out[:50, 0]:
        rows, cols = np.nonzero(img == 0)
        assert rows.max() - rows.min() + 1 <= 4 and cols.max() - cols.min() + 1 <= 4
        assert (img[rows.min():rows.max() + 1, cols.min():cols.max() + 1] == 0).all()  # a solid rectangle
    np.testing.assert_array_equal(T.Cutout(4, p=0.0)(x), x)


def test_center_five_and_ten_crop():
    x = np.arange(2 * 3 * 6 * 6, dtype=np.float64).reshape(2, 3, 6, 6)
    np.testing.assert_array_equal(T.CenterCrop(2)(x), x[:, :, 2:4, 2:4])
    crops = T.ten_crop(x, 4)
    assert crops.shape == (10, 2, 3, 4, 4)
    np.testing.assert_array_equal(crops[0], x[:, :, :4, :4])
    np.testing.assert_array_equal(crops[1], x[:, :, :4, 2:])
    np.testing.assert_array_equal(crops[2], x[:, :, 2:, :4])
    np.testing.assert_array_equal(crops[3], x[:, :, 2:, 2:])
    np.testing.assert_array_equal(crops[4], x[:, :, 1:5, 1:5])
    np.testing.assert_array_equal(crops[5:], crops[:5][..., ::-1])


def test_flip_and_ten_crop_tta_average_model_outputs():
    x = _batch(n=3, c=2, h=6, w=6)
    weights = np.random.default_rng(1).random((2 * 6 * 6, 4))
    model = lambda a: a.reshape(a.shape[0], -1) @ weights[: a[0].size]
    expected = (model(x) + model(x[..., ::-1])) / 2
    np.testing.assert_allclose(T.flip_tta(model, x), expected)
    got = T.ten_crop_tta(model, x, 4)
    np.testing.assert_allclose(got, np.mean([model(c) for c in T.ten_crop(x, 4)], axis=0))


# ---------------------------------------------------------------- affine warps and ZCA whitening

def _images(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_affine_identity_and_quarter_turn():
    x = _images((2, 3, 6, 6))
    np.testing.assert_allclose(T.affine(x, T.affine_matrices(np.zeros(2))), x, atol=1e-6)
    # A counter-clockwise quarter turn about the centre of a square image is np.rot90.
    np.testing.assert_allclose(T.affine(x, T.affine_matrices(np.full(2, 90.0))),
                               np.rot90(x, 1, axes=(2, 3)), atol=1e-5)
    shifted = T.affine(x, T.affine_matrices(np.zeros(2), (np.full(2, 2.0), np.zeros(2))), fill=0.5)
    np.testing.assert_allclose(shifted[..., 2:], x[..., :-2], atol=1e-6)
    assert np.all(shifted[..., :2] == 0.5)


def test_affine_matches_torch_grid_sample():
    torch = pytest.importorskip("torch")
    n, c, h, w = 5, 2, 7, 9
    x = _images((n, c, h, w), 1).astype(np.float64)
    matrices = T.RandomAffine(30, translate=(0.2, 0.1), scale=(0.7, 1.3), shear=(-10, 10, -5, 5),
                              stretch=(0.8, 1.25), seed=3).sample_matrices(n, h, w, np.random.default_rng(4))
    ours = T.affine(x, matrices)
    # The same map in grid_sample's coordinates (align_corners=True: -1 and 1 are the corner
    # pixel centres): theta = [D^-1 M^-1 D | -D^-1 M^-1 t] with D = diag((W-1)/2, (H-1)/2).
    half = np.diag([(w - 1) / 2, (h - 1) / 2])
    inverse = np.linalg.inv(matrices[:, :, :2])
    linear = np.linalg.inv(half) @ inverse @ half
    shift = -np.einsum("ij,njk,nk->ni", np.linalg.inv(half), inverse, matrices[:, :, 2])
    theta = torch.tensor(np.concatenate([linear, shift[:, :, None]], axis=2))
    grid = torch.nn.functional.affine_grid(theta, (n, c, h, w), align_corners=True)
    theirs = torch.nn.functional.grid_sample(torch.tensor(x), grid, mode="bilinear",
                                             padding_mode="zeros", align_corners=True)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-10)


def test_random_affine_and_rotation_are_seeded_and_keep_dtype():
    x = (_images((4, 1, 10, 10)) * 255).astype(np.uint8)
    a = T.RandomAffine(20, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5, seed=7)
    b = T.RandomAffine(20, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5, seed=7)
    out = a(x)
    assert out.dtype == np.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(out, b(x))
    assert not np.array_equal(a(x), out)               # the generator moves on
    rng_out = T.RandomRotation(45)(x, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(rng_out, T.RandomRotation(45)(x, rng=np.random.default_rng(1)))
    angles = T.RandomRotation((10, 20)).sample_matrices(1000, 8, 8, np.random.default_rng(0))
    turned = np.degrees(np.arctan2(-angles[:, 1, 0], angles[:, 0, 0]))
    assert 10 <= turned.min() and turned.max() <= 20


def test_random_affine_same_on_every_device(device):
    from tinygrad_cnn import backend
    x = _images((3, 2, 8, 8))
    warp = T.RandomAffine(25, translate=(0.1, 0.2), scale=(0.8, 1.2), shear=8)
    expected = warp(x, rng=np.random.default_rng(5))
    on_device = warp(backend.to_device(x, device), rng=np.random.default_rng(5))
    np.testing.assert_allclose(backend.to_device(on_device, "cpu"), expected, atol=1e-6)


def test_affine_arguments_are_checked():
    with pytest.raises(ValueError, match="affine: matrices must have shape"):
        T.affine(_images((2, 1, 4, 4)), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="RandomAffine: translate"):
        T.RandomAffine(0, translate=(2, 0))
    with pytest.raises(ValueError, match="RandomAffine degrees"):
        T.RandomAffine(-3)


def test_zca_whitens_and_is_the_symmetric_whitening():
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((12, 12))
    data = (rng.standard_normal((4000, 12)) @ mixing).reshape(4000, 3, 2, 2)
    mean, matrix, values, vectors = T.compute_zca(data, eps=0.0, scale=1.0)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-10)
    assert np.all(np.diff(values) <= 0)
    white = T.ZCAWhitening(mean, matrix, scale=1.0)(data)
    assert white.shape == data.shape and white.dtype == np.float64
    cov = np.cov(white.reshape(4000, -1).astype(np.float64), rowvar=False, bias=True)
    np.testing.assert_allclose(cov, np.eye(12), atol=2e-3)
    # Decorrelation alone (the PCA basis): diagonal covariance equal to the eigenvalues.
    rotated = (data.reshape(4000, -1) - mean) @ vectors
    np.testing.assert_allclose(np.cov(rotated, rowvar=False, bias=True), np.diag(values),
                               atol=1e-6 * values[0])
    # eps caps the gain of the weak directions at 1/sqrt(eps).
    _, damped, _, _ = T.compute_zca(data, eps=1.0, scale=1.0)
    assert np.linalg.eigvalsh(damped).max() <= 1.0 + 1e-9


def test_zca_transform_from_data_and_shape_checks(device):
    from tinygrad_cnn import backend
    data = (_images((50, 1, 3, 3)) * 255).astype(np.uint8)
    zca = T.ZCAWhitening.from_data(data, eps=0.01)
    expected = zca(data)
    np.testing.assert_allclose(backend.to_device(zca(backend.to_device(data, device)), "cpu"),
                               expected, atol=1e-5)
    with pytest.raises(ValueError, match="ZCAWhitening: images of shape"):
        zca(_images((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="compute_zca: needs at least 2"):
        T.compute_zca(data[:1])

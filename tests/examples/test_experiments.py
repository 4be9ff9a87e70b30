"""The backprop experiments in examples/ in their --smoke mode, and their shared helpers.

Each smoke run trains for a few batches on a handful of real images (skipped when the local
MNIST / CIFAR-10 copies are absent) with the NumPy backend, so no kernel compilation is timed.
"""
import json
import pathlib
import struct
import sys
import zlib

import numpy as np
import pytest

from tinygrad_cnn import backend
from tinygrad_cnn.data import find_shared_data
from tinygrad_cnn.testing import load_script

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def _load(name):
    return load_script(EXAMPLES / f"{name}.py")


@pytest.fixture(scope="module")
def utils():
    return _load("_experiment_utils")


def _read_png(path):
    """Decode the PNGs our writer produces: (H, W) grey or (H, W, 3) RGB uint8."""
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        length, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        crc, = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour in (0, 2) and b"IEND" in chunks
    channels = 1 if colour == 0 else 3
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * channels)
    assert np.all(raw[:, 0] == 0)                        # filter type 0 on every scanline
    pixels = raw[:, 1:].reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


# ----------------------------------------------------------------------------- helpers

@pytest.mark.parametrize("shape", [(3, 5), (4, 2, 3)])
def test_png_writer_round_trip(utils, tmp_path, shape):
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    path = utils.write_png(tmp_path / "x.png", image)
    np.testing.assert_array_equal(_read_png(path), image)


def test_png_writer_rejects_bad_images(utils, tmp_path):
    with pytest.raises(ValueError, match="write_png: image must be uint8"):
        utils.write_png(tmp_path / "x.png", np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        utils.write_png(tmp_path / "x.png", np.zeros((3, 3, 4), np.uint8))


def test_image_grid_and_scaling(utils):
    images = np.arange(2 * 1 * 2 * 2, dtype=np.uint8).reshape(2, 1, 2, 2)
    grid = utils.image_grid(images, ncols=2, zoom=2, pad=1, background=9)
    assert grid.shape == (1 + 4 + 1, 1 + 2 * (4 + 1))
    np.testing.assert_array_equal(grid[1:5, 1:5], images[0, 0].repeat(2, 0).repeat(2, 1))
    np.testing.assert_array_equal(grid[1:5, 6:10], images[1, 0].repeat(2, 0).repeat(2, 1))
    assert grid[0, 0] == 9 and grid[5, 3] == 9
    weights = np.array([[[[-2.0, 0.0], [1.0, 2.0]]]])
    np.testing.assert_array_equal(utils.to_uint8(weights, symmetric=True)[0, 0], [[0, 128], [191, 255]])
    np.testing.assert_array_equal(utils.to_uint8(weights)[0, 0], [[0, 127], [191, 255]])   # 127.5 - eps
    rows = utils.stack_rows([np.zeros((2, 3), np.uint8), np.zeros((1, 5, 3), np.uint8)], gap=1)
    assert rows.shape == (2 + 1 + 1, 5, 3)


def test_results_table(utils, tmp_path):
    record = utils.write_results(tmp_path, "t", ["a", "b"], [["x", 0.5], ["yy", 3]], {"k": 1}, 2.0, notes=["n"])
    text = (tmp_path / "results.md").read_text()
    assert "| a  | b   |" in text and "| yy | 3   |" in text and "note: n" in text
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == [["x", 0.5], ["yy", 3]]
    assert record["config"] == {"k": 1}


def test_small_cnn_shapes(utils):
    from tinygrad_cnn import Tensor
    for activation, channels, size in (("relu", 3, 32), ("tanh", 1, 28)):
        model = utils.small_cnn(activation, 4, in_channels=channels, image_size=size)
        with backend.cpu_backend("numpy"):
            assert model(Tensor(np.zeros((2, channels, size, size), np.float32))).shape == (2, 10)


# ----------------------------------------------------------------------------- smoke runs

def _data(name):
    found = find_shared_data(name)
    if found is None:
        pytest.skip(f"{name} is not present locally (shared/data/{name})")
    return found


def _smoke(name, data, tmp_path, *extra):
    module = _load(name)
    out = tmp_path / name
    with backend.cpu_backend("numpy"):
        record = module.main(["--smoke", "--data-dir", str(_data(data)), "--out", str(out), *extra])
    assert (out / "results.md").is_file()
    assert json.loads((out / "results.json").read_text())["rows"] == record["rows"]
    return out, record


def _plots_exist(out, names, capsys):
    err = capsys.readouterr().err
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "`plot` extra" in err
        assert not any((out / n).exists() for n in names)
    else:
        for n in names:   # matplotlib's own PNGs (RGBA, filtered scanlines): the signature suffices
            assert (out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", n


def test_plain_vs_residual_smoke(tmp_path, capsys):
    out, record = _smoke("plain_vs_residual", "cifar-10-partial-bin", tmp_path)
    assert [r[0] for r in record["rows"]] == ["plain-8", "plain-14", "ResNet-8", "ResNet-14"]
    profiles = record["gradient_profiles"]
    # depth 6n + 2 counts the weight layers: conv1, 6n convs in the blocks, fc (option A adds none)
    assert len(profiles["plain-8"]) == 8 and len(profiles["ResNet-14"]) == 14
    assert all(np.all(np.isfinite(p)) and min(p) > 0 for p in profiles.values())
    assert len((out / "grad_flow_plain-8.jsonl").read_text().splitlines()) == 2     # 32 images / batch 16
    _plots_exist(out, ["training_error.png", "gradient_norms.png"], capsys)


def test_relu_vs_tanh_smoke(tmp_path, capsys):
    out, record = _smoke("relu_vs_tanh", "cifar-10-partial-bin", tmp_path, "--full", "--target", "0.99")
    assert [r[0] for r in record["rows"]] == ["relu", "tanh"]
    assert set(record["curves"]) == {"relu", "tanh"} and all(len(c) == 2 for c in record["curves"].values())
    assert record["reached"] == {"relu": 1, "tanh": 1}          # any net is below 99% error
    _plots_exist(out, ["relu_vs_tanh.png"], capsys)


def test_dropout_mnist_smoke(tmp_path, capsys):
    out, record = _smoke("dropout_mnist", "mnist", tmp_path)
    assert [r[0] for r in record["rows"]] == ["no dropout", "dropout 0.2/0.5"]
    assert all(len(c) == 2 for c in record["curves"].values())
    _plots_exist(out, ["dropout_curves.png"], capsys)


def test_dropout_network_drops_only_in_training():
    module = _load("dropout_mnist")
    from tinygrad_cnn import Tensor, nn
    model = module.build_mlp(8, 0.2, 0.5)
    assert [type(m).__name__ for m in model].count("Dropout") == 3
    assert not any(isinstance(m, nn.Dropout) for m in module.build_mlp(8))
    x = Tensor(np.ones((2, 1, 28, 28), np.float32))
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())


def test_first_layer_filters_smoke(tmp_path):
    out, record = _smoke("first_layer_filters", "cifar-10-partial-bin", tmp_path)
    # 8 filters of 3x5x5 -> a 3x3 grid of 40x40 tiles (zoom 8) with 2-pixel gaps
    for name in ("filters_init.png", "filters_trained.png"):
        image = _read_png(out / name)
        assert image.shape == (2 + 3 * 42, 2 + 3 * 42, 3)
    assert len(record["rows"]) == 2


def test_filter_smoothness_measure():
    module = _load("first_layer_filters")
    noise = np.random.default_rng(0).standard_normal((64, 3, 7, 7))
    ramp = np.broadcast_to(np.arange(7.0), (4, 3, 7, 7)) + np.arange(7.0)[:, None]
    assert abs(module.smoothness(noise)) < 0.1
    assert module.smoothness(ramp) > 0.5


def test_saliency_fgsm_smoke(tmp_path, capsys):
    out, record = _smoke("saliency_fgsm", "mnist", tmp_path)
    assert record["epsilons"] == [0.0, 0.1, 0.3] and len(record["accuracies"]) == len(record["controls"]) == 3
    assert record["accuracies"][0] == record["controls"][0]                 # eps 0: both are the clean accuracy
    assert 0 <= record["saliency_on_strokes"] <= 1 and 0 < record["stroke_area"] < 1
    saliency = _read_png(out / "saliency.png")
    examples = _read_png(out / "fgsm_examples.png")
    assert saliency.shape[1] == examples.shape[1] == 1 + 4 * (84 + 1)      # 4 digits, zoom 3
    assert examples.shape[0] > saliency.shape[0]                            # clean + 2 adversarial rows
    _plots_exist(out, ["fgsm_accuracy.png"], capsys)


def test_fgsm_moves_every_pixel_by_eps_and_raises_the_loss():
    module = _load("saliency_fgsm")
    import tinygrad_cnn
    from tinygrad_cnn import Tensor
    from tinygrad_cnn.nn import functional as F
    tinygrad_cnn.manual_seed(0)
    utils = sys.modules.get("_experiment_utils") or _load("_experiment_utils")
    model = utils.small_cnn("relu", 2, in_channels=1, image_size=28)
    model.eval()
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=(3, 1, 28, 28)).astype(np.float32)
    y = np.array([1, 2, 3])
    with backend.cpu_backend("numpy"):
        adv = module.fgsm(model, x, y, 0.1)
    np.testing.assert_allclose(np.abs(adv - x), 0.1, atol=1e-6)
    loss = lambda images: F.cross_entropy(model(Tensor(images)), Tensor(y)).item()  # noqa: E731
    with backend.cpu_backend("numpy"):
        assert loss(adv) > loss(x)
    assert module.fgsm(model, x, y, 0.0) is x
    noisy = module.random_sign(x, 0.1, np.random.default_rng(0))
    np.testing.assert_allclose(np.abs(noisy - x), 0.1, atol=1e-6)
    assert 0.3 < np.mean(noisy > x) < 0.7


def test_experiment_arguments_are_checked():
    with pytest.raises(SystemExit):
        _load("plain_vs_residual").main(["--depths", "21"])
    with pytest.raises(SystemExit):
        _load("relu_vs_tanh").build_parser().parse_args(["--max-epochs", "0"])


def test_denoising_autoencoder_smoke(tmp_path):
    out, record = _smoke("denoising_autoencoder", "mnist", tmp_path)
    assert [r[0] for r in record["rows"]] == ["noisy input", "transposed conv + unpool",
                                              "bilinear upsample + conv"]
    picture = _read_png(out / "denoising.png")
    assert picture.ndim == 3 and picture.shape[0] > 4 * 28 * 3    # four rows of 3x digits


def test_denoising_decoders_restore_the_input_size():
    import tinygrad_cnn
    module = _load("denoising_autoencoder")
    x = tinygrad_cnn.Tensor(np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32))
    for decoder in module.DECODERS:
        assert module.DenoisingAutoencoder(4, decoder)(x).shape == (2, 1, 28, 28)


def test_zca_whitening_smoke(tmp_path, capsys):
    out, record = _smoke("zca_whitening", "cifar-10-partial-bin", tmp_path)
    assert [r[0] for r in record["rows"]] == ["original", "decorrelated", "PCA-whitened", "ZCA-whitened"]
    for row in record["rows"][2:]:                       # whitened: unit variances, no correlation
        assert abs(float(row[1]) - 1) < 1e-2 and abs(float(row[2]) - 1) < 1e-2 and abs(float(row[3])) < 1e-2
    assert abs(float(record["rows"][1][3])) < 1e-2       # decorrelated, variances unchanged in sum
    _read_png(out / "zca_images.png")
    _plots_exist(out, ["whitening_2d.png"], capsys)


def test_relu_vs_tanh_sweep_smoke(tmp_path, capsys):
    out, record = _smoke("relu_vs_tanh_sweep", "cifar-10-partial-bin", tmp_path, "--target", "0.99")
    assert set(record["best_lr"]) == {"relu", "tanh"}
    assert set(record["ratios"]) == {"0", "1"}           # both seeds, at the best rates
    assert [r[0] for r in record["rows"][:4]] == ["relu", "tanh"] * 2   # 2 learning rates x 2 activations
    assert set(record["easier_targets"]) == {"0.5", "0.4"}
    _plots_exist(out, ["relu_vs_tanh_sweep.png"], capsys)


def test_loss_landscape_smoke(tmp_path, capsys):
    out, record = _smoke("loss_landscape", "cifar-10-partial-bin", tmp_path)
    assert [r[0] for r in record["rows"]] == ["ResNet-8", "plain-8"]
    for name, surface in record["surfaces"].items():
        surface = np.array(surface)
        assert surface.shape == (5, 5) and np.all(np.isfinite(surface))
        assert surface[2, 2] == pytest.approx(record["sharpness"][name]["loss at centre"])
    with np.load(out / "surfaces.npz") as saved:
        assert saved["ResNet_8"].shape == (5, 5)
    _plots_exist(out, ["loss_contours.png", "loss_surfaces.png"], capsys)


def test_filter_normalised_directions_match_each_filter_norm():
    from tinygrad_cnn import models
    module = _load("loss_landscape")
    model = models.cifar_resnet(8, widths=(2, 4, 8))
    direction = module.filter_normalised_direction(model, np.random.default_rng(0))
    for name, param in model.named_parameters():
        d, w = direction[name], param.array
        if w.ndim <= 1:
            assert not d.any(), name                      # BatchNorm and biases stay put
        else:
            np.testing.assert_allclose(np.linalg.norm(d.reshape(len(d), -1), axis=1),
                                       np.linalg.norm(w.reshape(len(w), -1), axis=1), rtol=1e-4)
    # the surface leaves the weights as they were
    x, y = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32), np.arange(4) % 10
    before = {n: p.array.copy() for n, p in model.named_parameters()}
    module.loss_surface(model, x, y, direction, direction, np.linspace(-1, 1, 3))
    assert all(np.array_equal(before[n], p.array) for n, p in model.named_parameters())

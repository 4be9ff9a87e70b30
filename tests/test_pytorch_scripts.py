"""Ordinary PyTorch training-script habits, written as scripts write them, with the import swapped.

Each test is the shape of code found in widely used training scripts: accuracy through ``.data``,
device boilerplate, cuDNN switches, ``DataParallel``, a resume from a nested checkpoint,
``Variable``, the autograd tutorial's walk over ``grad_fn.next_functions``.
"""
import numpy as np
import pytest

import tinygrad_cnn as torch
import tinygrad_cnn.nn as nn
import tinygrad_cnn.nn.functional as F
import tinygrad_cnn.optim as optim
from tinygrad_cnn.autograd import Variable


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        out = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        return self.fc(out.view(out.size(0), -1))


def _blobs(n=96, seed=0):
    """Three separable classes of 1x8x8 images: class k lights up row band k."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, k in enumerate(labels):
        images[i, 0, 2 * k:2 * k + 3] += 1.5
    return images, labels.astype(np.int64)


def _train_and_test(net, optimizer, loader, device, epochs=3):
    """The kuangliu/pytorch-cifar train() and test() loops, unchanged but for the import."""
    criterion = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        net.train()
        train_loss, correct, total = 0, 0, 0
        for batch_idx, (inputs, targets) in enumerate(loader):
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, targets)
            loss.backward()
            optimizer.step()
            train_loss += loss.item()
            _, predicted = outputs.max(1)
            total += targets.size(0)
            correct += predicted.eq(targets).sum().item()
    net.eval()
    correct, total = 0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            outputs = net(inputs.to(device))
            _, predicted = torch.max(outputs.data, 1)        # the older scripts' spelling
            total += targets.size(0)
            correct += (predicted == targets.data).sum().item()
    return 100.0 * correct / total, train_loss


def test_training_loop_with_data_accuracy_and_device_boilerplate():
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    assert device.type in ("cpu", "cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = True
    net = SmallNet().to(device)
    net = torch.nn.DataParallel(net)       # what scripts do on a GPU box
    images, labels = _blobs()
    dataset = torch.utils.data.TensorDataset(torch.tensor(images), torch.tensor(labels, dtype=torch.long))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, num_workers=0)
    optimizer = optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    acc, train_loss = _train_and_test(net, optimizer, loader, device)
    assert acc > 90.0 and np.isfinite(train_loss)
    # parameter inspection the way scripts print it
    sizes = [p.data.size() for p in net.parameters()]
    assert sizes[0] == (4, 1, 3, 3) and repr(sizes[0]) == "tinygrad_cnn.Size([4, 1, 3, 3])"
    assert all(isinstance(p.data, torch.Tensor) for p in net.parameters())
    assert float(net.module.conv1.weight.data.norm()) > 0
    assert isinstance(net.module.fc.weight.data.numpy(), np.ndarray)
    assert list(net.state_dict())[0].startswith("module.")


def test_resume_from_a_nested_checkpoint(tmp_path):
    """kuangliu's checkpointing: save {'net', 'acc', 'epoch'}, resume with best_acc and start_epoch."""
    torch.manual_seed(1)
    net = SmallNet()
    optimizer = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    images, labels = _blobs(48)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(images), torch.tensor(labels, dtype=torch.long)),
        batch_size=16)
    acc, _ = _train_and_test(net, optimizer, loader, "cpu", epochs=1)
    state = {"net": net.state_dict(), "optimizer": optimizer.state_dict(), "acc": acc, "epoch": 0}
    torch.save(state, tmp_path / "ckpt.pth")

    resumed = SmallNet()
    resumed_opt = optim.SGD(resumed.parameters(), lr=0.05, momentum=0.9)
    checkpoint = torch.load(tmp_path / "ckpt.pth")
    resumed.load_state_dict(checkpoint["net"])
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    best_acc, start_epoch = checkpoint["acc"], checkpoint["epoch"] + 1
    assert best_acc == acc and isinstance(best_acc, float) and start_epoch == 1
    # training on from the resumed state is training on from the original one
    for a, b in zip(net.state_dict().values(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = torch.tensor(images[:8])
    for model, opt in ((net, optimizer), (resumed, resumed_opt)):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(x), torch.tensor(labels[:8], dtype=torch.long)).backward()
        opt.step()
    np.testing.assert_allclose(net.fc.weight.numpy(), resumed.fc.weight.numpy(), rtol=1e-6, atol=1e-7)


def test_data_of_a_tensor_is_a_detached_tensor_sharing_storage():
    w = torch.randn(3, 4, requires_grad=True)
    d = w.data
    assert isinstance(d, torch.Tensor) and not d.requires_grad and d.grad_fn is None
    d[0, 0] = 5.0                                   # writes through to w, as in PyTorch
    assert w[0, 0].item() == 5.0
    assert w.data.max(1)[1].shape == (3,) and w.data.topk(2)[0].shape == (3, 2)
    # the setter swaps storage
    w.data = torch.zeros(3, 4)
    assert float(w.sum()) == 0.0 and w.requires_grad
    with pytest.raises(TypeError, match=r"assign to \.array"):
        w.data = np.ones((3, 4))
    # the raw array for learners: .array (shared), .numpy()
    assert w.array is w.numpy() and isinstance(w.array, np.ndarray)


def test_variable_and_the_autograd_tutorial_graph_walk():
    x = Variable(torch.ones(2, 2), requires_grad=True)
    assert isinstance(x, torch.Tensor) and x.requires_grad
    y = x + 2
    z = y * y * 3
    out = z.mean()
    assert repr(out.grad_fn).startswith("<MulBackward0 object at 0x")    # mean is sum * (1/n) here
    # walk to the leaf through next_functions, as the tutorial prints it
    node, names = out.grad_fn, []
    while node is not None and node.next_functions:
        names.append(node.name())
        node = next((f for f, _ in node.next_functions if f is not None), None)
    assert names[-1] == "AddBackward0" and node.name() == "AccumulateGrad" and node.variable is x
    assert "grad_fn=<" in repr(y) and "Backward0>" in repr(y)
    out.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 2), 4.5))


def test_scalar_results_work_with_numpy_and_as_indices():
    loss = (torch.ones(3) * 2).sum()
    assert f"Loss: {loss:.3f}" == "Loss: 6.000" and "%.1f" % loss == "6.0"
    with pytest.raises(TypeError):
        f"{torch.ones(2):.3f}"
    assert np.asarray(loss).shape == () and float(np.asarray(loss)) == 6.0
    assert np.asarray(torch.ones(3).argmax()) == 0
    k = torch.tensor(2, dtype=torch.long)
    assert list(range(k)) == [0, 1] and ["a", "b", "c"][k] == "c"
    with pytest.raises(TypeError, match="only integer tensors"):
        [1, 2][torch.tensor(1.0)]
    assert torch.float is np.float32 and torch.double is np.float64 and torch.long is np.int64
    assert torch.half is np.float16 and torch.int is np.int32 and torch.bool is np.bool_
    assert torch.ones(2, dtype=torch.float).dtype == np.float32


def test_accelerator_and_backends_answer_like_pytorch():
    device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")
    assert str(torch.ones(1).to(device).device) == device.type
    assert torch.backends.mps.is_available() is False
    assert torch.backends.cudnn.is_available() is False
    assert torch.device("cuda:0").index == 0 and repr(torch.device("cpu")) == "device(type='cpu')"
    assert torch.device("cuda", 1) == "cuda:1"
    with pytest.raises(ValueError, match="expected 'cpu' or 'cuda'"):
        torch.device("tpu")


def test_module_and_tensor_to_accept_device_objects_and_tensors():
    net = SmallNet().to(torch.device("cpu"))
    x = torch.ones(2, 1, 8, 8)
    assert x.to(torch.device("cpu")) is x
    y = torch.zeros(1, dtype=torch.double)
    assert x.to(y).dtype == np.float64
    assert net(x).shape == (2, 3)
    assert x.to("cpu", non_blocking=True) is x and x.to("cpu", copy=True) is not x


def _basic_block(nn_module, F_module):
    """torchvision's BasicBlock as written there: ``out += identity`` and an in-place ReLU."""

    class BasicBlock(nn_module.Module):
        def __init__(self, planes):
            super().__init__()
            self.conv1 = nn_module.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn1 = nn_module.BatchNorm2d(planes)
            self.relu = nn_module.ReLU(inplace=True)
            self.conv2 = nn_module.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn2 = nn_module.BatchNorm2d(planes)

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            out = self.relu(out)
            return out

    return BasicBlock


def test_torchvision_basic_block_with_inplace_add_matches_pytorch():
    real_torch = pytest.importorskip("torch")
    ours = _basic_block(nn, F)(3).double()
    theirs = _basic_block(real_torch.nn, real_torch.nn.functional)(3).double()
    theirs.load_state_dict({k: real_torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    xo, xt = torch.tensor(x, requires_grad=True), real_torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    (yo * yo).sum().backward()
    (yt * yt).sum().backward()
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours.conv1.weight.grad.numpy(), theirs.conv1.weight.grad.numpy(),
                               rtol=1e-9, atol=1e-11)


def test_top_level_functions_scripts_call():
    x = torch.randn(2, 1, 3)
    assert torch.squeeze(x, 1).shape == (2, 3) and torch.unsqueeze(x, 0).shape == (1, 2, 1, 3)
    assert [c.shape for c in torch.chunk(x, 2, dim=2)] == [(2, 1, 2), (2, 1, 1)]
    np.testing.assert_allclose(torch.softmax(x, dim=2).sum(2).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(torch.log_softmax(x, 2).exp().numpy(), torch.softmax(x, 2).numpy(), rtol=1e-5)
    assert torch.numel(x) == 6 and torch.is_tensor(x) and not torch.is_tensor(x.array)
    raw = np.arange(3.0)
    shared = torch.as_tensor(raw)
    raw[0] = 7.0
    assert shared[0].item() == 7.0 and torch.as_tensor(raw, dtype=torch.float).dtype == np.float32
    assert torch.as_tensor(shared) is shared
    with torch.inference_mode():
        assert not (torch.ones(1, requires_grad=True) * 2).requires_grad

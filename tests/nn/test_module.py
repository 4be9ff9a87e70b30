"""nn.Module machinery: registration, traversal, modes, to(), state_dict, hooks, repr, containers."""
import copy
import pathlib
import re
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn
from tinygrad_cnn import nn, optim
from tinygrad_cnn.testing import assert_allclose

Tensor = tinygrad_cnn.Tensor


class Affine(nn.Module):
    """y = x * scale + shift, built from Tensor ops only (no functional needed)."""

    def __init__(self, n):
        super().__init__()
        self.scale = nn.Parameter(np.ones(n, dtype=np.float32))
        self.shift = nn.Parameter(np.zeros(n, dtype=np.float32))
        self.register_buffer("calls", Tensor(np.array(0, dtype=np.int64)))
        self.register_buffer("cache", Tensor(np.zeros(n, dtype=np.float32)), persistent=False)

    def forward(self, x):
        self.calls.array += 1
        return x * self.scale + self.shift


class Tree(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = Affine(3)
        self.body = nn.Sequential(Affine(3), Affine(3))
        self.head = nn.Parameter(np.ones((3,), dtype=np.float32))
        self.not_a_param = Tensor(np.ones(2))     # a plain Tensor attribute is not registered
        self.config = {"width": 3}

    def forward(self, x):
        return (self.body(self.first(x)) * self.head).sum()


# ---------------------------------------------------------------------------- registration

def test_parameter_is_a_leaf_tensor_that_requires_grad_and_shares_data():
    array = np.arange(3.0)
    p = nn.Parameter(array)
    assert isinstance(p, Tensor) and p.requires_grad and p.is_leaf
    assert p.array is array
    t = Tensor(np.ones(2))
    assert nn.Parameter(t).array is t.array
    assert not nn.Parameter(array, requires_grad=False).requires_grad
    assert nn.Parameter([1, 2]).dtype == np.float32
    assert repr(nn.Parameter(np.zeros(2, np.float32))).startswith("Parameter containing:\ntensor(")
    with pytest.raises(TypeError, match="floating point"):
        nn.Parameter(np.arange(3))


def test_named_parameters_follow_registration_order_with_dotted_names():
    model = Tree()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["head", "first.scale", "first.shift", "body.0.scale", "body.0.shift",
                     "body.1.scale", "body.1.shift"]
    assert [n for n, _ in model.named_parameters(recurse=False)] == ["head"]
    assert [n for n, _ in model.named_parameters(prefix="net")][0] == "net.head"
    assert len(list(model.parameters())) == 7
    assert [n for n, _ in model.named_buffers()] == [
        "first.calls", "first.cache", "body.0.calls", "body.0.cache", "body.1.calls", "body.1.cache"]
    assert "not_a_param" not in dict(model.named_parameters())
    assert model.config == {"width": 3}


def test_shared_parameters_and_modules_are_listed_once():
    shared = Affine(2)
    model = nn.Sequential(shared, shared)
    assert len(list(model.parameters())) == 2
    assert len(list(model.modules())) == 2
    assert list(model.state_dict().keys()) == ["0.scale", "0.shift", "0.calls", "1.scale", "1.shift",
                                               "1.calls"]
    model.load_state_dict(model.state_dict())


def test_children_and_modules_traversal():
    model = Tree()
    assert [n for n, _ in model.named_children()] == ["first", "body"]
    assert [n for n, _ in model.named_modules()] == ["", "first", "body", "body.0", "body.1"]
    assert list(model.children())[1] is model.body
    assert model.get_submodule("body.1") is model.body[1]
    assert model.get_parameter("body.0.scale") is model.body[0].scale
    assert model.get_buffer("first.calls") is model.first.calls
    with pytest.raises(AttributeError, match="no sub-module 'nope'"):
        model.get_submodule("body.nope")


def test_setattr_reassignment_moves_between_registries_and_delattr_unregisters():
    model = Affine(2)
    model.scale = nn.Parameter(np.full(2, 3.0, np.float32))
    assert model._parameters["scale"].array[0] == 3.0
    model.scale = None
    assert model.scale is None and "scale" not in dict(model.named_parameters())
    model.calls = Tensor(np.array(5, dtype=np.int64))
    assert model._buffers["calls"].item() == 5
    model.sub = Affine(1)
    assert "sub" in model._modules
    model.sub = nn.Parameter(np.zeros(1, np.float32))     # a module name becomes a parameter
    assert "sub" not in model._modules and "sub" in model._parameters
    del model.sub
    assert "sub" not in model._parameters
    with pytest.raises(AttributeError, match="'Affine' object has no attribute 'sub'"):
        model.sub


def test_registration_errors_are_clear():
    model = Affine(2)
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'shift'"):
        model.shift = Tensor(np.zeros(2))
    with pytest.raises(TypeError, match="buffer 'calls'"):
        model.calls = np.zeros(2)
    with pytest.raises(TypeError, match="parameter 'w'"):
        model.register_parameter("w", Tensor(np.zeros(2)))
    with pytest.raises(KeyError, match='contain ".", got'):
        model.register_buffer("a.b", Tensor(np.zeros(1)))
    with pytest.raises(KeyError, match="already exists"):
        model.register_buffer("forward", Tensor(np.zeros(1)))
    with pytest.raises(TypeError, match="not a Module subclass"):
        model.add_module("x", 3)
    non_leaf = Tensor(np.ones(2), requires_grad=True) * 2
    with pytest.raises(ValueError, match="non-leaf"):
        model.register_parameter("w", _non_leaf_parameter(non_leaf))

    class Forgot(nn.Module):
        def __init__(self):
            self.layer = Affine(1)

    with pytest.raises(AttributeError, match=r"before Module.__init__\(\) call"):
        Forgot()

    class NoForward(nn.Module):
        pass

    with pytest.raises(NotImplementedError, match=r'\[NoForward\] is missing the required "forward"'):
        NoForward()(Tensor(np.zeros(1)))


def _non_leaf_parameter(result):
    """A Parameter object that still carries a graph node (what the non-leaf check rejects)."""
    p = nn.Parameter(np.zeros(2, np.float32))
    p._ctx = result._ctx
    return p


# ---------------------------------------------------------------------------- modes, grads

def test_train_and_eval_are_recursive_and_return_self():
    model = Tree()
    assert model.training and all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.body.train()
    assert model.body[1].training and not model.first.training and not model.training
    with pytest.raises(ValueError, match="boolean"):
        model.train("yes")


def test_zero_grad_and_requires_grad_freezing():
    model = Tree()
    model(Tensor(np.ones(3, np.float32))).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.numpy() == 0) for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.head.grad = Tensor(np.zeros(3, np.float32))
    model.head.grad.array = np.broadcast_to(np.ones(1, np.float32), (3,))     # a read-only view
    model.zero_grad(set_to_none=False)
    assert np.all(model.head.grad.numpy() == 0) and not model.head.grad.requires_grad
    model.zero_grad()

    assert model.first.requires_grad_(False) is model.first
    model(Tensor(np.ones(3, np.float32))).backward()
    assert model.first.scale.grad is None and model.first.shift.grad is None
    assert model.body[0].scale.grad is not None
    assert not model.first.scale.requires_grad


def test_apply_visits_children_before_parent():
    model = Tree()
    seen = []
    assert model.apply(lambda m: seen.append(type(m).__name__)) is model
    assert seen == ["Affine", "Affine", "Affine", "Sequential", "Tree"]


# ---------------------------------------------------------------------------- to()

def test_double_keeps_parameter_identity_and_optimizer_validity():
    model = Tree()
    params = list(model.parameters())
    opt = optim.SGD(model.parameters(), lr=0.5)
    model(Tensor(np.ones(3, np.float32))).backward()
    assert model.double() is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in params)
    assert model.first.calls.dtype == np.int64            # integer buffers are not cast
    assert model.first.cache.dtype == np.float64
    before = model.head.numpy().copy()
    opt.step()
    assert not np.allclose(model.head.numpy(), before)
    model.float()
    assert all(p.dtype == np.float32 for p in params)
    model.to(dtype=np.float64)
    assert model.head.dtype == np.float64
    model.to(Tensor(np.zeros(1, np.float32)))
    assert model.head.dtype == np.float32
    with pytest.raises(TypeError, match="floating point"):
        model.to(np.int32)
    with pytest.raises(ValueError, match="unknown device"):
        model.to(device="tpu")


def test_to_device_moves_parameters_and_buffers(device):
    model = Tree()
    params = list(model.parameters())
    assert model.to(device) is model
    assert all(p.device == device for p in model.parameters())
    assert all(b.device == device for b in model.buffers())
    out = model(Tensor(np.ones(3, np.float32), device=device))
    out.backward()
    assert all(p.grad.device == device for p in params)
    model.cpu()
    assert all(p.device == "cpu" and p.grad.device == "cpu" for p in params)
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]


# ---------------------------------------------------------------------------- state_dict

def test_state_dict_names_order_and_memory_sharing():
    model = Tree()
    state = model.state_dict()
    assert isinstance(state, OrderedDict)
    assert list(state) == ["head", "first.scale", "first.shift", "first.calls", "body.0.scale",
                           "body.0.shift", "body.0.calls", "body.1.scale", "body.1.shift",
                           "body.1.calls"]
    assert not state["head"].requires_grad and state["head"].array is model.head.array
    assert model.state_dict(keep_vars=True)["head"] is model.head
    assert list(model.state_dict(prefix="m.").keys())[0] == "m.head"


def test_load_state_dict_round_trip_from_tensors_and_numpy_arrays():
    source, target = Tree(), Tree()
    for i, p in enumerate(source.parameters()):
        p.array[...] = np.arange(p.array.size).reshape(p.shape) + i
    source.first.calls.array[...] = 7
    params = list(target.parameters())
    result = target.load_state_dict(source.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        assert_allclose(a, b, err_msg=name)
    assert target.first.calls.item() == 7
    assert [id(p) for p in target.parameters()] == [id(p) for p in params]
    # numpy arrays, float64 values are cast into the float32 parameters
    arrays = {k: v.numpy().astype(np.float64) if v.dtype.kind == "f" else v.numpy()
              for k, v in source.state_dict().items()}
    fresh = Tree()
    fresh.load_state_dict(arrays)
    assert fresh.head.dtype == np.float32
    assert_allclose(fresh.body[1].shift, source.body[1].shift)


def test_load_state_dict_reports_every_problem_and_leaves_model_untouched():
    model = Tree()
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    state["head"] = np.full(3, 9.0, np.float32)
    del state["first.shift"]
    state["extra.weight"] = np.zeros(1)
    state["body.0.scale"] = np.zeros((4,), np.float32)
    before = model.head.numpy().copy()
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert message.startswith("Error(s) in loading state_dict for Tree:")
    assert 'Missing key(s) in state_dict: "first.shift"' in message
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in message
    assert ("size mismatch for body.0.scale: copying a param with shape (4,) from checkpoint, "
            "the shape in current model is (3,)") in message
    assert_allclose(model.head, before)           # nothing was copied

    del state["body.0.scale"]
    state["body.0.scale"] = np.ones(3, np.float32)
    result = model.load_state_dict(state, strict=False)
    assert result == (["first.shift"], ["extra.weight"])
    assert result.missing_keys == ["first.shift"]
    assert_allclose(model.head, np.full(3, 9.0))
    with pytest.raises(TypeError, match="dict-like"):
        model.load_state_dict([1, 2])
    state["head"] = "not an array"
    with pytest.raises(RuntimeError, match='parameter named "head"'):
        model.load_state_dict(state, strict=False)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=5), st.integers(0, 2 ** 16))
def test_state_dict_round_trip_reproduces_outputs(widths, seed):
    tinygrad_cnn.manual_seed(seed)

    def build():
        layers = []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(n_in, n_out), nn.Tanh()]
        return nn.Sequential(*layers)

    source, target = build(), build()
    x = Tensor(np.random.default_rng(seed).standard_normal((2, widths[0])).astype(np.float32))
    target.load_state_dict(source.state_dict())
    assert_allclose(target(x), source(x))


# ---------------------------------------------------------------------------- hooks

def test_forward_hooks_observe_and_replace_inputs_and_outputs():
    model = nn.Sequential(Affine(2), Affine(2))
    seen = {}
    handle = model[0].register_forward_hook(lambda m, args, out: seen.setdefault("out", out.numpy()))
    pre = model[1].register_forward_pre_hook(lambda m, args: args[0] * 10)
    x = Tensor(np.array([1.0, 2.0], np.float32))
    assert_allclose(model(x), [10.0, 20.0])
    assert_allclose(seen["out"], [1.0, 2.0])
    handle.remove()
    pre.remove()
    seen.clear()
    assert_allclose(model(x), [1.0, 2.0])
    assert seen == {}
    with model.register_forward_hook(lambda m, args, out: out + 1):
        assert_allclose(model(x), [2.0, 3.0])
    assert_allclose(model(x), [1.0, 2.0])


# ---------------------------------------------------------------------------- repr

def test_repr_is_pytorch_like():
    model = Tree()
    assert repr(model) == (
        "Tree(\n"
        "  (first): Affine()\n"
        "  (body): Sequential(\n"
        "    (0): Affine()\n"
        "    (1): Affine()\n"
        "  )\n"
        ")")

    class WithExtra(nn.Module):
        def extra_repr(self):
            return "width=3"

    assert repr(WithExtra()) == "WithExtra(width=3)"


# ---------------------------------------------------------------------------- containers

def test_sequential_indexing_slicing_and_editing():
    a, b, c = Affine(1), Affine(1), Affine(1)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and list(seq) == [a, b, c]
    assert seq[0] is a and seq[-1] is c
    sliced = seq[1:]
    assert isinstance(sliced, nn.Sequential) and list(sliced) == [b, c]
    assert list(sliced._modules) == ["1", "2"]
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    with pytest.raises(TypeError, match="integers or slices"):
        seq["0"]
    d = Affine(1)
    seq.append(d)
    assert seq[3] is d
    seq[1] = Affine(1)
    assert seq[1] is not b
    del seq[0]
    assert list(seq._modules) == ["0", "1", "2"] and seq[2] is d
    seq.insert(0, a)
    assert seq[0] is a and len(seq) == 4
    x = Tensor(np.array([2.0], np.float32))
    assert_allclose(seq(x), [2.0])
    named = nn.Sequential(OrderedDict([("conv", Affine(1)), ("act", nn.Identity())]))
    assert list(named.state_dict()) == ["conv.scale", "conv.shift", "conv.calls"]
    assert named.act is named[1]
    assert len(named + seq) == 6


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 6), st.one_of(st.none(), st.integers(-7, 7)), st.one_of(st.none(), st.integers(-7, 7)),
       st.one_of(st.none(), st.integers(1, 3), st.integers(-3, -1)))
def test_sequential_and_module_list_slices_behave_like_list_slices(n, start, stop, step):
    modules = [nn.Identity() for _ in range(n)]
    index = slice(start, stop, step)
    seq, mlist = nn.Sequential(*modules), nn.ModuleList(modules)
    assert list(seq[index]) == modules[index]
    assert list(seq[index]._modules) == [str(i) for i in range(n)][index]   # names kept
    assert list(mlist[index]) == modules[index]


def test_module_list_and_module_dict_register_their_modules():
    layers = nn.ModuleList([Affine(1) for _ in range(3)])
    assert len(list(layers.parameters())) == 6
    layers.append(Affine(1))
    layers += [Affine(1)]
    assert len(layers) == 5 and isinstance(layers[1:3], nn.ModuleList)
    del layers[0]
    assert list(layers._modules) == ["0", "1", "2", "3"]
    layers.insert(1, Affine(2))
    assert layers[1].scale.shape == (2,)
    assert list(layers.state_dict())[0] == "0.scale"
    with pytest.raises(NotImplementedError):
        layers(Tensor(np.zeros(1)))

    heads = nn.ModuleDict({"a": Affine(1), "b": Affine(2)})
    assert list(heads) == ["a", "b"] and "b" in heads and len(heads) == 2
    assert list(heads.state_dict())[3] == "b.scale"
    heads["c"] = Affine(3)
    assert heads.pop("a").scale.shape == (1,)
    assert list(heads.keys()) == ["b", "c"]


def test_deepcopy_gives_an_independent_model():
    model = Tree()
    clone = copy.deepcopy(model)
    assert list(clone.state_dict()) == list(model.state_dict())
    assert isinstance(clone.head, nn.Parameter) and clone.head is not model.head
    clone.head.array[...] = 5
    assert np.all(model.head.numpy() == 1)
    assert len(list(clone.parameters())) == 7


def test_identity_returns_its_input():
    x = Tensor(np.ones(2))
    assert nn.Identity(54, unused="x")(x) is x


def test_deleting_from_a_named_sequential_keeps_the_names():
    # deliberate difference from PyTorch, which renumbers to 0..n-1 and so loses the names
    named = nn.Sequential(OrderedDict([("conv", Affine(1)), ("act", nn.Identity()), ("out", Affine(1))]))
    del named[1]
    assert list(named._modules) == ["conv", "out"]
    assert list(named.state_dict())[0] == "conv.scale"


def test_module_list_repr_collapses_runs_of_identical_children():
    layers = nn.ModuleList([nn.Identity(), nn.Identity(), Affine(1), nn.Identity()])
    assert repr(layers) == ("ModuleList(\n"
                            "  (0-1): 2 x Identity()\n"
                            "  (2): Affine()\n"
                            "  (3): Identity()\n"
                            ")")
    assert repr(nn.ModuleList()) == "ModuleList()"


# ---------------------------------------------------------------------------- parity with PyTorch

def build_tree(nn, ones):
    """A model exercising every registry: parameters, persistent and non-persistent buffers,
    nested containers, a ModuleList and a module registered under two names."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3)
            self.bn = nn.BatchNorm2d(3)
            self.register_buffer("scale", ones(3), persistent=False)
            self.heads = nn.ModuleList([nn.Linear(3, 2), nn.Linear(3, 2), nn.Linear(3, 4)])

        def extra_repr(self):
            return "custom=1"

        def forward(self, x):
            return self.bn(self.conv(x))

    model = nn.Sequential(Block(), nn.ReLU())
    shared = nn.Linear(2, 2)
    model.add_module("a", shared)
    model.add_module("b", shared)
    return model


def test_module_traversal_state_dict_and_repr_match_torch(torch_2_13):
    torch = torch_2_13
    ours, theirs = build_tree(nn, tinygrad_cnn.ones), build_tree(torch.nn, torch.ones)
    assert repr(ours) == repr(theirs)
    for method in ("named_parameters", "named_buffers", "named_modules", "named_children"):
        assert [n for n, _ in getattr(ours, method)()] == [n for n, _ in getattr(theirs, method)()], method
    assert ([n for n, _ in ours.named_modules(prefix="root")]
            == [n for n, _ in theirs.named_modules(prefix="root")])
    assert ([n for n, _ in ours[0].named_parameters(prefix="p", recurse=False)]
            == [n for n, _ in theirs[0].named_parameters(prefix="p", recurse=False)])
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert len(list(ours.parameters())) == len(list(theirs.parameters()))
    assert len(list(ours.buffers())) == len(list(theirs.buffers()))


def test_load_state_dict_errors_read_as_torch(torch):
    ours, theirs = build_tree(nn, tinygrad_cnn.ones), build_tree(torch.nn, torch.ones)
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    del state["0.bn.running_var"]
    state["extra"] = np.zeros(1, np.float32)
    state["0.conv.weight"] = np.zeros((1, 2, 3, 3), np.float32)
    with pytest.raises(RuntimeError) as our_error:
        ours.load_state_dict(state)
    with pytest.raises(RuntimeError) as their_error:
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    # PyTorch prints shapes as torch.Size([...]), we print tuples; the rest is identical
    their_text = re.sub(r"torch\.Size\(\[([^\]]*)\]\)", r"(\1)", str(their_error.value))
    assert str(our_error.value) == their_text
    state["0.conv.weight"] = np.zeros((3, 2, 3, 3), np.float32)
    our_result = ours.load_state_dict(state, strict=False)
    their_result = theirs.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    assert tuple(our_result) == tuple(their_result)
    assert repr(our_result) == repr(their_result)


# ---------------------------------------------------------------------------- docs/nn.md

def test_worked_example_in_the_nn_docs_runs(capsys):
    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "nn.md").read_text()
    blocks = [block for block in re.findall(r"```python\n(.*?)```", text, re.S)
              if block.lstrip().startswith("import")]
    assert blocks, "docs/nn.md has no runnable example"
    for block in blocks:
        exec(compile(block, "docs/nn.md", "exec"), {})
    checks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("check:")]
    assert checks and all(line.endswith("True") for line in checks), checks

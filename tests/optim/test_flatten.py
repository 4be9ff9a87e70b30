"""flatten_state / unflatten_state: nested state dicts through .npz files without pickle."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_cnn.optim import arrays_to_state_dict, flatten_state, state_dict_to_arrays, unflatten_state


def assert_same_tree(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a.keys()) == list(b.keys())
        for key in a:
            assert type(key) is type(next(k for k in b if k == key))
            assert_same_tree(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tree(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 62, 2 ** 62), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.builds(lambda s, seed: np.random.default_rng(seed).standard_normal(s).astype(np.float32),
              st.lists(st.integers(0, 3), max_size=3).map(tuple), st.integers(0, 100)),
    st.builds(np.int64, st.integers(-100, 100)),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.integers(0, 5), st.text("abc_", min_size=1, max_size=4)), children,
                        max_size=3),
    ),
    max_leaves=10,
)


def _unique_names(tree):
    """Hypothesis may draw {1: .., "1": ..}, which flatten_state rejects (tested separately)."""
    try:
        flatten_state(tree)
        return True
    except ValueError:
        return False


@settings(max_examples=60, deadline=None)
@given(trees.filter(_unique_names))
def test_round_trip_preserves_values_and_types(tree):
    assert_same_tree(tree, unflatten_state(flatten_state(tree)))


def test_round_trip_of_an_optimizer_like_state_dict_through_npz(tmp_path):
    sd = {
        "state": {0: {"step": 3, "exp_avg": np.arange(6, dtype=np.float32).reshape(2, 3)},
                  2: {"momentum_buffer": np.ones((), np.float64)}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "amsgrad": False, "params": [0, 1]},
                         {"lr": 1e-3, "mode": "min", "best": math.inf, "min_lr": None, "params": [2]}],
        "empty": {}, "nothing": [],
    }
    path = tmp_path / "state.npz"
    np.savez(path, **flatten_state(sd, prefix="opt"), other=np.zeros(2))
    with np.load(path, allow_pickle=False) as f:
        loaded = unflatten_state(dict(f), prefix="opt")
    assert_same_tree(sd, loaded)
    assert loaded["param_groups"][0]["lr"] == 0.1  # bit-exact floats


def test_keys_are_readable_paths():
    flat = flatten_state({"state": {0: {"exp_avg": np.zeros(2)}}, "param_groups": [{"lr": 0.5}]}, prefix="o")
    assert set(flat) == {"o/state/0/exp_avg", "o/param_groups/0/lr", "o/__spec__"}
    assert all(isinstance(v, np.ndarray) and not v.dtype.hasobject for v in flat.values())


def test_prefixes_keep_trees_apart():
    flat = {**flatten_state({"a": 1}, prefix="x"), **flatten_state({"a": 2.5}, prefix="y")}
    assert unflatten_state(flat, prefix="x") == {"a": 1}
    assert unflatten_state(flat, prefix="y") == {"a": 2.5}
    with pytest.raises(KeyError, match="prefix='z'"):
        unflatten_state(flat, prefix="z")


def test_aliases():
    tree = {"x": [1, 2.0]}
    assert arrays_to_state_dict(state_dict_to_arrays(tree)) == tree


def test_errors():
    with pytest.raises(TypeError, match="cannot store a function at f"):
        flatten_state({"f": lambda e: e})
    with pytest.raises(TypeError, match="object array at a"):
        flatten_state({"a": np.array([None, 1], dtype=object)})
    with pytest.raises(ValueError, match="same name '1'"):
        flatten_state({1: 0, "1": 0})
    with pytest.raises(TypeError, match="dict keys must be str or int"):
        flatten_state({(1, 2): 0})
    flat = flatten_state({"a": np.zeros(2)})
    del flat["a"]
    with pytest.raises(KeyError, match="missing entry 'a'"):
        unflatten_state(flat)


def test_arrays_are_copied_on_unflatten():
    source = {"a": np.zeros(3)}
    flat = flatten_state(source)
    tree = unflatten_state(flat)
    tree["a"][0] = 5.0
    assert flat["a"][0] == 0.0

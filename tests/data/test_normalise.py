import numpy as np
import pytest
import torch

from meddiff.data.normalise import Normalisation
from meddiff.errors import InputError


def _ct(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(40, 300, size=(3, 16, 16)).astype(np.float32) - 1000 * (rng.random((3, 16, 16)) < 0.3) for _ in range(2)]


def test_minmax_maps_patient_range_to_unit_interval_and_inverts_exactly():
    vols = _ct()
    n = Normalisation.from_arrays(vols, units="HU")
    allv = np.concatenate([v.ravel() for v in vols])
    assert (n.lo, n.hi, n.clip) == (allv.min(), allv.max(), False)
    y = np.concatenate([n.forward(v).ravel() for v in vols])
    assert y.min() == pytest.approx(-1.0, abs=1e-6) and y.max() == pytest.approx(1.0, abs=1e-6)
    for v in vols:
        np.testing.assert_allclose(n.inverse(n.forward(v)), v, rtol=0, atol=1e-3)  # float32, |x| ~ 2000
    x64 = vols[0].astype(np.float64)
    np.testing.assert_allclose(n.inverse(n.forward(x64)), x64, rtol=0, atol=1e-10)


def test_clipped_window_inverse_exact_inside_clipped_outside():
    x = np.linspace(-100.0, 1100.0, 1201)
    n = Normalisation.from_arrays([x], percentiles=(5, 95))
    assert n.clip and n.lo == pytest.approx(-40.0) and n.hi == pytest.approx(1040.0)
    back = n.inverse(n.forward(x))
    inside = (x >= n.lo) & (x <= n.hi)
    np.testing.assert_allclose(back[inside], x[inside], atol=1e-9)
    np.testing.assert_allclose(back[~inside], np.clip(x[~inside], n.lo, n.hi), atol=1e-9)
    assert n.forward(x).min() == -1.0 and n.forward(x).max() == 1.0


def test_torch_and_numpy_agree_and_dict_round_trip():
    n = Normalisation(lo=-1024.0, hi=3071.0, clip=True, units="HU")
    x = np.array([-2000.0, -1024.0, 0.0, 3071.0, 5000.0])
    np.testing.assert_allclose(n.forward(torch.tensor(x)).numpy(), n.forward(x))
    np.testing.assert_allclose(n.forward(x), [-1, -1, 2 * 1024 / 4095 - 1, 1, 1])
    assert Normalisation.from_dict(n.to_dict()) == n
    assert n.scale() == pytest.approx(4095 / 2)


def test_integer_input_becomes_float():
    n = Normalisation(lo=0, hi=255)
    y = n.forward(np.array([0, 255], dtype=np.uint8))
    assert y.dtype == np.float32 and y.tolist() == [-1.0, 1.0]


@pytest.mark.parametrize(
    "arrays, match",
    [([np.full((4, 4), 7.0)], "constant"), ([np.array([0.0, np.nan])], "NaN"), ([], "no voxels")],
)
def test_bad_inputs_raise(arrays, match):
    with pytest.raises(InputError, match=match):
        Normalisation.from_arrays(arrays, name="p1")


def test_bad_window_and_percentiles():
    with pytest.raises(InputError, match="lo < hi"):
        Normalisation(lo=1.0, hi=1.0)
    with pytest.raises(InputError, match="percentiles"):
        Normalisation.from_arrays([np.arange(10.0)], percentiles=(99, 1))
    with pytest.raises(InputError, match="lacks key"):
        Normalisation.from_dict({"lo": 0, "hi": 1})

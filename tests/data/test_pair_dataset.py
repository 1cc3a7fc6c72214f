import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from meddiff.data import Denoise, Inpaint, PairDataset, SuperResolution, load_prepared
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.errors import InputError

torch.set_num_threads(1)


@pytest.fixture
def prepared(multi_patient_dir, tmp_path):
    opts = PrepareOptions(size=16, split=(0.6, 0.2, 0.2), min_foreground=0.0)
    return prepare(multi_patient_dir, tmp_path / "prep", opts, progress=False).output


def test_test_split_is_deterministic_per_index(prepared):
    a = PairDataset(prepared, "test", Inpaint(), train=False, seed=7)
    b = PairDataset(load_prepared(prepared), "test", Inpaint(), train=False, seed=7)
    for i in range(len(a)):
        pa, pb = a[i], b[i]
        assert all(torch.equal(u, v) for u, v in zip(pa[:3], pb[:3])) and pa.case_id == pb.case_id
    assert not torch.equal(a[0].mask, a[1].mask)  # seed + index: different masks per item
    c = PairDataset(prepared, "test", Inpaint(), train=False, seed=8)
    assert not torch.equal(a[0].mask, c[0].mask)


def test_train_draws_fresh_noise_and_follows_global_seed(prepared):
    ds = PairDataset(prepared, "train", Denoise(), train=True)
    torch.manual_seed(0)
    first, second = ds[0], ds[0]
    assert torch.equal(first.x0, second.x0) and not torch.equal(first.cond, second.cond)
    torch.manual_seed(0)
    assert torch.equal(ds[0].cond, first.cond)


def test_items_shapes_ranges_and_collate(prepared):
    prep = load_prepared(prepared)
    ds = PairDataset(prep, "train", SuperResolution(4.0), train=False)
    item = ds[2]
    assert item.x0.shape == item.cond.shape == item.mask.shape == (1, 16, 16)
    assert item.x0.dtype == torch.float32 and item.case_id == prep.rows["train"][2]["case_id"]
    np.testing.assert_array_equal(item.x0[0].numpy(), prep.arrays["train"][2])
    x0, cond, mask, ids = next(iter(DataLoader(ds, batch_size=4)))
    assert x0.shape == (4, 1, 16, 16) and len(ids) == 4 and isinstance(ids[0], str)
    assert torch.all(mask == 1) and cond.abs().max() <= 1


def test_crops(prepared):
    torch.manual_seed(1)
    ds = PairDataset(prepared, "train", SuperResolution(2.0), crop=8, train=True)
    crops = {tuple(ds[0].x0.flatten()[:8].tolist()) for _ in range(12)}
    assert ds[0].x0.shape == (1, 8, 8) and len(crops) > 1
    fixed = PairDataset(prepared, "train", SuperResolution(2.0), crop=8, train=False)
    full = load_prepared(prepared).arrays["train"][0]
    np.testing.assert_array_equal(fixed[0].x0[0].numpy(), full[4:12, 4:12])


def test_prepared_maps_back_to_original_units(prepared, multi_patient_dir):
    prep = load_prepared(prepared)
    row = prep.rows["train"][0]
    norm = prep.normalisation_of("train", 0)
    assert norm is prep.normalisation[row["patient_id"]]
    g = prep.geometry_of("train", 0)
    assert (g.height, g.width, g.size) == (12, 10, 16)
    assert norm.inverse(np.float64(-1.0)) == pytest.approx(0.0)  # background of the blobs


def test_errors(prepared, tmp_path):
    with pytest.raises(InputError, match="split"):
        PairDataset(prepared, "validation", Denoise())
    with pytest.raises(InputError, match="crop"):
        PairDataset(prepared, "train", Denoise(), crop=32)
    with pytest.raises(InputError, match="not a prepared folder"):
        load_prepared(tmp_path)
    manifest = prepared / "manifest.csv"
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(InputError, match="manifest.csv has"):
        load_prepared(prepared)



def test_empty_split_and_index_range(tmp_path, write_nifti):
    write_nifti(tmp_path / "in" / "only" / "v.nii.gz", np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6))
    out = prepare(tmp_path / "in", tmp_path / "out", PrepareOptions(size=8), progress=False).output
    with pytest.raises(InputError, match="'val' .* is empty"):
        PairDataset(out, "val", Denoise())
    ds = PairDataset(out, "train", Denoise(), train=False)
    assert len(ds) == 2 and torch.equal(ds[-1].x0, ds[1].x0)
    with pytest.raises(IndexError, match="out of range"):
        ds[2]

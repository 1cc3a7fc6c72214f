"""`meddiff prepare --mode volume` and the 3D / 2.5D datasets on the shipped MNI152 stacks."""

import json

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.data.degrade import SuperResolution, build_degradation
from meddiff.config import TaskConfig
from meddiff.data.samples import samples_dir
from meddiff.data.volume_dataset import (ContextCondition, SliceStackDataset, ThickSliceSR, VolumePatchDataset,
                                         context_planes, crop_padded)
from meddiff.data.volumes import load_volumes, resample_ras
from meddiff.errors import InputError
from meddiff.io import read_volume


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("vol") / "prep"
    assert main(["prepare", str(samples_dir("mni152")), str(out), "--mode", "volume", "--spacing", "4", "--split", "1", "0", "0"]) == 0
    return load_volumes(out)


def test_prepared_volumes_are_ras_normalised_per_patient_and_split_by_patient(prepared):
    rows = prepared.rows["train"]
    assert len(rows) == 3 and not prepared.rows["val"] and not prepared.rows["test"]
    assert {r["patient_id"] for r in rows} == {"icbm152_2009a"}
    info = json.loads((prepared.root / "prepare.json").read_text())
    assert info["mode"] == "volume" and info["splits"] == {"icbm152_2009a": "train"}
    for i, r in enumerate(rows):
        arr, aff = prepared.array("train", i), np.array(json.loads(r["affine"]))
        assert arr.dtype == np.float32 and arr.min() >= -1.0 and arr.max() <= 1.0 + 1e-6
        np.testing.assert_allclose(aff[:3, :3], np.diag([4.0, 4.0, 4.0])[:, ::-1])  # z -> S, y -> A, x -> R
    norm = prepared.normalisation["icbm152_2009a"]
    stacks = [read_volume(p).array for p in sorted((samples_dir("mni152") / "icbm152_2009a").glob("*.nii.gz"))]
    assert norm.lo == min(a.min() for a in stacks) and norm.hi == max(a.max() for a in stacks)  # one window per patient


def test_resampling_keeps_world_positions():
    """A bright voxel lands where the affines say: world(source voxel) == world(output voxel of the peak)."""
    arr = np.full((6, 8, 10), -1.0, np.float32)
    arr[2, 3, 4] = 1.0
    affine = np.array([[0, 0, -2.0, 10], [0, 3.0, 0, -5], [1.0, 0, 0, 2], [0, 0, 0, 1]])  # x -> L: a flip to undo
    out, out_aff = resample_ras(arr, affine, (1.0, 1.0, 1.0))
    peak = np.unravel_index(np.argmax(out), out.shape)
    np.testing.assert_allclose((out_aff @ [*peak, 1])[:3], (affine @ [2, 3, 4, 1])[:3], atol=1e-6)
    np.testing.assert_allclose(out_aff[:3, :3][:, ::-1], np.eye(3), atol=1e-9)  # (x, y, z) -> (R, A, S), 1 mm


def test_context_planes_put_the_slice_first_and_repeat_edges():
    planes = torch.arange(5.0)[:, None, None, None].expand(5, 1, 2, 2)
    ctx = context_planes(planes, 2)
    assert ctx.shape == (5, 5, 2, 2)
    assert ctx[:, :, 0, 0].tolist()[0] == [0, 0, 0, 1, 2]
    assert ctx[:, :, 0, 0].tolist()[2] == [2, 0, 1, 3, 4]
    assert ctx[:, :, 0, 0].tolist()[4] == [4, 2, 3, 4, 4]


def test_build_degradation_for_2p5d_and_thick_slices():
    deg = build_degradation(TaskConfig(context_slices=1))
    assert isinstance(deg, ContextCondition) and deg.cond_channels == 3
    stack = torch.rand(2, 3, 16, 16) * 2 - 1
    cond, mask = deg(stack)
    single = SuperResolution(4.0)(stack[:, 1:2])[0]
    torch.testing.assert_close(cond[:, :1], single)  # channel 0: the centre slice's own condition
    torch.testing.assert_close(cond[:, 1:2], SuperResolution(4.0)(stack[:, :1])[0])
    assert mask.shape == (2, 1, 16, 16)
    thick = build_degradation(TaskConfig(sr_axis="through"))
    assert isinstance(thick, ThickSliceSR) and thick.factor == 4


def test_patch_and_stack_datasets(prepared):
    torch.manual_seed(0)
    ds3 = VolumePatchDataset(prepared, "train", ThickSliceSR(4), (8, 16, 24), train=True)
    x0, cond, mask, case = ds3[0]
    assert x0.shape == cond.shape == mask.shape == (1, 8, 16, 24) and case.startswith("icbm152_2009a_000")
    assert not torch.equal(cond, x0) and cond.min() >= -1 and cond.max() <= 1
    ds25 = SliceStackDataset(prepared, "train", ContextCondition(SuperResolution(4.0), 2), 16, train=False)
    x0, cond, mask, case = ds25[3]
    assert x0.shape == (1, 16, 16) and cond.shape == (5, 16, 16) and "_z" in case
    torch.testing.assert_close(cond[:1], SuperResolution(4.0)(x0[None])[0][0])
    big = crop_padded(np.zeros((2, 3), np.float32), (4, 5), train=False)
    assert big.shape == (4, 5) and big[:2, :3].eq(0).all() and big[2:].eq(-1).all()
    with pytest.raises(InputError, match="no volumes"):
        VolumePatchDataset(prepared, "val", ThickSliceSR(4), (8, 8, 8))


def test_stacks_along_every_axis_with_a_drawn_neighbour_stride(prepared):
    """stack_axes / context_stride: a stack is the planes z + s*(-K..K) along the item's axis, s drawn in
    [low, high] when training, the low value otherwise."""
    deg = ContextCondition(SuperResolution(4.0), 1)
    ds = SliceStackDataset(prepared, "train", deg, 64, train=False, axes=(0, 1, 2), stride=(2, 2))
    assert {a for _, a, _ in ds.items} == {0, 1, 2}
    for index in (0, len(ds) // 2, len(ds) - 1):
        v, a, z = ds.items[index]
        vol = np.moveaxis(prepared.array("train", v), a, 0)
        want = crop_padded(vol[np.clip([z - 2, z, z + 2], 0, vol.shape[0] - 1)], (64, 64), False)
        torch.testing.assert_close(ds.stack(index), want)
        assert ds.case(index).endswith(f"_{'zyx'[a]}{z:04d}")
    drawn = SliceStackDataset(prepared, "train", deg, 16, train=True, stride=(1, 3))
    torch.manual_seed(0)
    assert {drawn.draw_stride() for _ in range(80)} == {1, 2, 3}
    flat = SliceStackDataset(prepared, "train", deg, 16, train=False, stride=(0, 0))
    assert all(torch.equal(p, flat.stack(5)[1]) for p in flat.stack(5))  # stride 0: the slice repeated, no neighbours


def test_mixed_stacks_are_synthetic_stacks_with_one_contrast_and_one_appearance_per_stack(prepared):
    from meddiff.data.augment import Appearance
    from meddiff.data.volume_dataset import MixedStacks

    deg = ContextCondition(SuperResolution(4.0), 2)
    real = SliceStackDataset(prepared, "train", deg, 32, train=True)
    torch.manual_seed(0)
    synth = MixedStacks(real, fraction=1.0, appearance=Appearance(gamma=(0.7, 1.4), bias=0.2))
    for i in range(3):
        x0, cond, mask, case = synth[i]
        assert case == "synthetic" and x0.shape == (1, 32, 32) and cond.shape == (5, 32, 32)
        torch.testing.assert_close(cond[:1], SuperResolution(4.0)(x0[None])[0][0])
    none = MixedStacks(real, fraction=0.0)
    assert all(none[i].case_id != "synthetic" for i in range(5))
    # one gamma and one bias field per stack: identical planes stay identical, and one maximum for the stack
    flat = torch.rand(1, 1, 16, 16) * 2 - 1
    out = Appearance(gamma=(0.5, 2.0), bias=0.3)(flat.repeat(1, 3, 1, 1) * torch.tensor([1.0, 0.5, 0.25])[:, None, None])
    assert out.amax().item() == pytest.approx(1.0) and out[0, 1:].amax() < 1.0


def test_rendered_stack_planes_share_texture_and_window():
    from meddiff.data.synth import render, render_stack

    probs = torch.rand(3, 16, 16)
    g = torch.Generator().manual_seed(1)
    stack = render_stack(probs[None].repeat(4, 1, 1, 1), torch.tensor([0.2, 0.5, 0.9]), torch.full((3,), 0.05), g)
    assert stack.shape == (4, 16, 16) and all(torch.equal(stack[0], s) for s in stack)
    g = torch.Generator().manual_seed(1)
    torch.testing.assert_close(render(probs, torch.tensor([0.2, 0.5, 0.9]), torch.full((3,), 0.05), g), stack[:1])

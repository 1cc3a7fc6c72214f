"""`meddiff sample`: restore DICOM / NIfTI / PNG / NPY images with a trained model (slice by slice, or as volumes).

Input handling (per file or DICOM series):
  read (meddiff.io) -> per-image normalisation to [-1, 1] (min/max or percentiles, as
  `meddiff prepare`) -> 2D slices along --axis -> condition planes -> sampler -> inverse
  normalisation -> written in the input's format with the input's geometry.

Size: the network is fully convolutional, so slices run at their own size (padded with the
background value to a multiple of the network's downsampling factor and cropped back). We do
not resample to the training size: resampling would blur exactly the detail the model is to
restore, and change the physical pixel size the model sees less than resizing would.
Super-resolution: with --input-kind lowres (default) the input is the low-resolution
measurement and the output has factor x more pixels in-plane (spacing and affine scaled to
match); with --input-kind upsampled the input is already on the target grid.

Volumes (README "Volumes"; meddiff.restore.volume): a 2.5D checkpoint (task.context_slices) gets each
slice with its neighbours; a 3D checkpoint (model.spatial_dims 3) restores the slices along --axis as
one volume, in overlapping 3D windows when --max-memory asks; a thick-slice checkpoint (task.sr_axis
through) reads the slices along --axis as thick slices and writes sr_factor times as many (spacing,
affine and DICOM slice positions scaled), with --consistency project projecting along that axis.

Data consistency (--consistency, default none): "project" makes every x0 estimate of the sampler,
and so the output, agree with the measurement: for super-resolution its anti-aliased bicubic
downsampling equals the low-resolution input (with --input-kind upsampled: the downsampled input),
for inpainting the known pixels are kept; "repaint" (inpainting, ancestral sampler) is RePaint with
--resample U network calls per step.

VDM checkpoints (objective vdm) generate instead: --num N [--label L] [--guidance W] [--steps S] writes
OUTPUT/grid.png and one file per sample (see meddiff.commands.vdm_sample). A VDM trained with
vdm.image_condition restores --input like a DDPM (same reading and writing; --sampler, --steps,
--samples, --seed; no --consistency).

Baselines go through the same reading, normalisation and writing; only the restoration differs:
a learned baseline's checkpoint (objective baseline: pix2pix, SRGAN, ...) predicts each slice
(--samples N draws its noise N times), and --method NAME instead of --checkpoint runs a classical
one: median or nlm (non-local means) for denoising, biharmonic for inpainting, bicubic or bilinear
for super-resolution (--sr-factor, default 4).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import InputError, flag_errors
from ..restore.restorers import CLASSICAL
from . import sample_archive

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="restore images with a trained model (super-resolution, denoising, inpainting)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="a shipped model's name (see `meddiff models`, e.g. sr_x4_general, the recommended one for super-resolution), model.safetensors, "
                        "a checkpoint folder or a run folder")
    p.add_argument("--method", default=None, choices=sorted(CLASSICAL),
                   help="a classical baseline instead of --checkpoint: median, nlm (denoising), biharmonic (inpainting), "
                        "bicubic, bilinear (super-resolution)")
    p.add_argument("-i", "--input", type=Path, default=None,
                   help="an image file, a DICOM series folder, or a folder of them (required for DDPM checkpoints)")
    p.add_argument("-o", "--output", "--out", dest="output", required=True, type=Path,
                   help="output folder: new or empty (or one meddiff wrote, with --overwrite); never an input folder")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty output folder, replacing earlier results; only a folder meddiff wrote")
    _sampling_arguments(p)
    _input_arguments(p)
    _output_and_run_arguments(p)
    sample_archive.add_arguments(p)
    p.set_defaults(func=run)


def _sampling_arguments(p: argparse.ArgumentParser) -> None:
    """The sampler, its steps and noise, the device and arithmetic."""
    p.add_argument("--sampler", default=None, help="sampler (default: the checkpoint's sampler.name)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's sampler.steps)")
    p.add_argument("--eta", type=float, default=None, help="ddim only: noise scale in [0, 1], 0 = deterministic (default: the checkpoint's sampler.eta)")
    p.add_argument("--grid", choices=["auto", "uniform", "logsnr"], default=None,
                   help="ddim / dpm_solver_pp time grid (default: the checkpoint's sampler.grid; auto = log-SNR for dpm_solver_pp, uniform for ddim)")
    p.add_argument("--samples", type=int, default=1, help="samples per slice; >1 also writes the mean and per-pixel std")
    p.add_argument("--interval", type=float, default=None, metavar="P",
                   help="super-resolution: also write <name>_lower / <name>_upper, a per-pixel P interval (e.g. 0.9) of the "
                        "true value from the model's stored conformal calibration (meddiff.uncertainty; docs/uncertainty.md)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the sampler's noise; the same seed and input give the same output (default 0)")
    p.add_argument("--noise", choices=["independent", "shared"], default=None,
                   help="DDPM checkpoints: independent = each slice its own noise; shared = one noise for all slices of a "
                        "volume, so added detail lines up across slices (default: shared; meddiff.samplers.noise, "
                        "benchmarks/volumes.py)")
    p.add_argument("--batch-size", type=int, default=8, help="slices sampled together; lower it if memory runs out (default 8)")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one) | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16", "auto"],
                   help="arithmetic of the network (default: the checkpoint's sampler.precision, fp32 for the shipped models; "
                        "auto = bf16 where the CPU/GPU runs bf16 natively, fp32 elsewhere, measured within 0.01 dB PSNR "
                        "of fp32 on the shipped model)")


def _input_arguments(p: argparse.ArgumentParser) -> None:
    """What the input is (SR factor, slice axis, low-res or upsampled), data consistency and inpainting masks."""
    p.add_argument("--sr-factor", type=float, default=None,
                   help="super-resolution: the factor of this input (default: the checkpoint's task.sr_factor; "
                        "a model trained with task.sr_factors accepts any of those)")
    p.add_argument("--axis", type=int, default=0, help="slice axis of 3D volumes ([Z,Y,X] order)")
    p.add_argument("--input-kind", choices=["lowres", "upsampled"], default="lowres",
                   help="super-resolution: is the input the low-resolution image (default) or already upsampled?")
    p.add_argument("--consistency", choices=["none", "project", "repaint"], default="none",
                   help="data consistency: project = SR projection onto the measurement / inpainting known-pixel "
                        "replacement at every step; repaint = RePaint (inpainting, ancestral sampler)")
    p.add_argument("--resample", type=int, default=1, metavar="U",
                   help="repaint only: network calls per step (U - 1 jumps back), 1 = plain replacement")
    p.add_argument("--mask", type=Path, default=None,
                   help="inpainting: a mask on the input's grid (nonzero = missing; 2D or 3D; NIfTI, DICOM, DICOM SEG, PNG, "
                        "NPY) for every input, or a folder with a mask per input matched by name (case.nii.gz -> "
                        "case.nii.gz / case_mask.* / case_seg.* ...; meddiff.data.mask_files)")
    p.add_argument("--mask-label", type=int, default=None, metavar="N",
                   help="inpainting: the mask is a label map (or DICOM SEG); the holes are the voxels of label (segment) N")
    p.add_argument("--mask-dilate", type=float, default=0.0, metavar="MM",
                   help="inpainting: grow the holes by MM millimetres (through the image's pixel spacing; default 0)")
    p.add_argument("--clip-percentiles", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="normalise with these percentiles (use the same as `meddiff prepare`)")


def _output_and_run_arguments(p: argparse.ArgumentParser) -> None:
    """Output format and patient tags, VDM generation, weights, the domain check, memory and tiling, the run."""
    p.add_argument("--format", choices=["same", "nifti", "png", "dicom"], default="same", help="output format")
    p.add_argument("--keep-patient-tags", action="store_true",
                   help="copy patient name/ID/birth date/sex into DICOM output and name output folders after the "
                        "patient ID (default: no patient data in tags or paths; outputs mirror the input's relative paths)")
    p.add_argument("--num", type=int, default=16, help="VDM checkpoints: number of images to generate (default 16)")
    p.add_argument("--label", default=None,
                   help="VDM class-conditional checkpoints: class name or index of every sample (default: cycle the classes)")
    p.add_argument("--guidance", type=float, default=0.0, metavar="W",
                   help="VDM class-conditional checkpoints: classifier-free guidance weight w >= 0, eps = (1 + w) eps(z, class) "
                        "- w eps(z, no class); meant for models trained with vdm.label_dropout > 0 (default 0: no guidance)")
    p.add_argument("--weights", choices=["ema", "raw"], default="ema",
                   help="checkpoint weights to sample: ema (the moving average, default) or raw (the training weights "
                        "in train_state.safetensors, e.g. after a short run whose EMA is still mostly initialisation)")
    p.add_argument("--strict-domain", action="store_true",
                   help="refuse, before sampling, an input the domain check flags (modality, and the signals fitted "
                        "on the model's training side: model-based score, Gibbs ringing, noise; see docs/domain.md), "
                        "and exit 3 when the check scores a result worse than bicubic (default: one warning after the run)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="DDPM checkpoints: keep the estimated peak memory under SIZE (e.g. 3GB, 512MiB) by a smaller batch "
                        "or tiled sampling (default: what the process holds plus 60%% of the free RAM / GPU memory)")
    p.add_argument("--tile-size", type=int, default=None, help="DDPM checkpoints: sample in windows of this many pixels "
                   "(default: whole slices unless --max-memory needs windows)")
    p.add_argument("--tile-overlap", type=int, default=None, help="pixels shared by neighbouring windows (default: a quarter window)")
    p.add_argument("--compile", action="store_true",
                   help="DDPM checkpoints: torch.compile the network for sampling (inductor; the first call of each "
                        "batch/window shape compiles: 21-101 s, and measured no faster on a 2-core CPU)")
    p.add_argument("--allow-rgb", action="store_true",
                   help="convert colour (RGB) inputs to gray with BT.601 luma weights instead of refusing them")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


@flag_errors  # the library names a setting by its field; here it is a flag
def run(args: argparse.Namespace) -> int:
    from ..checkpointing import VDM
    from ..checkpointing.named import locate
    from ..restore import Request, restore
    from ..config.device import pick_device
    from .vdm_sample import run as generate

    if args.checkpoint is not None:
        args.checkpoint = locate(args.checkpoint)  # a model name or path -> its model file and header, once
    fmt = None if args.checkpoint is None else args.checkpoint.format
    if fmt == VDM.name and args.method is None and args.input is None:
        claim_output(args)
        return generate(args)  # a VDM without an input generates
    if args.label is not None and fmt != VDM.name:
        raise InputError("--label applies to class-conditional VDM checkpoints only")
    if args.guidance != 0:  # a VDM generating returned above
        what = f"{args.checkpoint.file} is not a VDM checkpoint" if fmt != VDM.name and args.checkpoint is not None \
            else f"{args.checkpoint.file} is given --input (guidance steers generation, without --input)" \
            if fmt == VDM.name else "no --checkpoint is sampled"
        raise InputError(f"--guidance {args.guidance:g} applies to generation from a class-conditional VDM checkpoint "
                         f"only: {what}")
    if sample_archive.requested(args):  # an archive that resumes (meddiff.restore.archive)
        return sample_archive.run(args)
    written = restore(Request.from_namespace(args), pick_device(args.device, what="--device"))
    print(f"wrote {len(written)} file(s) under {args.output}: {written.summary}")
    if written.domain_summary:  # once, after the progress bar (meddiff.domain.check)
        print(written.domain_summary, file=sys.stderr)
    return written.status


def claim_output(args: argparse.Namespace) -> None:
    """Refuse an output folder that is or holds an input, or a non-empty one without --overwrite
    (and then only one meddiff wrote). Writes nothing."""
    from ..io.outdir import check_output_dir

    inputs = [p for p in (getattr(args, "input", None), getattr(args, "mask", None)) if p is not None]
    check_output_dir(args.output, inputs, overwrite=getattr(args, "overwrite", False), verb="sample")

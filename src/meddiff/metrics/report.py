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


def _grid_html(rows, columns, truth_key, row_labels, window, error_maps, vmax) -> str:
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
    """
    columns = list(columns) if columns is not None else (list(rows_of_images[0]) if rows_of_images else [])
    if row_labels is not None and len(row_labels) != len(rows_of_images):
        raise InputError(f"{len(row_labels)} row labels for {len(rows_of_images)} rows of images")
    if window[1] <= window[0]:
        raise InputError(f"display window must be (lo, hi) with lo < hi, got {window}")
    _check_rows(rows_of_images, columns, truth_key)
    has_truth = any(truth_key in r for r in rows_of_images)
    show_err = error_maps and has_truth
    vmax = float(error_vmax) if error_vmax is not None else _error_vmax(rows_of_images, columns, truth_key)
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
    if rows_of_images:
        lo, hi = window
        caption = f"Images shown with a fixed window [{lo:g}, {hi:g}]"
        if show_err:
            caption += f"; error maps |x − {truth_key}| on a shared scale [0, {vmax:.3g}] ({ERROR_CMAP})"
        parts += ["<h2>Images</h2>", f"<p>{html.escape(caption)}.</p>",
                  _grid_html(rows_of_images, columns, truth_key, row_labels, window, show_err, vmax)]
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

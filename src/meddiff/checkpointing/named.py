"""Named models: the shipped ones (src/meddiff/checkpoints) and local ones, with their model cards.

    resolve_checkpoint("sr_x4_general")       -> .../checkpoints/sr_x4_general.safetensors
    resolve_checkpoint("runs/sr_x4")          -> runs/sr_x4 (an existing path is returned as given)
    locate("sr_x4_general")                   -> ModelSource(path, model file, header metadata), once per run
    meddiff.load_pretrained("sr_x4_general")  -> a Pipeline (meddiff.restore.pipeline)

A name is looked up in this order: an existing path, a shipped model (checkpoints/models.yaml),
a local model under the folders of $MEDDIFF_MODELS (``os.pathsep``-separated; default ``runs``):
a ``NAME.safetensors`` file or a run/checkpoint folder ``NAME``. An unknown name is a
CheckpointError listing the shipped names. Commands call :func:`resolve_checkpoint` on
``--checkpoint`` before loading; the loaders themselves take paths.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ..errors import CheckpointError

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
REGISTRY = SHIPPED_DIR / "models.yaml"
MODELS_ENV = "MEDDIFF_MODELS"
MODEL_FILE = "model.safetensors"  # as meddiff.train.checkpoint writes it


@dataclass(frozen=True)
class ModelCard:
    """What a model is for and what it was measured at (empty text = not recorded)."""

    name: str
    path: Path
    origin: str  # "shipped" | "local"
    format: str = ""  # metadata format, e.g. meddiff-ddpm-v1
    task: str = ""
    modality: str = ""
    anatomy: str = ""
    training_data: str = ""
    licence: str = ""
    scores: dict[str, str] = field(default_factory=dict)
    scores_source: str = ""
    readme: str = ""  # the README section that documents it
    short_task: str = ""  # the task in a word or three, shared by the models that do it (models.yaml)
    headline: str = ""  # the one score of `meddiff models`' table, against its baseline
    recommended: bool = False  # the model to use for its short_task (models.yaml `recommended: true`)

    def lines(self) -> list[str]:
        """A readable card: one 'key: value' line per known field."""
        out = [f"{self.name} ({self.origin}): {self.path}" + (f"  [recommended for {self.short_task}]" if self.recommended else "")]
        for key in ("format", "task", "modality", "anatomy", "training_data", "licence"):
            value = getattr(self, key)
            out.append(f"  {key.replace('_', ' ')}: {value or 'not recorded'}")
        out.append("  scores: " + ("" if self.scores else "not measured"))
        out += [f"    {k}: {v}" for k, v in self.scores.items()]
        if self.scores_source:
            out.append(f"    (measured by {self.scores_source})")
        if self.readme:
            out.append(f"  documented in: src/meddiff/checkpoints/README.md, section '{self.readme}'")
        return out

    def to_json(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def _metadata(file: Path) -> dict[str, str]:
    """The safetensors header metadata of a model file ({} if it cannot be read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # a corrupt file is listed without a card; loading it names the problem
        return {}


def card_from_metadata(name: str, file: Path, origin: str) -> ModelCard:
    """A card from a model file's own metadata: format, task (with the SR factor), the data it was
    prepared from, and the domain card ("domain", JSON of meddiff.domain.write_card) where present."""
    meta = _metadata(file)
    task = meta.get("task", "")
    training = ""
    try:
        stored = yaml.safe_load(meta.get("config", "")) or {}
        t = stored.get("task", {}) or {}
        task = task or t.get("kind", "")
        if task == "sr":
            factors = t.get("sr_factors") or [t.get("sr_factor")]
            task = "super-resolution " + ", ".join(f"x{float(f):g}" for f in factors if f)
        training = str((stored.get("data") or {}).get("prepared", "") or "")
        training = f"prepared slices in {training}" if training else ""
    except (yaml.YAMLError, AttributeError, TypeError, ValueError):
        pass
    card = ModelCard(name, file, origin, format=meta.get("format", ""), task=task, training_data=training)
    if "domain" in meta:
        try:
            d = json.loads(meta["domain"])
        except json.JSONDecodeError:
            return card
        card = ModelCard(name, file, origin, format=card.format, task=card.task,
                         modality=", ".join(d.get("modalities") or ()), anatomy=d.get("anatomy", ""),
                         training_data=d.get("training_data") or training, licence=d.get("licence", ""))
    return card


def shipped_models() -> list[ModelCard]:
    """The models shipped in src/meddiff/checkpoints, with the cards of checkpoints/models.yaml."""
    entries = yaml.safe_load(REGISTRY.read_text(encoding="utf-8")) or {}
    cards = []
    for name, e in entries.items():
        file = SHIPPED_DIR / e["file"]
        fmt = _metadata(file).get("format", "")
        cards.append(ModelCard(name, file, "shipped", format=fmt, task=e.get("task", ""), modality=e.get("modality", ""),
                               anatomy=e.get("anatomy", ""), training_data=e.get("training_data", ""),
                               licence=e.get("licence", ""), scores={str(k): str(v) for k, v in (e.get("scores") or {}).items()},
                               scores_source=e.get("scores_source", ""), readme=e.get("readme", ""),
                               short_task=e.get("short_task", ""), headline=e.get("headline", ""),
                               recommended=bool(e.get("recommended", False))))
    return cards


def default_sampler(card: ModelCard) -> str:
    """What the model runs unless told otherwise, from its file's stored config: "posterior_mean, 1 call",
    "dpm_solver_pp, 10 steps", "VDM ancestral, 256 steps"; "-" for a model that samples nothing."""
    meta = _metadata(card.path)
    try:
        cfg = yaml.safe_load(meta.get("config", "")) or {}
    except yaml.YAMLError:
        return "?"
    fmt = meta.get("format", "")
    if "vdm" in fmt:
        return f"VDM ancestral, {(cfg.get('vdm') or {}).get('sample_steps', '?')} steps"
    s = cfg.get("sampler") if "ddpm" in fmt else None
    if not s:
        return "-"
    one_call = s.get("name") in ("posterior_mean", "student")
    return f"{s.get('name')}, " + ("1 call" if one_call else f"{s.get('steps')} steps")


def models_table(cards: list[ModelCard]) -> str:
    """`meddiff models`' short table: name (* = recommended for its task), task, modality, default sampler, headline score."""
    head = ("name", "task", "modality", "default sampler", "headline score (vs baseline)")
    rows = [((c.name + (" *" if c.recommended else "")), c.short_task or c.task or "-", c.modality.split(" (")[0] or "-",
             default_sampler(c), c.headline or "-") for c in cards]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head) - 1)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in (head, *rows))


def model_roots(roots: list[str | Path] | None = None) -> list[Path]:
    """Folders searched for local models: `roots`, else $MEDDIFF_MODELS, else ./runs."""
    if roots:
        return [Path(r) for r in roots]
    env = os.environ.get(MODELS_ENV, "")
    return [Path(r) for r in env.split(os.pathsep) if r] if env else [Path("runs")]


def _model_file_of(entry: Path) -> Path | None:
    """The model file of a local entry: NAME.safetensors, a checkpoint folder, or a run folder (latest)."""
    if entry.is_file():
        return entry if entry.suffix == ".safetensors" else None
    if (entry / MODEL_FILE).is_file():
        return entry / MODEL_FILE
    for root in (entry, entry / "checkpoints"):
        latest = root / "latest"
        if latest.is_file():
            step = root / latest.read_text(encoding="utf-8").strip()
            if (step / MODEL_FILE).is_file():
                return step / MODEL_FILE
    return None


def local_models(roots: list[str | Path] | None = None) -> list[ModelCard]:
    """Models directly under each root (files NAME.safetensors, run or checkpoint folders NAME)."""
    cards = []
    for root in model_roots(roots):
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir()):
            if entry.name.startswith("."):
                continue
            file = _model_file_of(entry)
            if file is not None:
                name = entry.stem if entry.is_file() else entry.name
                cards.append(card_from_metadata(name, file, "local"))
    return cards


def resolve_checkpoint(name_or_path: str | os.PathLike | None, roots: list[str | Path] | None = None) -> Path | None:
    """An existing path as given; else the shipped or local model of that name (module docstring).
    None stays None. CheckpointError for an unknown name, listing the shipped models."""
    if name_or_path is None:
        return None
    from .formats import ModelSource

    if isinstance(name_or_path, ModelSource):  # resolved already
        return name_or_path  # type: ignore[return-value]
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    for card in shipped_models():
        if card.name == name or card.path.name == name:
            return card.path
    for root in model_roots(roots):
        for candidate in (root / name, root / f"{name}.safetensors"):
            if candidate.exists() and _model_file_of(candidate) is not None:
                return candidate
    shipped = ", ".join(c.name for c in shipped_models())
    where = ", ".join(str(r) for r in model_roots(roots))
    raise CheckpointError(f"checkpoint {name}: no such file or folder, and no model of that name (shipped: {shipped}; "
                          f"local models are looked up in {where}, set ${MODELS_ENV}); see `meddiff models`")


def locate(name_or_path: str | os.PathLike, roots: list[str | Path] | None = None):
    """The checkpoint of a name or path resolved once (checkpointing.ModelSource: the path, its model file
    and header metadata), to be passed to every loader along one run."""
    from .formats import locate_model

    return locate_model(resolve_checkpoint(name_or_path, roots))


def model_config(name_or_path: str | os.PathLike):
    """The resolved config stored in a DDPM/VDM/baseline model file (weights not loaded)."""
    from .formats import config_from_yaml, resolve_model_file  # (drops legacy keys as the loaders do)

    file = resolve_model_file(resolve_checkpoint(name_or_path))
    meta = _metadata(file)
    if "config" not in meta:
        raise CheckpointError(f"{file}: no stored config (format {meta.get('format')!r}); expected a meddiff model file")
    return config_from_yaml(meta["config"], file)


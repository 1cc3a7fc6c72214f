"""Configuration: frozen dataclasses, parsed once at the edge (YAML file + command-line overrides).

A config file has the sections ``data``, ``task``, ``model``, ``diffusion``, ``sampler``,
``train``, ``vdm``, ``baseline``, ``augment`` and ``distill``, and the top-level key ``objective`` (``ddpm``: the conditional DDPM of
Med-cDiff, the sections ``diffusion``/``sampler``; ``vdm``: the variational diffusion model of
Kingma et al. 2021 / Medical VDM, the section ``vdm``; ``baseline``: a learned baseline of the
section ``baseline``, e.g. pix2pix or SRGAN; ``distill``: a one-call student of a DDPM teacher, the
section ``distill``). Unknown keys and values of the wrong type are errors that name the key. Modules
never see a dict: they take the dataclass (or explicit arguments) they need. The resolved
config is saved beside every checkpoint (`to_dict` / `from_dict` round-trip exactly).

Each section sits with its rules: sections.py (data, task, augment, model, sampler, train), ddpm.py
(diffusion), vdm.py, baseline.py and distill.py; this module holds Config, the parsing (types, YAML,
overrides) and the order in which the rules run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from ..errors import ConfigError
from . import baseline, ddpm, distill, sections, vdm
from .baseline import BaselineConfig
from .ddpm import MAX_TIMESTEPS, DiffusionConfig
from .distill import DistillConfig
from .sections import AugmentConfig, DataConfig, ModelConfig, SamplerConfig, TaskConfig, TrainConfig
from .vdm import VDMConfig

__all__ = ["AugmentConfig", "BaselineConfig", "Config", "DataConfig", "DiffusionConfig", "DistillConfig", "MAX_TIMESTEPS",
           "MAX_YAML_DEPTH", "ModelConfig", "SamplerConfig", "TaskConfig", "TrainConfig", "VDMConfig", "check_override",
           "from_dict", "load", "load_yaml", "parse_override", "save", "to_dict"]


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    vdm: VDMConfig = field(default_factory=VDMConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    objective: Literal["ddpm", "vdm", "baseline", "distill"] = "ddpm"


# --------------------------------------------------------------------------- parsing


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` and convert lists to tuples; raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if a is type(None) and value is None:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


def _build(cls: type, values: Any, where: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        head = f"{where}: unknown key(s)" if where else "unknown top-level section(s)"
        raise ConfigError(f"{head} {unknown}; expected some of {names}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    return cls(**kwargs)


def from_dict(values: Mapping[str, Any] | None) -> Config:
    """Build a Config from nested dicts; unknown keys or wrong types raise ConfigError."""
    cfg = _build(Config, values or {}, "")
    _validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) suitable for YAML/JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.steps=100' -> (['train', 'steps'], 100), 'objective=vdm' -> (['objective'], 'vdm'); values parsed as YAML."""
    if "=" not in text:
        hint = (" (a path? --resume and the other flags take no path here: the run folder is --out)"
                if "/" in text or Path(text).exists() else "")
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.steps=100{hint}")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if path in (["objective"],):  # top-level scalar keys
        try:
            return path, yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    if len(path) != 2:
        raise ConfigError(f"override {text!r}: expected SECTION.KEY=VALUE, e.g. train.steps=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    return path, value


def check_override(text: str, path: list[str], value: Any) -> None:
    """ConfigError naming the override (not the YAML file) if its key is unknown or its value has the wrong type."""
    hints = typing.get_type_hints(Config)
    section = path[0]
    if section not in hints:
        raise ConfigError(f"override {text!r}: unknown key {section!r}; expected one of {sorted(hints)}")
    tp = hints[section]
    if len(path) == 1 or not dataclasses.is_dataclass(tp):
        where, tp = section, (tp if len(path) == 1 else None)
    else:
        sub = typing.get_type_hints(tp)
        if path[1] not in sub:
            raise ConfigError(f"override {text!r}: unknown key {path[1]!r} in section {section!r}; "
                              f"expected one of {[f.name for f in dataclasses.fields(tp)]}")
        where, tp = f"{section}.{path[1]}", sub[path[1]]
    if tp is not None:
        try:
            _coerce(value, tp, where)
        except ConfigError as e:
            raise ConfigError(f"override {text!r}: {e}") from None


MAX_YAML_DEPTH = 64  # a config is 2 levels deep; deeper nesting is refused before Python's recursion limit


class _ConfigLoader(yaml.SafeLoader):
    """safe_load that refuses what a config never needs and an attacker or a typo would use: a key given twice
    in one mapping (the later would silently win over part of the earlier), nesting deeper than
    MAX_YAML_DEPTH, and aliases of lists or mappings (an alias bomb: 1 KB expanding to gigabytes)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and not isinstance(node, yaml.ScalarNode):
                raise ConfigError(f"line {event.start_mark.line + 1}: alias *{event.anchor} repeats a list or mapping; "
                                  "expected a config without YAML aliases of lists or mappings (write the values out)")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"line {mark.line + 1}: nested more than {MAX_YAML_DEPTH} levels deep; expected "
                                  "SECTION: {KEY: VALUE} (2 levels)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader names it
            line = key_node.start_mark.line + 1
            if first is not None:
                raise ConfigError(f"line {line}: key {key!r} is given twice (first on line {first}); expected each key "
                                  "once per section (merge the two)")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml(text: str, where: str) -> Any:
    """Parse config YAML with :class:`_ConfigLoader`; errors are ConfigError naming `where`."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply; expected SECTION: {{KEY: VALUE}}") from None


def load(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (or start from defaults) and apply SECTION.KEY=VALUE overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {p} is not UTF-8 text (byte {e.start}: {e.reason}); expected a YAML file") from None
        loaded = load_yaml(text, f"config file {p}")
        if loaded is None:
            raise ConfigError(f"config file {p} holds no settings (empty, or only comments); expected a mapping of "
                              "sections (e.g. 'train: {steps: 1000}'), or no --config for the defaults")
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: expected a mapping of sections at the top level")
        values = loaded
    values = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in values.items()}
    for text in overrides:
        path_, value = parse_override(text)
        check_override(text, path_, value)
        if len(path_) == 1:
            values[path_[0]] = value
            continue
        section, key = path_
        sec = values.setdefault(section, {})
        if not isinstance(sec, dict):
            raise ConfigError(f"override {text!r}: section {section!r} is not a mapping in the config")
        sec[key] = value
    try:
        return from_dict(values)
    except ConfigError as e:
        src = f" in {path}" if path is not None else ""
        raise ConfigError(f"{e}{src}") from None


def save(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from ..io.atomic import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _validate(cfg: Config) -> None:
    """Every section's rules, in one order (the first broken rule is the one reported)."""
    sections.validate_model(cfg)
    ddpm.validate(cfg)
    sections.validate_train_and_data(cfg)
    vdm.validate(cfg)
    baseline.validate(cfg)
    distill.validate(cfg)
    sections.validate_volume(cfg)

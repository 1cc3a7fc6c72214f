"""The package graph of src/meddiff (imports inside functions included) has no loops, the trainer reaches
no model family through any chain of imports, restoring and scoring reach nothing of the trainer, every
objective names its checkpoint format (issue 18), and no function is longer than 60 lines (issue 27)."""

import ast
from collections import defaultdict
from pathlib import Path

from meddiff.checkpointing import DDPM, REGISTRY, format_for, format_of
from meddiff.objectives import OBJECTIVES

SRC = Path(__file__).resolve().parents[1] / "src" / "meddiff"


def _imports(path: Path, src: Path = SRC) -> set[str]:
    """Absolute module names `path` (a file under `src`, the meddiff folder) imports, anywhere in the
    file (relative imports resolved)."""
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    package = parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            out.add(".".join(base + ([node.module] if node.module else [])))
    return out


def package_loops(src: Path = SRC) -> list[tuple[str, str]]:
    """Pairs of packages (top-level modules count as packages) each reachable from the other."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in src.rglob("*.py"):
        here = path.relative_to(src).parts[0].removesuffix(".py")
        for mod in _imports(path, src):
            names = mod.split(".")
            if names[0] == "meddiff" and len(names) > 1 and names[1] != here:
                graph[here].add(names[1])

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in graph.get(a, ()))

    return sorted({tuple(sorted((a, b))) for a in list(graph) for b in graph[a] if reaches(b, a, {b})})


def test_no_package_imports_one_that_imports_it_back():
    assert package_loops() == []


def test_the_training_loop_names_no_model_family():
    imported = _imports(SRC / "train" / "loop.py")
    assert not [m for m in imported if m.split(".")[1:2] in (["vdm"], ["baselines"], ["diffusion"], ["nn"])], imported


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _load_time_imports(path: Path, src: Path = SRC) -> set[str]:
    """The meddiff modules importing `path` runs (imports at module and class level, not inside functions),
    with the packages whose __init__ they run on the way (`from ..a.b import c` runs meddiff.a, meddiff.a.b and,
    if it is a module, meddiff.a.b.c)."""
    name = _module_name(path, src)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                found.update({module, *(f"{module}.{a.name}" for a in node.names)})
            visit(ast.iter_child_nodes(node))

    visit(ast.parse(path.read_text()).body)
    modules = {_module_name(p, src) for p in src.rglob("*.py")}
    out = {".".join(m.split(".")[:i]) for m in found if m.startswith("meddiff.") for i in range(2, m.count(".") + 2)}
    return (out & modules) - {name}


def import_chain(package: str, forbidden: set[str], src: Path = SRC, allowed: frozenset[str] = frozenset()
                 ) -> list[str] | None:
    """A shortest chain of load-time imports (see `_load_time_imports`) from a module of `package` to a module of
    one of the `forbidden` packages other than the `allowed` modules, or None if there is none."""
    graph = {_module_name(p, src): _load_time_imports(p, src) for p in src.rglob("*.py")}
    starts = [m for m in graph if m.split(".")[1:2] == [package]]
    previous: dict[str, str | None] = dict.fromkeys(starts)
    queue = list(starts)
    while queue:
        here = queue.pop(0)
        if here.split(".")[1] in forbidden and here not in allowed:
            chain = [here]
            while previous[chain[-1]] is not None:
                chain.append(previous[chain[-1]])  # type: ignore[arg-type]
            return chain[::-1]
        for nxt in sorted(graph.get(here, ())):
            if nxt not in previous:
                previous[nxt] = here
                queue.append(nxt)
    return None


def test_the_trainer_reaches_no_model_family_through_any_chain_of_imports():
    """train/ is given its Objective class by `meddiff train` (meddiff.objectives.objective_class): importing any
    module of train/ loads no model family, network, sampler, family adapter or the objective registry; of
    meddiff.objectives only the protocol (objectives/protocol.py, and the package's __init__, which loads no
    family) is the loop's."""
    families = {"diffusion", "vdm", "baselines", "distill", "objectives", "nn", "samplers", "restore"}
    protocol = frozenset({"meddiff.objectives", "meddiff.objectives.protocol"})
    assert import_chain("train", families, allowed=protocol) is None, import_chain("train", families, allowed=protocol)


def test_restoring_and_scoring_reach_nothing_of_the_trainer_through_any_chain_of_imports():
    """The EMA-weights choice of sampling lives in meddiff.checkpointing (weights.py, ema.py), not in train/."""
    for package in ("restore", "metrics", "evaluation"):
        assert import_chain(package, {"train"}) is None, (package, import_chain(package, {"train"}))


def test_restoring_and_scoring_import_nothing_of_the_trainer_even_at_run_time():
    """Imports inside functions count too: the device rule they share with training is meddiff.config.device."""
    for package in ("restore", "metrics", "evaluation", "uncertainty", "domain"):
        assert "train" not in _package_imports(package), (package, _package_imports(package))


def test_the_chain_finder_sees_indirect_imports(tmp_path):
    (tmp_path / "meddiff" / "a").mkdir(parents=True)
    (tmp_path / "meddiff" / "b").mkdir()
    (tmp_path / "meddiff" / "c").mkdir()
    (tmp_path / "meddiff" / "__init__.py").write_text("")
    (tmp_path / "meddiff" / "a" / "__init__.py").write_text("from .m import f\n")
    (tmp_path / "meddiff" / "a" / "m.py").write_text("from ..b import g\n\ndef f():\n    from ..c import x\n")
    (tmp_path / "meddiff" / "b" / "__init__.py").write_text("from meddiff.c.y import z\n")
    (tmp_path / "meddiff" / "c" / "__init__.py").write_text("")
    (tmp_path / "meddiff" / "c" / "y.py").write_text("z = 1\n")
    src = tmp_path / "meddiff"
    assert import_chain("a", {"c"}, src) in (["meddiff.a", "meddiff.a.m", "meddiff.b", "meddiff.c"],
                                             ["meddiff.a.m", "meddiff.b", "meddiff.c"])
    assert import_chain("b", {"a"}, src) is None


def test_every_objective_has_a_registered_format_and_the_protocol_members():
    for name, cls in OBJECTIVES.items():
        assert name in (REGISTRY[cls.format].objective, *REGISTRY[cls.format].also) and format_for(name) == cls.format
        for member in ("describe_data", "degradation", "size_multiple", "class_labels", "optimisers", "attach", "step",
                       "val_batch", "metadata"):
            assert callable(getattr(cls, member)), (name, member)


def test_format_of_reads_the_header_and_says_none_for_unreadable_files(tmp_path):
    assert format_of(SRC / "checkpoints" / "demo_sr_x4.safetensors") == DDPM.name
    (tmp_path / "x.safetensors").write_bytes(b"not a safetensors file")
    assert format_of(tmp_path / "x.safetensors") is None and format_of(tmp_path / "missing") is None


def test_no_argparse_namespace_below_the_commands():
    """Libraries take request dataclasses (restore.Request, evaluation.EvaluationRequest, evaluation.demo.DemoRequest);
    only cli.py, commands/ and the study server's own __main__ parse arguments."""
    users = sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if "argparse" in _imports(p)
                   and p.relative_to(SRC).parts[0] not in ("commands", "cli.py"))
    assert users == ["study/server.py"], users


def _package_imports(package: str) -> set[str]:
    """The meddiff packages (second name) the modules of `package` import, anywhere in their files."""
    return {m.split(".")[1] for p in (SRC / package).rglob("*.py") for m in _imports(p)
            if m.startswith("meddiff.") and len(m.split(".")) > 1} - {package}


def test_scoring_knows_no_model_family_and_nothing_of_the_trainer():
    """metrics scores images (no model family: the VDM's bits/dim are computed in vdm and passed in);
    evaluation scores and reports (the device is the command's; nothing from train)."""
    families = {"vdm", "baselines", "diffusion", "distill", "objectives"}
    assert not _package_imports("metrics") & (families | {"train"}), _package_imports("metrics")
    assert "train" not in _package_imports("evaluation"), _package_imports("evaluation")


def test_optional_objective_hooks_are_declared_not_looked_for():
    """Every objective has the optional hooks (meddiff.objectives.protocol.OptionalHooks: training_sets, sample_grid,
    ema_denoiser) with their defaults, so the registry and the loop call them without hasattr."""
    for name, cls in OBJECTIVES.items():
        assert callable(cls.training_sets) and callable(cls.ema_denoiser) and isinstance(cls.sample_grid, bool), name
    assert [n for n, c in OBJECTIVES.items() if c.sample_grid] == ["ddpm"]
    for path in (SRC / "objectives" / "registry.py", SRC / "train" / "tensorboard.py"):
        assert "hasattr(" not in path.read_text(), path


MAX_FUNCTION_LINES = 60  # principle 9: functions of a screen or less


def test_no_function_is_longer_than_a_screen():
    """No function or method in src/meddiff spans more than MAX_FUNCTION_LINES lines (def to last line, its
    docstring included; issue 27 split the 11 that did)."""
    long = [f"{p.relative_to(SRC)}:{n.name} {n.end_lineno - n.lineno + 1} lines"
            for p in sorted(SRC.rglob("*.py")) for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], long

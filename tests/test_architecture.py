"""The package graph of src/meddiff (imports inside functions included) has no loops, the training
loop names no model family, and every objective names its checkpoint format (issue 18)."""

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
    """Every objective has the optional hooks (meddiff.objective.OptionalHooks: training_sets, sample_grid,
    ema_denoiser) with their defaults, so the registry and the loop call them without hasattr."""
    for name, cls in OBJECTIVES.items():
        assert callable(cls.training_sets) and callable(cls.ema_denoiser) and isinstance(cls.sample_grid, bool), name
    assert [n for n, c in OBJECTIVES.items() if c.sample_grid] == ["ddpm"]
    for path in (SRC / "objectives.py", SRC / "train" / "tensorboard.py"):
        assert "hasattr(" not in path.read_text(), path

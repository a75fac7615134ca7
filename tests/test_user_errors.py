"""The rules that keep every user error one line (issue 26), checked over the whole code base rather than case by
case: input is judged by raising a UserError (never a bare ValueError the command line would show as a traceback),
every float a study or a flag takes is finite and in its range, and the files synscale writes into a workdir are
read back by one reader that names a damaged file and what to do."""

import argparse
import ast
import dataclasses
import math
import typing
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "synscale"
BUILTIN = {"ValueError", "RuntimeError", "KeyError", "TypeError", "Exception", "IndexError", "LookupError"}
# modules whose ValueErrors are config checks: schema.from_dict turns each into a ConfigError naming the key
CONFIG_CHECKS = {"config.py", "train/config.py", "grid.py", "schema.py"}
# built-in errors that are not about a user's input: a caller's bug, guarded where user input comes in
INTERNAL = {
    ("analysis/fit.py", "fit_power_law"), ("analysis/fit.py", "bootstrap_fit"), ("analysis/fit.py", "fit_saturating"),
    ("analysis/fit.py", "class_fits_vectorised"), ("analysis/predict.py", "fit_predictor"),
    ("analysis/predict.py", "loo_predictions"), ("analysis/predict.py", "evaluate_predictor"),
    ("lru.py", "__init__"), ("study/plan.py", "add"), ("registry.py", "deco"), ("data/encoding.py", "_encode"),
    ("generate/stages.py", "synthetic_set"), ("train/data.py", "__init__"), ("train/models.py", "forward_intermediates"),
    ("train/schedule.py", "_epochs"), ("train/launch.py", "torchrun"), ("train/ray_train.py", "ray_train"),
    ("study/build.py", "_val_node"),
}


def _builtin_raises() -> list[tuple[str, str, int, str]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        stack: list[str] = []

        class Visit(ast.NodeVisitor):
            def visit_FunctionDef(self, node):
                stack.append(node.name)
                self.generic_visit(node)
                stack.pop()

            visit_AsyncFunctionDef = visit_FunctionDef

            def visit_Raise(self, node):
                e = node.exc
                if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in BUILTIN:
                    out.append((rel, stack[-1] if stack else "<module>", node.lineno, e.func.id))

        Visit().visit(ast.parse(path.read_text()))
    return out


def test_input_is_judged_by_user_errors():
    """A bare ValueError (or KeyError, RuntimeError) about what a user gave escapes the command line as a
    traceback: outside the config checks, built-in errors are raised only for a caller's bug (listed)."""
    raises = _builtin_raises()
    assert len(raises) > 50  # the scan sees the code base (the config checks alone raise dozens)
    bad = [r for r in raises if r[0] not in CONFIG_CHECKS and (r[0], r[1]) not in INTERNAL]
    assert not bad, "raise a synscale.errors.UserError (ConfigError, DataError) for user input: " + repr(bad)
    stale = INTERNAL - {(r[0], r[1]) for r in raises}
    assert not stale, f"listed as internal but raise nothing built-in any more: {stale}"


def _config_classes():
    from synscale.config import StudyConfig

    seen, todo = [], [StudyConfig]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        for tp in typing.get_type_hints(cls).values():
            for t in (tp, *typing.get_args(tp)):
                if dataclasses.is_dataclass(t):
                    todo.append(t)
    return seen


def _required(cls):
    hints = typing.get_type_hints(cls)
    return {f.name: {str: "x", int: 1, float: 1.0, list[int]: [100], list[str]: ["x"]}.get(hints[f.name], "x")
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_key_of_a_study_is_finite(value):
    from synscale.schema import ConfigError, from_dict

    floats = [(cls, f.name) for cls in _config_classes() for f in dataclasses.fields(cls)
              if typing.get_type_hints(cls)[f.name] is float]
    assert len(floats) >= 20  # guidance, lr, fractions, ...: the walk reaches the nested tables
    for cls, name in floats:
        with pytest.raises(ConfigError, match=f"'{name}' must be a finite number"):
            from_dict(cls, {**_required(cls), name: value}, "study.toml")


def _actions():
    from synscale.cli import build_parser

    todo, out = [("synscale", build_parser())], []
    while todo:
        prog, parser = todo.pop()
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo += [(f"{prog} {n}", p) for n, p in a.choices.items()]
            else:
                out.append((prog, a))
    return out


def test_every_number_flag_is_checked():
    """No flag parses a bare int or float: each number flag takes schema.number (finite, in its range), the rule
    the config keys use; nan, inf and words are one line."""
    from synscale.cli import main

    numbers = [(prog, a) for prog, a in _actions() if getattr(a.type, "__module__", "") == "synscale.schema"]
    bare = [(prog, a.option_strings) for prog, a in _actions() if a.type in (int, float) and not a.choices]
    assert not bare, bare
    assert len(numbers) >= 30
    for prog, a in numbers:
        for text in ("nan", "inf", "lots"):
            with pytest.raises(argparse.ArgumentTypeError, match="must be"):
                a.type(text)
    assert main(["fit", "w", "--bootstrap", "nan"]) == 2


def test_read_json_names_the_file_and_the_fix(tmp_path):
    from synscale.atomic import read_json
    from synscale.errors import DataError

    stage = tmp_path / "w" / "stages" / "train" / "0123abcd"
    stage.mkdir(parents=True)
    (stage / "summary.json").write_text('{"loss": 0.')
    with pytest.raises(DataError, match=rf"summary.json: not readable JSON .*delete the stage {stage} and rerun"):
        read_json(stage / "summary.json")
    (tmp_path / "w" / "study.json").write_text("")
    with pytest.raises(DataError, match="study.json: empty; rerun the study"):
        read_json(tmp_path / "w" / "study.json")
    (tmp_path / "w" / "study.json").write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(DataError, match="not UTF-8"):
        read_json(tmp_path / "w" / "study.json")
    assert read_json(tmp_path / "nope.json", default={"a": 1}) == {"a": 1}
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "nope.json")
    (stage / "pick.json").write_text('{"best": "s"}')
    assert read_json(stage / "pick.json") == {"best": "s"}


def test_workdir_json_is_read_by_one_reader():
    """Every JSON file synscale reads back from a workdir goes through atomic.read_json (a bare json.loads of a
    file's text would give a JSONDecodeError traceback when the file is cut short)."""
    import re

    direct = []
    for path in sorted(SRC.rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"json\.loads?\(.*\b(read_text|open)\(", line):
                direct.append(f"{path.relative_to(SRC)}:{i}")
    # user files (a weights dir's family.json, a pipeline's model_index.json, a labels JSON) are judged where read
    allowed = {"generate/builtin.py", "generate/safety.py", "study/preflight.py", "labels.py", "train/launch.py"}
    assert not [d for d in direct if d.split(":")[0] not in allowed], direct


def test_bad_sample_survives_a_worker_process():
    """A BadSample raised in a loader or shard-writer process reaches the parent whole (it pickled to a TypeError)."""
    import pickle

    from synscale.errors import BadSample

    e = pickle.loads(pickle.dumps(BadSample("shard-0.tar: sample 'a'", "bad label", "shard-0.tar: sample 'a' ...")))
    assert (type(e), e.where, e.reason, str(e)) == (BadSample, "shard-0.tar: sample 'a'", "bad label",
                                                     "shard-0.tar: sample 'a' ...")


def test_every_number_key_of_a_study_has_its_range():
    """No number a study takes means anything below zero (seeds, sizes, counts, rates, fractions): each key
    refuses -1 when the file is loaded, naming the key (a negative seed failed inside numpy, after models trained)."""
    from synscale.schema import ConfigError, from_dict

    numbers = [(cls, f.name, typing.get_type_hints(cls)[f.name]) for cls in _config_classes()
               for f in dataclasses.fields(cls) if typing.get_type_hints(cls)[f.name] in (int, float)]
    assert len(numbers) >= 60
    for cls, name, tp in numbers:
        with pytest.raises(ConfigError, match=rf"{name}\b"):
            from_dict(cls, {**_required(cls), name: tp(-1)}, "study.toml")

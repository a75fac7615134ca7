"""Every bad input of the catalogue (tests/bad_inputs.py) gives one clear line and a non-zero exit, never a
traceback; docs/reliability.md lists every case."""

import re
from pathlib import Path

import pytest

from bad_inputs import CASES, Fixtures, run_case


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return Fixtures(tmp_path_factory.mktemp("shared"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_line(case, fixtures, tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    code, err = run_case(case, tmp_path / "case", fixtures)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("synscale: error:")]
    assert code == case.code and len(lines) == 1, err
    assert case.expect in lines[0], lines[0]


def test_debug_shows_the_traceback(tmp_path, capsys):
    from synscale.cli import main

    with pytest.raises(Exception, match="no such study file"):
        main(["--debug", "study", str(tmp_path / "nope.toml"), "--dry-run"])


def test_the_catalogue_is_documented():
    doc = (Path(__file__).parents[1] / "docs" / "reliability.md").read_text()
    listed = set(re.findall(r"`([a-z0-9-]+)`\)", doc))
    assert len(CASES) >= 50 and len({c.id for c in CASES}) == len(CASES)
    assert {c.id for c in CASES} <= listed, sorted({c.id for c in CASES} - listed)

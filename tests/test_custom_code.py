"""Custom code where a user expects it: `--judge mymodule:fn` / `--scorer` import from the current directory
and accept path/to/file.py:fn; an unknown judge or a scorer missing its argument says what is known or
needed (issue 25, item 3)."""

from __future__ import annotations

import pytest

from mm_unidpo.onpolicy.judges import judge_options, make_judge
from mm_unidpo.onpolicy.judges.scorers import resolve_scorer

SCORER = "def fn(record, response):\n    return float(len(response))\n"


def test_a_scorer_module_in_the_current_directory_and_a_file_path(tmp_path, monkeypatch):
    (tmp_path / "my_cwd_judge.py").write_text(SCORER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert make_judge("my_cwd_judge:fn")([(None, "abc")]) == [{"score": 3.0}]
    other = tmp_path / "sub"
    other.mkdir()
    (other / "file_judge.py").write_text(SCORER)
    assert resolve_scorer(f"{other / 'file_judge.py'}:fn")(None, "ab") == 2.0


def test_unknown_names_say_what_is_known_or_needed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"unknown judge 'nosuch'; known: rule, objects"):
        judge_options("nosuch")
    with pytest.raises(ValueError, match=r"cannot import 'no_such_module' \(looked in the current directory"):
        make_judge("no_such_module:fn")
    with pytest.raises(ValueError, match=r"no file"):
        resolve_scorer(f"{tmp_path / 'missing.py'}:fn")
    (tmp_path / "present.py").write_text(SCORER)
    with pytest.raises(ValueError, match=r"'present' has no 'other'"):
        resolve_scorer("present:other")
    with pytest.raises(ValueError, match=r"'object_overlap' needs --scorer-arg objects=\.\.\."):
        resolve_scorer("object_overlap")

"""Data sets through `datasets`: local jsonl / json / parquet files, selection, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import ConfigError, TaskError
from harness.evals.dataset import Instance, Selection, load_instances, parse_slice, select
from tests.evals.conftest import make_project

# The shared data sets sit beside the repository (../shared), wherever it is checked out.
LITE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "swebench_lite_test.jsonl"
)


def test_local_jsonl_round_trip(tmp_path: Path) -> None:
    project = make_project(tmp_path, n=3)
    insts = load_instances(str(project.dataset), cache_dir=tmp_path / "hf")
    assert [i.instance_id for i in insts] == [r["instance_id"] for r in project.records]
    first = insts[0]
    assert first.repo == "harness-tests/calc" and (first.owner, first.name) == (
        "harness-tests",
        "calc",
    )
    assert first.fail_to_pass == ("tests/test_calc.py::test_add",)
    assert first.pass_to_pass == ("tests/test_calc.py::test_mul",)
    assert first.setup_commit == project.records[0]["environment_setup_commit"]
    assert Instance.from_record(first.to_record()) == first


def test_parquet_and_json_list_and_list_typed_tests(tmp_path: Path) -> None:
    import datasets

    record = {
        "instance_id": "o__n-1",
        "repo": "o/n",
        "base_commit": "abc",
        "FAIL_TO_PASS": ["t::a", "t::b"],  # a list, not a JSON string
        "PASS_TO_PASS": [],
        "version": "0.20",
    }
    parquet = tmp_path / "d.parquet"
    datasets.Dataset.from_list([record]).to_parquet(str(parquet))
    listed = tmp_path / "d.json"
    listed.write_text(json.dumps([record]))
    for path in (parquet, listed):
        (inst,) = load_instances(str(path), cache_dir=tmp_path / "hf")
        assert inst.fail_to_pass == ("t::a", "t::b") and inst.version == "0.20"
        assert inst.setup_commit == "abc"  # no environment_setup_commit: the base commit


def test_the_real_lite_split_loads_and_selects() -> None:
    if not LITE.exists():
        pytest.skip(f"{LITE} is not on this machine")
    insts = load_instances(str(LITE))
    assert len(insts) == 300
    chosen, unknown = select(insts, Selection.parse(None, r"^psf__requests-", "0:3"))
    assert [i.repo for i in chosen] == ["psf/requests"] * 3 and unknown == []
    django = next(i for i in insts if i.instance_id == "django__django-11099")
    assert django.version == "3.0" and django.fail_to_pass


def test_selection_ids_filter_slice_and_unknown_ids(tmp_path: Path) -> None:
    insts = load_instances(str(make_project(tmp_path, n=5).dataset), cache_dir=tmp_path / "hf")
    ids = [i.instance_id for i in insts]
    chosen, unknown = select(insts, Selection.parse(f"{ids[3]},nope-1,{ids[0]},nope-1"))
    assert [i.instance_id for i in chosen] == [ids[0], ids[3]]  # data-set order
    assert unknown == ["nope-1"]
    chosen, _ = select(insts, Selection.parse(None, r"-[2-4]$", "1:"))
    assert [i.instance_id for i in chosen] == ids[2:4]
    assert parse_slice("7") == (None, 7) and parse_slice(":3") == (None, 3)
    assert parse_slice("2:") == (2, None)


@pytest.mark.parametrize("bad", ["a:b", "1:2:3", "x"])
def test_bad_slice(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_slice(bad)


def test_bad_regex() -> None:
    with pytest.raises(ConfigError, match="regex"):
        Selection.parse(None, "(")


def test_malformed_records(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="lacks base_commit"):
        Instance.from_record({"instance_id": "x", "repo": "o/n"})
    with pytest.raises(TaskError, match="owner/name"):
        Instance.from_record({"instance_id": "x", "repo": "nope", "base_commit": "a"})
    with pytest.raises(TaskError, match="FAIL_TO_PASS is not a JSON list"):
        Instance.from_record(
            {"instance_id": "x", "repo": "o/n", "base_commit": "a", "FAIL_TO_PASS": "[oops"}
        )
    dup = tmp_path / "dup.jsonl"
    row = json.dumps({"instance_id": "x", "repo": "o/n", "base_commit": "a"})
    dup.write_text(row + "\n" + row + "\n")
    with pytest.raises(TaskError, match="twice"):
        load_instances(str(dup), cache_dir=tmp_path / "hf")


def test_unloadable_sources(tmp_path: Path) -> None:
    wrong = tmp_path / "d.csv"
    wrong.write_text("a,b\n")
    with pytest.raises(ConfigError, match=r"not a \.json"):
        load_instances(str(wrong))
    # Neither a file nor a reachable hub data set (this machine is offline, and the id is
    # not a real one anywhere): a TaskError that says how to work offline.
    with pytest.raises(TaskError, match="could not load") as info:
        load_instances("harness-tests/no-such-dataset", cache_dir=tmp_path / "hf")
    assert info.value.hint and "local .jsonl" in info.value.hint

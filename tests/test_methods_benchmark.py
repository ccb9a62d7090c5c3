"""The methods benchmark's resume logic: finished steps are never recomputed, unfinished ones are."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _methods_lib import Plan, StepCache  # noqa: E402


def test_finished_step_is_read_back_not_recomputed(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"map50_95": 0.5}

    first = StepCache(tmp_path).get_or_run("row-lamp", compute)
    again = StepCache(tmp_path).get_or_run("row-lamp", compute)  # a new process resuming
    assert first == again == {"map50_95": 0.5}
    assert len(calls) == 1
    assert json.loads((tmp_path / "row-lamp.json").read_text())["value"] == {"map50_95": 0.5}


def test_interrupted_step_leaves_no_file_and_reruns(tmp_path):
    cache = StepCache(tmp_path)

    def crash():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_run("row-l1", crash)
    assert not cache.path("row-l1").exists()
    assert cache.get_or_run("row-l1", lambda: {"done": True}) == {"done": True}


def test_cache_keys_follow_the_settings_that_change_numbers():
    plan = Plan.quick()
    assert plan.with_methods(("lamp",)).rows_key() == plan.rows_key()  # selecting methods reuses rows
    longer = replace(plan, finetune_epochs=plan.finetune_epochs + 1)
    assert longer.rows_key() != plan.rows_key()
    assert longer.baseline_key() == plan.baseline_key()  # the baseline survives finetune changes
    assert replace(plan, imgsz=plan.imgsz * 2).baseline_key() != plan.baseline_key()

"""The methods benchmark's resume logic: finished steps are never recomputed, unfinished ones are."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _methods_lib import Plan, StepCache, config_hash  # noqa: E402


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


def test_your_own_model_and_data_key_the_cache_and_unset_ones_keep_old_names():
    plan = Plan.quick()
    assert replace(plan, data="mine/data.yaml").baseline_key() != plan.baseline_key()
    assert replace(plan, model="yolo11n.yaml").rows_key() != plan.rows_key()
    assert replace(plan, model=None, data=None).rows_key() == plan.rows_key()
    assert config_hash({"imgsz": 96, "model": None}) == config_hash({"imgsz": 96})  # caches from before --model


def test_a_checkpoint_is_the_baseline_and_a_data_yaml_is_the_dataset(tmp_path, trained_yolov8n, shapes_data):
    from methods import Benchmark

    bench = Benchmark(replace(Plan.quick(), model=trained_yolov8n, data=shapes_data), tmp_path)
    assert bench.dataset() == Path(shapes_data)
    assert bench.baseline() == str(Path(trained_yolov8n).resolve())
    assert not list(tmp_path.rglob("baseline-*"))  # nothing trained, nothing cached


@pytest.mark.parametrize("flag", ["--data", "--model"])
def test_missing_model_or_data_is_one_line_before_any_work(tmp_path, capsys, flag):
    from methods import main

    assert main([flag, str(tmp_path / "nope.pt"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {flag} ") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_training_settings_reach_every_run_and_key_both_caches(tmp_path, capsys):
    from methods import Benchmark, main, settings_for_every_run

    settings = settings_for_every_run(["mosaic=0.5", "cos_lr=True"], None)
    plan = replace(Plan.quick(), train_settings=settings)
    assert plan.baseline_key() != Plan.quick().baseline_key() and plan.rows_key() != Plan.quick().rows_key()
    recipe = Benchmark(plan, tmp_path).recipe
    assert recipe["mosaic"] == 0.5 and recipe["cos_lr"] is True and recipe["nbs"] == plan.batch
    for word, expected in (("mosiac=0", "mosaic"), ("epochs=3", "--baseline-epochs")):
        assert main(["--out", str(tmp_path / "out"), word]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err
    assert not (tmp_path / "out").exists()

"""Precision and memory layout chosen by measurement, and the machine recorded on runs."""

import json
import pathlib

import numpy as np
import pytest

from fer_lab import machine
from fer_lab.data import load, split
from fer_lab.models import create
from fer_lab.training import hardware
from fer_lab.training.hardware import Setting


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh decision cache: on disk in the test's folder, none in the process."""
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path))
    hardware._decide.cache_clear()
    yield tmp_path / "hardware.json"
    hardware._decide.cache_clear()


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(machine, "native_bf16", lambda: False)


@pytest.mark.parametrize("flags, level", [
    ({"sse2", "avx", "avx2", "fma"}, "avx2"),
    ({"avx2", "avx512f"}, "avx512"),
    ({"avx2", "avx512f", "avx512_bf16"}, "avx512_bf16"),
    ({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "amx"),
])
def test_isa_names_the_best_level_the_flags_allow(flags, level):
    assert machine.isa(frozenset(flags)) == level


def test_bf16_is_a_candidate_only_where_it_runs_natively(monkeypatch):
    monkeypatch.setattr(machine, "native_bf16", lambda: False)
    assert [s.name for s in hardware.candidates()] == ["fp32", "fp32+cl"]
    monkeypatch.setattr(machine, "native_bf16", lambda: True)
    assert [s.name for s in hardware.candidates()] == ["fp32", "fp32+cl", "bf16", "bf16+cl"]


def test_explicit_settings_are_obeyed_even_where_slow(no_native_bf16):
    assert hardware.candidates("bf16", True) == [Setting("bf16", True)]
    assert hardware.candidates("fp32", "auto") == [Setting("fp32", False), Setting("fp32", True)]
    with pytest.raises(ValueError, match="mixed_precision"):
        hardware.candidates("fp16")
    with pytest.raises(ValueError, match="channels_last"):
        hardware.candidates("auto", "yes")


def test_auto_picks_the_fastest_probes_once_and_caches_on_disk(cache, monkeypatch,
                                                               no_native_bf16):
    probed = []

    def fake_rates(mode, arch, width, batch, options, on):
        probed.extend(o.name for o in options)
        return {o.name: {"fp32": 100.0, "fp32+cl": 160.0}[o.name] for o in options}

    monkeypatch.setattr(hardware, "probe_rates", fake_rates)
    assert hardware.resolve("vgg", 32, 128) == Setting("fp32", True)
    assert hardware.resolve("vgg", 32, 128) == Setting("fp32", True)
    assert sorted(probed) == ["fp32", "fp32+cl"]  # once per candidate
    entry, = json.loads(cache.read_text())["decisions"].values()
    assert entry["choice"] == "fp32+cl" and entry["rates"] == {"fp32": 100.0, "fp32+cl": 160.0}
    hardware._decide.cache_clear()  # a new process reads the file instead of probing
    assert hardware.resolve("vgg", 32, 128) == Setting("fp32", True) and len(probed) == 2
    hardware.resolve("vgg", 32, 64)  # another batch is another decision
    assert len(probed) == 4


@pytest.mark.parametrize("where", ["unwritable", "no home"])
def test_a_cache_that_cannot_be_kept_costs_a_warning_not_the_model(
        cache, monkeypatch, no_native_bf16, caplog, where, tmp_path):
    """A serving container whose home folder is read-only or unknown: the decision is
    probed and used, and said not to be kept; loading the model does not fail."""
    if where == "unwritable":
        (tmp_path / "a-file").write_text("")
        monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "a-file" / "cache"))
    else:
        monkeypatch.delenv("FER_LAB_CACHE")
        def no_home(cls):
            raise RuntimeError("Could not determine home directory.")

        monkeypatch.setattr(pathlib.Path, "home", classmethod(no_home))
    monkeypatch.setattr(hardware, "probe_rates", lambda mode, arch, width, batch, options, on:
                        {o.name: {"fp32": 100.0, "fp32+cl": 160.0}[o.name] for o in options})
    assert hardware.resolve("vgg", 32, 128, mode="infer") == Setting("fp32", True)
    assert "the next process probes again" in caplog.text


def test_probed_rate_is_the_chosen_settings_measured_rate(cache, monkeypatch, no_native_bf16):
    monkeypatch.setattr(hardware, "probe_rates", lambda mode, arch, width, batch, options, on: {
        o.name: {"fp32": 100.0, "fp32+cl": 160.0}[o.name] for o in options})
    assert hardware.probed_rate("vgg", 32, 128) == 160.0
    hardware._decide.cache_clear()  # a new process reads it back from the file
    assert hardware.probed_rate("vgg", 32, 128) == 160.0
    assert hardware.probed_rate("vgg", 32, 128, "fp32", False) is None  # nothing to probe


@pytest.mark.parametrize("busy", [False, True])
def test_a_probe_starved_by_other_load_is_used_but_not_cached(cache, monkeypatch, caplog,
                                                              no_native_bf16, busy):
    """A probe that got a fraction of its cores (another process took them) ranked vgg's
    settings by how they bear the contention, 3x off: its choice must not stick. The
    clocks are the test's, so the outcome does not hang on this machine's own load."""
    import time
    import types

    clock = {"wall": 0.0, "cpu": 0.0}

    def fake_rates(mode, arch, width, batch, options, on):
        clock["wall"] += 0.3
        clock["cpu"] += 0.03 if busy else 0.3  # busy: the cores were elsewhere
        return {o.name: {"fp32": 100.0, "fp32+cl": 160.0}[o.name] for o in options}

    monkeypatch.setattr(hardware, "time", types.SimpleNamespace(
        perf_counter=lambda: clock["wall"], process_time=lambda: clock["cpu"],
        strftime=time.strftime))
    monkeypatch.setattr(hardware, "probe_rates", fake_rates)
    monkeypatch.setattr(hardware.torch, "get_num_threads", lambda: 1)
    assert hardware.resolve("vgg", 32, 128) == Setting("fp32", True)  # this process's choice
    if busy:
        assert not cache.exists() and "busy while probing" in caplog.text
    else:
        entry, = json.loads(cache.read_text())["decisions"].values()
        assert entry["choice"] == "fp32+cl" and entry["cpu_share"] > hardware.BUSY_SHARE


def test_a_single_candidate_is_not_probed(cache, monkeypatch):
    monkeypatch.setattr(hardware, "probe_rates", lambda *a, **k: pytest.fail("probed"))
    assert hardware.resolve("vgg", 32, 128, "fp32", False) == Setting("fp32", False)
    assert not cache.exists()


def test_a_burst_of_other_load_does_not_rank_a_slower_setting_first():
    """The probe interleaves its candidates and keeps each one's best round: a burst that
    slows the faster setting's first round (what ranked resnet's fp32 first at 58 img/s
    against 97) does not decide."""
    import time

    calls = {"fast": 0}

    def fast():
        calls["fast"] += 1
        time.sleep(0.05 if calls["fast"] <= 4 else 0.002)  # its warm-up and first round hit

    def slow():
        time.sleep(0.01)

    rates = hardware.measure({"fast": fast, "slow": slow}, 10, rounds=3, steps_per_round=2,
                             warmup=2)
    assert max(rates, key=rates.get) == "fast"
    assert rates["slow"] < 10 / 0.01 and rates["fast"] > rates["slow"] * 2
    assert calls["fast"] == 2 + 3 * 2


def test_a_real_probe_takes_seconds_and_measures_both_modes(cache, monkeypatch,
                                                            no_native_bf16):
    # Cached even when other processes share the cores (a CI runner's neighbours): what
    # a busy probe does is the busy test's.
    monkeypatch.setattr(hardware, "BUSY_SHARE", 0.0)
    for mode in hardware.MODES:
        assert hardware.resolve("seed_cnn", 8, 32, mode=mode) in hardware.candidates()
    decisions = json.loads(cache.read_text())["decisions"].values()
    assert {d["mode"] for d in decisions} == {"train", "infer"}
    assert all(rate > 0 for d in decisions for rate in d["rates"].values())


@pytest.fixture(scope="module")
def splits():
    return split(load("synthetic:10"), val_fraction=0.2, seed=0)


def test_explicit_bf16_still_trains_and_predictions_use_the_serving_machines_setting(
        splits, cache, monkeypatch, no_native_bf16):
    """A model trained in bf16 (as on a bf16 machine) predicts here in this machine's
    setting, not under the emulated bf16 autocast its training used."""
    model = create("cnn", width=8, epochs=1, batch_size=16, mixed_precision="bf16",
                   channels_last=True, tta="none")
    model.fit(splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    assert model.fit_settings_ == {"mixed_precision": "bf16", "channels_last": True,
                                   "recipe": "default"}
    assert np.isfinite(model.history_[0]["train_loss"])
    monkeypatch.setattr(hardware, "probe_rates", lambda mode, arch, width, batch, options, on: {
        o.name: 2.0 if o.channels_last else 1.0 for o in options})
    assert model.inference_setting() == Setting("fp32", True)
    from fer_lab.training import inference

    fp32 = inference.predict_logits(model.net_, splits.val.X, pixel_mean=model.pixel_mean_,
                                    pixel_std=model.pixel_std_)
    np.testing.assert_allclose(model.decision_function(splits.val.X), fp32, rtol=1e-4,
                               atol=1e-4)


def test_a_model_pickled_before_auto_existed_predicts_in_this_machines_setting(
        splits, cache, monkeypatch, no_native_bf16):
    import copy

    model = create("cnn", width=8, epochs=1, batch_size=16, mixed_precision="fp32",
                   channels_last=False, tta="flip")
    model.fit(splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    old = copy.deepcopy(model)  # as fer-lab 0.1.0 pickled it: bf16 and its layout baked in
    old.__dict__.update(mixed_precision="bf16", channels_last=True)
    for attribute in ("fit_settings_", "train_sides"):
        del old.__dict__[attribute]
    calls = []
    monkeypatch.setattr(hardware, "probe_rates", lambda mode, arch, width, batch, options, on: {
        o.name: calls.append(o) or 1.0 for o in options})
    np.testing.assert_allclose(old.predict_proba(splits.val.X),
                               model.predict_proba(splits.val.X), atol=1e-5)
    assert old.inference_setting().precision == "fp32"
    assert {s.precision for s in calls} == {"fp32"}  # bf16 was not even tried here

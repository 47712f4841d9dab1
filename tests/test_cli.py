"""The fer-lab command as a user types it."""

import subprocess
import sys

import pytest
import yaml

from fer_lab import cli
from fer_lab.config import load_family
from fer_lab.models import families


def test_families_lists_every_registered_family(capsys):
    assert cli.main(["families"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == families()


def test_data_check_prints_counts_per_split(capsys):
    assert cli.main(["data", "check", "synthetic:20"]) == 0
    out = capsys.readouterr().out
    assert "140 images" in out
    assert "Training" in out and "PublicTest" in out and "PrivateTest" in out
    assert "disgust" in out and "total" in out


def test_data_check_reports_a_bad_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n9," + " ".join(["0"] * 2304) + ",Training\n")
    assert cli.main(["data", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.csv, line 2" in err and "emotion '9'" in err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "fer_lab.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "tune" in out and "families" in out


def test_unknown_family_fails_before_any_work(tmp_path, capsys):
    assert cli.main(["tune", "no-such", "--storage", f"sqlite:///{tmp_path}/o.db"]) == 1
    assert "no config for family 'no-such'" in capsys.readouterr().err
    assert not (tmp_path / "o.db").exists()


def test_unknown_budget_lists_the_known_ones(capsys):
    with pytest.raises(ValueError, match="unknown budget 'huge'; known: default, quick, full"):
        load_family("svm", budget="huge")


@pytest.mark.parametrize("family", families())
def test_budgets_only_override_the_defaults(family):
    default, quick = load_family(family), load_family(family, budget="quick")
    assert quick.search_space == default.search_space
    assert quick.study.trials < default.study.trials
    assert load_family(family, budget="full").study.trials > default.study.trials


def test_experiment_file_and_command_line_override_the_defaults(tmp_path):
    override = tmp_path / "exp.yaml"
    override.write_text(yaml.safe_dump({
        "params": {"C": 3.0}, "search_space": {"class_weight": None},
        "study": {"trials": 5, "rungs": [0.2, 0.5]}}))
    config = load_family("svm", override, trials=7, timeout=None)
    assert config.params["C"] == 3.0
    assert "class_weight" not in {p.name for p in config.search_space}
    assert config.study.trials == 7  # the command line wins over the file
    assert config.study.rungs == (0.2, 0.5)
    assert config.study.timeout == load_family("svm").study.timeout  # None keeps the file's


def test_mlproject_numbers_parse():
    assert cli._count("20.0") == 20 and cli._count("0") is None
    assert cli._seconds("0") is None and cli._seconds("90") == 90.0


def test_bench_measures_every_setting_and_the_training_path(tmp_path, monkeypatch, capsys):
    import json

    from fer_lab.training import hardware

    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    hardware._decide.cache_clear()
    assert cli.main(["bench", "--arch", "seed_cnn", "vgg", "--width", "8", "--batch", "16",
                     "--steps", "2", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["machine"]) == {"cpu", "isa", "accelerator", "torch", "threads"}
    assert set(result["archs"]) == {"seed_cnn", "vgg"}
    names = {s.name for s in hardware.candidates()}
    for arch in result["archs"].values():
        assert set(arch["settings"]) == names and arch["auto"] in names
        assert all(s["train_img_s"] > 0 and s["infer_img_s"] > 0 and s["train_gflop_s"] > 0
                   for s in arch["settings"].values())
        assert arch["forward_flops"] > 0 and arch["path_ratio"] > 0
    # auto's pick is the faster of the probed settings, recorded for the next study
    assert json.loads((tmp_path / "hardware.json").read_text())["decisions"]
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    hardware._decide.cache_clear()

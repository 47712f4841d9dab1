"""The fer-lab command as a user types it."""

import inspect
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from fer_lab import cli
from fer_lab.compare import compare as fer_compare
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
    script = Path(sys.executable).parent / "fer-lab"  # the venv's entry point, as a user runs it
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "tune" in out and "families" in out
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert version.strip() == f"fer-lab {metadata.version('fer-lab')}"


def test_every_option_says_its_default():
    for command in ("tune", "compare", "predict", "report", "bench"):
        sub = next(a for a in cli.parser()._actions if a.dest == "command").choices[command]
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                text = sub.formatter_class(command)._get_help_string(action)
                assert cli._says_default(text), (command, action.option_strings, text)


def test_the_main_job_has_one_default_budget_everywhere():
    mlproject = yaml.safe_load((Path(__file__).parents[1] / "MLproject").read_text())
    compare = next(a for a in cli.parser()._actions if a.dest == "command").choices["compare"]
    budget = next(a for a in compare._actions if a.dest == "budget").default
    assert mlproject["entry_points"]["main"]["parameters"]["budget"]["default"] == budget
    assert inspect.signature(fer_compare).parameters["budget"].default == budget


def test_unknown_family_fails_before_any_work(tmp_path, capsys):
    assert cli.main(["tune", "no-such", "--storage", f"sqlite:///{tmp_path}/o.db"]) == 1
    err = capsys.readouterr().err
    assert "unknown family 'no-such'; known: cnn, ensemble, forest, knn, logreg, svm, tree" in err
    assert not (tmp_path / "o.db").exists()


def test_unknown_budget_lists_the_known_ones(capsys):
    with pytest.raises(ValueError, match="unknown budget 'huge'; known: default, quick, full"):
        load_family("svm", budget="huge")


@pytest.mark.parametrize("family", families())
def test_budgets_only_override_the_defaults(family):
    default, quick = load_family(family), load_family(family, budget="quick")
    assert quick.search_space == default.search_space
    assert quick.study.trials <= default.study.trials  # the CNN's hour: one trial in both
    assert (quick.study, quick.params) != (default.study, default.params)
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
    # Cached even when other work shares the cores (that rule has tests of its own).
    monkeypatch.setattr(hardware, "BUSY_SHARE", 0.0)
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
        # one turn of the path and one of the bare loop per round, the ratio their median's
        [(path, bare)] = arch["path_turns"]
        assert arch["path_ratio"] == pytest.approx(path / bare)
    # auto's pick is the faster of the probed settings, recorded for the next study
    assert json.loads((tmp_path / "hardware.json").read_text())["decisions"]
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    hardware._decide.cache_clear()


@pytest.mark.parametrize("storage, message", [
    ("foo://bar", "no database driver for 'foo'"),
    ("optuna.db", "'optuna.db' is not a storage URL; give one of sqlite:///optuna.db"),
    ("postgresql://fer:secret@127.0.0.1:9/optuna", "cannot open the Optuna storage at "
                                                   "127.0.0.1:9 (database optuna)"),
    ("journal:///no/such/folder/optuna.journal", "no folder /no/such/folder for the journal"),
])
def test_a_bad_storage_is_one_line_that_says_what_to_give(storage, message, tmp_path,
                                                          monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["tune", "tree", "--trials", "1", "--storage", storage]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "secret" not in err
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_join_on_sqlite_is_refused_like_workers(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["tune", "tree", "--join", "--storage", f"sqlite:///{tmp_path}/o.db"]) == 1
    assert "SQLite takes one writer at a time, so a worker joining" in capsys.readouterr().err


def test_mlflow_environment_has_the_packages_dependencies():
    import tomllib

    root = Path(__file__).parents[1]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((root / "python_env.yaml").read_text())
    assert "torch==2.13.0" in env["dependencies"]
    assert set(env["dependencies"]) - {"torch==2.13.0"} == set(declared) - {"torch>=2.3"}
    mlproject = yaml.safe_load((root / "MLproject").read_text())
    assert mlproject["python_env"] == "python_env.yaml"
    # the checkout's code runs, not a copy installed in the environment's first build
    assert all(e["command"].startswith("python -m fer_lab.cli ")
               for e in mlproject["entry_points"].values())


def test_the_family_configs_ship_inside_the_package(tmp_path):
    """A non-editable install (pip install ., pip install git+URL) finds every config."""
    import shutil
    import zipfile

    root, source = Path(__file__).parents[1], tmp_path / "source"  # built away from the tree
    shutil.copytree(root / "fer_lab", source / "fer_lab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    wheel, = tmp_path.glob("fer_lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"fer_lab/configs/{family}.yaml" for family in families()} <= names

"""End to end: `mlflow run . -e tree` in an environment MLflow builds from python_env.yaml
(`--env-manager virtualenv`, MLflow's default for this project, and `--env-manager uv`),
not the current one (`--env-manager local`, as in test_compare.py)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

# The first build of an environment installs torch and the rest (minutes); later runs
# reuse it. One xdist worker runs the module: the two builds do not compete.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("environments")]
REPO = Path(__file__).resolve().parents[1]
PYTHON_ENV = yaml.safe_load((REPO / "python_env.yaml").read_text())
BIN_DIR = Path(sys.executable).parent
PATH = f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"


def base_env(tmp: Path, manager: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
           "FER_LAB_CACHE": str(tmp / "cache"), "FER_LAB_STORAGE": f"sqlite:///{tmp}/optuna.db",
           "PATH": PATH,
           # pip byte-compiles every module it installs (torch's thousands): a test of the
           # environment's build does not need that; the first import compiles what it uses.
           "PIP_NO_COMPILE": "1",
           # MLflow names an environment by python_env.yaml's contents alone, so the two
           # managers would share one: each gets its own root, kept between test runs.
           "MLFLOW_ENV_ROOT": str(Path(os.environ.get("MLFLOW_ENV_ROOT")
                                       or Path.home() / ".mlflow" / "envs") / f"tests-{manager}")}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    if manager == "uv" and "UV_FIND_LINKS" not in env:
        # uv does not read pip's configuration: hand it pip's find-links (a local torch wheel),
        # as a user would with UV_FIND_LINKS.
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                                check=False, capture_output=True, text=True).stdout
        links = dict.fromkeys(link for value in re.findall(r"find-links='([^']*)'", listed)
                              for link in value.split())
        if links:
            env["UV_FIND_LINKS"] = ",".join(links)
    return env


def missing(manager: str, env: dict) -> str | None:
    """Why `mlflow run --env-manager MANAGER` cannot build the environment here, or None."""
    python = PYTHON_ENV["python"]
    if manager == "virtualenv":
        pyenv = shutil.which("pyenv", path=PATH)
        if pyenv is None:
            return "the virtualenv manager needs pyenv (https://github.com/pyenv/pyenv)"
        root = subprocess.run([pyenv, "root"], check=True, capture_output=True,
                              text=True).stdout.strip()
        if not (Path(root) / "versions" / python / "bin" / "python").exists():
            return (f"pyenv has no Python {python} (`pyenv install {python}` builds it; "
                    "MLflow would run that itself, which needs the network and minutes)")
        # the environment's pip reads pip's configuration, as this one does
        report = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--quiet", "--report", "-", "torch==2.13.0"],
            check=False, env=env, capture_output=True, text=True, timeout=300)
        wanted = [item["metadata"]["name"] for item in json.loads(report.stdout or "{}")
                  .get("install", [])] if report.returncode == 0 else None
    else:
        if shutil.which("uv", path=PATH) is None:
            return "the uv manager needs uv on PATH (pip install uv)"
        compiled = subprocess.run(
            ["uv", "pip", "compile", "-", "--python-version", python, "--no-header",
             "--no-annotate", "--quiet"],
            input="torch==2.13.0\n", check=False, env=env, capture_output=True, text=True,
            timeout=300)
        wanted = compiled.stdout.split() if compiled.returncode == 0 else None
    if wanted is None:
        return f"{manager} cannot resolve torch==2.13.0 here"
    if any(name.lower().startswith("nvidia") for name in wanted):
        # the CUDA build from PyPI: GBs, for a CPU-only job
        return (f"{manager} would install the CUDA build of torch: point it at the CPU wheel "
                "(PIP_/UV_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu, or "
                "PIP_/UV_FIND_LINKS=a folder with the wheel)")
    return None


# uv builds the environment in ~1.5 min, MLflow's default virtualenv manager (pyenv, venv,
# pip) in ~3.5: the suite's 15 minutes on 2 cores hold the first; the second runs where
# FER_LAB_TEST_VIRTUALENV=1 asks for it, as when python_env.yaml changes.
ALL_MANAGERS = os.environ.get("FER_LAB_TEST_VIRTUALENV") == "1"


@pytest.mark.parametrize("manager", [
    pytest.param("virtualenv", marks=pytest.mark.skipif(
        not ALL_MANAGERS, reason="set FER_LAB_TEST_VIRTUALENV=1 to build with virtualenv")),
    "uv"])
def test_mlflow_run_builds_the_python_env_and_runs_a_study_in_it(tmp_path, manager):
    env = base_env(tmp_path, manager)
    reason = missing(manager, env)
    if reason:
        pytest.skip(reason)
    done = subprocess.run(
        [str(BIN_DIR / "mlflow"), "run", str(REPO), "-e", "tree", "--env-manager", manager,
         "-P", "data=synthetic:20", "-P", "budget=quick"],
        check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-5000:]

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    [run] = [r for e in client.search_experiments()
             for r in client.search_runs([e.experiment_id], "tags.`fer.role` = 'study'")]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.env"] == manager
    assert run.data.tags["fer.family"] == "tree"
    assert {"test_all_accuracy", "test_all_macro_f1"} <= set(run.data.metrics)

    # the job ran in the environment MLflow built from python_env.yaml, not in this venv
    [activate] = set(re.findall(r"'source (\S+)/bin/activate && python -m fer_lab\.cli tune tree",
                                done.stderr))
    built = Path(activate)
    assert built.parent == Path(env["MLFLOW_ENV_ROOT"]) and built.name.startswith("mlflow-")
    code = ("import platform, sys, torch; "
            "print(sys.prefix, platform.python_version(), torch.__version__)")
    probe = subprocess.run([str(built / "bin" / "python"), "-c", code],
                           check=True, capture_output=True, text=True, timeout=300)
    prefix, python, torch_version = probe.stdout.split()
    assert Path(prefix).resolve() == built.resolve() != Path(sys.prefix).resolve()
    assert f"{python}.".startswith(f"{PYTHON_ENV['python']}.")  # "3.11" takes any 3.11.x
    assert torch_version.startswith("2.13.0")

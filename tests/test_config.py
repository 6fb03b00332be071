"""Settings resolve in one place: explicit value > Dask config (files, env vars) > defaults."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dask.config
import pandas as pd
import pytest
import yaml
from conftest import sweep_env

from keras_sweep.config import KEYS, resolve, setting
from keras_sweep.spec import reading as specmod


def test_every_packaged_key_is_resolved():
    """Each key of sweep.yaml has a reader: a Settings field, a backend section, or output."""
    from keras_sweep.clusters import known_backends

    packaged = yaml.safe_load(open(__import__("keras_sweep").config._DEFAULTS_FILE))["sweep"]
    read = {key.split(".")[0] + "." + key.split(".")[1] for key in KEYS.values()}
    for section, values in packaged.items():
        if section in known_backends():  # resolved into Settings.options
            assert resolve(backend=section).options.keys() >= {
                k.replace("-", "_") for k in values}
        elif section == "output":
            raw = {k: v for k, v in specmod.demo_spec().items() if k != "output"}
            assert specmod.load(raw).output == f"{values}/demo"
        else:
            assert {f"{section}.{k}" for k in values} <= read, section


def test_explicit_beats_config_beats_defaults():
    assert resolve().max_retries == 2 and resolve().fast_path is True  # packaged
    with dask.config.set({"sweep.fit.max-retries": 5, "sweep.fit.fast-path": False}):
        assert resolve().max_retries == 5 and resolve().fast_path is False
        assert resolve(max_retries=1, fast_path=True).max_retries == 1
        assert resolve(max_retries=None).max_retries == 5  # None: use the config
        assert resolve(max_retries=0).max_retries == 0  # an explicit 0 is a value


def test_backend_options_come_from_their_section():
    with dask.config.set({"sweep.slurm.walltime": "02:00:00", "sweep.slurm.account": "lab"}):
        settings = resolve(backend="slurm", account="mine")
    assert settings.option("walltime") == "02:00:00" and settings.option("account") == "mine"
    assert settings.option("memory") is None and settings.option("memory", "4 GiB") == "4 GiB"


def test_spec_fields_left_out_use_the_config_and_given_ones_win():
    raw = {k: v for k, v in specmod.demo_spec().items() if k != "output"}
    with dask.config.set({"sweep.fit.max-retries": 5, "sweep.fit.fast-path": False,
                          "sweep.output": "elsewhere"}):
        spec = specmod.load(raw)
        assert spec.max_retries is None and spec.settings().max_retries == 5
        assert spec.resolved()["fast_path"] is False and spec.output == "elsewhere/demo"
        given = specmod.load({**raw, "max_retries": 1, "fast_path": True, "output": "here"})
        assert given.settings().max_retries == 1 and given.settings().fast_path is True
        assert given.output == "here"


def _resolved_in_subprocess(env: dict[str, str]) -> dict[str, object]:
    code = ("import json, keras_sweep.config as c; s = c.resolve(); "
            "print(json.dumps({'max_retries': s.max_retries, 'fast_path': s.fast_path}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**sweep_env(), **env}, timeout=120, check=True)
    return dict(yaml.safe_load(out.stdout.strip().splitlines()[-1]))


def test_environment_variables_and_config_files_reach_resolve(tmp_path):
    (tmp_path / "mine.yaml").write_text("sweep: {fit: {max-retries: 7}}\n")
    got = _resolved_in_subprocess({"DASK_SWEEP__FIT__FAST_PATH": "false",
                                   "DASK_CONFIG": str(tmp_path)})
    assert got == {"max_retries": 7, "fast_path": False}


@pytest.mark.slow
def test_config_reaches_sweep_run_and_the_spec_beats_it(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mine.yaml").write_text("sweep: {fit: {max-retries: 7}}\n")
    env = {**sweep_env(), "DASK_SWEEP__FIT__FAST_PATH": "false",
           "DASK_CONFIG": str(tmp_path / "conf")}
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""\
        name: tiny
        data: {dataset: breast_cancer, scale: true}
        fit: {epochs: 1, batch_size: 64}
        param_grid: {model__neurons: [2]}
        cv: 2
        """))
    runs = {}
    for name, extra in (("config", []), ("spec", ["--set", "max_retries=1",
                                                  "--set", "fast_path=true"])):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "keras_sweep", "run", str(spec), "--workers",
                               "1", "--no-progress", "--output", str(out), *extra],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = (yaml.safe_load((out / "spec.yaml").read_text()),
                      pd.read_csv(out / "fits.csv"))
    saved, fits = runs["config"]
    assert (saved["max_retries"], saved["fast_path"]) == (7, False)
    assert not fits["fast_path"].any()
    saved, fits = runs["spec"]
    assert (saved["max_retries"], saved["fast_path"]) == (1, True)
    assert fits["fast_path"].all()


@pytest.mark.slow
def test_configured_retries_reach_the_scheduler():
    import keras_sweep as sweep

    with dask.config.set({"sweep.fit.max-retries": 4}), \
            sweep.cluster(workers=1, preload_tensorflow=False) as session:
        allowed = session.client.run_on_scheduler(lambda dask_scheduler:
                                                  dask_scheduler.allowed_failures)
    assert allowed == 4 and setting("fit.max-retries") == 2


# -- each setting declared once: the schema, and every layer checked against it -------

def test_the_schema_and_the_settings_fields_are_the_same_names():
    import dataclasses

    from keras_sweep.config import SETTINGS, Settings

    fields = [f.name for f in dataclasses.fields(Settings)]
    assert fields == [s.name for s in SETTINGS] + ["name", "options"]
    assert len({s.key for s in SETTINGS}) == len(SETTINGS)


def test_sweep_yaml_holds_exactly_the_schemas_keys_besides_backends_and_output():
    from keras_sweep.clusters import known_backends
    from keras_sweep.config import _DEFAULTS_FILE, SETTINGS

    packaged = yaml.safe_load(_DEFAULTS_FILE.read_text())["sweep"]
    keys = {f"{section}.{key}" for section, values in packaged.items()
            if section not in known_backends() and section != "output" for key in values}
    assert keys == {s.key for s in SETTINGS}


def test_every_setting_has_its_row_in_docs_settings_md():
    from conftest import ROOT

    from keras_sweep.config import SETTINGS

    text = (ROOT / "docs" / "settings.md").read_text()
    sections = {s.key.split(".")[0] for s in SETTINGS}
    rows: set[str] = set()
    for part in text.split("\n## ")[1:]:
        heading = part.splitlines()[0].strip("` ").removeprefix("sweep.")
        if heading in sections:
            rows |= {f"{heading}.{line.split('`')[1]}" for line in part.splitlines()
                     if line.startswith("| `")}
    assert {s.key for s in SETTINGS} <= rows, sorted({s.key for s in SETTINGS} - rows)


def test_the_python_api_and_the_spec_name_settings_as_the_schema_does():
    import inspect

    from keras_sweep import cluster
    from keras_sweep.clusters import COMMON_KEYS, known_backends, options
    from keras_sweep.config import SETTINGS_BY_NAME

    own = {"seed", "progress", "journal", "mlflow", "mlflow_experiment", "name",
           "backend_options"}
    keywords = set(inspect.signature(cluster.__wrapped__).parameters) - own
    assert keywords <= set(SETTINGS_BY_NAME), keywords - set(SETTINGS_BY_NAME)
    assert COMMON_KEYS <= set(SETTINGS_BY_NAME)
    # a backend option that is also a setting is the same name, converted the same way
    shared = {key for b in known_backends() for key in options(b)} & set(SETTINGS_BY_NAME)
    assert shared == {"memory_limit", "host", "dashboard_address", "tls"}


@pytest.mark.parametrize("name, value, words", [
    ("memory_limit", "lots", ["memory_limit", "'lots'", "2 GiB"]),
    ("workers", 0.5, ["workers", "whole number"]),
    ("xla", "maybe", ["xla", "true or false"]),
    ("startup_timeout", "soon", ["startup_timeout", "10m"]),
    ("recycle_above_memory", -5, ["recycle_above_memory", "positive size"]),
])
def test_a_bad_value_is_refused_naming_the_setting_and_the_fix(name, value, words):
    from keras_sweep.exceptions import SpecError

    with pytest.raises(SpecError) as caught:
        resolve(**{name: value})
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_values_are_converted_once_whatever_layer_gives_them():
    settings = resolve(startup_timeout="10m", recycle_above_memory="2 GiB", xla="false",
                       workers=0, full_gc_every="7")
    assert settings.startup_timeout == 600.0 and settings.recycle_above_memory == 2 * 2**30
    assert settings.xla is False and settings.workers is None and settings.full_gc_every == 7
    with dask.config.set({"sweep.fit.fast-path": "false"}):  # as DASK_SWEEP__FIT__FAST_PATH
        assert resolve().fast_path is False

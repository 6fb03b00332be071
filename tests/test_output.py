"""One sweep per output folder: a second run is refused at once, a crashed one never blocks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import sweep_env

from keras_sweep.exceptions import OutputBusyError
from keras_sweep.store.output import LOCK_NAME, claim


def _spec(tmp_path, out, epochs=30, flag=None):
    spec = tmp_path / "s.yaml"
    model = ("{builder: tiny_models:waits_while, params: {flag: " + f'"{flag}"' + "}}"
             if flag else '{builder: "tiny_models:tiny"}')
    spec.write_text(textwrap.dedent(f"""\
        data: {{dataset: breast_cancer, scale: true}}
        model: {model}
        fit: {{epochs: {epochs}, batch_size: 16}}
        param_grid: {{neurons: [1, 2, 3]}}
        cv: 2
        cluster: {{workers: 1}}
        output: {out}
        """))
    return spec


def _run(spec, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "keras_sweep", "run", str(spec),
                             "--no-progress"], env=sweep_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.slow
def test_second_sweep_on_a_folder_in_use_is_refused_with_the_owner(tmp_path):
    out = tmp_path / "out"
    flag = tmp_path / "hold"  # the first run's fits wait until the second was refused
    flag.write_text("")
    spec = _spec(tmp_path, out, epochs=2, flag=flag)
    first = _run(spec)
    lock = out / LOCK_NAME
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.1)
    owner = json.loads(lock.read_text())
    assert owner["pid"] == first.pid and owner["host"] == socket.gethostname()

    second = _run(spec)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2, err
    assert f"process {first.pid} on {socket.gethostname()}" in err and "--output" in err
    assert "Traceback" not in err
    assert first.poll() is None  # the first run was not disturbed
    flag.unlink()
    out_first, err_first = first.communicate(timeout=600)
    assert first.returncode == 0, err_first[-3000:]
    assert "6 fits" in out_first


def test_a_killed_owner_leaves_no_stuck_lock(tmp_path):
    folder = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import time
        from keras_sweep.store.output import claim
        with claim({str(folder)!r}):
            print("held", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputBusyError, match=f"process {holder.pid} on"):
        with claim(folder):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with claim(folder):  # the kernel dropped the dead process's lock
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()

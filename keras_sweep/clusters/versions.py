"""Package versions that must be equal on the driver and every worker (pickles cross).

The ssh backend asks each host before anything starts (:data:`PROBE` run by the
remote Python); backends whose workers come from an image (ec2) ask each worker
once it has connected (:func:`check_workers`). Either way a mismatch stops the
sweep with one message naming both sides and the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

#: the import name of this package, as hosts and images must import it
PACKAGE = __name__.split(".")[0]

#: Packages whose versions must be equal here and on every host: pickles cross, and a
#: fit's numbers are TensorFlow's (or JAX's) and Keras' arithmetic, so a host with
#: another version would give other bits for the same fold.
MUST_MATCH = ("dask", "distributed", "cloudpickle", "msgpack", "numpy", "scikit-learn",
              "keras", "scikeras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib")

#: Run by the remote Python (and here): prints the versions that must match as JSON.
PROBE = f"""\
import json, sys
from importlib import metadata
out = {{"python": "%d.%d" % sys.version_info[:2], "executable": sys.executable}}
for name in {MUST_MATCH!r}:
    try:
        out[name] = metadata.version(name)
    except Exception:
        out[name] = None
try:
    import {PACKAGE} as sweep
    out["sweep"] = sweep.__version__
except Exception as exc:
    out["sweep"] = None
    out["sweep_error"] = repr(exc)
print(json.dumps(out))
"""


def local_versions() -> dict[str, Any]:
    """The versions :data:`PROBE` reports, for this Python (also run on workers)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(PROBE, {})
    return dict(json.loads(out.getvalue()))


def pins(versions: dict[str, Any] | None = None) -> list[str]:
    """``name==version`` of every package that must match, as here (for an image)."""
    versions = versions or local_versions()
    return [f"{name}=={versions[name]}" for name in MUST_MATCH if versions.get(name)]


def check_versions(where: str, here: dict[str, Any], there: dict[str, Any],
                   install: str) -> None:
    """Raise :class:`ClusterError` if sweep is missing at ``where`` or a version differs.

    Parameters
    ----------
    where : str
        What was asked, e.g. ``"host 10.0.0.5"`` or ``"worker tls://10.0.0.5:4001"``.
    here, there : dict
        :func:`local_versions` of this machine and of ``where``.
    install : str
        How to install a package there: a command prefix such as
        ``"/usr/bin/python3 -m pip install"``, completed with the pins.
    """
    from ..exceptions import ClusterError

    if there.get("sweep") is None:
        raise ClusterError(
            f"{where}: {there.get('executable', 'its Python')} cannot import {PACKAGE} "
            f"({there.get('sweep_error', 'not installed')}).\n"
            f"  Fix: install the same keras-sweep there ({install} keras-sweep=="
            f"{here['sweep']}, or pip install -e . in a shared checkout)")
    names = ("python", "sweep", *MUST_MATCH)
    differ = {n: (here.get(n), there.get(n)) for n in names if here.get(n) != there.get(n)}
    if differ:
        rows = "; ".join(f"{n}: here {a}, there {b}" for n, (a, b) in differ.items())
        wanted = " ".join(f"{n}=={a}" for n, (a, _) in differ.items()
                          if a is not None and n not in ("python", "sweep"))
        raise ClusterError(
            f"{where}: package versions differ from this machine ({rows}).\n"
            f"  Fix: install the same versions there, e.g. "
            f"{install} {wanted or 'keras-sweep==' + str(here['sweep'])}")


def check_workers(client: Any, install: str, here: dict[str, Any] | None = None) -> None:
    """Ask every connected worker for its versions; raise on the first mismatch.

    ``here`` defaults to :func:`local_versions` of this process.
    """
    here = here or local_versions()
    for address, there in sorted(client.run(local_versions).items()):
        check_versions(f"worker {address}", here, there, install)

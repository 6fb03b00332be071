"""The ``sweep`` command line: ``sweep run SPEC``, ``sweep demo``, ``sweep validate SPEC``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

DESCRIPTION = """\
Run scikit-learn grid searches of Keras models on a Dask cluster. Every
(parameter set, CV fold) fit runs in its own worker process, with TensorFlow
isolated and pinned to that worker's threads.

examples:
  sweep demo                              a small real grid on bundled data (~1 min)
  sweep run spec.yaml                     the sweep a YAML spec describes
  sweep run spec.yaml --workers 4 --epochs 2 --output results/try
  sweep validate spec.yaml                check a spec without starting a cluster
  sweep report sweep-results/demo         redraw a finished sweep's report.html
  sweep run spec.yaml --cluster slurm --set cluster.queue=debug
                                          workers as SLURM jobs (see cluster/slurm.yaml)
  sweep run spec.yaml --cluster cluster/slurm.yaml
                                          a cluster profile: its cluster: section wins
  sweep batch spec.yaml --submit --wait   the whole sweep inside one SLURM allocation
  sweep run spec.yaml --cluster cluster/ec2.yaml --yes
                                          AWS EC2 instances, always terminated at the end
  sweep cloud list --region eu-west-1     instances of sweep runs still live
"""

EXIT_OK, EXIT_FAILED_FITS, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweep", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from ..version import __version__

    parser.add_argument("--version", action="version", version=f"sweep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the sweep a YAML spec describes (default: the demo)",
                         description="Run the sweep a YAML spec describes. Without SPEC, "
                         "runs the packaged demo spec.")
    run.add_argument("spec", nargs="?", help="path of the YAML spec (default: the demo)")
    _add_run_options(run)
    demo = sub.add_parser("demo", help="run the packaged demo: a small grid on bundled data",
                          description="Run a small real grid (2 x 2 candidates, 3 folds) of the "
                          "built-in network on scikit-learn's bundled breast cancer data.")
    _add_run_options(demo)
    validate = sub.add_parser("validate", help="check a spec and its data; start nothing",
                              description="Validate a spec and load its data, without starting "
                              "a cluster. Exit code 0 if valid, 2 otherwise.")
    validate.add_argument("spec", help="path of the YAML spec")
    _add_spec_options(validate)
    batch = sub.add_parser(
        "batch", help="write (and submit) a SLURM script that runs the whole sweep in one "
        "allocation", description="Write OUTPUT/sweep-batch.sh: a SLURM batch script whose "
        "allocation runs the Dask scheduler, the workers and the driver, for sites that "
        "forbid long-running processes on login nodes. The spec's cluster: section gives the "
        "SLURM options (queue, account, walltime, memory, job_extra_directives, "
        "job_script_prologue, interface, python, workers or jobs x processes). Results land "
        "in OUTPUT when the job ends.")
    batch.add_argument("spec", help="path of the YAML spec")
    _add_spec_options(batch)
    batch.add_argument("--submit", action="store_true", help="submit the script with sbatch")
    batch.add_argument("--wait", action="store_true",
                       help="with --submit: wait for the job to end (sbatch --wait)")
    sub.add_parser(
        "doctor", help="versions, CPU and checks of what sweep relies on in other libraries",
        description="Print sweep's and its libraries' versions against the declared range, "
        "the CPU kind, the training paths the settings turn on and every reliance on another "
        "library's internals; run the checks that can run here. Exit 1 if one fails.")
    report = sub.add_parser(
        "report", help="write report.html for a finished sweep's results folder",
        description="Write RESULTS/report.html: one self-contained page (no network) with "
        "the summary, scores by parameter (error bars, heatmap or parallel coordinates), "
        "per-fold scores, learning curves, fit times, a per-worker timeline and the sortable "
        "table of all candidates. `sweep run` writes it already; this redraws it.")
    report.add_argument("results", help="results folder of a finished sweep")
    refine = sub.add_parser(
        "refine", help="coarse to fine: a finer grid around a finished sweep's best point",
        description="Read a finished sweep's results folder (spec.yaml, best.json) and write a "
        "spec whose grid is finer around the best numeric values (from the best value's lower "
        "to its upper neighbour); non-numeric parameters are fixed at their best value.")
    refine.add_argument("results", help="results folder of a finished sweep")
    refine.add_argument("--points", type=int, default=5,
                        help="values per numeric parameter between the neighbours (default 5)")
    refine.add_argument("--write", metavar="SPEC", help="where to write the new spec "
                        "(default: RESULTS-fine.yaml beside the results folder)")
    refine.add_argument("--run", action="store_true", help="run the finer sweep right away")
    _add_cloud(sub)
    return parser


def _add_cloud(sub: Any) -> None:
    cloud = sub.add_parser(
        "cloud", help="EC2 instances of sweep runs: list, clean up; a worker image's pins",
        description="Every EC2 instance sweep starts carries the tags sweep:run, sweep:owner, "
        "sweep:created, sweep:spec and sweep:expires. A sweep terminates its own instances "
        "however it ends; after a crash or a SIGKILL these commands find and remove them.")
    verbs = cloud.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = verbs.add_parser("list", help="live instances of sweep runs in a region")
    cleanup = verbs.add_parser(
        "cleanup", help="terminate instances of sweep runs, and delete their security groups",
        description="Terminate live instances of sweep runs: of one run (--run), older than a "
        "duration (--older-than), past their run's hours (--expired), or all (--all); the "
        "choices combine (all must hold).")
    for verb in (listing, cleanup):
        verb.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION)")
    cleanup.add_argument("--run", metavar="ID", help="the run id (printed at launch, tag "
                         "sweep:run)")
    cleanup.add_argument("--older-than", metavar="AGE", help="created longer ago than AGE "
                         "(90m, 2h, 1d)")
    cleanup.add_argument("--expired", action="store_true",
                         help="past the run's expiry (its profile's hours)")
    cleanup.add_argument("--all", action="store_true", dest="everything",
                         help="every instance of every sweep run in the region")
    verbs.add_parser("requirements", help="print the pins of a worker image: this machine's "
                     "versions (see cluster/ec2/Dockerfile)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="attach to a running Dask scheduler at ADDRESS (implies --cluster attach)")
    p.add_argument("--tls-ca", metavar="FILE", help="attach: CA certificate of the cluster")
    p.add_argument("--tls-cert", metavar="FILE", help="attach: this client's certificate")
    p.add_argument("--tls-key", metavar="FILE", help="attach: this client's private key")
    p.add_argument("--insecure", action="store_true",
                   help="plain TCP off this machine (no TLS): only on an isolated network")
    _add_spec_options(p)
    p.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    p.add_argument("--mlflow", metavar="URI",
                   help="log the sweep to this MLflow tracking server (one parent run, one "
                   "child run per candidate); experiment: --set tracking.experiment=NAME")
    p.add_argument("--yes", action="store_true",
                   help="ec2: start the instances without asking (needed when not interactive)")
    p.add_argument("--no-report", action="store_true",
                   help="do not write report.html (default: live while the sweep runs, "
                   "final at its end)")


def _add_spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", metavar="NAME|PROFILE",
                   help="cluster backend (local, attach, slurm, ...) or a profile YAML file "
                   "such as cluster/slurm.yaml whose cluster: section replaces the spec's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="set any spec field by its dotted name, e.g. --set cluster.queue=gpu "
                   "--set fit.batch_size=20 (VALUE is read as YAML); repeatable")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: cores)")
    p.add_argument("--threads-per-worker", type=int, metavar="N",
                   help="threads per worker; TensorFlow/OpenMP/BLAS pinned to it (default 1)")
    p.add_argument("--epochs", type=int, metavar="N", help="override fit.epochs")
    p.add_argument("--seed", type=int, metavar="N", help="override the sweep seed")
    p.add_argument("--output", metavar="DIR", help="folder for the results")
    p.add_argument("--sample", type=float, metavar="FRACTION",
                   help="train on a stratified sample of the rows, e.g. 0.25, for a quick scan")
    p.add_argument("--no-fast-path", action="store_true",
                   help="one Keras call per batch (default: a whole epoch per call)")
    p.add_argument("--no-compiled-loop", action="store_true",
                   help="train with Keras' fit, not sweep's compiled loop (default: the loop "
                   "where it is exact)")
    p.add_argument("--xla", action="store_true",
                   help="XLA-compile the training loop (models without Dropout; faster for "
                   "long fits, not bitwise equal to Keras' fit)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted spec overrides from command-line flags."""
    mapping = {
        "cluster.tls_ca": getattr(args, "tls_ca", None),
        "cluster.tls_cert": getattr(args, "tls_cert", None),
        "cluster.tls_key": getattr(args, "tls_key", None),
        "cluster.tls": False if getattr(args, "insecure", False) else None,
        "cluster.workers": args.workers,
        "cluster.threads_per_worker": args.threads_per_worker,
        "fit.epochs": args.epochs,
        "seed": args.seed,
        "output": args.output,
        "data.sample": args.sample,
        "fast_path": False if getattr(args, "no_fast_path", False) else None,
        "compiled_loop": False if getattr(args, "no_compiled_loop", False) else None,
        "xla": True if getattr(args, "xla", False) else None,
        "report": False if getattr(args, "no_report", False) else None,
        "tracking.mlflow": getattr(args, "mlflow", None),
    }
    out = {k: v for k, v in mapping.items() if v is not None}
    for item in args.settings:
        key, sep, text = item.partition("=")
        if not sep or not key:
            from ..exceptions import SpecError

            raise SpecError("--set", item, "not KEY=VALUE", "write e.g. --set cluster.jobs=4")
        import yaml

        out[key.strip()] = yaml.safe_load(text)
    return out


def _is_profile(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or os.sep in name


def _load(source: Any, args: argparse.Namespace) -> Any:
    from ..spec import reading as specmod

    profile = None
    if getattr(args, "scheduler", None):
        profile = {"backend": "attach", "address": args.scheduler}
    elif args.cluster and _is_profile(args.cluster):
        profile = specmod.read_profile(args.cluster)
    elif args.cluster:
        profile = {"backend": args.cluster}
    return specmod.load(source, overrides(args), profile=profile)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sweep`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    from ..exceptions import SweepError

    _terminate_as_interrupt()
    try:
        return _dispatch(args)
    except SweepError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        from ..exceptions import Interrupted

        print(f"sweep: {exc}" if isinstance(exc, Interrupted) else "sweep: interrupted",
              file=sys.stderr)
        return 130


def _terminate_as_interrupt() -> None:
    """SIGTERM (``scancel``, ``kill``, a batch system's end) unwinds like Ctrl-C.

    So the ``finally`` blocks run: SLURM jobs are cancelled, the journal closed.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _dispatch(args: argparse.Namespace) -> int:
    from ..spec import reading as specmod

    if args.command == "validate":
        spec = _load(args.spec, args)
        from .runner import prepare

        dataset, _ = prepare(spec, echo=lambda _: None)  # the data checks too
        from .runner import n_classes

        print(f"sweep: {args.spec} is valid: "
              f"{spec.describe(dataset.X.shape[0], n_classes(spec, dataset))} on "
              f"{dataset.X.shape[0]} rows")
        return EXIT_OK
    if args.command == "doctor":
        from .doctor import report

        return report()
    if args.command == "refine":
        return _refine(args)
    if args.command == "report":
        return _report(args)
    if args.command == "batch":
        return _batch(args)
    if args.command == "cloud":
        return _cloud(args)
    import dask.config

    source = specmod.demo_spec() if args.command == "demo" or not args.spec else args.spec
    with dask.config.set({"sweep.ec2.assume-yes": True} if args.yes else {}):
        spec = _load(source, args)
        return _run(spec, progress=not args.no_progress)


def _batch(args: argparse.Namespace) -> int:
    from ..clusters.slurm.batch import submit, write_script

    spec = _load(args.spec, args)
    script = write_script(spec.resolved(), spec.name, spec.settings(), spec.output)
    print(f"sweep: batch script written to {script}")
    if not args.submit:
        print(f"  submit it with: sbatch {script}")
        return EXIT_OK
    job_id, code = submit(script, wait=args.wait)
    if not args.wait:
        print(f"sweep: submitted job {job_id}; results will be in {script.parent}/")
        return EXIT_OK
    log = script.parent / f"sweep-{job_id}.log"
    print(f"sweep: job {job_id} ended with exit code {code}; log: {log}")
    return EXIT_OK if code == 0 else EXIT_FAILED_FITS


def _cloud(args: argparse.Namespace) -> int:
    from ..clusters.ec2 import cloud

    if args.verb == "list":
        lines = cloud.list_lines(args.region)
    elif args.verb == "cleanup":
        lines = cloud.cleanup_lines(args.region, args.run, args.older_than, args.expired,
                                    args.everything)
    else:
        lines = cloud.requirements_lines()
    print("\n".join(lines))
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    import time

    from .. import report
    from ..exceptions import SpecError

    start = time.perf_counter()
    try:
        data = report.from_folder(args.results)
    except FileNotFoundError as exc:
        why, _, fix = str(exc).partition("\n  Fix: ")
        raise SpecError("RESULTS", args.results, why, fix) from None
    path = report.write(data, args.results)
    print(f"sweep: report of {len(data.candidates)} candidates written to {path} "
          f"({path.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - start:.1f} s)")
    return EXIT_OK


def _refine(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import yaml

    from ..exceptions import SpecError
    from ..search.refine import refine_spec
    from ..spec import reading as specmod

    folder = Path(args.results)
    try:
        old = yaml.safe_load((folder / "spec.yaml").read_text())
        best = json.loads((folder / "best.json").read_text())["best_params"]
    except (OSError, KeyError, ValueError) as exc:
        raise SpecError("RESULTS", str(folder), f"not a finished sweep's results ({exc})",
                        "give the output folder of a `sweep run` (with spec.yaml, best.json)"
                        ) from exc
    new = refine_spec(old, best, args.points)
    target = Path(args.write or f"{str(folder).rstrip('/')}-fine.yaml")
    target.write_text(yaml.safe_dump(new, sort_keys=False))
    print(f"sweep: finer grid around {best} written to {target}:")
    for key, values in new["param_grid"].items():
        print(f"  {key}: {values}")
    return _run(specmod.load(target), progress=True) if args.run else EXIT_OK


def _run(spec: Any, progress: bool) -> int:
    from .runner import run

    result = run(spec, progress=progress)
    print()
    for line in result.summary:
        print(line)
    print(f"\nsweep: {len(result.fits)} fits in {result.wall_seconds:.1f} s; "
          f"results in {result.output}/")
    if result.failed:
        print(f"sweep: {len(result.failed)} fit(s) failed:", file=sys.stderr)
        for rec in result.failed[:10]:
            last = str(rec.fit_error).strip().splitlines()[-1]
            print(f"  candidate {rec.params} fold {rec.split}: {last}",
                  file=sys.stderr)
        if not spec.allow_failures:
            from ..exceptions import FitsFailedError

            raise FitsFailedError(
                f"{len(result.failed)} of {len(result.fits)} fit(s) failed; their scores are "
                f"error_score in {result.output}/cv_results.csv.\n"
                "  Fix: see each fit's error above (and in fits.csv), or set allow_failures: "
                "true in the spec to exit 0 anyway.")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

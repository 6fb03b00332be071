"""Fits held in the driver, admitted to free worker threads, taken back when their worker
leaves (keras_sweep.driver.admission), fed the scheduler's answers directly; then the
backend's whole flow (submit -> admit -> send -> watch -> fetch -> deliver, and a fit
rescued from a worker that left) on a real in-process Dask cluster, in seconds."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from keras_sweep.driver.admission import Admission, Held
from keras_sweep.driver.deaths import WorkerDeath
from keras_sweep.driver.placement import Placement
from keras_sweep.store.records import FitRecord

A, B = "tcp://a:1", "tcp://b:1"


def held(candidate: str) -> Held:
    return Held(func=None, callback=None, cf_future=None, keys=[], candidate=candidate)


def death(worker: str = A) -> WorkerDeath:
    return WorkerDeath(worker=worker, time=time.time(), reason="killed by signal 9 (SIGKILL)")


def test_only_threads_the_scheduler_sees_free_get_a_fit():
    admission = Admission(Placement(), max_retries=1)
    for c in ("c0", "c1", "c2"):
        admission.hold(held(c))
    # A runs a task of another search already: only B's thread is free
    sends = admission.admit({A: 1, B: 1}, {A: ["other-task"], B: []})
    assert [(s.held.candidate, s.worker) for s in sends] == [("c0", B)]
    assert admission.in_flight == 1 and admission.heading[B] == 1
    assert [h.candidate for h in admission.waiting] == ["c1", "c2"]
    # chosen but its task not made yet: B is not free on the next look either
    assert admission.admit({A: 1, B: 1}, {A: ["other-task"], B: []}) == []
    admission.sent("t0", sends[0])
    assert admission.heading[B] == 0 and admission.load({}) == {B: 1}


def test_a_fit_comes_back_and_frees_its_thread():
    admission = Admission(Placement(), max_retries=1)
    admission.hold(held("c0"))
    admission.hold(held("c1"))
    (first,) = admission.admit({A: 1}, {})
    admission.sent("t0", first)
    assert admission.admit({A: 1}, {A: ["t0"]}) == []
    back = admission.back("t0", [FitRecord(worker=A, trace_kind="k0")])
    assert back is first and admission.in_flight == 0 and not admission.out
    assert admission.placement is not None and admission.placement.kinds == {"c0": "k0"}
    (second,) = admission.admit({A: 1}, {})
    assert second.held.candidate == "c1" and second.worker == A


def test_a_fit_whose_worker_left_is_held_again_first_in_line():
    admission = Admission(Placement(), max_retries=1)
    for c in ("c0", "c1"):
        admission.hold(held(c))
    (sent,) = admission.admit({A: 1}, {})
    admission.sent("t0", sent)
    # A left, but its removal is not heard yet: nothing is taken back this tick
    assert admission.departed({B}, left=lambda w: False, unfinished=lambda k: True) == []
    # a finished task is not taken back even when its worker left
    assert admission.departed({B}, left=lambda w: True, unfinished=lambda k: False) == []
    gone = admission.departed({B}, left=lambda w: w == A, unfinished=lambda k: True)
    assert gone == [("t0", sent)] and not admission.out
    assert admission.taken_back(sent, [death()], stopping=False) is True
    assert [h.candidate for h in admission.waiting] == ["c0", "c1"]
    assert admission.in_flight == 0 and len(sent.held.lost) == 1
    (again,) = admission.admit({B: 1}, {})
    assert again.held is sent.held and again.worker == B


def test_a_fit_that_kills_every_worker_fails_after_its_retries():
    admission = Admission(Placement(), max_retries=1)
    admission.hold(held("deadly"))
    outcomes = []
    for worker in (A, B):
        (sent,) = admission.admit({worker: 1}, {})
        admission.sent(f"t-{worker}", sent)
        (gone,) = admission.departed(set(), left=lambda w: True, unfinished=lambda k: True)
        outcomes.append(admission.taken_back(gone[1], [death(worker)], stopping=False))
    assert outcomes == [True, False]  # one retry, then failed with both deaths
    assert not admission.waiting and [d.worker for d in gone[1].held.lost] == [A, B]


def test_a_stopped_search_neither_retries_nor_fails():
    admission = Admission(Placement(), max_retries=3)
    admission.hold(held("c0"))
    (sent,) = admission.admit({A: 1}, {})
    admission.sent("t0", sent)
    admission.clear()
    assert not admission.waiting and not admission.out and admission.in_flight == 0
    assert admission.taken_back(sent, [death()], stopping=True) is True
    assert not admission.waiting  # dropped: nothing is sent after a stop


def test_without_placement_the_oldest_fits_go_anywhere():
    admission = Admission(None, max_retries=0)
    for c in ("c0", "c1", "c2"):
        admission.hold(held(c))
    sends = admission.admit({A: 1, B: 1}, None)
    assert [(s.held.candidate, s.worker) for s in sends] == [("c0", None), ("c1", None)]
    assert not admission.placed_anywhere()
    assert admission.wants_scheduler()  # c2 still waits
    admission.sent("t0", sends[0])
    admission.sent("t1", sends[1])
    assert admission.admit({A: 1, B: 1}, None) == []  # both threads taken by fits in flight


# -- the backend's flow on a real in-process cluster --------------------------------------

class Slow(BaseEstimator):
    """A tiny scikit-learn estimator whose fit takes ``seconds``."""

    def __init__(self, seconds: float = 0.0, c: float = 1.0) -> None:
        self.seconds = seconds
        self.c = c

    def fit(self, X: np.ndarray, y: np.ndarray) -> Slow:
        time.sleep(self.seconds)
        self.mean_ = float(y.mean()) * self.c
        return self

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        return -abs(float(y.mean()) - self.mean_)


@pytest.fixture()
def in_process():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield cluster, client


def _search(backend, estimator: Slow):
    from joblib import parallel_config
    from sklearn.model_selection import GridSearchCV

    X = np.arange(400, dtype="float64").reshape(200, 2)
    y = np.arange(200) % 3
    search = GridSearchCV(estimator, {"c": [0.5, 1.0, 2.0]}, cv=3, refit=False)
    with parallel_config(backend=backend):
        search.fit(X, y)
    return search


def test_every_fit_travels_and_comes_back_with_its_record(in_process):
    from keras_sweep.driver.backend import SweepBackend

    _, client = in_process
    submitted, finished = [], []
    backend = SweepBackend(client, seed=7, on_submit=submitted.append,
                           on_fit=lambda record, result: finished.append(record))
    search = _search(backend, Slow())
    reference = _search("sequential", Slow())
    for key in ("split0_test_score", "split1_test_score", "split2_test_score"):
        assert np.array_equal(search.cv_results_[key], reference.cv_results_[key])
    assert len(submitted) == len(finished) == 9
    assert sorted((r.candidate, r.split) for r in finished) == [
        (c, s) for c in range(3) for s in range(3)]
    assert all(r.seconds is not None and r.seconds >= 0 for r in finished)
    # X, y and the three training folds' indices (each test fold's is under 1 kB) travel
    # once each, though nine fits use them
    assert len(backend.data_sent) == 2 + 3 and backend.data_sent[:2] == [3200, 1600]
    assert not backend.admission.out and backend.admission.in_flight == 0


def test_a_fit_on_a_worker_that_leaves_is_taken_back_and_sent_again(in_process):
    """The worker running a fit is retired: the fit, restricted to it, can go nowhere
    else in Dask; sweep takes it back and sends it to the other worker."""
    from keras_sweep.driver.backend import SweepBackend

    _, client = in_process
    submitted: list[FitRecord] = []
    finished: list[FitRecord] = []
    backend = SweepBackend(client, on_submit=submitted.append,
                           on_fit=lambda record, result: finished.append(record))
    address = sorted(client.nthreads())[0]

    def retire_it() -> None:  # once a fit runs there, the worker leaves the cluster
        while not client.processing().get(address):
            time.sleep(0.02)
        client.retire_workers(workers=[address], close_workers=True)

    retirer = threading.Thread(target=retire_it, daemon=True)
    retirer.start()
    search = _search(backend, Slow(seconds=0.3))
    retirer.join(10)
    assert address not in client.nthreads()
    assert len(finished) == 9 and not any(r.fit_error for r in finished)
    assert len(submitted) == 10  # the fit that was running there was sent twice
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()

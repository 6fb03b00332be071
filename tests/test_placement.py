"""Where fits go: a free worker gets a fit of a kind whose trace it holds, else a kind
nobody holds, else the oldest fit; it never waits (sweep.placement, driver side)."""

from __future__ import annotations

from collections import Counter

from keras_sweep.driver.placement import Placement, candidate_key
from keras_sweep.store.records import FitRecord

A, B, B2 = "tcp://a:1", "tcp://b:1", "tcp://b:2"


def came_back(placement: Placement, candidate: str, worker: str, kind: str | None,
              **facts) -> None:
    placement.back(candidate, worker, [FitRecord(worker=worker, trace_kind=kind, **facts)])


def test_a_worker_takes_a_fit_of_the_kind_it_holds_before_older_fits():
    placement = Placement()
    assert placement.choose(["c0", "c1"], [A, B]) == [(0, A), (1, B)]
    came_back(placement, "c0", A, "k0")
    # A holds k0: it skips the older fit of c1 (running on B) for c0's next fold
    assert placement.choose(["c1", "c0"], [A]) == [(1, A)]


def test_a_fit_of_a_candidate_running_elsewhere_waits_for_a_fresh_one():
    placement = Placement()
    placement.choose(["c0"], [A])  # A makes c0's kind now
    # B: c0's next fold would trace c0's kind a second time; c1 is a kind nobody has
    assert placement.choose(["c0", "c1"], [B]) == [(1, B)]
    # with nothing else waiting, B takes it anyway: a free worker never waits
    assert placement.choose(["c0"], [B]) == [(0, B)]


def test_kinds_learned_from_one_candidate_serve_another_of_the_same_kind():
    placement = Placement()
    placement.choose(["lr=0.1", "lr=0.2"], [A, B])
    came_back(placement, "lr=0.1", A, "k")
    came_back(placement, "lr=0.2", B, "k")  # two learning rates, one traced graph
    assert placement.kinds == {"lr=0.1": "k", "lr=0.2": "k"}
    # A holds k: a fit of lr=0.2 goes there before one of a candidate of unknown kind
    assert placement.choose(["new", "lr=0.2"], [A]) == [(1, A)]


def test_free_threads_are_the_schedulers_not_the_fits_sent():
    placement = Placement()
    idle = placement.idle({A: 2, B: 1}, Counter())
    assert sorted(idle) == [A, A, B]
    picks = placement.choose(["c0", "c0", "c1", "c2"], idle)
    assert len(picks) == 3 and len({i for i, _ in picks}) == 3
    # the fit sent to B died with its worker; Dask moved it to A, busy already
    assert placement.idle({A: 2, B2: 1}, Counter({A: 2})) == [B2]
    for index, worker in picks:
        came_back(placement, ["c0", "c0", "c1", "c2"][index], worker, None)
    assert not any(+counts for counts in placement.running.values())


def test_without_kinds_the_oldest_fit_goes_first():
    placement = Placement(by_kind=False)
    came_back(placement, "c1", A, "k1")
    assert placement.choose(["c0", "c1", "c2"], [A, B]) == [(0, A), (1, B)]
    assert placement.kinds == {"c1": "k1"}  # still learned: the refit goes where they are


def test_a_recycled_or_gone_worker_takes_its_kinds_along():
    placement = Placement(max_kinds=2)
    for kind in ("k1", "k2", "k3"):
        came_back(placement, kind, A, kind)
    assert list(placement.held[A]) == ["k2", "k3"]  # as the worker drops its oldest
    came_back(placement, "c", B, "k1", recycle_due="3 fits")
    assert B not in placement.held and placement.idle({A: 1, B: 1}, Counter()) == [A]
    placement.idle({B: 1}, Counter())  # A left the cluster
    assert A not in placement.held


def test_candidates_are_told_apart_by_estimator_class_and_parameters():
    class One:
        pass

    class Two:
        pass

    assert candidate_key(One(), {"a": 1, "b": 2}) == candidate_key(One(), {"b": 2, "a": 1})
    assert candidate_key(One(), {"a": 1}) != candidate_key(Two(), {"a": 1})
    assert candidate_key(One(), {"a": 1}) != candidate_key(One(), {"a": 2})

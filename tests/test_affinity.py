"""The split's threads kept on different CPUs while they run side by side (``fast/_affinity.py``)."""
from __future__ import annotations

import os
import threading

import pytest

from rnnlab.fast import _affinity, _split

needs_two_cpus = pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2
                                    or _affinity.current_cpu() is None,
                                    reason="needs CPU affinity, sched_getcpu and two CPUs")


class _Sleeper:
    """A thread waiting on an event, and its native id."""

    def __init__(self):
        self.go = threading.Event()
        self.started = threading.Event()
        self.tid = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(10)

    def _run(self):
        self.tid = threading.get_native_id()
        self.started.set()
        self.go.wait(30)

    def stop(self):
        self.go.set()
        self.thread.join(10)


@needs_two_cpus
def test_apart_pins_this_thread_to_its_cpu_and_the_others_elsewhere_and_gives_the_masks_back():
    before = os.sched_getaffinity(0)
    sleeper = _Sleeper()
    try:
        theirs = os.sched_getaffinity(sleeper.tid)
        with _affinity.apart([sleeper.tid]) as pinned:
            mine, other = os.sched_getaffinity(0), os.sched_getaffinity(sleeper.tid)
            cpu = _affinity.current_cpu()
        assert pinned
        assert mine == {cpu}                                        # still on the CPU it was pinned to
        assert other == before - mine and other                     # every other CPU, not this one
        assert os.sched_getaffinity(0) == before
        assert os.sched_getaffinity(sleeper.tid) == theirs == before
    finally:
        sleeper.stop()


@needs_two_cpus
def test_two_threads_pinning_one_pool_thread_at_once_leave_it_free():
    """Two callers pinning the same pool thread at the same time: each gives it back its own
    CPUs (not the mask it found, which may be the other caller's pin), so it ends free."""
    before = os.sched_getaffinity(0)
    sleeper = _Sleeper()
    errors = []

    def caller():
        try:
            for _ in range(300):
                with _affinity.apart([sleeper.tid]):
                    pass
        except Exception as e:                                      # noqa: BLE001 (reported below)
            errors.append(e)
    try:
        threads = [threading.Thread(target=caller) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert os.sched_getaffinity(sleeper.tid) == before
    finally:
        sleeper.stop()


@needs_two_cpus
def test_apart_changes_nothing_when_turned_off_or_given_no_threads(monkeypatch):
    before = os.sched_getaffinity(0)
    with _affinity.apart([]) as pinned:
        assert not pinned and os.sched_getaffinity(0) == before
    monkeypatch.setattr(_affinity, "ENABLED", False)
    sleeper = _Sleeper()
    try:
        with _affinity.apart([sleeper.tid]) as pinned:
            assert not pinned and os.sched_getaffinity(0) == before
            assert os.sched_getaffinity(sleeper.tid) == before
    finally:
        sleeper.stop()


@needs_two_cpus
def test_apart_leaves_a_thread_that_is_gone_and_still_gives_this_ones_mask_back():
    before = os.sched_getaffinity(0)
    sleeper = _Sleeper()
    gone = sleeper.tid
    sleeper.stop()
    with _affinity.apart([gone]):
        assert len(os.sched_getaffinity(0)) == 1                    # this thread pinned all the same
    assert os.sched_getaffinity(0) == before


@needs_two_cpus
def test_split_parts_run_on_different_cpus_and_every_mask_comes_back():
    """The calling thread's part runs pinned to one CPU and a pool thread's on the others (a part
    the pool has not started when the caller is done runs on the caller, after its mask is back).
    The caller's part waits up to 5 s for the other to start, so that the pool's thread takes it."""
    before = os.sched_getaffinity(0)
    _split.run(lambda n0, n1: None, 4, 2)                            # the pool exists
    tids = _split._pool[2]
    theirs = [os.sched_getaffinity(t) for t in tids]
    seen = {}
    started = threading.Event()

    def body(n0, n1):
        seen[n0] = (threading.get_native_id(), os.sched_getaffinity(0))
        if n0 == 0:
            started.wait(5)
        else:
            started.set()
    on_pool = 0
    for _ in range(5):
        seen.clear()
        started.clear()
        _split.run(body, 16, 2)
        (tid0, mask0), (tid1, mask1) = seen[0], seen[8]
        assert tid0 == threading.get_native_id() and len(mask0) == 1
        if tid1 != tid0:                                            # part 1 on the pool's thread
            assert tid1 in tids and mask1 == before - mask0
            on_pool += 1
        else:                                                       # run here after part 0
            assert mask1 == before
    assert on_pool > 0                                              # the pinned case was seen
    assert os.sched_getaffinity(0) == before
    assert [os.sched_getaffinity(t) for t in tids] == theirs


def test_split_pool_starts_all_its_threads_at_once():
    _split._executor(3)
    pool, size, tids = _split._pool
    assert size >= 3 and len(tids) == size == len(set(tids))
    assert set(tids) <= set(_split._workers)
    if os.path.exists("/proc/self/task"):
        assert all(os.path.exists(f"/proc/self/task/{t}") for t in tids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_makes_its_own_pool():
    """The parent's pool threads do not exist in a forked child (their ids are the parent's, and
    pinning them would pin the parent's threads): the child starts without a pool, and its splits
    run on a pool of its own."""
    _split.run(lambda n0, n1: None, 4, 2)
    parent = set(_split._pool[2])
    pid = os.fork()
    if pid == 0:                                                    # the child: exit code says what held
        code = 1
        try:
            if _split._pool is None and not _split._workers:
                ran = []
                _split.run(lambda n0, n1: ran.append(n0), 4, 2)
                code = 0 if sorted(ran) == [0, 2] and not set(_split._pool[2]) & parent else 3
            else:
                code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status

"""ui/heap.py: the long-lived heap is frozen once per set of modules, and what is created later is
still collected."""

import gc
import sys
import types
import weakref

import pytest

from ui import heap


@pytest.fixture
def fresh_heap(monkeypatch):
    monkeypatch.setattr(heap, "_modules_at_freeze", 0)
    monkeypatch.setattr(heap, "_frozen_at", -float("inf"))
    yield
    gc.unfreeze()  # the rest of the test session collects as before


class Cycle:
    def __init__(self):
        self.me = self


def test_freezes_once_per_set_of_modules(fresh_heap, monkeypatch):
    assert heap.freeze_imported_heap()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    assert not heap.freeze_imported_heap()  # nothing imported since: a length check only
    monkeypatch.setitem(sys.modules, "cdm_test_lazily_imported", types.ModuleType("cdm_test_lazily_imported"))
    assert heap.freeze_imported_heap()  # a page imported a library: freeze again
    assert gc.get_freeze_count() > 0.9 * frozen  # the same heap, less what was garbage by then


def test_garbage_of_a_frozen_moment_is_collected_first(fresh_heap):
    dead = Cycle()
    ref = weakref.ref(dead)
    del dead  # cyclic garbage alive only until a collection: it must not be frozen
    heap.freeze_imported_heap()
    assert ref() is None


def test_objects_created_after_the_freeze_are_still_collected(fresh_heap):
    heap.freeze_imported_heap()
    later = Cycle()
    ref = weakref.ref(later)
    del later
    gc.collect(2)  # what Streamlit runs after every rerun
    assert ref() is None


def test_a_full_collection_after_the_freeze_walks_only_new_objects(fresh_heap):
    heap.freeze_imported_heap()
    assert len(gc.get_objects()) < 0.2 * gc.get_freeze_count()


def test_garbage_frozen_while_alive_is_reclaimed_at_the_next_freeze(fresh_heap, monkeypatch):
    """A session's state is alive at a freeze and becomes cyclic garbage when the session closes:
    the collection after a run cannot reach it, the next freeze (REFREEZE_S later) reclaims it."""
    alive = Cycle()
    ref = weakref.ref(alive)
    heap.freeze_imported_heap()
    del alive
    gc.collect(2)
    assert ref() is not None  # frozen: out of reach of the collection after a run
    assert not heap.freeze_imported_heap()  # nothing imported and not due yet
    monkeypatch.setattr(heap, "_frozen_at", heap._frozen_at - heap.REFREEZE_S)
    assert heap.freeze_imported_heap()
    assert ref() is None

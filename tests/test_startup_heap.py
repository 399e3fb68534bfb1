"""``voicebot serve`` moves its start-up heap out of the garbage collector's reach before it
serves (voicebot.server.run.freeze_startup_heap): what start-up left alive is frozen, what it
left as garbage is collected first, not kept forever. Run in a child interpreter: freezing
the test process's heap would outlive the test."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import gc, weakref

    from voicebot.server.run import freeze_startup_heap


    class Node:
        pass


    kept = Node()
    cycle = Node()
    cycle.self = cycle  # garbage only a collection frees
    dead = weakref.ref(cycle)
    del cycle
    gc.disable()  # nothing collects before the function under test does
    freeze_startup_heap()
    assert dead() is None, "start-up garbage was frozen instead of collected"
    assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
    assert not any(o is kept for o in gc.get_objects()), "a live start-up object is still collected"
    fresh = Node()
    assert any(o is fresh for o in gc.get_objects()), "objects made after start-up are collected as usual"
    print("ok")
    """
)


def test_the_start_up_heap_is_frozen_and_its_garbage_collected_first() -> None:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_serve_freezes_the_heap_after_building_the_app_and_before_serving() -> None:
    import inspect

    from voicebot import cli

    source = inspect.getsource(cli.serve_command)
    built, frozen = source.index("create_app(runtime)"), source.index("freeze_startup_heap()")
    served = source.index("run_server_with_reload(server")
    assert built < frozen < served

"""supervisor.sweep_arrays: the members in flight of a sweep on a batch
driver (one job array held to max_parallel by Slurm), and a member's array."""

import types

import pytest

from supervisor import sweep_arrays


@pytest.mark.parametrize(
    "slots,max_parallel,busy,batch,limit",
    [
        # no max_parallel: twice the running slots, on any driver
        (4, None, False, False, 8),
        (4, None, True, True, 8),
        # elsewhere max_parallel caps them
        (4, 2, False, False, 2),
        (4, 2, True, False, 2),
        (4, 20, False, False, 8),
        # on a batch driver, with none in flight: the slots' worth goes at
        # once (one array, Slurm runs 2 of it at a time)
        (4, 2, False, True, 4),
        (4, 6, False, True, 6),
        (4, 20, False, True, 8),
        # ... later ones only while fewer than max_parallel are in flight
        (4, 2, True, True, 2),
        (4, 6, True, True, 6),
    ],
)
def test_in_flight_limit(slots, max_parallel, busy, batch, limit):
    assert sweep_arrays.in_flight_limit(slots, 2, max_parallel, busy, batch) == limit


def test_running_past_max_parallel_is_never_allowed():
    """Whatever is in flight may all be running: past the first array (none
    in flight), the limit never lets more than max_parallel be in flight."""
    for slots in range(1, 6):
        for m in range(1, 12):
            assert sweep_arrays.in_flight_limit(slots, 2, m, True, True) <= m


def test_array_of_a_member_and_of_a_simulation():
    w = types.SimpleNamespace(id="5f1e2d3c4b5a", max_parallel=3)
    m = types.SimpleNamespace(sweep={"id": w.id, "index": 7})
    assert sweep_arrays.array_of({w.id: w}, m) == {
        "key": w.id,
        "limit": 3,
        "index": 7,
    }
    assert sweep_arrays.array_of({}, m) is None
    assert sweep_arrays.array_of({w.id: w}, types.SimpleNamespace(sweep=None)) is None

"""The radial distribution function g(r) of the atoms of a snapshot frame.

The last ``snapshot`` frame of the source (`agent.outputs`: the atoms of a
LAMMPS dump, subsampled by id) gives positions in an orthogonal periodic
box; pairs are counted at their minimum-image distance, and each shell's
count is divided by what an ideal gas of the same density would give, so
g(r) tends to 1 far away. A subsample keeps the same density per atom kept,
so g(r) is the same up to noise.
"""

import math

#: at most this many pairs' distances are held at once (rows of the matrix)
_CHUNK_PAIRS = 2_000_000


class AnalysisError(ValueError):
    """The frames cannot give this analysis (said to the user as it is)."""


def rdf(frames, bins=100, r_max=None):
    """g(r) of the last snapshot in `frames`, as a ``rows`` frame.

    Args:
        frames (list): the source's frames
        bins (int): shells between 0 and `r_max`
        r_max (float): the largest distance; 0, None or too large: half
            the box's shortest side (the minimum image holds up to there)
    Returns:
        dict: ``{"plot": "rows", "table": "rdf", "columns": ["r", "g"], ...}``
    """
    import numpy

    s = next((f for f in reversed(frames) if f.get("plot") == "snapshot"), None)
    if s is None:
        raise AnalysisError("the source has no snapshot of atoms (a dump) to analyse")
    c = s["columns"]
    if not {"x", "y", "z"} <= set(c):
        raise AnalysisError(f"the snapshot has no x, y, z columns: {c}")
    xyz = numpy.array(
        [[a[c.index(k)] for k in ("x", "y", "z")] for a in s["atoms"]], float
    )
    n = len(xyz)
    if n < 2:
        raise AnalysisError(f"the snapshot has {n} atom(s): no pairs")
    box = numpy.array([hi - lo for lo, hi in s["box"]], float)
    half = float(box.min()) / 2
    r_max = half if not r_max or r_max > half else float(r_max)
    bins = int(bins)
    edges = numpy.linspace(0.0, r_max, bins + 1)
    counts = numpy.zeros(bins)
    step = max(1, _CHUNK_PAIRS // n)
    for i in range(0, n - 1, step):
        a = xyz[i : i + step]
        # each pair once: atom i with those after it
        d = a[:, None, :] - xyz[None, :, :]
        d -= box * numpy.round(d / box)
        r = numpy.sqrt((d * d).sum(axis=2))
        j = numpy.arange(i, i + len(a))[:, None] < numpy.arange(n)[None, :]
        counts += numpy.histogram(r[j], bins=edges)[0]
    v = float(box.prod())
    shell = 4.0 / 3.0 * math.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    ideal = n * (n - 1) / 2 * shell / v
    g = counts / ideal
    mid = (edges[1:] + edges[:-1]) / 2
    return {
        "plot": "rows",
        "table": "rdf",
        "step": s["step"],
        "columns": ["r", "g"],
        "rows": [[round(float(x), 6), round(float(y), 6)] for x, y in zip(mid, g)],
        "atoms": n,
        "natoms": s.get("natoms", n),
    }

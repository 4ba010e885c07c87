"""1-D heat equation u_t = alpha u_xx on [0, 1] with u = 0 at both ends.

Explicit finite differences (forward Euler in time, centred in space) on a
fixed grid of ``nx`` points, so every step costs the same and the run time is
linear in ``steps`` (and in ``nx``). Sends about 100 frames of the whole
profile (``plot: "replace"``) and writes the final profile to ``result.json``.
"""

import json
import math
import sys

from agent.codes import report

DEFAULTS = {
    # ~2.7 s at nx=101 on one core of the reference host; 5,000,000 is ~42 s
    "steps": 300000,
    "nx": 101,
    "alpha": 0.02,
    "initial": "pulse",
}

#: time step unless alpha and nx need a smaller one to be stable; fixed (not
#: tied to alpha) so that alpha changes what the plot shows, not its time axis
DT_SECS = 1e-5

#: fraction of the stability limit alpha dt / dx^2 <= 1/2 that dt may reach
_STABLE_FRACTION = 0.8

RESULT_FILE = "result.json"


def initial_profile(kind, x):
    """Initial temperature at the points `x`; both ends are 0.

    Args:
        kind (str): "pulse" (a Gaussian at 0.5), "step" (1 on the left half) or
            "sine" (the first mode, which decays as exp(-pi^2 alpha t))
        x (list): grid points
    Returns:
        list: temperatures
    """
    if kind == "pulse":
        u = [math.exp(-(((v - 0.5) / 0.1) ** 2)) for v in x]
    elif kind == "step":
        u = [1.0 if v <= 0.5 else 0.0 for v in x]
    elif kind == "sine":
        u = [math.sin(math.pi * v) for v in x]
    else:
        sys.exit(f"heat: unknown initial={kind!r}; expected pulse, step or sine")
    u[0] = u[-1] = 0.0
    return u


def main():
    p = report.params(DEFAULTS)
    steps = max(0, p["steps"])
    nx = p["nx"]
    alpha = p["alpha"]
    if nx < 3 or not alpha > 0:
        sys.exit(f"heat: need nx >= 3 and alpha > 0, got nx={nx} alpha={alpha}")
    dx = 1.0 / (nx - 1)
    dt = min(DT_SECS, _STABLE_FRACTION * 0.5 * dx * dx / alpha)
    r = alpha * dt / (dx * dx)
    x = [i * dx for i in range(nx)]
    u = initial_profile(p["initial"], x)
    print(f"heat: nx={nx} dx={dx:.4g} dt={dt:.4g} r={r:.4g} steps={steps}", flush=True)
    x_frame = report.rounded(x)
    stride = report.every(steps)

    def _frame(step):
        report.frame(
            {
                "step": step,
                "time": step * dt,
                "plot": "replace",
                "x": x_frame,
                "u": report.rounded(u),
            }
        )

    _frame(0)
    for step in range(1, steps + 1):
        # a comprehension over shifted copies is the fastest pure-Python
        # stencil; with r <= 1/2 each new value is a convex combination of old ones, so the
        # maximum cannot grow (the discrete maximum principle)
        u = [0.0] + [b + r * (a - 2.0 * b + c) for a, b, c in zip(u, u[1:], u[2:])]
        u.append(0.0)
        if step % stride == 0 or step == steps:
            _frame(step)
            if step < steps:
                report.progress(step / steps)
    with open(RESULT_FILE, "w") as f:
        json.dump(
            {"step": steps, "time": steps * dt, "dt": dt, "params": p, "x": x, "u": u},
            f,
        )
    print(f"heat: wrote {RESULT_FILE} max(u)={max(u):.6g}", flush=True)
    report.progress(1.0)


if __name__ == "__main__":
    main()

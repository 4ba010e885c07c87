"""Lorenz attractor integrated with classical 4th-order Runge-Kutta.

A fixed amount of work per step, so the run time is linear in ``steps``.
Sends about 100 frames holding the points new since the previous frame
(``plot: "append"``), sampled so a whole run plots about 30,000 points, and
streams ``trajectory.csv`` with up to about 100,000 rows.
"""

import math
import sys

from agent.codes import report

DEFAULTS = {
    # ~2.5 s on one core of the reference host; 50,000,000 is ~41 s
    "steps": 2500000,
    # smaller than the usual 0.01 so the sampled points draw a smooth curve
    "dt": 0.0005,
    "sigma": 10.0,
    "rho": 28.0,
    "beta": 8.0 / 3.0,
}

#: the usual starting point, off the unstable fixed point at the origin
INITIAL = (1.0, 1.0, 1.0)

#: points plotted over a whole run; a frame then holds ~300 (~10 KB)
PLOT_POINTS = 30000

#: rows of trajectory.csv over a whole run (~5 MB)
CSV_ROWS = 100000

CSV_FILE = "trajectory.csv"


def main():
    p = report.params(DEFAULTS)
    steps = max(0, p["steps"])
    dt = p["dt"]
    s, r, b = p["sigma"], p["rho"], p["beta"]
    if not dt > 0:
        sys.exit(f"lorenz: need dt > 0, got dt={dt}")
    print(f"lorenz: sigma={s} rho={r} beta={b:.6g} dt={dt} steps={steps}", flush=True)
    frame_stride = report.every(steps)
    point_stride = report.every(steps, PLOT_POINTS)
    csv_stride = report.every(steps, CSV_ROWS)
    x, y, z = INITIAL
    h = dt / 2.0
    d6 = dt / 6.0
    px, py, pz = [x], [y], [z]

    # reads only the pending points, so x, y and z stay fast locals of main
    def _frame(step):
        if not all(map(math.isfinite, px + py + pz)):
            sys.exit(f"lorenz: solution diverged at step={step}; try a smaller dt")
        report.frame(
            {
                "step": step,
                "time": step * dt,
                "plot": "append",
                "x": report.rounded(px),
                "y": report.rounded(py),
                "z": report.rounded(pz),
            }
        )
        del px[:], py[:], pz[:]

    with open(CSV_FILE, "w") as f:
        f.write("step,time,x,y,z\n")
        f.write(f"0,0.0,{x!r},{y!r},{z!r}\n")
        _frame(0)
        for step in range(1, steps + 1):
            # inlined right-hand side: a function call per stage would cost
            # about a third of the step
            k1x = s * (y - x)
            k1y = x * (r - z) - y
            k1z = x * y - b * z
            ax, ay, az = x + h * k1x, y + h * k1y, z + h * k1z
            k2x = s * (ay - ax)
            k2y = ax * (r - az) - ay
            k2z = ax * ay - b * az
            ax, ay, az = x + h * k2x, y + h * k2y, z + h * k2z
            k3x = s * (ay - ax)
            k3y = ax * (r - az) - ay
            k3z = ax * ay - b * az
            ax, ay, az = x + dt * k3x, y + dt * k3y, z + dt * k3z
            k4x = s * (ay - ax)
            k4y = ax * (r - az) - ay
            k4z = ax * ay - b * az
            x += d6 * (k1x + 2.0 * (k2x + k3x) + k4x)
            y += d6 * (k1y + 2.0 * (k2y + k3y) + k4y)
            z += d6 * (k1z + 2.0 * (k2z + k3z) + k4z)
            if step % csv_stride == 0 or step == steps:
                f.write(f"{step},{step * dt!r},{x!r},{y!r},{z!r}\n")
            if step % point_stride == 0 or step == steps:
                px.append(x)
                py.append(y)
                pz.append(z)
            if step % frame_stride == 0 or step == steps:
                _frame(step)
                if step < steps:
                    report.progress(step / steps)
    print(f"lorenz: wrote {CSV_FILE} end=({x:.6g}, {y:.6g}, {z:.6g})", flush=True)
    report.progress(1.0)


if __name__ == "__main__":
    main()

// A `scatter3d` plot of a code's `plots` spec: the atoms of the latest
// snapshot of a dump file (its "snapshot" frames), colored by type, in the
// simulation box drawn as its twelve edges. Each snapshot replaces the last
// (Plotly.react keeps the camera where the person turned it). The agent
// sends at most a few thousand atoms of a snapshot (the same ones each
// time), which a browser turns smoothly.

import { CONFIG, layout } from "./plot.js";
import { LivePlot, fmtNum } from "./liveplot.js";

const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4d7c0f"];
const BOX_LINE = "#64748b";
/** Coordinate columns, in the order they are looked for. */
const COORDS = [
    ["x", "y", "z"],
    ["xu", "yu", "zu"],
];

export class AtomsPlot extends LivePlot {
    constructor(spec, index) {
        super(spec, index, "plot-3d");
    }

    wants(f) {
        return f.plot === "snapshot" && f.file === this.spec.file;
    }

    clear() {
        this.step = null;
        this.atoms = 0;
        this.natoms = 0;
    }

    mark() {
        this.el.dataset.step = this.step === null ? "" : String(this.step);
        this.el.dataset.atoms = String(this.atoms);
        this.el.dataset.natoms = String(this.natoms);
    }

    async draw(P, batch) {
        // only the latest snapshot is shown
        const f = batch[batch.length - 1];
        const c = Array.isArray(f.columns) ? f.columns : [];
        const xyz = COORDS.map((t) => t.map((n) => c.indexOf(n))).find((t) => t.every((i) => i >= 0));
        const atoms = Array.isArray(f.atoms) ? f.atoms : [];
        this.step = f.step ?? null;
        this.natoms = f.natoms ?? atoms.length;
        if (!xyz) {
            this.atoms = 0;
            this.caption.textContent = `step ${fmtNum(f.step)}: the dump has no x, y, z columns (${c.join(" ")})`;
            return;
        }
        const traces = this._atomTraces(atoms, c, xyz);
        const corners = boxCorners(validBox(f.box), validTilt(f.tilt));
        if (corners) {
            traces.push(boxEdges(corners));
        }
        await P.react(this.div, traces, this._layout(corners, atoms, xyz), CONFIG);
        this.atoms = atoms.length;
        const shown = this.atoms === this.natoms ? `${fmtNum(this.atoms)} atoms` : `${fmtNum(this.atoms)} of ${fmtNum(this.natoms)} atoms`;
        this.caption.textContent = `step ${fmtNum(f.step)} · ${shown}`;
    }

    /** One trace per atom type (or element), so the legend names them. */
    _atomTraces(atoms, c, [xi, yi, zi]) {
        const ti = c.includes("type") ? c.indexOf("type") : c.indexOf("element");
        const idi = c.indexOf("id");
        const byType = new Map();
        for (const a of atoms) {
            const t = ti >= 0 ? a[ti] : null;
            let g = byType.get(t);
            if (!g) {
                g = { x: [], y: [], z: [], id: [] };
                byType.set(t, g);
            }
            g.x.push(a[xi]);
            g.y.push(a[yi]);
            g.z.push(a[zi]);
            g.id.push(idi >= 0 ? a[idi] : null);
        }
        const types = [...byType.keys()].sort((a, b) => (typeof a === "number" && typeof b === "number" ? a - b : String(a).localeCompare(String(b))));
        const many = atoms.length > 5000;
        return types.map((t, k) => {
            const g = byType.get(t);
            return {
                type: "scatter3d",
                mode: "markers",
                name: t === null ? "atoms" : `type ${t}`,
                x: g.x,
                y: g.y,
                z: g.z,
                customdata: g.id,
                marker: { size: many ? 1.5 : 2.5, color: COLORS[k % COLORS.length], opacity: 0.85, line: { width: 0 } },
                hovertemplate: `${t === null ? "" : `type ${t} `}id %{customdata}<br>x %{x:.3f}<br>y %{y:.3f}<br>z %{z:.3f}<extra></extra>`,
            };
        });
    }

    _layout(corners, atoms, xyz) {
        // the box (its corners: a tilted one is wider), widened to any atom
        // outside it (unwrapped coordinates)
        const ranges = [0, 1, 2].map((k) => {
            let lo = corners ? Math.min(...corners.map((p) => p[k])) : Infinity;
            let hi = corners ? Math.max(...corners.map((p) => p[k])) : -Infinity;
            for (const a of atoms) {
                const v = a[xyz[k]];
                if (v < lo) {
                    lo = v;
                }
                if (v > hi) {
                    hi = v;
                }
            }
            return Number.isFinite(lo) && Number.isFinite(hi) && hi > lo ? [lo, hi] : [0, 1];
        });
        const ext = ranges.map(([lo, hi]) => hi - lo);
        const m = Math.max(...ext);
        const axis = (name, k) => ({
            title: { text: name },
            range: ranges[k],
            gridcolor: "#e2e8f0",
            zerolinecolor: "#cbd5e1",
            backgroundcolor: "#ffffff",
            showbackground: true,
        });
        return layout({
            margin: { l: 0, r: 0, t: 0, b: 0 },
            legend: { orientation: "h", x: 0, y: 1, bgcolor: "rgba(0,0,0,0)", itemsizing: "constant" },
            scene: {
                // a little further out than plotly's default: the whole box in view
                camera: { eye: { x: 1.55, y: 1.55, z: 1.05 } },
                xaxis: axis("x", 0),
                yaxis: axis("y", 1),
                zaxis: axis("z", 2),
                aspectmode: "manual",
                aspectratio: { x: ext[0] / m, y: ext[1] / m, z: ext[2] / m },
            },
        });
    }
}

/** [[lo, hi] x3] with lo < hi, or null. */
function validBox(box) {
    const ok =
        Array.isArray(box) &&
        box.length === 3 &&
        box.every((b) => Array.isArray(b) && typeof b[0] === "number" && typeof b[1] === "number" && b[1] > b[0]);
    return ok ? box : null;
}

/** [xy, xz, yz] numbers, or null (an orthogonal box). */
function validTilt(tilt) {
    return Array.isArray(tilt) && tilt.length === 3 && tilt.every((t) => typeof t === "number" && Number.isFinite(t)) ? tilt : null;
}

/**
 * The box's eight corners, index i + 2j + 4k for origin + i a + j b + k c,
 * or null. LAMMPS's tilted box: a = (lx, 0, 0), b = (xy, ly, 0),
 * c = (xz, yz, lz) from its lo/hi and tilt factors.
 */
function boxCorners(box, tilt) {
    if (!box) {
        return null;
    }
    const [[x0, x1], [y0, y1], [z0, z1]] = box;
    const [xy, xz, yz] = tilt || [0, 0, 0];
    const a = [x1 - x0, 0, 0];
    const b = [xy, y1 - y0, 0];
    const c = [xz, yz, z1 - z0];
    const rv = [];
    for (const k of [0, 1]) {
        for (const j of [0, 1]) {
            for (const i of [0, 1]) {
                rv.push([0, 1, 2].map((n) => [x0, y0, z0][n] + i * a[n] + j * b[n] + k * c[n]));
            }
        }
    }
    return rv;
}

/** The box's twelve edges as one line trace (nulls between edges). */
function boxEdges(corners) {
    const x = [];
    const y = [];
    const z = [];
    // corners whose indices differ in one bit are the ends of an edge
    for (let p = 0; p < 8; p++) {
        for (const bit of [1, 2, 4]) {
            if (!(p & bit)) {
                const [s, e] = [corners[p], corners[p | bit]];
                x.push(s[0], e[0], null);
                y.push(s[1], e[1], null);
                z.push(s[2], e[2], null);
            }
        }
    }
    return {
        type: "scatter3d",
        mode: "lines",
        name: "box",
        x,
        y,
        z,
        line: { color: BOX_LINE, width: 2 },
        hoverinfo: "skip",
        showlegend: false,
    };
}

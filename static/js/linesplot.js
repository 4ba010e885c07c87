// A `lines` plot of a code's `plots` spec: the x column against each y
// column of a table in the run's output (e.g. LAMMPS's thermo: temperature,
// energies, pressure against step), from its "rows" frames.
//
// Series that share a unit share a panel (so energies sit together and the
// pressure keeps its own scale); the panels are stacked over one x axis. The
// first draw makes the plot; later ones extend its lines with the new rows
// (Plotly.extendTraces), so a long run costs only what it adds. A frame of
// a new table in the same file (`run`: LAMMPS prints one per run command)
// goes on the same lines, with the declared columns it has; if its x starts
// below where the last table ended, the lines break there instead of
// drawing back.

import { CONFIG, FONT, layout } from "./plot.js";
import { LivePlot, fmtNum } from "./liveplot.js";

const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4d7c0f"];
const GRID = { gridcolor: "#e2e8f0", zerolinecolor: "#cbd5e1", linecolor: "#cbd5e1" };
/** The share of the plot's height between two panels. */
const PANEL_GAP = 0.07;

/** "temperature (ε/k_B)", "step", or the column's name. */
export function axisText(a) {
    const name = a.label || a.column;
    return a.unit ? `${name} (${a.unit})` : name;
}

export class LinesPlot extends LivePlot {
    constructor(spec, index) {
        super(spec, index, "plot-lines");
        /** one panel per unit, in the order the spec first names it */
        this.panels = [];
        const byUnit = new Map();
        this.series = spec.y.map((a, i) => {
            const key = a.unit ? `unit:${a.unit}` : `column:${a.column}`;
            let p = byUnit.get(key);
            if (!p) {
                p = { axis: this.panels.length, series: [] };
                byUnit.set(key, p);
                this.panels.push(p);
            }
            const s = { ...a, color: COLORS[i % COLORS.length], panel: p.axis };
            p.series.push(s);
            return s;
        });
        this.el.style.setProperty("--panels", String(this.panels.length));
    }

    wants(f) {
        return f.plot === "rows" && f.table === this.spec.table;
    }

    clear() {
        this.rows = 0;
        this.tables = 0;
        this.lastRun = undefined;
        this.lastX = null;
        this.lastRow = null;
        this.lastColumns = [];
    }

    mark() {
        this.el.dataset.rows = String(this.rows);
        this.el.dataset.tables = String(this.tables);
    }

    /** The new points of each series, from the frames of a batch. */
    _collect(batch) {
        const xs = this.series.map(() => []);
        const ys = this.series.map(() => []);
        const xColumn = this.spec.x.column;
        for (const f of batch) {
            const c = Array.isArray(f.columns) ? f.columns : [];
            const xi = c.indexOf(xColumn);
            if (xi < 0 || !Array.isArray(f.rows) || !f.rows.length) {
                continue;
            }
            const yi = this.series.map((s) => c.indexOf(s.column));
            if (f.run !== this.lastRun) {
                const x0 = f.rows[0][xi];
                if (this.lastRun !== undefined && this.lastX !== null && x0 < this.lastX) {
                    // a table that starts over: a gap, not a line back
                    xs.forEach((a) => a.push(null));
                    ys.forEach((a) => a.push(null));
                }
                this.lastRun = f.run;
                this.tables += 1;
            }
            for (const row of f.rows) {
                const x = row[xi];
                for (let k = 0; k < yi.length; k++) {
                    if (yi[k] >= 0) {
                        xs[k].push(x);
                        ys[k].push(row[yi[k]]);
                    }
                }
            }
            this.rows += f.rows.length;
            this.lastRow = f.rows[f.rows.length - 1];
            this.lastColumns = c;
            this.lastX = this.lastRow[xi];
        }
        return { xs, ys };
    }

    async draw(P, batch, fresh) {
        const { xs, ys } = this._collect(batch);
        if (fresh) {
            await P.react(this.div, this._traces(xs, ys), this._layout(), CONFIG);
        } else if (xs.some((a) => a.length)) {
            await P.extendTraces(this.div, { x: xs, y: ys }, this.series.map((_, i) => i));
        }
        this._caption();
    }

    _traces(xs, ys) {
        return this.series.map((s, i) => ({
            type: "scatter",
            mode: "lines",
            x: xs[i],
            y: ys[i],
            name: axisText(s),
            xaxis: "x",
            yaxis: s.panel ? `y${s.panel + 1}` : "y",
            line: { color: s.color, width: 1.8 },
            hovertemplate: `${axisText(this.spec.x)} %{x}<br>${s.label || s.column} %{y}<extra></extra>`,
        }));
    }

    _layout() {
        const n = this.panels.length;
        const h = (1 - PANEL_GAP * (n - 1)) / n;
        const extra = {
            margin: { l: 64, r: 16, t: 8, b: 44 },
            legend: { orientation: "h", x: 0, y: 1.0, yanchor: "bottom", bgcolor: "rgba(0,0,0,0)" },
            hovermode: "closest",
            xaxis: { ...GRID, title: { text: axisText(this.spec.x) }, anchor: n > 1 ? `y${n}` : "y" },
        };
        this.panels.forEach((p, i) => {
            const top = 1 - i * (h + PANEL_GAP);
            const units = [...new Set(p.series.map((s) => s.unit).filter(Boolean))];
            extra[i ? `yaxis${i + 1}` : "yaxis"] = {
                ...GRID,
                domain: [Math.max(0, top - h), top],
                anchor: "x",
                title: { text: units.length ? units.join(", ") : p.series[0].label || p.series[0].column, font: { ...FONT, size: 11 } },
            };
        });
        return layout(extra);
    }

    _caption() {
        const parts = [];
        const c = this.lastColumns;
        const r = this.lastRow;
        if (r) {
            parts.push(`${this.spec.x.label || this.spec.x.column} ${fmtNum(r[c.indexOf(this.spec.x.column)])}`);
            for (const s of this.series) {
                const i = c.indexOf(s.column);
                if (i >= 0) {
                    parts.push(`${s.label || s.column} ${fmtNum(r[i])}`);
                }
            }
        }
        parts.push(`${this.rows.toLocaleString()} rows`);
        this.caption.textContent = parts.join(" · ");
    }
}

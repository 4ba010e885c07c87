// The live plot of a run's in situ frames, drawn with plotly.js (served by
// the supervisor from the plotly Python package: nothing from the internet).
//
// A frame says how it is drawn: "replace" (heat: the latest profile replaces
// the line), "append" (lorenz: new points extend the trajectory) or "table"
// (stats: a table of per-field statistics).

import { h, fill } from "./dom.js";

let plotlyPromise = null;

/** Load plotly.js once, on first use. */
export function loadPlotly() {
    if (window.Plotly) {
        return Promise.resolve(window.Plotly);
    }
    if (!plotlyPromise) {
        plotlyPromise = new Promise((resolve, reject) => {
            const s = document.createElement("script");
            s.src = "/vendor/plotly.min.js";
            s.async = true;
            s.onload = () => resolve(window.Plotly);
            s.onerror = () => {
                plotlyPromise = null;
                reject(new Error("Could not load the plotting library (/vendor/plotly.min.js)."));
            };
            document.head.append(s);
        });
    }
    return plotlyPromise;
}

export const FONT = {
    family: 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif',
    size: 12,
    color: "#334155",
};
const LINE = "#2563eb";
const FAINT = "#94a3b8";
export const CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

/** The layout every plot shares, with `extra` over it. */
export function layout(extra) {
    return {
        font: FONT,
        margin: { l: 56, r: 16, t: 12, b: 44 },
        paper_bgcolor: "rgba(0,0,0,0)",
        plot_bgcolor: "#ffffff",
        showlegend: true,
        legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom", bgcolor: "rgba(0,0,0,0)" },
        xaxis: { gridcolor: "#e2e8f0", zerolinecolor: "#cbd5e1", linecolor: "#cbd5e1" },
        yaxis: { gridcolor: "#e2e8f0", zerolinecolor: "#cbd5e1", linecolor: "#cbd5e1" },
        uirevision: "keep",
        ...extra,
    };
}

/**
 * A plot bound to `el` (the container) and `caption` (a line of text under
 * it). `reset()` for a new run, `add(frames)` as they arrive. The container
 * carries data-frames and data-points so people and tests can see it grow.
 */
export class FramePlot {
    constructor(el, caption) {
        this.el = el;
        this.caption = caption;
        this.kind = null;
        this.frames = 0;
        this.points = 0;
        this.first = null;
        this.last = null;
        this._queue = [];
        this._drawing = false;
        this._plotly = null;
        this._div = null;
        this._failed = false;
        this._gen = 0;
        this.reset();
    }

    reset() {
        this._gen += 1;
        this.kind = null;
        this.frames = 0;
        this.points = 0;
        this.first = null;
        this.last = null;
        this._queue = [];
        if (this._div && this._plotly) {
            this._plotly.purge(this._div);
        }
        this._div = null;
        this.el.classList.remove("plot-table");
        fill(this.el, h("div.plot-empty", "No frames yet: the plot fills in as the run sends them."));
        this._mark();
        this.caption.textContent = "";
    }

    add(frames) {
        if (!frames.length) {
            return;
        }
        this._queue.push(...frames);
        this._schedule();
    }

    _schedule() {
        if (this._drawing) {
            return;
        }
        this._drawing = true;
        // frames come in bursts: draw at most once per animation frame
        requestAnimationFrame(() => {
            this._draw().finally(() => {
                this._drawing = false;
                if (this._queue.length) {
                    this._schedule();
                }
            });
        });
    }

    async _draw() {
        const batch = this._queue.splice(0);
        const gen = this._gen;
        if (!batch.length) {
            return;
        }
        const kind = batch[batch.length - 1].plot || "replace";
        if (kind === "table") {
            this._table(batch[batch.length - 1]);
            this.frames += batch.length;
            this._mark();
            return;
        }
        let P;
        try {
            P = this._plotly || (this._plotly = await loadPlotly());
        } catch (e) {
            if (!this._failed) {
                this._failed = true;
                fill(this.el, h("p.error-text", e.message));
            }
            return;
        }
        if (gen !== this._gen) {
            // reset (a new run) while plotly loaded: these frames are stale
            return;
        }
        if (kind === "append") {
            await this._append(P, batch);
        } else {
            await this._replace(P, batch);
        }
        if (gen !== this._gen) {
            return;
        }
        this.frames += batch.length;
        this.last = batch[batch.length - 1];
        this._mark();
    }

    _ensureDiv(kind) {
        if (this._div && this.kind === kind) {
            return false;
        }
        this.kind = kind;
        this._div = h("div.plot-area", { role: "img", "aria-label": "live plot of the run's frames" });
        fill(this.el, this._div);
        return true;
    }

    async _replace(P, batch) {
        const f = batch[batch.length - 1];
        if (!this.first) {
            this.first = batch[0];
        }
        const ys = Object.keys(f).filter(
            (k) => Array.isArray(f[k]) && k !== "x" && f[k].length === (f.x || []).length,
        );
        const y = ys[0] || "u";
        const traces = [];
        if (this.first !== f && this.first.x && this.first[y]) {
            traces.push({
                x: this.first.x,
                y: this.first[y],
                name: `initial (t = ${fmtT(this.first.time)})`,
                mode: "lines",
                line: { color: FAINT, width: 1.5, dash: "dot" },
                hoverinfo: "skip",
            });
        }
        traces.push({
            x: f.x,
            y: f[y],
            name: `${y} at t = ${fmtT(f.time)}`,
            mode: "lines",
            line: { color: LINE, width: 2.25 },
        });
        this.points = (f.x || []).length;
        const l = layout({
            xaxis: { ...layout().xaxis, title: { text: "x" } },
            yaxis: { ...layout().yaxis, title: { text: y } },
        });
        this._ensureDiv("replace");
        await P.react(this._div, traces, l, CONFIG);
        this.caption.textContent = `step ${f.step ?? "?"} · t = ${fmtT(f.time)} · ${this.frames + batch.length} frames`;
    }

    async _append(P, batch) {
        const xs = [];
        const zs = [];
        const ys = [];
        for (const f of batch) {
            xs.push(...(f.x || []));
            ys.push(...(f.y || []));
            zs.push(...(f.z || []));
        }
        // the x–z projection: the butterfly, and no WebGL needed
        const vert = zs.length ? zs : ys;
        const vname = zs.length ? "z" : "y";
        if (this._ensureDiv("append")) {
            await P.react(
                this._div,
                [
                    {
                        x: xs,
                        y: vert,
                        mode: "lines",
                        name: `trajectory (x, ${vname})`,
                        line: { color: "rgba(37, 99, 235, 0.45)", width: 0.7 },
                    },
                    {
                        x: xs.slice(-1),
                        y: vert.slice(-1),
                        mode: "markers",
                        name: "latest",
                        marker: { color: "#dc2626", size: 8 },
                    },
                ],
                layout({
                    xaxis: { ...layout().xaxis, title: { text: "x" } },
                    yaxis: { ...layout().yaxis, title: { text: vname } },
                }),
                CONFIG,
            );
        } else if (xs.length) {
            await P.extendTraces(this._div, { x: [xs], y: [vert] }, [0]);
            await P.restyle(this._div, { x: [xs.slice(-1)], y: [vert.slice(-1)] }, [1]);
        }
        this.points += xs.length;
        const f = batch[batch.length - 1];
        this.caption.textContent = `step ${f.step ?? "?"} · t = ${fmtT(f.time)} · ${this.points.toLocaleString()} points`;
    }

    _table(f) {
        this.kind = "table";
        this.el.classList.add("plot-table");
        const fields = f.fields || {};
        const names = Object.keys(fields);
        const num = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(6)) : "—");
        fill(
            this.el,
            h(
                "div.table-wrap",
                h(
                    "table.table.stats-table",
                    h("caption.visually-hidden", "Statistics per field"),
                    h(
                        "thead",
                        h(
                            "tr",
                            ["field", "count", "min", "max", "mean", "std"].map((c) =>
                                h("th", { scope: "col", class: c === "field" ? "" : "num" }, c),
                            ),
                        ),
                    ),
                    h(
                        "tbody",
                        names.map((n) =>
                            h(
                                "tr",
                                h("th", { scope: "row" }, h("code", n)),
                                ["count", "min", "max", "mean", "std"].map((k) => h("td.num", num(fields[n][k]))),
                            ),
                        ),
                    ),
                ),
            ),
        );
        this.points = names.length;
        this.caption.textContent = `${names.length} fields`;
    }

    _mark() {
        this.el.dataset.frames = String(this.frames);
        this.el.dataset.points = String(this.points);
    }

    destroy() {
        if (this._div && this._plotly) {
            this._plotly.purge(this._div);
        }
    }
}

function fmtT(t) {
    if (typeof t !== "number") {
        return "?";
    }
    if (t === 0) {
        return "0";
    }
    return Math.abs(t) < 0.01 || Math.abs(t) >= 1e5 ? t.toExponential(3) : String(Number(t.toPrecision(4)));
}


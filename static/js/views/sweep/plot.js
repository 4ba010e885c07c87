// The results plot of a sweep's page: a result against the swept
// parameter(s), drawn again (Plotly.react) as members finish.
//
// One axis (or zipped axes): a line of the result against the first axis's
// value, one point per member that has reported it. Two axes of a grid: a
// heat map, one cell per member (first axis across, second up). A grid of
// more axes: the result against the member's number. The container carries
// data-kind and data-points (members drawn) for people and tests.

import { fill, h } from "../../dom.js";
import { fmtNum } from "../../liveplot.js";
import { CONFIG, layout, loadPlotly } from "../../plot.js";

/** "final maximum of u (s)" */
export function fieldText(f) {
    const l = f.label || f.name;
    return f.unit ? `${l} (${f.unit})` : l;
}

/** Which plot a sweep gets: "line", "heatmap" or "index". */
export function plotKind(sweep) {
    if (sweep.axes.length === 1 || sweep.combine === "zip") {
        return "line";
    }
    return sweep.axes.length === 2 ? "heatmap" : "index";
}

/** An axis's values as plot categories: as they are, or numbered if repeated. */
function categories(values) {
    const s = values.map((v) => (typeof v === "number" ? fmtNum(v) : String(v)));
    return new Set(s).size === s.length ? s : s.map((v, i) => `${v} (#${i})`);
}

export class ResultsPlot {
    /** @param sweep the sweep's summary (axes, combine, result_fields) */
    constructor(sweep) {
        this.sweep = sweep;
        this.fields = sweep.result_fields || [];
        this.kind = plotKind(sweep);
        this.members = [];
        this.field = this.fields[0]?.name || null;
        this.div = null;
        this._plotly = null;
        this._pending = false;
        this._again = false;
        this._closed = false;
        this.area = h("div.plot.sweep-plot", { id: "sweep-plot", dataset: { kind: this.kind, points: "0" } });
        this.caption = h("p.plot-caption.muted", { id: "sweep-plot-caption" });
        this.select =
            this.fields.length > 1
                ? h(
                      "select.input.input-sm",
                      { id: "sweep-plot-field", "aria-label": "Result to plot" },
                      this.fields.map((f) => h("option", { value: f.name }, fieldText(f))),
                  )
                : null;
        this.select?.addEventListener("change", () => {
            this.field = this.select.value;
            this.update(this.members);
        });
        this.el = h(
            "section.card.plot-card",
            { "aria-labelledby": "sweep-plot-heading" },
            h("div.card-head", h("h2", { id: "sweep-plot-heading" }, "Results"), this.select),
            this.area,
            this.caption,
        );
        if (!this.field) {
            fill(this.area, h("div.plot-empty", `${sweep.code} reports no result: the members' statuses are in the table below.`));
        } else {
            fill(this.area, h("div.plot-empty", "No results yet: the plot fills in as members finish."));
        }
    }

    /** Draw `members` (the page's, in order) soon: at most once a frame. */
    update(members) {
        this.members = members;
        if (!this.field || this._closed) {
            return;
        }
        if (this._pending) {
            this._again = true;
            return;
        }
        this._pending = true;
        requestAnimationFrame(() => this._draw());
    }

    async _draw() {
        try {
            const P = this._plotly || (this._plotly = await loadPlotly());
            if (this._closed) {
                return;
            }
            const { traces, extra, points } = this._data();
            if (!points && !this.div) {
                // nothing to draw yet: the placeholder stays
                return;
            }
            if (!this.div) {
                this.div = h("div.plot-area", { role: "img", "aria-label": `Results of the sweep ${this.sweep.name}` });
                fill(this.area, this.div);
            }
            await P.react(this.div, traces, layout({ showlegend: false, hovermode: "closest", ...extra }), CONFIG);
            this.area.dataset.points = String(points);
            const f = this.fields.find((x) => x.name === this.field);
            this.caption.textContent = `${fieldText(f)} · ${points} of ${this.members.length} ${this.members.length === 1 ? "member" : "members"}`;
        } catch (e) {
            this.caption.textContent = `Could not draw the results: ${e.message}`;
        } finally {
            this._pending = false;
            if (this._again && !this._closed) {
                this._again = false;
                this.update(this.members);
            }
        }
    }

    _value(m) {
        // only a completed member's result is final
        const v = m.status === "completed" ? m.result?.[this.field] : undefined;
        return typeof v === "number" && Number.isFinite(v) ? v : null;
    }

    _hover(m) {
        const ps = this.sweep.axes.map((a) => `${a.name} = ${fmtValue(m.params?.[a.name])}`).join("<br>");
        return `member #${m.index}<br>${ps}`;
    }

    _data() {
        const f = this.fields.find((x) => x.name === this.field);
        const ytitle = { title: { text: fieldText(f) } };
        const axes = this.sweep.axes;
        if (this.kind === "heatmap") {
            const [a, b] = axes;
            const n1 = b.values.length;
            const z = b.values.map(() => a.values.map(() => null));
            const text = b.values.map(() => a.values.map(() => ""));
            let points = 0;
            for (const m of this.members) {
                const i = Math.floor(m.index / n1);
                const j = m.index % n1;
                const v = this._value(m);
                if (i < a.values.length && v !== null) {
                    z[j][i] = v;
                    points += 1;
                }
                text[j][i] = this._hover(m);
            }
            return {
                points,
                traces: [
                    {
                        type: "heatmap",
                        x: categories(a.values),
                        y: categories(b.values),
                        z,
                        text,
                        hovertemplate: `%{text}<br>${f.label || f.name} %{z}<extra></extra>`,
                        colorscale: "Viridis",
                        colorbar: { title: { text: fieldText(f), side: "right" }, thickness: 14 },
                        hoverongaps: false,
                    },
                ],
                extra: {
                    xaxis: { ...layout().xaxis, type: "category", title: { text: a.name } },
                    yaxis: { ...layout().yaxis, type: "category", title: { text: b.name } },
                    plot_bgcolor: "#f1f5f9",
                },
            };
        }
        const byIndex = this.kind === "index";
        const a = axes[0];
        const numeric = !byIndex && a.values.every((v) => typeof v === "number");
        const xs = [];
        const ys = [];
        const text = [];
        for (const m of this.members) {
            const v = this._value(m);
            if (v === null) {
                continue;
            }
            xs.push(byIndex ? m.index : numeric ? m.params?.[a.name] : fmtValue(m.params?.[a.name]));
            ys.push(v);
            text.push(this._hover(m));
        }
        // a line through the members in the order of their value
        const order = xs.map((_, i) => i);
        if (numeric) {
            order.sort((i, j) => xs[i] - xs[j]);
        }
        const xaxis = { ...layout().xaxis, title: { text: byIndex ? "member" : a.name } };
        if (!numeric && !byIndex) {
            xaxis.type = "category";
            xaxis.categoryarray = [...new Set(a.values.map(fmtValue))];
            xaxis.categoryorder = "array";
        }
        return {
            points: xs.length,
            traces: [
                {
                    type: "scatter",
                    mode: "lines+markers",
                    x: order.map((i) => xs[i]),
                    y: order.map((i) => ys[i]),
                    text: order.map((i) => text[i]),
                    hovertemplate: `%{text}<br>${f.label || f.name} %{y}<extra></extra>`,
                    line: { color: "#2563eb", width: 2 },
                    marker: { color: "#2563eb", size: 7 },
                },
            ],
            extra: { xaxis, yaxis: { ...layout().yaxis, ...ytitle } },
        };
    }

    destroy() {
        this._closed = true;
        if (this.div && this._plotly) {
            this._plotly.purge(this.div);
        }
    }
}

/** A swept value as people read it. */
export function fmtValue(v) {
    if (v === null || v === undefined) {
        return "—";
    }
    return typeof v === "number" ? fmtNum(v) : String(v);
}

// The members of a sweep's page: a grid of cells (one per member, coloured
// by its status, each a link to its simulation) and the results table (the
// swept values, status and results of each member).

import { fill, h, statusBadge } from "../../dom.js";
import { fmtNum } from "../../liveplot.js";
import { fieldText, fmtValue } from "./plot.js";

/** Statuses as the grid's legend names them, in the order of a run. */
export const MEMBER_STATUSES = ["pending", "queued", "starting", "running", "lost", "completed", "error", "timed_out", "canceled", "deleted"];

const LABEL = { timed_out: "timed out" };

export const statusText = (s) => LABEL[s] || s;

/** The most cells a grid lays out as rows of the second axis. */
const MAX_GRID_COLUMNS = 60;

function describe(sweep, m) {
    const ps = sweep.axes.map((a) => `${a.name}=${fmtValue(m.params?.[a.name])}`).join(", ");
    return `#${m.index} (${ps}): ${statusText(m.status)}`;
}

export class MemberGrid {
    /** @param sweep the sweep's summary (axes, combine) */
    constructor(sweep) {
        this.sweep = sweep;
        this.cells = [];
        this.grid = h("div.member-grid", { id: "sweep-members", role: "group", "aria-label": "Members, coloured by status" });
        const [a, b] = sweep.axes;
        /** laid out as the heat map: a column per value of the first axis, a
         * row per value of the second (its first value at the bottom) */
        this.rows = sweep.combine === "grid" && sweep.axes.length === 2 && a.values.length <= MAX_GRID_COLUMNS ? b.values.length : 0;
        if (this.rows) {
            this.grid.classList.add("member-matrix");
            this.grid.style.setProperty("--columns", String(a.values.length));
        }
        this.legend = h("p.member-legend", { id: "sweep-counts", "aria-live": "polite" });
        this.el = h(
            "section.card.members-card",
            { "aria-labelledby": "members-heading" },
            h("div.card-head", h("h2", { id: "members-heading" }, "Members")),
            this.grid,
            this.legend,
        );
    }

    /** Show `members` (all, in order); cells that did not change stay. */
    show(members, counts) {
        if (this.cells.length !== members.length) {
            this.cells = members.map((m) => {
                const c = h("a.member-cell", { href: `#/sim/${m.simulation}`, tabindex: "-1" });
                if (this.rows) {
                    c.style.gridColumn = String(Math.floor(m.index / this.rows) + 1);
                    c.style.gridRow = String(this.rows - (m.index % this.rows));
                }
                return c;
            });
            fill(this.grid, this.cells);
        }
        members.forEach((m, i) => {
            const c = this.cells[i];
            if (c.dataset.status !== m.status) {
                c.dataset.status = m.status;
                c.className = `member-cell member-${m.status}`;
            }
            const t = describe(this.sweep, m);
            if (c.title !== t) {
                c.title = t;
                c.setAttribute("aria-label", t);
            }
        });
        fill(
            this.legend,
            MEMBER_STATUSES.filter((s) => counts[s]).map((s) =>
                h("span.legend-item", { dataset: { status: s } }, h("span.member-cell.legend-swatch", { class: `member-${s}`, "aria-hidden": "true" }), `${counts[s]} ${statusText(s)}`),
            ),
        );
    }
}

/** The first rows shown; the rest on request (the CSV has them all). */
const SHOWN_ROWS = 200;

export class ResultsTable {
    constructor(sweep, csvHref) {
        this.sweep = sweep;
        this.fields = sweep.result_fields || [];
        this.all = false;
        this.members = [];
        this.body = h("tbody");
        this.more = h("button.btn.btn-sm", { type: "button", hidden: true, id: "sweep-table-all" });
        this.more.addEventListener("click", () => {
            this.all = true;
            this.show(this.members);
        });
        const heads = ["#", ...sweep.axes.map((a) => a.name), "Status", ...this.fields.map(fieldText), "Error"];
        this.el = h(
            "section.card.card-flush.results-card",
            { "aria-labelledby": "results-heading" },
            h("div.card-head.card-pad", h("h2", { id: "results-heading" }, "Results table"), h("a.btn.btn-sm", { href: csvHref, download: "", id: "sweep-csv" }, "Download CSV")),
            h(
                "div.table-wrap",
                h(
                    "table.table.results-table",
                    { id: "sweep-table" },
                    h("caption.visually-hidden", "Members with their swept values, status and results"),
                    h(
                        "thead",
                        h(
                            "tr",
                            heads.map((t, i) => h("th", { scope: "col", class: i === 0 || i > sweep.axes.length + 1 ? "num" : "" }, t)),
                        ),
                    ),
                    this.body,
                ),
            ),
            h("div.card-pad.more-row", this.more),
        );
        this.el.querySelector("th:last-child").classList.remove("num");
    }

    show(members) {
        this.members = members;
        const shown = this.all ? members : members.slice(0, SHOWN_ROWS);
        fill(
            this.body,
            shown.map((m) =>
                h(
                    "tr",
                    { dataset: { member: String(m.index), status: m.status } },
                    h("td.num", h("a", { href: `#/sim/${m.simulation}` }, `#${m.index}`)),
                    this.sweep.axes.map((a) => h("td", fmtValue(m.params?.[a.name]))),
                    h("td", statusBadge(m.status)),
                    this.fields.map((f) => {
                        const v = m.result?.[f.name];
                        return h("td.num", { dataset: { result: f.name } }, typeof v === "number" ? fmtNum(v) : h("span.muted", "—"));
                    }),
                    h("td.error-cell", m.error ? h("span", { title: m.error }, m.error) : h("span.muted", "—")),
                ),
            ),
        );
        this.more.hidden = shown.length === members.length;
        this.more.textContent = `Show all ${members.length.toLocaleString()} members`;
    }
}

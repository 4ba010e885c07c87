// A sweep's page: its name and set-up, aggregate progress, the grid of its
// members, the results plot and table; cancel, retry, delete, CSV.
//
// The members come from GET /api/sweeps/{id}, then from pushes: a member's
// `job` push changes its cell, row and point at once; the sweep's summary
// push (at most 4 a second) carries the counts. Where the counts of the
// members we hold differ from the summary's (a push overtaken by a fetch, a
// retry's members waiting for their turn), the members are fetched again, at
// most once per SUMMARY_MS. Nothing polls.

import { del, get, post } from "../../api.js";
import { busy, confirmDialog, fill, h, setStatusBadge, statusBadge, timeEl } from "../../dom.js";
import { fmtParam } from "../../params.js";
import { MemberGrid, ResultsTable } from "./members.js";
import { ResultsPlot, fmtValue } from "./plot.js";

/** The server pushes a sweep's summary at most this often (sweeps.PUSH_SECS). */
const SUMMARY_MS = 250;

/** Members in these states a retry runs again (sweeps.RETRIED). */
const RETRIED = ["error", "timed_out", "canceled"];

export function sweepView(root, [id], ctx) {
    let page = null;
    let mounted = true;
    // member jobs pushed while the sweep is fetched: laid over what it says
    const early = new Map();
    const offs = [
        ctx.live.on("job", (m) => (page ? page.onJob(m.id, m.job) : early.set(m.id, m.job))),
        ctx.live.on("sweep", (m) => m.id === id && page?.onSweep(m)),
        ctx.live.on("sim", (m) => m.deleted && page?.onSimDeleted(m.id)),
        ctx.live.on("synced", () => page?.refetch()),
    ];
    root.append(h("p.muted.loading", "Loading…"));
    get(`/sweeps/${encodeURIComponent(id)}`).then(
        (d) => {
            if (!mounted) {
                return;
            }
            root.replaceChildren();
            page = new SweepPage(root, d, ctx, early);
            // what was pushed while the page was fetching
            const w = ctx.live.sweeps.get(id);
            if (w) {
                page.onSweep({ id, deleted: false, sweep: w });
            }
        },
        (e) => {
            if (!mounted) {
                return;
            }
            fill(
                root,
                h("div.page-head", h("div", crumbs(), h("h1", e.status === 404 ? "Sweep not found" : "Could not load the sweep"))),
                h(
                    "section.card",
                    { role: e.status === 404 ? null : "alert" },
                    h("p", e.status === 404 ? `There is no sweep ${id} that you can see. It may have been deleted.` : e.message),
                    h("a.btn", { href: "#/" }, "Back to the list"),
                ),
            );
        },
    );
    return () => {
        mounted = false;
        offs.forEach((off) => off());
        page?.destroy();
    };
}

function crumbs() {
    return h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Simulations"), " / ");
}

class SweepPage {
    constructor(root, detail, ctx, early) {
        this.ctx = ctx;
        this.id = detail.id;
        this.code = ctx.codes.get(detail.code) || { name: detail.code, title: detail.code, params: [] };
        this.summary = { ...detail, members: detail.members.length };
        this.members = detail.members;
        this.bySim = new Map(this.members.map((m) => [m.simulation, m]));
        this.deleted = false;
        this._drawPending = false;
        this._fetching = false;
        this._fetchAgain = false;
        this._fetchTimer = null;
        this._lastFetch = performance.now();
        /** member jobs pushed while a fetch is on its way (sim id -> job) */
        this._during = new Map();
        this._closed = false;
        const csv = `/api/sweeps/${encodeURIComponent(this.id)}/results.csv`;
        this.grid = new MemberGrid(this.summary);
        this.plot = new ResultsPlot(this.summary);
        this.table = new ResultsTable(this.summary, csv);
        this.build(root);
        this._overlay(early);
        this.render();
    }

    /**
     * Lay the jobs pushed while the members were fetched over what the
     * fetch says: the reply may have been made before them, and a job's
     * pushes come in order, so the last one pushed is the newest.
     */
    _overlay(jobs) {
        for (const [sid, job] of jobs) {
            this.onJob(sid, job);
        }
        jobs.clear();
    }

    build(root) {
        const s = this.summary;
        this.title = h("h1.sim-title", { id: "sweep-title" }, s.name);
        this.badge = statusBadge(s.status);
        this.badge.id = "sweep-status";
        this.progressFill = h("div.progress-fill");
        this.progress = h(
            "div.progress",
            { id: "sweep-progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-labelledby": "sweep-progress-label" },
            this.progressFill,
        );
        this.progressText = h("span.progress-pct", { id: "sweep-done" });
        this.cancelBtn = h("button.btn.btn-danger-outline", { type: "button", id: "sweep-cancel" }, "Cancel");
        this.retryBtn = h("button.btn", { type: "button", id: "sweep-retry" }, "Retry failed");
        this.deleteBtn = h("button.btn.btn-danger-outline", { type: "button", id: "sweep-delete" }, "Delete sweep…");
        this.cancelBtn.addEventListener("click", () => this.cancel());
        this.retryBtn.addEventListener("click", () => this.retry());
        this.deleteBtn.addEventListener("click", () => this.delete());
        this.actionError = h("p.form-error", { id: "sweep-error", role: "alert" });
        this.deletedNote = h("div.notice.notice-warn", { hidden: true, role: "status" });
        const sub = [h("span", this.code.title), " · sweep ", h("code", s.id), " · created ", timeEl(s.created)];
        if (s.user !== this.ctx.user.name) {
            sub.push(" · owner ", h("strong", s.user));
        }
        root.append(
            h("div.page-head", h("div.page-title", crumbs(), this.title, h("p.subtitle.muted", sub))),
            this.deletedNote,
            h(
                "div.sim-grid",
                h("div.sim-main", this.plot.el, this.table.el),
                h(
                    "div.sim-side",
                    h(
                        "section.card.run-card",
                        { "aria-labelledby": "sweep-run-heading" },
                        h("div.card-head", h("h2", { id: "sweep-run-heading" }, "Progress"), this.badge),
                        h("div.progress-row", h("span.progress-text", { id: "sweep-progress-label" }, "Members done"), this.progressText),
                        this.progress,
                        h("div.run-buttons.sweep-buttons", this.retryBtn, this.cancelBtn),
                        this.actionError,
                    ),
                    this.grid.el,
                    this.setupCard(),
                    h(
                        "section.card.danger-card",
                        { "aria-labelledby": "sweep-danger-heading" },
                        h("h2", { id: "sweep-danger-heading" }, "Delete"),
                        h("p.muted", "Deleting cancels the members still running and removes every member's simulation and files."),
                        this.deleteBtn,
                    ),
                ),
            ),
        );
        document.title = `${s.name} · simvisor`;
    }

    /** What the sweep runs: its axes, the other parameters, how it runs. */
    setupCard() {
        const s = this.summary;
        const known = new Map(this.code.params.map((p) => [p.name, p]));
        const swept = new Set(s.axes.map((a) => a.name));
        const shown = (vs) => (vs.length > 12 ? [...vs.slice(0, 10).map(fmtValue), "…", fmtValue(vs[vs.length - 1])] : vs.map(fmtValue)).join(", ");
        const row = (k, v, attrs) => h("div.param", attrs, h("dt", k), h("dd", v));
        return h(
            "section.card.params-card",
            { "aria-labelledby": "sweep-setup-heading" },
            h("div.card-head", h("h2", { id: "sweep-setup-heading" }, "Set-up")),
            h(
                "dl.param-list",
                { id: "sweep-axes" },
                s.axes.map((a) => row(h("span", h("code", a.name), " (swept)"), `${a.values.length} ${a.values.length === 1 ? "value" : "values"}: ${shown(a.values)}`, { dataset: { axis: a.name } })),
                s.axes.length > 1 ? row("Combined", s.combine === "zip" ? "zip: the i-th values together" : "grid: every combination") : null,
                Object.entries(s.params || {})
                    .filter(([k]) => !swept.has(k))
                    .map(([k, v]) => row(h("code", k), fmtParam(known.get(k), v))),
                row("Runs", `${s.size.toLocaleString()} of ${s.code} on ${s.cores} ${s.cores === 1 ? "core" : "cores"} each, ${s.driver}`),
                row("At most at once", s.max_parallel ? String(s.max_parallel) : "as your plan allows"),
            ),
        );
    }

    destroy() {
        this._closed = true;
        clearTimeout(this._fetchTimer);
        this.plot.destroy();
    }

    // --- what the page shows -----------------------------------------------

    /** The counts of the members as this page holds them. */
    localCounts() {
        const c = {};
        for (const m of this.members) {
            c[m.status] = (c[m.status] || 0) + 1;
        }
        return c;
    }

    render() {
        const s = this.summary;
        const counts = s.counts || this.localCounts();
        setStatusBadge(this.badge, this.deleted ? "deleted" : s.status);
        const pct = s.size ? (100 * s.done) / s.size : 100;
        this.progress.setAttribute("aria-valuenow", String(Math.round(pct)));
        this.progress.setAttribute("aria-valuetext", `${s.done} of ${s.size} members done`);
        this.progress.dataset.status = s.status === "done" ? (RETRIED.some((k) => counts[k]) ? "error" : "completed") : s.status === "canceled" ? "canceled" : "running";
        this.progressFill.style.width = `${pct}%`;
        this.progressText.textContent = `${s.done.toLocaleString()} of ${s.size.toLocaleString()}`;
        const failed = RETRIED.reduce((n, k) => n + (counts[k] || 0), 0);
        this.cancelBtn.disabled = this.deleted || s.status !== "running";
        this.retryBtn.disabled = this.deleted || !failed;
        this.retryBtn.textContent = failed ? `Retry ${failed} failed` : "Retry failed";
        this.deleteBtn.disabled = this.deleted;
        this.drawMembers();
    }

    /** Redraw the grid, table and plot from `this.members`, once a frame. */
    drawMembers() {
        if (this._drawPending) {
            return;
        }
        this._drawPending = true;
        requestAnimationFrame(() => {
            this._drawPending = false;
            if (this._closed) {
                return;
            }
            this.grid.show(this.members, this.localCounts());
            this.table.show(this.members);
            this.plot.update(this.members);
        });
    }

    // --- pushes and fetches ----------------------------------------------------

    onSweep(m) {
        if (m.deleted) {
            this.deleted = true;
            this.deletedNote.hidden = false;
            fill(this.deletedNote, "This sweep was deleted. ", h("a", { href: "#/" }, "Back to the list"));
            this.render();
            return;
        }
        if (this.summary && m.sweep.updated < this.summary.updated) {
            // older than the one shown (a fetch's reply came in between)
            return;
        }
        this.summary = m.sweep;
        this.render();
        if (!sameCounts(this.summary.counts, this.localCounts())) {
            this.refetch();
        }
    }

    onJob(simId, job) {
        const m = this.bySim.get(simId);
        if (!m || m.status === "deleted") {
            return;
        }
        if (this._fetching) {
            this._during.set(simId, job);
        }
        const status = job.status === "missing" ? "pending" : job.status;
        if (m.status === status && m.result === (job.result ?? null) && m.error === (job.error ?? null)) {
            return;
        }
        m.status = status;
        m.result = job.result ?? null;
        m.error = job.error ?? null;
        this.drawMembers();
    }

    onSimDeleted(simId) {
        const m = this.bySim.get(simId);
        if (m) {
            m.status = "deleted";
            this.drawMembers();
        }
    }

    /** Fetch the members again: at most one fetch at a time, once per SUMMARY_MS. */
    refetch() {
        if (this._closed || this.deleted) {
            return;
        }
        if (this._fetching || this._fetchTimer) {
            this._fetchAgain = true;
            return;
        }
        const wait = this._lastFetch + SUMMARY_MS - performance.now();
        if (wait > 0) {
            this._fetchTimer = setTimeout(() => {
                this._fetchTimer = null;
                this.refetch();
            }, wait);
            return;
        }
        this._fetch();
    }

    async _fetch() {
        this._fetching = true;
        this._fetchAgain = false;
        this._during.clear();
        this._lastFetch = performance.now();
        try {
            const d = await get(`/sweeps/${encodeURIComponent(this.id)}`);
            if (this._closed) {
                return;
            }
            this.members = d.members;
            this.bySim = new Map(this.members.map((m) => [m.simulation, m]));
            if (!this.summary || d.updated >= this.summary.updated) {
                // (a summary pushed while it was on its way may be newer)
                this.summary = { ...d, members: d.members.length };
            }
            this._fetching = false;
            this._overlay(this._during);
            this.render();
        } catch (e) {
            if (e.status === 404) {
                this.onSweep({ id: this.id, deleted: true });
            } else {
                this.actionError.textContent = `Could not load the members: ${e.message}`;
            }
        } finally {
            this._fetching = false;
            if (this._fetchAgain) {
                this.refetch();
            }
        }
    }

    // --- actions ---------------------------------------------------------------

    async cancel() {
        this.actionError.textContent = "";
        this.cancelBtn.textContent = "Canceling…";
        await busy(
            [this.cancelBtn, this.retryBtn],
            async () => this.onSweep({ id: this.id, deleted: false, sweep: await post(`/sweeps/${encodeURIComponent(this.id)}/cancel`) }),
            (e) => {
                this.actionError.textContent = e.message;
            },
        );
        this.cancelBtn.textContent = "Cancel";
        this.render();
    }

    async retry() {
        this.actionError.textContent = "";
        await busy(
            [this.retryBtn],
            async () => {
                const r = await post(`/sweeps/${encodeURIComponent(this.id)}/retry`);
                this.ctx.notify(`Running ${r.retried} ${r.retried === 1 ? "member" : "members"} again.`, "ok");
                this.onSweep({ id: this.id, deleted: false, sweep: r });
            },
            (e) => {
                this.actionError.textContent = e.message;
            },
        );
        this.render();
    }

    async delete() {
        const s = this.summary;
        const ok = await confirmDialog({
            title: `Delete “${s.name}”?`,
            body: `Its ${s.size} ${s.size === 1 ? "member is" : "members are"} removed with their files${s.status === "running" ? "; those still running are canceled" : ""}. This cannot be undone.`,
            confirm: "Delete",
            danger: true,
        });
        if (!ok) {
            this.deleteBtn.focus();
            return;
        }
        await busy(
            this.deleteBtn,
            async () => {
                const r = await del(`/sweeps/${encodeURIComponent(this.id)}`);
                this.ctx.notify(`Deleted “${s.name}” and its ${r.simulations} ${r.simulations === 1 ? "simulation" : "simulations"}.`, "ok");
                this.ctx.router.go("/");
            },
            (e) => {
                this.actionError.textContent = e.message;
            },
        );
    }
}

function sameCounts(a = {}, b = {}) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].every((k) => (a[k] || 0) === (b[k] || 0));
}

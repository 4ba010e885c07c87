// The simulation list: name, code, status and last run, live from pushes.
// A sweep is one row (its progress and status; a link to its page); its
// members, simulations of their own, are not listed.

import { ACTIVE, fill, fmtAgo, h, keepFocus, statusBadge, timeEl } from "../dom.js";

export function listView(root, _params, ctx) {
    const { live, user } = ctx;
    const showAll = h("input", { type: "checkbox", id: "show-all" });
    const body = h("tbody");
    const empty = h("div.empty", { hidden: true });
    const count = h("span.muted.count");
    const table = h(
        "div.table-wrap",
        h(
            "table.table.sim-table",
            h("caption.visually-hidden", "Your simulations"),
            h(
                "thead",
                h(
                    "tr",
                    h("th", { scope: "col" }, "Name"),
                    h("th.col-user", { scope: "col", hidden: true }, "User"),
                    h("th", { scope: "col" }, "Code"),
                    h("th", { scope: "col" }, "Status"),
                    h("th.col-last", { scope: "col" }, "Last run"),
                ),
            ),
            body,
        ),
    );
    root.append(
        h(
            "div.page-head",
            h("div", h("h1", "Simulations"), count),
            h(
                "div.page-actions",
                user.role === "admin"
                    ? h("label.check", showAll, " Everyone's")
                    : null,
                h("a.btn.btn-primary", { href: "#/new" }, "New simulation"),
            ),
        ),
        h("section.card.card-flush", { "aria-label": "Simulations" }, table, empty),
    );

    let pending = false;
    function schedule() {
        if (!pending) {
            pending = true;
            requestAnimationFrame(() => {
                pending = false;
                keepFocus(root, render);
            });
        }
    }

    function render() {
        const all = showAll.checked;
        const mine = (x) => all || x.user === user.name;
        // a sweep is as recent as its latest member
        const sweepActivity = new Map();
        const sims = [];
        for (const s of live.sims.values()) {
            if (!s.sweep) {
                sims.push(s);
            } else {
                sweepActivity.set(s.sweep.id, Math.max(sweepActivity.get(s.sweep.id) || 0, lastActivity(s)));
            }
        }
        const shownSims = sims.filter(mine);
        const shownSweeps = [...live.sweeps.values()].filter(mine);
        const rows = [
            ...shownSims.map((s) => ({ t: lastActivity(s), el: () => row(s, all, ctx) })),
            ...shownSweeps.map((w) => ({ t: Math.max(w.created, sweepActivity.get(w.id) || 0), el: () => sweepRow(w, all, ctx) })),
        ].sort((a, b) => b.t - a.t);
        for (const c of root.querySelectorAll(".col-user")) {
            c.hidden = !all;
        }
        const n = shownSims.length;
        const nw = shownSweeps.length;
        count.textContent = live.everSynced
            ? `${n} ${n === 1 ? "simulation" : "simulations"}${nw ? ` · ${nw} ${nw === 1 ? "sweep" : "sweeps"}` : ""}`
            : "";
        fill(body, rows.map((r) => r.el()));
        table.hidden = !rows.length;
        empty.hidden = Boolean(rows.length);
        if (!rows.length) {
            fill(
                empty,
                live.everSynced
                    ? [
                          h("p.empty-title", "No simulations yet"),
                          h("p.muted", "Create one from the catalog: a heat equation or a Lorenz attractor runs in seconds."),
                          h("a.btn.btn-primary", { href: "#/new" }, "Create your first simulation"),
                      ]
                    : h("p.muted", "Loading…"),
            );
        }
    }

    showAll.addEventListener("change", render);
    const offs = [live.on("sim", schedule), live.on("job", schedule), live.on("sweep", schedule), live.on("synced", schedule)];
    // relative times ("2 min ago") age; redraw them now and then
    const tick = setInterval(schedule, 30000);
    render();
    return () => {
        offs.forEach((off) => off());
        clearInterval(tick);
    };
}

function lastActivity(s) {
    const j = s.job || {};
    return j.ended_at || j.started_at || j.queued_at || s.updated || s.created || 0;
}

function row(s, all, ctx) {
    const j = s.job || { status: "missing" };
    const code = ctx.codes.get(s.code);
    let last;
    if (j.status === "missing") {
        last = h("span.muted", "never run");
    } else if (ACTIVE.has(j.status)) {
        const pct = Math.round((j.progress || 0) * 100);
        last = h(
            "span.inline-progress",
            h(
                "span.mini-bar",
                { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(pct), "aria-label": `${s.name} progress` },
                h("span.mini-fill", { style: { width: `${pct}%` } }),
            ),
            // a batch job Slurm has not started says what Slurm says
            j.status === "running" && !(j.batch && j.batch.state !== "RUNNING") ? `${pct}%` : j.situation || j.status,
        );
    } else {
        last = h("span", { title: "" }, timeEl(j.ended_at), h("span.muted", ` · ${fmtAgo(j.ended_at)}`));
    }
    return h(
        "tr",
        { dataset: { sim: s.id } },
        h(
            "td",
            h("a.sim-link", { href: `#/sim/${s.id}`, dataset: { key: `sim-${s.id}` } }, s.name),
            h("div.sub.muted", h("code", s.id)),
        ),
        all ? h("td.col-user", s.user) : null,
        h("td", h("span", { title: code?.title || s.code }, s.code)),
        h("td", statusBadge(j.status)),
        h("td.col-last", last),
    );
}

/** A sweep's row: its name (to its page), code, status and progress. */
function sweepRow(w, all, ctx) {
    const code = ctx.codes.get(w.code);
    const pct = Math.round((w.progress || 0) * 100);
    const c = w.counts || {};
    const failed = (c.error || 0) + (c.timed_out || 0) + (c.canceled || 0);
    const running = (c.queued || 0) + (c.starting || 0) + (c.running || 0) + (c.lost || 0);
    const parts = [`${w.done.toLocaleString()} of ${w.size.toLocaleString()} done`];
    if (running) {
        parts.push(`${running} running`);
    }
    if (failed) {
        parts.push(`${failed} failed`);
    }
    return h(
        "tr.sweep-row",
        { dataset: { sweep: w.id } },
        h(
            "td",
            h("a.sim-link", { href: `#/sweeps/${w.id}`, dataset: { key: `sweep-${w.id}` } }, w.name),
            h("div.sub.muted", h("span.tag.tag-sweep", "sweep"), ` ${w.size.toLocaleString()} ${w.size === 1 ? "run" : "runs"} · `, h("code", w.id)),
        ),
        all ? h("td.col-user", w.user) : null,
        h("td", h("span", { title: code?.title || w.code }, w.code)),
        h("td", statusBadge(w.status)),
        h(
            "td.col-last",
            h(
                "span.inline-progress",
                h(
                    "span.mini-bar",
                    { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(pct), "aria-label": `${w.name} progress` },
                    h("span.mini-fill", { style: { width: `${pct}%` } }),
                ),
                h("span.sweep-progress-text", parts.join(" · ")),
            ),
        ),
    );
}

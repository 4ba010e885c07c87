// The admin console's jobs section: every queued, starting, running or lost
// job of every user, live from the pushes, with a cancel button each.

import { post } from "../../api.js";
import { ACTIVE, busy, fill, fmtDuration, h, keepFocus, stackTable, statusBadge, timeEl } from "../../dom.js";
import { adminSection } from "./section.js";

export class JobsSection {
    /**
     * @param live the live simulations (events.js)
     * @param problem fn(error) to show an action's failure
     */
    constructor(live, { problem }) {
        this.live = live;
        this.problem = problem;
        this.pending = false;
        this.body = h("div", { id: "admin-jobs" });
        this.count = h("span.count-pill");
        this.el = adminSection("jobs", "Active jobs", this.count, this.body);
    }

    /** Render at the next frame: a burst of pushes renders once. */
    schedule() {
        if (!this.pending) {
            this.pending = true;
            requestAnimationFrame(() => {
                this.pending = false;
                keepFocus(this.body, () => this.render());
            });
        }
    }

    render() {
        const sims = [...this.live.sims.values()]
            .filter((s) => s.job && ACTIVE.has(s.job.status))
            .sort((a, b) => (a.job.queued_at || 0) - (b.job.queued_at || 0));
        this.count.textContent = String(sims.length);
        if (!sims.length) {
            fill(this.body, h("p.muted.card-pad", "No job is queued, running or lost."));
            return;
        }
        fill(
            this.body,
            stackTable(
                "Every queued, starting, running or lost job",
                ["User", "Simulation", "Status", "Where", "Cores", "Queued", "Running for", ""],
                sims.map((s) => this.row(s)),
            ),
        );
    }

    row(s) {
        const j = s.job;
        const cancel = h(
            "button.btn.btn-sm.btn-danger-outline",
            { type: "button", "aria-label": `Cancel ${s.user}'s ${s.name}`, dataset: { key: `cancel-${s.id}` } },
            j.canceling ? "Canceling…" : "Cancel",
        );
        // a cancel in flight waits for the agent's confirmation
        cancel.disabled = Boolean(j.canceling);
        cancel.addEventListener("click", () => busy(cancel, () => post(`/admin/jobs/${s.id}/cancel`), this.problem));
        return h(
            "tr",
            { dataset: { sim: s.id } },
            h("td", s.user),
            h("td", h("a", { href: `#/sim/${s.id}` }, s.name), h("div.sub.muted", s.code)),
            h("td", statusBadge(j.status), j.situation ? h("div.sub.muted", j.situation) : null),
            h("td", [j.driver, j.host].filter(Boolean).join(" · ") || "—"),
            h("td.num", String(j.cores)),
            h("td", timeEl(j.queued_at)),
            h("td", j.started_at ? fmtDuration(Date.now() / 1000 - j.started_at) : "—"),
            h("td.actions-cell", cancel),
        );
    }
}

// The admin console's agents section: every agent (user, where, state,
// runs), fetched on demand, with a kill button each.

import { get, post } from "../../api.js";
import { busy, confirmDialog, fill, fmtAgo, h, stackTable, timeEl } from "../../dom.js";
import { adminSection } from "./section.js";

export class AgentsSection {
    /** @param problem fn(error) to show an action's failure */
    constructor({ problem }) {
        this.problem = problem;
        this.body = h("div", { id: "admin-agents" });
        this.count = h("span.count-pill");
        this.el = adminSection("agents", "Agents and containers", this.count, this.body);
    }

    async load() {
        try {
            this.render(await get("/admin/agents"));
        } catch (e) {
            fill(this.body, h("p.error-text.card-pad", `Could not load the agents: ${e.message}`));
        }
    }

    render(agents) {
        this.count.textContent = String(agents.length);
        if (!agents.length) {
            fill(this.body, h("p.muted.card-pad", "No agent is running. One starts when a user's job is next."));
            return;
        }
        fill(
            this.body,
            stackTable(
                "Agents",
                ["Agent", "User", "Where", "State", "Connected", "Last message", "Runs", ""],
                agents.map((a) => this.row(a)),
            ),
        );
    }

    row(a) {
        const kill = h("button.btn.btn-sm.btn-danger-outline", { type: "button", "aria-label": `Kill agent ${a.id}` }, "Kill");
        kill.addEventListener("click", async () => {
            const ok = await confirmDialog({
                title: `Kill agent ${a.id}?`,
                body: `It runs ${a.runs.length} ${a.runs.length === 1 ? "run" : "runs"} for ${a.user}; they end canceled.`,
                confirm: "Kill agent",
                danger: true,
            });
            if (ok) {
                await busy(kill, () => post(`/admin/agents/${encodeURIComponent(a.id)}/kill`), this.problem);
                this.load();
            }
        });
        const sub = a.container_id
            ? h("div.sub.muted", `container ${a.container_id.slice(0, 12)}`)
            : a.pid
              ? h("div.sub.muted", `pid ${a.pid}`)
              : null;
        return h(
            "tr",
            h("td", h("code.nowrap", a.id), sub),
            h("td", a.user),
            h("td", [a.driver, a.host].filter(Boolean).join(" · ")),
            h("td", h("span.state", { class: `state-${a.state}` }, a.state)),
            h("td", timeEl(a.connected_since)),
            h("td", a.last_message_at ? fmtAgo(a.last_message_at) : "—"),
            h("td", a.runs.length ? a.runs.map((r) => h("code.run-id.block", r)) : h("span.muted", "idle")),
            h("td.actions-cell", kill),
        );
    }
}

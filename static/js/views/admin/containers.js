// The admin console's containers section (docker driver only: hidden
// otherwise): each container's agent, user, state, CPU and memory, with a
// kill button each.

import { get, post } from "../../api.js";
import { busy, confirmDialog, fill, fmtBytes, h, stackTable } from "../../dom.js";
import { adminSection } from "./section.js";

export class ContainersSection {
    /**
     * @param problem fn(error) to show an action's failure
     * @param onKilled fn() after a container was killed (its agent went too)
     */
    constructor({ problem, onKilled }) {
        this.problem = problem;
        this.onKilled = onKilled;
        this.body = h("div", { id: "admin-containers" });
        this.count = h("span.count-pill");
        this.el = adminSection("containers", "Containers", this.count, this.body);
        // it shows once the server lists containers
        this.el.hidden = true;
    }

    async load() {
        let cs;
        try {
            cs = await get("/admin/containers");
        } catch (e) {
            if (e.status === 404) {
                // no docker driver
                this.el.hidden = true;
                return;
            }
            this.el.hidden = false;
            fill(this.body, h("p.error-text.card-pad", `Could not list the containers: ${e.message}`));
            return;
        }
        this.el.hidden = !cs.length;
        this.count.textContent = String(cs.length);
        fill(
            this.body,
            stackTable(
                "Containers",
                ["Container", "Host", "User", "State", "CPU", "Memory", ""],
                cs.map((c) => this.row(c)),
            ),
        );
    }

    row(c) {
        let kill = null;
        if (c.id) {
            kill = h("button.btn.btn-sm.btn-danger-outline", { type: "button", "aria-label": `Kill container ${c.id.slice(0, 12)}` }, "Kill");
            kill.addEventListener("click", async () => {
                const ok = await confirmDialog({
                    title: `Kill container ${c.id.slice(0, 12)}?`,
                    body: `It belongs to ${c.user || "no user"}${c.agent ? ` (agent ${c.agent})` : ""}; its runs end canceled.`,
                    confirm: "Kill container",
                    danger: true,
                });
                if (ok) {
                    await busy(kill, () => post(`/admin/containers/${c.id}/kill`), this.problem);
                    this.load();
                    this.onKilled();
                }
            });
        }
        const mem =
            typeof c.mem_bytes === "number"
                ? `${fmtBytes(c.mem_bytes)}${c.mem_limit_bytes ? ` of ${fmtBytes(c.mem_limit_bytes)}` : ""}`
                : "—";
        const exited = c.exit_code !== null && c.exit_code !== undefined;
        return h(
            "tr",
            h("td", c.id ? h("code.nowrap", c.id.slice(0, 12)) : "—", c.agent ? h("div.sub.muted", c.agent) : null),
            h("td", c.host || "—"),
            h("td", c.user || "—"),
            h("td", c.error ? h("span.error-text", c.error) : c.state || "—", exited ? h("div.sub.muted", `exit code ${c.exit_code}`) : null),
            h("td", typeof c.cpu_cores === "number" ? `${c.cpu_cores.toFixed(2)} cores` : "—"),
            h("td", mem),
            h("td.actions-cell", kill),
        );
    }
}

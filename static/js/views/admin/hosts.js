// The admin console's hosts section: each host's cores in use, with a
// drain (or undrain) button each.

import { get, post } from "../../api.js";
import { busy, fill, h, stackTable } from "../../dom.js";
import { adminSection } from "./section.js";

export class HostsSection {
    /** @param problem fn(error) to show an action's failure */
    constructor({ problem }) {
        this.problem = problem;
        this.body = h("div", { id: "admin-hosts" });
        this.el = adminSection("hosts", "Hosts", null, this.body);
    }

    async load() {
        try {
            this.render(await get("/admin/hosts"));
        } catch (e) {
            fill(this.body, h("p.error-text.card-pad", `Could not load the hosts: ${e.message}`));
        }
    }

    render(hosts) {
        if (!hosts.length) {
            fill(this.body, h("p.muted.card-pad", "No host is configured."));
            return;
        }
        fill(this.body, stackTable("Hosts", ["Host", "Cores used", "Cores", ""], hosts.map((t) => this.row(t))));
    }

    row(t) {
        const b = h("button.btn.btn-sm", { type: "button", "aria-label": `${t.draining ? "Undrain" : "Drain"} ${t.name}` }, t.draining ? "Undrain" : "Drain");
        b.addEventListener("click", () =>
            busy(
                b,
                async () => {
                    await post(`/admin/hosts/${encodeURIComponent(t.name)}/drain`, { drain: !t.draining });
                    await this.load();
                },
                this.problem,
            ),
        );
        const pct = t.cores ? Math.min(100, (100 * t.cores_used) / t.cores) : 0;
        return h(
            "tr",
            h("td", h("strong", t.name), t.draining ? h("span.tag.tag-warn", "draining") : null),
            h(
                "td.cores-cell",
                h(
                    "div.mini-bar.wide",
                    { role: "meter", "aria-valuemin": "0", "aria-valuemax": String(t.cores), "aria-valuenow": String(t.cores_used), "aria-label": `${t.name} cores used` },
                    h("span.mini-fill", { style: { width: `${pct}%` } }),
                ),
            ),
            h("td.nowrap", `${t.cores_used} of ${t.cores} · ${t.cores_free} free`),
            h("td.actions-cell", b),
        );
    }
}

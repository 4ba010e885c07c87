// The delete card of a simulation's page: delete it (after a confirmation),
// which cancels a run in progress.

import { del } from "../../api.js";
import { ACTIVE, busy, confirmDialog, h } from "../../dom.js";

export class DeleteCard {
    /**
     * @param ctx the app context (notices, the router)
     * @param id the simulation's id
     */
    constructor(ctx, { id }) {
        this.ctx = ctx;
        this.id = id;
        this.sim = null;
        this.job = null;
        this.button = h("button.btn.btn-danger-outline", { type: "button", id: "delete" }, "Delete simulation…");
        this.button.addEventListener("click", () => this.delete());
        this.error = h("p.form-error", { role: "alert" });
        this.el = h(
            "section.card.danger-card",
            { "aria-labelledby": "danger-heading" },
            h("h2", { id: "danger-heading" }, "Delete"),
            h("p.muted", "Deleting cancels a run in progress and removes the simulation and all its files."),
            this.button,
            this.error,
        );
    }

    showSim(s) {
        this.sim = s;
    }

    showJob(job) {
        this.job = job;
    }

    setDeleted() {
        this.button.disabled = true;
    }

    async delete() {
        this.error.textContent = "";
        const ok = await confirmDialog({
            title: `Delete “${this.sim.name}”?`,
            body: ACTIVE.has(this.job.status)
                ? "Its run is canceled, and the simulation and all its files are removed. This cannot be undone."
                : "The simulation and all its files are removed. This cannot be undone.",
            confirm: "Delete",
            danger: true,
        });
        if (!ok) {
            this.button.focus();
            return;
        }
        await busy(
            this.button,
            async () => {
                await del(`/simulations/${this.id}`);
                this.ctx.notify(`Deleted “${this.sim.name}”.`, "ok");
                this.ctx.router.go("/");
            },
            (x) => {
                this.error.textContent = x.message;
            },
        );
    }
}

// The run card of a simulation's page: status, situation, progress and facts
// of the current run; the form that runs it (cores, where) and cancels it.

import { post, sentence } from "../../api.js";
import { ACTIVE, busy, fill, h, setStatusBadge, statusBadge } from "../../dom.js";
import { jobFacts, situation } from "../../jobview.js";
import { RunWhere } from "./where.js";

export class RunCard {
    /**
     * @param ctx the app context (the user's plan limits, drivers, sign-ins)
     * @param id the simulation's id
     * @param code the simulation's code (its max cores, kind, frames)
     * @param job the job as the page has it now
     * @param onStarted fn(job) with the server's reply to a run request
     */
    constructor(ctx, { id, code, job, onStarted }) {
        this.ctx = ctx;
        this.id = id;
        this.code = code;
        this.job = job;
        this.deleted = false;
        this.onStarted = onStarted;
        this.maxCores = Math.max(1, Math.min(code.max_cores || 1, ctx.limits.max_cores || 1));
        this.where = new RunWhere(ctx, { id, job });
        this.build();
    }

    build() {
        const c = this.code;
        const maxCores = this.maxCores;
        this.badge = statusBadge(this.job.status);
        this.badge.id = "status";
        this.situation = h("span.situation", { id: "situation" });
        this.progressFill = h("div.progress-fill");
        this.progress = h(
            "div.progress",
            { id: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-labelledby": "progress-label" },
            this.progressFill,
        );
        this.progressPct = h("span.progress-pct");
        this.facts = h("dl.facts");
        this.runError = h("p.run-error", { hidden: true, id: "run-error" });
        this.cores = h("input.input.input-cores", {
            id: "cores",
            name: "cores",
            type: "number",
            min: "1",
            max: String(maxCores),
            step: "1",
            value: String(Math.min(maxCores, this.job.cores || 1)),
            inputmode: "numeric",
            "aria-describedby": "cores-hint action-error",
        });
        this.runBtn = h("button.btn.btn-primary", { type: "submit", id: "run" }, c.kind === "analysis" ? "Run analysis" : "Run");
        this.cancelBtn = h("button.btn.btn-danger-outline", { type: "button", id: "cancel", "aria-label": "Cancel run" }, "Cancel");
        this.cancelBtn.addEventListener("click", () => this.cancel());
        this.actionError = h("p.form-error", { id: "action-error", role: "alert" });
        const plan = this.ctx.user.plan;
        const coresHint =
            maxCores === 1
                ? `${c.name} runs on 1 core`
                : `1 to ${maxCores} (${c.name} uses up to ${c.max_cores}; your ${plan} plan up to ${this.ctx.limits.max_cores})`;
        const form = h(
            "form.run-form",
            { novalidate: true, "aria-label": "Run" },
            this.where.field,
            h("div.field.field-inline", h("label", { for: "cores" }, "Cores"), this.cores, h("div.hint", { id: "cores-hint" }, coresHint)),
            h("div.run-buttons", this.runBtn, this.cancelBtn),
        );
        form.addEventListener("submit", (ev) => {
            ev.preventDefault();
            this.run();
        });
        this.el = h(
            "section.card.run-card",
            { "aria-labelledby": "run-heading" },
            h("div.card-head", h("h2", { id: "run-heading" }, "Run"), this.badge),
            h("p.situation-line", { "aria-live": "polite" }, this.situation),
            this.where.call,
            h("div.progress-row", h("span.progress-text", { id: "progress-label" }, "Progress"), this.progressPct),
            this.progress,
            this.runError,
            this.facts,
            form,
            this.where.line,
            this.actionError,
        );
    }

    showJob(job, deleted) {
        this.job = job;
        this.deleted = deleted;
        this.render();
    }

    render() {
        const j = this.job;
        const active = ACTIVE.has(j.status);
        setStatusBadge(this.badge, j.status);
        this.badge.setAttribute("aria-label", `status: ${this.badge.textContent}`);
        fill(this.situation, situation(j));

        const pct = Math.max(0, Math.min(100, (j.progress || 0) * 100));
        this.progress.setAttribute("aria-valuenow", String(Math.round(pct)));
        this.progress.setAttribute("aria-valuetext", `${pct.toFixed(0)}%`);
        this.progressFill.style.width = `${pct}%`;
        this.progress.dataset.status = j.status;
        this.progressPct.textContent = j.status === "missing" ? "" : `${pct.toFixed(pct > 0 && pct < 10 ? 1 : 0)}%`;

        this.runError.hidden = !j.error;
        this.runError.textContent = j.error ? j.error : "";

        this.runBtn.disabled = active || this.deleted;
        this.runBtn.title = active ? "It is running: cancel it first" : "";
        this.runBtn.textContent = this.code.kind === "analysis" ? "Run analysis" : j.status === "missing" ? "Run" : "Run again";
        // a cancel in flight waits for the agent's confirmation
        const canceling = Boolean(j.canceling) && active;
        this.cancelBtn.disabled = !active || this.deleted || canceling;
        this.cancelBtn.textContent = canceling ? "Canceling…" : "Cancel";
        this.cores.disabled = active || this.deleted;
        this.renderTimes();
        this.where.showJob(j, this.deleted);
    }

    /** The facts, including the elapsed time that ticks while it runs. */
    renderTimes() {
        fill(this.facts, jobFacts(this.job, { frames: this.code.frames }));
    }

    onSignIns() {
        this.where.render();
    }

    async run() {
        this.actionError.textContent = "";
        const n = this.cores.value.trim() === "" ? NaN : Number(this.cores.value);
        if (!Number.isInteger(n) || n < 1 || n > this.maxCores) {
            this.actionError.textContent = sentence(`cores must be an integer from 1 to ${this.maxCores} for ${this.code.name}`);
            this.cores.setAttribute("aria-invalid", "true");
            this.cores.focus();
            return;
        }
        this.cores.removeAttribute("aria-invalid");
        await busy(
            [this.runBtn],
            async () => {
                const body = { cores: n };
                if (this.where.driver) {
                    body.driver = this.where.chosen();
                    this.where.remember();
                }
                this.onStarted(await post(`/simulations/${this.id}/run`, body));
            },
            (err) => {
                this.actionError.textContent = err.message;
            },
        );
        this.render();
    }

    async cancel() {
        this.actionError.textContent = "";
        await busy(
            [this.cancelBtn],
            () => post(`/simulations/${this.id}/cancel`),
            (err) => {
                this.actionError.textContent = err.message;
            },
        );
        this.render();
    }
}

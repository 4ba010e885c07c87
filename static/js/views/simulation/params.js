// The parameters card of a simulation's page: the values, and a form to edit
// them while no run is active.

import { patch } from "../../api.js";
import { ACTIVE, busy, fill, h } from "../../dom.js";
import { fmtParam, paramFields } from "../../params.js";

export class ParamsCard {
    /**
     * @param ctx the app context (the live simulations, for links and choices)
     * @param id the simulation's id
     * @param code the simulation's code (its parameter schema)
     * @param onSaved fn(sim) after the server saved new values
     */
    constructor(ctx, { id, code, onSaved }) {
        this.ctx = ctx;
        this.id = id;
        this.code = code;
        this.onSaved = onSaved;
        this.sim = null;
        this.editing = false;
        this.params = h("div", { id: "params" });
        this.editBtn = h("button.btn.btn-sm", { type: "button", id: "edit-params", hidden: !code.params.length }, "Edit");
        this.editBtn.addEventListener("click", () => this.startEdit());
        this.el = h(
            "section.card.params-card",
            { "aria-labelledby": "params-heading" },
            h("div.card-head", h("h2", { id: "params-heading" }, "Parameters"), this.editBtn),
            this.params,
        );
    }

    showSim(s) {
        this.sim = s;
        if (!this.editing) {
            this.render();
        }
    }

    /** Parameters cannot change while a run is active (or after a delete). */
    showJob(job, deleted) {
        const active = ACTIVE.has(job.status);
        this.editBtn.disabled = active || deleted;
        this.editBtn.title = active ? "Parameters cannot change while it runs" : "";
    }

    render() {
        const s = this.sim;
        const known = new Map(this.code.params.map((p) => [p.name, p]));
        const names = [...new Set([...this.code.params.map((p) => p.name), ...Object.keys(s.params || {})])];
        if (!names.length) {
            fill(this.params, h("p.muted", "This code has no parameters."));
            return;
        }
        fill(
            this.params,
            h(
                "dl.param-list",
                names.map((n) => {
                    const p = known.get(n);
                    let v = fmtParam(p, s.params?.[n]);
                    if (p?.type === "simulation" && s.params?.[n]) {
                        const src = this.ctx.live.sims.get(s.params[n]);
                        v = h("a", { href: `#/sim/${s.params[n]}` }, src ? src.name : s.params[n]);
                    }
                    return h("div.param", h("dt", p?.label || n, " ", h("code.param-name", n)), h("dd", v));
                }),
            ),
        );
    }

    startEdit() {
        this.editing = true;
        const sims = [...this.ctx.live.sims.values()].filter((s) => s.id !== this.id && s.user === this.sim.user);
        const fields = paramFields(this.code, this.sim.params || {}, { sims });
        const err = h("p.form-error", { role: "alert" });
        const save = h("button.btn.btn-primary.btn-sm", { type: "submit" }, "Save parameters");
        const cancel = h("button.btn.btn-sm", { type: "button" }, "Cancel");
        const form = h("form.params-form", { novalidate: true, "aria-label": "Edit parameters" }, fields.el, err, h("div.actions", cancel, save));
        const done = (saved) => {
            this.editing = false;
            this.editBtn.hidden = !this.code.params.length;
            if (saved) {
                this.onSaved(saved);
            }
            this.render();
            this.editBtn.focus();
        };
        cancel.addEventListener("click", () => done(null));
        form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            err.textContent = "";
            const { params, errors } = fields.read();
            fields.showErrors(errors);
            if (errors.length) {
                err.textContent = "Not saved: correct the values marked above.";
                return;
            }
            await busy(
                [save, cancel],
                async () => done(await patch(`/simulations/${this.id}`, { params })),
                (x) => {
                    // the server names the parameter it refused: "(name)"
                    const m = /\((\w+)\)/.exec(x.message);
                    if (m) {
                        fields.showErrors([{ name: m[1], message: x.message }]);
                    }
                    err.textContent = `Not saved: ${x.message}`;
                },
            );
        });
        this.editBtn.hidden = true;
        fill(this.params, form);
        form.querySelector("input, select")?.focus();
    }
}

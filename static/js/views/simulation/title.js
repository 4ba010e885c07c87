// The head of a simulation's page: breadcrumb, name (with rename), code, id,
// owner, and the sweep it is a member of.

import { patch } from "../../api.js";
import { busy, fill, h } from "../../dom.js";

export class TitleCard {
    /**
     * @param ctx the app context (the signed-in user)
     * @param id the simulation's id
     * @param code the simulation's code (its title is shown)
     * @param onSaved fn(sim) after the server renamed it
     */
    constructor(ctx, { id, code, onSaved }) {
        this.ctx = ctx;
        this.id = id;
        this.code = code;
        this.onSaved = onSaved;
        this.sim = null;
        this.renaming = false;
        this.title = h("h1.sim-title", { id: "sim-title" });
        this.renameBtn = h("button.btn.btn-ghost.btn-sm", { type: "button", "aria-label": "Rename this simulation" }, "Rename");
        this.renameBtn.addEventListener("click", () => this.startRename());
        this.titleRow = h("div.title-row", this.title, this.renameBtn);
        this.subtitle = h("p.subtitle.muted");
        this.el = h(
            "div.page-head",
            h(
                "div.page-title",
                h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Simulations"), " / "),
                this.titleRow,
                this.subtitle,
            ),
        );
    }

    showSim(s) {
        this.sim = s;
        if (!this.renaming) {
            this.title.textContent = s.name;
        }
        document.title = `${s.name} · simvisor`;
        const sub = [h("span", this.code.title), " · ", h("code", s.id)];
        if (s.user !== this.ctx.user.name) {
            sub.push(" · owner ", h("strong", s.user));
        }
        if (s.sweep) {
            const w = this.ctx.live.sweeps.get(s.sweep.id);
            sub.push(` · member #${s.sweep.index} of `, h("a", { href: `#/sweeps/${s.sweep.id}`, id: "sim-sweep" }, w ? w.name : "its sweep"));
        }
        fill(this.subtitle, sub);
    }

    setDeleted() {
        this.renameBtn.disabled = true;
    }

    startRename() {
        this.renaming = true;
        const input = h("input.input.rename-input", {
            id: "rename",
            type: "text",
            value: this.sim.name,
            maxlength: "200",
            "aria-label": "New name",
            "aria-describedby": "rename-error",
        });
        const err = h("span.field-error", { id: "rename-error", role: "alert" });
        const save = h("button.btn.btn-primary.btn-sm", { type: "submit" }, "Save");
        const cancel = h("button.btn.btn-sm", { type: "button" }, "Cancel");
        const form = h("form.rename-form", { novalidate: true }, input, save, cancel, err);
        const done = (saved) => {
            this.renaming = false;
            form.replaceWith(this.titleRow);
            if (saved) {
                this.onSaved(saved);
            } else {
                this.showSim(this.sim);
            }
            this.renameBtn.focus();
        };
        cancel.addEventListener("click", () => done(null));
        form.addEventListener("keydown", (ev) => {
            if (ev.key === "Escape") {
                done(null);
            }
        });
        form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            const n = input.value.trim();
            if (!n || n.length > 200) {
                err.textContent = "Name must be text of 1 to 200 characters.";
                input.focus();
                return;
            }
            await busy(
                [save, cancel],
                async () => done(await patch(`/simulations/${this.id}`, { name: n })),
                (x) => {
                    err.textContent = x.message;
                },
            );
        });
        this.titleRow.replaceWith(form);
        input.focus();
        input.select();
    }
}

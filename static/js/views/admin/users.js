// The admin console's users section: create a user, change a user's role
// or plan, give a new token, revoke tokens. The role and plan names come
// from the server (whoami's `roles` and `plans`, in display order).

import { get, patch, post } from "../../api.js";
import { busy, confirmDialog, fill, h, stackTable, timeEl } from "../../dom.js";
import { adminSection } from "./section.js";

export class UsersSection {
    /**
     * @param ctx the app context (the signed-in user, roles, plans, notices)
     * @param problem fn(error) to show an action's failure
     */
    constructor(ctx, { problem }) {
        this.ctx = ctx;
        this.problem = problem;
        this.body = h("div", { id: "admin-users" });
        this.count = h("span.count-pill");
        this.token = h("div", { id: "token-reveal" });
        this.el = adminSection("users", "Users", this.count, h("div", this.token, this.newUserForm(), this.body));
    }

    /** A select of `names` (the server's list), keeping `current` even if gone from it. */
    select(names, current, attrs) {
        const all = current && !names.includes(current) ? [...names, current] : names;
        return h(
            "select.input",
            attrs,
            all.map((n) => h("option", { value: n, selected: n === current }, n)),
        );
    }

    newUserForm() {
        const name = h("input.input", {
            id: "new-user-name",
            type: "text",
            autocomplete: "off",
            spellcheck: "false",
            placeholder: "lower-case letters, digits, _ or -",
            "aria-describedby": "new-user-error",
        });
        const role = this.select(this.ctx.roles, null, { id: "new-user-role" });
        const plan = this.select(this.ctx.plans, null, { id: "new-user-plan" });
        const err = h("p.form-error", { id: "new-user-error", role: "alert" });
        const submit = h("button.btn.btn-primary", { type: "submit" }, "Create user");
        const form = h(
            "form.new-user.card-pad",
            { novalidate: true, "aria-label": "Create a user" },
            h("div.field", h("label", { for: "new-user-name" }, "New user"), name),
            h("div.field", h("label", { for: "new-user-role" }, "Role"), role),
            h("div.field", h("label", { for: "new-user-plan" }, "Plan"), plan),
            h("div.field.field-submit", submit),
            err,
        );
        form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            err.textContent = "";
            const n = name.value.trim();
            if (!/^[a-z][a-z0-9_-]{0,31}$/.test(n)) {
                err.textContent = "User name: lower-case letters, digits, _ or -, up to 32.";
                name.focus();
                return;
            }
            await busy(
                submit,
                async () => {
                    const u = await post("/admin/users", { name: n, role: role.value, plan: plan.value });
                    name.value = "";
                    this.showToken(u.name, u.token, "created");
                    await this.load();
                },
                (e) => {
                    err.textContent = e.message;
                },
            );
        });
        return form;
    }

    /** A new token, shown once, with a copy button. */
    showToken(name, token, what) {
        const code = h("code.token", { id: "new-token", tabindex: "0" }, token);
        const copy = h("button.btn.btn-sm", { type: "button" }, "Copy");
        const status = h("span.muted", { role: "status" });
        copy.addEventListener("click", async () => {
            try {
                await navigator.clipboard.writeText(token);
            } catch (e) {
                // no clipboard API (plain http): select it for Ctrl+C
                const r = document.createRange();
                r.selectNodeContents(code);
                const s = getSelection();
                s.removeAllRanges();
                s.addRange(r);
                document.execCommand?.("copy");
            }
            status.textContent = "Copied.";
        });
        const close = h("button.btn.btn-ghost.btn-sm", { type: "button", "aria-label": "Hide the token" }, "Done");
        close.addEventListener("click", () => fill(this.token));
        fill(
            this.token,
            h(
                "div.token-box.card-pad",
                { role: "region", "aria-label": `Token for ${name}` },
                h("p", h("strong", `User ${name} ${what}.`), " Copy the token now: it is not shown again."),
                h("div.token-row", code, copy, close, status),
            ),
        );
        code.focus();
    }

    async load() {
        try {
            this.render(await get("/admin/users"));
        } catch (e) {
            fill(this.body, h("p.error-text.card-pad", `Could not load the users: ${e.message}`));
        }
    }

    render(users) {
        this.count.textContent = String(users.length);
        fill(this.body, stackTable("Users", ["Name", "Role", "Plan", "Tokens", "Created", ""], users.map((u) => this.row(u))));
    }

    row(u) {
        const me = this.ctx.user.name;
        const role = this.select(this.ctx.roles, u.role, { class: "input-sm", "aria-label": `Role of ${u.name}`, dataset: { user: u.name, field: "role" } });
        const plan = this.select(this.ctx.plans, u.plan, { class: "input-sm", "aria-label": `Plan of ${u.name}`, dataset: { user: u.name, field: "plan" } });
        for (const s of [role, plan]) {
            s.addEventListener("change", () =>
                busy(
                    [role, plan],
                    async () => {
                        await patch(`/admin/users/${u.name}`, { [s.dataset.field]: s.value });
                        this.ctx.notify(`${u.name}: ${s.dataset.field} is now ${s.value}.`, "ok");
                        await this.load();
                    },
                    (e) => {
                        this.problem(e);
                        this.load();
                    },
                ),
            );
        }
        const tok = h("button.btn.btn-sm", { type: "button", "aria-label": `New token for ${u.name}` }, "New token");
        tok.addEventListener("click", () =>
            busy(
                tok,
                async () => {
                    const r = await patch(`/admin/users/${u.name}`, { new_token: true });
                    this.showToken(u.name, r.token, "has a new token");
                    await this.load();
                },
                this.problem,
            ),
        );
        const revoke = h("button.btn.btn-sm.btn-danger-outline", { type: "button", "aria-label": `Revoke ${u.name}'s tokens`, disabled: !u.tokens }, "Revoke");
        revoke.addEventListener("click", () => this.revoke(u, revoke));
        return h(
            "tr",
            { dataset: { user: u.name } },
            h("td", h("strong", u.name), u.name === me ? h("span.tag", "you") : null),
            h("td", role),
            h("td", plan),
            h("td.num", String(u.tokens)),
            h("td", timeEl(u.created)),
            h("td.actions-cell", h("span.btn-row", tok, revoke)),
        );
    }

    async revoke(u, button) {
        const ok = await confirmDialog({
            title: `Revoke ${u.name}'s tokens?`,
            body: `All ${u.tokens} of ${u.name}'s tokens stop working and every browser signed in as ${u.name} is signed out. Give a new token afterwards.`,
            confirm: "Revoke tokens",
            danger: true,
        });
        if (ok) {
            await busy(
                button,
                async () => {
                    await patch(`/admin/users/${u.name}`, { revoke_tokens: true });
                    this.ctx.notify(`${u.name}'s tokens are revoked.`, "ok");
                    await this.load();
                },
                this.problem,
            );
        }
    }
}

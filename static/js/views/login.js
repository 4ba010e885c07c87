// Sign in with an API token; the server answers with a session cookie.

import { post } from "../api.js";
import { busy, h } from "../dom.js";

export function loginView(root, _params, ctx) {
    const error = h("p.form-error", { id: "login-error", role: "alert" });
    const token = h("input.input", {
        id: "token",
        name: "token",
        type: "password",
        autocomplete: "off",
        spellcheck: "false",
        required: true,
        "aria-describedby": "token-hint login-error",
    });
    const submit = h("button.btn.btn-primary.btn-block", { type: "submit" }, "Sign in");
    const form = h(
        "form.card.login-card",
        { novalidate: true, "aria-labelledby": "login-title" },
        h("div.login-brand", { "aria-hidden": "true" }, logo()),
        h("h1", { id: "login-title" }, "Sign in to simvisor"),
        h("p.muted", "Run, watch and cancel your simulations from the browser."),
        h(
            "div.field",
            h("label", { for: "token" }, "API token"),
            token,
            h(
                "div.hint",
                { id: "token-hint" },
                "An administrator gives you a token (it starts with ",
                h("code", "sv_"),
                "). The first admin's token is in the data directory's ",
                h("code", "admin-token"),
                " file.",
            ),
        ),
        error,
        submit,
    );
    form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        error.textContent = "";
        const t = token.value.trim();
        if (!t) {
            error.textContent = "Enter your API token.";
            token.setAttribute("aria-invalid", "true");
            token.focus();
            return;
        }
        await busy(
            submit,
            async () => {
                const w = await post("/login", { token: t }, { quiet401: true });
                token.value = "";
                await ctx.signedIn(w);
            },
            (e) => {
                error.textContent =
                    e.status === 401 ? "That token is not valid. Check it and try again." : e.message;
                token.setAttribute("aria-invalid", "true");
                token.select();
                token.focus();
            },
        );
    });
    root.append(h("div.login-page", form));
    token.focus();
}

export function logo() {
    // three stacked bars: jobs in a queue
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "28");
    svg.setAttribute("height", "28");
    svg.setAttribute("class", "logo");
    for (const [y, w, o] of [
        [4, 16, 1],
        [10.5, 12, 0.7],
        [17, 8, 0.45],
    ]) {
        const r = document.createElementNS(ns, "rect");
        r.setAttribute("x", "4");
        r.setAttribute("y", String(y));
        r.setAttribute("width", String(w));
        r.setAttribute("height", "3.5");
        r.setAttribute("rx", "1.75");
        r.setAttribute("fill", "currentColor");
        r.setAttribute("opacity", String(o));
        svg.append(r);
    }
    return svg;
}

// A new simulation: pick a code, then a form generated from its parameters.
// A parameter can be swept instead (axes.js): the form then makes a sweep,
// one run per member, and goes to the sweep's page.

import { post } from "../api.js";
import { AxesEditor } from "../axes.js";
import { busy, fill, h } from "../dom.js";
import { paramFields } from "../params.js";

export function newView(root, params, ctx) {
    const codes = [...ctx.codes.values()];
    let code = ctx.codes.get(params[0]) || codes.find((c) => c.name === "heat") || codes[0];
    if (!code) {
        root.append(
            h("div.page-head", h("div", h("h1", "New simulation"))),
            h("section.card", { role: "alert" }, h("p", "The code catalog could not be loaded, so there is nothing to create yet. Reload the page to try again.")),
        );
        return;
    }

    const option = (c) => {
        const id = `code-${c.name}`;
        return h(
            "label.code-option",
            { for: id },
            h("input", {
                type: "radio",
                name: "code",
                id,
                value: c.name,
                checked: c === code,
                onChange: () => {
                    code = c;
                    history.replaceState(null, "", `#/new/${c.name}`);
                    renderForm();
                },
            }),
            h(
                "span.code-text",
                h("span.code-title", c.title),
                h(
                    "span.code-meta",
                    h("code", c.name),
                    c.kind === "analysis" ? h("span.tag", "analysis") : null,
                    c.frames && c.kind !== "analysis" ? h("span.tag.tag-live", "live plot") : null,
                ),
            ),
        );
    };
    // the catalog's test codes (titled "Test: ...") are for checking the
    // service; keep them out of the way
    const isTest = (c) => /^test:/i.test(c.title);
    const tests = codes.filter(isTest);
    const picker = h(
        "fieldset.code-picker",
        h("legend", "Code"),
        codes.filter((c) => !isTest(c)).map(option),
        tests.length
            ? h(
                  "details.test-codes",
                  { open: isTest(code) },
                  h("summary", `Test codes (${tests.length})`),
                  h("div.code-picker-inner", tests.map(option)),
              )
            : null,
    );
    const formBox = h("div");
    let axes = null;
    root.append(
        h("div.page-head", h("div", h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Simulations"), " / "), h("h1", "New simulation"))),
        h("div.new-grid", h("section.card", { "aria-label": "Choose a code" }, picker), formBox),
    );

    function renderForm() {
        const sims = [...ctx.live.sims.values()]
            .filter((s) => s.user === ctx.user.name && ctx.codes.get(s.code)?.frames && ctx.codes.get(s.code)?.kind === "run")
            .sort((a, b) => b.created - a.created);
        const fields = paramFields(code, {}, { sims, limits: ctx.limits || {} });
        const name = h("input.input", {
            id: "sim-name",
            name: "name",
            type: "text",
            value: defaultName(code, ctx),
            maxlength: "200",
            "aria-describedby": "sim-name-error",
        });
        const nameError = h("div.field-error", { id: "sim-name-error", role: "alert" });
        const formError = h("div.form-error", { id: "new-error", role: "alert" });
        const submit = h("button.btn.btn-primary", { type: "submit", id: "create" }, "Create simulation");
        axes?.destroy();
        axes = null;
        axes = new AxesEditor(code, fields, {
            maxCores: Math.max(1, Math.min(code.max_cores || 1, ctx.limits?.max_cores || 1)),
            drivers: ctx.drivers || [],
            onChange: () => {
                if (!axes) {
                    return;
                }
                const { n } = axes.members();
                submit.textContent = axes.active ? `Create sweep${n === null ? "" : ` of ${n.toLocaleString()} ${n === 1 ? "run" : "runs"}`}` : "Create simulation";
            },
        });
        axes.onChange();
        const form = h(
            "form.card",
            { novalidate: true, "aria-labelledby": "form-title" },
            h("h2", { id: "form-title" }, code.title),
            h("div.field", h("label", { for: "sim-name" }, "Name"), name, nameError),
            code.params.length
                ? h("h3.section-title", "Parameters")
                : h("p.muted", "This code has no parameters."),
            code.params.length ? h("p.hint.sweep-intro", "Sweep a parameter to run the code once for each of several values.") : null,
            fields.el,
            axes.el,
            formError,
            h("div.actions", h("a.btn", { href: "#/" }, "Cancel"), submit),
        );
        form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            formError.textContent = "";
            const swept = new Set(axes.names);
            const read = fields.read();
            // a swept parameter's single value is not asked for
            const p = Object.fromEntries(Object.entries(read.params).filter(([k]) => !swept.has(k)));
            const errors = read.errors.filter((e) => !swept.has(e.name));
            const sweep = axes.active ? axes.read() : null;
            const n = name.value.trim();
            nameError.textContent = "";
            name.removeAttribute("aria-invalid");
            if (!n || n.length > 200) {
                nameError.textContent = "Name must be text of 1 to 200 characters.";
                name.setAttribute("aria-invalid", "true");
            }
            fields.showErrors(errors);
            axes.showErrors(sweep?.errors || [], sweep?.optionError || "");
            if (errors.length || nameError.textContent || sweep?.errors.length || sweep?.optionError) {
                formError.textContent = "Nothing was created: correct the values marked above.";
                if (nameError.textContent) {
                    name.focus();
                } else if (!errors.length && sweep && !axes.focusError(sweep.errors)) {
                    document.getElementById("sweep-cores")?.focus();
                }
                return;
            }
            await busy(
                submit,
                async () => {
                    if (sweep) {
                        const w = await post("/sweeps", { code: code.name, name: n, params: p, ...sweep.body });
                        ctx.router.go(`/sweeps/${w.id}`);
                        return;
                    }
                    const s = await post("/simulations", { code: code.name, name: n, params: p });
                    ctx.router.go(`/sim/${s.id}`);
                },
                (e) => {
                    // the server's own words, next to the field (or axis) they
                    // are about: "member 2 (secs=-1): Seconds (secs) must ..."
                    const m = /\((\w+)\)/.exec(e.message);
                    if (m && swept.has(m[1])) {
                        axes.showErrors([{ name: m[1], message: e.message }]);
                    } else if (m && code.params.some((x) => x.name === m[1])) {
                        fields.showErrors([{ name: m[1], message: e.message }]);
                    }
                    formError.textContent = e.status >= 500 || !e.status ? e.message : `Not created: ${e.message}`;
                },
            );
        });
        fill(formBox, form);
    }
    renderForm();
}

function defaultName(code, ctx) {
    // a sweep's members have names of their own
    const n = [...ctx.live.sims.values()].filter((s) => s.user === ctx.user.name && s.code === code.name && !s.sweep).length;
    return `${code.name} ${n + 1}`;
}

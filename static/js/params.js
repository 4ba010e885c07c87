// Form fields generated from a code's parameter schema, and their checks.
// The messages are the server's (supervisor/catalog.py), word for word, so a
// person reads the same sentence whichever side refused the value.

import { sentence } from "./api.js";
import { h, pyNum, uid } from "./dom.js";
import { SITE_PREFIX, fileField, fitsParam } from "./library.js";

/**
 * Fields for `code.params` with `values` (defaults if missing).
 * `sims` lists simulations a "simulation" parameter may name; `limits` (the
 * plan's, from whoami) bound what a "file" parameter's upload shortcut sends.
 * Returns {el, read() -> {params, errors: [{name, message}]}, showErrors(errors)}.
 */
export function paramFields(code, values = {}, { sims = [], limits = {} } = {}) {
    const rows = [];
    const inputs = new Map();
    for (const p of code.params) {
        const id = uid(`param-${p.name}`);
        const hintId = `${id}-hint`;
        const errId = `${id}-error`;
        const v = p.name in values ? values[p.name] : p.default;
        let input;
        let extra = null;
        if (p.type === "file") {
            const f = fileField(p, v, { id, describedBy: `${hintId} ${errId}`, limits });
            input = f.select;
            extra = f.el;
            input.addEventListener("change", () => {
                input.removeAttribute("aria-invalid");
                const err = document.getElementById(errId);
                if (err) {
                    err.textContent = "";
                }
            });
        } else if (p.type === "int" || p.type === "float") {
            input = h("input.input", {
                id,
                name: p.name,
                type: "number",
                inputmode: p.type === "int" ? "numeric" : "decimal",
                step: p.type === "int" ? "1" : "any",
                min: p.min ?? null,
                max: p.max ?? null,
                value: v === null || v === undefined ? "" : String(v),
                "aria-describedby": `${hintId} ${errId}`,
            });
        } else if (p.type === "simulation") {
            input = h(
                "select.input",
                { id, name: p.name, "aria-describedby": `${hintId} ${errId}` },
                h("option", { value: "" }, sims.length ? "Choose a simulation…" : "No simulation to analyse yet"),
                sims.map((s) => h("option", { value: s.id, selected: s.id === v }, `${s.name} (${s.code}, ${s.id})`)),
            );
        } else if (p.choices) {
            input = h(
                "select.input",
                { id, name: p.name, "aria-describedby": `${hintId} ${errId}` },
                p.choices.map((c) => h("option", { value: c, selected: c === v }, c)),
            );
        } else {
            input = h("input.input", {
                id,
                name: p.name,
                type: "text",
                value: v ?? "",
                "aria-describedby": `${hintId} ${errId}`,
            });
        }
        inputs.set(p.name, input);
        rows.push(
            h(
                "div.field",
                { dataset: { param: p.name } },
                h("label", { for: id }, p.label || p.name, " ", h("code.param-name", p.name)),
                extra || input,
                h("div.hint", { id: hintId }, hint(p)),
                h("div.field-error", { id: errId, role: "alert" }),
            ),
        );
    }
    const el = h("div.fields", rows);

    function read() {
        const params = {};
        const errors = [];
        for (const p of code.params) {
            const raw = inputs.get(p.name).value;
            const [value, message] = check(p, raw);
            if (message) {
                errors.push({ name: p.name, message });
            } else {
                params[p.name] = value;
            }
        }
        return { params, errors };
    }

    function showErrors(errors) {
        for (const f of el.querySelectorAll(".field")) {
            const e = errors.find((x) => x.name === f.dataset.param);
            f.querySelector(".field-error").textContent = e ? e.message : "";
            const i = f.querySelector(".input");
            if (e) {
                i.setAttribute("aria-invalid", "true");
            } else {
                i.removeAttribute("aria-invalid");
            }
        }
        if (errors.length) {
            inputs.get(errors[0].name).focus();
        }
    }

    return { el, read, showErrors };
}

function hint(p) {
    const f = p.type === "float";
    const parts = [];
    if (p.type === "int") {
        parts.push("integer");
    } else if (f) {
        parts.push("number");
    } else if (p.type === "simulation") {
        parts.push("one of your simulations");
    } else if (p.type === "file") {
        parts.push((p.patterns?.length ? `a file of your library named like ${p.patterns.join(" or ")}` : "a file of your library") + (p.site?.length ? ", or one the site provides" : ""));
    } else if (p.choices) {
        parts.push(`one of ${p.choices.join(", ")}`);
    } else {
        parts.push("text");
    }
    if (p.min !== null && p.min !== undefined && p.max !== null && p.max !== undefined) {
        parts.push(`${pyNum(p.min, f)} to ${pyNum(p.max, f)}`);
    } else if (p.min !== null && p.min !== undefined) {
        parts.push(`at least ${pyNum(p.min, f)}`);
    } else if (p.max !== null && p.max !== undefined) {
        parts.push(`at most ${pyNum(p.max, f)}`);
    }
    if (p.default !== null && p.default !== undefined) {
        parts.push(`default ${p.type === "float" ? pyNum(p.default, true) : p.default}`);
    }
    return parts.join(" · ");
}

const MAX_STR_CHARS = 1000;

/** [value, null] or [null, message]; the message is the server's. */
export function check(p, raw) {
    const label = p.label || p.name;
    const bad = (what) => [null, sentence(`${label} (${p.name}) ${what}`)];
    const s = typeof raw === "string" ? raw.trim() : raw;
    let v;
    if (p.type === "int") {
        v = s === "" ? NaN : Number(s);
        if (!Number.isInteger(v)) {
            return bad("must be an integer");
        }
    } else if (p.type === "float") {
        v = s === "" ? NaN : Number(s);
        if (!Number.isFinite(v)) {
            return bad("must be a number");
        }
    } else {
        v = raw;
        if ((p.type === "simulation" || p.type === "file") && !v) {
            return [null, sentence(`choose the ${label.toLowerCase()}`)];
        }
        if (p.type === "file" && v.startsWith(SITE_PREFIX)) {
            if (!(p.site || []).includes(v.slice(SITE_PREFIX.length))) {
                return bad(`names no file the site provides: ${v}`);
            }
        } else if (p.type === "file" && !fitsParam(p, v)) {
            return bad(`must be a file named like ${p.patterns.join(" or ")}`);
        }
        if (v.length > MAX_STR_CHARS) {
            return bad(`must be text of at most ${MAX_STR_CHARS} characters`);
        }
        if (p.choices && !p.choices.includes(v)) {
            return bad(`must be one of ${p.choices.join(", ")}`);
        }
    }
    if (p.type === "int" || p.type === "float") {
        const f = p.type === "float";
        if (p.min !== null && p.min !== undefined && v < p.min) {
            return bad(`must be at least ${pyNum(p.min, f)}`);
        }
        if (p.max !== null && p.max !== undefined && v > p.max) {
            return bad(`must be at most ${pyNum(p.max, f)}`);
        }
    }
    return [v, null];
}

/** A parameter's value as people read it. */
export function fmtParam(p, v) {
    if (v === null || v === undefined) {
        return "—";
    }
    if (p?.type === "float") {
        return pyNum(v, true);
    }
    return String(v);
}

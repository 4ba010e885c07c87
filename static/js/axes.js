// The axes editor of the new-simulation form: any parameter can be swept
// instead of set. A number (int, float) sweeps over a list of values or a
// range (start, stop, count; linear or log); any other parameter over a list
// of values (the choices, simulations or files its select offers; one text
// per line). Several axes make a grid (every combination) or are zipped (the
// i-th values together). The member count is shown as the axes change.
//
// Here only the shape of each axis is checked (numbers are numbers, a range
// is complete); the server checks every member's values against the catalog
// and names the first bad one, and its words are shown in the form.

import { fill, h, pyNum, uid } from "./dom.js";

/** Ranges longer than this are not previewed (nor made) in the page. */
const PREVIEW_MAX = 100000;

/** The first value of `vs` seen before, or undefined. */
function firstRepeat(vs) {
    const seen = new Set();
    for (const v of vs) {
        if (seen.has(v)) {
            return v;
        }
        seen.add(v);
    }
    return undefined;
}

/** The axis values a range gives, as the server makes them (sweep_axes.py). */
export function rangeValues(start, stop, num, scale, integer) {
    const n = num - 1;
    if (n === 0) {
        return [start];
    }
    const mid = [];
    const lo = Math.min(start, stop);
    const hi = Math.max(start, stop);
    for (let i = 1; i < n; i++) {
        const v =
            scale === "log"
                ? 10 ** (Math.log10(start) + ((Math.log10(stop) - Math.log10(start)) * i) / n)
                : start + ((stop - start) * i) / n;
        mid.push(Math.min(Math.max(v, lo), hi));
    }
    const res = [start, ...mid, stop];
    return integer ? res.map(roundHalfEven) : res;
}

/** Python's round(): halves go to the even neighbour. */
function roundHalfEven(v) {
    const f = Math.floor(v);
    const d = v - f;
    if (d > 0.5 || (d === 0.5 && f % 2 !== 0)) {
        return f + 1;
    }
    return f;
}

/** The members of axes of these lengths: {n, message} (n null when unknown). */
export function memberCount(axes, combine) {
    if (!axes.length) {
        return { n: null, message: "" };
    }
    if (axes.some((a) => a.length === null)) {
        return { n: null, message: "complete the axes to count the runs" };
    }
    if (combine === "zip") {
        const ls = new Set(axes.map((a) => a.length));
        if (ls.size > 1) {
            return { n: null, message: `zip needs axes of one length: ${axes.map((a) => `${a.name} has ${a.length}`).join(", ")}` };
        }
        return { n: axes[0].length, message: "" };
    }
    return { n: axes.reduce((n, a) => n * a.length, 1), message: "" };
}

const SHOWN_VALUES = 8;

/** "0.1, 0.2, …, 1.0" for a preview. */
function showValues(vs, isFloat) {
    // 0.6000000000000001 (a range's value, as the server makes it too) reads 0.6
    const f = (v) => (typeof v === "number" ? pyNum(Number(v.toPrecision(8)), isFloat) : String(v));
    if (vs.length <= SHOWN_VALUES) {
        return vs.map(f).join(", ");
    }
    return [...vs.slice(0, SHOWN_VALUES - 2).map(f), "…", f(vs[vs.length - 1])].join(", ");
}

/** The editor of one swept parameter, in place of its field's input. */
class Axis {
    constructor(p, control, onChange) {
        this.p = p;
        this.name = p.name;
        this.onChange = onChange;
        this.id = uid(`axis-${p.name}`);
        this.error = h("div.field-error.axis-error", { id: `${this.id}-error`, role: "alert" });
        this.preview = h("div.hint.axis-preview", { id: `${this.id}-preview`, "aria-live": "polite" });
        const isNumber = p.type === "int" || p.type === "float";
        const isSelect = control.tagName === "SELECT" || Boolean(control.querySelector("select"));
        this.kind = isNumber ? "number" : isSelect ? "options" : "text";
        const body = this.kind === "number" ? this._number(control) : this.kind === "options" ? this._options(control) : this._text(control);
        this.el = h("div.axis", { dataset: { axis: p.name } }, body, this.preview, this.error);
        this.update();
    }

    _number(control) {
        const d = this.id;
        const current = control.value.trim();
        this.mode = h(
            "select.input.input-sm",
            { id: `${d}-mode`, "aria-label": `How ${this.p.label || this.p.name} is swept` },
            h("option", { value: "list" }, "List of values"),
            h("option", { value: "range" }, "Range"),
        );
        const num = (suffix, label, value, extra = {}) => {
            const i = h("input.input.input-sm", { id: `${d}-${suffix}`, type: "text", inputmode: "decimal", value, "aria-describedby": `${d}-preview ${d}-error`, ...extra });
            return [i, h("label.axis-part", { for: i.id }, h("span", label), i)];
        };
        const [list, listLabel] = num("values", "Values", current, { placeholder: "e.g. 1, 2, 5" });
        this.list = list;
        const [start, startLabel] = num("start", "Start", current);
        const [stop, stopLabel] = num("stop", "Stop", "");
        const [count, countLabel] = num("count", "Count", "5", { inputmode: "numeric" });
        this.start = start;
        this.stop = stop;
        this.count = count;
        this.scale = h("select.input.input-sm", { id: `${d}-scale` }, h("option", { value: "linear" }, "linear"), h("option", { value: "log" }, "log"));
        this.listBox = h("div.axis-row", listLabel);
        this.rangeBox = h("div.axis-row", { hidden: true }, startLabel, stopLabel, countLabel, h("label.axis-part", { for: this.scale.id }, h("span", "Scale"), this.scale));
        this.mode.addEventListener("change", () => {
            this.listBox.hidden = this.mode.value !== "list";
            this.rangeBox.hidden = this.mode.value !== "range";
            this.update();
        });
        for (const i of [list, start, stop, count, this.scale]) {
            i.addEventListener("input", () => this.update());
            i.addEventListener("change", () => this.update());
        }
        return [h("div.axis-row", h("label.axis-part", { for: this.mode.id }, h("span", "Sweep over"), this.mode)), this.listBox, this.rangeBox];
    }

    _options(control) {
        const select = control.tagName === "SELECT" ? control : control.querySelector("select");
        this.boxes = h("div.axis-options", { role: "group", "aria-label": `Values of ${this.p.label || this.p.name}` });
        let built = false;
        const build = () => {
            // at first the field's value; later what was checked
            const was = new Set(built ? this._checked() : [select.value].filter(Boolean));
            built = true;
            const opts = [...select.querySelectorAll("option")].filter((o) => o.value);
            fill(
                this.boxes,
                opts.length
                    ? opts.map((o) =>
                          h(
                              "label.check.axis-option",
                              h("input", { type: "checkbox", value: o.value, checked: was.has(o.value), onChange: () => this.update() }),
                              ` ${o.textContent}`,
                          ),
                      )
                    : h("span.muted", "Nothing to choose from yet."),
            );
        };
        this._checked = () => [...this.boxes.querySelectorAll("input:checked")].map((i) => i.value);
        build();
        // a file parameter's select fills in once the library is listed
        this.observer = new MutationObserver(() => {
            build();
            this.update();
        });
        this.observer.observe(select, { childList: true, subtree: true });
        return this.boxes;
    }

    _text(control) {
        this.lines = h("textarea.input.axis-lines", {
            id: `${this.id}-lines`,
            rows: "3",
            "aria-label": `Values of ${this.p.label || this.p.name}, one per line`,
            "aria-describedby": `${this.id}-preview ${this.id}-error`,
        });
        this.lines.value = control.value;
        this.lines.addEventListener("input", () => this.update());
        return this.lines;
    }

    /** [spec, null] (a list or a range as the API takes it) or [null, message]. */
    read() {
        const label = this.p.label || this.p.name;
        if (this.kind === "options") {
            const vs = this._checked();
            return vs.length ? [vs, null] : [null, `Choose at least one value of ${label}.`];
        }
        if (this.kind === "text") {
            const vs = this.lines.value
                .split("\n")
                .map((s) => s.trim())
                .filter(Boolean);
            return vs.length ? [vs, null] : [null, `Give at least one value of ${label}, one per line.`];
        }
        const number = (s, what) => {
            const t = s.trim();
            const v = t === "" ? NaN : Number(t);
            return Number.isFinite(v) ? [v, null] : [null, `${what} of ${label} must be a number${t ? `, not “${t}”` : ""}.`];
        };
        if (this.mode.value === "list") {
            const parts = this.list.value.split(/[\s,;]+/).filter(Boolean);
            if (!parts.length) {
                return [null, `Give at least one value of ${label}.`];
            }
            const vs = [];
            for (const s of parts) {
                const [v, m] = number(s, "Each value");
                if (m) {
                    return [null, m];
                }
                vs.push(v);
            }
            return [vs, null];
        }
        const [start, m1] = number(this.start.value, "The start");
        const [stop, m2] = number(this.stop.value, "The stop");
        const c = this.count.value.trim();
        const num = c === "" ? NaN : Number(c);
        const m3 = Number.isInteger(num) && num >= 1 ? null : `The count of ${label} must be a whole number of at least 1.`;
        const m4 = this.scale.value === "log" && !m1 && !m2 && !(start > 0 && stop > 0) ? `A log range of ${label} needs a start and a stop above 0.` : null;
        const m = m1 || m2 || m3 || m4;
        return m ? [null, m] : [{ start, stop, num, scale: this.scale.value }, null];
    }

    /** Its number of values, or null while it is incomplete. */
    get length() {
        const [spec] = this.read();
        if (!spec) {
            return null;
        }
        return Array.isArray(spec) ? spec.length : spec.num;
    }

    update() {
        // the last refusal was of other values
        this.error.textContent = "";
        const [spec, m] = this.read();
        this.preview.dataset.values = spec ? String(Array.isArray(spec) ? spec.length : spec.num) : "";
        if (!spec) {
            this.preview.textContent = m;
        } else {
            const isFloat = this.p.type === "float";
            if (!Array.isArray(spec) && spec.num > PREVIEW_MAX) {
                // made by the server (which may refuse so many); a preview
                // would hold the page for as long as it takes to make them
                this.preview.textContent = `${spec.num.toLocaleString("en-US")} values (too many to preview)`;
                this.onChange();
                return;
            }
            const vs = Array.isArray(spec) ? spec : rangeValues(spec.start, spec.stop, spec.num, spec.scale, this.p.type === "int");
            const n = vs.length;
            // the server refuses an integer range that repeats a value
            const twice = Array.isArray(spec) ? undefined : firstRepeat(vs);
            const warn = twice === undefined ? "" : ` (repeats ${twice}: ask for fewer)`;
            this.preview.textContent = `${n} ${n === 1 ? "value" : "values"}: ${showValues(vs, isFloat)}${warn}`;
        }
        this.onChange();
    }

    showError(message) {
        this.error.textContent = message || "";
    }

    focus() {
        const i = this.kind === "number" ? (this.mode.value === "list" ? this.list : this.start) : this.kind === "text" ? this.lines : this.boxes.querySelector("input");
        i?.focus();
    }

    destroy() {
        this.observer?.disconnect();
    }
}

/**
 * The sweep controls of a form: a Sweep button on each field of `fields`
 * (paramFields), and the options of the sweep (combine, runs at once, cores,
 * where). `onChange()` runs as they change.
 */
export class AxesEditor {
    constructor(code, fields, { maxCores = 1, drivers = [], onChange = () => {} }) {
        this.code = code;
        this.maxCores = maxCores;
        this.onChange = onChange;
        /** parameter name -> Axis, while it is swept */
        this.axes = new Map();
        for (const f of fields.el.querySelectorAll(".field[data-param]")) {
            const p = code.params.find((x) => x.name === f.dataset.param);
            if (p) {
                this._addToggle(f, p);
            }
        }
        const d = uid("sweep");
        this.combine = h(
            "fieldset.axis-combine",
            { hidden: true },
            h("legend", "Combine the axes"),
            h("label.check", h("input", { type: "radio", name: `${d}-combine`, value: "grid", checked: true, onChange: () => this.changed() }), " grid: every combination"),
            h("label.check", h("input", { type: "radio", name: `${d}-combine`, value: "zip", onChange: () => this.changed() }), " zip: the i-th values together"),
        );
        this.maxParallel = h("input.input.input-cores", { id: "sweep-max-parallel", type: "number", min: "1", step: "1", inputmode: "numeric", "aria-describedby": "sweep-max-parallel-hint sweep-options-error" });
        this.cores = h("input.input.input-cores", { id: "sweep-cores", type: "number", min: "1", max: String(maxCores), step: "1", value: "1", inputmode: "numeric", "aria-describedby": "sweep-cores-hint sweep-options-error" });
        this.driver =
            drivers.length > 1
                ? h(
                      "select.input.input-sm",
                      { id: "sweep-driver" },
                      drivers.map((x) => h("option", { value: x }, x)),
                  )
                : null;
        this.count = h("p.sweep-count", { id: "sweep-count", "aria-live": "polite" });
        this.optionsError = h("div.form-error", { id: "sweep-options-error", role: "alert" });
        this.el = h(
            "section.sweep-options",
            { hidden: true, "aria-labelledby": `${d}-title` },
            h("h3.section-title", { id: `${d}-title` }, "Sweep"),
            this.count,
            this.combine,
            h(
                "div.sweep-fields",
                h("div.field", h("label", { for: "sweep-max-parallel" }, "At most at once"), this.maxParallel, h("div.hint", { id: "sweep-max-parallel-hint" }, "runs queued or running at the same time; empty: as your plan allows")),
                h("div.field", h("label", { for: "sweep-cores" }, "Cores of each run"), this.cores, h("div.hint", { id: "sweep-cores-hint" }, maxCores === 1 ? `${code.name} runs on 1 core` : `1 to ${maxCores}`)),
                this.driver ? h("div.field", h("label", { for: "sweep-driver" }, "Run on"), this.driver) : null,
            ),
            this.optionsError,
        );
        this.changed();
    }

    _addToggle(field, p) {
        const control = field.children[1];
        // its name says which parameter in words (not aria-label: the
        // field's label must name only its input)
        const what = h("span.visually-hidden", ` ${p.label || p.name}`);
        const word = h("span", "Sweep");
        const button = h("button.btn.btn-ghost.btn-sm.sweep-toggle", { type: "button", "aria-pressed": "false" }, word, what);
        field.classList.add("has-sweep");
        field.querySelector("label").after(button);
        button.addEventListener("click", () => {
            const a = this.axes.get(p.name);
            if (a) {
                a.destroy();
                a.el.remove();
                this.axes.delete(p.name);
                control.hidden = false;
                button.setAttribute("aria-pressed", "false");
                word.textContent = "Sweep";
                what.textContent = ` ${p.label || p.name}`;
            } else {
                const x = new Axis(p, control, () => this.changed());
                this.axes.set(p.name, x);
                control.hidden = true;
                control.after(x.el);
                button.setAttribute("aria-pressed", "true");
                word.textContent = "One value";
                what.textContent = ` of ${p.label || p.name}`;
                x.focus();
            }
            field.classList.toggle("is-swept", this.axes.has(p.name));
            this.changed();
        });
    }

    /** Whether any parameter is swept (the form then makes a sweep). */
    get active() {
        return this.axes.size > 0;
    }

    /** The swept parameters' names, in the code's order (the grid's order). */
    get names() {
        return this.code.params.map((p) => p.name).filter((n) => this.axes.has(n));
    }

    get combineValue() {
        return this.combine.querySelector("input:checked")?.value || "grid";
    }

    /** {n, message}: the runs the axes make. */
    members() {
        const axes = this.names.map((n) => ({ name: n, length: this.axes.get(n)?.length ?? null }));
        return memberCount(axes, this.combineValue);
    }

    changed() {
        if (!this.el) {
            return;
        }
        this.el.hidden = !this.active;
        this.combine.hidden = this.axes.size < 2;
        const { n, message } = this.members();
        this.count.dataset.members = n === null ? "" : String(n);
        if (n !== null) {
            const sizes = this.names.map((x) => this.axes.get(x).length);
            const how = sizes.length > 1 ? (this.combineValue === "zip" ? ` (${sizes.length} axes zipped)` : ` (a grid of ${sizes.join(" × ")})`) : "";
            this.count.textContent = `${n.toLocaleString()} ${n === 1 ? "run" : "runs"}${how}`;
        } else {
            this.count.textContent = message ? message[0].toUpperCase() + message.slice(1) : "";
        }
        this.onChange();
    }

    /** {axes, combine, cores, driver?, max_parallel?, errors: [{name, message}]}. */
    read() {
        const axes = {};
        const errors = [];
        for (const n of this.names) {
            const [spec, m] = this.axes.get(n).read();
            if (m) {
                errors.push({ name: n, message: m });
            } else {
                axes[n] = spec;
            }
        }
        const body = { axes, combine: this.combineValue };
        const cores = this.cores.value.trim() === "" ? NaN : Number(this.cores.value);
        let optionError = "";
        if (!Number.isInteger(cores) || cores < 1 || cores > this.maxCores) {
            optionError = `Cores must be an integer from 1 to ${this.maxCores} for ${this.code.name}.`;
        } else {
            body.cores = cores;
        }
        const mp = this.maxParallel.value.trim();
        if (mp !== "") {
            const v = Number(mp);
            if (!Number.isInteger(v) || v < 1) {
                optionError = optionError || "At most at once must be a whole number of at least 1 (or empty).";
            } else {
                body.max_parallel = v;
            }
        }
        if (this.driver) {
            body.driver = this.driver.value;
        }
        return { body, errors, optionError };
    }

    /** Show `errors` ([{name, message}]) at their axes and `optionError`. */
    showErrors(errors, optionError = "") {
        for (const [n, a] of this.axes) {
            a.showError(errors.find((e) => e.name === n)?.message);
        }
        this.optionsError.textContent = optionError;
        if (optionError.startsWith("Cores")) {
            this.cores.setAttribute("aria-invalid", "true");
        } else {
            this.cores.removeAttribute("aria-invalid");
        }
    }

    /** Focus the first axis with an error; whether there was one. */
    focusError(errors) {
        const e = errors.find((x) => this.axes.has(x.name));
        if (e) {
            this.axes.get(e.name).focus();
            return true;
        }
        return false;
    }

    destroy() {
        for (const a of this.axes.values()) {
            a.destroy();
        }
    }
}

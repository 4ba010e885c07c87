// Small DOM and formatting helpers shared by every view.

/**
 * Build an element: h("a.link", {href: "#/"}, "text", child, ...).
 * Attributes starting with "on" are listeners; `class`, `dataset`, `style`
 * and boolean attributes are handled; null/false children are skipped.
 */
export function h(tag, attrs, ...children) {
    const [name, ...classes] = tag.split(".");
    const el = document.createElement(name || "div");
    if (classes.length) {
        el.className = classes.join(" ");
    }
    if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
        children.unshift(attrs);
        attrs = null;
    }
    for (const [k, v] of Object.entries(attrs || {})) {
        if (v === null || v === undefined || v === false) {
            continue;
        }
        if (k.startsWith("on") && typeof v === "function") {
            el.addEventListener(k.slice(2).toLowerCase(), v);
        } else if (k === "class") {
            el.className = [el.className, v].filter(Boolean).join(" ");
        } else if (k === "dataset") {
            Object.assign(el.dataset, v);
        } else if (k === "style" && typeof v === "object") {
            Object.assign(el.style, v);
        } else if (k === "value" || k === "checked" || k === "selected") {
            el[k] = v;
        } else {
            el.setAttribute(k, v === true ? "" : String(v));
        }
    }
    append(el, children);
    return el;
}

function append(el, children) {
    for (const c of children.flat(Infinity)) {
        if (c === null || c === undefined || c === false) {
            continue;
        }
        el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
}

/** Replace the children of `el`. */
export function fill(el, ...children) {
    el.replaceChildren();
    append(el, children);
    return el;
}

let idCounter = 0;

/** A unique element id with a readable prefix (labels need ids). */
export function uid(prefix) {
    idCounter += 1;
    return `${prefix}-${idCounter}`;
}

// --- formatting -------------------------------------------------------------

const DATE_TIME = new Intl.DateTimeFormat(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
});
const TIME = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
});

/** Epoch seconds as local time; today's dates show the time only. */
export function fmtTime(secs) {
    if (!secs) {
        return "—";
    }
    const d = new Date(secs * 1000);
    const now = new Date();
    if (d.toDateString() === now.toDateString()) {
        return TIME.format(d);
    }
    return DATE_TIME.format(d);
}

/** Full local date and time (for tooltips and <time datetime>). */
export function fmtFullTime(secs) {
    return secs ? DATE_TIME.format(new Date(secs * 1000)) : "";
}

/** A <time> element with the local time and the full date as its title. */
export function timeEl(secs) {
    if (!secs) {
        return h("span.muted", "—");
    }
    return h(
        "time",
        { datetime: new Date(secs * 1000).toISOString(), title: fmtFullTime(secs) },
        fmtTime(secs),
    );
}

/** Seconds as "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min", "3 d 4 h". */
export function fmtDuration(secs) {
    if (secs === null || secs === undefined || !Number.isFinite(secs) || secs < 0) {
        return "—";
    }
    if (secs < 1) {
        return `${Math.round(secs * 1000)} ms`;
    }
    if (secs < 60) {
        return `${secs < 10 ? secs.toFixed(1) : Math.round(secs)} s`;
    }
    const s = Math.round(secs);
    const m = Math.floor(s / 60);
    if (m < 60) {
        return `${m} min ${String(s % 60).padStart(2, "0")} s`;
    }
    const hr = Math.floor(m / 60);
    if (hr < 48) {
        return `${hr} h ${String(m % 60).padStart(2, "0")} min`;
    }
    return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

/** "3 minutes ago" style, for lists. */
export function fmtAgo(secs) {
    if (!secs) {
        return "never";
    }
    const d = Date.now() / 1000 - secs;
    if (d < 5) {
        return "just now";
    }
    if (d < 60) {
        return `${Math.round(d)} s ago`;
    }
    if (d < 3600) {
        return `${Math.round(d / 60)} min ago`;
    }
    if (d < 86400) {
        return `${Math.round(d / 3600)} h ago`;
    }
    return fmtTime(secs);
}

export function fmtBytes(n) {
    if (n < 1024) {
        return `${n} B`;
    }
    const u = ["KB", "MB", "GB", "TB"];
    let v = n;
    let i = -1;
    do {
        v /= 1024;
        i += 1;
    } while (v >= 1024 && i < u.length - 1);
    return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${u[i]}`;
}

/**
 * A number as Python's str() prints it, so client-side messages read exactly
 * like the server's ("must be at most 10.0", "must be at least 1e-05").
 */
export function pyNum(v, isFloat) {
    if (typeof v !== "number") {
        return String(v);
    }
    if (!isFloat) {
        return String(v);
    }
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-4 || a >= 1e16)) {
        const [m, e] = v.toExponential().split("e");
        const n = Math.abs(Number(e));
        return `${m}e${Number(e) < 0 ? "-" : "+"}${String(n).padStart(2, "0")}`;
    }
    const s = String(v);
    return Number.isInteger(v) ? `${s}.0` : s;
}

// --- statuses ---------------------------------------------------------------

export const ACTIVE = new Set(["queued", "starting", "running", "lost"]);
export const ENDED = new Set(["completed", "error", "canceled", "timed_out"]);

const STATUS_LABEL = {
    missing: "not run",
    timed_out: "timed out",
};

/** The status badge; `data-status` carries the raw status for tests and CSS. */
export function statusBadge(status) {
    return h(
        "span.badge",
        { class: `status-${status}`, dataset: { status } },
        STATUS_LABEL[status] || status,
    );
}

export function setStatusBadge(el, status) {
    el.className = `badge status-${status}`;
    el.dataset.status = status;
    el.textContent = STATUS_LABEL[status] || status;
}

// --- dialogs ----------------------------------------------------------------

/** A modal confirm dialog; resolves true if the user confirms. */
export function confirmDialog({ title, body, confirm = "OK", danger = false }) {
    return new Promise((resolve) => {
        const d = h(
            "dialog.dialog",
            { "aria-labelledby": "dialog-title" },
            h(
                "form",
                { method: "dialog" },
                h("h2", { id: "dialog-title" }, title),
                h("p", body),
                h(
                    "div.actions",
                    h("button.btn", { value: "cancel", type: "submit" }, "Keep it"),
                    h(
                        "button.btn",
                        {
                            value: "ok",
                            type: "submit",
                            class: danger ? "btn-danger" : "btn-primary",
                        },
                        confirm,
                    ),
                ),
            ),
        );
        d.addEventListener("close", () => {
            d.remove();
            resolve(d.returnValue === "ok");
        });
        document.body.append(d);
        d.showModal();
        // the safe choice has the focus
        d.querySelector("button[value=cancel]").focus();
    });
}

// --- async buttons -----------------------------------------------------------

/**
 * Run `fn` with `button` disabled and marked busy; always re-enabled, even
 * after a 500 or a network failure. Errors go to `onError` (or are rethrown).
 */
export async function busy(button, fn, onError) {
    const buttons = Array.isArray(button) ? button : [button];
    for (const b of buttons) {
        if (b) {
            b.disabled = true;
            b.setAttribute("aria-busy", "true");
        }
    }
    try {
        return await fn();
    } catch (e) {
        if (onError) {
            onError(e);
            return undefined;
        }
        throw e;
    } finally {
        for (const b of buttons) {
            if (b) {
                b.disabled = false;
                b.removeAttribute("aria-busy");
            }
        }
    }
}

/**
 * Re-render `container` with `render()` without losing the keyboard focus:
 * an element with data-key that had the focus gets it back.
 */
export function keepFocus(container, render) {
    const a = document.activeElement;
    const key = a && container.contains(a) ? a.dataset.key : null;
    render();
    if (key) {
        const el = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
        el?.focus({ preventScroll: true });
    }
}

/**
 * A table that, on narrow screens, stacks each row as "label: value" lines
 * (CSS .table-stack): every cell gets its column's name as data-label.
 * `rows` are <tr> elements whose cells are in the order of `heads`.
 */
export function stackTable(caption, heads, rows, cls = "") {
    for (const tr of rows) {
        [...tr.children].forEach((td, i) => {
            td.dataset.label = heads[i] || "";
            const v = h("div.cell-v");
            v.append(...td.childNodes);
            td.append(v);
        });
    }
    return h(
        "div.table-wrap",
        h(
            "table.table.table-stack",
            { class: cls },
            h("caption.visually-hidden", caption),
            h(
                "thead",
                h(
                    "tr",
                    heads.map((t) =>
                        h("th", { scope: "col", class: ["Cores", "Tokens"].includes(t) ? "num" : "" }, t),
                    ),
                ),
            ),
            h("tbody", rows),
        ),
    );
}

/** An exit code in words: negative ones are the signal that ended it. */
export function fmtExit(code) {
    if (code === null || code === undefined) {
        return "—";
    }
    if (code < 0) {
        const names = { 2: "SIGINT", 9: "SIGKILL", 15: "SIGTERM" };
        return `signal ${-code}${names[-code] ? ` (${names[-code]})` : ""}`;
    }
    return String(code);
}

// The JSON API under /api: adds the XSRF header and turns every failure
// (an error JSON, a 500, a proxy's HTML page, no network) into an ApiError
// whose message is a sentence a person can read.

let xsrf = null;
let onUnauthorized = () => {};

export class ApiError extends Error {
    constructor(status, code, message) {
        super(message);
        this.name = "ApiError";
        this.status = status;
        this.code = code;
    }
}

/** The token the server gave at sign in (or whoami); sent on every change. */
export function setXsrf(token) {
    xsrf = token || null;
}

/** Called with the error when a request answers 401 (session over). */
export function setUnauthorizedHandler(fn) {
    onUnauthorized = fn;
}

function xsrfToken() {
    if (xsrf) {
        return xsrf;
    }
    // Tornado's _xsrf cookie is readable by scripts on purpose
    const m = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : null;
}

/**
 * Call the API. Returns the parsed JSON (or text when `text` is set; or the
 * Response when `raw` is set).
 * Throws ApiError on any failure.
 */
export async function api(method, path, { body, text = false, raw = false, quiet401 = false } = {}) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" && method !== "HEAD") {
        const t = xsrfToken();
        if (t) {
            headers["X-XSRFToken"] = t;
        }
    }
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
    }
    let r;
    try {
        r = await fetch(`/api${path}`, init);
    } catch (e) {
        throw new ApiError(0, "network", "Cannot reach the supervisor; check your connection and try again.");
    }
    if (!r.ok) {
        const e = await errorOf(r);
        if (r.status === 401 && !quiet401) {
            onUnauthorized(e);
        }
        throw e;
    }
    if (raw) {
        return r;
    }
    if (text) {
        return r.text();
    }
    try {
        return await r.json();
    } catch (e) {
        throw new ApiError(r.status, "bad_reply", `The supervisor sent a reply that is not JSON (${method} ${path}).`);
    }
}

async function errorOf(r) {
    let t = "";
    try {
        t = await r.text();
    } catch (e) {
        // the body is lost; the status still says what happened
    }
    try {
        const j = JSON.parse(t);
        if (j && typeof j.message === "string") {
            return new ApiError(r.status, j.error || "error", sentence(j.message));
        }
    } catch (e) {
        // not JSON: a proxy's page, or the server fell over
    }
    if (r.status >= 500) {
        return new ApiError(
            r.status,
            "server",
            `The supervisor had a problem (HTTP ${r.status}); please try again.`,
        );
    }
    return new ApiError(r.status, "http", `The request was refused (HTTP ${r.status} ${r.statusText}).`);
}

/** Server messages are lower-case phrases; show them as sentences. */
export function sentence(m) {
    const s = m.trim();
    if (!s) {
        return s;
    }
    const c = s[0].toUpperCase() + s.slice(1);
    return /[.!?]$/.test(c) ? c : `${c}.`;
}

export const get = (path, opts) => api("GET", path, opts);
export const post = (path, body, opts) => api("POST", path, { ...opts, body: body ?? {} });
export const patch = (path, body, opts) => api("PATCH", path, { ...opts, body });
export const del = (path, opts) => api("DELETE", path, opts);

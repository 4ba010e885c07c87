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
    return errorOfText(r.status, r.statusText, t);
}

function errorOfText(status, statusText, t) {
    const r = { status, statusText };
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

/**
 * PUT `blob` to `path` with XMLHttpRequest, whose upload events give a real
 * progress: `onProgress(sentBytes)`. `headers` are added (Upload-Offset);
 * `signal` (an AbortSignal) stops it. Resolves with the parsed JSON reply;
 * rejects with an ApiError (code "network" when the connection dropped,
 * "aborted" when stopped).
 */
export function upload(path, blob, { headers = {}, onProgress, signal } = {}) {
    return new Promise((resolve, reject) => {
        const x = new XMLHttpRequest();
        x.open("PUT", `/api${path}`);
        x.setRequestHeader("Accept", "application/json");
        x.setRequestHeader("Content-Type", "application/octet-stream");
        const t = xsrfToken();
        if (t) {
            x.setRequestHeader("X-XSRFToken", t);
        }
        for (const [k, v] of Object.entries(headers)) {
            x.setRequestHeader(k, String(v));
        }
        x.upload.addEventListener("progress", (ev) => onProgress?.(ev.loaded));
        x.addEventListener("load", () => {
            if (x.status >= 200 && x.status < 300) {
                try {
                    resolve(JSON.parse(x.responseText));
                } catch (e) {
                    reject(new ApiError(x.status, "bad_reply", `The supervisor sent a reply that is not JSON (PUT ${path}).`));
                }
                return;
            }
            const e = errorOfText(x.status, x.statusText, x.responseText);
            if (x.status === 401) {
                onUnauthorized(e);
            }
            reject(e);
        });
        x.addEventListener("error", () =>
            reject(new ApiError(0, "network", "The upload was cut off (the connection dropped); what arrived is kept: resume it.")),
        );
        x.addEventListener("abort", () => reject(new ApiError(0, "aborted", "The upload was stopped; what arrived is kept: resume it.")));
        if (signal) {
            if (signal.aborted) {
                x.abort();
                return;
            }
            signal.addEventListener("abort", () => x.abort(), { once: true });
        }
        x.send(blob);
    });
}

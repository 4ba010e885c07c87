// The page's one /api/events websocket and the live state it feeds.
//
// The server sends the current state first (one "sweep" message per visible
// sweep, one "simulation" message per visible simulation, then "synced"),
// then every change. On a close the page
// says so, reconnects with exponential backoff and jitter, and resynchronises
// from the new snapshot: simulations and sweeps missing from it were deleted
// meanwhile.
// A client too slow to keep up gets "resync" and the snapshot again, in-band.
// Pushed frames and log pieces may skip (only the newest is kept for a slow
// client): the feeds see the gap by seq or offset and fetch what is missing.
// Nothing here polls.

import { get } from "./api.js";

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 8000;

export class Live {
    constructor() {
        /** id -> simulation (with its job), as last pushed */
        this.sims = new Map();
        /** id -> sweep summary, as last pushed (at most 4 a second each) */
        this.sweeps = new Map();
        this.synced = false;
        /** "idle" | "connecting" | "open" | "disconnected" | "stopped" */
        this.state = "idle";
        /** when the next reconnect is due (ms since epoch), while disconnected */
        this.retryAt = null;
        this.everSynced = false;
        this._ws = null;
        this._attempt = 0;
        this._timer = null;
        this._opened = false;
        this._seen = null;
        this._seenSweeps = null;
        this._listeners = new Map();
    }

    /** on("sim"|"job"|"sweep"|"frame"|"log"|"sign_in"|"synced"|"connection", fn): returns off(). */
    on(type, fn) {
        if (!this._listeners.has(type)) {
            this._listeners.set(type, new Set());
        }
        this._listeners.get(type).add(fn);
        return () => this._listeners.get(type).delete(fn);
    }

    _emit(type, detail) {
        for (const fn of [...(this._listeners.get(type) || [])]) {
            try {
                fn(detail);
            } catch (e) {
                // one broken view must not stop the others getting updates
                console.error(`live ${type} listener failed`, e);
            }
        }
    }

    start() {
        if (this.state === "connecting" || this.state === "open") {
            return;
        }
        this._connect();
    }

    /** Close for good (signed out). */
    stop() {
        this.state = "stopped";
        clearTimeout(this._timer);
        this._timer = null;
        if (this._ws) {
            this._ws.onclose = null;
            this._ws.close();
            this._ws = null;
        }
        this.sims.clear();
        this.sweeps.clear();
        this.synced = false;
        this.everSynced = false;
        this._emit("connection", this.state);
    }

    /** Reconnect now instead of waiting for the backoff. */
    retryNow() {
        if (this.state === "disconnected") {
            clearTimeout(this._timer);
            this._attempt = 0;
            this._connect();
        }
    }

    _connect() {
        this._timer = null;
        this.retryAt = null;
        this.state = "connecting";
        this._opened = false;
        this._emit("connection", this.state);
        const proto = location.protocol === "https:" ? "wss:" : "ws:";
        const ws = new WebSocket(`${proto}//${location.host}/api/events`);
        this._ws = ws;
        ws.onopen = () => {
            this._opened = true;
            this.state = "open";
            this.synced = false;
            this._seen = new Set();
            this._seenSweeps = new Set();
            this._emit("connection", this.state);
        };
        ws.onmessage = (ev) => {
            let m;
            try {
                m = JSON.parse(ev.data);
            } catch (e) {
                console.error("events: not JSON", ev.data);
                return;
            }
            this._handle(m);
        };
        ws.onclose = () => {
            if (this._ws !== ws) {
                return;
            }
            this._ws = null;
            this._closed();
        };
    }

    async _closed() {
        this.synced = false;
        this.state = "disconnected";
        const n = this._attempt;
        this._attempt += 1;
        const d = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** n);
        // full jitter on half the delay: a restarted server is not stampeded
        const delay = d / 2 + Math.random() * (d / 2);
        this.retryAt = Date.now() + delay;
        this._emit("connection", this.state);
        if (!this._opened) {
            // the handshake failed: the server may be down, or our session
            // over (the websocket cannot tell us which; whoami can)
            try {
                await get("/whoami");
            } catch (e) {
                if (e.status === 401) {
                    // the app's unauthorized handler signs out and stops us
                    return;
                }
            }
        }
        if (this.state !== "disconnected") {
            return;
        }
        this._timer = setTimeout(() => this._connect(), Math.max(0, this.retryAt - Date.now()));
    }

    _handle(m) {
        switch (m.type) {
            case "simulation": {
                const s = m.simulation;
                if (s.deleted) {
                    this.sims.delete(s.id);
                } else {
                    const old = this.sims.get(s.id);
                    // a simulation push without a job keeps the job we know
                    this.sims.set(s.id, { ...s, job: s.job || old?.job });
                    this._seen?.add(s.id);
                }
                this._emit("sim", { id: s.id, deleted: Boolean(s.deleted) });
                break;
            }
            case "job": {
                const s = this.sims.get(m.simulation);
                if (s) {
                    s.job = m.job;
                }
                this._emit("job", { id: m.simulation, job: m.job });
                break;
            }
            case "sweep": {
                const w = m.sweep;
                if (w.deleted) {
                    this.sweeps.delete(w.id);
                } else {
                    this.sweeps.set(w.id, w);
                    this._seenSweeps?.add(w.id);
                }
                this._emit("sweep", { id: w.id, deleted: Boolean(w.deleted), sweep: w.deleted ? null : w });
                break;
            }
            case "frame":
            case "log":
            case "sign_in":
                this._emit(m.type, m);
                break;
            case "resync": {
                // we fell too far behind: the server dropped what it had
                // queued and sends the snapshot again, as after a reconnect
                this.synced = false;
                this._seen = new Set();
                this._seenSweeps = new Set();
                this._emit("connection", this.state);
                break;
            }
            case "synced": {
                for (const id of [...this.sims.keys()]) {
                    if (!this._seen.has(id)) {
                        this.sims.delete(id);
                        this._emit("sim", { id, deleted: true });
                    }
                }
                for (const id of [...this.sweeps.keys()]) {
                    if (!this._seenSweeps.has(id)) {
                        this.sweeps.delete(id);
                        this._emit("sweep", { id, deleted: true, sweep: null });
                    }
                }
                this._seen = null;
                this._seenSweeps = null;
                this.synced = true;
                this.everSynced = true;
                this._attempt = 0;
                this._emit("synced", null);
                this._emit("connection", this.state);
                break;
            }
            default:
                console.warn("events: unknown message", m.type);
        }
    }

    /** Resolves once the current state has arrived (now, if it has). */
    whenSynced() {
        if (this.synced) {
            return Promise.resolve();
        }
        return new Promise((resolve) => {
            const off = this.on("synced", () => {
                off();
                resolve();
            });
        });
    }
}

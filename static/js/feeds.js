// A run's frames and log on the page: one fetch of what exists, then the
// pushes, joined exactly (frames by seq, log text by offset), so nothing is
// shown twice and nothing is missed. A new run (a new run id) starts over.

import { api, get } from "./api.js";

/** Log text kept on the page; the whole log is in the run's files. */
export const MAX_LOG_CHARS = 256 * 1024;
const LOG_TAIL_LINES = 2000;

export class FrameFeed {
    /**
     * @param {string} simId
     * @param {object} hooks onFrames(frames), onReset(), onError(message),
     *   runId() -> the run id the page's job has now
     */
    constructor(simId, runId, hooks) {
        this.simId = simId;
        this.hooks = hooks;
        this.runId = runId;
        this.next = 0;
        this.pending = new Map();
        this.loading = false;
        this.again = false;
        this.closed = false;
    }

    reset(runId) {
        this.runId = runId;
        this.next = 0;
        this.pending.clear();
        this.hooks.onReset();
    }

    push(seq, frame) {
        if (seq < this.next) {
            return;
        }
        this.pending.set(seq, frame);
        this._drain();
        if (this.pending.size && !this.loading) {
            // a gap: fetch what is missing
            this.sync();
        }
    }

    _drain() {
        const out = [];
        while (this.pending.has(this.next)) {
            out.push(this.pending.get(this.next));
            this.pending.delete(this.next);
            this.next += 1;
        }
        for (const k of this.pending.keys()) {
            if (k < this.next) {
                this.pending.delete(k);
            }
        }
        if (out.length) {
            this.hooks.onFrames(out);
        }
    }

    /** Fetch the frames from `next` on; coalesces concurrent calls. */
    async sync() {
        if (this.loading) {
            this.again = true;
            return;
        }
        this.loading = true;
        try {
            do {
                this.again = false;
                const since = this.next;
                const r = await get(`/simulations/${this.simId}/frames?since=${since}`);
                if (this.closed) {
                    return;
                }
                if (r.run_id !== this.runId) {
                    // the run changed under the request: if the page already
                    // knows the new run, start over with it; if not, its job
                    // push resets us and its frames arrive pushed
                    if (r.run_id && r.run_id === this.hooks.runId()) {
                        this.reset(r.run_id);
                        this.again = true;
                    }
                    continue;
                }
                r.frames.forEach((f, i) => {
                    if (since + i >= this.next) {
                        this.pending.set(since + i, f);
                    }
                });
                this._drain();
                // the server's count is the truth (a frame the agent skipped
                // leaves its seq unused for good): never wait for it
                this.next = Math.max(this.next, r.next);
                this._drain();
                // fetch again only while that brings something new
                this.again = this.again || (this.pending.size > 0 && r.frames.length > 0);
            } while (this.again && !this.closed);
        } catch (e) {
            if (e.status !== 404) {
                this.hooks.onError(`Could not load the frames: ${e.message}`);
            }
        } finally {
            this.loading = false;
        }
    }
}

export class LogFeed {
    /**
     * @param {object} hooks onText(replace, added), onError(message),
     *   runId() -> the run id the page's job has now
     */
    constructor(simId, runId, hooks) {
        this.simId = simId;
        this.hooks = hooks;
        this.runId = runId;
        this.end = 0;
        this.text = "";
        this.buffer = [];
        this.loading = false;
        this.again = false;
        this.closed = false;
    }

    reset(runId) {
        this.runId = runId;
        this.end = 0;
        this.text = "";
        this.buffer = [];
        this.hooks.onText(true, "");
    }

    push(offset, text) {
        if (this.loading) {
            this.buffer.push([offset, text]);
            return;
        }
        this._append(offset, text);
    }

    _append(offset, text) {
        if (offset > this.end) {
            // missed some: fetch the tail again
            this.sync();
            return;
        }
        const t = text.slice(this.end - offset);
        if (!t) {
            return;
        }
        this.end += t.length;
        this.text = (this.text + t).slice(-MAX_LOG_CHARS);
        this.hooks.onText(false, t);
    }

    /** Fetch the log's tail; the X-Log-End header says where it ends. */
    async sync() {
        if (this.loading) {
            this.again = true;
            return;
        }
        this.loading = true;
        try {
            do {
                this.again = false;
                const r = await api("GET", `/simulations/${this.simId}/log?tail=${LOG_TAIL_LINES}`, { raw: true });
                const text = await r.text();
                if (this.closed) {
                    return;
                }
                const runId = r.headers.get("X-Run-Id") || null;
                if (runId !== (this.runId || null)) {
                    // a new run began meanwhile (see FrameFeed.sync)
                    if (runId && runId === this.hooks.runId()) {
                        this.reset(runId);
                        this.again = true;
                    }
                    continue;
                }
                this.end = Number(r.headers.get("X-Log-End") ?? text.length);
                this.text = text.slice(-MAX_LOG_CHARS);
                this.hooks.onText(true, "");
            } while (this.again && !this.closed);
        } catch (e) {
            if (e.status !== 404) {
                this.hooks.onError(`Could not load the log: ${e.message}`);
            }
        } finally {
            this.loading = false;
        }
        for (const [o, t] of this.buffer.splice(0)) {
            this._append(o, t);
        }
    }
}

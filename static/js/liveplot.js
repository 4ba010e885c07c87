// What the plots drawn from a code's `plots` spec share (linesplot.js,
// atomsplot.js): a figure with its title and caption, the frames queued as
// they arrive and drawn together, and a start over for a new run.
//
// Frames come in bursts (a fetch of what exists, then pushes): a plot draws
// what is queued at most once per animation frame, and after a costly draw
// it waits in proportion to that cost, so a long run keeps the page
// responsive however fast its frames come.

import { fill, h } from "./dom.js";
import { loadPlotly } from "./plot.js";

/** Idle time after a draw, as a multiple of what the draw took. */
const IDLE_PER_DRAW = 3;
/** ...but never longer than this between draws. */
const MAX_IDLE_MS = 1000;

export class LivePlot {
    /**
     * @param spec one entry of the code's `plots` (title, kind, ...)
     * @param index its place in the list (the figure's id is plot-{index})
     * @param areaClass the class of the plotly container ("plot-lines", ...)
     */
    constructor(spec, index, areaClass) {
        this.spec = spec;
        this.areaClass = areaClass;
        this.body = h("div.spec-plot-body");
        this.caption = h("figcaption.plot-caption.muted");
        this.el = h(
            "figure.spec-plot",
            { id: `plot-${index}`, dataset: { kind: spec.kind } },
            h("h3.spec-plot-title", spec.title || spec.kind),
            this.body,
            this.caption,
        );
        /** frames given to this plot in the current run */
        this.frames = 0;
        /** the plotly container, once something is drawn */
        this.div = null;
        this._plotly = null;
        this._queue = [];
        this._pending = false;
        this._costMs = 0;
        this._gen = 0;
        this._closed = false;
        this.reset();
    }

    /** Whether frame `f` is one of this plot's (subclasses say). */
    wants(_f) {
        return false;
    }

    /** Forget the run's state (subclasses). */
    clear() {}

    /**
     * Draw the queued frames (subclasses).
     * @param P plotly
     * @param batch the frames, oldest first
     * @param fresh whether `this.div` is new (nothing drawn in it yet)
     */
    async draw(_P, _batch, _fresh) {}

    /** Put the plot's state in the figure's data attributes (subclasses). */
    mark() {}

    /** A new run: nothing drawn, nothing queued. */
    reset() {
        this._gen += 1;
        this._queue = [];
        this.frames = 0;
        if (this.div && this._plotly) {
            this._plotly.purge(this.div);
        }
        this.div = null;
        fill(this.body, h("div.plot-empty", "Nothing yet: this plot fills in as the run writes its output."));
        this.caption.textContent = "";
        this.clear();
        this._mark();
    }

    add(frames) {
        this._queue.push(...frames);
        this._schedule();
    }

    destroy() {
        this._closed = true;
        this._queue = [];
        if (this.div && this._plotly) {
            this._plotly.purge(this.div);
        }
    }

    _mark() {
        this.el.dataset.frames = String(this.frames);
        this.mark();
    }

    _schedule() {
        if (this._pending || this._closed) {
            return;
        }
        this._pending = true;
        const go = () => requestAnimationFrame(() => this._run());
        const idle = Math.min(MAX_IDLE_MS, this._costMs * IDLE_PER_DRAW);
        if (idle > 16) {
            setTimeout(go, idle);
        } else {
            go();
        }
    }

    async _run() {
        const gen = this._gen;
        try {
            await this._draw();
        } catch (e) {
            if (gen === this._gen && !this._closed) {
                console.error("plot", this.spec.title, e);
                this.caption.textContent = `Could not draw this plot: ${e.message}`;
            }
        } finally {
            this._pending = false;
            if (this._queue.length) {
                this._schedule();
            }
        }
    }

    async _draw() {
        if (this._closed || !this._queue.length) {
            return;
        }
        const gen = this._gen;
        let P;
        try {
            P = this._plotly || (this._plotly = await loadPlotly());
        } catch (e) {
            fill(this.body, h("p.error-text", e.message));
            return;
        }
        if (gen !== this._gen || this._closed) {
            // a new run began while plotly loaded: its frames are queued anew
            return;
        }
        const batch = this._queue.splice(0);
        const t0 = performance.now();
        let fresh = false;
        if (!this.div) {
            this.div = h("div.plot-area", {
                class: this.areaClass,
                role: "img",
                "aria-label": `${this.spec.title || this.spec.kind}: live plot of the run's output`,
            });
            fill(this.body, this.div);
            fresh = true;
        }
        await this.draw(P, batch, fresh);
        if (gen !== this._gen) {
            return;
        }
        this.frames += batch.length;
        this._costMs = performance.now() - t0;
        this._mark();
    }
}

/** A number as people read it: integers whole, others to 4 digits. */
export function fmtNum(v) {
    if (typeof v !== "number" || !Number.isFinite(v)) {
        return "?";
    }
    if (Number.isInteger(v)) {
        return v.toLocaleString();
    }
    return Math.abs(v) < 0.01 || Math.abs(v) >= 1e5 ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

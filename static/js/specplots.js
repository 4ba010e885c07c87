// The live plots of a code whose catalog entry declares `plots` (codes that
// know nothing of simvisor: their frames come from the files they write):
// one figure per entry, each drawn from the frames that are its own, so the
// GUI needs no JavaScript of its own per code.
//
// The same face as FramePlot (plot.js): `reset()` for a new run,
// `add(frames)` as they arrive, `destroy()`. The container carries
// data-frames (every frame of the run); each figure, #plot-{i} with
// data-kind, carries its own (see linesplot.js, atomsplot.js).

import { fill, h } from "./dom.js";
import { AtomsPlot } from "./atomsplot.js";
import { LinesPlot } from "./linesplot.js";

/** A spec's kind → the plot that draws it (supervisor/adapter.py PLOT_KINDS). */
const KINDS = new Map([
    ["lines", LinesPlot],
    ["scatter3d", AtomsPlot],
]);

export class SpecPlots {
    /**
     * @param el the card's plot container
     * @param caption the card's caption line
     * @param specs the code's `plots`
     */
    constructor(el, caption, specs) {
        this.el = el;
        this.caption = caption;
        this.frames = 0;
        this.plots = [];
        const unknown = [];
        specs.forEach((s, i) => {
            const Kind = KINDS.get(s.kind);
            if (Kind) {
                this.plots.push(new Kind(s, i));
            } else {
                unknown.push(s.kind);
            }
        });
        this.el.classList.add("plot-specs");
        fill(
            this.el,
            this.plots.map((p) => p.el),
            unknown.length ? h("p.muted", `This page cannot draw plots of kind ${unknown.join(", ")}.`) : null,
        );
        this._mark();
    }

    reset() {
        this.frames = 0;
        for (const p of this.plots) {
            p.reset();
        }
        this.caption.textContent = "";
        this._mark();
    }

    add(frames) {
        if (!frames.length) {
            return;
        }
        this.frames += frames.length;
        for (const p of this.plots) {
            const mine = frames.filter((f) => p.wants(f));
            if (mine.length) {
                p.add(mine);
            }
        }
        this.caption.textContent = `${this.frames.toLocaleString()} frames`;
        this._mark();
    }

    destroy() {
        for (const p of this.plots) {
            p.destroy();
        }
    }

    _mark() {
        this.el.dataset.frames = String(this.frames);
    }
}

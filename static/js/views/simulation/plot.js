// The plot card of a simulation's page (codes that make frames): the live
// plot of the current run's in situ frames, or an analysis's result. A code
// that declares `plots` gets them (specplots.js); the others the plot their
// frames say (plot.js).

import { h } from "../../dom.js";
import { FeedCard } from "./feedcard.js";
import { FrameFeed } from "../../feeds.js";
import { FramePlot } from "../../plot.js";
import { SpecPlots } from "../../specplots.js";

export class PlotCard extends FeedCard {
    /**
     * @param id the simulation's id
     * @param code the simulation's code (its kind names the card)
     * @param job the job as the page has it now
     */
    constructor({ id, code, job }) {
        super(job);
        const plotEl = h("div.plot", { id: "plot" });
        this.caption = h("p.plot-caption.muted", { id: "plot-caption" });
        this.plot = code.plots?.length ? new SpecPlots(plotEl, this.caption, code.plots) : new FramePlot(plotEl, this.caption);
        this.el = h(
            "section.card.plot-card",
            { "aria-labelledby": "plot-heading" },
            h("div.card-head", h("h2", { id: "plot-heading" }, code.kind === "analysis" ? "Result" : "Live plot"), this.caption),
            plotEl,
        );
        this.feed = new FrameFeed(id, job.run_id, {
            runId: () => this.job.run_id,
            onFrames: (fs) => this.plot.add(fs),
            onReset: () => this.plot.reset(),
            onError: (m) => {
                this.caption.textContent = m;
            },
        });
    }

    destroy() {
        super.destroy();
        this.plot.destroy();
    }

    push(m) {
        this.feed.push(m.seq, m.frame);
    }
}

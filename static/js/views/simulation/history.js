// The run history card of a simulation's page: the job's past runs.

import { fill, h } from "../../dom.js";
import { historyTable } from "../../jobview.js";

export class HistoryCard {
    constructor() {
        this.history = h("div", { id: "history" });
        this.key = null;
        this.el = h(
            "section.card.history-card",
            { "aria-labelledby": "history-heading" },
            h("div.card-head", h("h2", { id: "history-heading" }, "Run history")),
            this.history,
        );
    }

    showJob(job) {
        const hs = job.history || [];
        // progress pushes come often; the history changes only when a run ends
        const key = `${hs.length}:${hs[0]?.run_id}:${hs[0]?.status}`;
        if (key !== this.key) {
            this.key = key;
            fill(this.history, historyTable(hs));
        }
    }
}

// The log card of a simulation's page: the tail of the current run's log,
// live from the pushes, following the end unless the reader scrolled up.

import { h } from "../../dom.js";
import { FeedCard } from "./feedcard.js";
import { LogFeed, MAX_LOG_CHARS } from "../../feeds.js";

export class LogCard extends FeedCard {
    /**
     * @param id the simulation's id
     * @param job the job as the page has it now
     */
    constructor({ id, job }) {
        super(job);
        this.log = h("pre.log", { id: "log", tabindex: "0", "aria-label": "Log of the current run" });
        this.info = h("span.muted.log-info");
        this.el = h(
            "section.card.log-card",
            { "aria-labelledby": "log-heading" },
            h("div.card-head", h("h2", { id: "log-heading" }, "Log"), this.info),
            this.log,
        );
        this.feed = new LogFeed(id, job.run_id, {
            runId: () => this.job.run_id,
            onText: (replace, added) => this.render(replace, added),
            onError: (m) => {
                this.info.textContent = m;
            },
        });
        this.render(true, "");
    }

    push(m) {
        this.feed.push(m.offset, m.text);
    }

    render(replace, added = "") {
        const pre = this.log;
        // follow the end unless the reader scrolled up
        const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
        const l = this.feed;
        if (!l.text) {
            pre.textContent = this.job.status === "missing" ? "The log of a run appears here." : "No output yet.";
        } else if (replace || pre.classList.contains("log-empty") || pre.textContent.length + added.length > MAX_LOG_CHARS) {
            pre.textContent = l.text;
        } else {
            // append only the new text: cheap for long logs
            pre.append(added);
        }
        pre.classList.toggle("log-empty", !l.text);
        if (atEnd || replace) {
            pre.scrollTop = pre.scrollHeight;
        }
        const lines = l.text ? l.text.split("\n").length - (l.text.endsWith("\n") ? 1 : 0) : 0;
        this.info.textContent = l.text ? `${lines} ${lines === 1 ? "line" : "lines"}` : "";
    }
}

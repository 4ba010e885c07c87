// What the live cards of a simulation's page share (plot, log): a feed of
// the current run's pushed pieces, reset when a new run starts, synced on
// open and after a reconnect.

export class FeedCard {
    /**
     * @param job the job as the page has it now
     */
    constructor(job) {
        this.job = job;
        /** set by the card: a `FrameFeed` or a `LogFeed` (feeds.js) */
        this.feed = null;
    }

    destroy() {
        this.feed.closed = true;
    }

    /** A new run starts a new feed. */
    showJob(job) {
        this.job = job;
        if (job.run_id !== this.feed.runId) {
            this.feed.reset(job.run_id);
        }
    }

    /** Fetch what the pushes did not bring (on open, after a reconnect). */
    sync() {
        this.feed.sync();
    }
}

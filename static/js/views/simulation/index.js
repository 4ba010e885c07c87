// A simulation's page: composes its cards (title, run, plot, log, history,
// parameters, files, delete) and hands each the pushes it shows.
//
// Everything shown comes from the events websocket (and, on open or after a
// reconnect, from one fetch of what was missed), so two browsers on the same
// simulation show the same thing.

import { ACTIVE, fill, h } from "../../dom.js";
import { DeleteCard } from "./delete.js";
import { FilesCard } from "./files.js";
import { HistoryCard } from "./history.js";
import { LogCard } from "./log.js";
import { ParamsCard } from "./params.js";
import { PlotCard } from "./plot.js";
import { RunCard } from "./run.js";
import { TitleCard } from "./title.js";

export function simulationView(root, [id], ctx) {
    const { live } = ctx;
    const offs = [];
    let mounted = true;
    let page = null;

    function start() {
        if (!mounted) {
            return;
        }
        const s = live.sims.get(id);
        if (!s) {
            fill(
                root,
                h(
                    "div.page-head",
                    h("div", h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Simulations"), " / "), h("h1", "Simulation not found")),
                ),
                h(
                    "section.card",
                    h("p", `There is no simulation ${id} that you can see. It may have been deleted.`),
                    h("a.btn", { href: "#/" }, "Back to the list"),
                ),
            );
            return;
        }
        // the "Loading…" shown while waiting for the first snapshot goes
        root.replaceChildren();
        page = new SimPage(root, s, ctx);
        offs.push(
            live.on("job", (m) => m.id === id && page.onJob(m.job)),
            live.on("sim", (m) => m.id === id && page.onSim(m.deleted)),
            live.on("frame", (m) => m.simulation === id && page.plot?.push(m)),
            live.on("log", (m) => m.simulation === id && page.log.push(m)),
            live.on("synced", () => page.onSynced()),
        );
    }

    if (live.synced || live.sims.has(id)) {
        start();
    } else {
        root.append(h("p.muted.loading", "Loading…"));
        live.whenSynced().then(start);
    }
    return () => {
        mounted = false;
        offs.forEach((off) => off());
        page?.destroy();
    };
}

/** The cards of one simulation, and the simulation and job they show. */
class SimPage {
    constructor(root, sim, ctx) {
        this.ctx = ctx;
        this.id = sim.id;
        this.sim = sim;
        this.code = ctx.codes.get(sim.code) || { name: sim.code, title: sim.code, params: [], max_cores: 1, frames: false, kind: "run" };
        this.job = sim.job || { status: "missing", history: [] };
        this.deleted = false;
        const id = this.id;
        const code = this.code;
        const job = this.job;
        const onSaved = (s) => {
            this.sim = { ...this.sim, ...s };
            this.renderSim();
        };
        this.title = new TitleCard(ctx, { id, code, onSaved });
        this.run = new RunCard(ctx, { id, code, job, onStarted: (j) => this.onStarted(j) });
        this.plot = code.frames ? new PlotCard({ id, code, job }) : null;
        this.log = new LogCard({ id, job });
        this.history = new HistoryCard();
        this.params = new ParamsCard(ctx, { id, code, onSaved });
        this.files = new FilesCard(ctx, { id, job });
        this.danger = new DeleteCard(ctx, { id });
        this.deletedNote = h("div.notice.notice-warn", { hidden: true, role: "status" });
        root.append(
            this.title.el,
            this.deletedNote,
            h(
                "div.sim-grid",
                h("div.sim-main", this.plot?.el, this.log.el, this.history.el),
                h("div.sim-side", this.run.el, this.params.el, this.files.el, this.danger.el),
            ),
        );
        this.offSignIns = ctx.signins.on(() => {
            this.run.onSignIns();
            this.files.onSignIns();
        });
        this.renderSim();
        this.renderJob();
        this.plot?.sync();
        this.log.sync();
        this.files.load();
        // the elapsed time of a running job ticks on the page (no request)
        this.clock = setInterval(() => this.run.renderTimes(), 1000);
    }

    destroy() {
        clearInterval(this.clock);
        this.offSignIns();
        this.plot?.destroy();
        this.log.destroy();
    }

    renderSim() {
        for (const c of [this.title, this.params, this.danger]) {
            c.showSim(this.sim);
        }
    }

    renderJob() {
        for (const c of [this.run, this.plot, this.log, this.history, this.params, this.files, this.danger]) {
            c?.showJob(this.job, this.deleted);
        }
    }

    // --- pushes --------------------------------------------------------------

    onJob(job) {
        const was = this.job;
        this.job = job;
        this.renderJob();
        if (ACTIVE.has(was.status) !== ACTIVE.has(job.status) || was.run_id !== job.run_id) {
            // a run began or ended: its files changed
            this.files.load();
        }
    }

    /** The reply to our run request; the push usually arrives first. */
    onStarted(j) {
        if (j.run_id && j.run_id !== this.job.run_id && !ACTIVE.has(this.job.status)) {
            this.onJob(j);
        }
    }

    onSim(deleted) {
        if (deleted) {
            this.deleted = true;
            this.deletedNote.hidden = false;
            fill(this.deletedNote, "This simulation was deleted. ", h("a", { href: "#/" }, "Back to the list"));
            this.renderJob();
            this.danger.setDeleted();
            this.title.setDeleted();
            return;
        }
        const s = this.ctx.live.sims.get(this.id);
        if (s) {
            this.sim = s;
            if (s.job && s.job !== this.job) {
                this.onJob(s.job);
            }
            this.renderSim();
        }
    }

    onSynced() {
        // after a reconnect: the snapshot replaced our state; fetch what the
        // pushes we missed would have brought
        const s = this.ctx.live.sims.get(this.id);
        if (!s) {
            this.onSim(true);
            return;
        }
        this.sim = s;
        this.onJob(s.job);
        this.renderSim();
        this.plot?.sync();
        this.log.sync();
        this.files.load();
    }
}

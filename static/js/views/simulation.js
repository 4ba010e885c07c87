// A simulation's page: run and cancel, live status, progress, plot and log,
// output files, run history; rename, edit parameters, delete.
//
// Everything shown comes from the events websocket (and, on open or after a
// reconnect, from one fetch of what was missed), so two browsers on the same
// simulation show the same thing.

import { get, patch, post, del, sentence } from "../api.js";
import {
    ACTIVE,
    busy,
    confirmDialog,
    fill,
    fmtBytes,
    h,
    setStatusBadge,
    statusBadge,
} from "../dom.js";
import { FrameFeed, LogFeed, MAX_LOG_CHARS } from "../feeds.js";
import { historyTable, jobFacts, situation } from "../jobview.js";
import { fmtParam, paramFields } from "../params.js";
import { FramePlot } from "../plot.js";
import { signInHostOf, signInStatus } from "../signin.js";

const DRIVER_KEY = "simvisor.driver.";

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
            live.on("frame", (m) => m.simulation === id && page.onFrame(m)),
            live.on("log", (m) => m.simulation === id && page.onLog(m)),
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

class SimPage {
    constructor(root, sim, ctx) {
        this.root = root;
        this.ctx = ctx;
        this.sim = sim;
        this.id = sim.id;
        this.code = ctx.codes.get(sim.code) || { name: sim.code, title: sim.code, params: [], max_cores: 1, frames: false, kind: "run" };
        this.job = sim.job || { status: "missing", history: [] };
        this.deleted = false;
        this.filesLoading = false;
        /** the login node the file list needs a sign-in to, if it does */
        this.filesSignIn = null;
        this.build();
        const runId = () => this.job.run_id;
        this.frames = new FrameFeed(this.id, this.job.run_id, {
            runId,
            onFrames: (fs) => this.plot?.add(fs),
            onReset: () => this.plot?.reset(),
            onError: (m) => {
                this.el.plotCaption.textContent = m;
            },
        });
        this.log = new LogFeed(this.id, this.job.run_id, {
            runId,
            onText: (replace, added) => this.renderLog(replace, added),
            onError: (m) => {
                this.el.logInfo.textContent = m;
            },
        });
        this.offSignIns = ctx.signins.on(() => this.onSignIns());
        this.renderSim();
        this.renderJob();
        this.renderLog(true, "");
        if (this.code.frames) {
            this.frames.sync();
        }
        this.log.sync();
        this.loadFiles();
        // the elapsed time of a running job ticks on the page (no request)
        this.clock = setInterval(() => this.renderTimes(), 1000);
    }

    destroy() {
        clearInterval(this.clock);
        this.offSignIns();
        this.frames.closed = true;
        this.log.closed = true;
        this.plot?.destroy();
    }

    // --- layout --------------------------------------------------------------

    build() {
        const c = this.code;
        const maxCores = Math.max(1, Math.min(c.max_cores || 1, this.ctx.limits.max_cores || 1));
        this.maxCores = maxCores;
        this.el = {};
        const e = this.el;

        e.title = h("h1.sim-title", { id: "sim-title" });
        e.renameBtn = h("button.btn.btn-ghost.btn-sm", { type: "button", "aria-label": "Rename this simulation" }, "Rename");
        e.renameBtn.addEventListener("click", () => this.startRename());
        e.titleRow = h("div.title-row", e.title, e.renameBtn);
        e.subtitle = h("p.subtitle.muted");

        // run card
        e.badge = statusBadge(this.job.status);
        e.badge.id = "status";
        e.situation = h("span.situation", { id: "situation" });
        e.progressFill = h("div.progress-fill");
        e.progress = h(
            "div.progress",
            { id: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-labelledby": "progress-label" },
            e.progressFill,
        );
        e.progressText = h("span.progress-text", { id: "progress-label" }, "Progress");
        e.progressPct = h("span.progress-pct");
        e.facts = h("dl.facts");
        e.runError = h("p.run-error", { hidden: true, id: "run-error" });

        e.cores = h("input.input.input-cores", {
            id: "cores",
            name: "cores",
            type: "number",
            min: "1",
            max: String(maxCores),
            step: "1",
            value: String(Math.min(maxCores, this.job.cores || 1)),
            inputmode: "numeric",
            "aria-describedby": "cores-hint action-error",
        });
        e.runBtn = h("button.btn.btn-primary", { type: "submit", id: "run" }, this.code.kind === "analysis" ? "Run analysis" : "Run");
        e.cancelBtn = h("button.btn.btn-danger-outline", { type: "button", id: "cancel", "aria-label": "Cancel run" }, "Cancel");
        e.cancelBtn.addEventListener("click", () => this.cancel());
        e.actionError = h("p.form-error", { id: "action-error", role: "alert" });

        // where runs go, when there is a choice (whoami's drivers)
        const drivers = this.ctx.drivers || [];
        e.driver = null;
        if (drivers.length > 1) {
            e.driver = h(
                "select.input",
                { id: "driver", "aria-describedby": "driver-hint" },
                drivers.map((d) => h("option", { value: d }, d)),
            );
            e.driver.value = this.initialDriver(drivers);
            e.driver.addEventListener("change", () => {
                this.rememberDriver();
                this.renderSignIn();
            });
        }
        // "Signed in to X" / "Sign in to X", and a run that waits for a sign-in
        e.signIn = h("div.signin-line", { id: "signin-line", hidden: true });
        e.signInCall = h("div.signin-call", { id: "signin-call", hidden: true });
        const plan = this.ctx.user.plan;
        const coresHint =
            maxCores === 1
                ? `${c.name} runs on 1 core`
                : `1 to ${maxCores} (${c.name} uses up to ${c.max_cores}; your ${plan} plan up to ${this.ctx.limits.max_cores})`;
        e.runForm = h(
            "form.run-form",
            { novalidate: true, "aria-label": "Run" },
            e.driver
                ? h(
                      "div.field.run-on",
                      h("label", { for: "driver" }, "Run on"),
                      e.driver,
                      h("div.hint.visually-hidden", { id: "driver-hint" }, "Where the next run goes"),
                  )
                : null,
            h("div.field.field-inline", h("label", { for: "cores" }, "Cores"), e.cores, h("div.hint", { id: "cores-hint" }, coresHint)),
            h("div.run-buttons", e.runBtn, e.cancelBtn),
        );
        e.runForm.addEventListener("submit", (ev) => {
            ev.preventDefault();
            this.run();
        });

        const runCard = h(
            "section.card.run-card",
            { "aria-labelledby": "run-heading" },
            h("div.card-head", h("h2", { id: "run-heading" }, "Run"), e.badge),
            h("p.situation-line", { "aria-live": "polite" }, e.situation),
            e.signInCall,
            h("div.progress-row", e.progressText, e.progressPct),
            e.progress,
            e.runError,
            e.facts,
            e.runForm,
            e.signIn,
            e.actionError,
        );

        // plot
        let plotCard = null;
        if (c.frames) {
            e.plot = h("div.plot", { id: "plot" });
            e.plotCaption = h("p.plot-caption.muted", { id: "plot-caption" });
            this.plot = new FramePlot(e.plot, e.plotCaption);
            plotCard = h(
                "section.card.plot-card",
                { "aria-labelledby": "plot-heading" },
                h("div.card-head", h("h2", { id: "plot-heading" }, c.kind === "analysis" ? "Result" : "Live plot"), e.plotCaption),
                e.plot,
            );
        }

        // log
        e.log = h("pre.log", { id: "log", tabindex: "0", "aria-label": "Log of the current run" });
        e.logInfo = h("span.muted.log-info");
        const logCard = h(
            "section.card.log-card",
            { "aria-labelledby": "log-heading" },
            h("div.card-head", h("h2", { id: "log-heading" }, "Log"), e.logInfo),
            e.log,
        );

        // parameters
        e.params = h("div", { id: "params" });
        e.editBtn = h("button.btn.btn-sm", { type: "button", id: "edit-params", hidden: !c.params.length }, "Edit");
        e.editBtn.addEventListener("click", () => this.startEditParams());
        const paramsCard = h(
            "section.card.params-card",
            { "aria-labelledby": "params-heading" },
            h("div.card-head", h("h2", { id: "params-heading" }, "Parameters"), e.editBtn),
            e.params,
        );

        // files
        e.files = h("div", { id: "files" });
        e.filesBtn = h("button.btn.btn-ghost.btn-sm", { type: "button", "aria-label": "Refresh the file list" }, "Refresh");
        e.filesBtn.addEventListener("click", () => this.loadFiles());
        const filesCard = h(
            "section.card.files-card",
            { "aria-labelledby": "files-heading" },
            h("div.card-head", h("h2", { id: "files-heading" }, "Output files"), e.filesBtn),
            e.files,
        );

        // delete
        e.deleteBtn = h("button.btn.btn-danger-outline", { type: "button", id: "delete" }, "Delete simulation…");
        e.deleteBtn.addEventListener("click", () => this.delete());
        e.deleteError = h("p.form-error", { role: "alert" });
        const dangerCard = h(
            "section.card.danger-card",
            { "aria-labelledby": "danger-heading" },
            h("h2", { id: "danger-heading" }, "Delete"),
            h("p.muted", "Deleting cancels a run in progress and removes the simulation and all its files."),
            e.deleteBtn,
            e.deleteError,
        );

        // history
        e.history = h("div", { id: "history" });
        const historyCard = h(
            "section.card.history-card",
            { "aria-labelledby": "history-heading" },
            h("div.card-head", h("h2", { id: "history-heading" }, "Run history")),
            e.history,
        );

        e.deletedNote = h("div.notice.notice-warn", { hidden: true, role: "status" });

        this.root.append(
            h(
                "div.page-head",
                h(
                    "div.page-title",
                    h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Simulations"), " / "),
                    e.titleRow,
                    e.subtitle,
                ),
            ),
            e.deletedNote,
            h(
                "div.sim-grid",
                h("div.sim-main", plotCard, logCard, historyCard),
                h("div.sim-side", runCard, paramsCard, filesCard, dangerCard),
            ),
        );
    }

    // --- rendering -----------------------------------------------------------

    renderSim() {
        const s = this.sim;
        if (!this.renaming) {
            this.el.title.textContent = s.name;
        }
        document.title = `${s.name} · simvisor`;
        const sub = [h("span", this.code.title), " · ", h("code", s.id)];
        if (s.user !== this.ctx.user.name) {
            sub.push(" · owner ", h("strong", s.user));
        }
        fill(this.el.subtitle, sub);
        if (!this.editingParams) {
            this.renderParams();
        }
    }

    renderParams() {
        const s = this.sim;
        const known = new Map(this.code.params.map((p) => [p.name, p]));
        const names = [...new Set([...this.code.params.map((p) => p.name), ...Object.keys(s.params || {})])];
        if (!names.length) {
            fill(this.el.params, h("p.muted", "This code has no parameters."));
            return;
        }
        fill(
            this.el.params,
            h(
                "dl.param-list",
                names.map((n) => {
                    const p = known.get(n);
                    let v = fmtParam(p, s.params?.[n]);
                    if (p?.type === "simulation" && s.params?.[n]) {
                        const src = this.ctx.live.sims.get(s.params[n]);
                        v = h("a", { href: `#/sim/${s.params[n]}` }, src ? src.name : s.params[n]);
                    }
                    return h("div.param", h("dt", p?.label || n, " ", h("code.param-name", n)), h("dd", v));
                }),
            ),
        );
    }

    renderJob() {
        const j = this.job;
        const e = this.el;
        const active = ACTIVE.has(j.status);
        setStatusBadge(e.badge, j.status);
        e.badge.setAttribute("aria-label", `status: ${e.badge.textContent}`);
        fill(e.situation, situation(j));

        const pct = Math.max(0, Math.min(100, (j.progress || 0) * 100));
        e.progress.setAttribute("aria-valuenow", String(Math.round(pct)));
        e.progress.setAttribute("aria-valuetext", `${pct.toFixed(0)}%`);
        e.progressFill.style.width = `${pct}%`;
        e.progress.dataset.status = j.status;
        e.progressPct.textContent = j.status === "missing" ? "" : `${pct.toFixed(pct > 0 && pct < 10 ? 1 : 0)}%`;

        e.runError.hidden = !j.error;
        e.runError.textContent = j.error ? j.error : "";

        e.runBtn.disabled = active || this.deleted;
        e.runBtn.title = active ? "It is running: cancel it first" : "";
        e.cancelBtn.disabled = !active || this.deleted || j.situation === "canceling";
        e.cancelBtn.textContent = j.situation === "canceling" ? "Canceling…" : "Cancel";
        e.cores.disabled = active || this.deleted;
        if (e.driver) {
            e.driver.disabled = active || this.deleted;
        }
        e.runBtn.textContent = this.code.kind === "analysis" ? "Run analysis" : j.status === "missing" ? "Run" : "Run again";
        e.editBtn.disabled = active || this.deleted;
        e.editBtn.title = active ? "Parameters cannot change while it runs" : "";
        this.renderTimes();
        this.renderHistory();
        this.renderSignIn();
    }

    // --- drivers and sign-ins ---------------------------------------------------

    initialDriver(drivers) {
        let d = null;
        try {
            d = localStorage.getItem(DRIVER_KEY + this.id);
        } catch (x) {
            // storage off: the last run's driver or the default
        }
        if (drivers.includes(d)) {
            return d;
        }
        return drivers.includes(this.job.driver) ? this.job.driver : drivers[0];
    }

    rememberDriver() {
        try {
            localStorage.setItem(DRIVER_KEY + this.id, this.el.driver.value);
        } catch (x) {
            // not remembered; the default is chosen next time
        }
    }

    /** The driver of the next run (null: the server's default). */
    chosenDriver() {
        return this.el.driver ? this.el.driver.value : null;
    }

    renderSignIn() {
        const e = this.el;
        const si = this.ctx.signins;
        if (e.driver) {
            // "sbatch (perlmutter)": the login nodes runs there go to
            const names = si.list().map((x) => x.name);
            for (const o of e.driver.options) {
                o.textContent = o.value === "sbatch" && names.length ? `sbatch (${names.join(", ")})` : o.value;
            }
        }
        const j = this.job;
        const wait = si.enabled ? signInHostOf(j) : null;
        const waitSignedIn = wait && si.host(wait)?.signed_in;
        e.signInCall.hidden = !wait || this.deleted;
        if (wait) {
            const key = `${wait}:${waitSignedIn ? 1 : 0}`;
            if (key !== this._callKey) {
                this._callKey = key;
                const b = h(
                    "button.btn.btn-primary.signin-start",
                    { type: "button", id: "signin-start", dataset: { host: wait } },
                    `Sign in to ${wait} to start this run`,
                );
                b.addEventListener("click", () => this.ctx.signins.ensure(wait, b));
                fill(
                    e.signInCall,
                    h(
                        "p",
                        waitSignedIn
                            ? `You are signed in to ${wait}; this run starts as soon as your agent there is ready.`
                            : `This run waits until you sign in to ${wait}, the login node it runs on.`,
                    ),
                    waitSignedIn ? null : b,
                );
            }
        } else {
            this._callKey = null;
        }
        let names = [];
        if (si.enabled && this.chosenDriver() === "sbatch") {
            names = si.list().map((x) => x.name);
        }
        if (si.enabled && j.driver === "sbatch" && j.host && !names.includes(j.host)) {
            names.push(j.host);
        }
        if (wait && !waitSignedIn) {
            // the prominent button says it already
            names = names.filter((n) => n !== wait);
        }
        const key = names.map((n) => `${n}:${si.host(n)?.signed_in ? 1 : 0}:${si.loaded ? 1 : 0}`).join(",");
        if (key !== this._signInKey) {
            this._signInKey = key;
            e.signIn.hidden = !names.length;
            fill(e.signIn, signInStatus(si, names));
        }
    }

    onSignIns() {
        this.renderSignIn();
        const host = this.filesSignIn;
        if (host && this.ctx.signins.host(host)?.signed_in) {
            this.loadFiles();
        }
    }

    renderTimes() {
        fill(this.el.facts, jobFacts(this.job, { frames: this.code.frames }));
    }

    renderHistory() {
        const hs = this.job.history || [];
        // progress pushes come often; the history changes only when a run ends
        const key = `${hs.length}:${hs[0]?.run_id}:${hs[0]?.status}`;
        if (key !== this._historyKey) {
            this._historyKey = key;
            fill(this.el.history, historyTable(hs));
        }
    }

    // --- pushes --------------------------------------------------------------

    onJob(job) {
        const was = this.job;
        this.job = job;
        if (job.run_id !== this.frames.runId) {
            this.frames.reset(job.run_id);
        }
        if (job.run_id !== this.log.runId) {
            this.log.reset(job.run_id);
        }
        this.renderJob();
        if (ACTIVE.has(was.status) !== ACTIVE.has(job.status) || was.run_id !== job.run_id) {
            // a run began or ended: its files changed
            this.loadFiles();
        }
    }

    onSim(deleted) {
        if (deleted) {
            this.deleted = true;
            this.el.deletedNote.hidden = false;
            fill(this.el.deletedNote, "This simulation was deleted. ", h("a", { href: "#/" }, "Back to the list"));
            this.renderJob();
            this.el.deleteBtn.disabled = true;
            this.el.renameBtn.disabled = true;
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
        if (this.code.frames) {
            this.frames.sync();
        }
        this.log.sync();
        this.loadFiles();
    }

    onFrame(m) {
        if (this.plot) {
            this.frames.push(m.seq, m.frame);
        }
    }

    onLog(m) {
        this.log.push(m.offset, m.text);
    }

    // --- log ------------------------------------------------------------------

    renderLog(replace, added = "") {
        const pre = this.el.log;
        // follow the end unless the reader scrolled up
        const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
        const l = this.log;
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
        this.el.logInfo.textContent = l.text ? `${lines} ${lines === 1 ? "line" : "lines"}` : "";
    }

    // --- files -----------------------------------------------------------------

    async loadFiles() {
        if (this.filesLoading) {
            this.filesAgain = true;
            return;
        }
        this.filesLoading = true;
        try {
            do {
                this.filesAgain = false;
                const r = await get(`/simulations/${this.id}/files`);
                this.filesSignIn = null;
                this.renderFiles(r);
            } while (this.filesAgain);
        } catch (e) {
            if (e.status === 409 && e.code === "sign_in_required") {
                // the files are on a login node we are not signed in to
                const host = this.job.host || signInHostOf(this.job);
                this.filesSignIn = host;
                const b = host ? h("button.btn.btn-sm", { type: "button", id: "files-signin" }, `Sign in to ${host}`) : null;
                b?.addEventListener("click", () => this.ctx.signins.ensure(host, b));
                fill(this.el.files, h("div.files-signin", h("p", { id: "files-signin-text" }, e.message), b));
            } else if (e.status !== 404) {
                fill(this.el.files, h("p.error-text", `Could not list the files: ${e.message}`));
            }
        } finally {
            this.filesLoading = false;
        }
    }

    renderFiles(r) {
        const files = r.files || [];
        const parts = [];
        if (!files.length) {
            parts.push(h("p.muted", ACTIVE.has(this.job.status) ? "No files yet." : "No output files."));
        } else {
            parts.push(
                h(
                    "ul.file-list",
                    files.map((f) =>
                        h(
                            "li",
                            h(
                                "a",
                                {
                                    href: `/api/simulations/${this.id}/files/${f.path.split("/").map(encodeURIComponent).join("/")}`,
                                    download: f.path.split("/").pop(),
                                },
                                f.path,
                            ),
                            h("span.muted.file-meta", fmtBytes(f.size)),
                        ),
                    ),
                ),
            );
        }
        if (r.inputs?.length) {
            parts.push(h("p.muted.inputs", "Inputs: ", r.inputs.join(", ")));
        }
        fill(this.el.files, parts);
    }

    // --- actions -------------------------------------------------------------

    async run() {
        const e = this.el;
        e.actionError.textContent = "";
        const n = e.cores.value.trim() === "" ? NaN : Number(e.cores.value);
        if (!Number.isInteger(n) || n < 1 || n > this.maxCores) {
            e.actionError.textContent = sentence(`cores must be an integer from 1 to ${this.maxCores} for ${this.code.name}`);
            e.cores.setAttribute("aria-invalid", "true");
            e.cores.focus();
            return;
        }
        e.cores.removeAttribute("aria-invalid");
        await busy(
            [e.runBtn],
            async () => {
                const body = { cores: n };
                if (e.driver) {
                    body.driver = e.driver.value;
                    this.rememberDriver();
                }
                const j = await post(`/simulations/${this.id}/run`, body);
                // the push usually arrives first; this keeps us right if not
                if (j.run_id && j.run_id !== this.job.run_id && !ACTIVE.has(this.job.status)) {
                    this.onJob(j);
                }
            },
            (err) => {
                e.actionError.textContent = err.message;
            },
        );
        this.renderJob();
    }

    async cancel() {
        const e = this.el;
        e.actionError.textContent = "";
        await busy(
            [e.cancelBtn],
            () => post(`/simulations/${this.id}/cancel`),
            (err) => {
                e.actionError.textContent = err.message;
            },
        );
        this.renderJob();
    }

    startRename() {
        const e = this.el;
        this.renaming = true;
        const input = h("input.input.rename-input", {
            id: "rename",
            type: "text",
            value: this.sim.name,
            maxlength: "200",
            "aria-label": "New name",
            "aria-describedby": "rename-error",
        });
        const err = h("span.field-error", { id: "rename-error", role: "alert" });
        const save = h("button.btn.btn-primary.btn-sm", { type: "submit" }, "Save");
        const cancel = h("button.btn.btn-sm", { type: "button" }, "Cancel");
        const form = h("form.rename-form", { novalidate: true }, input, save, cancel, err);
        const done = () => {
            this.renaming = false;
            form.replaceWith(e.titleRow);
            this.renderSim();
            e.renameBtn.focus();
        };
        cancel.addEventListener("click", done);
        form.addEventListener("keydown", (ev) => {
            if (ev.key === "Escape") {
                done();
            }
        });
        form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            const n = input.value.trim();
            if (!n || n.length > 200) {
                err.textContent = "Name must be text of 1 to 200 characters.";
                input.focus();
                return;
            }
            await busy(
                [save, cancel],
                async () => {
                    const s = await patch(`/simulations/${this.id}`, { name: n });
                    this.sim = { ...this.sim, ...s };
                    done();
                },
                (x) => {
                    err.textContent = x.message;
                },
            );
        });
        e.titleRow.replaceWith(form);
        input.focus();
        input.select();
    }

    startEditParams() {
        const e = this.el;
        this.editingParams = true;
        const sims = [...this.ctx.live.sims.values()].filter((s) => s.id !== this.id && s.user === this.sim.user);
        const fields = paramFields(this.code, this.sim.params || {}, { sims });
        const err = h("p.form-error", { role: "alert" });
        const save = h("button.btn.btn-primary.btn-sm", { type: "submit" }, "Save parameters");
        const cancel = h("button.btn.btn-sm", { type: "button" }, "Cancel");
        const form = h("form.params-form", { novalidate: true, "aria-label": "Edit parameters" }, fields.el, err, h("div.actions", cancel, save));
        const done = () => {
            this.editingParams = false;
            e.editBtn.hidden = !this.code.params.length;
            this.renderParams();
            e.editBtn.focus();
        };
        cancel.addEventListener("click", done);
        form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            err.textContent = "";
            const { params, errors } = fields.read();
            fields.showErrors(errors);
            if (errors.length) {
                err.textContent = "Not saved: correct the values marked above.";
                return;
            }
            await busy(
                [save, cancel],
                async () => {
                    const s = await patch(`/simulations/${this.id}`, { params });
                    this.sim = { ...this.sim, ...s };
                    done();
                },
                (x) => {
                    const m = /\((\w+)\)/.exec(x.message);
                    if (m) {
                        fields.showErrors([{ name: m[1], message: x.message }]);
                    }
                    err.textContent = `Not saved: ${x.message}`;
                },
            );
        });
        e.editBtn.hidden = true;
        fill(e.params, form);
        form.querySelector("input, select")?.focus();
    }

    async delete() {
        const e = this.el;
        e.deleteError.textContent = "";
        const ok = await confirmDialog({
            title: `Delete “${this.sim.name}”?`,
            body: ACTIVE.has(this.job.status)
                ? "Its run is canceled, and the simulation and all its files are removed. This cannot be undone."
                : "The simulation and all its files are removed. This cannot be undone.",
            confirm: "Delete",
            danger: true,
        });
        if (!ok) {
            e.deleteBtn.focus();
            return;
        }
        await busy(
            e.deleteBtn,
            async () => {
                await del(`/simulations/${this.id}`);
                this.ctx.notify(`Deleted “${this.sim.name}”.`, "ok");
                this.ctx.router.go("/");
            },
            (x) => {
                e.deleteError.textContent = x.message;
            },
        );
    }
}

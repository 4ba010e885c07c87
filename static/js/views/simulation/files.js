// The output files card of a simulation's page: the run's files as download
// links, or a sign-in button when they sit on a login node we are not
// signed in to.

import { get } from "../../api.js";
import { ACTIVE, fill, fmtBytes, h } from "../../dom.js";
import { signInHostOf } from "../../signin.js";

export class FilesCard {
    /**
     * @param ctx the app context (the sign-ins)
     * @param id the simulation's id
     * @param job the job as the page has it now
     */
    constructor(ctx, { id, job }) {
        this.ctx = ctx;
        this.id = id;
        this.job = job;
        this.loading = false;
        this.again = false;
        /** the login node the file list needs a sign-in to, if it does */
        this.signInHost = null;
        this.files = h("div", { id: "files" });
        const refresh = h("button.btn.btn-ghost.btn-sm", { type: "button", "aria-label": "Refresh the file list" }, "Refresh");
        refresh.addEventListener("click", () => this.load());
        this.el = h(
            "section.card.files-card",
            { "aria-labelledby": "files-heading" },
            h("div.card-head", h("h2", { id: "files-heading" }, "Output files"), refresh),
            this.files,
        );
    }

    /** A run began or ended (its files changed): the caller then loads. */
    showJob(job) {
        this.job = job;
    }

    /** Signed in to the login node the files wait for: list them now. */
    onSignIns() {
        const host = this.signInHost;
        if (host && this.ctx.signins.host(host)?.signed_in) {
            this.load();
        }
    }

    async load() {
        if (this.loading) {
            this.again = true;
            return;
        }
        this.loading = true;
        try {
            do {
                this.again = false;
                const r = await get(`/simulations/${this.id}/files`);
                this.signInHost = null;
                this.render(r);
            } while (this.again);
        } catch (e) {
            if (e.status === 409 && e.code === "sign_in_required") {
                // the files are on a login node we are not signed in to
                const host = this.job.host || signInHostOf(this.job);
                this.signInHost = host;
                const b = host ? h("button.btn.btn-sm", { type: "button", id: "files-signin" }, `Sign in to ${host}`) : null;
                b?.addEventListener("click", () => this.ctx.signins.ensure(host, b));
                fill(this.files, h("div.files-signin", h("p", { id: "files-signin-text" }, e.message), b));
            } else if (e.status !== 404) {
                fill(this.files, h("p.error-text", `Could not list the files: ${e.message}`));
            }
        } finally {
            this.loading = false;
        }
    }

    render(r) {
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
        fill(this.files, parts);
    }
}

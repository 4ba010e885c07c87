// Where a simulation's next run goes, on its run card: the driver choice
// (whoami's drivers, remembered per simulation in this browser) and the
// login-node sign-ins the sbatch driver needs, with a prominent call to sign
// in while the current run waits for one (its job.wait says so).

import { ACTIVE, fill, h } from "../../dom.js";
import { signInHostOf, signInStatus } from "../../signin.js";

const DRIVER_KEY = "simvisor.driver.";

export class RunWhere {
    /**
     * @param ctx the app context (drivers, sign-ins)
     * @param id the simulation's id
     * @param job the job as the page has it now
     */
    constructor(ctx, { id, job }) {
        this.ctx = ctx;
        this.id = id;
        this.job = job;
        this.deleted = false;
        this.callKey = null;
        this.lineKey = null;
        const drivers = ctx.drivers || [];
        /** the "Run on" select, when there is a choice */
        this.driver = null;
        /** its field in the run form, or null */
        this.field = null;
        if (drivers.length > 1) {
            this.driver = h(
                "select.input",
                { id: "driver", "aria-describedby": "driver-hint" },
                drivers.map((d) => h("option", { value: d }, d)),
            );
            this.driver.value = this.initialDriver(drivers);
            this.driver.addEventListener("change", () => {
                this.remember();
                this.render();
            });
            this.field = h(
                "div.field.run-on",
                h("label", { for: "driver" }, "Run on"),
                this.driver,
                h("div.hint.visually-hidden", { id: "driver-hint" }, "Where the next run goes"),
            );
        }
        // "Signed in to X" / "Sign in to X", and a run that waits for a sign-in
        this.line = h("div.signin-line", { id: "signin-line", hidden: true });
        this.call = h("div.signin-call", { id: "signin-call", hidden: true });
    }

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

    remember() {
        if (!this.driver) {
            return;
        }
        try {
            localStorage.setItem(DRIVER_KEY + this.id, this.driver.value);
        } catch (x) {
            // not remembered; the default is chosen next time
        }
    }

    /** The driver of the next run (null: the server's default). */
    chosen() {
        return this.driver ? this.driver.value : null;
    }

    showJob(job, deleted) {
        this.job = job;
        this.deleted = deleted;
        if (this.driver) {
            this.driver.disabled = ACTIVE.has(job.status) || deleted;
        }
        this.render();
    }

    render() {
        const si = this.ctx.signins;
        if (this.driver) {
            // "sbatch (perlmutter)": the login nodes runs there go to
            const names = si.list().map((x) => x.name);
            for (const o of this.driver.options) {
                o.textContent = o.value === "sbatch" && names.length ? `sbatch (${names.join(", ")})` : o.value;
            }
        }
        const j = this.job;
        const wait = si.enabled ? signInHostOf(j) : null;
        const waitSignedIn = wait && si.host(wait)?.signed_in;
        this.renderCall(wait, waitSignedIn);
        let names = [];
        if (si.enabled && this.chosen() === "sbatch") {
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
        if (key !== this.lineKey) {
            this.lineKey = key;
            this.line.hidden = !names.length;
            fill(this.line, signInStatus(si, names));
        }
    }

    /** The call to sign in to `host`, the login node the run waits for. */
    renderCall(host, signedIn) {
        this.call.hidden = !host || this.deleted;
        if (!host) {
            this.callKey = null;
            return;
        }
        const key = `${host}:${signedIn ? 1 : 0}`;
        if (key === this.callKey) {
            return;
        }
        this.callKey = key;
        const b = h(
            "button.btn.btn-primary.signin-start",
            { type: "button", id: "signin-start", dataset: { host } },
            `Sign in to ${host} to start this run`,
        );
        b.addEventListener("click", () => this.ctx.signins.ensure(host, b));
        fill(
            this.call,
            h(
                "p",
                signedIn
                    ? `You are signed in to ${host}; this run starts as soon as your agent there is ready.`
                    : `This run waits until you sign in to ${host}, the login node it runs on.`,
            ),
            signedIn ? null : b,
        );
    }
}

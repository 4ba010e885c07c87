// Signing in to HPC login nodes (the sbatch driver): which hosts there are,
// whether this user is signed in to each (pushed), which login node a job
// waits for, and the "Sign in to X" buttons. The dialog that asks for the
// password is in signindialog.js.

import { get, post } from "./api.js";
import { h } from "./dom.js";
import { signInDialog } from "./signindialog.js";

/** The login node a queued job waits to be signed in to (its job.wait), or null. */
export function signInHostOf(job) {
    const w = job?.wait;
    return w && w.reason === "sign_in" ? w.host || null : null;
}

/** The state of the login nodes of the sbatch driver, for this user. */
export class SignIns {
    constructor(ctx) {
        this.ctx = ctx;
        /** name -> {name, address, otp, signed_in, waiting} */
        this.hosts = new Map();
        this.loaded = false;
        this._loading = null;
        this._again = false;
        this._listeners = new Set();
        this._offs = [];
    }

    /** Is there an sbatch driver at all (from whoami)? */
    get enabled() {
        return (this.ctx.drivers || []).includes("sbatch");
    }

    /** on change: fn() after any host's state changed; returns off(). */
    on(fn) {
        this._listeners.add(fn);
        return () => this._listeners.delete(fn);
    }

    _emit() {
        for (const fn of [...this._listeners]) {
            try {
                fn();
            } catch (e) {
                console.error("sign-in listener failed", e);
            }
        }
    }

    /** Follow the user's sign-ins (after the app signed in). */
    start() {
        this.stop();
        if (!this.enabled) {
            return;
        }
        const live = this.ctx.live;
        this._offs.push(
            live.on("sign_in", (m) => this._pushed(m)),
            // pushes missed while disconnected: ask once per (re)connection
            live.on("synced", () => this.refresh()),
        );
        this.refresh();
    }

    /** Forget everything (signed out of simvisor). */
    stop() {
        this._offs.forEach((off) => off());
        this._offs = [];
        this.hosts.clear();
        this.loaded = false;
    }

    host(name) {
        return this.hosts.get(name) || null;
    }

    /** The hosts, in the server's order. */
    list() {
        return [...this.hosts.values()];
    }

    /** Reload the hosts from the server; resolves when loaded (or failed). */
    refresh() {
        if (!this.enabled) {
            return Promise.resolve();
        }
        if (this._loading) {
            this._again = true;
            return this._loading;
        }
        this._loading = (async () => {
            try {
                do {
                    this._again = false;
                    const r = await get("/sbatch/hosts");
                    this.hosts = new Map((r.hosts || []).map((x) => [x.name, x]));
                    this.loaded = true;
                    this._emit();
                } while (this._again);
            } catch (e) {
                // the views say "sign in" until the server tells us otherwise
                console.warn("could not load the login nodes", e);
            } finally {
                this._loading = null;
            }
        })();
        return this._loading;
    }

    _pushed(m) {
        // an admin also gets other users' sign-in pushes: only our own count
        if (m.user !== this.ctx.user?.name) {
            return;
        }
        const x = this.hosts.get(m.host);
        if (x) {
            x.signed_in = Boolean(m.signed_in);
            this._emit();
        }
    }

    _set(name, signedIn) {
        const x = this.hosts.get(name);
        if (x) {
            x.signed_in = signedIn;
        }
        this._emit();
    }

    /**
     * Make sure the user is signed in to `name`: opens the dialog only if
     * the server says they are not. Resolves true once signed in.
     */
    async ensure(name, opener) {
        let x = this.hosts.get(name);
        if (x?.signed_in) {
            // our view may be stale: ask before saying there is nothing to do
            await this.refresh();
            x = this.hosts.get(name);
            if (x?.signed_in) {
                this.ctx.notify(`You are signed in to ${name}.`, "ok");
                return true;
            }
        }
        if (!x) {
            await this.refresh();
            x = this.hosts.get(name) || { name, address: "", otp: "prompt", signed_in: false };
        }
        return signInDialog(this, x, opener);
    }

    /** POST the credentials; the caller clears its fields. */
    async _login(host, user, password, otp) {
        const body = { host, user, password };
        if (otp !== null) {
            body.otp = otp;
        }
        const r = await post("/sbatch/login", body);
        this._set(host, Boolean(r.signed_in));
        return r;
    }
}

/**
 * A small "Signed in to X" line, or a "Sign in to X" button, per host.
 * `names` are the hosts to show; a button opens the sign-in dialog.
 */
export function signInStatus(signins, names) {
    return names.map((n) => {
        const x = signins.host(n);
        if (x?.signed_in) {
            return h("span.signin-state.is-in", { dataset: { host: n, signedIn: "true" } }, h("span.signin-dot", { "aria-hidden": "true" }), `Signed in to ${n}`);
        }
        const b = h("button.btn.btn-sm.signin-btn", { type: "button", dataset: { host: n } }, `Sign in to ${n}`);
        b.addEventListener("click", () => signins.ensure(n, b));
        return h(
            "span.signin-state.is-out",
            { dataset: { host: n, signedIn: "false" } },
            signins.loaded ? h("span.muted", `Not signed in to ${n}`) : null,
            b,
        );
    });
}

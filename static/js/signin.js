// Signing in to HPC login nodes (the sbatch driver): which hosts there are,
// whether this user is signed in to each, and the dialog that asks for the
// password (and one-time code) when, and only when, the server says so.
//
// The password and the code live only in the dialog's fields while it is
// open: they are sent once, never stored, and the fields are cleared when
// the dialog closes or the server refuses them.

import { get, post } from "./api.js";
import { h } from "./dom.js";

const USER_KEY = "simvisor.loginUser.";

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
        try {
            localStorage.setItem(USER_KEY + host, user);
        } catch (e) {
            // storage may be off; the name is typed again next time
        }
        this._set(host, Boolean(r.signed_in));
        return r;
    }
}

function rememberedUser(host) {
    try {
        return localStorage.getItem(USER_KEY + host) || "";
    } catch (e) {
        return "";
    }
}

let openDialog = null;

/** The modal sign-in dialog for login node `host`; resolves true if signed in. */
function signInDialog(signins, host, opener) {
    if (openDialog) {
        openDialog.focus();
        return Promise.resolve(false);
    }
    const name = host.name;
    const needsCode = host.otp && host.otp !== "none";
    const ids = { title: "signin-title", user: "signin-user", pass: "signin-password", otp: "signin-otp" };

    return new Promise((resolve) => {
        let done = false;
        let pending = false;
        const user = h("input.input", {
            id: ids.user,
            type: "text",
            autocomplete: "username",
            autocapitalize: "off",
            spellcheck: "false",
            required: true,
            value: rememberedUser(name),
        });
        const pass = h("input.input", {
            id: ids.pass,
            type: "password",
            autocomplete: "current-password",
            required: true,
        });
        const otp = needsCode
            ? h("input.input.input-otp", {
                  id: ids.otp,
                  type: "text",
                  inputmode: "numeric",
                  autocomplete: "off",
                  spellcheck: "false",
                  required: true,
                  "aria-describedby": "signin-otp-hint",
              })
            : null;
        const otpHint =
            host.otp === "append"
                ? `${name} checks your password and code together: if it refuses, either may be wrong.`
                : `The code from your authenticator app; ${name} asks for it after your password.`;
        const error = h("p.form-error", { id: "signin-error", role: "alert" });
        const progress = h("p.signin-progress", { id: "signin-progress", role: "status", "aria-live": "polite" });
        const submit = h("button.btn.btn-primary", { type: "submit", id: "signin-submit" }, "Sign in");
        const cancel = h("button.btn", { type: "button", id: "signin-cancel" }, "Cancel");
        const where = host.address && host.address !== name ? `${name} (${host.address})` : name;
        // method=dialog and inputs without names: a submit that slips past
        // our handler can never put the password into a URL
        const form = h(
            "form.signin-form",
            { method: "dialog", novalidate: true },
            h("h2", { id: ids.title }, `Sign in to ${name}`),
            h(
                "p.muted.signin-intro",
                "Runs on this login node go through Slurm as your user there. ",
                "Your password",
                needsCode ? " and code are" : " is",
                " sent once to start your agent, and never stored.",
            ),
            h("div.field", h("span.field-label", "Login node"), h("p.signin-host", { id: "signin-host" }, where)),
            h("div.field", h("label", { for: ids.user }, "User name"), user),
            h("div.field", h("label", { for: ids.pass }, "Password"), pass),
            needsCode
                ? h(
                      "div.field",
                      h("label", { for: ids.otp }, "One-time code"),
                      otp,
                      h("div.hint", { id: "signin-otp-hint" }, otpHint),
                  )
                : null,
            error,
            progress,
            h("div.actions", cancel, submit),
        );
        const d = h(
            "dialog.dialog.signin-dialog",
            { "aria-labelledby": ids.title, "aria-describedby": "signin-host", dataset: { host: name } },
            form,
        );

        const clearSecrets = () => {
            pass.value = "";
            if (otp) {
                otp.value = "";
            }
        };
        const setPending = (on) => {
            pending = on;
            submit.disabled = on;
            submit.setAttribute("aria-busy", on ? "true" : "false");
            user.readOnly = on;
            pass.readOnly = on;
            if (otp) {
                otp.readOnly = on;
            }
            progress.textContent = on ? `Signing in to ${name}…` : "";
            progress.classList.toggle("is-busy", on);
        };
        const finish = (ok) => {
            if (done) {
                return;
            }
            done = true;
            if (d.open) {
                d.close();
            }
            resolve(ok);
        };

        d.addEventListener("close", () => {
            clearSecrets();
            user.value = "";
            d.remove();
            openDialog = null;
            if (opener && opener.isConnected && !opener.disabled) {
                opener.focus();
            } else {
                (document.querySelector("main h1") || document.getElementById("main"))?.focus();
            }
            if (!done) {
                done = true;
                resolve(false);
            }
        });
        cancel.addEventListener("click", () => d.close());

        form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            if (pending) {
                return;
            }
            error.textContent = "";
            for (const i of [user, pass, otp]) {
                i?.removeAttribute("aria-invalid");
            }
            const u = user.value.trim();
            const missing = !u ? user : !pass.value ? pass : otp && !otp.value.trim() ? otp : null;
            if (missing) {
                missing.setAttribute("aria-invalid", "true");
                error.textContent =
                    missing === user ? "Give your user name on the login node." : missing === pass ? "Give your password." : `${name} asks for a one-time code.`;
                missing.focus();
                return;
            }
            const password = pass.value;
            const code = otp ? otp.value.trim() : null;
            setPending(true);
            try {
                await signins._login(name, u, password, code);
            } catch (e) {
                setPending(false);
                if (!d.open) {
                    // closed while waiting: say it where it is seen
                    signins.ctx.notify(`Could not sign in to ${name}: ${e.message}`);
                    return;
                }
                clearSecrets();
                error.textContent = e.message;
                const field = e.code === "bad_user" ? user : e.code === "bad_code" && otp ? otp : pass;
                const wrong = {
                    bad_user: [user],
                    bad_password: [pass],
                    bad_code: [otp],
                    bad_credentials: [pass, otp],
                }[e.code];
                for (const i of wrong || []) {
                    i?.setAttribute("aria-invalid", "true");
                }
                field.focus();
                return;
            }
            setPending(false);
            signins.ctx.notify(`Signed in to ${name}`, "ok");
            finish(true);
        });

        document.body.append(d);
        openDialog = d;
        d.showModal();
        (user.value ? pass : user).focus();
    });
}

/**
 * A small "Signed in to X" line, or a "Sign in to X" button, per host.
 * `names` are the hosts to show; `onOpen` gets the button that was pressed.
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

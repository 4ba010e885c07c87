// The dialog that signs in to an HPC login node: user name, password and,
// if the node asks for one, a one-time code, sent once when, and only when,
// the server says the user is not signed in there.
//
// The password and the code live only in the dialog's fields while it is
// open: they are sent once, never stored, and the fields are cleared when
// the dialog closes or the server refuses them. Only the user name is
// remembered (per login node, in this browser).

import { h } from "./dom.js";

const USER_KEY = "simvisor.loginUser.";

function rememberUser(host, user) {
    try {
        localStorage.setItem(USER_KEY + host, user);
    } catch (e) {
        // storage may be off; the name is typed again next time
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

/**
 * The modal sign-in dialog for login node `host` ({name, address, otp}),
 * posting through `signins._login`; resolves true if signed in.
 */
export function signInDialog(signins, host, opener) {
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
                rememberUser(name, u);
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

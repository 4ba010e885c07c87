// The page: sign-in state, header, connection banner, notices and routes.

import { get, post, setUnauthorizedHandler, setXsrf } from "./api.js";
import { busy, h } from "./dom.js";
import { Live } from "./events.js";
import { Router } from "./router.js";
import { SignIns } from "./signin.js";
import { adminView } from "./views/admin/index.js";
import { filesView } from "./views/files.js";
import { listView } from "./views/list.js";
import { loginView, logo } from "./views/login.js";
import { newView } from "./views/new.js";
import { simulationView } from "./views/simulation/index.js";
import { sweepView } from "./views/sweep/index.js";

const ctx = {
    user: null,
    limits: null,
    /** driver names runs may go to, the default first (whoami) */
    drivers: [],
    /** user role and plan names, in display order (whoami) */
    roles: [],
    plans: [],
    codes: new Map(),
    live: new Live(),
    router: null,
    notify,
    signedIn,
    signOut,
};

const $ = (id) => document.getElementById(id);

function notFoundView(root) {
    root.append(
        h("div.page-head", h("div", h("h1", "Page not found"))),
        h("section.card", h("p", "There is nothing at this address."), h("a.btn", { href: "#/" }, "Go to your simulations")),
    );
}

const router = new Router(
    [
        [/^\/login$/, loginView],
        [/^\/$/, listView],
        [/^\/new(?:\/([\w-]+))?$/, newView],
        [/^\/sim\/([0-9a-f]+)$/, simulationView],
        [/^\/sweeps\/([0-9a-f]+)$/, sweepView],
        [/^\/files$/, filesView],
        [/^\/admin$/, adminView],
    ],
    notFoundView,
);
ctx.router = router;
ctx.signins = new SignIns(ctx);

/** A notice at the top of the page: errors stay until dismissed. */
function notify(message, kind = "error") {
    const close = h("button.notice-close", { type: "button", "aria-label": "Dismiss" }, "×");
    const n = h("div.notice", { class: `notice-${kind}`, role: kind === "error" ? "alert" : "status" }, h("span", message), close);
    close.addEventListener("click", () => n.remove());
    $("notices").append(n);
    if (kind !== "error") {
        setTimeout(() => n.remove(), 4000);
    }
}

/** Take the signed-in user from whoami's (or the login's) reply. */
function applyWhoami(w) {
    setXsrf(w.xsrf);
    ctx.user = w.user;
    // the plan's limits, as the server has them (its config)
    ctx.limits = w.limits || { max_cores: 1 };
    ctx.drivers = w.drivers || [];
    ctx.roles = w.roles || [];
    ctx.plans = w.plans || [];
}

async function signedIn(w) {
    applyWhoami(w);
    const codes = await get("/codes");
    ctx.codes = new Map(codes.map((c) => [c.name, c]));
    renderHeader();
    ctx.live.start();
    ctx.signins.start();
    const next = sessionStorage.getItem("simvisor.next");
    sessionStorage.removeItem("simvisor.next");
    router.go(next && next !== "/login" ? next : "/");
}

async function signOut() {
    try {
        await post("/logout");
    } catch (e) {
        // the cookie may already be gone; we sign out on this side anyway
    }
    ended();
}

/** The session is over (signed out, or the server says 401). */
function ended(message) {
    ctx.user = null;
    ctx.limits = null;
    ctx.drivers = [];
    ctx.roles = [];
    ctx.plans = [];
    setXsrf(null);
    ctx.signins.stop();
    ctx.live.stop();
    renderHeader();
    router.go("/login");
    if (message) {
        notify(message);
    }
}

function renderHeader() {
    const u = ctx.user;
    $("nav").hidden = !u;
    $("account").hidden = !u;
    $("nav-admin").hidden = !(u && u.role === "admin");
    if (u) {
        $("account-name").textContent = u.name;
        $("account-plan").textContent = u.role === "admin" ? `${u.plan} · admin` : u.plan;
    }
}

function markNav(path) {
    const sect = path.startsWith("/admin")
        ? "admin"
        : path.startsWith("/new")
          ? "new"
          : path === "/files"
            ? "files"
            : path === "/" || path.startsWith("/sim") || path.startsWith("/sweeps")
              ? "list"
              : "";
    for (const a of document.querySelectorAll("#nav a")) {
        if (a.dataset.nav === sect) {
            a.setAttribute("aria-current", "page");
        } else {
            a.removeAttribute("aria-current");
        }
    }
    if (!path.startsWith("/sim") && !path.startsWith("/sweeps")) {
        document.title = "simvisor";
    }
}

// --- the connection banner -----------------------------------------------------

let bannerTimer = null;

function renderBanner() {
    const live = ctx.live;
    const b = $("banner");
    // for people debugging and for tests: where the live feed stands
    document.body.dataset.live = live.synced ? "synced" : live.state;
    const text = $("banner-text");
    clearInterval(bannerTimer);
    bannerTimer = null;
    if (live.state === "disconnected") {
        b.hidden = false;
        b.dataset.state = "disconnected";
        const tick = () => {
            const s = Math.max(0, Math.ceil((live.retryAt - Date.now()) / 1000));
            text.textContent = `Disconnected from the supervisor — reconnecting…${s > 0 ? ` (next try in ${s} s)` : ""}`;
        };
        tick();
        bannerTimer = setInterval(tick, 1000);
        $("banner-retry").hidden = false;
    } else if ((live.state === "open" || live.state === "connecting") && !live.synced && live.everSynced) {
        b.hidden = false;
        b.dataset.state = "connecting";
        text.textContent = "Disconnected from the supervisor — reconnecting…";
        $("banner-retry").hidden = true;
    } else {
        b.hidden = true;
        b.dataset.state = live.state;
    }
}

// --- start -----------------------------------------------------------------

async function boot() {
    $("brand-logo").append(logo());
    $("signout").addEventListener("click", (ev) => busy(ev.currentTarget, signOut));
    $("banner-retry").addEventListener("click", () => ctx.live.retryNow());
    $("skip").addEventListener("click", (ev) => {
        ev.preventDefault();
        const m = $("main");
        (m.querySelector("h1") || m).focus();
    });
    ctx.live.on("connection", renderBanner);
    setUnauthorizedHandler(() => {
        if (ctx.user) {
            ended("Your session has ended; sign in again.");
        }
    });
    ctx.onRoute = markNav;
    let w = null;
    try {
        w = await get("/whoami", { quiet401: true });
    } catch (e) {
        if (e.status !== 401) {
            $("main").append(
                h(
                    "section.card.boot-error",
                    { role: "alert" },
                    h("h1", "Cannot reach the supervisor"),
                    h("p", e.message),
                    h("button.btn.btn-primary", { type: "button", onClick: () => location.reload() }, "Try again"),
                ),
            );
            return;
        }
    }
    const before = (path) => {
        if (!ctx.user && path !== "/login") {
            sessionStorage.setItem("simvisor.next", path);
            return "/login";
        }
        if (ctx.user && path === "/login") {
            return "/";
        }
        return null;
    };
    if (w) {
        applyWhoami(w);
        try {
            const codes = await get("/codes");
            ctx.codes = new Map(codes.map((c) => [c.name, c]));
        } catch (e) {
            notify(`Could not load the code catalog: ${e.message}`);
        }
        ctx.live.start();
        ctx.signins.start();
    }
    renderHeader();
    router.start($("main"), ctx, before);
}

window.addEventListener("unhandledrejection", (ev) => {
    // nothing fails silently: an error no view handled is shown in words
    const m = ev.reason?.message || String(ev.reason);
    notify(m);
});

boot();

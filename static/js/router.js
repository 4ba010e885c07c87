// Hash routes: "#/", "#/new", "#/new/heat", "#/sim/<id>", "#/sweeps/<id>",
// "#/files", "#/admin", "#/login".
// A view is mount(root, params, ctx) -> unmount function (or nothing).

export class Router {
    constructor(routes, notFound) {
        // [[RegExp, view, title]]
        this.routes = routes;
        this.notFound = notFound;
        this._unmount = null;
        this._before = null;
    }

    /** `before(path)` may return another path (e.g. the sign-in page). */
    start(root, ctx, before) {
        this.root = root;
        this.ctx = ctx;
        this._before = before;
        window.addEventListener("hashchange", () => this.render());
        this.render();
    }

    path() {
        return location.hash.replace(/^#/, "") || "/";
    }

    go(path, { replace = false } = {}) {
        const h = `#${path}`;
        if (location.hash === h) {
            this.render();
        } else if (replace) {
            history.replaceState(null, "", h);
            this.render();
        } else {
            location.hash = h;
        }
    }

    render() {
        let p = this.path();
        const r = this._before ? this._before(p) : null;
        if (r && r !== p) {
            this.go(r, { replace: true });
            return;
        }
        if (this._unmount) {
            try {
                this._unmount();
            } catch (e) {
                console.error("unmount failed", e);
            }
            this._unmount = null;
        }
        let view = this.notFound;
        let params = [];
        for (const [re, v] of this.routes) {
            const m = p.match(re);
            if (m) {
                view = v;
                params = m.slice(1).map(decodeURIComponent);
                break;
            }
        }
        this.root.replaceChildren();
        this._unmount = view(this.root, params, this.ctx) || null;
        // move focus to the new page's heading so keyboard and screen
        // reader users start at the top of what changed
        const h1 = this.root.querySelector("h1");
        if (h1 && !this.root.contains(document.activeElement)) {
            h1.setAttribute("tabindex", "-1");
            h1.focus({ preventScroll: true });
        }
        window.scrollTo(0, 0);
        this.ctx.onRoute?.(p);
    }
}

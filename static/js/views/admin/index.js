// The admin console: composes its sections (jobs, agents, hosts,
// containers, users). Jobs are live from pushes; agents, hosts and
// containers are fetched on open and again when a push says a job started
// or ended; users on open and after each change.

import { busy, h } from "../../dom.js";
import { AgentsSection } from "./agents.js";
import { ContainersSection } from "./containers.js";
import { HostsSection } from "./hosts.js";
import { JobsSection } from "./jobs.js";
import { UsersSection } from "./users.js";

export function adminView(root, _params, ctx) {
    if (ctx.user.role !== "admin") {
        root.append(
            h("div.page-head", h("div", h("h1", "Admin console"))),
            h(
                "section.card.not-allowed",
                { role: "alert" },
                h("h2", "Not allowed"),
                h(
                    "p",
                    `The admin console is for administrators. You are signed in as ${ctx.user.name}, whose role is ${ctx.user.role}.`,
                ),
                h("a.btn", { href: "#/" }, "Back to your simulations"),
            ),
        );
        return undefined;
    }
    const { live } = ctx;
    const msg = h("div.form-error", { role: "alert", id: "admin-error" });
    const problem = (e) => {
        msg.textContent = e.message;
    };
    const jobs = new JobsSection(live, { problem });
    const agents = new AgentsSection({ problem });
    const hosts = new HostsSection({ problem });
    const containers = new ContainersSection({ problem, onKilled: () => agents.load() });
    const users = new UsersSection(ctx, { problem });
    const loadResources = () => Promise.all([agents.load(), hosts.load(), containers.load()]);

    const refresh = h("button.btn.btn-sm", { type: "button" }, "Refresh");
    refresh.addEventListener("click", () => busy(refresh, () => Promise.all([loadResources(), users.load()])));
    root.append(
        h(
            "div.page-head",
            h("div", h("h1", "Admin console"), h("p.muted", "Everyone's work, the agents that run it and the hosts it runs on.")),
            h("div.page-actions", refresh),
        ),
        msg,
        jobs.el,
        agents.el,
        hosts.el,
        containers.el,
        users.el,
    );

    // a job that starts or ends changes agents and cores: refetch, batched
    let resTimer = null;
    let lastStatuses = new Map();
    const statuses = () => new Map([...live.sims.values()].map((s) => [s.id, s.job?.status]));
    function jobChanged(m) {
        const prev = lastStatuses.get(m.id);
        lastStatuses.set(m.id, m.job.status);
        jobs.schedule();
        if (prev !== m.job.status) {
            clearTimeout(resTimer);
            resTimer = setTimeout(loadResources, 250);
        }
    }
    lastStatuses = statuses();
    const offs = [
        live.on("job", jobChanged),
        live.on("sim", () => jobs.schedule()),
        live.on("synced", () => {
            lastStatuses = statuses();
            jobs.schedule();
            loadResources();
            users.load();
        }),
    ];
    // the "Running for" column ticks
    const tick = setInterval(() => jobs.schedule(), 5000);
    jobs.render();
    loadResources();
    users.load();
    return () => {
        offs.forEach((off) => off());
        clearTimeout(resTimer);
        clearInterval(tick);
    };
}

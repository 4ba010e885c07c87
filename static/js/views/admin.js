// The admin console: every active job (cancel), agents (kill), hosts (drain),
// users (create, role, plan, new token). Jobs are live from pushes; agents
// and hosts are fetched on open and again when a push says jobs changed.

import { get, patch, post } from "../api.js";
import {
    ACTIVE,
    busy,
    confirmDialog,
    fill,
    fmtAgo,
    fmtBytes,
    fmtDuration,
    h,
    keepFocus,
    stackTable,
    statusBadge,
    timeEl,
} from "../dom.js";

const ROLES = ["user", "admin"];
const PLANS = ["basic", "premium"];

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
    const offs = [];
    const el = {
        jobs: h("div", { id: "admin-jobs" }),
        jobsCount: h("span.count-pill"),
        agents: h("div", { id: "admin-agents" }),
        agentsCount: h("span.count-pill"),
        hosts: h("div", { id: "admin-hosts" }),
        containers: h("div", { id: "admin-containers" }),
        containersCount: h("span.count-pill"),
        users: h("div", { id: "admin-users" }),
        usersCount: h("span.count-pill"),
        msg: h("div.form-error", { role: "alert", id: "admin-error" }),
        token: h("div", { id: "token-reveal" }),
    };
    const refresh = h("button.btn.btn-sm", { type: "button" }, "Refresh");
    refresh.addEventListener("click", () =>
        busy(refresh, () => Promise.all([loadAgents(), loadHosts(), loadContainers(), loadUsers()])),
    );

    const section = (id, title, count, body, extra) =>
        h(
            "section.card.card-flush.admin-section",
            { "aria-labelledby": `${id}-heading` },
            h("div.card-head.card-pad", h("h2", { id: `${id}-heading` }, title, " ", count), extra),
            body,
        );

    root.append(
        h("div.page-head", h("div", h("h1", "Admin console"), h("p.muted", "Everyone's work, the agents that run it and the hosts it runs on.")), h("div.page-actions", refresh)),
        el.msg,
        section("jobs", "Active jobs", el.jobsCount, el.jobs),
        section("agents", "Agents and containers", el.agentsCount, el.agents),
        section("hosts", "Hosts", null, el.hosts),
        (el.containersSection = section("containers", "Containers", el.containersCount, el.containers)),
        section("users", "Users", el.usersCount, h("div", el.token, newUserForm(), el.users)),
    );

    const problem = (e) => {
        el.msg.textContent = e.message;
    };

    // --- jobs: live ----------------------------------------------------------

    let jobsPending = false;
    function scheduleJobs() {
        if (!jobsPending) {
            jobsPending = true;
            requestAnimationFrame(() => {
                jobsPending = false;
                keepFocus(el.jobs, renderJobs);
            });
        }
    }

    function renderJobs() {
        const sims = [...live.sims.values()]
            .filter((s) => s.job && ACTIVE.has(s.job.status))
            .sort((a, b) => (a.job.queued_at || 0) - (b.job.queued_at || 0));
        el.jobsCount.textContent = String(sims.length);
        if (!sims.length) {
            fill(el.jobs, h("p.muted.card-pad", "No job is queued, running or lost."));
            return;
        }
        fill(
            el.jobs,
            table(
                "Every queued, starting, running or lost job",
                ["User", "Simulation", "Status", "Where", "Cores", "Queued", "Running for", ""],
                sims.map((s) => {
                    const j = s.job;
                    const cancel = h(
                        "button.btn.btn-sm.btn-danger-outline",
                        { type: "button", "aria-label": `Cancel ${s.user}'s ${s.name}`, dataset: { key: `cancel-${s.id}` } },
                        j.situation === "canceling" ? "Canceling…" : "Cancel",
                    );
                    cancel.disabled = j.situation === "canceling";
                    cancel.addEventListener("click", () =>
                        busy(cancel, () => post(`/admin/jobs/${s.id}/cancel`), problem),
                    );
                    return h(
                        "tr",
                        { dataset: { sim: s.id } },
                        h("td", s.user),
                        h("td", h("a", { href: `#/sim/${s.id}` }, s.name), h("div.sub.muted", s.code)),
                        h("td", statusBadge(j.status), j.situation ? h("div.sub.muted", j.situation) : null),
                        h("td", [j.driver, j.host].filter(Boolean).join(" · ") || "—"),
                        h("td.num", String(j.cores)),
                        h("td", timeEl(j.queued_at)),
                        h("td", j.started_at ? fmtDuration(Date.now() / 1000 - j.started_at) : "—"),
                        h("td.actions-cell", cancel),
                    );
                }),
            ),
        );
    }

    // --- agents and hosts: fetched when jobs change ------------------------------

    async function loadAgents() {
        try {
            renderAgents(await get("/admin/agents"));
        } catch (e) {
            fill(el.agents, h("p.error-text.card-pad", `Could not load the agents: ${e.message}`));
        }
    }

    function renderAgents(agents) {
        el.agentsCount.textContent = String(agents.length);
        if (!agents.length) {
            fill(el.agents, h("p.muted.card-pad", "No agent is running. One starts when a user's job is next."));
            return;
        }
        fill(
            el.agents,
            table(
                "Agents",
                ["Agent", "User", "Where", "State", "Connected", "Last message", "Runs", ""],
                agents.map((a) => {
                    const kill = h("button.btn.btn-sm.btn-danger-outline", { type: "button", "aria-label": `Kill agent ${a.id}` }, "Kill");
                    kill.addEventListener("click", async () => {
                        const ok = await confirmDialog({
                            title: `Kill agent ${a.id}?`,
                            body: `It runs ${a.runs.length} ${a.runs.length === 1 ? "run" : "runs"} for ${a.user}; they end canceled.`,
                            confirm: "Kill agent",
                            danger: true,
                        });
                        if (ok) {
                            await busy(kill, () => post(`/admin/agents/${encodeURIComponent(a.id)}/kill`), problem);
                            loadAgents();
                        }
                    });
                    return h(
                        "tr",
                        h("td", h("code.nowrap", a.id), a.container_id ? h("div.sub.muted", `container ${a.container_id.slice(0, 12)}`) : a.pid ? h("div.sub.muted", `pid ${a.pid}`) : null),
                        h("td", a.user),
                        h("td", [a.driver, a.host].filter(Boolean).join(" · ")),
                        h("td", h("span.state", { class: `state-${a.state}` }, a.state)),
                        h("td", timeEl(a.connected_since)),
                        h("td", a.last_message_at ? fmtAgo(a.last_message_at) : "—"),
                        h("td", a.runs.length ? a.runs.map((r) => h("code.run-id.block", r)) : h("span.muted", "idle")),
                        h("td.actions-cell", kill),
                    );
                }),
            ),
        );
    }

    async function loadHosts() {
        try {
            renderHosts(await get("/admin/hosts"));
        } catch (e) {
            fill(el.hosts, h("p.error-text.card-pad", `Could not load the hosts: ${e.message}`));
        }
    }

    function renderHosts(hosts) {
        if (!hosts.length) {
            fill(el.hosts, h("p.muted.card-pad", "No host is configured."));
            return;
        }
        fill(
            el.hosts,
            table(
                "Hosts",
                ["Host", "Cores used", "Cores", ""],
                hosts.map((t) => {
                    const b = h("button.btn.btn-sm", { type: "button", "aria-label": `${t.draining ? "Undrain" : "Drain"} ${t.name}` }, t.draining ? "Undrain" : "Drain");
                    b.addEventListener("click", () =>
                        busy(
                            b,
                            async () => renderHostsAfter(await post(`/admin/hosts/${encodeURIComponent(t.name)}/drain`, { drain: !t.draining })),
                            problem,
                        ),
                    );
                    const pct = t.cores ? Math.min(100, (100 * t.cores_used) / t.cores) : 0;
                    return h(
                        "tr",
                        h("td", h("strong", t.name), t.draining ? h("span.tag.tag-warn", "draining") : null),
                        h(
                            "td.cores-cell",
                            h(
                                "div.mini-bar.wide",
                                { role: "meter", "aria-valuemin": "0", "aria-valuemax": String(t.cores), "aria-valuenow": String(t.cores_used), "aria-label": `${t.name} cores used` },
                                h("span.mini-fill", { style: { width: `${pct}%` } }),
                            ),
                        ),
                        h("td.nowrap", `${t.cores_used} of ${t.cores} · ${t.cores_free} free`),
                        h("td.actions-cell", b),
                    );
                }),
            ),
        );
    }

    // containers exist only with the docker driver: the section shows then
    el.containersSection.hidden = true;

    async function loadContainers() {
        let cs;
        try {
            cs = await get("/admin/containers");
        } catch (e) {
            if (e.status === 404) {
                el.containersSection.hidden = true;
                return;
            }
            el.containersSection.hidden = false;
            fill(el.containers, h("p.error-text.card-pad", `Could not list the containers: ${e.message}`));
            return;
        }
        el.containersSection.hidden = !cs.length;
        el.containersCount.textContent = String(cs.length);
        fill(
            el.containers,
            table(
                "Containers",
                ["Container", "Host", "User", "State", "CPU", "Memory", ""],
                cs.map((c) => {
                    let kill = null;
                    if (c.id) {
                        kill = h("button.btn.btn-sm.btn-danger-outline", { type: "button", "aria-label": `Kill container ${c.id.slice(0, 12)}` }, "Kill");
                        kill.addEventListener("click", async () => {
                            const ok = await confirmDialog({
                                title: `Kill container ${c.id.slice(0, 12)}?`,
                                body: `It belongs to ${c.user || "no user"}${c.agent ? ` (agent ${c.agent})` : ""}; its runs end canceled.`,
                                confirm: "Kill container",
                                danger: true,
                            });
                            if (ok) {
                                await busy(kill, () => post(`/admin/containers/${c.id}/kill`), problem);
                                loadContainers();
                                loadAgents();
                            }
                        });
                    }
                    const mem =
                        typeof c.mem_bytes === "number"
                            ? `${fmtBytes(c.mem_bytes)}${c.mem_limit_bytes ? ` of ${fmtBytes(c.mem_limit_bytes)}` : ""}`
                            : "—";
                    return h(
                        "tr",
                        h("td", c.id ? h("code.nowrap", c.id.slice(0, 12)) : "—", c.agent ? h("div.sub.muted", c.agent) : null),
                        h("td", c.host || "—"),
                        h("td", c.user || "—"),
                        h("td", c.error ? h("span.error-text", c.error) : c.state || "—", c.exit_code !== null && c.exit_code !== undefined ? h("div.sub.muted", `exit code ${c.exit_code}`) : null),
                        h("td", typeof c.cpu_cores === "number" ? `${c.cpu_cores.toFixed(2)} cores` : "—"),
                        h("td", mem),
                        h("td.actions-cell", kill),
                    );
                }),
            ),
        );
    }

    function renderHostsAfter() {
        return loadHosts();
    }

    // --- users ---------------------------------------------------------------

    function newUserForm() {
        const name = h("input.input", {
            id: "new-user-name",
            type: "text",
            autocomplete: "off",
            spellcheck: "false",
            placeholder: "lower-case letters, digits, _ or -",
            "aria-describedby": "new-user-error",
        });
        const role = h("select.input", { id: "new-user-role" }, ROLES.map((r) => h("option", { value: r }, r)));
        const plan = h("select.input", { id: "new-user-plan" }, PLANS.map((p) => h("option", { value: p }, p)));
        const err = h("p.form-error", { id: "new-user-error", role: "alert" });
        const submit = h("button.btn.btn-primary", { type: "submit" }, "Create user");
        const form = h(
            "form.new-user.card-pad",
            { novalidate: true, "aria-label": "Create a user" },
            h("div.field", h("label", { for: "new-user-name" }, "New user"), name),
            h("div.field", h("label", { for: "new-user-role" }, "Role"), role),
            h("div.field", h("label", { for: "new-user-plan" }, "Plan"), plan),
            h("div.field.field-submit", submit),
            err,
        );
        form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            err.textContent = "";
            const n = name.value.trim();
            if (!/^[a-z][a-z0-9_-]{0,31}$/.test(n)) {
                err.textContent = "User name: lower-case letters, digits, _ or -, up to 32.";
                name.focus();
                return;
            }
            await busy(
                submit,
                async () => {
                    const u = await post("/admin/users", { name: n, role: role.value, plan: plan.value });
                    name.value = "";
                    showToken(u.name, u.token, "created");
                    await loadUsers();
                },
                (e) => {
                    err.textContent = e.message;
                },
            );
        });
        return form;
    }

    function showToken(name, token, what) {
        const code = h("code.token", { id: "new-token", tabindex: "0" }, token);
        const copy = h("button.btn.btn-sm", { type: "button" }, "Copy");
        const status = h("span.muted", { role: "status" });
        copy.addEventListener("click", async () => {
            try {
                await navigator.clipboard.writeText(token);
            } catch (e) {
                // no clipboard API (plain http): select it for Ctrl+C
                const r = document.createRange();
                r.selectNodeContents(code);
                const s = getSelection();
                s.removeAllRanges();
                s.addRange(r);
                document.execCommand?.("copy");
            }
            status.textContent = "Copied.";
        });
        const close = h("button.btn.btn-ghost.btn-sm", { type: "button", "aria-label": "Hide the token" }, "Done");
        close.addEventListener("click", () => fill(el.token));
        fill(
            el.token,
            h(
                "div.token-box.card-pad",
                { role: "region", "aria-label": `Token for ${name}` },
                h("p", h("strong", `User ${name} ${what}.`), " Copy the token now: it is not shown again."),
                h("div.token-row", code, copy, close, status),
            ),
        );
        code.focus();
    }

    async function loadUsers() {
        try {
            renderUsers(await get("/admin/users"));
        } catch (e) {
            fill(el.users, h("p.error-text.card-pad", `Could not load the users: ${e.message}`));
        }
    }

    function renderUsers(users) {
        el.usersCount.textContent = String(users.length);
        fill(
            el.users,
            table(
                "Users",
                ["Name", "Role", "Plan", "Tokens", "Created", ""],
                users.map((u) => {
                    const role = h(
                        "select.input.input-sm",
                        { "aria-label": `Role of ${u.name}`, dataset: { user: u.name, field: "role" } },
                        ROLES.map((r) => h("option", { value: r, selected: r === u.role }, r)),
                    );
                    const plan = h(
                        "select.input.input-sm",
                        { "aria-label": `Plan of ${u.name}`, dataset: { user: u.name, field: "plan" } },
                        PLANS.map((p) => h("option", { value: p, selected: p === u.plan }, p)),
                    );
                    for (const s of [role, plan]) {
                        s.addEventListener("change", () =>
                            busy(
                                [role, plan],
                                async () => {
                                    await patch(`/admin/users/${u.name}`, { [s.dataset.field]: s.value });
                                    ctx.notify(`${u.name}: ${s.dataset.field} is now ${s.value}.`, "ok");
                                    await loadUsers();
                                },
                                (e) => {
                                    problem(e);
                                    loadUsers();
                                },
                            ),
                        );
                    }
                    const tok = h("button.btn.btn-sm", { type: "button", "aria-label": `New token for ${u.name}` }, "New token");
                    tok.addEventListener("click", () =>
                        busy(
                            tok,
                            async () => {
                                const r = await patch(`/admin/users/${u.name}`, { new_token: true });
                                showToken(u.name, r.token, "has a new token");
                                await loadUsers();
                            },
                            problem,
                        ),
                    );
                    const revoke = h(
                        "button.btn.btn-sm.btn-danger-outline",
                        { type: "button", "aria-label": `Revoke ${u.name}'s tokens`, disabled: !u.tokens },
                        "Revoke",
                    );
                    revoke.addEventListener("click", async () => {
                        const ok = await confirmDialog({
                            title: `Revoke ${u.name}'s tokens?`,
                            body: `All ${u.tokens} of ${u.name}'s tokens stop working and every browser signed in as ${u.name} is signed out. Give a new token afterwards.`,
                            confirm: "Revoke tokens",
                            danger: true,
                        });
                        if (ok) {
                            await busy(
                                revoke,
                                async () => {
                                    await patch(`/admin/users/${u.name}`, { revoke_tokens: true });
                                    ctx.notify(`${u.name}'s tokens are revoked.`, "ok");
                                    await loadUsers();
                                },
                                problem,
                            );
                        }
                    });
                    return h(
                        "tr",
                        { dataset: { user: u.name } },
                        h("td", h("strong", u.name), u.name === ctx.user.name ? h("span.tag", "you") : null),
                        h("td", role),
                        h("td", plan),
                        h("td.num", String(u.tokens)),
                        h("td", timeEl(u.created)),
                        h("td.actions-cell", h("span.btn-row", tok, revoke)),
                    );
                }),
            ),
        );
    }

    // a job that starts or ends changes agents and cores: refetch, batched
    let resTimer = null;
    let lastStatuses = new Map();
    function jobChanged(m) {
        const prev = lastStatuses.get(m.id);
        lastStatuses.set(m.id, m.job.status);
        scheduleJobs();
        if (prev !== m.job.status) {
            clearTimeout(resTimer);
            resTimer = setTimeout(() => {
                loadAgents();
                loadHosts();
                loadContainers();
            }, 250);
        }
    }
    for (const s of live.sims.values()) {
        lastStatuses.set(s.id, s.job?.status);
    }
    offs.push(
        live.on("job", jobChanged),
        live.on("sim", scheduleJobs),
        live.on("synced", () => {
            lastStatuses = new Map([...live.sims.values()].map((s) => [s.id, s.job?.status]));
            scheduleJobs();
            loadAgents();
            loadHosts();
            loadContainers();
            loadUsers();
        }),
    );
    const tick = setInterval(scheduleJobs, 5000);
    renderJobs();
    loadAgents();
    loadHosts();
    loadContainers();
    loadUsers();
    return () => {
        offs.forEach((off) => off());
        clearTimeout(resTimer);
        clearInterval(tick);
    };
}

function table(caption, heads, rows) {
    return stackTable(caption, heads, rows);
}

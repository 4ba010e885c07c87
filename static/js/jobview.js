// A job in words and tables: its situation, its facts, its run history.

import { ACTIVE, fmtDuration, fmtExit, h, stackTable, statusBadge, timeEl } from "./dom.js";

/** Slurm's view of a batch job: "Slurm job 12 · RUNNING (Resources)". */
export function batchText(b) {
    if (!b) {
        return "";
    }
    if (!b.job_id) {
        return "Slurm job: being submitted";
    }
    if (!b.state || b.state === "UNKNOWN") {
        const why = b.reason && b.reason !== "None" ? ` · ${b.reason}` : "";
        return `Slurm job ${b.job_id} · Slurm not answering (state unknown)${why}`;
    }
    const reason = b.reason && b.reason !== "None" ? ` (${b.reason})` : "";
    return `Slurm job ${b.job_id} · ${b.state}${reason}`;
}

/** What the job is doing, in words. */
export function situation(j) {
    const where = [j.driver, j.host].filter(Boolean).join(" · ") || "its host";
    if (j.canceling && ACTIVE.has(j.status)) {
        return "Canceling…";
    }
    switch (j.status) {
        case "missing":
            return "Never run.";
        case "queued": {
            // the server's sentence says why it waits (job.wait has the code)
            const parts = [j.situation ? cap(j.situation) : "Queued"];
            if (j.queue_position) {
                parts.push(`queue position ${j.queue_position}`);
            }
            return parts.join(" · ");
        }
        case "starting":
            return j.situation ? cap(j.situation) : "Starting";
        case "running":
            if (j.batch && j.batch.state !== "RUNNING") {
                // handed to Slurm, which has not started it (or cannot say)
                return `Submitted to ${where}: ${batchText(j.batch)}`;
            }
            return `Running on ${where} with ${j.cores} ${j.cores === 1 ? "core" : "cores"}`;
        case "lost":
            return "Lost contact with its agent; waiting for it to come back";
        case "completed":
            return "Completed";
        case "canceled":
            return "Canceled";
        case "timed_out":
            return "Stopped: it reached the maximum run time";
        case "error":
            return j.exit_code !== null && j.exit_code !== undefined
                ? `Failed (exit code ${fmtExit(j.exit_code)})`
                : "Failed";
        default:
            return j.status;
    }
}

function cap(s) {
    return s ? s[0].toUpperCase() + s.slice(1) : s;
}

/** The facts of the current run (times, cores, where, exit code, run id). */
export function jobFacts(j, { frames = false } = {}) {
    if (j.status === "missing") {
        return h("p.muted.facts-empty", "Not run yet. Choose the cores and press Run.");
    }
    const now = Date.now() / 1000;
    const rows = [];
    const add = (k, v, wide) => rows.push(h("div.fact", { class: wide ? "fact-wide" : "" }, h("dt", k), h("dd", v)));
    add("Queued", timeEl(j.queued_at));
    add("Started", timeEl(j.started_at));
    if (j.ended_at) {
        add("Ended", timeEl(j.ended_at));
    }
    let d = null;
    if (j.started_at) {
        d = (j.ended_at || now) - j.started_at;
    } else if (j.queued_at && ACTIVE.has(j.status)) {
        d = now - j.queued_at;
    }
    add(j.started_at ? (j.ended_at ? "Duration" : "Running for") : "Waiting for", fmtDuration(d));
    add("Cores", String(j.cores ?? "—"));
    add("Where", [j.driver, j.host].filter(Boolean).join(" · ") || "—");
    if (j.batch) {
        rows.push(
            h(
                "div.fact.fact-wide",
                h("dt", "Batch job"),
                h("dd", { id: "batch", dataset: { state: j.batch.state || "UNKNOWN" } }, batchText(j.batch)),
            ),
        );
    }
    if (j.exit_code !== null && j.exit_code !== undefined) {
        add("Exit code", fmtExit(j.exit_code));
    }
    if (frames) {
        add("Frames", String(j.frames ?? 0));
    }
    add("Run id", h("code.run-id", j.run_id || "—"), true);
    return rows;
}

/** Past runs, newest first: start, end, duration, status, cores, driver, error. */
export function historyTable(history) {
    if (!history.length) {
        return h("p.muted", "No finished runs yet.");
    }
    const heads = ["Start", "End", "Duration", "Status", "Cores", "Driver", "Error"];
    const rows = history.map((r) =>
        h(
            "tr",
            h("td", timeEl(r.started_at || r.queued_at)),
            h("td", timeEl(r.ended_at)),
            h("td", r.started_at ? fmtDuration(r.ended_at - r.started_at) : h("span.muted", "never started")),
            h("td", statusBadge(r.status)),
            h("td.num", String(r.cores ?? "—")),
            h("td", [r.driver, r.host].filter(Boolean).join(" · ") || "—"),
            h(
                "td.error-cell",
                r.error
                    ? h("span", { title: r.error }, r.error)
                    : r.status === "error" && r.exit_code !== null
                      ? `exit code ${fmtExit(r.exit_code)}`
                      : h("span.muted", "—"),
            ),
        ),
    );
    return stackTable("Past runs, newest first", heads, rows, "history-table");
}

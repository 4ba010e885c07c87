// The user's file library, for the Files page and the file parameters of the
// new-simulation form: the list, the glob match of a parameter's patterns,
// and an upload with a real progress bar that resumes where a dropped one
// stopped (GET .../upload says how much arrived; the rest goes with
// Upload-Offset).

import { ApiError, get, sentence, upload } from "./api.js";
import { confirmDialog, fmtBytes, h, uid } from "./dom.js";

/** The path of a library file under /api. */
export const libraryPath = (name) => `/library/${encodeURIComponent(name)}`;

/** The user's files: [{name, size, sha256, uploaded, used_by}], by name. */
export function listLibrary() {
    return get("/library");
}

/**
 * Whether `name` matches the shell pattern `pat` as Python's
 * fnmatch.fnmatchcase does (the server's check): `*`, `?`, `[seq]`, `[!seq]`.
 */
export function globMatch(name, pat) {
    let re = "";
    let i = 0;
    while (i < pat.length) {
        const c = pat[i];
        i += 1;
        if (c === "*") {
            re += "[\\s\\S]*";
        } else if (c === "?") {
            re += "[\\s\\S]";
        } else if (c === "[") {
            let j = i;
            if (pat[j] === "!") {
                j += 1;
            }
            if (pat[j] === "]") {
                j += 1;
            }
            while (j < pat.length && pat[j] !== "]") {
                j += 1;
            }
            if (j >= pat.length) {
                re += "\\[";
            } else {
                let set = pat.slice(i, j).replace(/\\/g, "\\\\");
                i = j + 1;
                if (set[0] === "!") {
                    set = `^${set.slice(1)}`;
                } else if (set[0] === "^") {
                    set = `\\${set}`;
                }
                re += `[${set}]`;
            }
        } else {
            re += c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
        }
    }
    return new RegExp(`^${re}$`, "u").test(name);
}

/** A file parameter's value naming a file the site provides (its `site`). */
export const SITE_PREFIX = "site/";

/** Whether `name` fits a file parameter's `patterns` (none: any name). */
export function fitsParam(p, name) {
    return !p.patterns?.length || p.patterns.some((x) => globMatch(name, x));
}

/** Asks before an upload replaces a file of that name; true to go on. */
export async function confirmReplace(name, files) {
    if (!files.some((f) => f.name === name)) {
        return true;
    }
    return confirmDialog({
        title: `Replace ${name}?`,
        body: `Your library has a file named ${name}; the upload replaces it for new runs.`,
        confirm: "Replace",
        danger: true,
    });
}

const RESUME_TRIES = 15;
const RESUME_WAIT_MS = 200;

/**
 * An upload's progress bar, its figures, Stop and Resume.
 * `onDone(entry)` gets the library entry the server saved.
 */
export class Uploader {
    constructor({ id = uid("upload"), onDone = () => {} } = {}) {
        this.onDone = onDone;
        this.name = null;
        this.file = null;
        this.abort = null;
        this.label = h("span.progress-text", { id: `${id}-label` });
        this.pct = h("span.progress-pct");
        this.fill = h("div.progress-fill");
        this.bar = h(
            "div.progress",
            { id: `${id}-progress`, role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0", "aria-labelledby": `${id}-label` },
            this.fill,
        );
        this.figures = h("span.muted.upload-figures", { id: `${id}-figures` });
        this.stopBtn = h("button.btn.btn-sm", { type: "button", hidden: true }, "Stop");
        this.resumeBtn = h("button.btn.btn-sm.btn-primary", { type: "button", hidden: true }, "Resume");
        this.error = h("p.form-error", { id: `${id}-error`, role: "alert" });
        this.stopBtn.addEventListener("click", () => this.abort?.abort());
        this.resumeBtn.addEventListener("click", () => this.resume());
        this.el = h(
            "div.uploader",
            { hidden: true },
            h("div.progress-row", this.label, this.pct),
            this.bar,
            h("div.upload-line", this.figures, h("span.btn-row", this.stopBtn, this.resumeBtn)),
            this.error,
        );
    }

    /** Whether an upload is on its way. */
    get busy() {
        return this.abort !== null;
    }

    /**
     * Upload `file` as `name`, refused here first if it is over the plan's
     * file size or does not fit the quota (`usedBytes`: what the library
     * holds without a file this one replaces).
     */
    start(name, file, { limits = {}, usedBytes = 0 } = {}) {
        this.name = name;
        this.file = file;
        this.el.hidden = false;
        this.error.textContent = "";
        const max = limits.max_library_file_bytes;
        const quota = limits.max_library_bytes;
        if (max !== undefined && file.size > max) {
            return this.failed(new ApiError(413, "file_too_large", sentence(`${file.size} bytes (${fmtBytes(file.size)}): the plan takes files of at most ${max} bytes (${fmtBytes(max)})`)), false);
        }
        if (quota !== undefined && usedBytes + file.size > quota) {
            return this.failed(
                new ApiError(413, "quota_exceeded", sentence(`your library holds ${usedBytes} bytes of the plan's ${quota}: ${file.size} more do not fit`)),
                false,
            );
        }
        return this.send(0);
    }

    /** Ask how much of the dropped upload arrived, and send the rest. */
    async resume() {
        this.resumeBtn.hidden = true;
        this.error.textContent = "";
        this.state("resuming");
        // a connection that just dropped may not be over on the server yet
        for (let i = 0; ; i += 1) {
            try {
                const r = await get(`${libraryPath(this.name)}/upload`);
                return await this.send(r.received);
            } catch (e) {
                const early = e.code === "no_upload" || e.code === "upload_in_progress";
                if (!early || i >= RESUME_TRIES) {
                    return this.failed(e, e.code !== "no_upload");
                }
                await new Promise((res) => setTimeout(res, RESUME_WAIT_MS));
            }
        }
    }

    async send(offset) {
        const total = this.file.size;
        this.abort = new AbortController();
        this.stopBtn.hidden = false;
        this.resumeBtn.hidden = true;
        this.label.textContent = offset ? `Resuming ${this.name} from ${fmtBytes(offset)}` : `Uploading ${this.name}`;
        this.state("uploading");
        this.show(offset, total);
        try {
            const e = await upload(libraryPath(this.name), this.file.slice(offset), {
                headers: offset ? { "Upload-Offset": offset } : {},
                onProgress: (n) => this.show(offset + n, total),
                signal: this.abort.signal,
            });
            this.abort = null;
            this.stopBtn.hidden = true;
            this.show(total, total);
            this.label.textContent = `Uploaded ${e.name}`;
            this.figures.textContent = `${fmtBytes(e.size)} · SHA-256 ${e.sha256.slice(0, 12)}…`;
            this.state("done");
            this.onDone(e);
            return e;
        } catch (e) {
            return this.failed(e, true);
        }
    }

    /** Show why it failed; a drop, a stop or a server fault can be resumed. */
    failed(e, resumable) {
        this.abort = null;
        this.stopBtn.hidden = true;
        const canResume = resumable && this.file && (e.status === 0 || e.status >= 500 || e.code === "upload_offset");
        this.resumeBtn.hidden = !canResume;
        this.error.textContent = e.code === "aborted" || e.code === "network" ? e.message : `Not uploaded: ${e.message}`;
        this.state(e.code === "aborted" ? "stopped" : "failed");
        return null;
    }

    show(sent, total) {
        const pct = total ? Math.floor((sent / total) * 100) : 100;
        this.bar.setAttribute("aria-valuenow", String(pct));
        this.bar.dataset.bytes = String(sent);
        this.fill.style.width = `${pct}%`;
        this.pct.textContent = `${pct}%`;
        this.figures.textContent = `${fmtBytes(sent)} of ${fmtBytes(total)}`;
    }

    state(s) {
        this.bar.dataset.state = s;
        this.el.dataset.state = s;
    }
}

/**
 * A file parameter's field: a select of the library files its `patterns`
 * take (filled when the list comes), and an "Upload a file…" shortcut that
 * uploads one and selects it. Returns {select, el}.
 */
export function fileField(p, value, { id, describedBy, limits = {} }) {
    const label = p.label || p.name;
    const select = h("select.input", { id, name: p.name, "aria-describedby": describedBy }, h("option", { value: value || "" }, "Loading your files…"));
    let files = [];
    let chosen = value || "";
    select.addEventListener("change", () => {
        chosen = select.value;
    });
    // the button opens it; it is not a control of its own
    const picker = h("input.visually-hidden", { type: "file", tabindex: "-1", "aria-hidden": "true" });
    const exts = (p.patterns || []).map((x) => /^\*(\.[\w-]+)$/.exec(x)?.[1]);
    if (exts.length && exts.every(Boolean)) {
        picker.setAttribute("accept", exts.join(","));
    }
    const uploadBtn = h("button.btn.btn-sm.nowrap", { type: "button" }, "Upload a file…");
    const uploader = new Uploader({ id: `${id}-upload`, onDone: (e) => refresh(e.name) });
    uploadBtn.addEventListener("click", () => picker.click());
    picker.addEventListener("change", async () => {
        const file = picker.files[0];
        picker.value = "";
        if (!file || uploader.busy) {
            return;
        }
        if (!fitsParam(p, file.name)) {
            uploader.el.hidden = false;
            uploader.error.textContent = sentence(`${label} (${p.name}) must be a file named like ${p.patterns.join(" or ")}`);
            return;
        }
        if (!(await confirmReplace(file.name, files))) {
            return;
        }
        const old = files.find((f) => f.name === file.name);
        const used = files.reduce((n, f) => n + f.size, 0) - (old ? old.size : 0);
        await uploader.start(file.name, file, { limits, usedBytes: used });
    });

    async function refresh(name) {
        if (name !== undefined) {
            chosen = name;
        }
        try {
            files = await listLibrary();
        } catch (e) {
            select.replaceChildren(h("option", { value: chosen }, chosen || "Your files could not be listed"));
            uploader.el.hidden = false;
            uploader.error.textContent = `Could not list your files: ${e.message}`;
            return;
        }
        const fit = files.filter((f) => fitsParam(p, f.name));
        const site = (p.site || []).map((n) => SITE_PREFIX + n);
        const options = [h("option", { value: "" }, fit.length || site.length ? "Choose a file…" : "No file of yours fits: upload one")];
        if (chosen && !fit.some((f) => f.name === chosen) && !site.includes(chosen)) {
            options.push(h("option", { value: chosen }, `${chosen} (not in your library)`));
        }
        const mine = fit.map((f) => h("option", { value: f.name }, `${f.name} (${fmtBytes(f.size)})`));
        if (site.length) {
            // files the site provides where runs go: never uploaded nor sent
            options.push(h("optgroup", { label: "Your library" }, ...mine));
            options.push(h("optgroup", { label: "Provided by the site" }, ...site.map((v) => h("option", { value: v }, v.slice(SITE_PREFIX.length)))));
        } else {
            options.push(...mine);
        }
        select.replaceChildren(...options);
        select.value = chosen;
        select.dataset.loaded = "true";
        if (name !== undefined) {
            // chosen by the upload: as if picked (the form clears its error)
            select.dispatchEvent(new Event("change", { bubbles: true }));
        }
    }
    refresh();
    return { select, el: h("div.file-param", h("div.file-param-row", select, uploadBtn, picker), uploader.el) };
}

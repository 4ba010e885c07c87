// The Files page: the user's file library (size, SHA-256, when uploaded,
// which simulations name it), the quota, an upload with progress and resume,
// download, rename and delete.

import { del, get, patch } from "../api.js";
import { busy, confirmDialog, fill, fmtBytes, h, keepFocus, stackTable, timeEl } from "../dom.js";
import { Uploader, confirmReplace, libraryPath, listLibrary } from "../library.js";

export function filesView(root, _params, ctx) {
    let files = [];
    let renaming = null;
    const count = h("span.muted.count");
    const quotaText = h("span", { id: "library-quota" });
    const quotaFill = h("span.mini-fill");
    const quotaBar = h(
        "span.mini-bar.wide",
        { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-label": "Library quota used" },
        quotaFill,
    );
    const list = h("div", { id: "library" });
    const picker = h("input.input", { type: "file", id: "upload-file" });
    const nameInput = h("input.input", { type: "text", id: "upload-name", maxlength: "100", "aria-describedby": "upload-name-hint" });
    const uploadBtn = h("button.btn.btn-primary", { type: "submit", id: "upload-start" }, "Upload");
    const uploader = new Uploader({
        id: "upload",
        onDone: () => {
            picker.value = "";
            nameInput.value = "";
            load();
        },
    });
    const form = h(
        "form.upload-form",
        { novalidate: true, "aria-label": "Upload a file" },
        h("div.field", h("label", { for: "upload-file" }, "File"), picker),
        h(
            "div.field",
            h("label", { for: "upload-name" }, "Name in your library"),
            nameInput,
            h("div.hint", { id: "upload-name-hint" }, "default: the file's own name"),
        ),
        h("div.actions", uploadBtn),
    );
    picker.addEventListener("change", () => {
        nameInput.value = picker.files[0]?.name || "";
    });
    form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const file = picker.files[0];
        const name = nameInput.value.trim() || file?.name;
        if (!file || uploader.busy) {
            uploader.el.hidden = false;
            uploader.error.textContent = file ? "" : "Choose a file to upload.";
            return;
        }
        if (!(await confirmReplace(name, files))) {
            return;
        }
        const old = files.find((f) => f.name === name);
        await busy(uploadBtn, () =>
            uploader.start(name, file, { limits: ctx.limits, usedBytes: usedBytes() - (old ? old.size : 0) }),
        );
    });

    root.append(
        h(
            "div.page-head",
            h("div", h("h1", "Files"), count),
            h("div.page-actions.quota", quotaBar, quotaText),
        ),
        h(
            "div.files-grid",
            h("section.card.card-flush", { "aria-labelledby": "library-heading" }, h("div.card-head.card-pad", h("h2", { id: "library-heading" }, "Your library")), list),
            h(
                "section.card",
                { "aria-labelledby": "upload-heading" },
                h("h2", { id: "upload-heading" }, "Upload a file"),
                h("p.muted", "Codes take these files through their file parameters; an upload that drops can be resumed where it stopped."),
                form,
                uploader.el,
            ),
        ),
    );

    const usedBytes = () => files.reduce((n, f) => n + f.size, 0);

    let loading = null;
    let again = false;
    async function load() {
        if (loading) {
            again = true;
            return loading;
        }
        loading = (async () => {
            try {
                do {
                    again = false;
                    const [l, w] = await Promise.all([listLibrary(), get("/whoami")]);
                    files = l;
                    ctx.limits = w.limits || ctx.limits;
                    keepFocus(root, render);
                } while (again);
            } catch (e) {
                fill(list, h("p.error-text.card-pad", { role: "alert" }, `Could not list your files: ${e.message}`));
            } finally {
                loading = null;
            }
        })();
        return loading;
    }

    function renderQuota() {
        const l = ctx.limits || {};
        const used = l.library_bytes ?? usedBytes();
        const max = l.max_library_bytes;
        const pct = max ? Math.min(100, Math.round((used / max) * 100)) : 0;
        quotaText.textContent = max ? `${fmtBytes(used)} of ${fmtBytes(max)} used` : `${fmtBytes(used)} used`;
        quotaText.title = max ? `${used} of ${max} bytes; files of at most ${fmtBytes(l.max_library_file_bytes)}` : "";
        quotaBar.setAttribute("aria-valuenow", String(pct));
        quotaFill.style.width = `${pct}%`;
        quotaBar.hidden = !max;
    }

    function render() {
        renderQuota();
        count.textContent = `${files.length} ${files.length === 1 ? "file" : "files"}`;
        if (!files.length) {
            fill(list, h("div.empty", h("p.empty-title", "No files yet"), h("p.muted", "Upload one here; the new-simulation form offers it to codes that take a file.")));
            return;
        }
        const heads = ["Name", "Size", "SHA-256", "Uploaded", "Used by", ""];
        fill(list, stackTable("Your library's files", heads, files.map(row), "library-table"));
    }

    function row(f) {
        const name =
            renaming === f.name
                ? renameForm(f)
                : h(
                      "span",
                      h("a.file-name", { href: `/api${libraryPath(f.name)}`, download: f.name, title: `Download ${f.name}` }, f.name),
                  );
        const used = f.used_by.length
            ? f.used_by.map((id, i) => [i ? ", " : "", h("a", { href: `#/sim/${id}` }, ctx.live.sims.get(id)?.name || id)])
            : h("span.muted", "—");
        const renameBtn = h("button.btn.btn-sm.btn-ghost", { type: "button", "aria-label": `Rename ${f.name}`, dataset: { key: `rename-${f.name}` } }, "Rename");
        const delBtn = h("button.btn.btn-sm.btn-danger-outline", { type: "button", "aria-label": `Delete ${f.name}`, dataset: { key: `delete-${f.name}` } }, "Delete");
        renameBtn.addEventListener("click", () => {
            renaming = f.name;
            render();
            list.querySelector(".rename-input")?.focus();
        });
        delBtn.addEventListener("click", () => remove(f, delBtn));
        return h(
            "tr",
            { dataset: { file: f.name } },
            h("td", name),
            h("td.num.file-size", { title: `${f.size} bytes`, dataset: { bytes: String(f.size) } }, fmtBytes(f.size)),
            h("td", h("code.file-sha", { title: f.sha256, dataset: { sha256: f.sha256 } }, `${f.sha256.slice(0, 12)}…`)),
            h("td", timeEl(f.uploaded)),
            h("td.file-used", used),
            h("td.actions-cell", h("span.btn-row", renameBtn, delBtn)),
        );
    }

    function renameForm(f) {
        const input = h("input.input.input-sm.rename-input", { type: "text", value: f.name, maxlength: "100", "aria-label": `New name for ${f.name}` });
        const save = h("button.btn.btn-sm.btn-primary", { type: "submit" }, "Save");
        const cancel = h("button.btn.btn-sm", { type: "button" }, "Cancel");
        const form = h("form.rename-form", { novalidate: true }, input, save, cancel);
        cancel.addEventListener("click", () => {
            renaming = null;
            render();
        });
        form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            const n = input.value.trim();
            if (!n || n === f.name) {
                renaming = null;
                render();
                return;
            }
            await busy([save, cancel], async () => {
                await patch(libraryPath(f.name), { name: n });
                renaming = null;
                ctx.notify(`${f.name} is now ${n}`, "ok");
                await load();
            }, (e) => ctx.notify(`${f.name} not renamed: ${e.message}`));
        });
        return form;
    }

    async function remove(f, btn) {
        const ok = await confirmDialog({
            title: `Delete ${f.name}?`,
            body: `${f.name} (${fmtBytes(f.size)}) leaves your library; simulations that name it cannot run again until a file of that name is uploaded.`,
            confirm: "Delete",
            danger: true,
        });
        if (!ok) {
            return;
        }
        await busy(btn, async () => {
            await del(libraryPath(f.name));
            ctx.notify(`${f.name} deleted`, "ok");
            await load();
        }, (e) => ctx.notify(`${f.name} not deleted: ${e.message}`));
    }

    // used_by names simulations: new ones, renamed ones and runs change it
    let timer = null;
    const soon = () => {
        clearTimeout(timer);
        timer = setTimeout(load, 300);
    };
    const offs = [ctx.live.on("sim", soon), ctx.live.on("synced", soon)];
    fill(list, h("p.muted.card-pad", "Loading…"));
    load();
    return () => {
        offs.forEach((off) => off());
        clearTimeout(timer);
        uploader.abort?.abort();
    };
}

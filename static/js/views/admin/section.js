// The frame every admin console section shares: a card with a heading, a
// count and a body.

import { h } from "../../dom.js";

/**
 * @param id the section's name: its heading's id is `${id}-heading`
 * @param title the heading's text
 * @param count an element with the number of rows (or null)
 * @param body the element the section renders into
 */
export function adminSection(id, title, count, body) {
    return h(
        "section.card.card-flush.admin-section",
        { "aria-labelledby": `${id}-heading` },
        h("div.card-head.card-pad", h("h2", { id: `${id}-heading` }, title, " ", count)),
        body,
    );
}

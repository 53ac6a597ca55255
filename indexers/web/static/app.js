// humantag search page: plain JS, no build step, no third-party code.
// The page URL mirrors the search (?q=&where=&f=field=v1,v2&from=&to=&open=id) so it can be shared or reloaded.
// Plain words (q) are turned into filters by the server (/api/interpret); the filters are the chips.
"use strict";

(() => {
  const PAGE_SIZE = 40;
  const state = {
    q: "", // plain words, as typed (the chips are what they meant)
    text: "", // caption words (older links: ?text=)
    where: [], // filters in use: the chips
    dateFrom: "",
    dateTo: "",
    notes: [],
    selected: new Map(), // facet field -> Set of values (strings), OR-ed within a field
    facetNames: [],
    fields: new Map(),
    hits: [],
    total: 0,
    cursor: null,
    facets: {},
    open: null,
    seq: 0,
    pageSize: PAGE_SIZE,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) throw new Error((body && body.error) || `HTTP ${response.status}`);
    return body;
  }

  // ---- names and values ----------------------------------------------------

  function fieldLabel(name) {
    const words = (s) => s.replace(/[_.]/g, " ");
    if (name.startsWith("person.")) return `Person · ${words(name.slice(7))}`;
    if (name.startsWith("scene.")) return `Scene · ${words(name.slice(6))}`;
    if (name.startsWith("quality.")) return `Quality · ${words(name.slice(8))}`;
    const text = words(name);
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  const valueText = (v) => (v === true ? "yes" : v === false ? "no" : String(v));
  const basename = (uri) => String(uri || "").split("/").filter(Boolean).pop() || String(uri || "");
  const plural = (n, one, many) => `${n.toLocaleString()} ${n === 1 ? one : many}`;

  // ---- state <-> URL ----------------------------------------------------------

  const splitWhere = (s) => s.split(";").map((w) => w.trim()).filter(Boolean);

  function readURL() {
    const params = new URLSearchParams(window.location.search);
    state.q = params.get("q") || "";
    state.text = params.get("text") || "";
    state.where = params.getAll("where").flatMap(splitWhere);
    state.dateFrom = validDate(params.get("from"));
    state.dateTo = validDate(params.get("to"));
    state.selected = new Map();
    for (const f of params.getAll("f")) {
      const at = f.indexOf("=");
      if (at <= 0) continue;
      const field = f.slice(0, at);
      const values = f.slice(at + 1).split(",").map((v) => v.trim()).filter(Boolean);
      if (!values.length) continue;
      state.selected.set(field, new Set([...(state.selected.get(field) || []), ...values]));
      const spec = state.fields.get(field);
      if (spec && spec.facetable && !state.facetNames.includes(field)) state.facetNames.push(field);
    }
    state.open = params.get("open");
    const size = parseInt(params.get("size") || "", 10);
    state.pageSize = size >= 1 && size <= 200 ? size : PAGE_SIZE;
    $("q").value = state.q;
    $("where").value = "";
    $("date-from").value = state.dateFrom;
    $("date-to").value = state.dateTo;
    renderChips();
  }

  const validDate = (s) => (/^\d{4}-\d{2}-\d{2}$/.test(s || "") ? s : "");

  function nextDay(day) {
    const d = new Date(`${day}T00:00:00Z`);
    d.setUTCDate(d.getUTCDate() + 1);
    return d.toISOString().slice(0, 10);
  }

  function pageURL() {
    const params = new URLSearchParams();
    if (state.q) params.set("q", state.q);
    if (state.text) params.set("text", state.text);
    for (const w of state.where) params.append("where", w);
    for (const [field, values] of state.selected) {
      if (values.size) params.append("f", `${field}=${[...values].join(",")}`);
    }
    if (state.dateFrom) params.set("from", state.dateFrom);
    if (state.dateTo) params.set("to", state.dateTo);
    if (state.pageSize !== PAGE_SIZE) params.set("size", String(state.pageSize));
    if (state.open) params.set("open", state.open);
    const query = params.toString();
    return query ? `?${query}` : window.location.pathname;
  }

  function writeURL(push) {
    const url = pageURL();
    if (url === window.location.search || (url === window.location.pathname && !window.location.search)) return;
    if (push) window.history.pushState(null, "", url);
    else window.history.replaceState(null, "", url);
  }

  // ---- API -----------------------------------------------------------------------

  function filters(excludeField) {
    const out = [...state.where];
    if (state.dateFrom) out.push(`labeled_at>=${state.dateFrom}`);
    if (state.dateTo) out.push(`labeled_at<${nextDay(state.dateTo)}`);
    for (const [field, values] of state.selected) {
      if (field !== excludeField && values.size) out.push(`${field}=${[...values].join(",")}`);
    }
    return out;
  }

  function apiURL({ excludeField = null, facets = state.facetNames, size = state.pageSize, after = null } = {}) {
    const params = new URLSearchParams();
    if (state.text) params.set("text", state.text);
    for (const w of filters(excludeField)) params.append("where", w);
    if (facets.length) for (const f of facets) params.append("facet", f);
    else params.append("facet", "");
    params.set("size", String(size));
    if (after) params.set("after", after);
    return `/api/search?${params}`;
  }

  async function search({ push = false } = {}) {
    const seq = ++state.seq;
    writeURL(push);
    showError(null);
    document.body.classList.add("busy");
    try {
      const result = await getJSON(apiURL());
      if (seq !== state.seq) return;
      state.hits = result.hits;
      state.total = result.total;
      state.cursor = result.next_cursor;
      renderSummary(result);
      renderNotes(result.not_produced || []);
      renderGrid(result.hits, false);
      // Counts of a field with ticked values ignore that field's own filter (the other
      // values stay visible and can be added: values of one field are OR-ed).
      const facets = { ...result.facets };
      const own = [...state.selected.entries()].filter(([, values]) => values.size).map(([field]) => field);
      const counts = await Promise.all(
        own.map((field) => getJSON(apiURL({ excludeField: field, facets: [field], size: 0 })).catch(() => null)),
      );
      if (seq !== state.seq) return;
      own.forEach((field, i) => {
        if (counts[i] && counts[i].facets[field]) facets[field] = counts[i].facets[field];
      });
      state.facets = facets;
      renderFacets();
    } catch (err) {
      if (seq !== state.seq) return;
      showError(err.message);
      state.hits = [];
      state.total = 0;
      state.cursor = null;
      renderSummary(null);
      renderNotes([]);
      renderGrid([], false);
    } finally {
      if (seq === state.seq) document.body.classList.remove("busy");
    }
  }

  async function loadMore() {
    if (!state.cursor) return;
    const seq = state.seq;
    const button = $("load-more");
    button.disabled = true;
    try {
      const result = await getJSON(apiURL({ facets: [], after: state.cursor }));
      if (seq !== state.seq) return;
      state.hits = state.hits.concat(result.hits);
      state.cursor = result.next_cursor;
      renderGrid(result.hits, true);
      renderSummary({ total: state.total, took_ms: result.took_ms });
    } catch (err) {
      showError(err.message);
    } finally {
      button.disabled = false;
    }
  }

  // ---- rendering ---------------------------------------------------------------

  function showError(message) {
    const node = $("error");
    node.textContent = message || "";
    node.hidden = !message;
  }

  function renderSummary(result) {
    const summary = $("summary");
    if (!result) {
      summary.textContent = "";
      return;
    }
    const shown = state.hits.length;
    let text = result.total === 0 ? "No images match." : plural(result.total, "image", "images");
    if (result.total > shown && shown > 0) text += ` · showing ${shown.toLocaleString()}`;
    summary.textContent = text;
    summary.dataset.total = String(result.total);
  }

  // Why nothing matched: a filter on a field the labeler that made the rows never fills.
  function renderNotes(notes) {
    const list = $("notes");
    list.replaceChildren(...notes.map((n) => el("li", { text: n.message })));
    list.hidden = !notes.length;
  }

  function renderChips() {
    const list = $("chips");
    list.replaceChildren(
      ...state.where.map((w, i) =>
        el(
          "li",
          { class: "chip", "data-where": w },
          el("span", { class: "chip-text", text: w }),
          el("button", { type: "button", "aria-label": `Remove filter ${w}`, title: "Remove", text: "×", onclick: () => removeChip(i) }),
        ),
      ),
    );
  }

  function removeChip(index) {
    state.where = state.where.filter((_, i) => i !== index);
    renderChips();
    search({ push: true });
  }

  function renderGrid(hits, append) {
    const grid = $("grid");
    if (!append) grid.replaceChildren();
    for (const hit of hits) grid.append(tile(hit));
    $("load-more").hidden = !state.cursor;
  }

  function tile(hit) {
    const doc = hit.document || {};
    const isError = doc.status === "error";
    const title = doc.caption || basename(hit.uri);
    const img = el("img", {
      src: `/api/thumbnails/${encodeURIComponent(hit.id)}.jpg`,
      alt: doc.caption || `Image ${basename(hit.uri)}`,
      loading: "lazy",
      decoding: "async",
    });
    const button = el(
      "button",
      {
        type: "button",
        class: "tile",
        "data-id": hit.id,
        "aria-label": `Details: ${title}`,
        onclick: () => openDetails(hit.id, doc, button),
      },
      el("span", { class: "thumb" }, img, el("span", { class: "placeholder", text: "no preview" })),
      el("span", { class: "tile-caption", text: doc.caption || basename(hit.uri) }),
      isError ? el("span", { class: "badge error-badge", text: `error: ${doc.error_kind || "unknown"}` }) : null,
      !isError && doc.people_count != null ? el("span", { class: "badge", text: plural(doc.people_count, "person", "people") }) : null,
    );
    img.addEventListener("error", () => button.classList.add("broken"));
    return el("li", {}, button);
  }

  function renderFacets() {
    const nav = $("facets");
    nav.replaceChildren();
    let n = 0;
    for (const field of state.facetNames) {
      const buckets = state.facets[field] || [];
      const selected = state.selected.get(field) || new Set();
      const values = buckets.map((b) => ({ value: String(b.value), label: valueText(b.value), count: b.count }));
      for (const v of selected) {
        if (!values.some((b) => b.value === v)) values.push({ value: v, label: valueText(v === "true" ? true : v === "false" ? false : v), count: 0 });
      }
      if (!values.length) continue;
      const list = el("ul", { class: "facet-values" });
      values.forEach((bucket) => {
        const id = `facet-${n++}`;
        const box = el("input", {
          type: "checkbox",
          id,
          "data-field": field,
          "data-value": bucket.value,
          checked: selected.has(bucket.value),
          onchange: (event) => toggle(field, bucket.value, event.target.checked),
        });
        list.append(
          el(
            "li",
            {},
            box,
            el("label", { for: id }, el("span", { class: "facet-label", text: bucket.label }), el("span", { class: "count", text: bucket.count.toLocaleString() })),
          ),
        );
      });
      nav.append(el("fieldset", { class: "facet", "data-field": field }, el("legend", { text: fieldLabel(field) }), list));
    }
    if (!nav.children.length) nav.append(el("p", { class: "muted", text: "No attributes to filter by." }));
  }

  function toggle(field, value, on) {
    const values = new Set(state.selected.get(field) || []);
    if (on) values.add(value);
    else values.delete(value);
    if (values.size) state.selected.set(field, values);
    else state.selected.delete(field);
    search({ push: true });
  }

  // ---- details panel -----------------------------------------------------------

  let returnFocus = null;

  async function openDetails(id, doc, from) {
    returnFocus = from || null;
    state.open = id;
    writeURL(false);
    if (doc) renderDetails(id, doc);
    else {
      try {
        renderDetails(id, await getJSON(`/api/documents/${encodeURIComponent(id)}`));
      } catch (err) {
        showError(`details: ${err.message}`);
        closeDetails();
        return;
      }
    }
    $("details").hidden = false;
    document.body.classList.add("with-details");
    $("details-close").focus();
  }

  function closeDetails() {
    $("details").hidden = true;
    document.body.classList.remove("with-details");
    if (state.open) {
      state.open = null;
      writeURL(false);
    }
    if (returnFocus && document.contains(returnFocus)) returnFocus.focus();
    returnFocus = null;
  }

  function definitions(rows) {
    const dl = el("dl", { class: "attrs" });
    for (const [term, value] of rows) {
      if (value === null || value === undefined || value === "") continue;
      dl.append(el("dt", { text: term }), el("dd", {}, value));
    }
    return dl;
  }

  const percent = (x) => (typeof x === "number" ? ` (${Math.round(x * 100)}%)` : "");
  const box = (b) => (b ? `${b.x},${b.y} ${b.w}×${b.h}${b.score != null ? ` score ${b.score.toFixed(2)}` : ""}` : null);

  function personSection(person, index) {
    const confidence = person.confidence || {};
    const rows = [];
    for (const [key, value] of Object.entries(person)) {
      if (["confidence", "person_box", "face_box"].includes(key)) continue;
      const text = Array.isArray(value) ? value.map(valueText).join(", ") : valueText(value);
      rows.push([key.replace(/_/g, " "), text + percent(confidence[key])]);
    }
    rows.push(["face box", box(person.face_box)], ["person box", box(person.person_box)]);
    return el("section", { class: "person" }, el("h4", { text: `Person ${index + 1}` }), definitions(rows));
  }

  // Face and person boxes over the image: percentages of the (EXIF-rotated) image size, so they
  // fit the picture at any displayed size.
  function boxes(doc) {
    const out = [];
    if (!doc.width || !doc.height) return out;
    (doc.persons || []).forEach((person, i) => {
      for (const [key, kind] of [["person_box", "person-box"], ["face_box", "face-box"]]) {
        const b = person[key];
        if (!b) continue;
        const node = el("div", { class: `box ${kind}`, "data-person": String(i + 1) }, el("span", { class: "box-label", text: String(i + 1) }));
        node.style.left = `${(100 * b.x) / doc.width}%`;
        node.style.top = `${(100 * b.y) / doc.height}%`;
        node.style.width = `${(100 * b.w) / doc.width}%`;
        node.style.height = `${(100 * b.h) / doc.height}%`;
        out.push(node);
      }
    });
    return out;
  }

  function renderDetails(id, doc) {
    $("details-title").textContent = basename(doc.uri);
    const body = $("details-body");
    const isError = doc.status === "error";
    const scene = doc.scene || {};
    const persons = doc.persons || [];
    body.replaceChildren();
    body.append(...[
      el(
        "div",
        { class: "details-frame" },
        el("img", { class: "details-image", src: `/api/thumbnails/${encodeURIComponent(id)}.jpg`, alt: doc.caption || basename(doc.uri) }),
        ...boxes(doc),
      ),
      el("a", { id: "details-original", class: "original", href: `/api/originals/${encodeURIComponent(id)}`, target: "_blank", rel: "noopener", text: "Open the original" }),
      doc.caption ? el("p", { id: "details-caption", class: "caption", text: doc.caption }) : el("p", { id: "details-caption", class: "caption muted", text: "No caption." }),
      isError ? el("p", { class: "error-box", text: `${doc.error_kind || "error"}: ${doc.error_message || ""}` }) : null,
      definitions([
        ["status", doc.status + (isError && doc.error_kind ? ` (${doc.error_kind})` : "") + (doc.deleted_at ? " · deleted" : "")],
        ["people", doc.people_count != null ? String(doc.people_count) : null],
        ["faces visible", doc.faces_visible != null ? String(doc.faces_visible) : null],
        ["scene", [scene.environment, scene.setting].filter(Boolean).join(" · ") || null],
        ["size", doc.width && doc.height ? `${doc.width}×${doc.height}${doc.format ? ` ${doc.format}` : ""}` : null],
        ["labeler", doc.labeler ? `${doc.labeler} ${doc.labeler_version || ""}`.trim() : null],
        ["labeled", doc.labeled_at || null],
        ["uri", el("code", { class: "uri", text: doc.uri })],
      ]),
      persons.length ? el("h3", { text: plural(persons.length, "person", "people") }) : null,
      ...persons.map(personSection),
    ].filter(Boolean));
  }

  // ---- wiring ------------------------------------------------------------------

  async function start() {
    $("search-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const q = $("q").value.trim();
      const typed = splitWhere($("where").value);
      showError(null);
      if (q && q !== state.q) {
        // New plain words: their filters replace the chips (then the typed expert ones).
        try {
          const meaning = await getJSON(`/api/interpret?${new URLSearchParams({ q })}`);
          state.where = [...meaning.where, ...typed];
        } catch (err) {
          showError(err.message);
          return;
        }
      } else {
        state.where = [...state.where, ...typed.filter((w) => !state.where.includes(w))];
      }
      state.q = q;
      state.text = "";
      $("where").value = "";
      renderChips();
      search({ push: true });
    });
    $("clear-button").addEventListener("click", () => {
      for (const id of ["q", "where", "date-from", "date-to"]) $(id).value = "";
      state.q = "";
      state.text = "";
      state.where = [];
      state.dateFrom = "";
      state.dateTo = "";
      state.selected = new Map();
      renderChips();
      search({ push: true });
    });
    for (const [id, key] of [["date-from", "dateFrom"], ["date-to", "dateTo"]]) {
      $(id).addEventListener("change", () => {
        state[key] = validDate($(id).value);
        search({ push: true });
      });
    }
    $("load-more").addEventListener("click", loadMore);
    $("details-close").addEventListener("click", closeDetails);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !$("details").hidden) closeDetails();
    });
    window.addEventListener("popstate", () => {
      readURL();
      search();
      if (state.open) openDetails(state.open, null, null);
      else if (!$("details").hidden) closeDetails();
    });

    try {
      const info = await getJSON("/api/fields");
      for (const f of info.fields) state.fields.set(f.name, f);
      state.facetNames = [...info.default_facets];
      $("backend").textContent = info.backend ? `from ${info.backend}` : "";
    } catch (err) {
      showError(`cannot load the field list: ${err.message}`);
    }
    readURL();
    await search();
    if (state.open) openDetails(state.open, null, null);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

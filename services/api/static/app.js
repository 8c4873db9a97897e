// Worklist UI: a paged, filtered table over GET /worklists, a create/edit form, a detail view, and live
// updates from GET /events/stream. Plain JavaScript, no dependencies; the REST API does all the work.
"use strict";

(() => {
  const MODALITIES = ["CR", "CT", "DX", "ES", "IO", "MG", "MR", "NM", "OP", "OT", "PT", "PX", "RF", "SR", "US", "XA", "XC"];
  const SPS = "ScheduledProcedureStepSequence";
  const SPS_FIELDS = [
    "Modality", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
    "ScheduledStationAETitle", "ScheduledPerformingPhysicianName",
  ];
  const TOP_FIELDS = [
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "RequestedProcedureDescription",
  ];
  const RELOAD_DELAY_MS = 150;
  const FLASH_MS = 2000;
  const FILTER_DELAY_MS = 250;

  const $ = (selector, root = document) => root.querySelector(selector);
  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("aria-") || key === "role" || key === "title" || key === "type") node.setAttribute(key, value);
      else node[key] = value;
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  };

  const state = {
    offset: 0,
    limit: 25,
    total: 0,
    editing: null, // the item being edited: {ID, Tags}, or null when creating
    deleting: null,
    highlight: new Map(), // item id -> when its change was seen, to point the row out for a moment
    loadSeq: 0,
  };

  // ---------------------------------------------------------------------------------------------------
  // Formatting

  const dicomDate = (iso) => (iso ? iso.replaceAll("-", "") : "");
  const isoDate = (da) => (da && /^\d{8}$/.test(da) ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : "");
  const dicomTime = (hhmm) => (hhmm ? hhmm.replace(":", "").padEnd(6, "0").slice(0, 6) : "");
  const isoTime = (tm) => {
    const digits = (tm || "").replaceAll(":", "");
    return /^\d{4}/.test(digits) ? `${digits.slice(0, 2)}:${digits.slice(2, 4)}` : "";
  };
  function personName(pn) {
    if (!pn) return "";
    const [family = "", given = "", middle = "", prefix = "", suffix = ""] = String(pn).split("=")[0].split("^");
    const first = [prefix, given, middle].filter(Boolean).join(" ");
    return [family, first].filter(Boolean).join(", ") + (suffix ? ` ${suffix}` : "");
  }
  function scheduled(step) {
    const date = isoDate(step.ScheduledProcedureStepStartDate);
    const time = isoTime(step.ScheduledProcedureStepStartTime);
    return [date, time].filter(Boolean).join(" ");
  }
  const text = (value) => (value === null || value === undefined ? "" : String(value));

  // ---------------------------------------------------------------------------------------------------
  // API

  async function api(method, url, body) {
    const response = await fetch(url, {
      method,
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
      credentials: "same-origin",
    });
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
    if (!response.ok) {
      const error = new Error((payload && payload.Message) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      error.field = payload && payload.Field;
      throw error;
    }
    return { payload, headers: response.headers };
  }

  // ---------------------------------------------------------------------------------------------------
  // Notices

  let noticeTimer = null;
  function notify(message, kind = "ok") {
    const notice = $("#notice");
    notice.textContent = message;
    notice.className = `notice ${kind === "ok" ? "" : kind}`.trim();
    notice.setAttribute("role", kind === "error" ? "alert" : "status");
    notice.hidden = false;
    clearTimeout(noticeTimer);
    if (kind !== "error") noticeTimer = setTimeout(() => { notice.hidden = true; }, 6000);
  }

  // ---------------------------------------------------------------------------------------------------
  // Filters and the table

  function filterParams() {
    const form = $("#filters");
    const params = new URLSearchParams();
    const q = form.q.value.trim();
    if (q) params.set("q", q);
    if (form.Modality.value) params.set("Modality", form.Modality.value);
    const station = form.ScheduledStationAETitle.value.trim();
    if (station) params.set("ScheduledStationAETitle", station);
    const from = dicomDate(form.from.value);
    const to = dicomDate(form.to.value);
    if (from || to) params.set("ScheduledProcedureStepStartDate", from === to ? from : `${from}-${to}`);
    if (form.sort.value !== "-CreationDate") params.set("sort", form.sort.value);
    return params;
  }

  function readUrl() {
    const params = new URLSearchParams(location.search);
    const form = $("#filters");
    form.q.value = params.get("q") || "";
    form.Modality.value = params.get("Modality") || "";
    form.ScheduledStationAETitle.value = params.get("ScheduledStationAETitle") || "";
    const range = params.get("ScheduledProcedureStepStartDate") || "";
    const [from, to] = range.includes("-") ? range.split("-") : [range, range];
    form.from.value = isoDate(from);
    form.to.value = isoDate(to);
    form.sort.value = params.get("sort") || "-CreationDate";
    const size = Number(params.get("limit"));
    if ([25, 50, 100].includes(size)) state.limit = size;
    $("#page-size").value = String(state.limit);
    state.offset = Math.max(0, Number(params.get("offset")) || 0);
  }

  function writeUrl() {
    const params = filterParams();
    if (state.limit !== 25) params.set("limit", state.limit);
    if (state.offset) params.set("offset", state.offset);
    const search = params.toString();
    history.replaceState(null, "", search ? `?${search}` : location.pathname);
  }

  async function load() {
    const seq = ++state.loadSeq;
    const params = filterParams();
    params.set("limit", state.limit);
    params.set("offset", state.offset);
    if (!params.has("sort")) params.set("sort", "-CreationDate");
    const table = $("#worklists");
    table.setAttribute("aria-busy", "true");
    try {
      const { payload, headers } = await api("GET", `/worklists?${params}`);
      if (seq !== state.loadSeq) return; // a newer load is under way
      state.total = Number(headers.get("X-Total-Count") || payload.length);
      if (payload.length === 0 && state.offset > 0 && state.total > 0) {
        state.offset = Math.max(0, Math.floor((state.total - 1) / state.limit) * state.limit);
        return load();
      }
      render(payload);
      writeUrl();
    } catch (error) {
      if (seq !== state.loadSeq) return;
      notify(error.field ? `${error.field}: ${error.message}` : `Could not load worklists: ${error.message}`, "error");
    } finally {
      if (seq === state.loadSeq) table.setAttribute("aria-busy", "false");
    }
  }

  function render(items) {
    const body = $("#worklists tbody");
    body.replaceChildren(...items.map(row));
    $("#empty").hidden = items.length > 0;
    const first = items.length ? state.offset + 1 : 0;
    const last = state.offset + items.length;
    const noun = state.total === 1 ? "worklist" : "worklists";
    $("#range").textContent = state.total
      ? `${first.toLocaleString()}–${last.toLocaleString()} of ${state.total.toLocaleString()} ${noun}`
      : "No worklists";
    $("#empty").textContent = filterParams().toString().replace(/(^|&)sort=[^&]*/, "")
      ? "No worklist matches these filters."
      : "No worklists yet. Create one with “New worklist”.";
    $("#prev").disabled = state.offset === 0;
    $("#next").disabled = last >= state.total;
  }

  function pointOut(id) {
    if (!state.highlight.has(id)) state.highlight.set(id, performance.now());
    setTimeout(() => state.highlight.delete(id), FLASH_MS);
  }

  function row(item) {
    const tags = item.Tags || {};
    const steps = Array.isArray(tags[SPS]) ? tags[SPS] : [];
    const step = steps[0] || {};
    const name = personName(tags.PatientName) || "(no name)";
    const status = text(step.ScheduledProcedureStepStatus);
    const description = text(tags.RequestedProcedureDescription || step.ScheduledProcedureStepDescription);
    const tr = el("tr", { dataset: { id: item.ID } });
    if (state.highlight.has(item.ID)) {
      // A row drawn again mid-flash carries on where the last one was.
      tr.classList.add("flash");
      tr.style.animationDelay = `${state.highlight.get(item.ID) - performance.now()}ms`;
    }
    tr.append(
      el("td", { class: "name", title: text(tags.PatientName) }, name),
      el("td", { class: "nowrap mono" }, text(tags.PatientID)),
      el("td", { class: "nowrap mono" }, text(tags.AccessionNumber)),
      el("td", {}, step.Modality ? el("span", { class: "badge modality" }, step.Modality) : null),
      el("td", { class: "nowrap mono" }, text(step.ScheduledStationAETitle)),
      el("td", { class: "nowrap" }, scheduled(step),
        steps.length > 1 ? el("span", { class: "more", title: "More scheduled steps" }, `+${steps.length - 1}`) : null),
      el("td", { class: "description", title: description }, description),
      el("td", {}, status ? el("span", { class: `badge status-${status.toLowerCase()}` }, status) : el("span", { class: "muted" }, "—")),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "link-button", dataset: { action: "view" }, "aria-label": `Details of ${name}` }, "Details"),
        el("button", { type: "button", class: "link-button", dataset: { action: "edit" }, "aria-label": `Edit ${name}` }, "Edit"),
        el("button", { type: "button", class: "link-button danger", dataset: { action: "delete" }, "aria-label": `Delete ${name}` }, "Delete")),
    );
    tr.item = item;
    return tr;
  }

  let reloadTimer = null;
  function reloadSoon(delay = RELOAD_DELAY_MS) {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(load, delay);
  }

  // ---------------------------------------------------------------------------------------------------
  // Create and edit

  const form = () => $("#item-form");

  function clearErrors() {
    for (const input of form().querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    for (const message of form().querySelectorAll(".error")) message.textContent = "";
    const general = $("#form-error");
    general.textContent = "";
    general.hidden = true;
  }

  function showError(field, message) {
    const input = form().elements[field];
    const slot = $(`#e-${field}`);
    if (!input || !slot) {
      const general = $("#form-error");
      general.textContent = field ? `${field}: ${message}` : message;
      general.hidden = false;
      return null;
    }
    input.setAttribute("aria-invalid", "true");
    slot.textContent = message;
    return input;
  }

  // Client-side checks: what a user can get wrong in a field; the server checks the rest (VR rules).
  const LIMITS = {
    PatientName: 64, PatientID: 64, AccessionNumber: 16, ScheduledStationAETitle: 16,
    ScheduledPerformingPhysicianName: 64, RequestedProcedureDescription: 64,
  };
  const REQUIRED = {
    PatientName: "Enter the patient's name.",
    PatientID: "Enter the patient ID.",
    Modality: "Choose a modality.",
    ScheduledProcedureStepStartDate: "Enter the scheduled date.",
  };

  function validate(values) {
    const errors = {};
    for (const [field, message] of Object.entries(REQUIRED)) {
      if (!values[field]) errors[field] = message;
    }
    for (const [field, limit] of Object.entries(LIMITS)) {
      const value = values[field] || "";
      if (value.includes("\\")) errors[field] = "Must not contain a backslash (\\).";
      else if (field === "PatientName" || field === "ScheduledPerformingPhysicianName") {
        if (value.split("=").some((group) => group.length > limit)) errors[field] = `At most ${limit} characters.`;
      } else if (value.length > limit) errors[field] = `At most ${limit} characters.`;
    }
    const station = values.ScheduledStationAETitle || "";
    if (station && !/^[\x20-\x7e]+$/.test(station)) errors.ScheduledStationAETitle = "Use letters, digits and plain ASCII symbols only.";
    const birth = values.PatientBirthDate;
    if (birth && birth > new Date().toISOString().slice(0, 10)) errors.PatientBirthDate = "The birth date is in the future.";
    return errors;
  }

  function formValues() {
    const values = {};
    for (const field of [...TOP_FIELDS, ...SPS_FIELDS]) values[field] = form().elements[field].value.trim();
    return values;
  }

  // The dataset to send: the stored item (when editing) with the form's fields laid over it, so that tags
  // the form does not show (StudyInstanceUID, other steps, codes from a RIS) are kept.
  function tagsFrom(values, original) {
    const tags = original ? structuredClone(original) : {};
    const steps = Array.isArray(tags[SPS]) && tags[SPS].length ? tags[SPS] : [{}];
    const step = steps[0];
    const dicom = {
      ...values,
      PatientBirthDate: dicomDate(values.PatientBirthDate),
      ScheduledProcedureStepStartDate: dicomDate(values.ScheduledProcedureStepStartDate),
      ScheduledProcedureStepStartTime: dicomTime(values.ScheduledProcedureStepStartTime),
    };
    const put = (target, field) => {
      if (dicom[field]) target[field] = dicom[field];
      else if (field in target) target[field] = null; // cleared: keep the key, zero-length
    };
    for (const field of TOP_FIELDS) put(tags, field);
    for (const field of SPS_FIELDS) put(step, field);
    tags[SPS] = steps;
    return tags;
  }

  function fillForm(tags) {
    const step = (Array.isArray(tags[SPS]) && tags[SPS][0]) || {};
    const f = form().elements;
    for (const field of TOP_FIELDS) f[field].value = text(tags[field]);
    for (const field of SPS_FIELDS) f[field].value = text(step[field]);
    f.PatientBirthDate.value = isoDate(tags.PatientBirthDate);
    f.ScheduledProcedureStepStartDate.value = isoDate(step.ScheduledProcedureStepStartDate);
    f.ScheduledProcedureStepStartTime.value = isoTime(step.ScheduledProcedureStepStartTime);
    const modality = f.Modality;
    if (step.Modality && ![...modality.options].some((o) => o.value === step.Modality)) {
      modality.append(el("option", { value: step.Modality }, step.Modality));
    }
    modality.value = text(step.Modality);
  }

  function openCreate() {
    state.editing = null;
    form().reset();
    clearErrors();
    $("#editor-title").textContent = "New worklist";
    $("#save").textContent = "Create worklist";
    $("#editor").showModal();
    form().elements.PatientName.focus();
  }

  async function openEdit(id) {
    try {
      const { payload } = await api("GET", `/worklists/${encodeURIComponent(id)}?format=Simplify`);
      state.editing = payload;
      form().reset();
      clearErrors();
      fillForm(payload.Tags);
      $("#editor-title").textContent = "Edit worklist";
      $("#save").textContent = "Save changes";
      $("#editor").showModal();
      form().elements.PatientName.focus();
    } catch (error) {
      notify(error.status === 404 ? "This worklist no longer exists." : `Could not open it: ${error.message}`, "error");
      reloadSoon(0);
    }
  }

  async function submit(event) {
    event.preventDefault();
    clearErrors();
    const values = formValues();
    const errors = validate(values);
    const invalid = Object.entries(errors).map(([field, message]) => showError(field, message));
    if (invalid.length) {
      (invalid.find(Boolean) || form().elements.PatientName).focus();
      return;
    }
    const editing = state.editing;
    const tags = tagsFrom(values, editing && editing.Tags);
    const save = $("#save");
    save.disabled = true;
    try {
      const { payload } = editing
        ? await api("PUT", `/worklists/${encodeURIComponent(editing.ID)}`, { Tags: tags })
        : await api("POST", "/worklists/create", { Tags: tags });
      $("#editor").close();
      pointOut(payload.ID);
      if (!editing) {
        state.offset = 0;
      }
      notify(editing ? "Worklist saved." : "Worklist created.");
      await load();
    } catch (error) {
      if (error.status === 400 && error.field) {
        const field = String(error.field).replace(/^Tags\./, "").replace(/^ScheduledProcedureStepSequence\[0\]\./, "");
        const input = showError(field, error.message);
        if (input) input.focus();
      } else if (error.status === 404 && editing) {
        showError(null, "This worklist was deleted meanwhile.");
      } else {
        showError(null, error.message);
      }
    } finally {
      save.disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Details (every tag, format=Full) and delete

  function tagRows(tags, depth) {
    const rows = [];
    for (const [tag, element] of Object.entries(tags)) {
      const tr = el("tr", { class: depth ? "nested" : "" },
        el("td", { class: "tag mono" }, `(${tag.toUpperCase()})`),
        el("td", {}, element.Name || ""));
      tr.style.setProperty("--depth", depth);
      if (element.Type === "Sequence") {
        const items = element.Value || [];
        tr.append(el("td", { class: "value type" }, `${items.length} item${items.length === 1 ? "" : "s"}`));
        rows.push(tr);
        items.forEach((item, index) => {
          const head = el("tr", { class: "nested item-row" }, el("td", { class: "tag", colSpan: 3 }, `Item ${index + 1}`));
          head.firstChild.style.setProperty("--depth", depth + 1);
          head.classList.add("nested");
          rows.push(head, ...tagRows(item, depth + 1));
        });
      } else {
        const value = element.Type === "String" ? text(element.Value) : `(${element.Type})`;
        tr.append(el("td", { class: element.Type === "String" ? "value" : "value type" }, value));
        rows.push(tr);
      }
    }
    return rows;
  }

  async function openDetails(id) {
    try {
      const { payload } = await api("GET", `/worklists/${encodeURIComponent(id)}?format=Full`);
      $("#details-id").textContent = payload.ID;
      const name = payload.Tags["0010,0010"];
      $("#details-title").textContent = name && name.Value ? personName(name.Value) : "Worklist";
      $("#details tbody").replaceChildren(...tagRows(payload.Tags, 0));
      $("#details").showModal();
    } catch (error) {
      notify(error.status === 404 ? "This worklist no longer exists." : `Could not open it: ${error.message}`, "error");
      reloadSoon(0);
    }
  }

  function askDelete(item) {
    state.deleting = item;
    const tags = item.Tags || {};
    const who = personName(tags.PatientName) || "this patient";
    $("#confirm-text").replaceChildren(
      "Delete the worklist of ", el("strong", {}, who),
      tags.AccessionNumber ? " (accession " : "",
      tags.AccessionNumber ? el("span", { class: "nowrap" }, tags.AccessionNumber) : "",
      tags.AccessionNumber ? ")" : "",
      "? Modalities will no longer see it.",
    );
    $("#confirm").showModal();
    $("#confirm [data-close]").focus();
  }

  async function confirmDelete() {
    const item = state.deleting;
    $("#confirm").close();
    if (!item) return;
    try {
      await api("DELETE", `/worklists/${encodeURIComponent(item.ID)}`);
      notify("Worklist deleted.");
    } catch (error) {
      if (error.status === 404) notify("It was already deleted.");
      else notify(`Could not delete it: ${error.message}`, "error");
    }
    state.deleting = null;
    await load();
  }

  // ---------------------------------------------------------------------------------------------------
  // Live updates

  function connectLive() {
    const indicator = $("#live");
    const label = $(".live-text", indicator);
    const source = new EventSource("/events/stream");
    source.addEventListener("open", () => {
      indicator.dataset.state = "live";
      label.textContent = "Live";
      reloadSoon(0); // events may have been missed while disconnected
    });
    source.addEventListener("error", () => {
      indicator.dataset.state = "offline";
      label.textContent = "Reconnecting…";
    });
    const onChange = (event) => {
      let payload = {};
      try {
        payload = JSON.parse(event.data);
      } catch {
        // reload anyway
      }
      if (payload.worklist_id && event.type !== "worklist.deleted") pointOut(payload.worklist_id);
      reloadSoon();
    };
    for (const type of ["worklist.created", "worklist.updated", "worklist.deleted"]) source.addEventListener(type, onChange);
  }

  // ---------------------------------------------------------------------------------------------------
  // Wiring

  function init() {
    for (const select of [$("#filter-modality"), $("#f-Modality")]) {
      for (const modality of MODALITIES) select.append(el("option", { value: modality }, modality));
    }
    readUrl();

    const filters = $("#filters");
    let filterTimer = null;
    const refilter = () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => { state.offset = 0; load(); }, FILTER_DELAY_MS);
    };
    filters.addEventListener("input", refilter);
    filters.addEventListener("change", refilter);
    filters.addEventListener("submit", (event) => { event.preventDefault(); state.offset = 0; load(); });
    filters.addEventListener("reset", () => setTimeout(() => { state.offset = 0; load(); }));
    $("#today").addEventListener("click", () => {
      const now = new Date();
      const today = new Date(now.getTime() - now.getTimezoneOffset() * 60000).toISOString().slice(0, 10);
      filters.from.value = today;
      filters.to.value = today;
      refilter();
    });

    $("#page-size").addEventListener("change", (event) => {
      state.limit = Number(event.target.value);
      state.offset = 0;
      load();
    });
    $("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); load(); });
    $("#next").addEventListener("click", () => { state.offset += state.limit; load(); });

    $("#worklists tbody").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const { item } = button.closest("tr");
      if (button.dataset.action === "view") openDetails(item.ID);
      else if (button.dataset.action === "edit") openEdit(item.ID);
      else if (button.dataset.action === "delete") askDelete(item);
    });

    $("#new-item").addEventListener("click", openCreate);
    form().addEventListener("submit", submit);
    form().addEventListener("input", (event) => {
      // A corrected field loses its message.
      const field = event.target.name;
      if (field && event.target.getAttribute("aria-invalid")) {
        event.target.removeAttribute("aria-invalid");
        $(`#e-${field}`).textContent = "";
      }
    });
    $("#confirm-delete").addEventListener("click", confirmDelete);
    for (const button of document.querySelectorAll("dialog [data-close]")) {
      button.addEventListener("click", () => button.closest("dialog").close());
    }

    connectLive();
    load();
  }

  document.addEventListener("DOMContentLoaded", init);
})();

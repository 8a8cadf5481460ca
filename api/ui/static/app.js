// qai's web UI: forms that post JSON (or, with images, multipart) to the API, and the project
// page's live updates.
//
// The project page listens to GET /api/projects/{id}/events with the browser's own EventSource,
// which resends Last-Event-ID when it reconnects. Any event that changes what the page shows
// re-fetches the server-rendered conversation (the same HTML a fresh load gets), so a page that
// reconnected shows exactly what a fresh load would; `token` events only stream the model's text.
"use strict";

(function () {
  const $ = (selector, root) => (root || document).querySelector(selector);

  // A logged-in page carries its session's CSRF token; every change it asks for sends it.
  const csrf = document.querySelector('meta[name="csrf-token"]');
  const csrfHeaders = csrf ? { "X-CSRF-Token": csrf.content } : {};

  async function postJson(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", ...csrfHeaders },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      data = {};
    }
    return { ok: response.ok, status: response.status, data };
  }

  // With images the same routes take multipart/form-data: a `prompt` field and `images` files.
  async function postForm(url, prompt, files) {
    const body = new FormData();
    body.append("prompt", prompt);
    for (const file of files) body.append("images", file, file.name);
    const response = await fetch(url, {
      method: "POST",
      headers: { Accept: "application/json" },
      body,
      credentials: "same-origin",
    });
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      data = {};
    }
    return { ok: response.ok, status: response.status, data };
  }

  // The images a form will send: from the Attach button, pasted into the textarea, or dropped
  // on the form; each shown as a removable thumbnail. The server checks them (and says why
  // when it refuses), so nothing is filtered here and a refusal keeps them all.
  function attachments(form, textarea) {
    const input = $(".attach-input", form);
    const list = $(".attachments", form);
    const button = $(".attach-button", form);
    const files = [];
    const previews = new Map();
    if (!input || !list) return { files, clear() {} };

    function render() {
      for (const [file, url] of previews) {
        if (!files.includes(file)) {
          URL.revokeObjectURL(url);
          previews.delete(file);
        }
      }
      list.replaceChildren(
        ...files.map((file, index) => {
          if (!previews.has(file)) previews.set(file, URL.createObjectURL(file));
          const item = document.createElement("li");
          item.className = "attachment";
          const image = document.createElement("img");
          image.src = previews.get(file);
          image.alt = file.name;
          const name = document.createElement("span");
          name.className = "attachment-name";
          name.textContent = file.name;
          const remove = document.createElement("button");
          remove.type = "button";
          remove.className = "attachment-remove";
          remove.textContent = "×";
          remove.setAttribute("aria-label", `Remove ${file.name}`);
          remove.addEventListener("click", () => {
            files.splice(index, 1);
            render();
            textarea.focus();
          });
          item.append(image, name, remove);
          return item;
        }),
      );
      list.hidden = files.length === 0;
    }

    function add(added) {
      for (const file of added) {
        // A pasted screenshot comes without a useful name: give it one with its type.
        const unnamed = !file.name || file.name === "image.png";
        if (unnamed && file.type.startsWith("image/")) {
          const extension = file.type.split("/")[1].replace("jpeg", "jpg");
          files.push(new File([file], `pasted-${files.length + 1}.${extension}`, { type: file.type }));
        } else {
          files.push(file);
        }
      }
      render();
    }

    const carriesFiles = (event) =>
      event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
    if (button) button.addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      add(Array.from(input.files || []));
      input.value = "";
    });
    textarea.addEventListener("paste", (event) => {
      const pasted = Array.from((event.clipboardData && event.clipboardData.files) || []);
      if (pasted.length) {
        event.preventDefault(); // text pastes go on as usual
        add(pasted);
      }
    });
    form.addEventListener("dragover", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      form.classList.add("dropping");
    });
    form.addEventListener("dragleave", (event) => {
      if (!form.contains(event.relatedTarget)) form.classList.remove("dropping");
    });
    form.addEventListener("drop", (event) => {
      form.classList.remove("dropping");
      const dropped = Array.from((event.dataTransfer && event.dataTransfer.files) || []);
      if (!dropped.length) return;
      event.preventDefault();
      add(dropped);
    });
    return {
      files,
      clear() {
        files.length = 0;
        render();
      },
    };
  }

  function showError(element, text) {
    element.textContent = text;
    element.hidden = !text;
  }

  function refusal(result) {
    if (result.status === 401) return "Your session has ended. Log in again to continue.";
    return result.data.detail || `The server refused this (HTTP ${result.status}).`;
  }

  // A form whose textarea is sent as {"prompt": ...} (multipart when images are attached);
  // the text and the images stay unless the API took them.
  function promptForm(form, url, onAccepted) {
    const textarea = $("textarea", form);
    const error = $(".form-error", form);
    const button = $("button[type=submit]", form);
    const attached = attachments(form, textarea);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (button.disabled) return;
      button.disabled = true;
      form.setAttribute("aria-busy", "true");
      try {
        const result = attached.files.length
          ? await postForm(url, textarea.value, attached.files)
          : await postJson(url, { prompt: textarea.value });
        if (result.ok) {
          showError(error, "");
          attached.clear();
          onAccepted(result.data, textarea);
        } else {
          showError(error, refusal(result));
        }
      } catch (_) {
        showError(error, "The server did not answer. Check the connection and try again.");
      } finally {
        button.disabled = false;
        form.removeAttribute("aria-busy");
      }
    });
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
  }

  // A form sent as JSON of its named fields (empty ones left out; checkboxes as booleans).
  function jsonForm(form, url, onDone) {
    const error = $(".form-error", form);
    const button = $("button[type=submit]", form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (button.disabled) return;
      const body = {};
      for (const field of form.querySelectorAll("[name]")) {
        if (field.type === "checkbox") body[field.name] = field.checked;
        else if (field.value.trim()) body[field.name] = field.value.trim();
      }
      button.disabled = true;
      form.setAttribute("aria-busy", "true");
      try {
        const result = await postJson(url, body);
        showError(error, result.ok ? "" : refusal(result));
        if (result.ok) onDone(result.data, form);
      } catch (_) {
        showError(error, "The server did not answer. Check the connection and try again.");
      } finally {
        button.disabled = false;
        form.removeAttribute("aria-busy");
      }
    });
  }

  function home() {
    const form = $("#create-form");
    if (!form) return;
    promptForm(form, "/api/projects", (data) => {
      window.location.assign(`/projects/${data.project_id}`);
    });
    const importing = $("#import-form");
    if (importing) {
      jsonForm(importing, "/api/projects", (data) => {
        window.location.assign(`/projects/${data.project_id}`);
      });
    }
  }

  // The Git dialog: the clone address, and a push that answers once done.
  function gitDialog(projectId) {
    const dialog = $("#git-dialog");
    if (!dialog) return;
    $("#git-open").addEventListener("click", () => dialog.showModal());
    $("#git-close").addEventListener("click", () => dialog.close());
    const form = $("#push-form");
    const done = $("#push-done");
    form.addEventListener("submit", () => showError(done, ""));
    jsonForm(form, `/api/projects/${projectId}/push`, (data) => {
      $("#push-token").value = ""; // kept only as long as the push
      showError(done, `Done: ${data.detail}.`);
    });
    dialog.addEventListener("click", async (event) => {
      const copy = event.target.closest(".copy");
      if (!copy) return;
      const text = document.getElementById(copy.dataset.copyTarget).textContent;
      try {
        await navigator.clipboard.writeText(text);
        copy.textContent = "Copied";
      } catch (_) {
        copy.textContent = "Copy failed";
      }
      setTimeout(() => (copy.textContent = "Copy"), 1500);
    });
  }

  // ---- the project page ----

  function tabs() {
    const list = $("[role=tablist]");
    if (!list) return;
    const all = Array.from(list.querySelectorAll("[role=tab]"));
    const select = (tab, focus) => {
      for (const other of all) {
        const chosen = other === tab;
        other.setAttribute("aria-selected", String(chosen));
        other.tabIndex = chosen ? 0 : -1;
        document.getElementById(other.getAttribute("aria-controls")).hidden = !chosen;
      }
      if (focus) tab.focus();
    };
    for (const tab of all) {
      tab.addEventListener("click", () => select(tab, false));
      tab.addEventListener("keydown", (event) => {
        const index = all.indexOf(tab);
        const moves = { ArrowRight: 1, ArrowLeft: -1 };
        if (event.key in moves) {
          event.preventDefault();
          select(all[(index + moves[event.key] + all.length) % all.length], true);
        } else if (event.key === "Home" || event.key === "End") {
          event.preventDefault();
          select(event.key === "Home" ? all[0] : all[all.length - 1], true);
        }
      });
    }
  }

  function elapsed(started) {
    const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(started)) / 1000));
    const minutes = Math.floor(seconds / 60);
    return `${minutes}:${String(seconds % 60).padStart(2, "0")}`;
  }

  function tickElapsed() {
    for (const element of document.querySelectorAll(".elapsed[data-started]")) {
      if (element.dataset.started) element.textContent = elapsed(element.dataset.started);
    }
  }

  function project(workspace) {
    const projectId = workspace.dataset.project;
    const banner = $("#banner");
    let chosenVersion = null; // null: follow the newest version
    let lastId = 0;
    const chunks = new Map(); // "message:iteration:attempt" -> Map(offset -> text)

    // -- the streamed model text --
    function applyTokens() {
      const stream = $("#running .stream");
      if (!stream) return;
      const base = `${stream.dataset.message}:${stream.dataset.iteration}:`;
      let attempt = Number(stream.dataset.attempt);
      for (const key of chunks.keys()) {
        if (key.startsWith(base)) attempt = Math.max(attempt, Number(key.slice(base.length)));
      }
      if (attempt !== Number(stream.dataset.attempt)) {
        stream.dataset.attempt = String(attempt);
        stream.textContent = "";
      }
      const pieces = chunks.get(base + attempt);
      if (!pieces) return;
      let text = stream.textContent;
      let end = Array.from(text).length; // offsets count code points, as the server does
      while (pieces.has(end)) {
        const piece = pieces.get(end);
        text += piece;
        end += Array.from(piece).length;
      }
      if (text !== stream.textContent) {
        stream.textContent = text;
        keepScrolled();
      }
    }

    function keepScrolled() {
      const box = $("#conversation");
      if (box && box.dataset.stick !== "false") box.scrollTop = box.scrollHeight;
    }

    // -- the server-rendered parts --
    let refreshing = false;
    let again = false;

    async function refresh() {
      if (refreshing) {
        again = true;
        return;
      }
      refreshing = true;
      try {
        do {
          again = false;
          await refreshOnce();
        } while (again);
      } finally {
        refreshing = false;
      }
    }

    async function refreshOnce() {
      const query = chosenVersion ? `?version=${encodeURIComponent(chosenVersion)}` : "";
      let response;
      try {
        response = await fetch(`/ui/projects/${projectId}/conversation${query}`, {
          credentials: "same-origin",
        });
      } catch (_) {
        return; // offline: the stream's reconnection refreshes again
      }
      if (response.status === 401) {
        window.location.assign("/login"); // the session ended: log in again, once
        return;
      }
      if (!response.ok) return;
      const template = document.createElement("template");
      template.innerHTML = await response.text();
      const old = $("#conversation");
      const nearBottom = old.scrollHeight - old.scrollTop - old.clientHeight < 80;
      for (const fresh of Array.from(template.content.children)) {
        const current = document.getElementById(fresh.id);
        if (current) current.replaceWith(fresh);
      }
      const box = $("#conversation");
      box.dataset.stick = String(nearBottom);
      applyTokens();
      if (nearBottom) box.scrollTop = box.scrollHeight;
      tickElapsed();
      afterRefresh();
    }

    function afterRefresh() {
      const box = $("#conversation");
      const name = $("#project-name");
      if (name && name.textContent !== box.dataset.name) {
        name.textContent = box.dataset.name;
        document.title = `${box.dataset.name} · qai`;
      }
      showPreview(box.dataset.previewUrl, box.dataset.newest);
      const publication = $("#publication");
      // A publish sends no event when its build ends: look again while one builds.
      if (publication && publication.dataset.status === "building") setTimeout(refresh, 2000);
      const selected = $("#version-bar").dataset.selected;
      if (selected && $("#code").dataset.fragment !== selected) loadCode(selected);
    }

    // -- preview --
    const frame = $("#preview");
    let shownVersion = $("#conversation").dataset.newest;
    function showPreview(url, newest) {
      const newVersion = newest !== shownVersion;
      shownVersion = newest;
      if (!url) return;
      // A stable preview address stays the same across versions: reload it for a new one.
      if (frame.getAttribute("src") === url && !newVersion) return;
      loadPreview(url);
      frame.hidden = false;
      $("#preview-empty").hidden = true;
      const open = $("#open-preview");
      open.href = url;
      open.removeAttribute("aria-disabled");
      $("#preview-url").textContent = url;
      $("#preview-url").title = url;
    }
    $("#reload").addEventListener("click", () => {
      const url = frame.getAttribute("src");
      if (url) loadPreview(url);
    });

    // Load the preview once its address answers at all: while a new version's sandbox takes
    // over, a connection can fail outright, and an iframe left on the browser's network-error
    // page never retries. (Any answer will do: the gateway's "starting" page refreshes itself.)
    let previewLoads = 0;
    async function loadPreview(url) {
      const mine = ++previewLoads;
      for (let attempt = 0; attempt < 30 && mine === previewLoads; attempt++) {
        try {
          await fetch(url, { mode: "no-cors", cache: "no-store", credentials: "omit" });
          break;
        } catch (_) {
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      }
      if (mine === previewLoads) frame.src = url;
    }

    // -- code --
    function loadCode(fragmentId) {
      const code = $("#code");
      code.dataset.fragment = fragmentId;
      code.setAttribute("aria-busy", "true");
      window.htmx
        .ajax("GET", `/ui/fragments/${fragmentId}/code`, { target: "#code", swap: "innerHTML" })
        .finally(() => code.removeAttribute("aria-busy"));
    }

    workspace.addEventListener("change", (event) => {
      if (event.target.id === "version-select") {
        chosenVersion = event.target.value;
        refresh();
      }
    });

    workspace.addEventListener("click", async (event) => {
      const thumb = event.target.closest(".version-thumb");
      if (thumb) {
        chosenVersion = thumb.dataset.fragment;
        refresh();
        return;
      }
      const publish = event.target.closest("#publish, #publish-version");
      if (publish) {
        publish.disabled = true;
        const body = publish.dataset.fragment ? { fragment_id: publish.dataset.fragment } : {};
        const result = await postJson(`/api/projects/${projectId}/publish`, body)
          .catch(() => ({ ok: false, status: 0, data: { detail: "The server did not answer." } }));
        const error = $("#version-error");
        if (result.ok) {
          if (error) showError(error, "");
          publish.textContent = "Publishing…";
          setTimeout(refresh, 1000);
        } else {
          publish.disabled = false;
          if (error && publish.id === "publish-version") showError(error, refusal(result));
          else window.alert(refusal(result));
        }
        return;
      }
      const restore = event.target.closest("#restore");
      if (restore) {
        restore.disabled = true;
        const result = await postJson(`/api/fragments/${restore.dataset.fragment}/restore`)
          .catch(() => ({ ok: false, status: 0, data: { detail: "The server did not answer." } }));
        const error = $("#version-error");
        if (result.ok) {
          chosenVersion = null; // the restored version becomes the newest: follow it
          showError(error, "");
          restore.textContent = "Restoring…";
        } else {
          restore.disabled = false;
          showError(error, refusal(result));
        }
        return;
      }
      const file = event.target.closest(".file[data-path]");
      if (file) {
        for (const other of document.querySelectorAll(".file.is-open")) {
          other.classList.remove("is-open");
        }
        file.classList.add("is-open");
        return;
      }
      const copy = event.target.closest(".copy");
      if (copy) {
        const text = document.getElementById(copy.dataset.copyTarget).textContent;
        try {
          await navigator.clipboard.writeText(text);
          copy.textContent = "Copied";
        } catch (_) {
          copy.textContent = "Copy failed";
        }
        setTimeout(() => (copy.textContent = "Copy"), 1500);
      }
    });

    document.body.addEventListener("htmx:afterSettle", (event) => {
      for (const block of event.target.querySelectorAll("pre code[class*=language-]")) {
        if (window.hljs) window.hljs.highlightElement(block);
      }
    });

    // -- images in the conversation open full size --
    const lightbox = $("#lightbox");
    document.addEventListener("click", (event) => {
      const link = event.target.closest && event.target.closest(".msg-image");
      if (!link || !lightbox || typeof lightbox.showModal !== "function") return;
      event.preventDefault();
      $(".lightbox-image", lightbox).src = link.href;
      $(".lightbox-image", lightbox).alt = link.dataset.name || "";
      $(".lightbox-name", lightbox).textContent = link.title;
      $(".lightbox-open", lightbox).href = link.href;
      lightbox.showModal();
    });
    if (lightbox) {
      lightbox.addEventListener("click", (event) => {
        if (event.target === lightbox) lightbox.close(); // a click on the backdrop
      });
    }

    // -- follow-ups --
    promptForm($("#message-form"), `/api/projects/${projectId}/messages`, (_data, textarea) => {
      textarea.value = "";
      refresh();
    });

    // -- the event stream --
    let source = null;
    let sources = 0;
    function connect() {
      source = new EventSource(`/api/projects/${projectId}/events`);
      workspace.dataset.streams = String(++sources); // the browser's own reconnections: still 1
      source.addEventListener("open", () => {
        banner.hidden = true;
        workspace.dataset.connected = "true";
        refresh();
      });
      source.addEventListener("error", (event) => {
        if (event.data !== undefined) return; // an `error` event of the project, not the line
        banner.hidden = false;
        workspace.dataset.connected = "false";
        if (source.readyState === EventSource.CLOSED) {
          // The browser gave up (e.g. an error status): start over; seen events are skipped.
          refresh(); // and if the session ended, that goes to the login page
          setTimeout(connect, 2000);
        }
      });
      for (const kind of ["message", "run", "tool", "error"]) {
        source.addEventListener(kind, (event) => {
          if (event.data === undefined || !fresh(event)) return;
          refresh();
        });
      }
      source.addEventListener("token", (event) => {
        if (!fresh(event)) return;
        const token = JSON.parse(event.data);
        const key = `${token.message_id}:${token.iteration}:${token.attempt}`;
        if (!chunks.has(key)) chunks.set(key, new Map());
        chunks.get(key).set(token.offset, token.text);
        applyTokens();
      });
    }
    function fresh(event) {
      const id = Number(event.lastEventId);
      if (id && id <= lastId) return false;
      if (id) lastId = id;
      workspace.dataset.lastEventId = String(lastId);
      return true;
    }

    gitDialog(projectId);
    setInterval(tickElapsed, 1000);
    tickElapsed();
    keepScrolled();
    const selected = $("#version-bar").dataset.selected;
    if (selected) loadCode(selected);
    connect();
  }

  document.addEventListener("DOMContentLoaded", () => {
    home();
    tabs();
    const workspace = $("#workspace");
    if (workspace) project(workspace);
  });
})();

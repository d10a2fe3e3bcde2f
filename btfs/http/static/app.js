// The btfs page: lists the mount's torrents and files from /api, plays a file in the
// page's own <video>, adds a magnet or a .torrent. No framework, no build step.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const sections = new Map(); // info-hash -> {section, rows: Map(file index -> row)}
let canChange = false;

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  if (response.status !== 204) {
    try { body = await response.json(); } catch (e) { body = null; }
  }
  if (!response.ok) {
    const why = body && body.error ? body.error : response.status + " " + response.statusText;
    throw new Error(why);
  }
  return body;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return (unit ? value.toFixed(1) : String(value)) + " " + units[unit];
}

function say(text, kind) {
  const message = document.getElementById("message");
  message.textContent = text;
  message.className = kind || "";
}

function play(file, torrentName) {
  const video = document.getElementById("video");
  document.getElementById("player").hidden = false;
  document.getElementById("now-playing").textContent = torrentName + " / " + file.path;
  video.src = withToken(file.url);
  video.play().catch((error) => say("cannot play " + file.path + ": " + error.message, "error"));
}

function drawBar(container, cells) {
  const bar = container.firstChild;
  while (bar.children.length < cells.length) bar.append(el("span"));
  while (bar.children.length > cells.length) bar.lastChild.remove();
  cells.forEach((percent, i) => bar.children[i].style.setProperty("opacity", percent / 100));
}

function fileRow(torrent, file) {
  const playButton = el("button", { type: "button", class: "play", text: "Play" });
  playButton.addEventListener("click", () => play(file, torrent.name));
  const actions = el("td", { class: "actions" });
  if (file.media) actions.append(playButton);
  actions.append(el("a", { href: withToken(file.url), text: "open" }));
  const row = el("tr", { "data-index": String(file.index) },
    el("td", { class: "path", text: file.path }),
    el("td", { class: "size", text: size(file.size) }),
    el("td", { class: "bar" }, el("div")),
    el("td", { class: "pct" }),
    actions);
  return row;
}

function torrentSection(torrent) {
  const remove = el("button", { type: "button", class: "remove", text: "Remove" });
  remove.addEventListener("click", async () => {
    try {
      await api("api/torrents/" + torrent.info_hash, { method: "DELETE" });
      say("removed " + torrent.name, "ok");
      refresh();
    } catch (error) { say(error.message, "error"); }
  });
  const header = el("header", {},
    el("h2", { text: torrent.name }),
    el("span", { class: "figures" }),
    el("a", { href: withToken(torrent.playlist), text: "playlist (.m3u)" }));
  if (canChange) header.append(remove);
  const section = el("section", { class: "torrent", "data-hash": torrent.info_hash },
    header, el("table", {}, el("tbody")));
  return { section, rows: new Map() };
}

function figures(torrent) {
  const parts = [(torrent.progress * 100).toFixed(1) + "% of " + size(torrent.size),
    torrent.pieces_verified + "/" + torrent.pieces + " pieces"];
  if ("peers" in torrent) parts.push(torrent.peers + (torrent.peers === 1 ? " peer" : " peers"));
  if ("download_rate" in torrent) parts.push("↓ " + size(torrent.download_rate) + "/s");
  if ("upload_rate" in torrent) parts.push("↑ " + size(torrent.upload_rate) + "/s");
  if (torrent.problem) parts.push("problem: " + torrent.problem);
  return parts.join(" · ");
}

function render(data) {
  canChange = data.can_change;
  const container = document.getElementById("torrents");
  const seen = new Set();
  for (const torrent of data.torrents) {
    seen.add(torrent.info_hash);
    let entry = sections.get(torrent.info_hash);
    if (!entry) {
      entry = torrentSection(torrent);
      sections.set(torrent.info_hash, entry);
      container.append(entry.section);
    }
    entry.section.querySelector(".figures").textContent = figures(torrent);
    const body = entry.section.querySelector("tbody");
    for (const file of torrent.files) {
      let row = entry.rows.get(file.index);
      if (!row) {
        row = fileRow(torrent, file);
        entry.rows.set(file.index, row);
        body.append(row);
      }
      drawBar(row.querySelector("td.bar"), file.bar);
      row.querySelector("td.pct").textContent = (file.progress * 100).toFixed(0) + "%";
    }
  }
  for (const [hash, entry] of sections) {
    if (!seen.has(hash)) { entry.section.remove(); sections.delete(hash); }
  }
  const empty = container.querySelector(".empty");
  if (data.torrents.length && empty) empty.remove();
  if (!data.torrents.length && !empty) container.append(el("p", { class: "empty", text: "No torrents." }));
  else if (empty) empty.textContent = "No torrents.";
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try { render(await api("api/torrents?files=1")); }
  catch (error) { say("cannot reach the mount: " + error.message, "error"); }
  finally { refreshing = false; }
}

async function add(body, contentType, what) {
  say("adding " + what + "…");
  try {
    const added = await api("api/torrents", { method: "POST", body,
                                              headers: { "Content-Type": contentType } });
    say("added " + added.info_hash, "ok");
    await refresh();
  } catch (error) { say("cannot add " + what + ": " + error.message, "error"); }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("playlist").href = withToken("playlist.m3u");
  document.getElementById("add-magnet").addEventListener("submit", (event) => {
    event.preventDefault();
    const magnet = document.getElementById("magnet").value.trim();
    if (!magnet) { say("paste a magnet link first", "error"); return; }
    add(JSON.stringify({ magnet }), "application/json", "the magnet");
  });
  document.getElementById("torrent-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) await add(await file.arrayBuffer(), "application/x-bittorrent", file.name);
    event.target.value = "";
  });
  refresh();
  setInterval(refresh, 2000);
});

// The chat page: plain JS, no build step. Every piece of user text goes through textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("chat.token"),
  user: sessionStorage.getItem("chat.user"),
  socket: null,
  rooms: new Set(JSON.parse(sessionStorage.getItem("chat.rooms") || "[]")),
  active: sessionStorage.getItem("chat.active"),
  members: new Map(),      // room -> {names: Set of the members known here, count: the room's member count}
  typing: new Map(),       // room -> Map(user -> timeout)
  messages: new Map(),     // room -> [elements]
  seqs: new Map(),         // room -> last seq shown (a reload starts over from the latest history)
  held: new Map(),         // room -> Map(seq -> frame): arrived ahead of a missing seq
  outbox: new Map(),       // client_id -> {frame, item}: sent (or typed offline), not yet acknowledged
  pendingShare: null,      // the "share" header whose binary frame comes next
  retry: 0,
  refused: false,
  lastTyping: 0,
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(value, text) {
  const status = $("status");
  status.dataset.state = value;
  status.textContent = text || value;
}

function banner(text, bad) {
  const node = $("banner");
  node.hidden = !text;
  node.textContent = text || "";
  node.classList.toggle("bad", Boolean(bad));
}

function saveRooms() {
  sessionStorage.setItem("chat.rooms", JSON.stringify([...state.rooms]));
  if (state.active) sessionStorage.setItem("chat.active", state.active);
}

// ------------------------------------------------------------------ accounts

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    let detail = data && data.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    if (response.status === 429) detail = `${detail || "too many attempts"}`;
    throw new Error(detail || `${method} ${path} failed (${response.status})`);
  }
  return data;
}

async function login(action, username, password) {
  state.token = null;
  const body = await api("POST", `/api/${action}`, { username, password });
  state.token = body.token;
  state.user = username;
  sessionStorage.setItem("chat.token", body.token);
  sessionStorage.setItem("chat.user", username);
}

function forget() {
  state.token = null;
  for (const key of ["chat.token", "chat.user", "chat.rooms", "chat.active", "chat.dm_seq"]) sessionStorage.removeItem(key);
  state.seqs = new Map();
  state.outbox = new Map();
  state.rooms = new Set();
  state.active = null;
  state.messages = new Map();
  state.members = new Map();
}

function showChat() {
  $("login").hidden = true;
  $("chat").hidden = false;
  $("logout").hidden = false;
  $("whoami").textContent = state.user ? `signed in as ${state.user}` : "";
}

function showLogin(message) {
  $("chat").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("whoami").textContent = "";
  $("login-error").textContent = message || "";
}

// ------------------------------------------------------------------ socket

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);  // the token goes in the first frame, not the URL
  socket.binaryType = "blob";
  state.socket = socket;
  socket.onopen = () => { setStatus("connecting"); socket.send(JSON.stringify({ type: "auth", token: state.token })); };
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") return receiveBinary(event.data);
    const data = JSON.parse(event.data);  // an array: frames the server queued while this socket was busy
    for (const frame of Array.isArray(data) ? data : [data]) handle(frame);
  };
  socket.onclose = (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    // 1008 refused, 4001 logged out, 4003 token expired, 4008 a limit: sign in again rather than retry
    if ([1008, 4001, 4003, 4008].includes(event.code)) {
      state.refused = true;
      setStatus("refused");
      banner(`Connection refused: ${event.reason || "not allowed"}. Please sign in again.`, true);
      forget();
      showLogin(`Refused: ${event.reason || "not allowed"}`);
      return;
    }
    const delay = Math.min(10000, 250 * 2 ** state.retry) * (0.5 + Math.random() / 2);
    state.retry += 1;
    setStatus("reconnecting");
    banner(`Connection lost (code ${event.code}); reconnecting in ${(delay / 1000).toFixed(1)} s…`);
    setTimeout(connect, delay);
  };
}

function send(frame) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(frame));
    return true;
  }
  return false;
}

setInterval(() => send({ type: "ping" }), 20000);
setInterval(() => send({ type: "rooms" }), 10000);

// ------------------------------------------------------------------ frames from the server

const handlers = {
  welcome(frame) {
    state.retry = 0;
    setStatus("online", `online · worker ${frame.worker}`);
    document.body.dataset.worker = frame.worker;
    banner("");
    send({ type: "sync", dm_since: Number(sessionStorage.getItem("chat.dm_seq") || 0) });  // direct messages missed
    for (const room of state.rooms) join(room);
    if (state.active && !state.rooms.has(state.active)) join(state.active);
    for (const entry of state.outbox.values()) if (entry.frame.type === "direct") send(entry.frame);
    send({ type: "rooms" });
  },
  joined(frame) {
    state.rooms.add(frame.room);
    setMembers(frame);
    const list = [];
    const recovering = frame.recovered !== undefined;  // a rejoin with since: history continues what is shown
    if (!recovering) for (const message of frame.history) list.push(messageItem(message));
    const seen = new Set(frame.history.map((m) => String(m.id)));
    for (const item of state.messages.get(frame.room) || []) if (recovering || !seen.has(item.dataset.id)) list.push(item);
    for (const item of state.messages.get(null) || []) list.push(item);  // what arrived while in no room
    state.messages.delete(null);
    state.messages.set(frame.room, list);
    if (!state.active || state.active === frame.room || !state.rooms.has(state.active)) state.active = frame.room;
    saveRooms();
    render();
    state.held.delete(frame.room);
    if (recovering) {
      for (const message of frame.history) roomMessage(message);
      if (frame.recovered === false) notice(`some messages of #${frame.room} could not be recovered (older ones: the room's history)`);
    }
    setSeq(frame.room, Math.max(frame.seq || 0, ...frame.history.map((m) => m.seq || 0)));
    for (const entry of state.outbox.values()) if (entry.frame.room === frame.room) send(entry.frame);  // unacknowledged: resend
    send({ type: "rooms" });
  },
  left(frame) {
    state.rooms.delete(frame.room);
    if (state.active === frame.room) state.active = [...state.rooms][0] || null;
    saveRooms();
    render();
  },
  message(frame) { roomMessage(frame); },
  ack(frame) { settle(frame.client_id, "sent"); },
  presence(frame) {
    // the frame names who came and went, not the whole room: applied to the members known here
    const known = state.members.get(frame.room) || { names: new Set(), count: 0 };
    for (const user of frame.joined) known.names.add(user);
    for (const user of frame.left) known.names.delete(user);
    known.count = frame.count;
    state.members.set(frame.room, known);
    renderCount(frame.room);
    for (const user of frame.joined) append(frame.room, el("li", "system", `${user} joined`));
    for (const user of frame.left) append(frame.room, el("li", "system", `${user} left`));
    renderMembers();
  },
  members(frame) { setMembers(frame); renderCount(frame.room); renderMembers(); },
  typing(frame) {
    const room = state.typing.get(frame.room) || new Map();
    clearTimeout(room.get(frame.from));
    if (frame.typing) room.set(frame.from, setTimeout(() => { room.delete(frame.from); renderTyping(); }, 4000));
    else room.delete(frame.from);
    state.typing.set(frame.room, room);
    renderTyping();
  },
  directs(frame) {
    for (const message of frame.messages) handlers.direct(message);
  },
  direct(frame) {
    if (frame.seq) sessionStorage.setItem("chat.dm_seq", String(Math.max(frame.seq, Number(sessionStorage.getItem("chat.dm_seq") || 0))));
    const item = el("li", "direct");
    item.append(el("span", "from", `✉ ${frame.from} → you`), el("span", "text", frame.text));
    append(state.active, item);
  },
  direct_sent() {},
  announcement(frame) {
    const item = el("li", "announcement");
    item.append(el("span", "from", "📣 announcement"), el("span", "text", frame.text));
    append(frame.room || state.active, item);
  },
  share(frame) { state.pendingShare = frame; },
  rooms(frame) { renderRooms(frame.rooms); },
  error(frame) {
    // a refused send names its client_id; not_stored (the database was down) stays in the outbox for the next resend
    if (frame.client_id && frame.code !== "not_stored") settle(frame.client_id, "failed");
    append(state.active, el("li", "system", `⚠ ${frame.code}: ${frame.detail}`));
  },
  pong() {},
};

function handle(frame) {
  const handler = handlers[frame.type];
  if (handler) handler(frame);
}

function receiveBinary(blob) {
  const header = state.pendingShare;
  state.pendingShare = null;
  if (!header) return;
  const item = el("li", "image");
  item.append(el("span", "from", header.from), el("span", "text", "shared an image"));
  const image = el("img");
  image.alt = `image from ${header.from}`;
  image.src = URL.createObjectURL(new Blob([blob], { type: header.mime }));
  item.append(image);
  append(header.room, item);
}

// Room messages are shown in seq order, each once: one that arrives ahead of a missing seq waits,
// and if the gap is still open 2 s later the page rejoins with since (the server sends the gap).
function roomMessage(frame) {
  const last = state.seqs.get(frame.room) || 0;
  if (frame.seq !== undefined && frame.seq <= last) return;  // shown already
  if (frame.seq !== undefined && last && frame.seq > last + 1) {
    const held = state.held.get(frame.room) || new Map();
    held.set(frame.seq, frame);
    state.held.set(frame.room, held);
    setTimeout(() => { if ((state.seqs.get(frame.room) || 0) === last && state.held.get(frame.room)?.size) join(frame.room); }, 2000);
    return;
  }
  for (const list of frame.client_id ? state.messages.values() : []) {  // our own send: moved to where its seq puts it
    const index = list.findIndex((item) => item.dataset.clientId === frame.client_id);
    if (index >= 0) list.splice(index, 1)[0].remove();
  }
  const item = messageItem(frame);
  if (frame.client_id) { item.dataset.clientId = frame.client_id; if (frame.from === state.user) item.dataset.state = "sent"; }
  state.outbox.delete(frame.client_id);
  append(frame.room, item);
  if (frame.seq !== undefined) setSeq(frame.room, frame.seq);
  const next = state.held.get(frame.room)?.get((frame.seq || 0) + 1);
  if (next) { state.held.get(frame.room).delete(next.seq); roomMessage(next); }
}

function setSeq(room, seq) {
  if (!seq || seq < (state.seqs.get(room) || 0)) return;
  state.seqs.set(room, seq);
}

function join(room) {
  const since = state.seqs.get(room);
  send(since ? { type: "join", room, since } : { type: "join", room });
}

function clientId() {
  if (crypto.randomUUID) return crypto.randomUUID().replaceAll("-", "");
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// pending (in the outbox) -> sent (acknowledged: stored) or failed (refused)
function settle(id, outcome) {
  const entry = state.outbox.get(id);
  if (!entry) return;
  state.outbox.delete(id);
  entry.item.dataset.state = outcome;
  entry.item.title = outcome;
}

function messageItem(message) {
  const item = el("li", "message");
  item.dataset.id = message.id;
  if (message.seq !== undefined) item.dataset.seq = message.seq;
  const time = new Date(message.ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  item.append(el("span", "time", time), el("span", "from", message.from), el("span", "text", message.text));
  return item;
}

function notice(text) { append(state.active, el("li", "system", `⚠ ${text}`)); }

function append(room, item) {
  // room null: no room is open (a direct message, an error); kept under null until a room is joined
  const key = room || null;
  const list = state.messages.get(key) || [];
  if (item.dataset.id && list.some((other) => other.dataset.id === item.dataset.id)) return;
  list.push(item);
  if (list.length > 500) list.shift();
  state.messages.set(key, list);
  if (key === (state.active || null)) {
    const box = $("messages");
    box.append(item);
    box.scrollTop = box.scrollHeight;
  }
}

// ------------------------------------------------------------------ rendering

function render() {
  $("room-title").textContent = state.active ? `# ${state.active}` : "No room: join one";
  $("invite").hidden = !state.active;
  $("messages").replaceChildren(...(state.messages.get(state.active) || []));
  $("messages").scrollTop = $("messages").scrollHeight;
  renderMembers();
  renderTyping();
  for (const item of $("rooms").children) item.classList.toggle("active", item.dataset.room === state.active);
}

function renderRooms(rooms) {
  const counts = new Map(rooms.map((room) => [room.name, room.members]));
  for (const room of state.rooms) if (!counts.has(room)) counts.set(room, 0);
  const items = [...counts.entries()].sort().map(([name, count]) => {
    const item = el("li");
    item.dataset.room = name;
    item.append(el("span", "", `# ${name}`), el("span", "count", String(count)));
    item.classList.toggle("active", name === state.active);
    item.onclick = () => { if (state.rooms.has(name)) { state.active = name; saveRooms(); render(); } else send({ type: "join", room: name }); };
    return item;
  });
  $("rooms").replaceChildren(...items);
}

// joined and members frames list the first members by name (truncated: there are more) and the count
function setMembers(frame) {
  const names = new Set(frame.members);
  if (frame.type === "joined" && state.user) names.add(state.user);  // in the room, even if not in the first ones
  state.members.set(frame.room, { names, count: Math.max(frame.count, names.size) });
}

function renderCount(room) {
  // the rooms list is polled every 10 s; a room we are in knows its count at once
  const count = (state.members.get(room) || { count: 0 }).count;
  for (const item of $("rooms").children) if (item.dataset.room === room) item.lastChild.textContent = String(count);
}

const SHOWN_MEMBERS = 200;  // names listed at most; the rest is "and N more"

function renderMembers() {
  const known = state.members.get(state.active) || { names: new Set(), count: 0 };
  const users = [...known.names].sort().slice(0, SHOWN_MEMBERS);
  const more = Math.max(known.count - users.length, 0);
  $("member-count").textContent = state.active ? `(${known.count})` : "";
  $("members-more").hidden = !more;
  $("members-more").textContent = more ? `and ${more} more` : "";
  $("members").replaceChildren(...users.map((user) => {
    const item = el("li", "", user === state.user ? `${user} (you)` : user);
    item.dataset.user = user;
    item.title = "send a direct message";
    item.onclick = () => { $("text").value = `/msg ${user} `; $("text").focus(); };
    return item;
  }));
}

function renderTyping() {
  const users = [...(state.typing.get(state.active) || new Map()).keys()];
  $("typing").textContent = users.length ? `${users.join(", ")} ${users.length > 1 ? "are" : "is"} typing…` : "";
}

// ------------------------------------------------------------------ user actions

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const action = event.submitter && event.submitter.value === "signup" ? "signup" : "login";
  try {
    await login(action, $("username").value.trim(), $("password").value);
    $("password").value = "";
    state.refused = false;
    banner("");
    showChat();
    connect();
  } catch (error) {
    $("login-error").textContent = error.message;
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("POST", "/api/logout"); } catch (error) { /* the session may have ended already */ }
  const socket = state.socket;
  state.socket = null;
  if (socket) socket.close();
  forget();
  setStatus("offline");
  banner("");
  showLogin("Logged out.");
});

$("join").addEventListener("submit", async (event) => {
  event.preventDefault();
  const room = $("room-name").value.trim();
  if (!room) return;
  if ($("room-private").checked) {
    try { await api("POST", "/api/rooms", { name: room, private: true }); } catch (error) { notice(error.message); return; }
    $("room-private").checked = false;
  }
  state.active = room;
  send({ type: "join", room });
  $("room-name").value = "";
});

$("invite").addEventListener("submit", async (event) => {
  event.preventDefault();
  const username = $("invitee").value.trim();
  if (!username || !state.active) return;
  try {
    await api("POST", `/api/rooms/${encodeURIComponent(state.active)}/invites`, { username });
    append(state.active, el("li", "system", `${username} is invited to ${state.active}`));
    $("invitee").value = "";
  } catch (error) { notice(error.message); }
});

$("compose").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  const direct = text.match(/^\/msg\s+(\S+)\s+([\s\S]+)$/);
  if (!direct && !state.active) { notice("join a room first (or /msg user text)"); return; }
  const id = clientId();
  const frame = direct ? { type: "direct", to: direct[1], text: direct[2], client_id: id }
    : { type: "message", room: state.active, text, client_id: id };
  // shown as pending at once; offline, it waits in the outbox and is sent (with the same client_id) on reconnect
  const item = el("li", direct ? "direct" : "message");
  item.dataset.clientId = id;
  item.dataset.state = "pending";
  item.title = "pending";
  item.append(el("span", "from", direct ? `✉ you → ${direct[1]}` : state.user), el("span", "text", frame.text));
  state.outbox.set(id, { frame, item });
  append(state.active, item);
  send(frame);
  if (state.active && state.lastTyping) send({ type: "typing", room: state.active, typing: false });
  state.lastTyping = 0;  // the next keystroke announces typing again at once
  $("text").value = "";
});

$("text").addEventListener("input", () => {
  const now = Date.now();
  // a command such as /msg is not typing in the room (and must not hint at a private message)
  if (state.active && !$("text").value.startsWith("/") && now - state.lastTyping > 2000) {
    state.lastTyping = now;
    send({ type: "typing", room: state.active, typing: true });
  }
});

$("image").addEventListener("change", async () => {
  const file = $("image").files[0];
  $("image").value = "";
  if (!file || !state.active) return;
  if (file.size > 256 * 1024) { notice("images are limited to 256 KiB"); return; }
  const data = await file.arrayBuffer();
  if (!send({ type: "share", room: state.active, mime: file.type })) { notice("not connected: share the image again once online"); return; }
  state.socket.send(data);
});

if (state.token && state.user) { showChat(); connect(); } else { showLogin(); }

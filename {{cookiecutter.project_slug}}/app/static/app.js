// The chat page: plain JS, no build step. Every piece of user text goes through textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("chat.token"),
  user: sessionStorage.getItem("chat.user"),
  socket: null,
  rooms: new Set(JSON.parse(sessionStorage.getItem("chat.rooms") || "[]")),
  active: sessionStorage.getItem("chat.active"),
  members: new Map(),      // room -> [users]
  typing: new Map(),       // room -> Map(user -> timeout)
  messages: new Map(),     // room -> [elements]
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

// ------------------------------------------------------------------ login

async function login(username) {
  const response = await fetch("/api/login", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ username }),
  });
  if (!response.ok) throw new Error(response.status === 422 ? "use 1-32 letters, digits, . _ -" : `login failed (${response.status})`);
  const body = await response.json();
  state.token = body.token;
  state.user = username;
  sessionStorage.setItem("chat.token", body.token);
  sessionStorage.setItem("chat.user", username);
}

function showChat() {
  $("login").hidden = true;
  $("chat").hidden = false;
  $("whoami").textContent = state.user ? `signed in as ${state.user}` : "";
}

function showLogin(message) {
  $("chat").hidden = true;
  $("login").hidden = false;
  $("whoami").textContent = "";
  $("login-error").textContent = message || "";
}

// ------------------------------------------------------------------ socket

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(state.token)}`);
  socket.binaryType = "blob";
  state.socket = socket;
  socket.onopen = () => { setStatus("connecting"); };
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") return receiveBinary(event.data);
    const data = JSON.parse(event.data);  // an array: frames the server queued while this socket was busy
    for (const frame of Array.isArray(data) ? data : [data]) handle(frame);
  };
  socket.onclose = (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    if (event.code === 1008) {
      state.refused = true;
      setStatus("refused");
      banner(`Connection refused: ${event.reason || "not allowed"}. Please sign in again.`, true);
      sessionStorage.removeItem("chat.token");
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
    for (const room of state.rooms) send({ type: "join", room });
    if (state.active && !state.rooms.has(state.active)) send({ type: "join", room: state.active });
    send({ type: "rooms" });
  },
  joined(frame) {
    state.rooms.add(frame.room);
    state.members.set(frame.room, frame.members);
    const list = [];
    for (const message of frame.history) list.push(messageItem(message));
    const seen = new Set(frame.history.map((m) => m.id));
    for (const item of state.messages.get(frame.room) || []) if (!seen.has(item.dataset.id)) list.push(item);
    for (const item of state.messages.get(null) || []) list.push(item);  // what arrived while in no room
    state.messages.delete(null);
    state.messages.set(frame.room, list);
    if (!state.active || state.active === frame.room || !state.rooms.has(state.active)) state.active = frame.room;
    saveRooms();
    render();
    send({ type: "rooms" });
  },
  left(frame) {
    state.rooms.delete(frame.room);
    if (state.active === frame.room) state.active = [...state.rooms][0] || null;
    saveRooms();
    render();
  },
  message(frame) { append(frame.room, messageItem(frame)); },
  presence(frame) {
    state.members.set(frame.room, frame.members);
    renderCount(frame.room);
    for (const user of frame.joined) append(frame.room, el("li", "system", `${user} joined`));
    for (const user of frame.left) append(frame.room, el("li", "system", `${user} left`));
    renderMembers();
  },
  members(frame) { state.members.set(frame.room, frame.members); renderCount(frame.room); renderMembers(); },
  typing(frame) {
    const room = state.typing.get(frame.room) || new Map();
    clearTimeout(room.get(frame.from));
    if (frame.typing) room.set(frame.from, setTimeout(() => { room.delete(frame.from); renderTyping(); }, 4000));
    else room.delete(frame.from);
    state.typing.set(frame.room, room);
    renderTyping();
  },
  direct(frame) {
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
  error(frame) { append(state.active, el("li", "system", `⚠ ${frame.code}: ${frame.detail}`)); },
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

function messageItem(message) {
  const item = el("li", "message");
  item.dataset.id = message.id;
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

function renderCount(room) {
  // the rooms list is polled every 10 s; a room we are in knows its members at once
  const count = (state.members.get(room) || []).length;
  for (const item of $("rooms").children) if (item.dataset.room === room) item.lastChild.textContent = String(count);
}

function renderMembers() {
  const users = state.members.get(state.active) || [];
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
  try {
    await login($("username").value.trim());
    state.refused = false;
    banner("");
    showChat();
    connect();
  } catch (error) {
    $("login-error").textContent = error.message;
  }
});

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  const room = $("room-name").value.trim();
  if (room) { state.active = room; send({ type: "join", room }); }
  $("room-name").value = "";
});

$("compose").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  const direct = text.match(/^\/msg\s+(\S+)\s+([\s\S]+)$/);
  if (!direct && !state.active) { notice("join a room first (or /msg user text)"); return; }
  const frame = direct ? { type: "direct", to: direct[1], text: direct[2] } : { type: "message", room: state.active, text };
  // while reconnecting nothing can be sent: keep the text in the box instead of dropping it
  if (!send(frame)) { notice("not connected: your message is still in the box, send it again once online"); return; }
  if (direct) {
    const item = el("li", "direct");
    item.append(el("span", "from", `✉ you → ${direct[1]}`), el("span", "text", direct[2]));
    append(state.active, item);
  }
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

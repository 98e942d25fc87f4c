// The live page: every new event over Server-Sent Events from /v1/stream, rendered by the
// server (format=html: the same markup as the list it sent with the page, values escaped
// there). The server already rendered the newest events and the charts; this only adds
// what arrives. A reconnecting EventSource sends Last-Event-ID (the last seq_id it saw), so
// nothing is missed across a dropped connection. An older page (?before=) has no stream.
"use strict";

function follow() {
  const stream = document.body.dataset.stream;
  if (!stream) return;
  const list = document.getElementById("events");
  const count = document.getElementById("count");
  const live = document.getElementById("live");
  const url = new URL(stream, location.href);
  url.searchParams.set("after", document.body.dataset.after);
  const source = new EventSource(url);
  source.onopen = () => { live.className = "live on"; live.textContent = "live"; };
  source.onerror = () => { live.className = "live off"; live.textContent = "reconnecting"; };
  source.addEventListener("message", (event) => {
    list.querySelector("li.empty")?.remove();
    list.insertAdjacentHTML("afterbegin", event.data);
    list.firstElementChild?.classList.add("new");
    count.textContent = String(Number(count.textContent) + 1);
    while (list.children.length > 500) list.lastElementChild.remove();
  });
}

document.addEventListener("DOMContentLoaded", follow);

// The live page: per-topic activity charts from /v1/stats, then every new event over
// Server-Sent Events from /v1/stream. The server already rendered the newest events; this
// only adds what arrives. A reconnecting EventSource sends Last-Event-ID (the last seq_id
// it saw), so nothing is missed across a dropped connection.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function eventTopic(topic) {
  // org.debian.<environment>.<event topic>: the page shows the event topic
  return topic.split(".").slice(3).join(".") || topic;
}

function eventTime(body, timestamp) {
  // As page._when: the mail's date when it is one, else the arrival time; never throws.
  const date = (body.origin || {}).date;
  if (typeof date === "string" && date) return date;
  const moment = new Date((typeof timestamp === "number" ? timestamp : 0) * 1000);
  return isNaN(moment) ? "" : moment.toISOString().replace(/\.\d+Z$/, "Z");
}

function eventItem(message) {
  // The same markup as the server's page.event_item.
  const body = message.msg || {};
  const auth = (body.origin || {}).auth || {};
  const verdict = String(auth.verdict || "none");
  const topic = eventTopic(String(message.topic || ""));
  const summary = String(body.summary || topic);
  const when = eventTime(body, message.timestamp);
  const url = typeof body.url === "string" && /^https?:\/\//.test(body.url) ? body.url : null;
  const item = element("li", { class: "event new", "data-seq-id": String(message.seq_id) });
  item.append(element("time", { datetime: when }, when.replace("T", " ").replace(/Z$/, "")), " ");
  item.append(element("span", { class: "topic" }, topic), " ");
  item.append(url ? element("a", { href: url }, summary) : summary, " ");
  for (const name of (message.index || {}).packages || []) {
    item.append(element("span", { class: "package" }, String(name)), " ");
  }
  const badge = verdict + (auth.method ? ` (${auth.method})` : "");
  item.append(element("span", { class: `trust ${verdict}`, title: String(auth.reason || "") }, badge));
  return item;
}

function drawCharts(stats) {
  const box = document.getElementById("charts");
  box.replaceChildren();
  const days = [];
  const end = new Date(Number(document.body.dataset.chartEnd) * 1000);
  for (let n = 29; n >= 0; n--) {
    days.push(new Date(end.getTime() - n * 86400000).toISOString().slice(0, 10));
  }
  const topics = Object.keys(stats.topics);
  if (!topics.length) {
    box.append(element("p", { class: "none" }, "No events in these 30 days."));
    return;
  }
  for (const topic of topics) {
    const counts = days.map((day) => (stats.periods[day] || {})[topic] || 0);
    const top = Math.max(...counts, 1);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${days.length * 10} 20`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `${topic}: ${stats.topics[topic]} events in 30 days`);
    counts.forEach((count, n) => {
      if (!count) return;
      const height = Math.max(1, (count / top) * 20);
      const bar = document.createElementNS(SVG, "rect");
      for (const [k, v] of Object.entries({ x: n * 10 + 1, y: 20 - height, width: 8, height })) {
        bar.setAttribute(k, String(v));
      }
      const tip = document.createElementNS(SVG, "title");
      tip.textContent = `${days[n]}: ${count}`;
      bar.append(tip);
      svg.append(bar);
    });
    box.append(element("span", { class: "name" }, topic), svg,
      element("span", { class: "total" }, String(stats.topics[topic])));
  }
}

async function loadCharts() {
  const response = await fetch(document.body.dataset.stats, { headers: { Accept: "application/json" } });
  if (response.ok) drawCharts(await response.json());
}

function follow() {
  const list = document.getElementById("events");
  const count = document.getElementById("count");
  const live = document.getElementById("live");
  const url = new URL(document.body.dataset.stream, location.href);
  url.searchParams.set("after", document.body.dataset.after);
  const source = new EventSource(url);
  source.onopen = () => { live.className = "live on"; live.textContent = "live"; };
  source.onerror = () => { live.className = "live off"; live.textContent = "reconnecting"; };
  source.addEventListener("message", (event) => {
    let item;
    try {
      item = eventItem(JSON.parse(event.data));
    } catch (error) {  // one odd event must not stop the page: show that it came
      item = element("li", { class: "event new" }, `an event the page cannot show (${error})`);
    }
    list.querySelector("li.empty")?.remove();
    list.prepend(item);
    count.textContent = String(Number(count.textContent) + 1);
    while (list.children.length > 500) list.lastElementChild.remove();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  follow();
  loadCharts().catch((error) => console.warn("charts unavailable:", error));
});

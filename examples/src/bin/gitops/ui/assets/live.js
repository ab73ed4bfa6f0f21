// Live log lines: every log block with a data-live address (a running stage, or one waiting for
// an approval) follows that stage's server-sent events and appends each line it has not shown
// yet, as text. The stream sends the lines kept so far first, then new ones, then "end".
"use strict";

function follow(log) {
  // Lines kept so far, shown or not (a long log shows its last lines only).
  let total = Number(log.dataset.lines) || 0;
  const status = log.parentElement.querySelector(".live-status");
  const count = log.parentElement.querySelector(".count");
  const say = (text) => { if (status) { status.textContent = text; } };
  let seen = 0;
  const source = new EventSource(log.dataset.live);
  source.addEventListener("open", () => { seen = 0; say("live"); });
  source.addEventListener("line", (event) => {
    seen += 1;
    if (seen <= total) {
      return;
    }
    total += 1;
    if (count) {
      count.textContent = total === 1 ? "1 line" : `${total} lines`;
    }
    let entry;
    try {
      entry = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    const line = document.createElement("div");
    line.className = { stderr: "line stderr", backend: "line note" }[entry.stream] || "line";
    line.textContent = String(entry.line);
    log.querySelector(".empty")?.remove();
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(line);
    if (atBottom) {
      log.scrollTop = log.scrollHeight;
    }
  });
  source.addEventListener("end", () => {
    source.close();
    say("the stage has ended: reload the page for its result");
    status?.classList.add("ended");
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      say("not live: reload the page");
    } else {
      say("reconnecting…");
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const log of document.querySelectorAll(".log[data-live]")) {
    follow(log);
  }
});

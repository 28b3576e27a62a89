// Live events: append what /live/stream sends (server-sent events), newest first.
(function () {
  "use strict";
  var KEEP = 200;
  var list = document.getElementById("live-events");
  var status = document.getElementById("live-status");
  var received = 0;

  function setStatus(state, text) {
    status.setAttribute("data-state", state);
    status.textContent = text;
  }

  function text(tag, className, value) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    node.textContent = value;
    return node;
  }

  function chip(channel, colour) {
    var span = text("span", "chip", "");
    var dot = text("span", "dot", "");
    dot.setAttribute("aria-hidden", "true");
    dot.style.background = colour;
    span.appendChild(dot);
    span.appendChild(document.createTextNode(channel || "(none)"));
    return span;
  }

  function item(event) {
    var li = document.createElement("li");
    var time = text("time", "", (event.received_at || "").replace("T", " ").slice(0, 19));
    time.setAttribute("datetime", event.received_at || "");
    li.appendChild(time);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(chip(event.channel, event.colour));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(text("span", "event", event.event || event.type));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(text("span", "muted", event.type + " · " + event.source));
    var who = event.user_id || event.anonymous_id;
    if (who) {
      li.appendChild(document.createTextNode(" "));
      var link = text("a", "", who);
      link.href = "/person?id=" + encodeURIComponent(who);
      li.appendChild(link);
    }
    li.className = "new";
    return li;
  }

  var source = new EventSource("/live/stream");
  source.onopen = function () { setStatus("open", "Connected: waiting for events."); };
  source.onerror = function () { setStatus("error", "Disconnected; reconnecting…"); };
  source.addEventListener("events", function (message) {
    var payload = JSON.parse(message.data);
    payload.events.forEach(function (event) {
      list.insertBefore(item(event), list.firstChild);
      received += 1;
    });
    while (list.children.length > KEEP) { list.removeChild(list.lastChild); }
    var note = payload.dropped ? " (" + payload.dropped + " skipped: this view was too slow)" : "";
    setStatus("open", "Connected: " + received + " events received." + note);
  });
})();

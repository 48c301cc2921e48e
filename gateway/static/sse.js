// Server-Sent Events read from a fetch() body, as EventSource would read them (the HTML
// standard's parsing rules), because EventSource cannot send an API key header.
// Text may arrive cut anywhere, even between the CR and LF of one line ending.

export class EventStreamParser {
  /**
   * `onEvent(name, data, id)` is called for each complete event; `lastId` is the id of the
   * last event handled before (what a reconnection sends as Last-Event-ID).
   */
  constructor(onEvent, lastId = "") {
    this.onEvent = onEvent;
    this.lastId = lastId; // the standard's "last event ID string": set when an event is dispatched
    this.pending = ""; // the unfinished line
    this.idBuffer = lastId;
    this.name = "";
    this.data = [];
  }

  /** Take the next piece of the stream's text. */
  feed(text) {
    let chunk = this.pending + text;
    let held = "";
    if (chunk.endsWith("\r")) {
      held = "\r"; // maybe the first half of CR LF: decide when the next piece comes
      chunk = chunk.slice(0, -1);
    }
    const lines = chunk.split(/\r\n|\r|\n/);
    this.pending = lines.pop() + held;
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) return; // a comment (a keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.name = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.idBuffer = value;
  }

  dispatch() {
    this.lastId = this.idBuffer;
    const name = this.name || "message";
    const data = this.data.join("\n");
    const some = this.data.length > 0;
    this.name = "";
    this.data = [];
    if (some) this.onEvent(name, data, this.lastId);
  }
}

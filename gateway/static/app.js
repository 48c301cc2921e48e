// Sends the form to POST /analyze/ and shows the stories, token usage or the server's error.
const form = document.getElementById("story-form");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const button = document.getElementById("submit");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData();
  for (const file of document.getElementById("files").files) data.append("files", file);
  const prompt = document.getElementById("prompt").value.trim();
  if (prompt) data.append("prompt", prompt);
  button.disabled = true;
  results.hidden = true;
  statusLine.textContent = "Working on your story…";
  try {
    const response = await fetch("/analyze/", { method: "POST", body: data });
    const body = await response.json().catch(() => ({ detail: response.statusText }));
    if (!response.ok) {
      statusLine.textContent = `Error ${response.status}: ${body.detail}`;
      return;
    }
    document.getElementById("english").textContent = body.english;
    document.getElementById("thai").textContent = body.thai;
    const u = body.token_usage;
    document.getElementById("usage").textContent =
      `Tokens: ${u.input_tokens} in, ${u.output_tokens} out, ${u.total_tokens} total`;
    results.hidden = false;
    statusLine.textContent = "Done.";
  } catch (err) {
    statusLine.textContent = `Could not reach the server: ${err}`;
  } finally {
    button.disabled = false;
  }
});

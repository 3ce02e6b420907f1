// Live steering beside `popsteer serve`. <section id="live" data-api="" data-user=... data-num-neurons=...>:
// the server's address comes from the page's ?api=http://127.0.0.1:8000 (or data-api). Without one, or when
// no server answers, the page keeps its precomputed strengths and says so. With one, a slider asks
//   POST {api}/recommend {"user_id": <token>, "num_neurons": N, "alpha": a, "k": 10}
// for this user's top-10 at that strength, and lists the items and the neurons steering moved most.
function popsteerLive(el) {
  const given = new URLSearchParams(window.location.search).get("api") || el.dataset.api || "";
  const api = given.replace(/\/$/, "");
  const status = el.querySelector(".live-status");
  if (!api) return false;
  const out = el.querySelector(".live-list"), moved = el.querySelector(".live-moved");
  const input = el.querySelector("input[type=range]"), shown = el.querySelector(".live-alpha");
  input.hidden = false;
  async function ask() {
    shown.textContent = `alpha = ${input.value}`;
    const body = {user_id: el.dataset.user, num_neurons: Number(el.dataset.numNeurons), alpha: Number(input.value), k: 10};
    let reply;
    try {
      reply = await fetch(`${api}/recommend`, {method: "POST", headers: {"content-type": "application/json"},
                                                body: JSON.stringify(body)});
    } catch (err) {
      status.textContent = `No server answers at ${api} (${err}): the lists above are the precomputed strengths.`;
      return;
    }
    const data = await reply.json();
    if (!reply.ok) { status.textContent = `The server refused: ${JSON.stringify(data.detail || data)}`; return; }
    status.textContent = `Live from ${api}: N = ${data.steering.num_neurons}, alpha = ${data.steering.alpha}.`;
    out.innerHTML = "";
    for (const it of data.items) {
      const li = document.createElement("li");
      li.textContent = it.title || it.item_id;
      li.dataset.item = it.item_id;
      out.appendChild(li);
    }
    moved.textContent = data.moved_neurons.length ? "Moved most: " + data.moved_neurons.map(
      m => `neuron ${m.neuron} (d ${m.cohen_d.toFixed(2)}): ${m.before.toFixed(2)} -> ${m.after.toFixed(2)}`).join("; ") : "";
  }
  input.addEventListener("change", ask);
  ask();
  return true;
}
document.addEventListener("DOMContentLoaded", () => { const el = document.getElementById("live"); if (el) popsteerLive(el); });

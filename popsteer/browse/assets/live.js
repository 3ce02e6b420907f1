// Live steering hook. <section id="live" data-api="" data-user=... data-num-neurons=...>: while data-api is
// empty (the default: no `popsteer serve` exists yet) the page shows only its precomputed strengths. When a
// server is given (data-api="http://host:port"), a slider asks it for the user's top-10 at another strength:
//   GET {api}/steer?user=<token>&num_neurons=<N>&alpha=<a>  ->  {"items": [{"title": ..., "group": "H"|"M"|"T"}, ...]}
function popsteerLive(el) {
  const api = (el.dataset.api || "").replace(/\/$/, "");
  if (!api) return false;
  const out = el.querySelector(".live-list"), input = el.querySelector("input[type=range]");
  input.hidden = false;
  input.addEventListener("change", async () => {
    const q = new URLSearchParams({user: el.dataset.user, num_neurons: el.dataset.numNeurons, alpha: input.value});
    const reply = await fetch(`${api}/steer?${q}`);
    const body = await reply.json();
    out.innerHTML = "";
    for (const it of body.items) { const li = document.createElement("li"); li.textContent = `${it.title} (${it.group})`; out.appendChild(li); }
  });
  return true;
}
document.addEventListener("DOMContentLoaded", () => { const el = document.getElementById("live"); if (el) popsteerLive(el); });

// faceverify demo page: POST /verify with the two chosen photos, show the aligned crops,
// the similarity, the threshold, the verdict and what they mean. The operating points and the
// default come from the server's /health (the model's calibration), so the page's verdict is the
// one POST /verify gives without options. No framework, no external requests.
"use strict";

const $ = (id) => document.getElementById(id);
const points = {};  // operating point name -> {name, threshold, far, tar} from /health

function describePoint(p) {
  if (p.far !== null) return `about 1 in ${Math.round(1 / p.far).toLocaleString("en")} pairs of different people score above it`
    + (p.tar !== null ? `, and ${(100 * p.tar).toFixed(1)}% of same-person pairs do` : "");
  if (p.name === "best_accuracy") return "the threshold with the best accuracy on the calibration pairs";
  return "a calibrated threshold";
}

async function loadOperatingPoints() {
  let model;
  try {
    const response = await fetch("/health");
    model = (await response.json()).model;
  } catch (err) {
    return;  // keep "the model's default": the server decides
  }
  if (!model || !model.operating_points || !model.operating_points.length) return;
  const select = $("operating_point");
  select.textContent = "";
  for (const p of model.operating_points) {
    points[p.name] = p;
    const option = document.createElement("option");
    option.value = p.name;
    option.textContent = `${p.name}: ${p.threshold.toFixed(3)}` + (p.name === model.default_operating_point ? " (the model's default)" : "");
    option.selected = p.name === model.default_operating_point;
    select.appendChild(option);
  }
}

function meaning(body) {
  const src = body.threshold_source;
  const side = body.same_person ? "above" : "not above";
  let why;
  if (src.source === "calibration") why = `operating point ${src.operating_point}: ` + describePoint(points[src.operating_point] || { name: src.operating_point, far: null, tar: null });
  else if (src.source === "request") why = "a threshold given in the request";
  else why = "no calibration: this default threshold has no statistical meaning";
  return `Cosine similarity of the two faces' embeddings (-1 to 1; higher is more alike) ${body.similarity.toFixed(4)} is ${side} `
    + `the threshold ${body.threshold.toFixed(4)} (${why}), so: ${body.same_person ? "same person" : "different people"}.`;
}

loadOperatingPoints();

function showPreview(input, img) {
  const file = input.files[0];
  if (!file) { img.hidden = true; return; }
  img.src = URL.createObjectURL(file);
  img.hidden = false;
}

$("image1").addEventListener("change", () => showPreview($("image1"), $("preview1")));
$("image2").addEventListener("change", () => showPreview($("image2"), $("preview2")));

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

$("verify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").hidden = true;
  $("result").hidden = true;
  const f1 = $("image1").files[0], f2 = $("image2").files[0];
  if (!f1 || !f2) { showError("Choose two photos first."); return; }
  const form = new FormData();
  form.append("image1", f1);
  form.append("image2", f2);
  if ($("operating_point").value) form.append("operating_point", $("operating_point").value);
  form.append("policy", $("policy").value);
  form.append("include_crops", "true");
  const headers = {};
  if ($("api_key").value) headers["X-API-Key"] = $("api_key").value;
  $("verify").disabled = true;
  $("status").textContent = "Comparing…";
  try {
    const response = await fetch("/verify", { method: "POST", body: form, headers });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const which = body.details && body.details.field ? ` (${body.details.field})` : "";
      showError(`${body.code || response.status}${which}: ${body.message || response.statusText}`);
      return;
    }
    $("crop1").src = "data:image/png;base64," + body.faces[0].crop_png;
    $("crop2").src = "data:image/png;base64," + body.faces[1].crop_png;
    $("similarity").textContent = body.similarity.toFixed(4);
    $("threshold").textContent = body.threshold.toFixed(4);
    const src = body.threshold_source;
    $("threshold_source").textContent = src.source + (src.operating_point ? ` (${src.operating_point})` : "");
    $("timing").textContent = `${Math.round(body.timings_ms.total)} ms`;
    $("verdict").textContent = body.same_person ? "Same person" : "Different people";
    $("verdict").className = "verdict " + (body.same_person ? "same" : "different");
    $("meaning").textContent = meaning(body);
    $("result").hidden = false;
  } catch (err) {
    showError("The server could not be reached: " + err);
  } finally {
    $("verify").disabled = false;
    $("status").textContent = "";
  }
});

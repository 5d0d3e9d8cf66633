// faceverify demo page: POST /verify with the two chosen photos, show the aligned crops,
// the similarity, the threshold and the verdict. No framework, no external requests.
"use strict";

const $ = (id) => document.getElementById(id);

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
  form.append("operating_point", $("operating_point").value);
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
    $("result").hidden = false;
  } catch (err) {
    showError("The server could not be reached: " + err);
  } finally {
    $("verify").disabled = false;
    $("status").textContent = "";
  }
});

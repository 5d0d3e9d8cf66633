"""faceverify benchmarks in one command: ``python -m bench [--quick]`` (``make bench``).

Runs the sections below, each in its own subprocess, and writes ``RESULTS.md`` and
``RESULTS.json``, into ``--out DIR`` if given; a full run (every section at full size) updates the
committed ``bench/RESULTS.*``, any other run (``--quick``, ``--sections``, smaller sizes or fewer
repeats) writes to a new temporary folder and says where, so it never overwrites those figures: machine facts, versions, and every figure as the median of repeated runs
with its ratio to the peer measured in the same run. A missing optional peer (dlib /
face_recognition: ``bash bench/peers/install.sh``) gives a "skipped: <reason>" entry, never a
failed run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from faceverify.paths import display_command

from bench.common import REPO, dump, load_average, machine_info, peak_rss_mb, ratio, versions

# (name, module, title); each module has run(opts) -> dict
SECTIONS = [
    ("machine_limit", "bench.machine_limit", "1. Machine limit: GEMM peak and backbones at batch 32"),
    ("embedding", "bench.embed_speed", "2. Embedding throughput vs facenet-pytorch InceptionResnetV1"),
    ("verify_pair", "bench.verify_pair", "3. End-to-end pair verification vs face_recognition/dlib"),
    ("prep", "bench.prep_speed", "4. Detection/alignment throughput (faceverify prep)"),
    ("gallery", "bench.gallery_search", "5. Gallery search vs numpy exact (synthetic vectors)"),
    ("service", "bench.service_speed", "6. Service: POST /verify under load"),
    ("training", "bench.train_speed", "7. Training speed"),
    ("scale_out", "bench.scale_out", "8. Scale-out: gallery in SQLite (1 replica) vs PostgreSQL (1 and 2 replicas)"),
]
NAMES = [s[0] for s in SECTIONS]
# sections that measure a per-request latency path get its OpenMP wait policy (faceverify/threads.py),
# which must be in the environment before torch loads; the throughput sections keep OpenMP's defaults
LATENCY_SECTIONS = ("verify_pair",)
# Forward + backward ~ 3x the forward FLOPs (backward = 2x forward: one product for the input
# gradient, one for the weight gradient; Kaplan et al. 2020, "Scaling Laws for Neural Language
# Models", sec. 2.1: C ~ 6N per token = 2N forward + 4N backward).
TRAIN_FLOPS_PER_FORWARD = 3.0


# -- one section, in its own process ----------------------------------------------------------------


def run_section_here(name: str, opts: dict, result_path: Path) -> int:
    import importlib

    if opts.get("threads"):
        import torch

        torch.set_num_threads(int(opts["threads"]))
    module = dict((n, m) for n, m, _ in SECTIONS)[name]
    result = importlib.import_module(module).run(opts)
    result["peak_rss_mb"] = round(peak_rss_mb())
    result_path.write_text(dump(result))
    return 0


def run_section(name: str, opts: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"fv-bench-{name}-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench", "--run-section", name, "--section-opts", json.dumps(opts), "--section-result", str(out)]
        env = dict(os.environ)
        if name in LATENCY_SECTIONS:
            from faceverify.threads import apply_wait_policy

            apply_wait_policy(env)
        if opts.get("threads"):
            env["OMP_NUM_THREADS"] = str(opts["threads"])
        load0, t0 = load_average(), time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout)
            error = None if proc.returncode == 0 and out.is_file() else f"exit status {proc.returncode}; see the log above"
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout:.0f} s"
        meta = {"elapsed_s": round(time.perf_counter() - t0, 1), "load_avg_start": load0, "load_avg_end": load_average()}
        if error:
            return {"error": error, **meta}
        return {**json.loads(out.read_text()), **meta}


# -- headline figures, goals, ratios across sections ------------------------------------------------


def derive(sections: dict) -> dict:
    out: dict = {}
    vp = sections.get("verify_pair", {})
    if "headline" in vp:
        out["verify_pair"] = vp["headline"]
    g1m = sections.get("gallery", {}).get("sizes", {}).get("1000000")
    if g1m:
        out["gallery_1m"] = {k: g1m[k] for k in ("p50_ms", "p95_ms", "recall_at_1", "speedup_vs_numpy", "memory_gb", "build_s",
                                                "enroll_s", "subject_rank1")}
        out["gallery_1m"].update(numpy_p50_ms=g1m["numpy"]["p50_ms"], index=g1m["index"], memory_what=g1m["memory_what"],
                                 synthetic=True)
    ml = sections.get("machine_limit", {})
    peak = ml.get("gemm_fp32_gflops", {}).get("median")
    tr = sections.get("training", {})
    for key in ("default_recipe", "gpu_recipe_batch2"):
        row = tr.get(key)
        if row and peak:
            # sustained training GFLOP/s over the fp32 GEMM peak of the same run
            row["fraction_of_fp32_gemm_peak"] = round(row["train_img_s"] * TRAIN_FLOPS_PER_FORWARD * row["gflops"] / peak, 3)
    if tr.get("default_recipe") and ml.get("backbones"):
        default_row = next((r for r in ml["backbones"] if r["label"].startswith("default recipe")), None)
        if default_row:
            tr["default_recipe"]["train_vs_fp32_inference"] = ratio(tr["default_recipe"]["train_img_s"], default_row["fp32_img_s"])
    out["goals"] = goals(out)
    return out


def goals(headline: dict) -> list[dict]:
    rows = []
    vp, g = headline.get("verify_pair"), headline.get("gallery_1m")
    if vp:
        rows.append({"goal": "faceverify (the service's default runtime) >= 4x faster per pair than face_recognition/dlib (p50)",
                     "value": vp.get("speedup"), "met": None if vp.get("speedup") is None else vp["speedup"] >= 4})
        c = vp.get("contended")
        if c:
            rows.append({"goal": "one competing busy process: faceverify p95 <= 2x its quiet p95", "value": c.get("faceverify_p95_vs_quiet"),
                         "met": None if c.get("faceverify_p95_vs_quiet") is None else c["faceverify_p95_vs_quiet"] <= 2})
            rows.append({"goal": "one competing busy process: faceverify p95 below dlib's (dlib p95 / faceverify p95 > 1)",
                         "value": c.get("dlib_p95_vs_faceverify"),
                         "met": None if c.get("dlib_p95_vs_faceverify") is None else c["dlib_p95_vs_faceverify"] > 1})
    if g:
        for text, key, ok in (("gallery 1M: p50 <= 10 ms/query", "p50_ms", lambda v: v <= 10),
                              ("gallery 1M: recall@1 >= 0.99 against exact", "recall_at_1", lambda v: v >= 0.99),
                              ("gallery 1M: >= 20x faster than numpy exact", "speedup_vs_numpy", lambda v: v >= 20),
                              ("gallery 1M: index memory <= 1.2 GB", "memory_gb", lambda v: v <= 1.2)):
            rows.append({"goal": text, "value": g.get(key), "met": None if g.get(key) is None else bool(ok(g[key]))})
    return rows


def skipped_entries(obj, path="") -> list[str]:
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "skipped" and isinstance(v, str):
                found.append(f"{path}: {v}")
            else:
                found += skipped_entries(v, f"{path}.{k}" if path else k)
    return found


# -- markdown ---------------------------------------------------------------------------------------


def fmt(v, digits=1) -> str:
    if v is None:
        return "–"
    if isinstance(v, dict) and "median" in v:
        return fmt(v["median"], digits)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.{digits}f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def x(v) -> str:
    return "–" if v is None else f"{v:.2f}x"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def md_machine_limit(s: dict) -> str:
    rows = []
    for r in s["backbones"]:
        v = r["img_s"]
        rows.append([r["label"], r["input"], fmt(r["gflops_per_img"], 2), fmt(v["fp32"]), fmt(v["fp32_channels_last"]),
                     fmt(v["bf16_channels_last"]), r["best_variant"], fmt(r["best_gflop_s"]), fmt(r["fraction_of_fp32_gemm_peak"], 2),
                     fmt(r["fp32_fraction_of_fp32_gemm_peak"], 2)])
    by = s["gemm_fp32_by_library"]
    names = {"torch_fp32": "torch.matmul (MKL)", "onednn_conv1x1_fp32": "torch 1x1 conv (oneDNN)", "numpy_fp32": "numpy (OpenBLAS)"}
    return (f"fp32 GEMM peak ({s['gemm_n']}² products, {s['threads']} threads): **{fmt(s['gemm_fp32_gflops'])} GFLOP/s** by "
            f"{names[s['gemm_fp32_source']]} (runs {s['gemm_fp32_gflops']['min']:.0f}–{s['gemm_fp32_gflops']['max']:.0f}); "
            + ", ".join(f"{names[k]} {fmt(v)}" for k, v in by.items())
            + f"; bf16 GEMM peak {fmt(s['gemm_bf16_gflops'])} GFLOP/s ({x(s['bf16_gemm_speedup'])} the fp32 peak; torch.matmul "
            f"{fmt(s['gemm_bf16_by_library']['torch_bf16'])}, 1x1 conv {fmt(s['gemm_bf16_by_library']['onednn_conv1x1_bf16'])}).\n\n"
            + table(["network (batch 32)", "input", "GFLOPs/img", "fp32 img/s", "fp32 channels_last", "bf16 channels_last", "best",
                     "best GFLOP/s", "fraction of fp32 GEMM peak (best)", "fraction (fp32)"], rows)
            + "\n\nFraction of peak = img/s × GFLOPs/img ÷ fp32 GEMM GFLOP/s (FLOPs: torch.utils.flop_counter, multiply-add = 2); "
              "above 1 means the bf16 units beat the fp32 GEMM peak (the JSON also has each network against the peak of its own dtype).")


def md_embedding(s: dict) -> str:
    peer = s["peer"]
    rows = []
    if "skipped" not in peer:
        rows.append([peer["name"], peer["input"], fmt(peer["gflops_per_img"], 2), fmt(peer["batch1_img_s"]), fmt(peer["batch32_img_s"]), "1.00x", "1.00x"])
    for r in s["ours"]:
        rows.append([r["label"], r["input"], fmt(r["gflops_per_img"], 2), fmt(r["batch1_img_s"]), fmt(r["batch32_img_s"]),
                     x(r["batch1_vs_peer"]), x(r["batch32_vs_peer"])])
    note = f"\n\n{peer['skipped']}" if "skipped" in peer else ""
    return (f"Pipeline: {s['pipeline']} ({s['precision']}, {s['threads']} threads).\n\n"
            + table(["network", "input", "GFLOPs/img", "img/s batch 1", "img/s batch 32", "vs peer (b1)", "vs peer (b32)"], rows) + note)


def md_verify_pair(s: dict) -> str:
    fv, d = s["faceverify"], s["dlib"]
    ft = s.get("faceverify_torch", {"skipped": "not measured"})
    rows = [[f"faceverify (in-process, {fv.get('runtime', 'torch')} runtime: the service's default)", fmt(fv["p50_ms"]),
             fmt(fv["p95_ms"]), fmt(fv["accuracy"], 3), fmt(fv["best_threshold_accuracy_optimistic"], 3), fv["pairs_without_face"],
             f"{fv['torch_threads']} intra-op thread(s), OMP_WAIT_POLICY={fv.get('omp_wait_policy')}"],
            ["faceverify, torch runtime", "–" if "skipped" in ft else fmt(ft["p50_ms"]), "–" if "skipped" in ft else fmt(ft["p95_ms"]),
             "" if "skipped" in ft else fmt(ft["accuracy"], 3), "" if "skipped" in ft else fmt(ft["best_threshold_accuracy_optimistic"], 3),
             "" if "skipped" in ft else ft["pairs_without_face"], ft.get("skipped", "same pairs, interleaved")],
            ["faceverify, 1 thread", fmt(fv["one_thread"]["p50_ms"]), fmt(fv["one_thread"]["p95_ms"]), "", "", "",
             f"first {fv['one_thread']['n']} pairs"]]
    if "skipped" in d:
        rows.append(["face_recognition/dlib", "–", "–", "–", "–", "–", d["skipped"]])
    else:
        rows.append(["face_recognition/dlib", fmt(d["p50_ms"]), fmt(d["p95_ms"]), fmt(d["accuracy"], 3),
                     fmt(d["best_threshold_accuracy_optimistic"], 3), d["pairs_without_face"], "1 thread"])
    c = s.get("contended")
    if c:
        load = f"load average {c['load_avg_start']} at its start"
        rows.append(["faceverify + 1 competing busy process", fmt(c["faceverify"]["p50_ms"]), fmt(c["faceverify"]["p95_ms"]),
                     "", "", "", f"same pairs; {load}"])
        cd = c["dlib"]
        rows.append(["face_recognition/dlib + 1 competing busy process", "–" if "skipped" in cd else fmt(cd["p50_ms"]),
                     "–" if "skipped" in cd else fmt(cd["p95_ms"]), "", "", "", cd.get("skipped", "same pairs")])
    h = s["headline"]
    model = s["model"]
    acc_note = ("" if model["trained"] else
                "\n\n**The model is untrained** (no models/default yet): faceverify's verdicts and accuracy mean nothing "
                "here; only its latency, and dlib's accuracy, are meaningful.")
    return (f"{s['pairs']} pairs ({s['pair_selection']}), one at a time; faceverify threshold "
            f"{fv['threshold']} ({fv['threshold_source']}, operating point {fv.get('operating_point')}), dlib tolerance 0.6 "
            "(face_recognition's default).\n\n"
            + table(["system", "p50 ms/pair", "p95 ms/pair", "accuracy", "best-threshold accuracy (optimistic)", "pairs without face", "notes"], rows)
            + f"\n\n**Speedup (dlib p50 ÷ faceverify p50): {x(h['speedup'])}** (with 1 thread: {x(h['speedup_one_thread'])}; "
              f"torch runtime: {x(h.get('speedup_torch_runtime'))}); goal ≥ 4x." + md_contended(h.get("contended")) + acc_note)


def md_contended(c: dict | None) -> str:
    if not c:
        return ""
    return (f" **Contended** (one competing busy process): faceverify p95 {fmt(c['faceverify_p95_ms'])} ms = "
            f"{x(c['faceverify_p95_vs_quiet'])} its quiet p95 ({fmt(c['faceverify_quiet_p95_ms'])} ms; goal ≤ 2x); "
            f"dlib p95 {fmt(c['dlib_p95_ms'])} ms ({x(c['dlib_p95_vs_faceverify'])} faceverify's).")


def md_prep(s: dict) -> str:
    rows = []
    for w in (1, 2):
        r = s[f"workers_{w}"]
        rows.append([f"faceverify prep --workers {w}", fmt(r["images_per_s"]), fmt(r["wall_images_per_s"]), r["kept"], r["failed"]])
    d = s["dlib"]
    rows.append(["dlib HOG + 5-point chip (1 process)", "–" if "skipped" in d else fmt(d["images_per_s"]), "", "", d.get("skipped", f"{d['images']} images")])
    return (f"{s['images']} LFW images ({s['source']}), chunk size {s['chunk_size']}, median of {s['repeats']} runs.\n\n"
            + table(["pipeline", "img/s (prep's own)", "img/s incl. start-up", "kept", "failed / notes"], rows)
            + f"\n\n2 workers vs 1: {x(s['scaling_2_vs_1_workers'])}; 1 worker vs dlib: {x(s['workers_1_vs_dlib'])}.")


def md_gallery(s: dict) -> str:
    rows = []
    for n, r in s["sizes"].items():
        idx = r["index"]
        kind = idx["type"] + (f" ({idx['codec']}, nlist {idx['nlist']}, nprobe {idx['nprobe']})" if idx["type"] == "ivf" else " (exact)")
        rows.append([f"{int(n):,}", kind, fmt(r["p50_ms"], 2), fmt(r["p95_ms"], 2), fmt(r["recall_at_1"], 3), fmt(r["subject_rank1"], 3),
                     fmt(r["numpy"]["p50_ms"], 2), x(r["speedup_vs_numpy"]), fmt(r["build_s"]), fmt(r["enroll_s"]),
                     fmt(r["memory_gb"], 3), fmt(r["float32_vectors_gb"], 3)])
    return (f"**Synthetic** {s['dim']}-d unit vectors, {s['faces_per_subject']} faces per subject; queries: {s['queries_are']}. "
            "Latency: `Gallery.search(k=1)` one query at a time (index + exact re-scoring from SQLite, 1 thread); numpy: "
            "`argmax(X @ q)` in memory. Recall@1: the gallery's top-1 face = numpy's exact top-1 face. Build: reopening the gallery "
            "without a snapshot (read SQLite, train, add). Memory: index bytes (serialised FAISS index; SQLite on disk not counted).\n\n"
            + table(["enrolled", "index", "p50 ms", "p95 ms", "recall@1", "subject rank-1", "numpy p50 ms", "speedup",
                     "build s", "enroll s", "index GB", "float32 GB"], rows))


def md_service(s: dict) -> str:
    rows = [[r["concurrency"], r["requests"], r["ok"], fmt(r["req_per_s"]), fmt(r["p50_ms"]), fmt(r["p95_ms"]), fmt(r["p99_ms"])]
            for r in s["verify"]]
    ip = s["in_process"]
    return (f"{s['server']}, {s['pairs']}; {s['repeats']} runs of {s['duration_s']} s (≤ {s['max_requests']} requests) per level, medians.\n\n"
            + table(["clients", "requests", "ok", "req/s", "p50 ms", "p95 ms", "p99 ms"], rows)
            + f"\n\nIn-process `Verifier.verify` on the same pairs: p50 {fmt(ip['p50_ms'])} ms → service at 1 client "
              f"{x(s['service_vs_in_process_p50'])} of it; req/s at 32 clients {x(s['throughput_32_vs_1_clients'])} of 1 client.")


def md_training(s: dict) -> str:
    rows = []
    for key, label in (("default_recipe", "default recipe"), ("gpu_recipe_batch2", "GPU recipe network, batch 2 on CPU")):
        r = s.get(key)
        if r:
            rows.append([f"{label} ({r['recipe']})", r["backbone"], r["input"], f"{r['train_batch']} / {r['classes']:,}", fmt(r["train_img_s"]),
                         fmt(r["gflops"], 2), fmt(r.get("fraction_of_fp32_gemm_peak"), 3), fmt(r["peak_rss_MB"], 0)])
    tvi = (s.get("default_recipe") or {}).get("train_vs_fp32_inference")
    return (f"The trainer of `faceverify train` (`{s['trainer']}`: DataLoader and "
            "augmentation, forward, backward, optimizer step, logging) on a packed set of random pixels; the img/s it logs, "
            f"median of {s['repeats']} window(s) of >= {s['seconds']} s after a warm-up window.\n\n"
            + table(["recipe", "backbone", "input", "batch / classes", "train img/s", "fwd GFLOPs/img", "fraction of fp32 GEMM peak", "peak RSS MB"], rows)
            + "\n\nFraction of peak = img/s × 3 × forward GFLOPs ÷ fp32 GEMM GFLOP/s (backward ≈ 2× forward; Kaplan et al. 2020, §2.1)."
            + (f" Training runs at {x(tvi)} of the same network's fp32 inference rate." if tvi else ""))


def md_scale_out(s: dict) -> str:
    rows = []
    for key, label in (("sqlite_1", "SQLite, 1 replica"), ("postgres_1", "PostgreSQL, 1 replica"), ("postgres_2", "PostgreSQL, 2 replicas")):
        r = s[key]
        if "skipped" in r:
            rows.append([label] + [r["skipped"]] + [""] * 7)
            continue
        one, many = r["identify"][0], r["identify"][-1]
        follow = r.get("follow_latency") or {}
        rows.append([label, fmt(one["p50_ms"]), fmt(one["p99_ms"]), fmt(many["p50_ms"]), fmt(many["p99_ms"]), fmt(many["req_per_s"]),
                     fmt(r["api_enroll"]["req_per_s"]), fmt(r["store_enroll"]["per_s"]), fmt(follow.get("p50_ms"))])
    return (f"{s['enrolled']:,} synthetic {s['dim']}-d faces bulk-loaded into the store; `POST /identify` by embedding (gallery path, "
            f"no inference) at 1 and {s['levels'][-1]} clients (2 replicas: clients alternate), {s['duration_s']} s per level; API "
            f"enroll: photos at {s['enroll_clients']} clients (detection + embedding + commit); store enroll: `Gallery.enroll`, one "
            "transaction per face; follow: 201 on one replica → /identify on the other returns the face.\n\n"
            + table(["setup", "p50 ms (1)", "p99 ms (1)", f"p50 ms ({s['levels'][-1]})", f"p99 ms ({s['levels'][-1]})",
                     f"req/s ({s['levels'][-1]})", "API enroll/s", "store enroll/s", "follow p50 ms"], rows)
            + f"\n\nPostgreSQL 1 replica vs SQLite, p50 at 1 client: {x(s.get('pg1_vs_sqlite_p50_1_client'))}; 2 replicas vs 1, "
              f"req/s at {s['levels'][-1]} clients: {x(s.get('pg2_vs_pg1_req_per_s_8_clients'))}. {s['note']}")


RENDER = {"machine_limit": md_machine_limit, "embedding": md_embedding, "verify_pair": md_verify_pair, "prep": md_prep,
          "gallery": md_gallery, "service": md_service, "training": md_training, "scale_out": md_scale_out}


def markdown(res: dict) -> str:
    m = res["machine"]
    load = res["load_avg_start"]
    contended = max(load) > 0.5 * (m["usable_cpus"] or 1)
    lines = [f"# faceverify benchmarks{' (--quick)' if res['quick'] else ''}", "",
             f"`{res['command']}` — {res['started']}, {res['duration_s']:.0f} s in all.", "",
             f"**Machine**: {m['cpu']}, {m['usable_cpus']} usable CPUs ({', '.join(m['cpu_features'])}), {m['memory_gb']} GB RAM; "
             f"{m['platform']}; Python {m['python']}; git {m['git']}.",
             f"**Versions**: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + ".",
             f"**Load average** at start {load}, at end {res['load_avg_end']}"
             + (" — **the CPU was busy before the run started: other work may have shared it; treat the figures as lower "
                "bounds** (each section's load average is given)." if contended else "."), ""]
    if res["model"] and not res["model"]["trained"]:
        lines += [f"**Model**: {res['model']['note']}.", ""]
    elif res["model"]:
        lines += [f"**Model**: {res['model']['path']} ({res['model']['backbone']}, {res['model']['template']}).", ""]
    if res["headline"]["goals"]:
        lines += ["## Goals", "", table(["goal", "value", "met"], [[g["goal"], fmt(g["value"], 3), {True: "yes", False: "**no**", None: "–"}[g["met"]]]
                                                                  for g in res["headline"]["goals"]]), ""]
    if res["skipped"]:
        lines += ["## Skipped", ""] + [f"- {s}" for s in res["skipped"]] + [""]
    for name, _, title in SECTIONS:
        if name not in res["sections"]:
            continue
        s = res["sections"][name]
        lines += [f"## {title}", "", f"_{s['elapsed_s']:.0f} s, load average {s['load_avg_start']} → {s['load_avg_end']}_", ""]
        if "error" in s:
            lines += [f"**failed**: {s['error']}", ""]
            continue
        try:
            lines += [RENDER[name](s), ""]
        except (KeyError, TypeError, ValueError) as exc:  # a renderer bug must not lose the JSON
            lines += [f"(could not render this section: {exc!r}; see RESULTS.json)", ""]
    lines += ["Every figure is the median of repeated runs (latencies: percentiles over single runs); the JSON has each run. "
              "Re-run: `make bench` (`python -m bench`), `python -m bench --quick` for a smoke run. Sections: bench/README.md.", ""]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------


def results_dir(args: argparse.Namespace, order: list[str]) -> Path:
    """``--out``, else bench/ for a full run (the committed figures), else a new temporary folder:
    a smoke or partial run must not overwrite the committed figures."""
    if args.out:
        return Path(args.out)
    narrowed = [args.pairs, args.prep_images, args.gallery_sizes, args.repeats]
    if not args.quick and order == NAMES and all(v is None for v in narrowed):
        return REPO / "bench"
    return Path(tempfile.mkdtemp(prefix="faceverify-bench-"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: fewer sizes, repeats and pairs (< 3 min on a quiet machine)")
    p.add_argument("--out", default=None, help="directory for RESULTS.md and RESULTS.json (default: bench/ for a full run, "
                                              "else a new temporary folder, printed)")
    p.add_argument("--sections", default=",".join(NAMES), help=f"comma-separated subset of: {', '.join(NAMES)}")
    p.add_argument("--without-peer", action="append", default=[], choices=["dlib", "facenet"],
                   help="treat an optional peer as not installed (its entries say skipped)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every section (default: torch's, all cores)")
    p.add_argument("--repeats", type=int, default=None, help="override the repeats of every section")
    p.add_argument("--pairs", type=int, default=None, help="verify_pair: number of LFW pairs (default 300, --quick 30)")
    p.add_argument("--prep-images", type=int, default=None, help="prep: number of LFW images (default 1000, --quick 128)")
    p.add_argument("--gallery-sizes", default=None, help="gallery: comma-separated sizes (default 10000,100000,1000000; --quick without 1M)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a section is abandoned")
    p.add_argument("--run-section", help=argparse.SUPPRESS)
    p.add_argument("--section-opts", help=argparse.SUPPRESS)
    p.add_argument("--section-result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_section:
        return run_section_here(args.run_section, json.loads(args.section_opts), Path(args.section_result))

    selected = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in selected if s not in NAMES]
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {NAMES}")
    opts = {"quick": args.quick, "without": args.without_peer, "threads": args.threads, "repeats": args.repeats,
            "pairs": args.pairs, "images": args.prep_images,
            "sizes": [int(v) for v in args.gallery_sizes.split(",")] if args.gallery_sizes else None}
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    res = {"schema": "faceverify-bench/1", "quick": args.quick,
           "command": f"python -m bench {display_command(sys.argv[1:] if argv is None else argv)}".rstrip(),
           "started": started.isoformat(timespec="seconds"), "machine": machine_info(), "versions": versions(),
           "load_avg_start": load_average(), "options": opts, "sections": {}}
    order = [n for n in NAMES if n in selected]
    for i, name in enumerate(order, 1):
        title = dict((n, t) for n, _, t in SECTIONS)[name]
        print(f"[{i}/{len(order)}] {title}", file=sys.stderr, flush=True)
        res["sections"][name] = section = run_section(name, opts, args.timeout)
        status = f"FAILED ({section['error']})" if "error" in section else "done"
        print(f"[{i}/{len(order)}] {name}: {status} in {section['elapsed_s']:.0f} s", file=sys.stderr, flush=True)
    res["duration_s"] = round(time.perf_counter() - t0, 1)
    res["load_avg_end"] = load_average()
    res["model"] = next((s["model"] for s in res["sections"].values() if isinstance(s.get("model"), dict)), None)
    headline = derive(res["sections"])
    res["headline"] = headline
    for key in ("verify_pair", "gallery_1m"):
        if key in headline:
            res[key] = headline[key]
    res["skipped"] = skipped_entries(res["sections"])
    out = results_dir(args, order)
    out.mkdir(parents=True, exist_ok=True)
    (out / "RESULTS.json").write_text(dump(res) + "\n")
    (out / "RESULTS.md").write_text(markdown(res))
    failed = [n for n, s in res["sections"].items() if "error" in s]
    print(f"wrote {out / 'RESULTS.md'} and {out / 'RESULTS.json'} in {res['duration_s']:.0f} s"
          + (f"; failed sections: {failed}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

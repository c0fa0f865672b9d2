"""The bench report as markdown tables (stdout and bench/out/*.md) and JSON (bench/out/*.json)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vqrec.index.artifact_io import json_default


def _f(v: Any, fmt: str = ".3f") -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not np.isfinite(v):
        return "nan"
    return format(v, fmt)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    """The markdown tables of a report from ``run``."""
    h = report["host"]
    out = [
        f"# vqrec bench {report['started_at']}",
        "",
        f"host: {h['cpus']} cpus, {h['platform']}, python {h['python']}, faiss {h['faiss']}, numpy {h['numpy']}, "
        f"ADC C kernel: {'yes' if h['adc_kernel'] else 'NO (numpy fallback)'}",
        f"loadavg (1/5/15 min) at start {_la(report['loadavg_start'])}, at end {_la(report.get('loadavg_end'))}; "
        f"total {report.get('seconds', 0):.0f} s",
        f"k={report['k']}; rerank = {report['rerank']} ADC candidates re-scored with float16 item vectors. "
        "Threads: batched = 2 (ours VQREC_THREADS=2, faiss omp 2), single = 1 (VQREC_THREADS=1, faiss omp 1); "
        "numpy's BLAS 1 thread in both (as the service runs); "
        f"OMP_WAIT_POLICY={h.get('omp_wait_policy', '(default)')}.",
    ]
    for dname, e in report["datasets"].items():
        out += ["", f"## {dname}", "", f"data: {e['data']}"]
        cfg0 = e["configs"][0] if e["configs"] else {}
        ov = {c["method"]: c["overrides"] for c in e["configs"] if c["overrides"]}
        out.append(
            f"train config: default TrainConfig (metric ip, norm auto = norm-explicit, nbits 8, "
            f"beam_size {cfg0.get('train_config', {}).get('beam_size')}, max_train_points "
            f"{cfg0.get('train_config', {}).get('max_train_points')}); overrides: {ov or 'none'}"
        )
        hr = e.get("exact_hr")
        if hr is not None:
            out.append(f"exact HR@{report['k']} (seen excluded) = {hr:.4f} (expected {e.get('expected_exact_hr')})")
        out.append(
            f"item->item queries: {e['i2i_queries']} non-zero items ({e['zero_items']} zero items excluded "
            "from queries and truth)"
        )
        out += ["", "### quality (recall@10 vs exact; HR@10 leave-one-out)", "", _quality_table(e)]
        out += [
            "",
            "n.c. = not comparable: faiss on our norm-explicit codes ranks by <q, y_hat> without |x|. "
            "faiss i->i = ip search with the item's reconstruction (faiss keeps no 1/|x_hat|, so no cosine).",
        ]
        out += ["", "### speed (k=10)", "", _speed_table(e)]
        out += [
            "",
            "### lookup tables of queries by id (1 thread; pairs = codeword-pair tables, opt-in with "
            "build_index(pair_tables=True); decode = decode then LUT, the default)",
            "",
            _lut_table(e),
        ]
        out += ["", "### size and build", "", _size_table(e)]
        if "http" in e:
            out += [
                "",
                "### HTTP (uvicorn subprocess on 127.0.0.1, one httpx.Client, sequential requests)",
                "",
                _http_table(e["http"]),
            ]
    out += ["", "## summary", "", *summary(report)]
    return "\n".join(out)


def _span(vals: Sequence[float]) -> str:
    return f"{min(vals):.2f}–{max(vals):.2f}" if vals else "–"


def summary(report: dict[str, Any]) -> list[str]:
    """Bullet lines: HR vs exact, QPS ratios vs faiss, which LUT path wins, HTTP overhead vs its target."""
    out = []
    for dname, e in report["datasets"].items():
        cs = e["configs"]
        if e.get("exact_hr") is not None:
            low = [f"{c['method']}{c['M']} {c['ours']['hr']:.4f}" for c in cs if c["ours"]["hr"] < e["exact_hr"]]
            low_rr = [f"{c['method']}{c['M']}" for c in cs if c["ours"]["hr_rerank"] < e["exact_hr"]]
            out.append(
                f"- {dname}: exact HR@10 {e['exact_hr']:.4f}; ours below it without rerank: "
                f"{', '.join(low) or 'none'}; with rerank={report['rerank']}: {', '.join(low_rr) or 'none'}."
            )
        for m in dict.fromkeys(c["method"] for c in cs):
            mc = [c for c in cs if c["method"] == m and "faiss_same_codes" in c]
            if not mc:
                continue
            same = [c["ours"]["qps_batch"] / c["faiss_same_codes"]["qps_batch"] for c in mc]
            nat = [c["ours"]["qps_batch"] / c["faiss_native"]["qps_batch"] for c in mc]
            p50s = [c["faiss_same_codes"]["p50_ms"] / c["ours"]["p50_ms"] for c in mc]
            p50n = [c["faiss_native"]["p50_ms"] / c["ours"]["p50_ms"] for c in mc]
            out.append(
                f"- {dname} {m}: ours/faiss batch QPS {_span(same)} (same codes), {_span(nat)} (native); "
                f"single-query p50 faiss/ours {_span(p50s)} (same codes), {_span(p50n)} (native) "
                f"over {'/'.join(str(c['M']) for c in mc)} bytes (>= 1 = we are no slower)."
            )
        for m in dict.fromkeys(c["method"] for c in cs):
            mc = [c for c in cs if c["method"] == m]
            parts = []
            for c in mc:
                lu = c["lut"]
                if lu.get("pairs") is None:
                    parts.append(f"{c['M']}B: no pair tables (decode)")
                else:
                    parts.append(
                        f"{c['M']}B: 1 row {lu['faster_single_us']}, batch {lu['faster_batch_us_per_query']}"
                        f", similar() {lu['faster_similar_p50_us']}"
                    )
            out.append(f"- {dname} {m} LUT path faster: " + "; ".join(parts) + ".")
        hh = e.get("http")
        if hh and "recommend" in hh:
            adds = ", ".join(
                f"{ep} {hh[ep]['http_adds_ms']:.2f} ms ({'met' if hh[ep]['http_adds_ms'] < 2 else 'MISSED'})"
                for ep in ("recommend", "similar")
            )
            out.append(f"- {dname} HTTP adds (p50, {hh['config']}): {adds}; target < 2 ms.")
        elif hh:
            out.append(f"- {dname} HTTP: not measured ({hh.get('skipped') or hh.get('error')}).")
    return out


def _la(v: Any) -> str:
    return "–" if v is None else "/".join(f"{x:.2f}" for x in v)


def _quality_table(e: dict[str, Any]) -> str:
    headers = [
        "method",
        "B",
        "u→i ours",
        "u→i ours rr",
        "u→i native",
        "u→i native rr",
        "u→i same n.c.",
        "i→i ours",
        "i→i native",
        "i→i same",
    ]
    has_hr = e.get("exact_hr") is not None
    if has_hr:
        headers += ["HR ours", "HR ours rr", "HR native", "HR native rr", "HR exact"]
    rows = []
    for c in e["configs"]:
        o, n, s = c["ours"], c.get("faiss_native", {}), c.get("faiss_same_codes", {})
        r = [
            c["method"],
            str(c["M"]),
            _f(o["recall_u2i"]),
            _f(o["recall_u2i_rerank"]),
            _f(n.get("recall_u2i")),
            _f(n.get("recall_u2i_rerank")),
            _f(s.get("recall_u2i")),
            _f(o["recall_i2i"]),
            _f(n.get("recall_i2i")),
            _f(s.get("recall_i2i")),
        ]
        if has_hr:
            r += [
                _f(o["hr"], ".4f"),
                _f(o["hr_rerank"], ".4f"),
                _f(n.get("hr"), ".4f"),
                _f(n.get("hr_rerank"), ".4f"),
                _f(e["exact_hr"], ".4f"),
            ]
        rows.append(r)
    return md_table(headers, rows)


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}"


def _speed_table(e: dict[str, Any]) -> str:
    headers = [
        "method",
        "B",
        "batch QPS ours",
        "(scan only)",
        "same",
        "×same",
        "native",
        "×native",
        "single QPS ours",
        "same",
        "×same",
        "native",
        "×native",
        "p50 ms ours",
        "(scan only)",
        "same",
        "native",
        "×same p50",
        "×native p50",
        "p99 ms ours",
        "same",
        "native",
        "load 1m",
    ]
    rows = []
    for c in e["configs"]:
        o, n, s = c["ours"], c.get("faiss_native", {}), c.get("faiss_same_codes", {})
        rows.append(
            [
                c["method"],
                str(c["M"]),
                _f(o["qps_batch"], ".0f"),
                _f(o.get("scan_qps_batch"), ".0f"),
                _f(s.get("qps_batch"), ".0f"),
                _ratio(o["qps_batch"], s.get("qps_batch")),
                _f(n.get("qps_batch"), ".0f"),
                _ratio(o["qps_batch"], n.get("qps_batch")),
                _f(o["qps_single"], ".0f"),
                _f(s.get("qps_single"), ".0f"),
                _ratio(o["qps_single"], s.get("qps_single")),
                _f(n.get("qps_single"), ".0f"),
                _ratio(o["qps_single"], n.get("qps_single")),
                _f(o["p50_ms"]),
                _f(o.get("scan_p50_ms")),
                _f(s.get("p50_ms")),
                _f(n.get("p50_ms")),
                _ratio(s.get("p50_ms"), o["p50_ms"]),
                _ratio(n.get("p50_ms"), o["p50_ms"]),
                _f(o["p99_ms"]),
                _f(s.get("p99_ms")),
                _f(n.get("p99_ms")),
                f"{c['loadavg_end'][0]:.2f}",
            ]
        )
    return md_table(headers, rows) + (
        "\n\nbatch = all users in one call, 2 threads; single = one query per call, 1 thread, QPS = n / total time "
        "(outliers count), p50/p99 per call. ×same / ×native = ours / faiss QPS, or faiss p50 / ours p50: "
        ">= 1.00 means we are no slower. ours = CompressedIndex.search (LUT + C kernel + per-query Python); "
        "(scan only) = our C kernel alone (adc_topk on precomputed LUTs), no Python or LUT work. "
        "faiss = index.search. load 1m = 1-minute loadavg after the config (2 cores)."
    )


def _lut_table(e: dict[str, Any]) -> str:
    headers = [
        "method",
        "B",
        "pair tables",
        "_item_luts 1 row µs pairs",
        "decode",
        "batch µs/query pairs",
        "decode",
        "similar p50 µs pairs",
        "decode",
        "faster (1 row / batch / similar)",
    ]
    rows = []
    for c in e["configs"]:
        lu = c["lut"]
        mib = lu["pair_tables_bytes"] / 2**20
        p, d = lu.get("pairs"), lu["decode"]
        if p is None:
            stored = f"not storable ({mib:.0f} MiB > {lu.get('pair_tables_limit_bytes', 64 << 20) / 2**20:.0f} MiB)"
            faster = "decode only"
        else:
            stored = f"{mib:.2f} MiB"
            faster = " / ".join(
                f"{lu['faster_' + w]} ×{lu['speedup_' + w]:.1f}"
                for w in ("single_us", "batch_us_per_query", "similar_p50_us")
            )
        rows.append(
            [
                c["method"],
                str(c["M"]),
                stored,
                _f(p and p["single_us"], ".1f"),
                _f(d["single_us"], ".1f"),
                _f(p and p["batch_us_per_query"], ".1f"),
                _f(d["batch_us_per_query"], ".1f"),
                _f(p and p["similar_p50_us"], ".0f"),
                _f(d["similar_p50_us"], ".0f"),
                faster,
            ]
        )
    return md_table(headers, rows)


def _size_table(e: dict[str, Any]) -> str:
    headers = [
        "method",
        "B",
        "code B/item",
        "index B/item",
        "artifact MB",
        "of which pair tables MB",
        "item vectors MB",
        "native code B/item",
        "native serialized MB",
        "train s",
        "train+report s",
        "encode s",
        "native train s",
        "native add s",
    ]
    rows = []
    for c in e["configs"]:
        s, b, n = c["size"], c["build"], c.get("faiss_native", {})
        rows.append(
            [
                c["method"],
                str(c["M"]),
                _f(s["code_bytes_per_item"], "g"),
                _f(s["index_bytes_per_item"], ".2f"),
                _f(s["artifact_bytes"] / 1e6, ".2f"),
                _f(s["pair_tables_bytes"] / 1e6, ".2f"),
                _f(s["item_vectors_bytes"] / 1e6, ".2f"),
                _f(n.get("code_bytes_per_item"), "d"),
                _f(n["bytes"] / 1e6 if n else None, ".2f"),
                _f(b["train_s"], ".1f"),
                _f(b["train_wall_s"], ".1f"),
                _f(b["encode_s"], ".2f"),
                _f(n.get("train_s"), ".1f"),
                _f(n.get("add_s"), ".2f"),
            ]
        )
    return md_table(headers, rows) + (
        "\n\nindex B/item = per-item files of the artifact (codes, norms, scale, zero flags, ids); artifact = all "
        "files incl. codebooks, pair tables, float16 item vectors (for rerank) and float32 user vectors. "
        "train s = the trainer alone; train+report adds the training report (an encode and eval); encode s = "
        "build_index (encode + norms + float16 copy; + pair tables only when opted in)."
    )


def _http_table(hh: dict[str, Any]) -> str:
    if "skipped" in hh or "error" in hh:
        return f"HTTP not measured: {hh.get('skipped') or hh.get('error')}"
    headers = [
        "config",
        "endpoint",
        "in-process p50/p99 ms",
        "HTTP p50/p99 ms",
        "server took_ms p50",
        "HTTP adds (p50) ms",
        "target < 2 ms",
        "errors",
        "result mismatches",
    ]
    rows = []
    for ep in ("recommend", "similar"):
        o = hh[ep]
        rows.append(
            [
                hh["config"],
                ep,
                f"{o['in_process_p50_ms']:.3f}/{o['in_process_p99_ms']:.3f}",
                f"{o['http_p50_ms']:.3f}/{o['http_p99_ms']:.3f}",
                _f(o["server_took_p50_ms"]),
                f"{o['http_adds_ms']:.3f}",
                "met" if o["http_adds_ms"] < 2.0 else "MISSED",
                str(o["errors"]),
                str(o.get("result_mismatches")),
            ]
        )
    return md_table(headers, rows) + (
        f"\n\n{hh['n_requests']} requests per endpoint after 20 warm-up; GET /healthz p50 (HTTP round trip with no "
        f"index work) {hh.get('healthz_p50_ms', float('nan')):.3f} ms; loadavg {_la(hh['loadavg_end'])}"
    )


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["started_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
    jpath, mpath = out_dir / f"bench-{stamp}.json", out_dir / f"bench-{stamp}.md"
    jpath.write_text(json.dumps(report, indent=2, default=json_default) + "\n", encoding="utf-8")
    mpath.write_text(format_report(report) + "\n", encoding="utf-8")
    return jpath, mpath

"""`make bench`: throughput and peak memory of each stage on a large generated operator.

Every stage runs in its own child process so its peak resident memory (ru_maxrss) is
its own. Figures are printed and saved to <data_dir>/bench/results.json; they are
measurements, never assertions.

Environment: BENCH_SUBSCRIBERS (default 100000), BENCH_MONTHS (12), BENCH_DIR
(default data/bench), BENCH_DUCKDB_MEMORY (features memory limit, default 2GB),
BENCH_STAGES (comma list: rerun only these stages, reuse the other saved figures),
BENCH_REPEAT (default 5: our ingest and bare pyarrow run alternately this many times,
and the median run of each is reported, so a noisy shared machine hits both alike).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("BENCH_DIR", "data/bench")).resolve()
N = int(os.environ.get("BENCH_SUBSCRIBERS", "100000"))
M = int(os.environ.get("BENCH_MONTHS", "12"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
PAIRED = ("ingest_file", "bare_pyarrow")
MEM = os.environ.get("BENCH_DUCKDB_MEMORY", "2GB")


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM is reset by exec, unlike ru_maxrss)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _settings():
    from pipelines.config import load_config

    return load_config(
        overrides={
            "paths": {"data_dir": str(ROOT / "world")},
            "synth": {"subscribers": N, "months": M},
            "features": {"duckdb_memory_limit": MEM},
        }
    )


def stage_synth() -> dict:
    from pipelines.synth.deliver import generate

    s = _settings()
    summ = generate(s, s.path("landing"), s.path("truth"), show_progress=False)
    return {"seconds": summ.seconds, "rows": summ.rows, "bytes_on_disk": summ.bytes_on_disk}


def _largest_cdr() -> Path:
    s = _settings()
    return max(s.path("landing").glob("cdr_*.csv*"), key=lambda p: p.stat().st_size)


def stage_ingest_file() -> dict:
    """Our ingest of the largest CDR file alone, into an empty lake."""
    import shutil

    import pyarrow as pa

    from pipelines.ingest.reader import discover
    from pipelines.ingest.run import ingest_file
    from pipelines.lake.numbers import NumberPlan

    s = _settings()
    src = _largest_cdr()
    work = ROOT / "ingest_one"
    shutil.rmtree(work, ignore_errors=True)
    (work / "landing").mkdir(parents=True)
    os.link(src, work / "landing" / src.name)
    d = discover(work / "landing", {"cdr": s.sources.cdr}).current[0]
    c0, t0 = _cpu_seconds(), time.perf_counter()
    rep = ingest_file(d, lake=work / "lake", quarantine=work / "q", sources=s.sources,
                      plan=NumberPlan.from_config(s.numbering), cfg=s.ingest)  # fmt: skip
    sec = time.perf_counter() - t0
    return {
        "file": src.name,
        "bytes": src.stat().st_size,
        "rows": rep.read,
        "seconds": sec,
        "cpu_seconds": _cpu_seconds() - c0,
        "status": rep.status,
        "memory_pool": pa.default_memory_pool().backend_name,
    }


def stage_bare_pyarrow() -> dict:
    """The floor: pyarrow's multithreaded CSV reader straight into one Parquet file, no checks.

    It gets the same Arrow memory pool as our ingest, so the ratio measures our work,
    not the allocator.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from pipelines.ingest.stage import use_memory_pool

    use_memory_pool(_settings().ingest.memory_pool)
    src = _largest_cdr()
    out = ROOT / "bare.parquet"
    c0, t0 = _cpu_seconds(), time.perf_counter()
    reader = pacsv.open_csv(src, read_options=pacsv.ReadOptions(block_size=32 << 20),
                            parse_options=pacsv.ParseOptions(invalid_row_handler=lambda r: "skip"))  # fmt: skip
    rows = 0
    with pq.ParquetWriter(out, reader.schema, compression="zstd") as w:
        for b in reader:
            w.write_batch(b)
            rows += b.num_rows
    sec = time.perf_counter() - t0
    return {"rows": rows, "seconds": sec, "cpu_seconds": _cpu_seconds() - c0,
            "bytes": src.stat().st_size, "memory_pool": pa.default_memory_pool().backend_name}  # fmt: skip


def stage_ingest_all() -> dict:
    import shutil

    from pipelines import steps

    s = _settings()
    for d in ("lake", "quarantine"):
        shutil.rmtree(s.path(d), ignore_errors=True)  # from scratch: every file is read
    t0 = time.perf_counter()
    rep = steps.ingest(s, raise_on_failure=False)
    return {"seconds": time.perf_counter() - t0, "totals": rep.totals()}


def stage_features() -> dict:
    from pipelines import steps

    s = _settings()
    t0 = time.perf_counter()
    rep = steps.build_features(s)
    return {
        "seconds": time.perf_counter() - t0,
        "snapshots": len(rep.months),
        "rows": sum(rep.rows.values()),
        "memory_limit": MEM,
    }


def stage_features_one_thread() -> dict:
    """The same build on one DuckDB thread (bit-identical output): the all-cores ratio."""
    import shutil

    from features.build import build_features

    s = _settings()
    out = ROOT / "features-1thread"
    shutil.rmtree(out, ignore_errors=True)
    cfg = s.features.model_copy(update={"duckdb_threads": 1})
    t0 = time.perf_counter()
    build_features(s.path("lake"), out, s.churn, cfg, temp_dir=ROOT / "tmp")
    seconds = time.perf_counter() - t0
    import pyarrow.parquet as pq

    from features import store

    same = all(pq.read_table(store.snapshot_path(out, m)).equals(
        pq.read_table(store.snapshot_path(s.path("features"), m)))
        for m in store.months(out))  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "bit_identical_to_all_cores": same}


def _train(share: float) -> dict:
    import shutil

    from pipelines import steps
    from pipelines.runtime import prepare_environment

    s = _settings()
    s.model.stayer_share = share
    if share < 1:  # its own model store, beside the world's: the champion is left alone
        s.model.tracking_uri = f"sqlite:///{ROOT / 'mlflow-sampled' / 'mlflow.db'}"
        shutil.rmtree(ROOT / "mlflow-sampled", ignore_errors=True)
    prepare_environment(s)
    t0 = time.perf_counter()
    res = steps.train(s)
    return {"seconds": time.perf_counter() - t0, "stayer_share": share,
            "roc_auc": res.metrics["roc_auc"], "ece": res.metrics["ece"],
            "test_period": res.test_period}  # fmt: skip


def stage_train_sampled() -> dict:
    """Training on every churner and a tenth of the stayers, weighted back (model.stayer_share)."""
    return _train(0.1)


def stage_monitor() -> dict:
    from pipelines import steps
    from pipelines.runtime import prepare_environment

    s = _settings()
    prepare_environment(s)
    t0 = time.perf_counter()
    out = steps.monitor(s)
    return {"seconds": time.perf_counter() - t0, "estimated_auc": out.get("estimated_auc"),
            "features_alarm": out.get("features_alarm")}  # fmt: skip


def stage_train() -> dict:
    return _train(1.0)


def stage_score() -> dict:
    from pipelines import steps
    from pipelines.runtime import prepare_environment

    s = _settings()
    prepare_environment(s)
    t0 = time.perf_counter()
    r = steps.score(s)
    t1 = time.perf_counter()
    steps.publish(s)
    t2 = time.perf_counter()
    return {"score_explain_seconds": t1 - t0, "publish_seconds": t2 - t1, "scored": r.scored,
            "score_explain_seconds_per_100k": (t1 - t0) * 100_000 / max(r.scored, 1)}  # fmt: skip


STAGES = {
    "synth": stage_synth,
    "ingest_file": stage_ingest_file,
    "bare_pyarrow": stage_bare_pyarrow,
    "ingest_all": stage_ingest_all,
    "features": stage_features,
    "features_one_thread": stage_features_one_thread,
    "train": stage_train,
    "train_sampled": stage_train_sampled,
    "score": stage_score,
    "monitor": stage_monitor,
}


def _child(stage: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--stage", stage], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # the child measured its own peak memory


def _paired() -> dict:
    """Our ingest and bare pyarrow on the same file, alternated; the median run of each."""
    runs: dict[str, list[dict]] = {st: [] for st in PAIRED}
    for _ in range(REPEAT):
        for st in PAIRED:
            runs[st].append(_child(st))
    out = {}
    for st, rs in runs.items():
        median = sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2]
        out[st] = median | {
            "runs_seconds": [round(r["seconds"], 2) for r in rs],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
        }
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--stage":
        res = STAGES[sys.argv[2]]()
        res["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(res, default=str))
        return
    ROOT.mkdir(parents=True, exist_ok=True)
    results = {"subscribers": N, "months": M, "cores": os.cpu_count()}
    only = os.environ.get("BENCH_STAGES")
    saved = ROOT / "results.json"
    if only and saved.exists():
        results |= {k: v for k, v in json.loads(saved.read_text()).items() if k in STAGES}
    for stage in STAGES:
        if only and stage not in only.split(","):
            continue
        if stage in PAIRED:
            if stage == PAIRED[0] or (only and PAIRED[0] not in only.split(",")):
                print(f"... {' vs '.join(PAIRED)}, {REPEAT} times each", flush=True)
                results |= _paired()
            continue
        print(f"... {stage}", flush=True)
        results[stage] = _child(stage)
    ing, bare = results["ingest_file"], results["bare_pyarrow"]
    ratio = bare["seconds"] / ing["seconds"]
    lines = [
        f"Benchmarks: {N:,} subscribers x {M} months, {os.cpu_count()} cores",
        f"synth           {results['synth']['seconds']:8.1f} s   {sum(results['synth']['rows'].values()):,} rows, "
        f"{results['synth']['bytes_on_disk'] / 1e9:.2f} GB on disk, peak {results['synth']['peak_rss_mb']:,.0f} MB",
        f"ingest (1 CDR)  {ing['seconds']:8.1f} s   {ing['rows'] / ing['seconds']:,.0f} rows/s, "
        f"{ing['bytes'] / 1e6 / ing['seconds']:.1f} MB/s, CPU {ing.get('cpu_seconds', 0):.1f} s, peak {ing['peak_rss_mb']:,.0f} MB  "
        f"({ing['file']}, {ing['bytes'] / 1e6:.0f} MB; runs {ing.get('runs_seconds')})",
        f"bare pyarrow    {bare['seconds']:8.1f} s   {bare['rows'] / bare['seconds']:,.0f} rows/s, "
        f"{bare['bytes'] / 1e6 / bare['seconds']:.1f} MB/s, CPU {bare.get('cpu_seconds', 0):.1f} s, peak {bare['peak_rss_mb']:,.0f} MB  "
        f"(runs {bare.get('runs_seconds')})",
        f"ingest / bare pyarrow throughput ratio (medians): {ratio:.2f}  "
        f"(Arrow memory pool: {ing.get('memory_pool')} / {bare.get('memory_pool')})",
        f"ingest (all)    {results['ingest_all']['seconds']:8.1f} s   {results['ingest_all']['totals']['read']:,} rows, "
        f"peak {results['ingest_all']['peak_rss_mb']:,.0f} MB",
        f"features        {results['features']['seconds']:8.1f} s   {results['features']['snapshots']} snapshots, "
        f"{results['features']['rows']:,} rows, DuckDB limit {MEM}, peak {results['features']['peak_rss_mb']:,.0f} MB",
        f"train           {results['train']['seconds']:8.1f} s   test AUC {results['train']['roc_auc']:.3f}, peak {results['train']['peak_rss_mb']:,.0f} MB",
        f"score+explain   {results['score']['score_explain_seconds']:8.1f} s   {results['score']['scored']:,} subscribers = "
        f"{results['score']['score_explain_seconds_per_100k']:.1f} s per 100,000; publish {results['score']['publish_seconds']:.1f} s",
    ]
    if f1 := results.get("features_one_thread"):
        lines.append(
            f"features 1 thr  {f1['seconds']:8.1f} s   all cores {f1['seconds'] / results['features']['seconds']:.2f}x "
            f"faster, bit-identical: {f1['bit_identical_to_all_cores']}, peak {f1['peak_rss_mb']:,.0f} MB"
        )
    if ts := results.get("train_sampled"):
        full = results["train"]
        lines.append(
            f"train sampled   {ts['seconds']:8.1f} s   stayers x{ts['stayer_share']}: test AUC {ts['roc_auc']:.3f} "
            f"({ts['roc_auc'] - full['roc_auc']:+.3f}), ECE {ts['ece']:.4f}, peak {ts['peak_rss_mb']:,.0f} MB "
            f"(whole: {full['peak_rss_mb']:,.0f} MB)"
        )
    if mo := results.get("monitor"):
        lines.append(
            f"monitor         {mo['seconds']:8.1f} s   estimated AUC {mo['estimated_auc']:.3f}, "
            f"{mo['features_alarm']} features in alarm, peak {mo['peak_rss_mb']:,.0f} MB"
        )
    results["ingest_vs_bare_pyarrow"] = ratio
    (ROOT / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

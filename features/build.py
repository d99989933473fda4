"""Build point-in-time feature snapshots from the lake: one row per subscriber active at the end of T.

For snapshot T the lake is opened only up to partition T (``*_t`` views), and every
query is further bounded by the first instant after T. Labels come from the full
history, separately, and are the only column that looks past T.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from features import billing, calls, complaints, labels, segments, social, store, tenure, usage
from features.catalog import Feature, render_markdown
from features.config import ChurnDefinition, FeatureConfig
from features.context import SnapshotContext
from pipelines.lake import store as lk
from pipelines.lake import views

log = logging.getLogger(__name__)

FEATURES: list[Feature] = (
    tenure.FEATURES + billing.FEATURES + usage.FEATURES + calls.FEATURES + complaints.FEATURES + social.FEATURES
    + segments.FEATURES
)  # fmt: skip
KEYS = ["msisdn", "snapshot_month"]
META = ["payment_type", "network_generation", "plan_id"]  # descriptive, for lists and notebooks
_ARROW = {"double": pa.float64(), "int": pa.int64(), "str": pa.string()}


def model_features() -> list[str]:
    return [f.name for f in FEATURES if f.model_input]


def snapshot_schema() -> pa.Schema:
    fields = [pa.field("msisdn", pa.string()), pa.field("snapshot_month", pa.string())]
    fields += [pa.field(m, pa.string()) for m in META]
    fields += [pa.field(f.name, _ARROW[f.dtype]) for f in FEATURES]
    fields.append(pa.field(labels.LABEL.name, pa.int64()))
    return pa.schema(fields, metadata={"feature_schema": feature_schema_hash()})


def feature_schema_hash() -> str:
    blob = "|".join(f"{f.name}:{f.dtype}:{f.window}" for f in FEATURES).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def connect(memory_limit: str, threads: int, temp_dir: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB with a memory ceiling and a spill folder, so data larger than RAM still builds."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(
        config={
            "memory_limit": memory_limit,
            "threads": threads,
            "temp_directory": str(temp_dir),
            "preserve_insertion_order": False,
        }
    )


def _idx(month: str) -> int:
    p = pd.Period(month, freq="M")
    return p.year * 12 + p.month


def build_snapshot(
    con: duckdb.DuckDBPyConnection,
    lake: Path,
    month: str,
    churn: ChurnDefinition,
    cfg: FeatureConfig,
    last_month: str,
) -> pa.Table:
    """The feature table of snapshot month ``month`` (YYYY-MM), labels included."""
    ctx = SnapshotContext(month)
    rules = cfg.rules
    k = churn.prepaid_inactivity_months
    views.register_views(con, lake, max_month=month, suffix="_t")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE known_churn AS {labels.churn_events_sql('billing_t', k)}"
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE obs AS
        SELECT msisdn, '{month}' AS snapshot_month, payment_type, network_generation, plan_id,
               CAST(payment_type = 'postpaid' AS INTEGER) AS is_postpaid
        FROM billing_t
        WHERE bill_month = '{ctx.ym}' AND status NOT IN ('cancelled', 'ported_out')
          AND msisdn NOT IN (SELECT msisdn FROM known_churn WHERE churn_idx <= {ctx.idx})"""
    )
    fam_sql = {
        "tenure": tenure.sql(ctx),
        "billing": billing.sql(ctx, rules),
        "usage": usage.sql(ctx),
        "calls": calls.sql(ctx, rules),
        "complaints": complaints.sql(ctx),
        "social": social.sql(ctx, "known_churn"),
    }
    fam_feats = {
        "tenure": tenure.FEATURES, "billing": billing.FEATURES, "usage": usage.FEATURES,
        "calls": calls.FEATURES, "complaints": complaints.FEATURES, "social": social.FEATURES,
    }  # fmt: skip
    select = ["obs.msisdn", "obs.snapshot_month"] + [f"obs.{m}" for m in META]
    joins = []
    for name, q in fam_sql.items():
        con.execute(f"CREATE OR REPLACE TEMP TABLE f_{name} AS {q}")
        got = [c for c in con.sql(f"SELECT * FROM f_{name} LIMIT 0").columns if c != "msisdn"]
        want = [f.name for f in fam_feats[name]]
        if got != want:
            raise RuntimeError(f"feature family {name} produced {got}, catalog declares {want}")
        for f in fam_feats[name]:
            col = f"f_{name}.{f.name}"
            select.append(
                f"coalesce({col}, 0) AS {f.name}" if f.zero_if_missing else f"{col} AS {f.name}"
            )
        joins.append(f"LEFT JOIN f_{name} USING (msisdn)")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE joined AS SELECT "
        + ", ".join(select)
        + " FROM obs "
        + " ".join(joins)
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE lab AS "
        + labels.label_sql(
            "obs", "churn_all", ctx.idx, _idx(last_month), churn.horizon_months, churn.gap_months, k
        )
    )
    table = con.sql(
        f"SELECT joined.*, {segments.select_sql(rules)}, lab.label_churn FROM joined JOIN lab USING (msisdn) ORDER BY msisdn"
    ).to_arrow_table()
    schema = snapshot_schema()
    return table.select(schema.names).cast(schema)


@dataclass
class FeatureBuildReport:
    months: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    labelled: dict[str, int] = field(default_factory=dict)
    churn_rate: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0
    catalog: str = ""

    def summary(self) -> dict:
        return {
            "months": self.months,
            "rows": self.rows,
            "churn_rate": self.churn_rate,
            "catalog": self.catalog,
        }


def choose_months(lake: Path, cfg: FeatureConfig) -> list[str]:
    have = lk.months(lake, "billing")
    if cfg.snapshot_months:
        missing = sorted(set(cfg.snapshot_months) - set(have))
        if missing:
            raise ValueError(f"features.snapshot_months {missing} have no billing data in the lake")
        return sorted(cfg.snapshot_months)
    return have[cfg.min_history_months - 1 :]


def build_features(
    lake: Path,
    out: Path,
    churn: ChurnDefinition,
    cfg: FeatureConfig,
    months: list[str] | None = None,
    temp_dir: Path | None = None,
) -> FeatureBuildReport:
    """Write ``out/snapshot=YYYY-MM/features.parquet`` for each month, and ``out/catalog.md``."""
    t0 = time.perf_counter()
    months = months or choose_months(lake, cfg)
    have = lk.months(lake, "billing")
    if not have:
        raise ValueError(f"the lake at {lake} holds no billing data: ingest first")
    last = have[-1]
    rep = FeatureBuildReport(months=months)
    out.mkdir(parents=True, exist_ok=True)
    store.remove_stale_temps(out)
    con = connect(cfg.duckdb_memory_limit, cfg.duckdb_threads, temp_dir or out / "_duckdb_tmp")
    try:
        views.register_views(con, lake, suffix="_all")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE churn_all AS {labels.churn_events_sql('billing_all', churn.prepaid_inactivity_months)}"
        )
        from tqdm.auto import tqdm

        for m in tqdm(months, desc="feature snapshots", unit="month", disable=None):
            table = build_snapshot(con, lake, m, churn, cfg, last)
            store.write_snapshot(out, m, table)
            lab = table["label_churn"].drop_null()
            rep.rows[m] = table.num_rows
            rep.labelled[m] = len(lab)
            rep.churn_rate[m] = round(sum(lab.to_pylist()) / len(lab), 4) if len(lab) else None
            log.info(
                "snapshot %s: %d subscribers, %d labelled, churn rate %s",
                m,
                table.num_rows,
                len(lab),
                rep.churn_rate[m],
            )
    finally:
        con.close()
    catalog = store.write_catalog(out, render_markdown(FEATURES + [labels.LABEL]))
    rep.catalog = str(catalog)
    rep.seconds = round(time.perf_counter() - t0, 2)
    return rep

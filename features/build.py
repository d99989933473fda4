"""Build point-in-time feature snapshots from the lake: one row per subscriber active at the end of T.

For snapshot T the lake is opened only up to partition T (``*_t`` views), and every
query is further bounded by the first instant after T. Labels come from the full
history, separately, and are the only columns that look past T (``labels.LABELS``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from features import billing, calls, complaints, labels, segments, social, store, tenure, usage
from features.catalog import Family, Feature, render_markdown
from features.config import ChurnDefinition, FeatureConfig
from features.context import SnapshotContext
from pipelines.lake import store as lk
from pipelines.lake import views

log = logging.getLogger(__name__)

# Joined in this order, which is the snapshot's column order (and its schema hash): append only.
FAMILIES: tuple[Family, ...] = (
    tenure.FAMILY,
    billing.FAMILY,
    usage.FAMILY,
    calls.FAMILY,
    complaints.FAMILY,
    social.FAMILY,
)
# segments come last: they are computed from the other families' columns in the final select
FEATURES: list[Feature] = [f for fam in FAMILIES for f in fam.features] + segments.FEATURES
KEYS = ["msisdn", "snapshot_month"]
META = ["payment_type", "network_generation", "plan_id"]  # descriptive, for lists and notebooks
_ARROW = {"double": pa.float64(), "int": pa.int64(), "str": pa.string()}


def model_features() -> list[str]:
    return [f.name for f in FEATURES if f.model_input]


def snapshot_schema() -> pa.Schema:
    fields = [pa.field(k, pa.string()) for k in KEYS + META]
    fields += [pa.field(f.name, _ARROW[f.dtype]) for f in [*FEATURES, *labels.LABELS]]
    return pa.schema(fields, metadata={"feature_schema": feature_schema_hash()})


def feature_schema_hash() -> str:
    blob = "|".join(f"{f.name}:{f.dtype}:{f.window}" for f in FEATURES).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


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
        f"CREATE OR REPLACE TEMP TABLE {ctx.known_churn} AS {labels.churn_events_sql('billing_t', k)}"
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE obs AS
        SELECT msisdn, '{month}' AS snapshot_month, payment_type, network_generation, plan_id,
               CAST(payment_type = 'postpaid' AS INTEGER) AS is_postpaid
        FROM billing_t
        WHERE bill_month = '{ctx.ym}' AND status NOT IN ('cancelled', 'ported_out')
          AND msisdn NOT IN (SELECT msisdn FROM {ctx.known_churn} WHERE churn_idx <= {ctx.idx})"""
    )
    select = [f"obs.{c}" for c in KEYS + META]
    joins = []
    for fam in FAMILIES:
        name = f"f_{fam.name}"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {fam.sql(ctx, rules)}")
        got = [c for c in con.sql(f"SELECT * FROM {name} LIMIT 0").columns if c != "msisdn"]
        want = [f.name for f in fam.features]
        if got != want:
            raise RuntimeError(f"feature family {fam.name} produced {got}, catalog declares {want}")
        for f in fam.features:
            col = f"{name}.{f.name}"
            select.append(
                f"coalesce({col}, 0) AS {f.name}" if f.zero_if_missing else f"{col} AS {f.name}"
            )
        joins.append(f"LEFT JOIN {name} USING (msisdn)")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE joined AS SELECT "
        + ", ".join(select)
        + " FROM obs "
        + " ".join(joins)
    )
    last_idx = SnapshotContext(last_month).idx
    con.execute(
        "CREATE OR REPLACE TEMP TABLE lab AS "
        + labels.label_sql(
            "obs", "churn_all", ctx.idx, last_idx, churn.horizon_months, churn.gap_months, k
        )
    )
    labs = ", ".join(f"lab.{f.name}" for f in labels.LABELS)
    table = con.sql(
        f"SELECT joined.*, {segments.select_sql(rules)}, {labs} "
        "FROM joined JOIN lab USING (msisdn) ORDER BY msisdn"
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
    """Write the snapshot of each month and the catalog into the store at ``out`` (features/store.py)."""
    t0 = time.perf_counter()
    months = months or choose_months(lake, cfg)
    have = lk.months(lake, "billing")
    if not have:
        raise ValueError(f"the lake at {lake} holds no billing data: ingest first")
    last = have[-1]
    rep = FeatureBuildReport(months=months)
    out.mkdir(parents=True, exist_ok=True)
    store.remove_stale_temps(out)
    con = views.connect(
        cfg.duckdb_memory_limit, cfg.duckdb_threads, temp_dir or store.spill_dir(out)
    )
    try:
        views.register_views(con, lake, suffix="_all")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE churn_all AS {labels.churn_events_sql('billing_all', churn.prepaid_inactivity_months)}"
        )
        from tqdm.auto import tqdm

        for m in tqdm(months, desc="feature snapshots", unit="month", disable=None):
            table = build_snapshot(con, lake, m, churn, cfg, last)
            store.write_snapshot(out, m, table)
            lab = table[labels.LABEL.name].drop_null()
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
    catalog = store.write_catalog(out, render_markdown(FEATURES + list(labels.LABELS)))
    rep.catalog = str(catalog)
    rep.seconds = round(time.perf_counter() - t0, 2)
    return rep

"""SQL for aggregates that give the same bits whatever DuckDB's thread count.

DuckDB aggregates a group on several threads and combines their partial states in
whichever order the threads finish, so a sum of DOUBLEs (and avg, regr_slope,
stddev_samp over them) can differ in the last bits from one build to the next. Integer
sums cannot: so every aggregate a feature takes is over integers, and only the final
arithmetic of each row is in floating point:

- money is summed in fen (the lake's money has at most 2 decimals, ingest checks it),
  data volumes in millionths of a MB (a byte, near enough), minutes, seconds and counts
  as they are;
- means, least-squares slopes and standard deviations come from exact integer sums of
  y, x·y, x², y² (x is a small month offset), each rounded once at the end;
- a sum that cannot be integer (contact entropy's p·ln p) rounds each term to 1e-18
  and adds them as DECIMAL(38,18), which DuckDB sums exactly.
"""

from __future__ import annotations

FEN = 100  # money units per CNY
MB_UNITS = 1_000_000  # data_mb units per MB


def units(col: str, per: int) -> str:
    """``col`` as a BIGINT count of 1/``per`` units (``col`` holds at most log10(per) decimals)."""
    return f"CAST(round({col} * {per}) AS BIGINT)"


def _f(where: str | None) -> str:
    return f" FILTER (WHERE {where})" if where else ""


def mean(y: str, per: int = 1, where: str | None = None) -> str:
    """Mean of the integer expression ``y`` over the rows ``where``, divided by ``per``."""
    return f"(CAST(sum({y}){_f(where)} AS DOUBLE) / ({per} * count({y}){_f(where)}))"


def ratio(num: str, den: str, where: str | None = None) -> str:
    """sum(num) / sum(den) of integer expressions; null when the denominator sums to 0."""
    return f"(CAST(sum({num}){_f(where)} AS DOUBLE) / nullif(CAST(sum({den}){_f(where)} AS DOUBLE), 0))"


def slope(y: str, x: str, per: int = 1) -> str:
    """Least-squares slope of integer ``y`` / ``per`` on integer ``x`` (rows with ``y`` null skipped).

    (n·Σxy − Σx·Σy) / (n·Σx² − (Σx)²) with every sum exact; null when x does not vary,
    like ``regr_slope``.
    """
    has = f"{y} IS NOT NULL"
    n, sx, sxx = (
        f"count({y})",
        f"sum({x}) FILTER (WHERE {has})",
        f"sum({x} * {x}) FILTER (WHERE {has})",
    )
    num = f"({n} * sum({x} * {y}) - {sx} * sum({y}))"
    den = f"({n} * {sxx} - {sx} * {sx})"
    return f"(CAST({num} AS DOUBLE) / nullif(CAST({den} AS DOUBLE) * {per}, 0))"


def cv(y: str) -> str:
    """Sample standard deviation / mean of integer ``y`` (the unit cancels); needs 2 rows and a
    positive sum: √((n·Σy² − (Σy)²) / (n(n−1))) · n / Σy."""
    n, s = f"count({y})", f"sum({y})"
    var = f"CAST({n} * sum({y} * {y}) - {s} * {s} AS DOUBLE) / ({n} * ({n} - 1))"
    return f"(sqrt({var}) * {n} / CAST({s} AS DOUBLE))"


def decimal_sum(term: str, where: str) -> str:
    """Sum of the DOUBLE ``term`` over the rows ``where``, each term first rounded to 1e-18 and
    the sum taken exactly; ``term`` is computed only there (a NaN would not cast)."""
    return f"CAST(sum(CAST(CASE WHEN {where} THEN {term} END AS DECIMAL(38, 18))) AS DOUBLE)"

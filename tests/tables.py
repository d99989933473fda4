"""A customer-level churn table shaped like the public ones (text categoricals, Yes/No)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def telco_like(n: int, seed: int) -> pd.DataFrame:
    """Churn driven mostly by the contract type and payment method, both text columns."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n, p=[0.55, 0.21, 0.24])
    pay = rng.choice(["Electronic check", "Mailed check", "Bank transfer (automatic)",
                      "Credit card (automatic)"], n)  # fmt: skip
    internet = rng.choice(["DSL", "Fiber optic", "No"], n, p=[0.34, 0.44, 0.22])
    tenure = rng.integers(0, 73, n)
    monthly = np.round(rng.uniform(18, 119, n), 2)
    total = np.where(tenure == 0, " ", np.round(monthly * tenure, 2).astype(str))
    z = (-2.2 + 1.9 * (contract == "Month-to-month") - 1.0 * (contract == "Two year")
         + 0.8 * (pay == "Electronic check") + 0.5 * (internet == "Fiber optic")
         - 0.025 * tenure + 0.004 * monthly)  # fmt: skip
    churn = rng.random(n) < 1 / (1 + np.exp(-z))
    return pd.DataFrame({
        "customerID": [f"{i:04d}-{'ABCDE'[i % 5]}" for i in range(n)],
        "gender": rng.choice(["Female", "Male"], n),
        "SeniorCitizen": (rng.random(n) < 0.16).astype(int),
        "Partner": rng.choice(["Yes", "No"], n),
        "tenure": tenure, "Contract": contract, "PaymentMethod": pay,
        "InternetService": internet, "MonthlyCharges": monthly, "TotalCharges": total,
        "Notes": [f"called on {rng.integers(1, 28)}/{rng.integers(1, 13)}" for _ in range(n)],
        "Churn": np.where(churn, "Yes", "No"),
    })  # fmt: skip

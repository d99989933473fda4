"""Churn models: calibrated LightGBM with scikit-learn conventions, baselines, evaluation, MLflow."""

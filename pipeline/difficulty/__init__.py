"""What a pass rate means: strata and the Beta-posterior estimators behind them."""

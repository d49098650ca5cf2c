"""Hidden-state difficulty probes: prompt states, fitting and prediction, saved probes."""

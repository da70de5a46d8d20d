"""Devices: the latency runner, what to profile, profiles, features, predictors."""

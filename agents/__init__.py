"""Agents: collectors that feed the world model, and stable-baselines3 glue."""

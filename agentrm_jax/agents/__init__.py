"""Agents: trajectories and their records, prompts, policies and the episode loop."""
